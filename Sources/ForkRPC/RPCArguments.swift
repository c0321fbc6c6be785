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
        if let failure = error as? Failure {
            return .response(id: id, error: [.string(failure.type), .string(failure.message)], result: .nil)
        }
        return .response(id: id, error: [.string(String(describing: type(of: error))), .string(describe(error))], result: .nil)
    }

    static func noSuchMethod(id: UInt32, _ method: String, known: [String]) -> RPCMessage {
        let served = known.sorted().joined(separator: ", ")
        return .response(id: id, error: ["NoSuchMethod", .string("no function named '\(method)' in worker \(getpid()); it serves: \(served)")], result: .nil)
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
