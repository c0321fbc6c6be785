import Distributed

/// A distributed actor that ForkActors can make in a worker process: declare it once, in the
/// program that is also the template, and make it with
/// ``WorkerActorSystem/make(_:in:)`` or
/// ``WorkerActorSystem/make(_:in:onWorker:)``.
///
/// ```swift
/// distributed actor Hasher: WorkerActor {
///     typealias ActorSystem = WorkerActorSystem
///     distributed func digest(_ data: [UInt8], rounds: Int) -> [UInt8] { ... }
/// }
/// ```
///
/// The worker makes it with the initializer every distributed actor has, `init(actorSystem:)`,
/// found by its type: an actor with stored properties gives them initial values (set them later
/// with a distributed function). Declaring another designated initializer removes the implicit
/// one, so declare `init(actorSystem:)` too; a `public` actor (one shared with a separate worker
/// program through a library) declares `public init(actorSystem:)`.
public protocol WorkerActor: DistributedActor where ActorSystem == WorkerActorSystem {
    /// Makes the actor in this process (the worker calls it; the owner never does).
    init(actorSystem: ActorSystem)
}
