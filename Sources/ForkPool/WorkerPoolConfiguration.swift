import ForkKit
import Logging
import Metrics

#if canImport(Glibc)
import Glibc
#endif

extension WorkerPool {
    /// How a pool sizes itself, spreads calls and looks after its workers.
    ///
    /// The sizing options are AnyEvent::Fork::Pool's, with its defaults except `maximumWorkers`, which
    /// follows the machine; `idleWorkers` counts every worker, where Perl's `idle` counts idle ones:
    ///
    /// ```swift
    /// var configuration = WorkerPool.Configuration()
    /// configuration.idleWorkers = 2               // start two at once, never fewer than two workers
    /// configuration.maximumCallsPerWorker = 1000  // recycle workers that may grow
    /// configuration.retries = 2                   // run a call again elsewhere if its worker dies
    /// ```
    public struct Configuration: Sendable {
        /// Most workers at once on this machine (Perl's `max`). Default: the number of online CPU
        /// cores. May be 0 when ``remoteHosts`` can hold workers.
        public var maximumWorkers: Int = Self.onlineProcessorCount
        /// Other machines whose workers join this pool, each with its own maximum. Calls go to the
        /// least-loaded worker wherever it runs; new workers start on this machine first, then on
        /// the hosts in order.
        ///
        /// ```swift
        /// let host = RemoteTemplate.ssh(host: "worker1", executable: "/opt/app/tool")
        /// configuration.remoteHosts = [WorkerPool.RemoteHost(host, maximumWorkers: 8)]
        /// ```
        public var remoteHosts: [RemoteHost] = []
        /// How long a remote host whose worker could not start (or whose connection broke at start)
        /// is left alone before the pool tries it again. It doubles with every failure in a row, up
        /// to ``maximumReconnectDelay``; one success resets it.
        public var reconnectDelay: Duration = .seconds(1)
        /// The longest wait between attempts to reach a remote host.
        public var maximumReconnectDelay: Duration = .seconds(30)
        /// The fewest workers the pool keeps, busy or idle, even when there is nothing to do; also how
        /// many start with the pool (default 0: the first call starts the first worker). Perl's `idle`
        /// differs: it keeps that many *idle* workers, starting more when fewer are idle.
        public var idleWorkers: Int = 0
        /// Calls in flight per worker (Perl's `load`, default 2). More than one lets a worker start
        /// the next call without waiting for a round trip; calls beyond it wait in the pool's queue.
        public var load: Int = 2
        /// How long every worker must have been at `load`, with calls waiting, before another worker
        /// starts (Perl's `start`, default 0.1 s). The first worker, replacements, the `idleWorkers`
        /// minimum and the workers a map has work for (up to `maximumWorkers`) start at once.
        public var startDelay: Duration = .milliseconds(100)
        /// How long a worker beyond `idleWorkers` may sit idle before it is stopped (Perl's `stop`,
        /// default 10 s).
        public var stopDelay: Duration = .seconds(10)
        /// Which server the worker function runs: it decides what cancelling a running call does.
        public var backend: Backend = .synchronous
        /// Most calls waiting for a worker; callers beyond it suspend until there is room
        /// (backpressure). `nil`: no bound.
        public var queueLimit: Int?
        /// A worker that has been given this many calls is replaced by a fresh fork once it has
        /// answered them (for workers whose memory grows). `nil`: never.
        public var maximumCallsPerWorker: Int?
        /// How many times a call runs again on another worker when its worker dies under it (default 0:
        /// the caller gets the error naming the pid and the signal). A call can set its own.
        public var retries: Int = 0
        /// How long a call may take before it fails with a timeout, counted from when it is sent to a
        /// worker (not while it waits in the pool's queue). A call can set its own. `nil`: no limit.
        ///
        /// A synchronous worker cannot stop a running call, so it is killed and replaced; an
        /// asynchronous one is told to cancel it (see ``cancellationGracePeriod``). In a map the
        /// timeout bounds each chunk of items, from when its worker can start it: a chunk that
        /// overruns it runs again one item per call, so that only an item that itself takes longer
        /// fails with the timeout (or, with ``retries``, runs again on another worker).
        public var callTimeout: Duration?
        /// How long an asynchronous worker has to answer a call it was told to cancel (after a
        /// timeout or a cancelled task), and how long any worker the pool closes has to exit.
        ///
        /// Until it answers, the worker takes no new call. One that takes longer is taken to be
        /// stuck (stopped, deadlocked, or in a function that ignores cancellation): it is killed and
        /// replaced, and the other calls it held run again elsewhere. Default: 1 s.
        public var cancellationGracePeriod: Duration = .seconds(1)
        /// What the pool does when its template dies (its workers die with it): fail the calls that
        /// need a new worker (the default), or start a new template and go on.
        public var templateRecovery: TemplateRecovery = .failCalls
        /// Resource limits (address space, CPU seconds, descriptors, nice value) every worker runs
        /// under. The pool forks a child of the template, applies them there, and forks its workers
        /// from that child, so the template itself stays unlimited. `nil`: none.
        public var resourceLimits: ResourceLimits?
        /// Arguments every worker is forked with (`ChildContext.arguments`).
        public var arguments: [[UInt8]] = []
        /// Largest message accepted from a worker.
        public var maximumMessageSize: Int = 64 << 20
        /// Functions the owner serves to every worker's requests (`RPCServer.call`): a queue the
        /// workers pull their next work from, a service they report to (see `RPCHandlers`).
        public var handlers = RPCHandlers()
        /// Where the workers' log records go (see `RPCServer.makeLogger`), and the pool's own notes on
        /// workers that died or were replaced.
        public var logger: Logger?
        /// Where every worker's standard output and error go, line by line with its pid and place
        /// (`ChildOutput`, for example `.logging(to: logger)`), remote workers' included; `nil`
        /// (the default): where the template's go, uncaptured. Capture costs two pipes per worker
        /// and a wake-up of ForkKit's I/O thread per burst of output, nothing per call.
        public var childOutput: ChildOutput?
        /// How long ``WorkerPool/run()`` (the pool as a swift-service-lifecycle `Service`) lets
        /// calls already made finish after graceful shutdown begins, before it kills the workers
        /// that still run them. Calls made after shutdown began fail at once.
        public var gracefulShutdownTimeout: Duration = .seconds(30)
        /// The prefix of the pool's swift-metrics names (`<prefix>_calls_total`, ...), `nil` for none.
        /// The figures are handed over when the workers change, when the pool falls idle, and while
        /// it is busy at most once a second, not on every call.
        public var metricsPrefix: String? = "forkkit_pool"
        /// Where the metrics go; `nil`: the backend bootstrapped with `MetricsSystem.bootstrap`.
        public var metricsFactory: (any MetricsFactory)?

        /// A configuration with the defaults.
        public init() {}

        static var onlineProcessorCount: Int { max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))) }
    }

    /// A remote machine's share of a pool: where its workers start, and how many at most.
    public struct RemoteHost: Sendable {
        /// Starts the host's workers (each one a new process through the template's command).
        public let template: RemoteTemplate
        /// Most workers at once on this host.
        public var maximumWorkers: Int

        /// A host running at most `maximumWorkers` of the pool's workers.
        public init(_ template: RemoteTemplate, maximumWorkers: Int) {
            self.template = template
            self.maximumWorkers = maximumWorkers
        }
    }

    /// What a pool does when its template is gone.
    public enum TemplateRecovery: Sendable {
        /// Calls that need a new worker fail with ``WorkerPoolError/Kind/cannotStartWorker``,
        /// whose underlying error says the template is gone.
        case failCalls
        /// `makeTemplate` starts a new template (loading what the old one had loaded), and the
        /// pool forks its workers from it; ``WorkerPoolStatistics/Counters/templatesRestarted``
        /// counts these. The pool owns the template `makeTemplate` returns: it ends it once the
        /// pool has shut down, so return a new one, not one that something else uses too.
        ///
        /// ```swift
        /// configuration.templateRecovery = .restart { try await ForkTemplate.spawn() }
        /// ```
        case restart(_ makeTemplate: @Sendable () async throws -> ForkTemplate)
    }

    /// The server backend the pool's worker function runs (see `ForkEntryPoint.rpcWorker` and
    /// `ForkEntryPoint.asyncRPCWorker`).
    public enum Backend: Sendable, Hashable {
        /// One call at a time per worker. A running call cannot be interrupted, so cancelling it or
        /// timing it out kills and replaces the worker.
        case synchronous
        /// Several calls at a time per worker; cancelling a running call cancels its task in the worker.
        /// A worker that does not answer the cancelled call within
        /// ``Configuration/cancellationGracePeriod`` is killed and replaced.
        case asynchronous
    }
}
