/// A typed handle on a function that a worker serves: the same value registers it in the worker and
/// calls it from the owner, so a wrong argument or result type is a compile error.
///
/// ```swift
/// let square = RPCFunction<Int, Int>("square")
/// // in the worker:  server.register(square) { $0 * $0 }
/// // in the owner:   let nine = try await client.call(square, 3)
/// ```
public struct RPCFunction<Input: Codable & Sendable, Output: Codable & Sendable>: Sendable {
    /// The method name on the wire.
    public let name: String

    /// Names a function.
    public init(_ name: String) {
        precondition(!name.hasPrefix("$"), "names beginning with $ are reserved for protocol extensions")
        self.name = name
    }
}
