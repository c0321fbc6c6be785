import MessagePack

/// Functions that the owner serves to its worker: the other direction of MessagePack-RPC, in which
/// the worker (or any peer) sends a request and the owner answers it.
///
/// Give them to ``RPCClient/start(_:running:arguments:maximumMessageSize:logger:handlers:output:)``, to a
/// pool's configuration (`handlers`, for all its workers), or add them later with
/// ``RPCClient/register(_:_:)``. A worker calls them with `RPCServer.call(_:_:timeout:)` (or the
/// asynchronous server's `call`); another peer with a plain request. A request for a name nobody
/// registered is answered with a `NoSuchMethod` error, and the connection lives on.
///
/// ```swift
/// let nextJob = RPCFunction<Int, Job?>("nextJob")
/// var handlers = RPCHandlers()
/// handlers.register(nextJob) { workerID in await queue.next(for: workerID) }
/// let worker = try await RPCClient.start(template, running: "crawler", handlers: handlers)
/// // in the worker:  while let job = try server.call(nextJob, id) { ... }
/// ```
///
/// Each request runs in a task of its own, so handlers may suspend and several may run at once.
/// What a handler throws reaches the worker as a function's error does (`[type, message]`, with
/// the error's encoding when it is `Encodable`; the worker re-throws it as itself when it
/// registered the type with ``RPCError/register(_:)``).
///
/// Unlike a worker's set-up, where a name registered twice is an error, registering a name again
/// here replaces its handler (a client's handlers can change while it runs).
///
/// Nothing bounds a handler's time but the worker's `timeout:`: a worker that calls a handler that
/// never returns waits as long, unless it gave its call a timeout (`server.call(f, x, timeout: .seconds(5))`).
///
/// A handler that holds the client or pool it serves (to call a worker back) makes a cycle that
/// ends only when the connection does: capture it `weak`. And a handler must not wait for a call
/// to the synchronous worker that is waiting for the handler: that worker runs one call at a time,
/// so the two wait for each other until a timeout ends one.
public struct RPCHandlers: Sendable {
    /// Answers a request's params with its result (or throws the error to answer with).
    typealias Handler = @Sendable (_ params: [MessagePackValue]) async throws -> MessagePackValue

    private(set) var table: [String: Handler] = [:]

    /// No handlers: every request from the worker is answered with `NoSuchMethod`.
    public init() {}

    /// Serves `function` with `body`. Its input arrives decoded; what it throws reaches the worker
    /// as the error of its call (`[type, message]`, as a worker's errors reach the owner).
    public mutating func register<each Input, Output>(
        _ function: RPCFunction<repeat each Input, Output>, _ body: @escaping @Sendable (repeat each Input) async throws -> Output
    ) {
        table[function.name] = { params in
            // Decoded as a worker decodes a call's params (the same errors), from their bytes.
            let input = try MessagePackObject.withObject(in: MessagePackValue.array(params).encoded()) {
                try RPCArguments.decode(repeat (each Input).self, from: $0)
            }
            return try MessagePackEncoder().encodeValue(try await body(repeat each input))
        }
    }

    /// Serves `method` with untyped parameters and result (for peers that send plain MessagePack-RPC).
    public mutating func register(method: String, _ body: @escaping @Sendable ([MessagePackValue]) async throws -> MessagePackValue) {
        table[method] = body
    }

    /// The names served, sorted (for the error that answers an unknown one).
    var names: [String] { table.keys.sorted() }
}
