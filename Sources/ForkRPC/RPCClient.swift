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
/// Every call ends: with its result, the worker's error, or an ``RPCError`` when the worker dies,
/// breaks the protocol, the timeout passes or the task is cancelled.
public final class RPCClient: Sendable {
    /// The worker's process id, when the worker is a forked child.
    public var pid: Int32? { worker?.pid }
    /// Events the worker emits, in order. One consumer; events nobody reads are kept until read, so
    /// a worker that emits without end needs a reader.
    public let events: AsyncStream<RPCEvent>
    /// The worker process, when the worker is a forked child.
    public let worker: RunningChild?
    /// The largest message sent or accepted; a ForkKit worker learns it at start (`$limits`).
    public var maximumMessageSize: Int { connection.maximumMessageSize }

    private let connection: RPCConnection
    private let logger: Logger?
    private let eventSink: AsyncStream<RPCEvent>.Continuation
    /// Message ids, without a lock: one atomic add per call.
    private let nextID = Atomic<UInt32>(0)
    private let state = Mutex(State())

    /// A caller waiting for its response, which it decodes itself (off the monitor thread).
    private typealias Caller = UnsafeContinuation<MessagePackMessage, any Error>
    /// Someone waiting for the call table to change (true: what they waited for happened).
    private typealias Watcher = CheckedContinuation<Bool, Never>

    private struct State {
        var table = CallTable<Caller, Watcher>()
        /// The backend the worker announced (`$worker`), once it has.
        var announcedBackend: String?
        /// Callers of ``announcedBackend(within:)`` waiting for the announcement.
        var announcementWaiters: [UInt64: CheckedContinuation<String?, Never>] = [:]
        var nextAnnouncementWaiter: UInt64 = 0
        var cancellationGracePeriod: Duration?
        /// Why this client killed its worker, for the errors of the calls it held.
        var killReason: String?
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
    public convenience init(
        input: FileDescriptor, output: FileDescriptor, worker: RunningChild? = nil,
        maximumMessageSize: Int = 64 << 20, logger: Logger? = nil
    ) {
        self.init(
            socket: WireSocket(adoptingInput: input, output: output, blocking: false), worker: worker,
            maximumMessageSize: maximumMessageSize, logger: logger)
    }

    private init(socket: consuming WireSocket, worker: RunningChild?, maximumMessageSize: Int, logger: Logger?) {
        self.logger = logger
        self.worker = worker
        connection = RPCConnection(socket: socket, pid: worker?.pid, remoteName: worker?.remoteName, maximumMessageSize: maximumMessageSize)
        (events, eventSink) = AsyncStream.makeStream(of: RPCEvent.self)
        connection.startReading { [weak self] incoming in self?.received(incoming) }
        Self.alive.add(1, ordering: .relaxed)
    }

    deinit {
        Self.alive.subtract(1, ordering: .relaxed)
        eventSink.finish()
    }

    /// Starts a child from `template` (a local `ForkTemplate` or a `RemoteTemplate`) that runs
    /// `function` (an `rpcWorker` or `asyncRPCWorker` entry point) and returns a client connected to
    /// it (AnyEvent::Fork::RPC's `run`).
    public static func start(
        _ template: any ChildLauncher, running function: String, arguments: [[UInt8]] = [],
        maximumMessageSize: Int = 64 << 20, logger: Logger? = nil
    ) async throws -> RPCClient {
        let child = try await template.launch(running: function, arguments: arguments)
        guard let socket = child.takeSocket() else {
            child.send(signal: SIGKILL)
            throw RPCError(.workerDied, "the worker's socket was already closed by its RunningChild; the worker was killed", pid: child.pid)
        }
        // ForkKit made it: a Unix socket (to a remote worker too: one end of the command's socketpair).
        let client = RPCClient(
            socket: WireSocket(adoptingSocket: socket, blocking: false), worker: child, maximumMessageSize: maximumMessageSize, logger: logger)
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
    private func settleAnnouncement() {
        let (backend, waiters) = state.withLock { state in
            defer { state.announcementWaiters = [:] }
            return (state.announcedBackend, Array(state.announcementWaiters.values))
        }
        for waiter in waiters { waiter.resume(returning: backend) }
    }

    // MARK: - Calls

    /// Calls `function` with `input` and waits for its result.
    ///
    /// - Parameters:
    ///   - function: the typed handle of a function the worker registered.
    ///   - input: its argument.
    ///   - timeout: how long to wait before giving up with ``RPCError/Kind/timeout``; the
    ///     worker is then sent `$cancel`. Task cancellation does the same with `CancellationError`.
    public func call<Input, Output>(_ function: RPCFunction<Input, Output>, _ input: Input, timeout: Duration? = nil) async throws -> Output {
        let response = try await exchange(method: function.name, naming: function.name, timeout: timeout) { writer, direct in
            writer.writeArrayHeader(count: 1)
            try self.encode(input, of: function.name, into: &writer, directValues: &direct)
        }
        return try result(of: response, function: function.name) { try self.decode(Output.self, of: function.name, from: $0) }
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
    private func batch<Input, Output, Collected>(
        _ function: RPCFunction<Input, Output>, _ inputs: [Input], timeout: Duration?, oneCallAtATime: Bool = false,
        collect: (MessagePackObject, Int) throws -> Collected
    ) async throws -> Collected {
        let name = function.name
        let response = try await exchange(
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
        }
        return try result(of: response, function: name) { results in
            guard let count = results.count, count == inputs.count else {
                throw RPCError(.protocolViolation, "answered a batch of \(inputs.count) with \(results.typeName)", function: name, pid: self.pid)
            }
            return try collect(results, count)
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
        let response = try await exchange(method: method, naming: method, timeout: timeout) { writer, direct in
            let params = MessagePackValue.array(params)
            writer.write(params)
            direct.append(params)
        }
        return try result(of: response, function: method) { result in
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

    /// Reads a response `[1, msgid, error, result]` (and releases it): `read` decodes the result,
    /// or the error is thrown as an ``RPCError``.
    private func result<Result>(
        of response: MessagePackMessage, function: String, _ read: (MessagePackObject) throws -> Result
    ) throws -> Result {
        defer { response.release() }
        return try response.withObject { message in
            guard message[2].isNil else {
                let error: MessagePackValue
                do {
                    error = try message[2].value()
                } catch {
                    throw RPCError(.protocolViolation, "sent an error that is not MessagePack (\(error))", function: function, pid: pid)
                }
                throw remoteError(error, function: function)
            }
            return try read(message[3])
        }
    }

    /// Sends request `method`, whose params `writeParams` appends (noting the values written in
    /// their own form, where descriptors may be), and waits for the response, which the caller
    /// decodes (and releases). Errors name the call `function` (a batch is named after the function
    /// it runs). With `oneCallAtATime`, the timeout counts from the worker's last answer when that
    /// came after the send.
    private func exchange(
        method: String, naming function: String, timeout: Duration?, oneCallAtATime: Bool = false,
        writeParams: (inout MessagePackWriter, inout [MessagePackValue]) throws -> Void
    ) async throws -> MessagePackMessage {
        let id = nextID.wrappingAdd(1, ordering: .relaxed).oldValue
        let timer = timeout.map { limit in startTimer(for: id, function: function, limit: limit, oneCallAtATime: oneCallAtATime) }
        defer { timer?.cancel() }
        return try await withTaskCancellationHandler {
            try await withUnsafeThrowingContinuation { (caller: Caller) in
                let refusal = state.withLock { $0.table.admit(id, function: function, caller: caller, cancelled: Task.isCancelled) }
                if let refusal {
                    return caller.resume(throwing: error(for: refusal, function: function))
                }
                let (failure, brokeConnection) = connection.send(until: timeout.map { ContinuousClock.now + $0 }, cancellable: true) { writer, direct in
                    writer.writeArrayHeader(count: 4)
                    writer.write(0)
                    writer.write(Int(id))
                    writer.write(.string(method))
                    try writeParams(&writer, &direct)
                }
                guard var failure else { return }
                if brokeConnection { noteKillReason("this owner closed its connection because a message to it stalled half-way") }
                if failure.function == nil { failure.function = function }
                // A close() waiting for the calls in flight may have been waiting for this one.
                guard let (call, drained) = state.withLock({ $0.table.withdraw(id) }) else { return }
                call.caller.resume(throwing: failure)
                for watcher in drained { watcher.resume(returning: true) }
            }
        } onCancel: {
            abandon(id, with: CancellationError())
        }
    }

    private func error(for refusal: CallTable<Caller, Watcher>.Refusal, function: String) -> any Error {
        switch refusal {
        case .closing: RPCError(.closed, "the client was closed; it takes no new calls", function: function, pid: pid)
        case .ended(let failure): failure
        case .cancelled: CancellationError()
        }
    }

    /// Gives up on call `id` once `limit` has passed.
    private func startTimer(for id: UInt32, function: String, limit: Duration, oneCallAtATime: Bool) -> Task<Void, any Error> {
        Task { [weak self] in
            let sent = ContinuousClock.now
            var deadline = sent + limit
            while true {
                try await Task.sleep(until: deadline, clock: .continuous)
                // A worker that runs one call at a time starts this one once it has answered the
                // calls before it: the time it waited for them does not count.
                guard oneCallAtATime, let answer = self?.state.withLock({ $0.table.lastAnswer }), answer > sent,
                      answer + limit > deadline else { break }
                deadline = answer + limit
            }
            self?.abandon(id, with: RPCError(.timeout, "did not answer within \(limit); the worker was asked to cancel it", function: function, pid: self?.pid))
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
    private func send(_ message: RPCMessage) -> RPCError? {
        let patience = state.withLock { $0.cancellationGracePeriod } ?? .seconds(1)
        let (failure, brokeConnection) = connection.send(until: ContinuousClock.now + patience, cancellable: false) { writer, direct in
            let value = message.value
            writer.write(value)
            direct.append(value)
        }
        if brokeConnection { noteKillReason("this owner closed its connection because a message to it stalled half-way") }
        return failure
    }

    private func noteKillReason(_ reason: String) {
        state.withLock { state in
            if state.killReason == nil { state.killReason = reason }
        }
    }

    /// Gives up on call `id` (timeout or cancellation): it fails now, and the worker is told. With a
    /// ``cancellationGracePeriod``, a worker that does not answer it in time is killed.
    private func abandon(_ id: UInt32, with error: any Error) {
        let (abandonment, grace) = state.withLock { state in (state.table.abandon(id), state.cancellationGracePeriod) }
        guard let abandonment else { return }
        abandonment.call.caller.resume(throwing: error)
        for watcher in abandonment.drained { watcher.resume(returning: true) }
        guard abandonment.tellWorker else { return }
        send(.cancel(id))
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
        await withCheckedContinuation { (watcher: Watcher) in
            guard let key = state.withLock({ $0.table.watchAbandonedCalls(watcher) }) else { return watcher.resume(returning: true) }
            // The caller holds this client while it waits, so the timer finds it.
            Task { [weak self] in
                try? await Task.sleep(for: limit)
                self?.state.withLock { $0.table.stopWatching(key) }?.resume(returning: false)
            }
        }
    }

    /// Ends a worker that stopped responding: kills its process (the calls it held fail naming
    /// `reason`), or without one closes the connection.
    private func stopUnresponsiveWorker(because reason: String) {
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

    // MARK: - Reading (on the monitor thread)

    private func received(_ incoming: RPCConnection.Incoming) {
        switch incoming {
        case .ended(let violation):
            end(violation.map { RPCError(.protocolViolation, $0, pid: pid) })
        case .message(let message):
            do {
                try dispatch(message)
            } catch let error as RPCError {
                end(error)
            } catch {
                end(RPCError(.protocolViolation, "sent bytes that are not MessagePack-RPC (\(error)); the connection was closed", pid: pid))
            }
        }
    }

    /// Handles one message from the worker. A response goes, undecoded, to its caller; anything
    /// else is read into a value first.
    private func dispatch(_ message: MessagePackMessage) throws {
        let responseID = message.withObject { message -> UInt32? in
            guard message.count == 4, message[0].integerValue == 1 else { return nil }
            return message[1].integerValue.flatMap(UInt32.init(exactly:))
        }
        guard let id = responseID else {
            defer { message.release() }
            return try dispatch(try RPCMessage(try message.withObject { try $0.value() }))
        }
        switch state.withLock({ $0.table.responseArrived(id, at: .now) }) {
        case .deliver(let call, let drained):
            call.caller.resume(returning: message)
            for watcher in drained { watcher.resume(returning: true) }
        case .late(let answered):
            message.release()
            for watcher in answered { watcher.resume(returning: true) }
        case .unexpected:
            message.release()
            throw RPCError(.protocolViolation, "answered msgid \(id), which no call is waiting for; the connection was closed", pid: pid)
        }
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
        guard let watchers = state.withLock({ $0.table.end(error ?? RPCError(.workerDied, "the worker has gone", pid: pid)) }) else { return }
        connection.stopReading(breaking: error != nil)
        eventSink.finish()
        settleAnnouncement()
        for watcher in watchers { watcher.resume(returning: true) }
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
            self.failHeldCalls(with: RPCError(.workerDied, sentence, pid: pid, exitStatus: status))
        }
    }

    /// Fails every call still held with `failure`, named after each call's function.
    private func failHeldCalls(with failure: RPCError) {
        let (calls, drained) = state.withLock { $0.table.failHeldCalls(with: failure) }
        for (caller, error) in calls { caller.resume(throwing: error) }
        for watcher in drained { watcher.resume(returning: true) }
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
