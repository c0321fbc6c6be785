import ForkRPC

/// Where ForkActors puts distributed actors in a pool: a worker that hosts actors is counted as
/// such, and is not stopped for being idle while it hosts any.
extension WorkerPool {
    /// The worker that takes a new distributed actor, counted as hosting it until
    /// ``actorReleased(fromWorker:)``: worker `pid` when given, otherwise the one with the fewest
    /// actors (then the fewest calls in flight). Starts the pool's first worker when it has none.
    package func placeActor(onWorker pid: Int32? = nil) async throws -> (client: RPCClient, pid: Int32) {
        if let lease = state.withLock({ $0.placeActor(onWorker: pid) }) { return (lease.handle, lease.pid) }
        if let pid {
            let workers = statistics.workers.map { String($0.pid) }.joined(separator: ", ")
            throw WorkerPoolError(
                kind: .cannotStartWorker,
                message: "the pool has no worker \(pid) to put the actor in; its workers are: \(workers.isEmpty ? "none yet" : workers) "
                    + "(pool.statistics.workers)", underlyingError: nil)
        }
        // No worker yet: the demand of one call starts one.
        let lease = try await acquire(isRetry: false)
        giveBack(lease, succeeded: true)
        guard let placed = state.withLock({ $0.placeActor(onWorker: nil) }) else {
            throw WorkerPoolError(kind: .cannotStartWorker, message: "the pool's new worker went away before the actor could be made in it",
                                  underlyingError: nil)
        }
        return (placed.handle, placed.pid)
    }

    /// A distributed actor in worker `pid` was released.
    package func actorReleased(fromWorker pid: Int32) {
        carryOut(state.withLock { $0.actorReleased(fromWorker: pid) })
    }
}
