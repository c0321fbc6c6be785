/// The identity of a distributed actor that lives in a worker: the worker's process id and the
/// actor's number there.
///
/// In the owner, an actor's ID also holds its `ActorLease`: when the last reference to the actor
/// (and to its ID) goes, the worker is told to release the actor. The lease is not part of the
/// identity: it does not travel and does not take part in equality.
public struct WorkerActorID: Hashable, Codable, Sendable, CustomStringConvertible {
    /// The worker's process id (0: an actor of this process).
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

    public static func == (lhs: WorkerActorID, rhs: WorkerActorID) -> Bool {
        lhs.pid == rhs.pid && lhs.number == rhs.number
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(pid)
        hasher.combine(number)
    }

    private enum CodingKeys: String, CodingKey { case pid, number }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        self.init(pid: try container.decode(Int32.self, forKey: .pid), number: try container.decode(UInt64.self, forKey: .number))
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(pid, forKey: .pid)
        try container.encode(number, forKey: .number)
    }
}
