/// Why a distributed actor could not be made or reached in its worker. Registered with
/// `RPCError.register`, so an error the worker sends arrives in the owner as itself.
public struct WorkerActorError: Error, Codable, Sendable, CustomStringConvertible {
    /// A sentence saying what happened and what to do.
    public let message: String

    /// An error saying `message`.
    public init(_ message: String) {
        self.message = message
    }

    /// The message.
    public var description: String { message }

    /// A distributed actor passed as an argument or returned as a result.
    static let actorReferencesStayPut = WorkerActorError(
        "a distributed actor cannot be passed to or returned from a worker's actor: its reference holds the owner's lease on "
            + "it, which does not travel; pass what it computes, or make the actor where it is used")
}
