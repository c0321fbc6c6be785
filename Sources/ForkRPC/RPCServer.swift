import ForkKit
import Logging
import MessagePack
import Synchronization
import SystemPackage

#if canImport(Glibc)
import Glibc
#endif

/// The worker side of MessagePack-RPC, synchronous backend: one call at a time, in a blocking loop
/// with no threads (AnyEvent::Fork::RPC's sync backend, and the smallest overhead).
///
/// ```swift
/// ForkTemplate.bootstrap([
///     .rpcWorker("math") { server in
///         server.register(square) { $0 * $0 }
///     },
/// ])
/// ```
///
/// A function that throws answers with an error carrying the error's type and description. An
/// unknown method or arguments of the wrong type answer with an error naming the function (and the
/// expected type). `serve()` returns when the owner closes its end: queued calls are answered first.
public final class RPCServer {
    /// Decodes a call's params (while they can be read in place) and returns the call, which runs
    /// the function and returns how to encode its result; or does the same for a `$batch`'s calls.
    private typealias Handler = RPCArguments.Handler<() throws -> RPCArguments.ResultEncoder, () -> RPCArguments.BatchEncoder>
    private typealias Call = Result<RPCArguments.Prepared<() throws -> RPCArguments.ResultEncoder, () -> RPCArguments.BatchEncoder>, any Error>

    private let socket: WireSocket
    private var stream: RPCStream
    private var handlers: [String: Handler] = [:]
    /// A name that the set-up registered twice: then every call fails, saying so.
    private var registeredTwice: String?
    /// Responses are encoded here, one at a time; the buffer is kept from call to call.
    private var response = MessagePackWriter()
    /// Messages read while a function waited for the owner's answer (``call(_:_:timeout:)``),
    /// served next, in order: one call at a time.
    private var deferred: [IncomingMessage<Call>] = []
    /// The msgid of the next request to the owner.
    private var nextCallID: UInt32 = 0
    /// The owner's request whose function runs now: a `$cancel` of it also gives up the calls
    /// that function is making to the owner.
    private var running: UInt32?
    /// The trace contexts (`$context`) of requests that have not run yet, by msgid.
    private var contexts: [UInt32: [String: String]] = [:]
    /// Whether a traced call has run: from then on spans that end after their call's response
    /// may wait in ``lateSpans``.
    private var traced = false
    /// `$spans` of spans that ended after their call's response, possibly on another thread: this
    /// backend writes from the serving thread only, so they go out before the next response (or
    /// when serving ends).
    private let lateSpans = Outbox()

    /// Messages other threads leave for the serving thread to send.
    private final class Outbox: Sendable {
        let messages = Mutex<[RPCMessage]>([])
    }

    /// Serves on one bidirectional socket (a forked child's socket).
    public convenience init(socket: FileDescriptor, maximumMessageSize: Int = 64 << 20, spinBeforeBlocking: Duration = .zero) {
        self.init(input: socket, output: socket, maximumMessageSize: maximumMessageSize, spinBeforeBlocking: spinBeforeBlocking)
    }

    /// Serves on separate input and output descriptors (a pipe pair, or standard input and output);
    /// they stay the caller's to close.
    /// A message from the owner larger than `maximumMessageSize` ends `serve()` with an error.
    /// `spinBeforeBlocking` is the opt-in low-latency mode: each read polls that long before it
    /// sleeps (a busy core while idle, for replies without wake-ups).
    public init(input: FileDescriptor, output: FileDescriptor, maximumMessageSize: Int = 64 << 20, spinBeforeBlocking: Duration = .zero) {
        socket = WireSocket(usingInput: input, output: output, blocking: true)
        stream = RPCStream(maximumMessageSize: maximumMessageSize, spin: spinBeforeBlocking)
    }

    /// Serves `function` with `body`.
    ///
    /// Each name is registered once: a name registered twice makes every call to this worker fail
    /// with an error that names it (it cannot know which body was meant).
    public func register<each Input, Output>(_ function: RPCFunction<repeat each Input, Output>, _ body: @escaping (repeat each Input) throws -> Output) {
        let decode: (MessagePackObject) throws -> (repeat each Input) = { try RPCArguments.decode(repeat (each Input).self, from: $0) }
        let run: ((repeat each Input)) throws -> Output = { input in try body(repeat each input) }
        add(function.name, Self.handler(decode: decode, run))
    }

    /// Serves `method` with untyped parameters and result (for peers that send plain msgpack-rpc).
    public func register(method: String, _ body: @escaping ([MessagePackValue]) throws -> MessagePackValue) {
        add(method, Self.handler(decode: { try $0.value().arrayValue ?? [] }, body))
    }

    private func add(_ name: String, _ handler: Handler) {
        if handlers[name] != nil, registeredTwice == nil { registeredTwice = name }
        handlers[name] = handler
    }

    private static func handler<Input, Output: Encodable & Sendable>(
        decode: @escaping (MessagePackObject) throws -> Input, _ body: @escaping (Input) throws -> Output
    ) -> Handler {
        Handler(
            single: { params in
                let input = try decode(params)
                return { RPCArguments.result(try body(input)) }
            },
            batch: { calls in
                let inputs = RPCArguments.BatchInputs(calls, decode: decode)
                return { inputs.run(body) }
            })
    }

    /// Sends an event to the owner: a notification `[2, name, [value]]`. Sent at once (there is no
    /// buffer to flush).
    public func emit<Value: Encodable>(_ name: String, _ value: Value) throws {
        try socket.send(.notification(method: name, params: [MessagePackEncoder().encodeValue(value)]))
    }

    /// Asks the owner to send no more calls to this worker and to close it once the calls it sent
    /// are answered (AnyEvent::Fork::Pool's `retire`): a pool then starts a fresh worker in its
    /// place. Useful for a worker that knows it has grown too large.
    public func retire() throws {
        try socket.send(.retire)
    }

    /// A logger whose records go to the owner's logger (see ``RPCLogHandler``).
    public func makeLogger(label: String) -> Logger {
        let sender = UncheckedSender(server: self)
        return Logger(label: label) { label in
            RPCLogHandler(label: label) { message in try? sender.server.socket.send(message) }
        }
    }

    /// Lets the log handler reach this server: the synchronous backend has one thread, so records
    /// are written from the thread that serves.
    private struct UncheckedSender: @unchecked Sendable {
        let server: RPCServer
    }

    /// Calls `function` in the owner (a handler it registered, see ``RPCHandlers``) and waits for
    /// its answer: from a function the worker runs, for example to fetch its next piece of work.
    ///
    /// ```swift
    /// server.register(crawl) { seed in
    ///     var pages = 0
    ///     while let url = try server.call(nextURL, seed) { pages += try fetch(url) }
    ///     return pages
    /// }
    /// ```
    ///
    /// Requests the owner sends meanwhile wait until the running function has returned (one call
    /// at a time). Throws the owner's error (a `NoSuchMethod` ``RPCError`` when it serves no
    /// such function), or ``RPCError/Kind/timeout`` after `timeout` (the owner is sent `$cancel`),
    /// or ``RPCError/Kind/closed`` when the owner closes the connection first.
    public func call<each Input, Output>(
        _ function: RPCFunction<repeat each Input, Output>, _ input: repeat each Input, timeout: Duration? = nil
    ) throws -> Output {
        let answer = try exchange(method: function.name, params: try RPCArguments.params(repeat each input, of: function.name), timeout: timeout)
        return try RPCArguments.answer(Output.self, error: answer.error, result: answer.result, function: function.name)
    }

    /// Calls `method` in the owner with untyped parameters and result (a handler registered with
    /// `register(method:)`, or any peer's method), as ``call(_:_:timeout:)`` does.
    public func call(method: String, params: [MessagePackValue], timeout: Duration? = nil) throws -> MessagePackValue {
        let answer = try exchange(method: method, params: params, timeout: timeout)
        return try RPCArguments.answer(MessagePackValue.self, error: answer.error, result: answer.result, function: method)
    }

    /// Sends a request to the owner and reads until its answer, keeping what else arrives for later.
    private func exchange(method: String, params: [MessagePackValue], timeout: Duration?) throws -> (error: MessagePackValue, result: MessagePackValue) {
        let id = nextCallID
        nextCallID &+= 1
        try socket.sendAll(try RPCArguments.ownerRequest(id: id, method: method, params: params, maximumMessageSize: stream.maximumMessageSize))
        let deadline = timeout.map { ContinuousClock.now + $0 }
        while true {
            if let timeout, let deadline, !socket.waitUntilReadable(upTo: max(.zero, deadline - .now)) {
                try socket.send(.cancel(id))
                throw RPCArguments.ownerDidNotAnswer(within: timeout, function: method)
            }
            // From the socket, not `deferred`: what was put aside waits for `serve()`.
            guard let batch = try readSocket() else { throw RPCArguments.ownerClosed(function: method) }
            var answer: (error: MessagePackValue, result: MessagePackValue)?
            var runningCancelled = false
            for message in batch {
                if answer == nil, case .response(id, let error, let result) = message {
                    answer = (error, result)
                    continue
                }
                if case .cancel(let cancelled) = message, cancelled == running { runningCancelled = true }
                deferred.append(message)
            }
            if let answer { return answer }
            // The owner gave up on the function that is waiting: it gives up on its own call too.
            if runningCancelled {
                try socket.send(.cancel(id))
                throw CancellationError()
            }
        }
    }

    /// The next messages from the owner: those read while a function waited for an answer first.
    private func read() throws -> [IncomingMessage<Call>]? {
        if !deferred.isEmpty {
            defer { deferred = [] }
            return deferred
        }
        return try readSocket()
    }

    /// The messages that the next read from the socket completes.
    private func readSocket() throws -> [IncomingMessage<Call>]? {
        try stream.read(from: socket, prepare: { method, params -> Call in
            // Read while the set-up waits for the owner: its functions are not all registered yet.
            guard serving else { return .failure(ArrivedBeforeServing(method: method, params: (try? params.value().encoded()) ?? [])) }
            return prepare(method, params)
        })
    }

    private func prepare(_ method: String, _ params: MessagePackObject) -> Call {
        if let registeredTwice { return .failure(RPCArguments.registeredTwice(registeredTwice)) }
        return RPCArguments.prepare(method, params, known: Array(handlers.keys)) { handlers[$0] }
    }

    /// A request that arrived before ``serve()`` began, kept as bytes to be prepared once it has.
    private struct ArrivedBeforeServing: Error {
        let method: String
        let params: [UInt8]
    }

    /// Whether ``serve()`` has begun.
    private var serving = false

    /// Answers requests until the owner closes its end. Throws (and the worker should exit) when the
    /// owner sends something that is not MessagePack-RPC: the stream can no longer be trusted.
    public func serve() throws {
        try socket.send(.worker(backend: "synchronous", maximumConcurrentCalls: 1))
        serving = true
        while var batch = try read() {
            for index in batch.indices {
                guard case .request(let id, .failure(let early as ArrivedBeforeServing)) = batch[index] else { continue }
                let call = (try? MessagePackObject.withObject(in: early.params) { prepare(early.method, $0) })
                    ?? .failure(RPCError(.protocolViolation, "the params of '\(early.method)' could not be read again"))
                batch[index] = .request(id: id, call: call)
            }
            // A cancel that arrived together with its request spares the work (the request is still
            // answered). One that comes later finds its request answered already: one call at a time.
            let cancelled = Set(batch.compactMap { message -> UInt32? in
                if case .cancel(let id) = message { id } else { nil }
            })
            for case .context(let id, let carrier) in batch { contexts[id] = carrier }
            for case .request(let id, let call) in batch {
                running = id
                defer { running = nil }
                // The function runs before the response is begun, so the events it emits go first.
                func execute() -> RPCArguments.Outcome {
                    switch call {
                    case _ where cancelled.contains(id): .single(.failure(RPCArguments.cancelledBeforeStart))
                    case .failure(let error): .single(.failure(error))
                    case .success(.single(let run)): .single(Result { try run() })
                    case .success(.batch(let run)): .batch(run())
                    }
                }
                let outcome: RPCArguments.Outcome
                var spans: RPCMessage?
                if !contexts.isEmpty, let carrier = contexts.removeValue(forKey: id) {
                    // A traced call: its spans go out just before its response, in the same write.
                    traced = true
                    let trace = WorkerCallTrace(id: id, carrier: carrier) { [lateSpans] spans in lateSpans.messages.withLock { $0.append(spans) } }
                    outcome = trace.run(execute)
                    spans = trace.finishCall()
                } else {
                    outcome = execute()
                }
                if traced { try sendLateSpans() }
                outcome.write(id: id, into: &response, maximumMessageSize: stream.maximumMessageSize)
                try socket.send(spans: spans, then: response, limit: stream.maximumMessageSize)
            }
        }
        // Diagnostics only: an owner that has gone does not make the worker's serving fail.
        if traced { try? sendLateSpans() }
    }

    /// Sends the `$spans` of spans that ended after their call's response.
    private func sendLateSpans() throws {
        let messages = lateSpans.messages.withLock { messages in
            defer { messages = [] }
            return messages
        }
        for message in messages { try socket.send(spans: message, limit: stream.maximumMessageSize) }
    }
}

extension ForkEntryPoint {
    /// A function that serves MessagePack-RPC on the child's connection with the synchronous backend:
    /// `setUp` registers the functions, then the child answers calls until its owner closes.
    ///
    /// - Parameters:
    ///   - name: the entry point's name, which the owner starts.
    ///   - spinBeforeBlocking: the low-latency mode (see ``RPCServer/init(input:output:maximumMessageSize:spinBeforeBlocking:)``).
    ///   - setUp: registers the worker's functions (runs in the child, once).
    public static func rpcWorker(
        _ name: String, spinBeforeBlocking: Duration = .zero, _ setUp: @escaping @Sendable (RPCServer) throws -> Void
    ) -> ForkEntryPoint {
        rpcWorker(name, spinBeforeBlocking: spinBeforeBlocking) { server, _ in try setUp(server) }
    }

    /// The same, with a set-up that also reads the child's start-up arguments and descriptors
    /// (`ChildContext`): what the owner passed to `RPCClient.start(_:running:arguments:)` or a
    /// pool's `WorkerPool.Configuration.arguments`, for each worker on its own (Python's
    /// `initializer` with `initargs`, Perl's `init`).
    ///
    /// ```swift
    /// .rpcWorker("greeter") { server, child in
    ///     let language = child.arguments.first.map { String(decoding: $0, as: UTF8.self) } ?? "en"
    ///     server.register(greet) { name in language == "de" ? "Hallo, \(name)" : "Hello, \(name)" }
    /// }
    /// ```
    public static func rpcWorker(
        _ name: String, spinBeforeBlocking: Duration = .zero, _ setUp: @escaping @Sendable (RPCServer, ChildContext) throws -> Void
    ) -> ForkEntryPoint {
        .function(name) { child in
            let server = RPCServer(input: child.input, output: child.output, spinBeforeBlocking: spinBeforeBlocking)
            try setUp(server, child)
            try server.serve()
        }
    }
}
