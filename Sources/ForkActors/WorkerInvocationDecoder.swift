import Distributed
import MessagePack

/// Reads a distributed call's generic substitutions and arguments in the worker, from the
/// `$actor.call` request.
public struct WorkerInvocationDecoder: DistributedTargetInvocationDecoder {
    /// Arguments and results are `Codable`, carried as MessagePack.
    public typealias SerializationRequirement = Codable

    private let genericSubstitutions: [String]
    private let arguments: [MessagePackValue]
    private var next = 0

    init(genericSubstitutions: [String], arguments: [MessagePackValue]) {
        self.genericSubstitutions = genericSubstitutions
        self.arguments = arguments
    }

    /// The generic parameters' types, found by their mangled names in this program.
    public mutating func decodeGenericSubstitutions() throws -> [Any.Type] {
        try genericSubstitutions.map { name in
            guard let type = _typeByName(name) else {
                throw WorkerActorError("the worker knows no type named \(name); is it running the same program as the owner?")
            }
            return type
        }
    }

    /// The next argument, decoded as the type the distributed function takes.
    public mutating func decodeNextArgument<Argument: Codable>() throws -> Argument {
        guard next < arguments.count else {
            throw WorkerActorError("the call carries \(arguments.count) arguments, fewer than the distributed function takes")
        }
        defer { next += 1 }
        do {
            return try MessagePackDecoder().decode(Argument.self, from: arguments[next])
        } catch {
            throw WorkerActorError("argument \(next + 1) does not decode as \(Argument.self): \(error)")
        }
    }

    /// Not sent (see ``WorkerInvocationEncoder/recordErrorType(_:)``).
    public mutating func decodeErrorType() throws -> Any.Type? { nil }

    /// Not sent (see ``WorkerInvocationEncoder/recordReturnType(_:)``).
    public mutating func decodeReturnType() throws -> Any.Type? { nil }
}
