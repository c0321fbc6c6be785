import ForkKit
import ForkRPC
import Logging
import Metrics
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The scheduler's types in a pool: workers are RPC clients, callers wait on continuations.
enum LivePool: PoolStateTypes {
    typealias Handle = RPCClient
    typealias Caller = CheckedContinuation<Lease<RPCClient>, any Error>
    typealias ShutdownWaiter = CheckedContinuation<Void, Never>
}

/// A load-balanced pool of forked RPC workers that share what was loaded into their template
/// (AnyEvent::Fork::Pool, and Python's `multiprocessing.Pool` without its hangs).
///
/// Every worker is a child forked from `template` running the same worker function (an
/// `ForkEntryPoint.rpcWorker` or `.asyncRPCWorker`), or a process on one of
/// ``Configuration/remoteHosts`` running it. Calls go to the least-loaded worker; the pool
/// grows to ``Configuration/maximumWorkers`` under load and shrinks when idle; a worker that dies
/// fails only the calls it held (or they run again elsewhere, with retries) and is replaced.
///
/// ```swift
/// // In main, first line: the worker function every pool worker runs.
/// ForkTemplate.bootstrap([
///     .rpcWorker("math") { server in server.register(square) { $0 * $0 } },
/// ])
///
/// let squares = try await withWorkerPool(running: "math") { pool in
///     try await pool.map(square, 1...10_000)
/// }
/// ```
public final class WorkerPool: Sendable {
    /// An event a worker emitted (`RPCServer.emit`), with the worker's pid.
    public struct Event: Sendable, Equatable {
        /// The worker that sent it.
        public let pid: Int32
        /// The event.
        public let event: RPCEvent
    }

    /// The configuration the pool was made with.
    public let configuration: Configuration
    /// The template the workers are forked from (a new one after a restart).
    public var template: ForkTemplate { templateState.withLock { $0.templates.template } }

    /// A template, and what workers are forked from: the template, or its child that holds
    /// ``Configuration/resourceLimits``.
    private struct Templates: Sendable {
        let template: ForkTemplate
        let source: ForkTemplate
        /// Whether the pool made `template` (from an executable, or as a restart), so that it ends
        /// the template when the pool has ended.
        let owned: Bool

        init(_ template: ForkTemplate, limits: ResourceLimits?, owned: Bool) async throws {
            self.template = template
            self.owned = owned
            if let limits {
                source = try await template.fork()
                try await source.apply(limits)
            } else {
                source = template
            }
        }
    }
    /// The worker function every worker runs.
    public let workerFunction: String
    /// Events from every worker, in the order each worker sent them; the sequence ends when the
    /// pool has been shut down. One consumer; events nobody reads are kept until read.
    public let events: AsyncStream<Event>

    private let eventSink: AsyncStream<Event>.Continuation
    let state: Mutex<PoolState<LivePool>>
    /// The current templates, and the restart under way when the template died.
    private let templateState: Mutex<(templates: Templates, restart: Task<Templates, any Error>?)>
    private let metrics: PoolMetrics?
    /// Workers being closed or killed, so that shutdown can wait for them to exit.
    private let departing = Mutex<(nextID: Int, tasks: [Int: Task<Void, Never>])>((0, [:]))
    /// Why the pool was terminated, when not by ``terminate()`` (for the errors of the calls it ended).
    private let terminationReason = Mutex<String?>(nil)
    /// Signalled once a shutdown has ended the pool (``waitUntilEnded()`` waits for it).
    private let ended = ChangeSignal()

    /// Makes a pool of workers forked from `template`, each running `workerFunction`, and starts
    /// ``Configuration/idleWorkers`` of them.
    ///
    /// - Throws: the fork's error when the first workers cannot start (for example a
    ///   `workerFunction` that the template does not have).
    public convenience init(template: ForkTemplate, running workerFunction: String, configuration: Configuration = Configuration()) async throws {
        try await self.init(template: template, owned: false, running: workerFunction, configuration: configuration)
    }

    /// Makes a pool; with `owned`, the pool ends `template` once it has ended itself.
    init(template: ForkTemplate, owned: Bool, running workerFunction: String, configuration: Configuration) async throws {
        self.configuration = configuration
        templateState = Mutex((try await Templates(template, limits: configuration.resourceLimits, owned: owned), nil))
        self.workerFunction = workerFunction
        (events, eventSink) = AsyncStream.makeStream(of: Event.self)
        state = Mutex(PoolState(configuration: configuration))
        metrics = configuration.metricsPrefix.map { PoolMetrics(prefix: $0, factory: configuration.metricsFactory ?? MetricsSystem.factory) }
        // The minimum is started here, so that a pool that cannot start its workers fails where it
        // is made. An unreachable remote host is only noted (the pool tries it again later), unless
        // no worker could start at all.
        let places = state.withLock { state in (0..<configuration.idleWorkers).compactMap { _ in state.reserveStart() } }
        // Started side by side: a remote worker's start is mostly waiting for ssh.
        let lastFailure = await withTaskGroup(of: (any Error)?.self) { group in
            for place in places {
                group.addTask { [self] in
                    do {
                        let client = try await startClient(place: place)
                        carryOut(state.withLock { $0.workerStarted(client, pid: client.pid ?? 0, place: place) })
                        return nil
                    } catch {
                        carryOut(state.withLock { $0.workerFailedToStart(error, place: place) })
                        return error
                    }
                }
            }
            var last: (any Error)?
            for await failure in group where failure != nil { last = failure }
            return last
        }
        if let lastFailure, statistics.workers.isEmpty {
            await terminate()
            throw lastFailure
        }
    }

    /// Makes a pool whose workers are forked from the program's own template
    /// (`ForkTemplate.shared`).
    public convenience init(running workerFunction: String, configuration: Configuration = Configuration()) async throws {
        try await self.init(template: try await ForkTemplate.shared, running: workerFunction, configuration: configuration)
    }

    deinit {
        // Closing the clients (when the state goes) ends every worker; the event stream ends here.
        eventSink.finish()
    }

    /// A snapshot of the workers, the queue and the counters.
    public var statistics: WorkerPoolStatistics { state.withLock { $0.statistics } }

    /// Most workers at once, here and on every remote host.
    package var maximumWorkers: Int { state.withLock { $0.maximumWorkers } }

    /// A map is about to keep `calls` calls in flight: starts the workers they need at once.
    func prepareForMap(calls: Int) {
        carryOut(state.withLock { $0.prepareForMap(calls: calls) })
    }

    // MARK: Calls

    /// Calls `function` with `input` on the least-loaded worker and waits for its result.
    ///
    /// - Parameters:
    ///   - function: the typed handle of a function the worker function registered.
    ///   - input: its arguments, as many as it takes.
    ///   - retries: how many times to run the call again on another worker if its worker dies
    ///     (default: the pool's ``Configuration/retries``).
    ///   - timeout: how long the call may take once sent to a worker (default: the pool's
    ///     ``Configuration/callTimeout``). A synchronous worker that exceeds it is killed and
    ///     replaced; an asynchronous one is told to cancel the call, and killed and replaced if it
    ///     does not answer within ``Configuration/cancellationGracePeriod``.
    /// - Throws: the worker's error as an `RPCError` (naming function and pid), or as itself when
    ///   its type is registered (`RPCError.register`); `RPCError` with `.workerDied` when the
    ///   worker died and no retry was left, `CancellationError`, or ``WorkerPoolError``.
    public func call<each Input, Output>(
        _ function: RPCFunction<repeat each Input, Output>, _ input: repeat each Input, retries: Int? = nil, timeout: Duration? = nil
    ) async throws -> Output {
        try await perform(retries: retries, timeout: timeout ?? configuration.callTimeout) { client, timeout in
            try await client.call(function, repeat each input, timeout: timeout)
        }
    }

    /// Runs `body` on a worker, again on another one when the worker dies (up to `retries` times),
    /// and gives the worker back however it ends. With `retryingTimeouts` (a map's single item), a
    /// timeout counts as such a failure too.
    func perform<Result>(
        retries: Int?, timeout: Duration?, retryingTimeouts: Bool = false, _ body: (RPCClient, Duration?) async throws -> Result
    ) async throws -> Result {
        let allowed = retries ?? configuration.retries
        var failures = 0
        var attempt = 0
        while true {
            let lease = try await acquire(isRetry: attempt > 0)
            attempt += 1
            do {
                let result = try await body(lease.handle, timeout)
                giveBack(lease, succeeded: true)
                return result
            } catch let error as RPCError where error.kind == .workerDied || error.kind == .protocolViolation {
                let loss = state.withLock { $0.workerDiedUnderCall(pid: lease.pid, retryAllowed: failures < allowed) }
                carryOut(loss.effects)
                switch loss.next {
                case .terminated: throw WorkerPoolError.terminatedWhileRunning(pid: lease.pid, reason: terminationReason.withLock { $0 })
                case .fail: throw error
                case .runAgain: continue  // the pool killed this worker for another call's sake
                case .retry: failures += 1
                }
                configuration.logger?.notice("retrying a call: \(error)")
            } catch let error as RPCError where error.kind == .timeout {
                abandon(lease)
                guard retryingTimeouts, !Task.isCancelled, failures < allowed else { throw error }
                failures += 1
                state.withLock { $0.retryCounted() }
                configuration.logger?.notice("retrying a call: \(error)")
            } catch is CancellationError {
                abandon(lease)
                throw CancellationError()
            } catch {
                giveBack(lease, succeeded: false)
                throw error
            }
        }
    }

    /// Waits for a worker with room for one more call. One acquisition of the lock when a worker
    /// has room; a caller that must wait takes it again to join the queue.
    func acquire(isRetry: Bool) async throws -> Lease<RPCClient> {
        if Task.isCancelled { throw CancellationError() }
        let id: UInt64
        switch state.withLock({ $0.admit(isRetry: isRetry) }) {
        case .leased(let lease): return lease
        case .refused(let error): throw error
        case .mustWait(let waiterID): id = waiterID
        }
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                carryOut(state.withLock { state in
                    // Checked under the lock the cancellation handler takes: cancelled before this,
                    // the handler found no waiter to remove.
                    if Task.isCancelled { return [.fail(continuation, CancellationError())] }
                    return state.enqueue(PoolState.Waiter(id: id, caller: continuation), isRetry: isRetry)
                })
            }
        } onCancel: {
            carryOut(state.withLock { $0.cancelWaiter(id) })
        }
    }

    func giveBack(_ lease: Lease<RPCClient>, succeeded: Bool) {
        carryOut(state.withLock { $0.finished(pid: lease.pid, succeeded: succeeded) })
    }

    private func kill(_ lease: Lease<RPCClient>, because reason: String) {
        guard let effects = state.withLock({ $0.kill(pid: lease.pid) }) else {
            // Already out of the pool (its connection ended, and it was counted as lost then), but
            // perhaps still running: a worker that closed its socket may hang.
            lease.handle.terminate()
            return
        }
        configuration.logger?.notice("killing worker \(lease.pid): \(reason); a new one replaces it")
        carryOut(effects)
    }

    /// The call on `lease` was given up on (timeout or cancellation). A synchronous worker cannot
    /// stop a running call: it is killed and replaced. An asynchronous one was sent `$cancel`: the
    /// call keeps its place there until the worker answers it; a worker that has not within the
    /// grace period is stuck (stopped, deadlocked), and is killed and replaced.
    private func abandon(_ lease: Lease<RPCClient>) {
        guard configuration.backend == .asynchronous else {
            giveBack(lease, succeeded: false)
            kill(lease, because: "its call timed out or was cancelled, and a synchronous worker cannot stop a running call")
            return
        }
        carryOut(state.withLock { $0.abandoned(pid: lease.pid) })
        let grace = configuration.cancellationGracePeriod
        Task { [weak self] in
            let answered = await lease.handle.abandonedCallsAnswered(within: grace)
            guard let self else { return }
            if !answered {
                kill(lease, because: "it did not answer a call it was told to cancel within \(grace) (stopped, deadlocked, or a function that ignores cancellation)")
            }
            carryOut(state.withLock { $0.abandonedCallAnswered(pid: lease.pid) })
        }
    }

    // MARK: Shutdown

    /// Stops taking calls, lets every call already made finish (queued ones included), then closes
    /// every worker and waits until they have exited.
    public func shutdown() async {
        await withCheckedContinuation { continuation in
            carryOut(state.withLock { $0.beginShutdown(.graceful, waiter: continuation) })
        }
        await waitForDepartures()
    }

    /// Kills every worker at once. Calls waiting for a worker and calls running fail with
    /// ``WorkerPoolError/Kind/shutDown``; waits until the workers have exited.
    public func terminate() async {
        await terminate(because: nil)
    }

    /// ``terminate()``, with `reason` in the errors of the calls it ends.
    func terminate(because reason: String?) async {
        if let reason { terminationReason.withLock { $0 = $0 ?? reason } }
        await withCheckedContinuation { continuation in
            carryOut(state.withLock { $0.beginShutdown(.immediate, waiter: continuation, reason: reason) })
        }
        await waitForDepartures()
    }

    /// Waits until every worker has exited; then no event can come, and ``events`` ends. A template
    /// the pool made ends now too (with the child that holds the resource limits, if any).
    private func waitForDepartures() async {
        while let task = departing.withLock({ $0.tasks.first?.value }) { await task.value }
        eventSink.finish()
        let templates = templateState.withLock { $0.templates }
        if templates.source !== templates.template { templates.source.close() }
        if templates.owned { templates.template.close() }
        ended.signal()
    }

    /// Returns once a shutdown (``shutdown()``, ``terminate()``) has ended the pool, or at once when
    /// the calling task is cancelled.
    func waitUntilEnded() async {
        await ended.wait(after: 0)
    }

    // MARK: Workers

    /// Starts a worker at `place`: forked from the template (0), or on remote host `place - 1`.
    private func startClient(place: Int) async throws -> RPCClient {
        let client: RPCClient
        if place > 0 {
            client = try await fork(from: configuration.remoteHosts[place - 1].template)
        } else {
            let templates = templateState.withLock { $0.templates }
            do {
                client = try await fork(from: templates.source)
            } catch let error as ForkError where error.kind == .processGone {
                guard case .restart(let makeTemplate) = configuration.templateRecovery else { throw error }
                client = try await fork(from: try await replace(templates.template, makeTemplate).source)
            }
        }
        watchEvents(of: client)
        return client
    }

    private func fork(from template: any ChildLauncher) async throws -> RPCClient {
        let client = try await RPCClient.start(
            template, running: workerFunction, arguments: configuration.arguments,
            maximumMessageSize: configuration.maximumMessageSize, logger: configuration.logger, handlers: configuration.handlers,
            output: configuration.childOutput)
        // A worker of the other backend would be handled wrongly when stuck (killed at once, or kept
        // waiting for a grace period it cannot use): refuse it, saying which setting to change.
        let announced = await client.announcedBackend(within: .seconds(10))
        let expected = configuration.backend == .synchronous ? "synchronous" : "asynchronous"
        if announced == nil {
            let pid = client.pid.map(String.init) ?? "?"
            configuration.logger?.warning(
                "worker \(pid) running '\(workerFunction)' did not say which backend it runs within 10 s (ForkKit's rpcWorker and asyncRPCWorker do at once); it is used as configured, .\(expected)")
        }
        if let announced, announced != expected {
            client.terminate()
            throw WorkerPoolError.backendMismatch(function: workerFunction, announced: announced, configured: expected)
        }
        return client
    }

    /// Templates in place of `dead`: one restart for all the forks that found it dead.
    private func replace(_ dead: ForkTemplate, _ makeTemplate: @escaping @Sendable () async throws -> ForkTemplate) async throws -> Templates {
        let limits = configuration.resourceLimits
        let restart = templateState.withLock { current -> Task<Templates, any Error>? in
            if current.templates.template !== dead { return nil }
            if let restart = current.restart { return restart }
            configuration.logger?.error("the template (pid \(dead.pid)) is gone; starting a new one")
            let restart = Task { try await Templates(try await makeTemplate(), limits: limits, owned: true) }
            current.restart = restart
            return restart
        }
        guard let restart else { return templateState.withLock { $0.templates } }
        do {
            let fresh = try await restart.value
            let replaced = templateState.withLock { current -> Bool in
                guard current.templates.template === dead else { return false }
                current = (fresh, nil)
                return true
            }
            if replaced { state.withLock { $0.templateRestarted() } }
            return templateState.withLock { $0.templates }
        } catch {
            templateState.withLock { current in if current.templates.template === dead { current.restart = nil } }
            throw error
        }
    }

    private func startWorker(place: Int) async {
        do {
            let client = try await startClient(place: place)
            carryOut(state.withLock { $0.workerStarted(client, pid: client.pid ?? 0, place: place) })
        } catch {
            configuration.logger?.error("cannot start a worker running '\(workerFunction)': \(error)")
            carryOut(state.withLock { $0.workerFailedToStart(error, place: place) })
        }
    }

    /// Forwards a worker's events, handles its `$retire`, and notices when its connection ends.
    private func watchEvents(of client: RPCClient) {
        let events = client.events
        let pid = client.pid ?? 0
        // The process, not the client: holding the client would keep its connection open.
        let process = client.worker
        Task { [weak self] in
            for await event in events {
                guard let self else { return }
                if event.name == RPCMessage.retireMethod {
                    carryOut(state.withLock { $0.retire(pid: pid) })
                } else {
                    eventSink.yield(Event(pid: pid, event: event))
                }
            }
            guard let self else { return }
            let ended = state.withLock { $0.workerEnded(pid: pid) }
            if ended.wasInService {
                // A worker that closed its socket may still be running: it must not outlive its
                // place. It is given the time its client waits for an exit status, so that its
                // callers learn what it did rather than that it was killed.
                if let process {
                    Task {
                        try? await Task.sleep(for: .seconds(2))
                        process.send(signal: SIGKILL)
                    }
                }
                configuration.logger?.warning("worker \(pid) is gone; a new one replaces it")
            }
            carryOut(ended.effects)
        }
    }

    /// Does what the scheduler decided, outside its lock.
    func carryOut(_ effects: [PoolEffect<LivePool>]) {
        for effect in effects {
            switch effect {
            case .resume(let continuation, let lease):
                continuation.resume(returning: lease)
            case .fail(let continuation, let error):
                continuation.resume(throwing: error)
            case .startWorker(let place):
                Task { await self.startWorker(place: place) }
            case .wake(let delay):
                Task { [weak self] in
                    try? await Task.sleep(for: delay)
                    guard let self else { return }
                    carryOut(state.withLock { $0.pump() })
                }
            case .startWorkerAfterDelay(let delay):
                Task { [weak self] in
                    try? await Task.sleep(for: delay)
                    guard let self else { return }
                    carryOut(state.withLock { $0.startTimerFired() })
                }
            case .stopWorkerWhenIdle(let pid, let idleSince, let delay):
                Task { [weak self] in
                    try? await Task.sleep(for: delay)
                    guard let self else { return }
                    carryOut(state.withLock { $0.stopTimerFired(pid: pid, idleSince: idleSince) })
                }
            case .close(let client):
                depart(client)
            case .kill(let client):
                client.terminate()
                depart(client)
            case .finishedShutdown(let waiters):
                for waiter in waiters { waiter.resume() }
            case .publishMetrics(let update):
                metrics?.publish(update)
            }
        }
    }

    /// Closes `client` and waits for its worker's exit, remembered until then for ``shutdown()``.
    /// A worker that has not exited within the grace period (stopped, deadlocked) is killed.
    private func depart(_ client: RPCClient) {
        let grace = configuration.cancellationGracePeriod
        let logger = configuration.logger
        departing.withLock { departing in
            let id = departing.nextID
            departing.nextID += 1
            // The task removes itself, under the lock that is held until it is registered.
            departing.tasks[id] = Task { [weak self] in
                let killer = Task {
                    try await Task.sleep(for: grace)
                    if client.worker?.exitStatusIfKnown == nil {
                        logger?.notice("killing worker \(client.pid ?? 0): it did not exit within \(grace) of being closed")
                    }
                    client.terminate()
                }
                _ = try? await client.close()
                killer.cancel()
                self?.departing.withLock { _ = $0.tasks.removeValue(forKey: id) }
            }
        }
    }
}
