import MessagePack

/// One MessagePack-RPC message, exactly as the specification has them.
///
/// Extensions are `$`-prefixed notifications (`$cancel`), so any conforming peer can still talk to
/// a worker.
public enum RPCMessage: Sendable, Equatable {
    /// `[0, msgid, method, params]`.
    case request(id: UInt32, method: String, params: [MessagePackValue])
    /// `[1, msgid, error, result]`: exactly one of `error` and `result` is not nil.
    case response(id: UInt32, error: MessagePackValue, result: MessagePackValue)
    /// `[2, method, params]`.
    case notification(method: String, params: [MessagePackValue])

    /// The notification that asks a worker to stop working on request `id` (no reply is owed).
    public static func cancel(_ id: UInt32) -> RPCMessage {
        .notification(method: cancelMethod, params: [.uint(UInt64(id))])
    }

    /// The method name of ``cancel(_:)``.
    static let cancelMethod = "$cancel"

    /// The notification by which a worker asks its owner to stop sending it calls and close it
    /// (``RPCServer/retire()``).
    public static let retire = RPCMessage.notification(method: retireMethod, params: [])
    /// The method name of ``retire``.
    public static let retireMethod = "$retire"

    /// The notification by which an owner tells its worker the largest message either side may send
    /// (`[2, "$limits", [bytes]]`), first thing after the worker starts: one setting both sides honour.
    public static func limits(maximumMessageSize: Int) -> RPCMessage {
        .notification(method: limitsMethod, params: [.uint(UInt64(maximumMessageSize))])
    }

    /// The method name of ``limits(maximumMessageSize:)``.
    public static let limitsMethod = "$limits"

    /// The notification a ForkKit worker sends first thing when it serves, `[2, "$worker", [backend,
    /// maximumConcurrentCalls]]` (backend `"synchronous"` or `"asynchronous"`), so that its owner can
    /// check that it runs the kind of worker it was configured for.
    public static func worker(backend: String, maximumConcurrentCalls: Int) -> RPCMessage {
        .notification(method: workerMethod, params: [.string(backend), .uint(UInt64(maximumConcurrentCalls))])
    }

    /// The method name of ``worker(backend:maximumConcurrentCalls:)``.
    public static let workerMethod = "$worker"

    /// The method name of the notification that carries a call's trace context to the worker,
    /// `[2, "$context", [msgid, {carrier}]]`, written just before the request `msgid` it applies to
    /// (see <doc:TracingAcrossProcesses>).
    public static let contextMethod = "$context"

    /// The method name of the notification that carries the spans a worker finished for request
    /// `msgid` back to its owner, `[2, "$spans", [msgid, [record, ...]]]` (with the call's carrier as
    /// a third element for spans that ended after the call's response).
    public static let spansMethod = "$spans"

    /// The message as a MessagePack array.
    public var value: MessagePackValue {
        switch self {
        case .request(let id, let method, let params): [0, .uint(UInt64(id)), .string(method), .array(params)]
        case .response(let id, let error, let result): [1, .uint(UInt64(id)), error, result]
        case .notification(let method, let params): [2, .string(method), .array(params)]
        }
    }

    /// Reads a message, or says in one sentence why the value is not one.
    public init(_ value: MessagePackValue) throws(RPCError) {
        guard case .array(let fields) = value, let kind = fields.first?.integerValue else {
            throw RPCError(.protocolViolation, "expected a MessagePack-RPC array starting with 0, 1 or 2, got \(value.typeName)")
        }
        func id(_ field: MessagePackValue) throws(RPCError) -> UInt32 {
            guard let number = field.integerValue, let id = UInt32(exactly: number) else {
                throw RPCError(.protocolViolation, "the msgid must be a 32-bit unsigned integer, got \(field)")
            }
            return id
        }
        func method(_ field: MessagePackValue) throws(RPCError) -> String {
            guard let name = field.stringValue else {
                throw RPCError(.protocolViolation, "the method name must be a string, got \(field.typeName)")
            }
            return name
        }
        func params(_ field: MessagePackValue) throws(RPCError) -> [MessagePackValue] {
            guard case .array(let elements) = field else {
                throw RPCError(.protocolViolation, "params must be an array, got \(field.typeName)")
            }
            return elements
        }
        switch (kind, fields.count) {
        case (0, 4): self = .request(id: try id(fields[1]), method: try method(fields[2]), params: try params(fields[3]))
        case (1, 4): self = .response(id: try id(fields[1]), error: fields[2], result: fields[3])
        case (2, 3): self = .notification(method: try method(fields[1]), params: try params(fields[2]))
        default:
            throw RPCError(.protocolViolation, "a MessagePack-RPC message of type \(kind) with \(fields.count) elements does not exist")
        }
    }
}
