/// A typed handle on a function that a worker serves: the same value registers it in the worker and
/// calls it from the owner, so a wrong argument or result type is a compile error.
///
/// The last type is the result; those before it are the arguments, any number of them (a parameter
/// pack), sent as MessagePack-RPC's params array `[a, b, c]`; none sends `[]`.
///
/// ```swift
/// let square = RPCFunction<Int, Int>("square")
/// let clamp = RPCFunction<Double, Double, Double, Double>("clamp")
/// let uptime = RPCFunction<Duration>("uptime")
/// // in the worker:  server.register(square) { $0 * $0 }
/// //                 server.register(clamp) { x, low, high in min(max(x, low), high) }
/// // in the owner:   let nine = try await client.call(square, 3)
/// //                 let one = try await client.call(clamp, 1.5, 0, 1)
/// ```
public struct RPCFunction<each Input: Codable & Sendable, Output: Codable & Sendable>: Sendable {
    /// The method name on the wire.
    public let name: String

    /// Names a function.
    public init(_ name: String) {
        precondition(!name.hasPrefix("$"), "names beginning with $ are reserved for protocol extensions")
        self.name = name
    }
}
