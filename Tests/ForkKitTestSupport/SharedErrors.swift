/// An error type that both the tests and the test worker know, in one module, so that it travels
/// under the same full name (`ForkKitTestSupport.BadShape`) both ways and can be registered
/// (`RPCError.register`) to cross as itself.
public struct BadShape: Error, Codable, Sendable, Equatable, CustomStringConvertible {
    public var sides: Int

    public init(sides: Int) {
        self.sides = sides
    }

    public var description: String { "a shape cannot have \(sides) sides" }
}
