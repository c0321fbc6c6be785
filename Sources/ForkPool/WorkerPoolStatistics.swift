/// A snapshot of a pool: its workers, its queue and what has happened so far.
///
/// ```swift
/// let statistics = pool.statistics
/// for worker in statistics.workers {
///     print(worker.pid, worker.callsServed, worker.busyTime)
/// }
/// print("queued:", statistics.queueLength, "lost workers:", statistics.counters.workersLost)
/// ```
public struct WorkerPoolStatistics: Sendable {
    /// One worker.
    public struct Worker: Sendable, Hashable {
        /// The worker's process id (for a remote worker, its local command's: `ssh`).
        public let pid: Int32
        /// Where it runs: `local`, or the remote template's name (`ssh worker1`).
        public let place: String
        /// Calls it holds now.
        public let callsInFlight: Int
        /// Calls it has answered (or failed).
        public let callsServed: Int
        /// Time it has spent with at least one call in flight.
        public let busyTime: Duration
        /// True when it takes no new calls and will be closed (recycling, `retire()`, idle stop).
        public let isRetiring: Bool
    }

    /// Totals since the pool started.
    public struct Counters: Sendable, Hashable {
        /// Calls that returned a result.
        public var callsServed = 0
        /// Calls that ended with an error (each attempt of a retried call counts).
        public var callsFailed = 0
        /// Calls run again because their worker died.
        public var retries = 0
        /// Workers started (forked here, or started on a remote host).
        public var workersStarted = 0
        /// Workers that died or were killed while in service (each was replaced).
        public var workersLost = 0
        /// Workers replaced after `maximumCallsPerWorker` calls.
        public var workersRecycled = 0
        /// Workers that asked to retire.
        public var workersRetired = 0
        /// Workers stopped after `stopDelay` idle.
        public var workersStopped = 0
        /// Templates started in place of one that died (``WorkerPool/TemplateRecovery/restart(_:)``).
        public var templatesRestarted = 0
    }

    /// The workers, in the order they started.
    public let workers: [Worker]
    /// Workers being forked.
    public let workersStarting: Int
    /// Remote hosts whose last start failed, left alone until their reconnection delay has passed.
    public let unreachablePlaces: [String]
    /// Calls waiting for a worker.
    public let queueLength: Int
    /// Callers waiting for room in a bounded queue (`queueLimit`).
    public let callersWaitingForQueueRoom: Int
    /// Totals since the pool started.
    public let counters: Counters
}
