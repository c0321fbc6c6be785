import Dispatch
import ForkKit
import Logging

#if canImport(Glibc)
import Glibc
#endif
import MessagePack
import Synchronization
import SystemPackage
import Tracing

/// The worker side of MessagePack-RPC, asynchronous backend: `async` functions, several calls
/// running at once up to a limit (AnyEvent::Fork::RPC's async backend), each cancelled when the
/// owner sends `$cancel` (a timeout or a cancelled task on the owner's side).
///
/// ```swift
/// ForkTemplate.bootstrap([
///     .asyncRPCWorker("fetcher", maximumConcurrentCalls: 8) { server in
///         server.register(fetch) { url in try await download(url) }
///     },
/// ])
/// ```
///
/// A dedicated thread reads requests; each runs in its own task; responses are written as they
/// finish, in any order. When the owner closes its end, calls already started finish first.
public final class AsyncRPCServer: Sendable {
    /// Decodes a call's params (while they can be read in place, on the reading thread) and returns
    /// the call, which runs the function and returns how to encode its result.
    private struct Handler: Sendable {
        let single: @Sendable (_ params: MessagePackObject) throws -> Run
        let batch: @Sendable (_ calls: [MessagePackObject]) -> BatchRun
    }
    private typealias Run = @Sendable () async throws -> RPCArguments.ResultEncoder
    /// Runs a `$batch`'s calls one after another; returns how to write their results.
    private typealias BatchRun = @Sendable () async -> @Sendable (inout MessagePackWriter) -> Void
    private typealias Call = Result<RPCArguments.Prepared<Run, BatchRun>, any Error>

    private let maximumConcurrentCalls: Int
    /// Read by the reading thread alone; written by any task, one whole message at a time
    /// (under ``sendOrder``).
    private let socket: WireSocket
    private let maximumMessageSize: Int
    /// The functions, and a name that the set-up registered twice (then every call fails, saying so).
    private let handlers = Mutex<(table: [String: Handler], registeredTwice: String?)>(([:], nil))
    /// The largest response sent: the owner's `$limits`, or `maximumMessageSize` until one arrives.
    private let responseLimit: Atomic<Int>
    /// Writes from concurrent calls go out one whole message at a time.
    private let sendOrder = Mutex<Void>(())
    private let state = Mutex(State())

    private struct State {
        var running: [UInt32: Task<Void, Never>] = [:]
        /// Requests waiting for a free slot, with their trace context when they came with one.
        var waiting: [(UInt32, Call, [String: String]?)] = []
        /// The trace contexts (`$context`) of requests not read yet, by msgid.
        var contexts: [UInt32: [String: String]] = [:]
        var cancelledEarly: Set<UInt32> = []
        var ended = false
        var finished: CheckedContinuation<Void, Never>?
        /// This worker's own requests to the owner (``call(_:_:timeout:)``), waiting for answers.
        /// Whether ``serve()`` has begun: answers from the owner are read only from then on.
        var serving = false
        var calling: [UInt32: (method: String, caller: CheckedContinuation<(error: MessagePackValue, result: MessagePackValue), any Error>)] = [:]
        var nextCallID: UInt32 = 0
    }

    /// Serves on one bidirectional socket (a forked child's socket), at most `maximumConcurrentCalls`
    /// calls at a time; more wait in order.
    public convenience init(socket: FileDescriptor, maximumConcurrentCalls: Int = 16, maximumMessageSize: Int = 64 << 20) {
        self.init(input: socket, output: socket, maximumConcurrentCalls: maximumConcurrentCalls, maximumMessageSize: maximumMessageSize)
    }

    /// Serves on separate descriptors (a remote worker's standard input and output, or pipes).
    public init(input: FileDescriptor, output: FileDescriptor, maximumConcurrentCalls: Int = 16, maximumMessageSize: Int = 64 << 20) {
        self.maximumConcurrentCalls = max(1, maximumConcurrentCalls)
        socket = WireSocket(usingInput: input, output: output, blocking: true)
        self.maximumMessageSize = maximumMessageSize
        responseLimit = Atomic(maximumMessageSize)
    }

    /// Serves `function` with an `async` body.
    ///
    /// Each name is registered once: a name registered twice makes every call to this worker fail
    /// with an error that names it (it cannot know which body was meant).
    public func register<each Input, Output>(
        _ function: RPCFunction<repeat each Input, Output>, _ body: @escaping @Sendable (repeat each Input) async throws -> Output
    ) {
        let decode: @Sendable (MessagePackObject) throws -> (repeat each Input) = { try RPCArguments.decode(repeat (each Input).self, from: $0) }
        let run: @Sendable ((repeat each Input)) async throws -> Output = { input in try await body(repeat each input) }
        add(function.name, Self.handler(decode: decode, run))
    }

    /// Serves `method` with untyped parameters and result (for peers that send plain MessagePack-RPC).
    public func register(method: String, _ body: @escaping @Sendable ([MessagePackValue]) async throws -> MessagePackValue) {
        add(method, Self.handler(decode: { try $0.value().arrayValue ?? [] }, body))
    }

    private func add(_ name: String, _ handler: Handler) {
        handlers.withLock {
            if $0.table[name] != nil, $0.registeredTwice == nil { $0.registeredTwice = name }
            $0.table[name] = handler
        }
    }

    /// The handler of a function whose arguments `decode` reads as one value (the tuple of a
    /// parameter pack). Plain generics here: closures nested in a pack-generic function crash the
    /// compiler (Swift 6.3, SILGen).
    private static func handler<Input: Sendable, Output: Encodable & Sendable>(
        decode: @escaping @Sendable (MessagePackObject) throws -> Input, _ body: @escaping @Sendable (Input) async throws -> Output
    ) -> Handler {
        Handler(
            single: { params in
                let input = try decode(params)
                return { RPCArguments.result(try await body(input)) }
            },
            batch: { calls in
                let inputs = RPCArguments.BatchInputs(calls, decode: decode)
                return { await inputs.run(body) }
            })
    }

    /// Sends an event to the owner, from any task.
    public func emit<Value: Encodable>(_ name: String, _ value: Value) throws {
        let message = RPCMessage.notification(method: name, params: [try MessagePackEncoder().encodeValue(value)])
        try send(message)
    }

    /// Calls `function` in the owner (a handler it registered, see ``RPCHandlers``) and waits for
    /// its answer, from any task; many may be in flight at once.
    ///
    /// ```swift
    /// server.register(crawl) { seed in
    ///     var pages = 0
    ///     while let url = try await server.call(nextURL, seed) { pages += try await fetch(url) }
    ///     return pages
    /// }
    /// ```
    ///
    /// Throws the owner's error (a `NoSuchMethod` ``RPCError`` when it serves no such function),
    /// ``RPCError/Kind/timeout`` after `timeout`, `CancellationError` when the task is cancelled
    /// (the owner is sent `$cancel` for both), or ``RPCError/Kind/closed`` when the owner closes
    /// the connection first.
    public func call<each Input, Output>(
        _ function: RPCFunction<repeat each Input, Output>, _ input: repeat each Input, timeout: Duration? = nil
    ) async throws -> Output {
        let answer = try await exchange(method: function.name, params: try RPCArguments.params(repeat each input, of: function.name), timeout: timeout)
        return try RPCArguments.answer(Output.self, error: answer.error, result: answer.result, function: function.name)
    }

    /// Calls `method` in the owner with untyped parameters and result (a handler registered with
    /// `register(method:)`, or any peer's method), as ``call(_:_:timeout:)`` does.
    public func call(method: String, params: [MessagePackValue], timeout: Duration? = nil) async throws -> MessagePackValue {
        let answer = try await exchange(method: method, params: params, timeout: timeout)
        return try RPCArguments.answer(MessagePackValue.self, error: answer.error, result: answer.result, function: method)
    }

    /// Sends a request to the owner and waits for its answer (or the timeout, or cancellation).
    private func exchange(method: String, params: [MessagePackValue], timeout: Duration?) async throws -> (error: MessagePackValue, result: MessagePackValue) {
        let id = state.withLock { state in
            defer { state.nextCallID &+= 1 }
            return state.nextCallID
        }
        let request = try RPCArguments.ownerRequest(id: id, method: method, params: params, maximumMessageSize: responseLimit.load(ordering: .relaxed))
        // Started once the call is held, so that even a timeout of zero finds it to give up on.
        var timer: Task<Void, any Error>?
        defer { timer?.cancel() }
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                let refusal: (any Error)? = state.withLock { state in
                    if state.ended { return RPCError(.closed, "the owner closed the connection before this call", function: method) }
                    guard state.serving else {
                        return RPCError(
                            .closed, "the asynchronous server reads the owner's answers only once it serves: call the owner from a "
                                + "registered function, not from the worker's set-up (a synchronous rpcWorker can)", function: method)
                    }
                    // A cancellation that came before the call was held found nothing to give up on.
                    if Task.isCancelled { return CancellationError() }
                    state.calling[id] = (method, continuation)
                    return nil
                }
                if let refusal { return continuation.resume(throwing: refusal) }
                timer = timeout.map { limit in
                    Task { [weak self] in
                        try await Task.sleep(for: limit)
                        self?.stopWaiting(for: id, with: RPCArguments.ownerDidNotAnswer(within: limit, function: method))
                    }
                }
                do {
                    try sendOrder.withLock { _ throws(Errno) in try socket.sendAll(request) }
                } catch {
                    stopWaiting(for: id, with: RPCError(.closed, "cannot send to the owner: \(error)", function: method), tellOwner: false)
                }
            }
        } onCancel: {
            stopWaiting(for: id, with: CancellationError())
        }
    }

    /// Gives up on this worker's request `id`: its caller gets `error`, and the owner is told.
    private func stopWaiting(for id: UInt32, with error: any Error, tellOwner: Bool = true) {
        guard let caller = state.withLock({ $0.calling.removeValue(forKey: id)?.caller }) else { return }
        caller.resume(throwing: error)
        if tellOwner { try? send(.cancel(id)) }
    }

    /// Asks the owner to send no more calls and to close this worker once its calls are answered
    /// (see ``RPCServer/retire()``).
    public func retire() throws {
        try send(.retire)
    }

    /// A logger whose records go to the owner's logger (see ``RPCLogHandler``); usable from any task.
    public func makeLogger(label: String) -> Logger {
        Logger(label: label) { [self] label in
            RPCLogHandler(label: label) { message in try? self.send(message) }
        }
    }

    /// Answers requests until the owner closes its end and every started call has finished.
    public func serve() async throws {
        let failure = Mutex<(any Error)?>(nil)
        await withCheckedContinuation { (finished: CheckedContinuation<Void, Never>) in
            state.withLock { state in
                state.finished = finished
                state.serving = true
            }
            // Blocking reads belong on a thread of their own, not on Swift's cooperative pool.
            Self.startThread { [self] in
                do {
                    var stream = RPCStream(maximumMessageSize: maximumMessageSize)
                    try send(.worker(backend: "asynchronous", maximumConcurrentCalls: maximumConcurrentCalls))
                    while let batch = try stream.read(from: socket, prepare: { method, params -> Call in
                        let (handlers, registeredTwice) = self.handlers.withLock { $0 }
                        if let registeredTwice { return .failure(RPCArguments.registeredTwice(registeredTwice)) }
                        return RPCArguments.prepare(method, params, known: Array(handlers.keys)) { name in
                            handlers[name].map { RPCArguments.Handler(single: $0.single, batch: $0.batch) }
                        }
                    }) {
                        accept(batch)
                    }
                } catch {
                    failure.withLock { $0 = error }
                }
                let waiting = state.withLock { state in
                    state.ended = true
                    defer { state.calling = [:] }
                    return state.calling.values
                }
                for call in waiting { call.caller.resume(throwing: RPCArguments.ownerClosed(function: call.method)) }
                finishIfIdle()
            }
        }
        if let error = failure.withLock({ $0 }) { throw error }
    }

    /// Writes `$spans` whole after any other task's message, unless it is over the owner's limit.
    private func send(spans message: RPCMessage) {
        let limit = responseLimit.load(ordering: .relaxed)
        try? sendOrder.withLock { _ throws(Errno) in try socket.send(spans: message, limit: limit) }
    }

    /// Writes a message whole, after any other task's message.
    private func send(_ message: RPCMessage) throws(Errno) {
        try sendOrder.withLock { _ throws(Errno) in try socket.send(message) }
    }

    /// Runs `body` on a new detached thread.
    private static func startThread(_ body: @escaping @Sendable () -> Void) {
        final class Box: Sendable {
            let body: @Sendable () -> Void
            init(_ body: @escaping @Sendable () -> Void) { self.body = body }
        }
        var thread = pthread_t()
        let box = Unmanaged.passRetained(Box(body)).toOpaque()
        let result = pthread_create(&thread, nil, { pointer in
            Unmanaged<Box>.fromOpaque(pointer!).takeRetainedValue().body()
            return nil
        }, box)
        precondition(result == 0, "cannot start the RPC reader thread: error \(result)")
        pthread_detach(thread)
    }

    private func accept(_ batch: [IncomingMessage<Call>]) {
        for message in batch {
            switch message {
            case .request(let id, let call):
                let (startNow, cancelledEarly, carrier) = state.withLock { state -> (Bool, Bool, [String: String]?) in
                    let carrier = state.contexts.isEmpty ? nil : state.contexts.removeValue(forKey: id)
                    if !state.cancelledEarly.isEmpty {
                        if state.cancelledEarly.remove(id) != nil { return (false, true, nil) }
                        // Requests come in msgid order: earlier cancels found their requests answered already.
                        state.cancelledEarly = state.cancelledEarly.filter { $0 > id }
                    }
                    guard state.running.count < maximumConcurrentCalls else {
                        state.waiting.append((id, call, carrier))
                        return (false, false, nil)
                    }
                    return (true, false, carrier)
                }
                if startNow { start(id, call, carrier: carrier) }
                // Every request is answered, a skipped one too: the owner waits for the answer to
                // tell a worker that skipped it from one that is stuck.
                if cancelledEarly { answer(id, .single(.failure(RPCArguments.cancelledBeforeStart))) }
            case .cancel(let id):
                let (task, dequeued) = state.withLock { state -> (Task<Void, Never>?, Bool) in
                    if let running = state.running[id] { return (running, false) }
                    if let index = state.waiting.firstIndex(where: { $0.0 == id }) {
                        state.waiting.remove(at: index)
                        return (nil, true)
                    }
                    state.cancelledEarly.insert(id)
                    return (nil, false)
                }
                task?.cancel()
                if dequeued { answer(id, .single(.failure(RPCArguments.cancelledBeforeStart))) }
            case .context(let id, let carrier):
                state.withLock { $0.contexts[id] = carrier }
            case .limits(let limit):
                responseLimit.store(limit, ordering: .relaxed)
            case .response(let id, let error, let result):
                state.withLock { $0.calling.removeValue(forKey: id) }?.caller.resume(returning: (error, result))
            case .ignored:
                continue
            }
        }
    }

    /// Sends the response to request `id`.
    /// Sends the response to request `id`, after the `$spans` of a traced call in the same write.
    private func answer(_ id: UInt32, _ outcome: RPCArguments.Outcome, spans: RPCMessage? = nil) {
        var response = MessagePackWriter()
        let limit = responseLimit.load(ordering: .relaxed)
        outcome.write(id: id, into: &response, maximumMessageSize: limit)
        try? sendOrder.withLock { _ throws(Errno) in try socket.send(spans: spans, then: response, limit: limit) }
    }

    /// Starts request `id` in a task of its own; with `carrier` (its `$context`) it is traced.
    private func start(_ id: UInt32, _ call: Call, carrier: [String: String]?) {
        // Registered before it can finish, so that `finish` always finds it.
        state.withLock { state in
            state.running[id] = Task { [self] in
                let outcome: RPCArguments.Outcome
                var spans: RPCMessage?
                if let carrier {
                    // Spans that end after the response go out as they end.
                    let trace = WorkerCallTrace(id: id, carrier: carrier) { [weak self] spans in self?.send(spans: spans) }
                    outcome = await trace.run { await Self.execute(call) }
                    // Before the response: the owner has the call's spans when the call returns.
                    spans = trace.finishCall()
                } else {
                    outcome = await Self.execute(call)
                }
                // The owner stopped waiting for a cancelled call; it drops a late answer anyway.
                answer(id, outcome, spans: spans)
                finish(id)
            }
        }
    }

    private static func execute(_ call: Call) async -> RPCArguments.Outcome {
        switch call {
        case .failure(let error): .single(.failure(error))
        case .success(.single(let run)): .single(await Self.run(run))
        case .success(.batch(let run)): .batch(await run())
        }
    }

    private static func run(_ run: Run) async -> Result<RPCArguments.ResultEncoder, any Error> {
        do {
            return .success(try await run())
        } catch {
            return .failure(error)
        }
    }

    private func finish(_ id: UInt32) {
        let next = state.withLock { state -> (UInt32, Call, [String: String]?)? in
            state.running[id] = nil
            return state.waiting.isEmpty ? nil : state.waiting.removeFirst()
        }
        if let next { start(next.0, next.1, carrier: next.2) }
        finishIfIdle()
    }

    private func finishIfIdle() {
        let finished = state.withLock { state -> CheckedContinuation<Void, Never>? in
            guard state.ended, state.running.isEmpty, state.waiting.isEmpty else { return nil }
            defer { state.finished = nil }
            return state.finished
        }
        finished?.resume()
    }
}

extension ForkEntryPoint {
    /// A function that serves MessagePack-RPC on the child's socket with the asynchronous backend:
    /// `setUp` registers `async` functions; up to `maximumConcurrentCalls` run at once.
    ///
    /// `setUp` itself is synchronous, and runs before the server reads anything: it cannot call
    /// the owner (``AsyncRPCServer/call(_:_:timeout:)`` fails at once, saying so); a synchronous
    /// `rpcWorker`'s set-up can.
    public static func asyncRPCWorker(
        _ name: String, maximumConcurrentCalls: Int = 16, _ setUp: @escaping @Sendable (AsyncRPCServer) throws -> Void
    ) -> ForkEntryPoint {
        asyncRPCWorker(name, maximumConcurrentCalls: maximumConcurrentCalls) { server, _ in try setUp(server) }
    }

    /// The same, with a set-up that also reads the child's start-up arguments and descriptors
    /// (`ChildContext`), as the synchronous `rpcWorker` with a two-parameter set-up does.
    public static func asyncRPCWorker(
        _ name: String, maximumConcurrentCalls: Int = 16, _ setUp: @escaping @Sendable (AsyncRPCServer, ChildContext) throws -> Void
    ) -> ForkEntryPoint {
        .function(name) { child in
            let server = AsyncRPCServer(input: child.input, output: child.output, maximumConcurrentCalls: maximumConcurrentCalls)
            try setUp(server, child)
            // The child's main thread waits here while the server's tasks run on the pool.
            let done = DispatchSemaphore(value: 0)
            let failure = Mutex<(any Error)?>(nil)
            Task {
                do { try await server.serve() } catch { failure.withLock { $0 = error } }
                done.signal()
            }
            done.wait()
            if let error = failure.withLock({ $0 }) { throw error }
            // Served to the end: exit now, as the template would after this returns, but before
            // anything is released. Seen about once in twenty runs: releasing the server here while
            // its reader thread released its own closure left both threads waiting forever in the
            // Swift runtime (swift_once in swift_getCanonicalPrespecializedGenericMetadata, for a
            // Synchronization type), a child that never exits, spinning on two cores.
            fflush(nil)
            _exit(0)
        }
    }
}
