import Distributed
import MessagePack

/// Records a distributed call's arguments (each as a MessagePack value) and generic substitutions
/// (by mangled type name) for the `$actor.call` request.
public struct WorkerInvocationEncoder: DistributedTargetInvocationEncoder {
    /// Arguments and results are `Codable`, carried as MessagePack.
    public typealias SerializationRequirement = Codable

    private(set) var genericSubstitutions: [MessagePackValue] = []
    private(set) var arguments: [MessagePackValue] = []

    init() {}

    /// Records a generic parameter's type by its mangled name (the worker runs the same program).
    public mutating func recordGenericSubstitution<T>(_ type: T.Type) throws {
        guard let name = _mangledTypeName(type) else {
            throw WorkerActorError("cannot name the type \(type) for the worker: it has no mangled name")
        }
        genericSubstitutions.append(.string(name))
    }

    /// Records an argument, encoded.
    public mutating func recordArgument<Value: Codable>(_ argument: RemoteCallArgument<Value>) throws {
        guard !(Value.self is any DistributedActor.Type) else { throw WorkerActorError.actorReferencesStayPut }
        arguments.append(try MessagePackEncoder().encodeValue(argument.value))
    }

    /// Error types are not sent: a worker's error travels as ForkRPC's errors do.
    public mutating func recordErrorType<E: Error>(_ type: E.Type) throws {}

    /// The return type is not sent: the owner decodes the result as the type it expects.
    public mutating func recordReturnType<R: Codable>(_ type: R.Type) throws {}

    /// Nothing more to do.
    public mutating func doneRecording() throws {}
}
