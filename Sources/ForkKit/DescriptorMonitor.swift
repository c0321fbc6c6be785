import CForkSupport
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A background thread that watches descriptors with epoll, calls a handler when one is readable,
/// and runs the tasks that prefer it as their executor.
///
/// Connections to templates and not-yet-running children must be read as soon as anything arrives
/// (replies, and notices of exited children that would otherwise fill the socket and block the
/// template), without tying up a thread of Swift's cooperative pool. ``shared`` serves them all,
/// and the RPC connections too unless ``connectionThreads`` spreads those over more threads (one
/// thread reads about 250,000 small replies a second: see the property).
///
/// It is also a `TaskExecutor`: a task that prefers it is resumed on this thread right where the
/// reply was read, instead of being handed to another thread (every hop between threads costs a
/// wake-up, about 20-50 us on these machines; DESIGN.md, "The parent side"). ForkKit's own waits
/// prefer it; callers may too, with `withTaskExecutorPreference(ForkTemplate.ioExecutor)`.
/// Handlers and jobs run on this one thread: they must not block. ForkRPC reads its connections
/// here too.
///
/// ```swift
/// DescriptorMonitor.shared.watch(socket) { drainWhatArrived(socket) }
/// ```
public final class DescriptorMonitor: TaskExecutor, Sendable {
    /// Called when the descriptor is readable (or hung up). A handler that is done calls `unwatch`
    /// itself, before it resumes anyone who might close the descriptor.
    public typealias Handler = @Sendable () -> Void

    /// The process's first monitor thread, started on first use: it reads every control
    /// connection, and is ``ForkTemplate/ioExecutor``.
    public static let shared = DescriptorMonitor(name: "forkkit-monitor")

    /// How many monitor threads the RPC connections made from now on are spread over, in turn
    /// (``forNewConnection()``); ``shared`` is the first of them. Defaults to one per 8 cores.
    ///
    /// One thread spends a few microseconds of CPU per reply it reads (`forkkit-bench rpc`,
    /// `monitor_thread_cpu_ns_per_call`; about 50 ns per item of a map, whose replies are batched):
    /// it carries a few hundred thousand replies a second, which workers on many cores making
    /// small calls reach. Raise it for many workers with small calls; callers that want no thread
    /// hop then prefer their client's own `RPCClient.ioExecutor`.
    ///
    /// ```swift
    /// DescriptorMonitor.connectionThreads = 4   // before the pool starts its workers
    /// ```
    public static var connectionThreads: Int {
        get { connectionThreadCount.load(ordering: .relaxed) }
        set { connectionThreadCount.store(max(1, newValue), ordering: .relaxed) }
    }

    private static let connectionThreadCount = Atomic<Int>(max(1, sysconf(Int32(_SC_NPROCESSORS_ONLN)) / 8))
    private static let nextConnection = Atomic<Int>(0)
    /// The monitors after ``shared``, started as ``connectionThreads`` asks for them.
    private static let others = Mutex<[DescriptorMonitor]>([])

    /// The monitor that a new connection is read by: the next of the first ``connectionThreads``.
    public static func forNewConnection() -> DescriptorMonitor {
        let count = connectionThreads
        guard count > 1 else { return shared }
        let index = nextConnection.wrappingAdd(1, ordering: .relaxed).oldValue % count
        guard index > 0 else { return shared }
        return others.withLock { others in
            while others.count < index { others.append(DescriptorMonitor(name: "forkkit-io-\(others.count + 2)")) }
            return others[index - 1]
        }
    }

    private let epoll: Int32
    private let wakeup: Int32
    private let handlers = Mutex<[Int32: Handler]>([:])

    private struct Jobs {
        var queue: [UnownedJob] = []
        /// True while the thread waits in epoll: a new job must then write to `wakeup`.
        var sleeping = false
    }

    private let jobs = Mutex(Jobs())
    /// The monitor thread's id, once it runs.
    private let thread = Atomic<UInt>(0)

    /// Whether the caller runs on the monitor thread (state that only this thread may touch checks it).
    public var isCurrentThread: Bool { thread.load(ordering: .relaxed) == UInt(pthread_self()) }

    /// The thread's name, as top and perf show it.
    private let name: String

    private init(name: String) {
        self.name = name
        epoll = forkkit_epoll_create()
        wakeup = forkkit_eventfd()
        precondition(epoll >= 0 && wakeup >= 0, "cannot create the ForkKit monitor's epoll or eventfd: errno \(errno)")
        forkkit_epoll_add(epoll, wakeup)
        var thread = pthread_t()
        // The thread holds the monitor for ever: monitors are never released.
        let result = pthread_create(&thread, nil, { monitor in
            Unmanaged<DescriptorMonitor>.fromOpaque(monitor!).takeUnretainedValue().run()
        }, Unmanaged.passRetained(self).toOpaque())
        precondition(result == 0, "cannot start the ForkKit monitor thread: error \(result)")
        pthread_detach(thread)
    }

    /// Starts calling `handler` whenever `descriptor` is readable (level-triggered: a handler that
    /// leaves data unread is called again).
    public func watch(_ descriptor: Int32, _ handler: @escaping Handler) {
        handlers.withLock { $0[descriptor] = handler }
        if forkkit_epoll_add(epoll, descriptor) != 0 {
            // Only a closed or invalid descriptor (or a regular file) gets here; its handler sees the
            // error when it reads, on this thread like every handler.
            handlers.withLock { _ = $0.removeValue(forKey: descriptor) }
            Task(executorPreference: self) { handler() }
        }
    }

    /// Stops watching; call before closing the descriptor.
    public func unwatch(_ descriptor: Int32) {
        _ = handlers.withLock { $0.removeValue(forKey: descriptor) }
        forkkit_epoll_remove(epoll, descriptor)
    }

    /// Descriptors watched now (for tests and the soak benchmark, which check that connections
    /// that ended are no longer watched).
    package var watchedCount: Int { handlers.withLock { $0.count } }

    /// Runs `job` on the monitor thread (the `TaskExecutor` requirement).
    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        let mustWake = jobs.withLock { jobs in
            jobs.queue.append(job)
            defer { jobs.sleeping = false }
            return jobs.sleeping
        }
        if mustWake { forkkit_eventfd_signal(wakeup) }
    }

    /// How long the thread polls for more work before it sleeps; zero (the default) sleeps at once.
    ///
    /// The opt-in low-latency mode: a reply that arrives within this time is read without the
    /// thread being woken (20-50 us on these machines), at the price of a busy core while waiting.
    /// Pair it with callers on ``ForkTemplate/ioExecutor`` and workers that spin too.
    public var spinBeforeSleeping: Duration {
        get { .nanoseconds(spinNanoseconds.load(ordering: .relaxed)) }
        set {
            let (seconds, attoseconds) = newValue.components
            spinNanoseconds.store(max(0, seconds * 1_000_000_000 + attoseconds / 1_000_000_000), ordering: .relaxed)
        }
    }

    private let spinNanoseconds = Atomic<Int64>(0)

    private func run() -> Never {
        thread.store(UInt(pthread_self()), ordering: .relaxed)
        // Named, so that top, perf and a debugger show which thread reads the workers' replies.
        forkkit_name_thread(name)
        var ready = [Int32](repeating: -1, count: 64)
        let clock = ContinuousClock()
        while true {
            let batch = jobs.withLock { jobs in
                defer { jobs.queue = [] }
                return jobs.queue
            }
            for job in batch {
                job.runSynchronously(on: asUnownedTaskExecutor())
            }
            // With jobs just run, more may be queued: only look at descriptors, do not sleep.
            var count = forkkit_epoll_wait(epoll, &ready, Int32(ready.count), 0)
            if count <= 0 && batch.isEmpty {
                let spin = spinNanoseconds.load(ordering: .relaxed)
                if spin > 0 {
                    let deadline = clock.now + .nanoseconds(spin)
                    while count <= 0 && clock.now < deadline && jobs.withLock({ $0.queue.isEmpty }) {
                        count = forkkit_epoll_wait(epoll, &ready, Int32(ready.count), 0)
                        if count <= 0 { sched_yield() }  // a peer spinning on this core gets to answer
                    }
                }
                if count <= 0 {
                    let mustSleep = jobs.withLock { jobs in
                        jobs.sleeping = jobs.queue.isEmpty
                        return jobs.sleeping
                    }
                    if mustSleep {
                        count = forkkit_epoll_wait(epoll, &ready, Int32(ready.count), -1)
                        jobs.withLock { $0.sleeping = false }
                    }
                }
            }
            guard count > 0 else { continue }
            for descriptor in ready.prefix(Int(count)) {
                if descriptor == wakeup {
                    forkkit_eventfd_drain(wakeup)
                    continue
                }
                guard let handler = handlers.withLock({ $0[descriptor] }) else { continue }
                handler()
            }
        }
    }
}
