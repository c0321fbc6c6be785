/// The identity of a distributed actor that lives in a worker: the worker's process id and the
/// actor's number there.
///
/// In the owner, an actor's ID also holds its `ActorLease`: when the last reference to the actor
/// (and to its ID) goes, the worker is told to release the actor. The lease is not part of the
/// identity: it does not travel and does not take part in equality.
public struct WorkerActorID: Hashable, Codable, Sendable, CustomStringConvertible {
    /// The worker's process id (0: an actor of this process). For a worker started through a
    /// `RemoteTemplate` it is the local command's (ssh's) pid, as `RPCClient.pid` is.
    public let pid: Int32
    /// The actor's number in its worker.
    public let number: UInt64
    /// The owner's hold on the actor (nil in the worker, and for an ID that was decoded).
    let lease: ActorLease?

    init(pid: Int32, number: UInt64, lease: ActorLease? = nil) {
        self.pid = pid
        self.number = number
        self.lease = lease
    }

    /// `actor 3 in worker 4242`.
    public var description: String { pid == 0 ? "actor \(number) in this process" : "actor \(number) in worker \(pid)" }

    /// The same worker and number (the lease takes no part).
    public static func == (lhs: WorkerActorID, rhs: WorkerActorID) -> Bool {
        lhs.pid == rhs.pid && lhs.number == rhs.number
    }

    /// Hashes the worker and the number (the lease takes no part).
    public func hash(into hasher: inout Hasher) {
        hasher.combine(pid)
        hasher.combine(number)
    }

    private enum CodingKeys: String, CodingKey { case pid, number }

    /// Reads the worker and the number; a decoded ID holds no lease, so it cannot call the actor.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        self.init(pid: try container.decode(Int32.self, forKey: .pid), number: try container.decode(UInt64.self, forKey: .number))
    }

    /// Writes the worker and the number.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(pid, forKey: .pid)
        try container.encode(number, forKey: .number)
    }
}
