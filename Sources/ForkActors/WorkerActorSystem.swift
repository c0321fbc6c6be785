import Distributed
import ForkKit
import ForkPool
import ForkRPC
import MessagePack
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A `DistributedActorSystem` whose actors live in forked worker processes: remote calls that
/// the compiler checks, over ForkRPC's MessagePack-RPC wire.
///
/// Declare the actor once, in the program that is also the template, add
/// `ForkEntryPoint.distributedActors` to its bootstrap, and make actors in workers:
///
/// ```swift
/// distributed actor Hasher: WorkerActor {
///     typealias ActorSystem = WorkerActorSystem
///     distributed func digest(_ data: [UInt8], rounds: Int) -> [UInt8] { ... }
/// }
///
/// ForkTemplate.bootstrap([.distributedActors])            // first line of main
///
/// let system = WorkerActorSystem()
/// let hasher = try await system.make(Hasher.self, in: try await ForkTemplate.shared)
/// let digest = try await hasher.digest(bytes, rounds: 3)  // runs in the worker
/// ```
///
/// Arguments and results are `Codable`, any number of them; a distributed function may be
/// `async` and may throw, and its errors arrive as ForkRPC's do (an `RPCError`, or the error
/// itself when its type is registered with `RPCError.register`). Cancelling the calling task
/// cancels the call in the worker; ``withCallTimeout(_:_:isolation:)`` bounds the calls made in its body.
/// A worker that dies fails its actors' calls with its exit status.
///
/// Lifetimes: an actor released in the owner (its last reference gone) is released in its worker;
/// a worker started for actors (``make(_:in:)``, ``startWorker(_:)``) goes
/// when its last actor goes; a pool (``startPool(template:configuration:)``) keeps its workers.
public final class WorkerActorSystem: DistributedActorSystem, Sendable {
    public typealias ActorID = WorkerActorID
    public typealias SerializationRequirement = Codable
    public typealias InvocationEncoder = WorkerInvocationEncoder
    public typealias InvocationDecoder = WorkerInvocationDecoder
    public typealias ResultHandler = WorkerResultHandler

    /// The name of the entry point that hosts actors in a worker (`ForkEntryPoint.distributedActors`).
    public static let hostFunction = "forkkit-distributed-actors"

    static let makeMethod = "$actor.make"
    static let callMethod = "$actor.call"
    static let releaseMethod = "$actor.release"

    /// Whether this system hosts actors for an owner (in a worker) or calls them (in the owner).
    private let hosting: Bool
    /// In a worker: its actors, kept until the owner releases them.
    private let actors = Mutex<[UInt64: any DistributedActor]>([:])
    private let nextNumber = Atomic<UInt64>(1)

    /// The timeout of the distributed calls made in ``withCallTimeout(_:_:isolation:)``'s body.
    @TaskLocal static var callTimeout: Duration?

    /// A system that makes actors in workers and calls them (in the owner).
    public init() {
        hosting = false
        RPCError.register(WorkerActorError.self)
    }

    /// The system of a worker, which hosts the actors its owner makes.
    init(hosting: ()) {
        self.hosting = true
    }

    // MARK: - Making actors (in the owner)

    /// Makes an actor of type `type` in a new worker started from `template` (a `ForkTemplate` or
    /// a `RemoteTemplate`); the worker goes when the actor goes.
    public func make<Actor: WorkerActor>(_ type: Actor.Type, in template: any ChildLauncher) async throws -> Actor {
        try await make(type, on: try await startWorker(template))
    }

    /// Starts a worker from `template` to host actors made with ``make(_:on:)``. It goes when the
    /// last of its actors and the returned object have been released.
    public func startWorker(_ template: any ChildLauncher) async throws -> ActorWorker {
        do {
            return ActorWorker(client: try await RPCClient.start(template, running: Self.hostFunction))
        } catch let error as ForkError where error.kind == .unknownFunction {
            throw WorkerActorError(
                "the template does not host distributed actors: add .distributedActors to its ForkTemplate.bootstrap([...]) (\(error))")
        }
    }

    /// Makes an actor of type `type` in `worker`.
    public func make<Actor: WorkerActor>(_ type: Actor.Type, on worker: ActorWorker) async throws -> Actor {
        let number = try await create(type, with: worker.client)
        return try resolve(type, pid: worker.pid, lease: ActorLease(client: worker.client, number: number, host: .worker(worker)))
    }

    /// Makes an actor of type `type` in a worker of `pool`: worker `pid` when given, otherwise the
    /// one that hosts the fewest actors. The pool keeps that worker while the actor lives.
    ///
    /// The pool's workers must run ``hostFunction`` on the asynchronous backend:
    /// ``startPool(template:configuration:)`` makes such a pool.
    public func make<Actor: WorkerActor>(_ type: Actor.Type, in pool: WorkerPool, onWorker pid: Int32? = nil) async throws -> Actor {
        let (client, placed) = try await pool.placeActor(onWorker: pid)
        let number: UInt64
        do {
            number = try await create(type, with: client)
        } catch {
            pool.actorReleased(fromWorker: placed)
            throw error
        }
        return try resolve(type, pid: placed, lease: ActorLease(client: client, number: number, host: .pool(pool, pid: placed)))
    }

    /// A pool whose workers host actors: `configuration` with the asynchronous backend, every
    /// worker started at once (`idleWorkers` = `maximumWorkers`, so that actors spread over all of
    /// them), forked from `template` (by default `ForkTemplate.shared`) and the configuration's
    /// `remoteHosts`. Returns once they have all started.
    public static func startPool(
        template: ForkTemplate? = nil, configuration: WorkerPool.Configuration = WorkerPool.Configuration()
    ) async throws -> WorkerPool {
        var configuration = configuration
        configuration.backend = .asynchronous
        configuration.idleWorkers = configuration.maximumWorkers
        let forkTemplate = if let template { template } else { try await ForkTemplate.shared }
        let pool = try await WorkerPool(template: forkTemplate, running: hostFunction, configuration: configuration)
        let deadline = ContinuousClock.now + .seconds(30)
        while pool.statistics.workers.count < configuration.maximumWorkers, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(2))
        }
        return pool
    }

    /// Asks the worker to make an actor of `type`; returns its number there.
    private func create<Actor: WorkerActor>(_ type: Actor.Type, with client: RPCClient) async throws -> UInt64 {
        guard let name = _mangledTypeName(type) else { throw WorkerActorError("the type \(type) has no mangled name to send to the worker") }
        let answer: MessagePackValue
        do {
            answer = try await client.call(method: Self.makeMethod, params: [.string(name)], timeout: Self.callTimeout)
        } catch let error as RPCError where error.kind == .unknownFunction {
            throw WorkerActorError(
                "worker \(client.pid.map(String.init) ?? "?") does not host distributed actors: its function is not "
                    + "WorkerActorSystem.hostFunction (make the pool with WorkerActorSystem.startPool, or add .distributedActors to the bootstrap)")
        }
        guard let number = answer.integerValue.flatMap(UInt64.init(exactly:)) else {
            throw RPCError(.protocolViolation, "answered \(Self.makeMethod) with \(answer), not an actor number", pid: client.pid)
        }
        return number
    }

    private func resolve<Actor: WorkerActor>(_ type: Actor.Type, pid: Int32, lease: ActorLease) throws -> Actor {
        try Actor.resolve(id: WorkerActorID(pid: pid, number: lease.number, lease: lease), using: self)
    }

    /// Runs `body` with a timeout on each distributed call it makes: a call that takes longer fails
    /// with `RPCError` of kind `.timeout`, and the worker is told to cancel it.
    ///
    /// ```swift
    /// let digest = try await WorkerActorSystem.withCallTimeout(.seconds(2)) {
    ///     try await hasher.digest(bytes, rounds: 3)
    /// }
    /// ```
    public static func withCallTimeout<Result>(
        _ timeout: Duration, _ body: () async throws -> Result, isolation: isolated (any Actor)? = #isolation
    ) async rethrows -> Result {
        try await $callTimeout.withValue(timeout, operation: body, isolation: isolation)
    }

    // MARK: - DistributedActorSystem

    /// The local actor with `id` (in a worker), or nil: a reference that forwards calls to it.
    public func resolve<Act>(id: ActorID, as actorType: Act.Type) throws -> Act? where Act: DistributedActor, Act.ID == ActorID {
        guard hosting else { return nil }
        return actors.withLock { $0[id.number] } as? Act
    }

    /// A new actor's identity.
    public func assignID<Act>(_ actorType: Act.Type) -> ActorID where Act: DistributedActor, Act.ID == ActorID {
        WorkerActorID(pid: hosting ? getpid() : 0, number: nextNumber.wrappingAdd(1, ordering: .relaxed).oldValue)
    }

    /// A worker keeps its actors until its owner releases them; an owner's own actors are not kept.
    public func actorReady<Act>(_ actor: Act) where Act: DistributedActor, Act.ID == ActorID {
        guard hosting else { return }
        actors.withLock { $0[actor.id.number] = actor }
    }

    /// An actor has gone.
    public func resignID(_ id: ActorID) {
        guard hosting else { return }
        _ = actors.withLock { $0.removeValue(forKey: id.number) }
    }

    /// A fresh encoder for one call.
    public func makeInvocationEncoder() -> InvocationEncoder {
        WorkerInvocationEncoder()
    }

    /// Sends a distributed call to the actor's worker and decodes its result.
    public func remoteCall<Act, Err, Res>(
        on actor: Act, target: RemoteCallTarget, invocation: inout InvocationEncoder, throwing: Err.Type, returning: Res.Type
    ) async throws -> Res where Act: DistributedActor, Act.ID == ActorID, Err: Error, Res: Codable {
        let result = try await send(target, invocation, to: actor.id)
        do {
            return try MessagePackDecoder().decode(Res.self, from: result)
        } catch {
            throw RPCError(.codingFailed, "returned a result that is not \(Res.self): \(error)", function: "\(target)", pid: actor.id.pid)
        }
    }

    /// Sends a distributed call that returns nothing.
    public func remoteCallVoid<Act, Err>(
        on actor: Act, target: RemoteCallTarget, invocation: inout InvocationEncoder, throwing: Err.Type
    ) async throws where Act: DistributedActor, Act.ID == ActorID, Err: Error {
        _ = try await send(target, invocation, to: actor.id)
    }

    private func send(_ target: RemoteCallTarget, _ invocation: InvocationEncoder, to id: ActorID) async throws -> MessagePackValue {
        guard let lease = id.lease else {
            throw WorkerActorError("\(id) was not made by this process's WorkerActorSystem.make, so it cannot be called from here")
        }
        let params: [MessagePackValue] = [.uint(id.number), .string(target.identifier), .array(invocation.genericSubstitutions), .array(invocation.arguments)]
        do {
            return try await lease.client.call(method: Self.callMethod, params: params, timeout: Self.callTimeout)
        } catch var error as RPCError {
            error.function = "\(target)"
            throw error
        }
    }

    // MARK: - Hosting (in the worker)

    /// How many actors this system hosts (in a worker; 0 in the owner).
    public var hostedActorCount: Int { actors.withLock { $0.count } }

    /// `$actor.make [type]`: makes an actor of the type with that mangled name; answers its number.
    func host(_ params: [MessagePackValue]) throws -> MessagePackValue {
        guard let name = params.first?.stringValue else { throw WorkerActorError("\(Self.makeMethod) expects [type name]") }
        guard let type = _typeByName(name) as? any WorkerActor.Type else {
            throw WorkerActorError(
                "worker \(getpid()) has no distributed actor type named \(name) that conforms to WorkerActor; "
                    + "is it running the same program as the owner?")
        }
        return .uint(type.init(actorSystem: self).id.number)
    }

    /// `$actor.call [actor, target, [generic types], [arguments]]`: runs the distributed function
    /// on the actor; answers its result or throws its error.
    func execute(_ params: [MessagePackValue]) async throws -> MessagePackValue {
        guard params.count == 4, let number = params[0].integerValue.flatMap(UInt64.init(exactly:)),
              let target = params[1].stringValue, let generics = params[2].arrayValue, let arguments = params[3].arrayValue
        else { throw WorkerActorError("\(Self.callMethod) expects [actor, target, [generic types], [arguments]]") }
        guard let actor = actors.withLock({ $0[number] }) else {
            throw WorkerActorError("worker \(getpid()) has no actor \(number): it was released, or never made here")
        }
        var decoder = WorkerInvocationDecoder(genericSubstitutions: generics.compactMap(\.stringValue), arguments: arguments)
        let handler = WorkerResultHandler()
        try await executeDistributedTarget(on: actor, target: RemoteCallTarget(target), invocationDecoder: &decoder, handler: handler)
        guard let outcome = handler.outcome.result.withLock({ $0 }) else {
            throw WorkerActorError("the distributed function \(RemoteCallTarget(target)) ended without a result")
        }
        return try outcome.get()
    }

    /// `$actor.release [actor]`: the owner let go of the actor.
    func release(_ params: [MessagePackValue]) -> MessagePackValue {
        if let number = params.first?.integerValue.flatMap(UInt64.init(exactly:)) {
            _ = actors.withLock { $0.removeValue(forKey: number) }
        }
        return .nil
    }
}
