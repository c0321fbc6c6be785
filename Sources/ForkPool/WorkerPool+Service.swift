import ServiceLifecycle

extension WorkerPool: Service {
    /// Serves until graceful shutdown of the `ServiceGroup` begins, then shuts the pool down
    /// gracefully: no new calls, and the calls already made (queued ones too) finish, for at most
    /// ``Configuration/gracefulShutdownTimeout``; then the workers still running are killed and
    /// their calls fail with ``WorkerPoolError/Kind/shutDown``. Cancellation of the group ends the
    /// pool at once. It returns once every worker has exited; a template the pool made
    /// (`WorkerPool(executable:running:)`, or a restart) is ended then too.
    ///
    /// A pool that other code shuts down (``shutdown()``, ``terminate()``) makes `run()` return
    /// then, which ends the group (a `ServiceGroup` ends when a service returns, unless configured
    /// otherwise).
    ///
    /// List the pool before the services that call it: a `ServiceGroup` shuts its services down in
    /// reverse order, so theirs begins first, and the pool still serves the calls they finish with.
    ///
    /// ```swift
    /// let pool = try await WorkerPool(running: "math", configuration: configuration)
    /// let group = ServiceGroup(
    ///     services: [pool, api], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
    /// try await group.run()   // SIGTERM: the API stops, then the pool drains and ends
    /// ```
    public func run() async throws {
        switch await firstEnd() {
        case .gracefulShutdown: await shutdown(within: configuration.gracefulShutdownTimeout)
        // The group is not waiting for anything to finish.
        case .cancelled: await terminate()
        case .endedElsewhere: return
        }
    }

    private enum End { case gracefulShutdown, cancelled, endedElsewhere }

    /// Waits for the group's graceful shutdown, the task's cancellation, or a shutdown of the pool
    /// made by other code, whichever comes first.
    private func firstEnd() async -> End {
        await withTaskGroup(of: End.self) { group in
            group.addTask {
                do {
                    try await gracefulShutdown()
                    return .gracefulShutdown
                } catch {
                    return .cancelled
                }
            }
            group.addTask { [self] in
                await waitUntilEnded()
                return Task.isCancelled ? .cancelled : .endedElsewhere
            }
            let first = await group.next() ?? .cancelled
            group.cancelAll()
            return first
        }
    }

    /// Shuts down gracefully (``shutdown()``) for at most `limit`, then kills what still runs
    /// (``terminate()``); returns whether everything finished in time. Cancelling the calling task
    /// ends the wait early, as the limit would.
    ///
    /// ```swift
    /// let finished = await pool.shutdown(within: .seconds(10))
    /// if !finished { logger.warning("calls still running after 10 s were ended") }
    /// ```
    ///
    /// A negative `limit` counts as zero. Calls queued in a worker (``Configuration/load`` above
    /// 1) and in the pool count against the limit like running ones.
    @discardableResult
    public func shutdown(within limit: Duration) async -> Bool {
        await withTaskGroup(of: Bool.self) { group in
            group.addTask { [self] in
                await shutdown()
                return true
            }
            group.addTask {
                try? await Task.sleep(for: limit)
                return false
            }
            let finished = await group.next() ?? false
            if !finished {
                await terminate(because: "its graceful shutdown did not finish within \(limit); what still ran was ended")
            }
            group.cancelAll()
            await group.waitForAll()
            return finished
        }
    }
}
