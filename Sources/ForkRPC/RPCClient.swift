import ForkKit
import Logging
import MessagePack
import Synchronization
import SystemPackage

#if canImport(Glibc)
import Glibc
#endif

/// The owner side of MessagePack-RPC: calls a worker's functions, many at a time on one socket.
///
/// Requests are written by the calling task; responses are framed on ForkKit's monitor thread,
/// matched to their calls by msgid and decoded by the calling task. Events (notifications) from
/// the worker arrive on ``events``.
///
/// ```swift
/// let square = RPCFunction<Int, Int>("square")
/// let worker = try await RPCClient.start(template, running: "math")
/// let nine = try await worker.call(square, 3)
/// try await worker.close()          // queued calls finish, then the worker exits
/// ```
///
/// Every call ends: with its result, the worker's error (an ``RPCError``, or the error itself when
/// its type is registered with ``RPCError/register(_:)``), or an ``RPCError`` when the worker dies,
/// breaks the protocol, the timeout passes or the task is cancelled. The worker may call the owner
/// too: see ``RPCHandlers``.
public final class RPCClient: Sendable {
    /// The worker's process id, when the worker is a forked child.
    public var pid: Int32? { worker?.pid }
    /// Events the worker emits, in order. One consumer; events nobody reads are kept until read, so
    /// a worker that emits without end needs a reader.
    public let events: AsyncStream<RPCEvent>
    /// The worker process, when the worker is a forked child.
    public let worker: RunningChild?
    /// The executor whose thread reads this client's replies: a caller that prefers it
    /// (`withTaskExecutorPreference(client.ioExecutor) { ... }`) is resumed right where its reply
    /// was read, with no thread hop. It is `ForkTemplate.ioExecutor` unless
    /// `DescriptorMonitor.connectionThreads` spreads connections over more threads.
    public var ioExecutor: any TaskExecutor { connection.monitor }

    /// The largest message sent or accepted; a ForkKit worker learns it at start (`$limits`).
    public var maximumMessageSize: Int { connection.maximumMessageSize }

    let connection: RPCConnection
    let logger: Logger?
    let eventSink: AsyncStream<RPCEvent>.Continuation
    /// Message ids, without a lock: one atomic add per call.
    let nextID = Atomic<UInt32>(0)
    let state: Mutex<State>

    /// A caller waiting for its response, which it decodes itself (off the monitor thread).
    typealias Caller = UnsafeContinuation<MessagePackMessage, any Error>
    /// Someone waiting for the call table to change (true: what they waited for happened).
    typealias Watcher = CheckedContinuation<Bool, Never>

    struct State {
        var table = CallTable<Caller, Watcher>()
        /// The backend the worker announced (`$worker`), once it has.
        var announcedBackend: String?
        /// Callers of ``announcedBackend(within:)`` waiting for the announcement.
        var announcementWaiters: [UInt64: CheckedContinuation<String?, Never>] = [:]
        var nextAnnouncementWaiter: UInt64 = 0
        var cancellationGracePeriod: Duration?
        /// Why this client killed its worker, for the errors of the calls it held.
        var killReason: String?
        /// What the owner serves to the worker's requests.
        var handlers: RPCHandlers
        /// The worker's requests being served, by their msgid (the worker's own numbering).
        var serving: [UInt32: Task<Void, Never>] = [:]
        /// The traced calls (made in a task with a service context) until their responses arrive:
        /// where the spans the worker sends back for them go.
        var traces: [UInt32: CallTrace] = [:]
    }

    /// How long the worker has to answer a call it was told to cancel (after a timeout or a
    /// cancelled task it is sent `$cancel`), and to exit once ``close()`` has ended its input.
    ///
    /// A worker that takes longer is taken to be stuck (stopped, deadlocked, or in a function that
    /// ignores cancellation) and is killed with SIGKILL, which fails the calls it held with
    /// ``RPCError/Kind/workerDied`` saying why; a client without a worker process closes the
    /// connection instead. `nil` (the default): never, and a synchronous worker answers a timed-out
    /// call whenever it has finished it. A `WorkerPool` looks after its own workers (its
    /// configuration's `cancellationGracePeriod`).
    ///
    /// ```swift
    /// let worker = try await RPCClient.start(template, running: "fetcher")
    /// worker.cancellationGracePeriod = .seconds(1)
    /// ```
    public var cancellationGracePeriod: Duration? {
        get { state.withLock { $0.cancellationGracePeriod } }
        set { state.withLock { $0.cancellationGracePeriod = newValue } }
    }

    /// Talks MessagePack-RPC over `input` and `output` (the same descriptor for a socket). The client
    /// takes ownership of both. `worker`, when given, names the process in errors and reports its exit.
    /// A message larger than `maximumMessageSize` is not sent (the call fails with
    /// ``RPCError/Kind/messageTooLarge``); one from the worker closes the connection.
    /// Log records the worker sends (``RPCLogHandler``) go to `logger`; without one they arrive on
    /// ``events`` as `$log` events. Requests from the peer are answered by `handlers`.
    public convenience init(
        input: FileDescriptor, output: FileDescriptor, worker: RunningChild? = nil,
        maximumMessageSize: Int = 64 << 20, logger: Logger? = nil, handlers: RPCHandlers = RPCHandlers()
    ) {
        self.init(
            socket: WireSocket(adoptingInput: input, output: output, blocking: false), worker: worker,
            maximumMessageSize: maximumMessageSize, logger: logger, handlers: handlers)
    }

    private init(socket: consuming WireSocket, worker: RunningChild?, maximumMessageSize: Int, logger: Logger?, handlers: RPCHandlers) {
        state = Mutex(State(handlers: handlers))
        self.logger = logger
        self.worker = worker
        connection = RPCConnection(socket: socket, pid: worker?.pid, remoteName: worker?.remoteName, maximumMessageSize: maximumMessageSize)
        (events, eventSink) = AsyncStream.makeStream(of: RPCEvent.self)
        connection.startReading { [weak self] incoming in
            guard let self else {
                // Nobody is left to read it; what it holds (up to a large message's buffer) goes now.
                if case .message(let message) = incoming { message.release() }
                return
            }
            self.received(incoming)
        }
        Self.alive.add(1, ordering: .relaxed)
    }

    deinit {
        Self.alive.subtract(1, ordering: .relaxed)
        eventSink.finish()
    }

    /// Starts a child from `template` (a local `ForkTemplate` or a `RemoteTemplate`) that runs
    /// `function` (an `rpcWorker` or `asyncRPCWorker` entry point) and returns a client connected to
    /// it (AnyEvent::Fork::RPC's `run`). `arguments` reach the worker's set-up (`child.arguments`);
    /// `handlers` answer the worker's own requests (see ``RPCHandlers``); `output`, when given,
    /// captures the worker's standard output and error line by line (see `ChildOutput`).
    public static func start(
        _ template: any ChildLauncher, running function: String, arguments: [[UInt8]] = [],
        maximumMessageSize: Int = 64 << 20, logger: Logger? = nil, handlers: RPCHandlers = RPCHandlers(),
        output: ChildOutput? = nil
    ) async throws -> RPCClient {
        let child = try await template.launch(running: function, arguments: arguments, output: output)
        guard let socket = child.takeSocket() else {
            child.send(signal: SIGKILL)
            throw RPCError(.workerDied, "the worker's socket was already closed by its RunningChild; the worker was killed", pid: child.pid)
        }
        // ForkKit made it: a Unix socket (to a remote worker too: one end of the command's socketpair).
        let client = RPCClient(
            socket: WireSocket(adoptingSocket: socket, blocking: false), worker: child, maximumMessageSize: maximumMessageSize, logger: logger,
            handlers: handlers)
        // First thing: the worker then refuses what is larger both ways (ForkKit's workers do).
        client.send(.limits(maximumMessageSize: maximumMessageSize))
        return client
    }

    private static let alive = Atomic<Int>(0)

    /// Clients that exist now in this process. A client holds its worker's call table, buffers and
    /// process handle; tests and the soak benchmark check that the clients of workers that came and
    /// went are gone.
    package static var liveCount: Int { alive.load(ordering: .relaxed) }

    /// The backend the worker announces when it begins to serve (`"synchronous"` or
    /// `"asynchronous"`; ForkKit's workers do, first thing), or nil when it has not within `timeout`
    /// or its connection ended first.
    package func announcedBackend(within timeout: Duration) async -> String? {
        await withCheckedContinuation { (continuation: CheckedContinuation<String?, Never>) in
            let (ready, key): (String??, UInt64) = state.withLock { state in
                if let backend = state.announcedBackend { return (.some(backend), 0) }
                if state.table.ended { return (.some(nil), 0) }
                defer { state.nextAnnouncementWaiter += 1 }
                state.announcementWaiters[state.nextAnnouncementWaiter] = continuation
                return (nil, state.nextAnnouncementWaiter)
            }
            if let ready { return continuation.resume(returning: ready) }
            Task { [weak self] in
                try? await Task.sleep(for: timeout)
                self?.state.withLock { $0.announcementWaiters.removeValue(forKey: key) }?.resume(returning: nil)
            }
        }
    }

    /// Resumes the callers of ``announcedBackend(within:)`` with what is known now.
    func settleAnnouncement() {
        let (backend, waiters) = state.withLock { state in
            defer { state.announcementWaiters = [:] }
            return (state.announcedBackend, Array(state.announcementWaiters.values))
        }
        for waiter in waiters { waiter.resume(returning: backend) }
    }

    /// Sends a notification to the worker.
    public func notify(method: String, params: [MessagePackValue]) {
        send(.notification(method: method, params: params))
    }

    /// Closes gracefully: no new calls; those already made are answered; then the worker sees end of
    /// stream and exits (AnyEvent::Fork::RPC's `on_destroy`). Returns the worker's exit status.
    ///
    /// With a ``cancellationGracePeriod``, a worker that has not exited that long after its input
    /// ended is killed. Cancelling the task stops the wait for the exit status.
    @discardableResult
    public func close() async throws -> ExitStatus? {
        _ = await withCheckedContinuation { (watcher: Watcher) in
            if state.withLock({ $0.table.beginClosing(watcher) }) { watcher.resume(returning: true) }
        }
        connection.finishSending()
        guard let worker else { return nil }
        // A worker that does not exit once its input has ended (stopped, deadlocked) is killed.
        let killer = cancellationGracePeriod.map { grace in
            Task { [weak self] in
                try await Task.sleep(for: grace)
                self?.stopUnresponsiveWorker(because: "it did not exit within \(grace) of its input ending")
            }
        }
        defer { killer?.cancel() }
        return try await worker.exitStatus()
    }

    /// Kills the worker at once; every call in flight fails with ``RPCError/Kind/workerDied``.
    public func terminate() {
        worker?.send(signal: SIGKILL)
    }

    // MARK: - Internals

    /// Writes a message whole; returns why it could not, or nil. A notification that finds no room
    /// within the cancellation grace period (1 s by default) is dropped; one that went out in part
    /// closes the connection (see ``RPCConnection/send(until:cancellable:_:)``).
    @discardableResult
    func send(_ message: RPCMessage) -> RPCError? {
        let patience = state.withLock { $0.cancellationGracePeriod } ?? .seconds(1)
        return send(until: ContinuousClock.now + patience, cancellable: false) { writer, direct in
            let value = message.value
            writer.write(value)
            direct.append(value)
        }.failure
    }

    /// Sends the message `write` encodes (see ``RPCConnection/send(until:cancellable:_:)``); says
    /// why it could not, if it could not. A message that stalled half-way (or a socket that failed)
    /// broke the connection: the calls held then fail saying so.
    func send(
        until deadline: ContinuousClock.Instant?, cancellable: Bool, _ write: (inout MessagePackWriter, inout [MessagePackValue]) throws -> Void
    ) -> SendOutcome {
        let outcome = connection.send(until: deadline, cancellable: cancellable, write)
        if outcome.brokeConnection, let failure = outcome.failure {
            let reason = failure.kind == .workerDied
                ? "this owner closed its connection because sending to it failed (\(failure.message))"
                : "this owner closed its connection because a message to it stalled half-way"
            state.withLock { state in
                if state.killReason == nil { state.killReason = reason }
            }
        }
        return outcome
    }

    /// Ends a worker that stopped responding: kills its process (the calls it held fail naming
    /// `reason`), or without one closes the connection.
    func stopUnresponsiveWorker(because reason: String) {
        let alreadyEnded = state.withLock { state -> Bool in
            if state.killReason == nil { state.killReason = reason }
            return state.table.ended && worker == nil
        }
        if alreadyEnded { return }
        logger?.warning("killing worker \(pid.map(String.init) ?? "(no process)"): \(reason)")
        if let worker {
            worker.send(signal: SIGKILL)
        } else {
            end(RPCError(.workerDied, "stopped responding: \(reason); the connection was closed", pid: pid))
            connection.finishSending()
        }
    }

}
