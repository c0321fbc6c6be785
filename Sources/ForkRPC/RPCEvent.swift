import MessagePack

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
