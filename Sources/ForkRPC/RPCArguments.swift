import MessagePack

#if canImport(Glibc)
import Glibc
#endif

/// What both server backends do alike: decode a call's arguments, and turn a failure into the error
/// response the owner reads (`[type, message]`).
enum RPCArguments {
    /// A failure with a chosen error type name.
    struct Failure: Error {
        let type: String
        let message: String
    }

    /// The single argument of a typed call, or an `InvalidArguments` failure naming the expected type.
    static func decode<Input: Decodable>(_ type: Input.Type, from params: [MessagePackValue]) throws -> Input {
        guard params.count == 1 else {
            throw Failure(type: "InvalidArguments", message: "expects 1 argument of type \(Input.self), got \(params.count)")
        }
        do {
            return try MessagePackDecoder().decode(Input.self, from: params[0])
        } catch {
            throw Failure(type: "InvalidArguments", message: "expects \(Input.self): \(describe(error))")
        }
    }

    static func errorResponse(id: UInt32, _ error: any Error) -> RPCMessage {
        .response(id: id, error: errorValue(error), result: .nil)
    }

    /// The error field of a response: `[type, message]`.
    static func errorValue(_ error: any Error) -> MessagePackValue {
        if let failure = error as? Failure {
            return [.string(failure.type), .string(failure.message)]
        }
        return [.string(String(describing: type(of: error))), .string(describe(error))]
    }

    static func noSuchMethod(id: UInt32, _ method: String, known: [String]) -> RPCMessage {
        errorResponse(id: id, noSuchMethod(method, known: known))
    }

    static func noSuchMethod(_ method: String, known: [String]) -> Failure {
        let served = known.filter { !$0.hasPrefix("$") }.sorted().joined(separator: ", ")
        return Failure(type: "NoSuchMethod", message: "no function named '\(method)' in worker \(getpid()); it serves: \(served)")
    }

    /// The method name of the `$batch` extension: `params` is `[method, [argument, ...]]` and the
    /// result holds one `[error, result]` pair per argument, in order, so that one round trip
    /// carries many small calls (a pool's map).
    static let batchMethod = "$batch"

    /// The method and the arguments of a `$batch` request.
    static func batchCalls(_ params: [MessagePackValue]) throws -> (method: String, arguments: [MessagePackValue]) {
        guard params.count == 2, let method = params[0].stringValue, case .array(let arguments) = params[1] else {
            throw Failure(type: "InvalidArguments", message: "\(batchMethod) expects [method, [argument, ...]]")
        }
        return (method, arguments)
    }

    /// One `[error, result]` pair of a `$batch` result.
    static func batchOutcome(_ result: Result<MessagePackValue, any Error>) -> MessagePackValue {
        switch result {
        case .success(let value): [.nil, value]
        case .failure(let error): [errorValue(error), .nil]
        }
    }

    static func describe(_ error: any Error) -> String {
        switch error {
        case DecodingError.typeMismatch(_, let context), DecodingError.valueNotFound(_, let context),
             DecodingError.keyNotFound(_, let context), DecodingError.dataCorrupted(let context):
            let path = context.codingPath.map(\.stringValue).joined(separator: ".")
            return path.isEmpty ? context.debugDescription : "at \(path): \(context.debugDescription)"
        default:
            return "\(error)"
        }
    }
}
