import CForkSupport
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
/// Requests are written by the calling task; responses are read on ForkKit's monitor thread and
/// matched to their calls by msgid. Events (notifications) from the worker arrive on ``events``.
///
/// ```swift
/// let square = RPCFunction<Int, Int>("square")
/// let worker = try await RPCClient.start(template, running: "math")
/// let nine = try await worker.call(square, 3)
/// try await worker.close()          // queued calls finish, then the worker exits
/// ```
///
/// Every call ends: with its result, the worker's error, or an ``RPCError`` when the worker dies,
/// breaks the protocol, the timeout passes or the task is cancelled.
public final class RPCClient: Sendable {
    /// The worker's process id, when the worker is a forked child.
    public var pid: Int32? { worker?.pid }
    /// Events the worker emits, in order. One consumer; events nobody reads are kept until read, so
    /// a worker that emits without end needs a reader.
    public let events: AsyncStream<RPCEvent>

    private let input: Int32
    private let output: Int32
    /// Descriptors can only be passed over a socket; a pipe is written with SIGPIPE ignored.
    private let outputIsSocket: Bool
    /// Sockets are read with `recv(MSG_DONTWAIT)`; pipes are made non-blocking and read with `read`.
    private let inputIsSocket: Bool
    /// The worker process, when the worker is a forked child.
    public let worker: RunningChild?
    private let logger: Logger?
    /// The largest message sent or accepted; a ForkKit worker learns it at start (`$limits`).
    public let maximumMessageSize: Int
    private let state: Mutex<State>
    /// Guards the writing side; closed once `open` is false (a pipe cannot be half-shut like a socket).
    private let outgoing = Mutex(Outgoing())
    private let eventSink: AsyncStream<RPCEvent>.Continuation
    // Touched only on the monitor thread, which alone reads.
    private nonisolated(unsafe) var reader: MessagePackFrameReader
    private nonisolated(unsafe) var scratch = [UInt8](repeating: 0, count: 256 * 1024)

    private struct Call {
        let function: String
        /// Decodes the result (on the reading thread, while its bytes are at hand) and resumes the
        /// caller with it, or resumes the caller with an error.
        let complete: @Sendable (Completion) -> Void
    }

    private enum Completion {
        case result(MessagePackObject)
        case failure(any Error)
    }

    /// The writing side: whether it is still open, and the buffer each message is encoded into.
    private struct Outgoing: ~Copyable {
        var open = true
        var writer = MessagePackWriter()
    }

    private struct State {
        var nextID: UInt32 = 0
        var calls: [UInt32: Call] = [:]
        /// Calls given up on (timeout, cancellation) and not answered yet: their late responses are
        /// expected and dropped.
        var abandoned: Set<UInt32> = []
        /// Callers waiting until the worker has answered the abandoned calls each one names.
        var answerWaiters: [UInt64: (calls: Set<UInt32>, continuation: CheckedContinuation<Bool, Never>)] = [:]
        var nextAnswerWaiter: UInt64 = 0
        /// When the worker last answered a call: a worker that runs one call at a time starts the
        /// next one then.
        var lastAnswer: ContinuousClock.Instant?
        var failure: RPCError?
        /// The connection is over: nothing more is read. The calls held still end by their timeout or
        /// cancellation while the worker's exit status is awaited.
        var ended = false
        var closing = false
        /// The backend the worker announced (`$worker`), once it has.
        var announcedBackend: String?
        /// Callers of ``announcedBackend(within:)`` waiting for the announcement.
        var announcementWaiters: [UInt64: CheckedContinuation<String?, Never>] = [:]
        var drained: [CheckedContinuation<Void, Never>] = []
        var cancellationGracePeriod: Duration?
        /// Why this client killed its worker, for the errors of the calls it held.
        var killReason: String?

        /// Notes that abandoned call `id` was answered; returns the waiters with nothing left to wait for.
        mutating func abandonedCallAnswered(_ id: UInt32) -> [CheckedContinuation<Bool, Never>] {
            guard !answerWaiters.isEmpty else { return [] }
            var ready: [CheckedContinuation<Bool, Never>] = []
            for (key, var waiter) in answerWaiters where waiter.calls.remove(id) != nil {
                if waiter.calls.isEmpty {
                    answerWaiters[key] = nil
                    ready.append(waiter.continuation)
                } else {
                    answerWaiters[key] = waiter
                }
            }
            return ready
        }
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
    /// ``events`` as `$log` events.
    public init(
        input: FileDescriptor, output: FileDescriptor, worker: RunningChild? = nil,
        maximumMessageSize: Int = 64 << 20, logger: Logger? = nil
    ) {
        self.logger = logger
        self.maximumMessageSize = maximumMessageSize
        self.reader = MessagePackFrameReader(maximumMessageSize: maximumMessageSize)
        self.input = input.rawValue
        self.output = output.rawValue
        outputIsSocket = Self.isSocket(output.rawValue)
        inputIsSocket = Self.isSocket(input.rawValue)
        if !inputIsSocket {
            _ = fcntl(input.rawValue, F_SETFL, fcntl(input.rawValue, F_GETFL) | O_NONBLOCK)
        }
        if !outputIsSocket {
            // A worker that dies makes the next write to its pipe raise SIGPIPE, which would kill
            // this process; ignored, the write fails with EPIPE and the call with workerDied.
            signal(SIGPIPE, SIG_IGN)
            // Writes wait for room in slices (see `write(_:until:)`), never blocked in the kernel.
            _ = fcntl(output.rawValue, F_SETFL, fcntl(output.rawValue, F_GETFL) | O_NONBLOCK)
        }
        self.worker = worker
        self.state = Mutex(State())
        (events, eventSink) = AsyncStream.makeStream(of: RPCEvent.self)
        // Weak: a client dropped without close() must still close its end, so that the worker exits.
        DescriptorMonitor.shared.watch(self.input) { [weak self] in self?.readable() }
        Self.alive.add(1, ordering: .relaxed)
    }

    deinit {
        Self.alive.subtract(1, ordering: .relaxed)
        DescriptorMonitor.shared.unwatch(input)
        eventSink.finish()
        Glibc.close(input)
        if output != input, outgoing.withLock({ $0.open }) { Glibc.close(output) }
    }

    /// Starts a child from `template` (a local `ForkTemplate` or a `RemoteTemplate`) that runs
    /// `function` (an `rpcWorker` or `asyncRPCWorker` entry point) and returns a client connected to
    /// it (AnyEvent::Fork::RPC's `run`).
    public static func start(
        _ template: any ChildLauncher, running function: String, arguments: [[UInt8]] = [],
        maximumMessageSize: Int = 64 << 20, logger: Logger? = nil
    ) async throws -> RPCClient {
        let child = try await template.launch(running: function, arguments: arguments)
        // Close-on-exec like every descriptor ForkKit opens: a program this process execs later
        // must not hold the worker's socket (the worker would then never see end of stream).
        let copy = fcntl(child.socket.rawValue, F_DUPFD_CLOEXEC, 3)
        guard copy >= 0 else {
            let reason = Errno(rawValue: errno)
            child.send(signal: SIGKILL)
            throw RPCError(.workerDied, "cannot keep the worker's socket (\(reason)); the worker was killed", pid: child.pid)
        }
        let socket = FileDescriptor(rawValue: copy)
        child.closeSocket()
        let client = RPCClient(input: socket, output: socket, worker: child, maximumMessageSize: maximumMessageSize, logger: logger)
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
                if state.ended { return (.some(nil), 0) }
                defer { state.nextAnswerWaiter += 1 }
                state.announcementWaiters[state.nextAnswerWaiter] = continuation
                return (nil, state.nextAnswerWaiter)
            }
            if let ready { return continuation.resume(returning: ready) }
            Task { [weak self] in
                try? await Task.sleep(for: timeout)
                self?.state.withLock { $0.announcementWaiters.removeValue(forKey: key) }?.resume(returning: nil)
            }
        }
    }

    /// Resumes the callers of ``announcedBackend(within:)`` with what is known now.
    private func settleAnnouncement() {
        let (backend, waiters) = state.withLock { state in
            defer { state.announcementWaiters = [:] }
            return (state.announcedBackend, Array(state.announcementWaiters.values))
        }
        for waiter in waiters { waiter.resume(returning: backend) }
    }

    /// Calls `function` with `input` and waits for its result.
    ///
    /// - Parameters:
    ///   - function: the typed handle of a function the worker registered.
    ///   - input: its argument.
    ///   - timeout: how long to wait before giving up with ``RPCError/Kind/timeout``; the
    ///     worker is then sent `$cancel`. Task cancellation does the same with `CancellationError`.
    public func call<Input, Output>(_ function: RPCFunction<Input, Output>, _ input: Input, timeout: Duration? = nil) async throws -> Output {
        try await perform(method: function.name, naming: function.name, timeout: timeout) { writer, direct in
            writer.writeArrayHeader(count: 1)
            try self.encode(input, of: function.name, into: &writer, directValues: &direct)
        } decode: { result in
            try self.decode(Output.self, of: function.name, from: result)
        }
    }

    /// Calls `function` once for each of `inputs` in one round trip (the `$batch` extension), and
    /// returns each call's outcome in order: a pool's map sends its small items this way.
    ///
    /// Throws only when the batch as a whole fails (the worker died, the timeout passed, the
    /// function does not exist); an input whose call threw has its ``RPCError`` in its place.
    public func callBatch<Input, Output>(
        _ function: RPCFunction<Input, Output>, _ inputs: [Input], timeout: Duration? = nil
    ) async throws -> [Result<Output, RPCError>] {
        try await batch(function, inputs, timeout: timeout) { results, count in
            var outcomes: [Result<Output, RPCError>] = []
            outcomes.reserveCapacity(count)
            for index in 0..<count {
                do throws(RPCError) {
                    outcomes.append(.success(try self.batchItem(results[index], of: function)))
                } catch {
                    outcomes.append(.failure(error))
                }
            }
            return outcomes
        }
    }

    /// Like ``callBatch(_:_:timeout:)``, but the results as plain values, up to the first call that
    /// failed, and that call's error. (A pool's map wants exactly this, and a `Result` per item
    /// costs a generic metadata lookup per item here.)
    ///
    /// `oneCallAtATime`: the worker runs one call at a time (the synchronous backend), so the
    /// timeout counts from when it has answered the calls sent before this one, not from the send.
    package func callBatchValues<Input, Output>(
        _ function: RPCFunction<Input, Output>, _ inputs: [Input], timeout: Duration? = nil, oneCallAtATime: Bool = false
    ) async throws -> (outputs: [Output], firstFailure: RPCError?) {
        try await batch(function, inputs, timeout: timeout, oneCallAtATime: oneCallAtATime) { results, count in
            var outputs: [Output] = []
            outputs.reserveCapacity(count)
            for index in 0..<count {
                do throws(RPCError) {
                    outputs.append(try self.batchItem(results[index], of: function))
                } catch {
                    return (outputs, error)
                }
            }
            return (outputs, nil)
        }
    }

    /// Sends `inputs` as one `$batch` request; `collect` reads the `count` `[error, result]` pairs.
    private func batch<Input, Output, Collected: Sendable>(
        _ function: RPCFunction<Input, Output>, _ inputs: [Input], timeout: Duration?, oneCallAtATime: Bool = false,
        collect: @escaping @Sendable (MessagePackObject, Int) throws -> Collected
    ) async throws -> Collected {
        let name = function.name
        return try await perform(
            method: RPCArguments.batchMethod, naming: name, timeout: timeout, oneCallAtATime: oneCallAtATime
        ) { writer, direct in
            writer.writeArrayHeader(count: 2)
            writer.write(.string(name))
            writer.writeArrayHeader(count: inputs.count)
            // By index: an array's iterator costs more than the encoding of a small input here.
            for index in inputs.indices {
                writer.writeArrayHeader(count: 1)
                try self.encode(inputs[index], of: name, into: &writer, directValues: &direct)
            }
        } decode: { result in
            guard let count = result.count, count == inputs.count else {
                throw RPCError(.protocolViolation, "answered a batch of \(inputs.count) with \(result.typeName)", function: name, pid: self.pid)
            }
            return try collect(result, count)
        }
    }

    /// One `[error, result]` pair of a batch's response: the result, or the error it carries.
    private func batchItem<Input, Output>(_ pair: MessagePackObject, of function: RPCFunction<Input, Output>) throws(RPCError) -> Output {
        guard pair.count == 2 else {
            throw RPCError(.protocolViolation, "answered a batch item with \(pair.typeName), not [error, result]", function: function.name, pid: pid)
        }
        guard pair[0].isNil else {
            throw remoteError((try? pair[0].value()) ?? .nil, function: function.name)
        }
        return try decode(Output.self, of: function.name, from: pair[1])
    }

    /// Calls `method` with untyped parameters (for peers outside ForkKit).
    public func call(method: String, params: [MessagePackValue], timeout: Duration? = nil) async throws -> MessagePackValue {
        try await perform(method: method, naming: method, timeout: timeout) { writer, direct in
            let params = MessagePackValue.array(params)
            writer.write(params)
            direct.append(params)
        } decode: { result in
            do {
                return try result.value()
            } catch {
                throw RPCError(.protocolViolation, "sent a result that is not MessagePack (\(error))", function: method, pid: self.pid)
            }
        }
    }

    private func encode<Input: Encodable>(
        _ input: Input, of function: String, into writer: inout MessagePackWriter, directValues: inout [MessagePackValue]
    ) throws {
        do {
            try MessagePackEncoder().encode(input, into: &writer, directValues: &directValues)
        } catch {
            throw RPCError(.codingFailed, "cannot encode the argument as \(Input.self): \(error)", function: function, pid: pid)
        }
    }

    private func decode<Output: Decodable>(_ type: Output.Type, of function: String, from result: MessagePackObject) throws(RPCError) -> Output {
        do {
            return try result.decode(type)
        } catch {
            throw RPCError(.codingFailed, "returned a result that is not \(Output.self): \(error)", function: function, pid: pid)
        }
    }

    /// Sends request `method`, whose params `writeParams` appends (noting the values written in
    /// their own form, where descriptors may be), and waits for the result that `decode` reads.
    /// Errors name the call `function` (a batch is named after the function it runs). With
    /// `oneCallAtATime`, the timeout counts from the worker's last answer when that came after the send.
    private func perform<Result: Sendable>(
        method: String, naming function: String, timeout: Duration?, oneCallAtATime: Bool = false,
        writeParams: (inout MessagePackWriter, inout [MessagePackValue]) throws -> Void,
        decode: @escaping @Sendable (MessagePackObject) throws -> Result
    ) async throws -> Result {
        let id = state.withLock { state -> UInt32 in
            defer { state.nextID &+= 1 }
            return state.nextID
        }
        let timer = timeout.map { limit in
            Task { [weak self] in
                let sent = ContinuousClock.now
                var deadline = sent + limit
                while true {
                    try await Task.sleep(until: deadline, clock: .continuous)
                    // A worker that runs one call at a time starts this one once it has answered the
                    // calls before it: the time it waited for them does not count.
                    guard oneCallAtATime, let answer = self?.state.withLock({ $0.lastAnswer }), answer > sent,
                          answer + limit > deadline else { break }
                    deadline = answer + limit
                }
                self?.abandon(id, with: RPCError(.timeout, "did not answer within \(limit); the worker was asked to cancel it", function: function, pid: self?.pid))
            }
        }
        defer { timer?.cancel() }
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Result, any Error>) in
                let call = Call(function: function) { completion in
                    switch completion {
                    case .result(let result):
                        do {
                            continuation.resume(returning: try decode(result))
                        } catch {
                            continuation.resume(throwing: error)
                        }
                    case .failure(let error):
                        continuation.resume(throwing: error)
                    }
                }
                let refused: (any Error)? = state.withLock { state in
                    if state.closing { return RPCError(.closed, "the client was closed; it takes no new calls", function: function, pid: pid) }
                    if let failure = state.failure { return failure }
                    // Cancelled before the call was registered: the cancellation handler found nothing to cancel.
                    if Task.isCancelled { return CancellationError() }
                    state.calls[id] = call
                    return nil
                }
                if let refused { return continuation.resume(throwing: refused) }
                let failure = send(until: timeout.map { ContinuousClock.now + $0 }, ownRequest: true) { writer, direct in
                    writer.writeArrayHeader(count: 4)
                    writer.write(0)
                    writer.write(Int(id))
                    writer.write(.string(method))
                    try writeParams(&writer, &direct)
                }
                if var failure {
                    if failure.function == nil { failure.function = function }
                    let call = state.withLock { $0.calls.removeValue(forKey: id) }
                    call?.complete(.failure(failure))
                    // A close() waiting for the calls in flight may have been waiting for this one.
                    settleIfDrained()
                }
            }
        } onCancel: {
            abandon(id, with: CancellationError())
        }
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
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let done = state.withLock { state in
                state.closing = true
                if state.calls.isEmpty || state.failure != nil { return true }
                state.drained.append(continuation)
                return false
            }
            if done { continuation.resume() }
        }
        finishOutput()
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
    /// closes the connection (see ``send(until:ownRequest:_:)``).
    @discardableResult
    private func send(_ message: RPCMessage) -> RPCError? {
        let patience = state.withLock { $0.cancellationGracePeriod } ?? .seconds(1)
        return send(until: ContinuousClock.now + patience, ownRequest: false) { writer, direct in
            let value = message.value
            writer.write(value)
            direct.append(value)
        }
    }

    /// Encodes a message with `write` into the connection's buffer and sends it whole, with the
    /// descriptors found in the values `write` reports; returns why it could not, or nil. When the
    /// worker does not take it all by `deadline` (or, for the caller's `ownRequest`, the calling
    /// task is cancelled meanwhile), it gives up: without closing anything if no byte went out, and
    /// otherwise by closing the connection (half a message cannot be taken back).
    ///
    /// The wait happens under the connection's write lock, in 20 ms slices: a send with no deadline
    /// to a worker that never reads (stopped, and without a timeout) holds the senders behind it.
    private func send(
        until deadline: ContinuousClock.Instant?, ownRequest: Bool, _ write: (inout MessagePackWriter, inout [MessagePackValue]) throws -> Void
    ) -> RPCError? {
        outgoing.withLock { outgoing -> RPCError? in
            guard outgoing.open else { return RPCError(.closed, "the client's output is closed", pid: pid) }
            outgoing.writer.reset()
            var direct: [MessagePackValue] = []
            do {
                try write(&outgoing.writer, &direct)
            } catch {
                return error as? RPCError ?? RPCError(.codingFailed, "cannot encode the message: \(error)", pid: pid)
            }
            guard outgoing.writer.count <= maximumMessageSize else {
                return RPCError(
                    .messageTooLarge,
                    "the message is \(outgoing.writer.count) bytes, over the maximumMessageSize of \(maximumMessageSize) bytes "
                        + "that both sides honour (RPCClient.start(maximumMessageSize:), WorkerPool.Configuration.maximumMessageSize); "
                        + "it was not sent. Raise the limit, or send less per call", pid: pid)
            }
            let descriptors = direct.flatMap(PassedDescriptor.descriptors(in:))
            let (failure, gaveUp) = outgoing.writer.withBytes { bytes -> (RPCError?, Bool) in
                var offset = 0  // bytes already sent with the descriptors
                if !descriptors.isEmpty {
                    guard outputIsSocket else {
                        return (RPCError(.codingFailed, "descriptors can only be passed over a Unix socket, not a pipe", pid: pid), false)
                    }
                    if let place = worker?.remoteName {
                        return (RPCError(
                            .codingFailed,
                            "descriptors cannot be passed to a remote worker (\(place)): its connection is a byte stream "
                                + "between machines; open the file or socket in the worker instead", pid: pid), false)
                    }
                    // The descriptors ride on the message's first bytes, so they arrive before it is complete.
                    offset = forkkit_send_with_descriptors(output, bytes.baseAddress, bytes.count, descriptors, Int32(descriptors.count))
                    if offset < 0 { return (sendFailure(errno), false) }
                }
                return self.write(
                    UnsafeRawBufferPointer(rebasing: bytes[offset...]), until: deadline, cancellable: ownRequest, alreadySent: offset)
            }
            if gaveUp && !outputIsSocket {
                // A pipe cannot be shut down like a socket: closing its write end is how it ends.
                Glibc.close(output)
                outgoing.open = false
            }
            return failure
        }
    }

    /// Writes `bytes` whole without blocking in the kernel: while the worker's input is full it
    /// waits for room in short slices, so that a stopped worker cannot hold the caller past its
    /// deadline or (when `cancellable`) the task's cancellation. `alreadySent` bytes of the message
    /// went out before these. Returns why it could not, and whether it gave up half-way (the
    /// connection must then end).
    private func write(
        _ bytes: UnsafeRawBufferPointer, until deadline: ContinuousClock.Instant?, cancellable: Bool, alreadySent: Int
    ) -> (RPCError?, gaveUp: Bool) {
        var offset = 0
        while offset < bytes.count {
            let start = bytes.baseAddress! + offset, count = bytes.count - offset
            let sent = outputIsSocket ? Glibc.send(output, start, count, Int32(MSG_NOSIGNAL | MSG_DONTWAIT)) : Glibc.write(output, start, count)
            if sent >= 0 {
                offset += sent
                continue
            }
            guard errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR else { return (sendFailure(errno), false) }
            let cancelled = cancellable && Task.isCancelled
            if deadline.map({ ContinuousClock.now >= $0 }) == true || cancelled {
                let kind: RPCError.Kind = cancelled ? .closed : .timeout
                guard offset + alreadySent > 0 else {
                    return (RPCError(kind, "the worker took none of the message in time (is it stopped, or not reading?); nothing was sent", pid: pid), false)
                }
                shutdown(output, Int32(SHUT_RDWR))
                state.withLock { state in
                    if state.killReason == nil { state.killReason = "this owner closed its connection because a message to it stalled half-way" }
                }
                return (RPCError(
                    kind,
                    "the worker took \(offset + alreadySent) of the message's \(bytes.count + alreadySent) bytes and no more in time (is "
                        + "it stopped, or not reading?); the connection was closed, since half a message cannot be taken back", pid: pid), true)
            }
            var room = pollfd(fd: output, events: Int16(POLLOUT), revents: 0)
            _ = poll(&room, 1, 20)
        }
        return (nil, false)
    }

    private func sendFailure(_ error: Int32) -> RPCError {
        RPCError(.workerDied, "cannot send to the worker: \(String(cString: strerror(error)))", pid: pid)
    }

    /// Tells the worker no more requests come: end of stream on its input.
    private func finishOutput() {
        outgoing.withLock { outgoing in
            guard outgoing.open else { return }
            if shutdown(output, Int32(SHUT_WR)) != 0 && output != input {
                // A pipe: closing the write end is how it ends.
                Glibc.close(output)
                outgoing.open = false
            }
        }
    }

    /// Gives up on call `id` (timeout or cancellation): it fails now, and the worker is told. With a
    /// ``cancellationGracePeriod``, a worker that does not answer it in time is killed.
    private func abandon(_ id: UInt32, with error: any Error) {
        let (call, ended, grace): (Call?, Bool, Duration?) = state.withLock { state in
            guard let call = state.calls.removeValue(forKey: id) else { return (nil, false, nil) }
            // After the connection ended no answer can come, and the worker cannot be told.
            guard !state.ended else { return (call, true, nil) }
            state.abandoned.insert(id)
            return (call, false, state.cancellationGracePeriod)
        }
        guard let call else { return }
        call.complete(.failure(error))
        if !ended { send(.cancel(id)) }
        settleIfDrained()
        if let grace {
            Task { [weak self] in
                guard let self, await !self.abandonedCallsAnswered(within: grace) else { return }
                self.stopUnresponsiveWorker(because: "it did not answer a call it was told to cancel within \(grace)")
            }
        }
    }

    /// Waits until the worker has answered every call given up on so far (after a timeout or a
    /// cancelled task it was sent `$cancel` for each), or its connection has ended. Returns false
    /// when `limit` passed first: the worker is not answering (stopped, deadlocked, or in a
    /// function that ignores cancellation).
    package func abandonedCallsAnswered(within limit: Duration) async -> Bool {
        let id = state.withLock { state -> UInt64 in
            defer { state.nextAnswerWaiter &+= 1 }
            return state.nextAnswerWaiter
        }
        return await withCheckedContinuation { continuation in
            let answered = state.withLock { state -> Bool in
                if state.ended || state.abandoned.isEmpty { return true }
                state.answerWaiters[id] = (state.abandoned, continuation)
                return false
            }
            if answered { return continuation.resume(returning: true) }
            // The caller holds this client while it waits, so the timer finds it.
            Task { [weak self] in
                try? await Task.sleep(for: limit)
                let waiter = self?.state.withLock { $0.answerWaiters.removeValue(forKey: id) }
                waiter?.continuation.resume(returning: false)
            }
        }
    }

    /// Ends a worker that stopped responding: kills its process (the calls it held fail naming
    /// `reason`), or without one closes the connection.
    private func stopUnresponsiveWorker(because reason: String) {
        let alreadyEnded = state.withLock { state -> Bool in
            if state.killReason == nil { state.killReason = reason }
            return state.ended && worker == nil
        }
        if alreadyEnded { return }
        logger?.warning("killing worker \(pid.map(String.init) ?? "(no process)"): \(reason)")
        if let worker {
            worker.send(signal: SIGKILL)
        } else {
            end(RPCError(.workerDied, "stopped responding: \(reason); the connection was closed", pid: pid))
            finishOutput()
        }
    }

    private static func isSocket(_ descriptor: Int32) -> Bool {
        var kind: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        return getsockopt(descriptor, SOL_SOCKET, SO_TYPE, &kind, &length) == 0
    }

    private func readable() {
        let count = scratch.withUnsafeMutableBytes { buffer in
            inputIsSocket ? recv(input, buffer.baseAddress, buffer.count, Int32(MSG_DONTWAIT)) : read(input, buffer.baseAddress, buffer.count)
        }
        if count < 0 {
            if errno == EAGAIN || errno == EINTR { return }
            return end(nil)
        }
        if count == 0 { return end(nil) }
        scratch.withUnsafeBytes { reader.append(UnsafeRawBufferPointer(rebasing: $0.prefix(count))) }
        do {
            while try reader.nextObject({ message in try dispatch(message) }) != nil {}
        } catch let error as RPCError {
            end(error)
        } catch MessagePackError.messageTooLarge(let size, let limit) {
            // Well-formed, only too large: an event or log record (a worker checks its results, not
            // those), or a peer that was never told the limit.
            end(RPCError(
                .protocolViolation,
                "sent a message of at least \(size) bytes, over the maximumMessageSize of \(limit) bytes (an event or log record "
                    + "that large, or a peer that was not told the limit); the connection was closed. Raise the limit, or send less at once",
                pid: pid))
        } catch {
            end(RPCError(.protocolViolation, "sent bytes that are not MessagePack-RPC (\(error)); the connection was closed", pid: pid))
        }
    }

    /// Handles one message from the worker. A response is matched to its call and decoded in
    /// place; anything else is read into a value first.
    private func dispatch(_ message: MessagePackObject) throws {
        guard message.count == 4, message[0].integerValue == 1, let id = message[1].integerValue.flatMap(UInt32.init(exactly:)) else {
            return try dispatch(try RPCMessage(try message.value()))
        }
        let (call, expected, answered) = state.withLock { state -> (Call?, Bool, [CheckedContinuation<Bool, Never>]) in
            state.lastAnswer = .now
            if let call = state.calls.removeValue(forKey: id) { return (call, false, []) }
            guard state.abandoned.remove(id) != nil else { return (nil, false, []) }
            return (nil, true, state.abandonedCallAnswered(id))
        }
        guard let call else {
            for waiter in answered { waiter.resume(returning: true) }
            if expected { return }
            throw RPCError(.protocolViolation, "answered msgid \(id), which no call is waiting for; the connection was closed", pid: pid)
        }
        if message[2].isNil {
            call.complete(.result(message[3]))
        } else {
            call.complete(.failure(remoteError(try message[2].value(), function: call.function)))
        }
        settleIfDrained()
    }

    private func dispatch(_ message: RPCMessage) throws {
        switch message {
        case .response(let id, _, _):
            throw RPCError(.protocolViolation, "sent a malformed response to msgid \(id); the connection was closed", pid: pid)
        case .notification(RPCMessage.workerMethod, let params):
            state.withLock { $0.announcedBackend = params.first?.stringValue }
            settleAnnouncement()
        case .notification(let method, let params):
            if method == RPCLogHandler.method, let logger, RPCLogHandler.forward(params, to: logger, pid: pid) { return }
            eventSink.yield(RPCEvent(name: method, params: params))
        case .request(_, let method, _):
            throw RPCError(.protocolViolation, "sent a request ('\(method)'); workers answer, they do not call", pid: pid)
        }
    }

    private func remoteError(_ error: MessagePackValue, function: String) -> RPCError {
        let fields = error.arrayValue ?? [error]
        let type = fields.count >= 2 ? fields[0].stringValue : nil
        let text = (fields.count >= 2 ? fields[1] : fields[0]).stringValue ?? "\(error)"
        let kind: RPCError.Kind = switch type {
        case "NoSuchMethod": .unknownFunction
        case "InvalidArguments": .invalidArguments
        case "MessageTooLarge": .messageTooLarge
        default: .remote
        }
        let sentence = kind == .remote ? "threw: \(text)" : text
        return RPCError(kind, sentence, function: function, pid: pid, remoteType: type)
    }

    /// The connection is over: every call fails, with the worker's exit status when it has one.
    /// Runs once; `error` says how the worker broke the protocol, nil when it went away.
    private func end(_ error: RPCError?) {
        let pid = self.pid
        // New calls fail at once from here on. Nothing more will answer an abandoned call.
        let waiters = state.withLock { state -> [CheckedContinuation<Bool, Never>]? in
            guard !state.ended else { return nil }
            state.ended = true
            if state.failure == nil {
                state.failure = error ?? RPCError(.workerDied, "the worker has gone", pid: pid)
            }
            state.abandoned = []
            defer { state.answerWaiters = [:] }
            return state.answerWaiters.values.map(\.continuation)
        }
        guard let waiters else { return }
        DescriptorMonitor.shared.unwatch(input)
        if error != nil { shutdown(input, Int32(SHUT_RDWR)) }
        eventSink.finish()
        settleAnnouncement()
        for waiter in waiters { waiter.resume(returning: true) }
        // A broken protocol says what happened: the calls held fail now, whatever the worker does next.
        if let error { return failHeldCalls(with: error) }
        let worker = self.worker
        // The exit notice comes from the template on another connection, usually a moment later.
        // Meanwhile the calls held stay in the table, so that their timeouts and cancellation still
        // end them (a worker that closed its socket may never exit).
        Task {
            let status = try? await withThrowingTaskGroup(of: ExitStatus?.self) { group in
                group.addTask { try await worker?.exitStatus() }
                group.addTask { try await Task.sleep(for: .seconds(1)); return nil }
                defer { group.cancelAll() }  // exitStatus() ends when cancelled
                return try await group.next() ?? nil
            }
            var sentence = status.map { "died (\($0)) before answering" } ?? "closed its connection before answering"
            // Its crash report went to a file, not the owner's terminal (see CrashReports): its gist goes here.
            if case .signaled = status, let pid, let crash = CrashReports.summary(ofCrashOf: pid) {
                sentence += " (\(crash))"
            }
            // This client's own reason, unless the worker died of something else first (a crash says more).
            if let reason = self.state.withLock({ $0.killReason }), status == nil || status == .signaled(SIGKILL) {
                sentence = (status.map { "was killed (\($0)) before answering" } ?? "did not answer") + ": \(reason)"
            }
            if let place = worker?.remoteName {
                sentence += "; it ran remotely (\(place)), so the connection may have been lost: pid \(pid.map(String.init) ?? "?") is the local command's"
            }
            let failure = RPCError(.workerDied, sentence, pid: pid, exitStatus: status)
            self.state.withLock { $0.failure = failure }
            self.failHeldCalls(with: failure)
        }
    }

    /// Fails every call still held with `failure`, named after each call's function.
    private func failHeldCalls(with failure: RPCError) {
        let calls = state.withLock { state in
            defer { state.calls = [:] }
            return state.calls
        }
        for (_, call) in calls {
            var named = failure
            named.function = call.function
            call.complete(.failure(named))
        }
        settleIfDrained()
    }

    private func settleIfDrained() {
        let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            guard state.calls.isEmpty else { return [] }
            defer { state.drained = [] }
            return state.drained
        }
        for waiter in waiters { waiter.resume() }
    }
}

/// An event a worker sent: a MessagePack-RPC notification.
public struct RPCEvent: Sendable, Equatable {
    /// The notification's method name.
    public let name: String
    /// Its parameters.
    public let params: [MessagePackValue]

    /// The first parameter decoded as `type` (what ``RPCServer/emit(_:_:)`` sends).
    public func value<Value: Decodable>(as type: Value.Type) throws -> Value {
        try MessagePackDecoder().decode(type, from: params.first ?? .nil)
    }
}
