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
    /// A worker's process id and the actor's number there.
    public typealias ActorID = WorkerActorID
    /// Arguments and results are `Codable`, carried as MessagePack.
    public typealias SerializationRequirement = Codable
    /// Records a call in the owner.
    public typealias InvocationEncoder = WorkerInvocationEncoder
    /// Reads a call in the worker.
    public typealias InvocationDecoder = WorkerInvocationDecoder
    /// Takes a call's outcome in the worker.
    public typealias ResultHandler = WorkerResultHandler

    /// The name of the entry point that hosts actors in a worker (`ForkEntryPoint.distributedActors`).
    public static let hostFunction = "forkkit-distributed-actors"

    static let makeMethod = "$actor.make"
    static let callMethod = "$actor.call"
    static let releaseMethod = "$actor.release"

    /// Whether this system hosts actors for an owner (in a worker) or calls them (in the owner).
    private let hosting: Bool
    /// In a worker: the actors its owner made, kept until the owner releases them.
    private let actors = Mutex<[UInt64: any DistributedActor]>([:])
    /// Numbers of actors made in this process without an owner's number: from the top half, so
    /// that they never meet the numbers an owner chooses.
    private let nextLocalNumber = Atomic<UInt64>(1 << 63)
    /// In the owner: the number of the next actor it makes (chosen here, so that a make that fails
    /// or is given up on can still be released).
    private let nextNumber = Atomic<UInt64>(1)

    /// The timeout of the distributed calls made in ``withCallTimeout(_:_:isolation:)``'s body.
    @TaskLocal static var callTimeout: Duration?

    /// The number `host` is making an actor under, for ``assignID(_:)``.
    @TaskLocal private static var assigning: UInt64?

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
        try await make(type, with: worker.client, pid: worker.pid, host: .worker(worker))
    }

    /// Makes an actor of type `type` in a worker of `pool`: worker `pid` when given, otherwise the
    /// one that hosts the fewest actors. The pool keeps that worker while the actor lives.
    ///
    /// The pool's workers must run ``hostFunction`` on the asynchronous backend, and should all be
    /// started (a pool places actors only in workers it has): ``startPool(template:configuration:)``
    /// makes such a pool. Calls to actors go straight to their worker: the pool's `callTimeout`,
    /// `retries`, `load` and statistics are for its own calls (use ``withCallTimeout(_:_:isolation:)``).
    public func make<Actor: WorkerActor>(_ type: Actor.Type, in pool: WorkerPool, onWorker pid: Int32? = nil) async throws -> Actor {
        let (client, placed) = try await pool.placeActor(onWorker: pid)
        return try await make(type, with: client, pid: placed, host: .pool(pool, pid: placed))
    }

    /// Asks the worker to make an actor of `type` under a number chosen here, and returns the
    /// reference that holds its lease. A make that fails (or is given up on) after it was sent is
    /// released all the same: the worker may have made the actor.
    private func make<Actor: WorkerActor>(_ type: Actor.Type, with client: RPCClient, pid: Int32, host: ActorLease.Host) async throws -> Actor {
        let number = nextNumber.wrappingAdd(1, ordering: .relaxed).oldValue
        let lease = ActorLease(client: client, number: number, host: host)
        try await create(type, number: number, with: client)
        return try Actor.resolve(id: WorkerActorID(pid: pid, number: number, lease: lease), using: self)
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
        // Every worker, local and remote, starts now; none is recycled under its actors.
        configuration.idleWorkers = configuration.maximumWorkers + configuration.remoteHosts.reduce(0) { $0 + $1.maximumWorkers }
        configuration.maximumCallsPerWorker = nil
        let forkTemplate = if let template { template } else { try await ForkTemplate.shared }
        do {
            // The pool returns once its first workers have started (or failed to).
            return try await WorkerPool(template: forkTemplate, running: hostFunction, configuration: configuration)
        } catch let error as ForkError where error.kind == .unknownFunction {
            throw WorkerActorError(
                "the template does not host distributed actors: add .distributedActors to its ForkTemplate.bootstrap([...]) (\(error))")
        }
    }

    /// Asks the worker to make an actor of `type` with the number `number`.
    private func create<Actor: WorkerActor>(_ type: Actor.Type, number: UInt64, with client: RPCClient) async throws {
        guard let name = _mangledTypeName(type) else { throw WorkerActorError("the type \(type) has no mangled name to send to the worker") }
        do {
            _ = try await client.call(method: Self.makeMethod, params: [.string(name), .uint(number)], timeout: Self.callTimeout)
        } catch let error as RPCError where error.kind == .unknownFunction {
            throw WorkerActorError(
                "worker \(client.pid.map(String.init) ?? "?") does not host distributed actors: its function is not "
                    + "WorkerActorSystem.hostFunction (make the pool with WorkerActorSystem.startPool, or add .distributedActors to the bootstrap)")
        }
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
        guard hosting, id.pid == getpid() else { return nil }
        return actors.withLock { $0[id.number] } as? Act
    }

    /// A new actor's identity: the number its owner chose (`$actor.make`), or one of this process's.
    public func assignID<Act>(_ actorType: Act.Type) -> ActorID where Act: DistributedActor, Act.ID == ActorID {
        WorkerActorID(pid: hosting ? getpid() : 0, number: Self.assigning ?? nextLocalNumber.wrappingAdd(1, ordering: .relaxed).oldValue)
    }

    /// Nothing to do: a worker keeps the actors its owner made (`$actor.make`), and no others.
    public func actorReady<Act>(_ actor: Act) where Act: DistributedActor, Act.ID == ActorID {}

    /// An actor has gone.
    public func resignID(_ id: ActorID) {
        guard hosting else { return }
        forget(id.number)
    }

    /// A fresh encoder for one call.
    public func makeInvocationEncoder() -> InvocationEncoder {
        WorkerInvocationEncoder()
    }

    /// Sends a distributed call to the actor's worker and decodes its result.
    public func remoteCall<Act, Err, Res>(
        on actor: Act, target: RemoteCallTarget, invocation: inout InvocationEncoder, throwing: Err.Type, returning: Res.Type
    ) async throws -> Res where Act: DistributedActor, Act.ID == ActorID, Err: Error, Res: Codable {
        guard !(Res.self is any DistributedActor.Type) else { throw WorkerActorError.actorReferencesStayPut }
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

    /// `$actor.make [type, number]`: makes an actor of the type with that mangled name under the
    /// owner's number, and keeps it until the owner releases it.
    func host(_ params: [MessagePackValue]) throws -> MessagePackValue {
        guard params.count == 2, let name = params[0].stringValue, let number = params[1].actorNumber else {
            throw WorkerActorError("\(Self.makeMethod) expects [type name, actor number]")
        }
        guard let type = _typeByName(name) as? any WorkerActor.Type else {
            throw WorkerActorError(
                "worker \(getpid()) has no distributed actor type named \(name) that conforms to WorkerActor; "
                    + "is it running the same program as the owner?")
        }
        let actor = Self.$assigning.withValue(number) { type.init(actorSystem: self) }
        actors.withLock { $0[number] = actor }
        return .nil
    }

    /// `$actor.call [actor, target, [generic types], [arguments]]`: runs the distributed function
    /// on the actor; answers its result or throws its error.
    func execute(_ params: [MessagePackValue]) async throws -> MessagePackValue {
        guard params.count == 4, let number = params[0].actorNumber, let target = params[1].stringValue,
              let generics = params[2].arrayValue?.compactMap(\.stringValue), generics.count == params[2].arrayValue?.count,
              let arguments = params[3].arrayValue
        else { throw WorkerActorError("\(Self.callMethod) expects [actor, target, [generic type names], [arguments]]") }
        guard let actor = actors.withLock({ $0[number] }) else {
            throw WorkerActorError("worker \(getpid()) has no actor \(number): it was released, or never made here")
        }
        var decoder = WorkerInvocationDecoder(genericSubstitutions: generics, arguments: arguments)
        let handler = WorkerResultHandler()
        try await executeDistributedTarget(on: actor, target: RemoteCallTarget(target), invocationDecoder: &decoder, handler: handler)
        guard let outcome = handler.outcome.result.withLock({ $0 }) else {
            throw WorkerActorError("the distributed function \(RemoteCallTarget(target)) ended without a result")
        }
        return try outcome.get()
    }

    /// `$actor.release [actor]`: the owner let go of the actor (or of a make it gave up on).
    func release(_ params: [MessagePackValue]) -> MessagePackValue {
        if let number = params.first?.actorNumber { forget(number) }
        return .nil
    }

    private func forget(_ number: UInt64) {
        _ = actors.withLock { $0.removeValue(forKey: number) }
    }
}

extension MessagePackValue {
    /// An actor's number, as `$actor.*` requests carry it.
    fileprivate var actorNumber: UInt64? { integerValue.flatMap(UInt64.init(exactly:)) }
}
