import MessagePack

#if canImport(Glibc)
import Glibc
#endif

/// What both server backends do alike: decode a call's argument straight from the request's bytes,
/// encode its result straight into the response, and turn a failure into the error the owner reads
/// (`[type, message]`).
enum RPCArguments {
    /// A failure with a chosen error type name.
    struct Failure: Error {
        let type: String
        let message: String
    }

    /// Appends a function's encoded result to a response being written.
    typealias ResultEncoder = @Sendable (inout MessagePackWriter) throws -> Void

    /// Writes the results of a `$batch` call's calls: one `[error, result]` pair each, in order.
    typealias BatchEncoder = @Sendable (inout MessagePackWriter) -> Void

    /// The names of a typed function's argument types, in order.
    static func argumentTypes<each Input>(_ types: repeat (each Input).Type) -> [String] {
        var names: [String] = []
        for type in repeat each types { names.append("\(type)") }
        return names
    }

    /// The arguments of a typed call, one per element of its params array, or an
    /// `InvalidArguments` failure naming the expected types.
    static func decode<each Input: Decodable>(_ types: repeat (each Input).Type, from params: MessagePackObject) throws -> (repeat each Input) {
        // Counted, not named: this runs for every call (and every item of a map's batch).
        let expected = count(repeat (each Input).self)
        guard let received = params.count, received == expected else {
            let names = argumentTypes(repeat (each Input).self)
            let list = names.isEmpty ? "no arguments" : "\(names.count) argument\(names.count == 1 ? "" : "s") (\(names.joined(separator: ", ")))"
            throw Failure(type: "InvalidArguments", message: "expects \(list), got \(params.count.map(String.init) ?? params.typeName)")
        }
        var index = 0
        func next<Argument: Decodable>(_ type: Argument.Type) throws -> Argument {
            defer { index += 1 }
            do {
                return try params[index].decode(Argument.self)
            } catch {
                let position = expected == 1 ? "" : " as argument \(index + 1)"
                throw Failure(type: "InvalidArguments", message: "expects \(Argument.self)\(position): \(describe(error))")
            }
        }
        return (repeat try next((each Input).self))
    }

    /// How many arguments a typed function takes (without naming them: this is on every call's path).
    static func count<each Input>(_ types: repeat (each Input).Type) -> Int {
        var count = 0
        for _ in repeat each types { count += 1 }
        return count
    }

    /// The encoder of a function's result.
    static func result<Output: Encodable & Sendable>(_ output: Output) -> ResultEncoder {
        { writer in try encodeResult(output, into: &writer) }
    }

    /// Appends a function's result. Results cannot carry descriptors: only arguments can.
    private static func encodeResult<Output: Encodable>(_ output: Output, into writer: inout MessagePackWriter) throws {
        var direct: [MessagePackValue] = []
        try MessagePackEncoder().encode(output, into: &writer, directValues: &direct)
        if direct.contains(where: { $0.containsDescriptor }) {
            throw Failure(type: "InvalidResult", message: "results cannot carry descriptors; only arguments can")
        }
    }

    /// How a server runs one function: a single call, or every call of a `$batch` at once. Both
    /// decode their params when made (while they can be read in place) and return what runs later.
    struct Handler<Run, BatchRun> {
        let single: (_ params: MessagePackObject) throws -> Run
        let batch: (_ calls: [MessagePackObject]) -> BatchRun
    }

    /// A request whose params are decoded: one call to run, or the calls of a `$batch`.
    enum Prepared<Run, BatchRun> {
        case single(Run)
        case batch(BatchRun)
    }

    /// Decodes a request's params now, while they can be read in place.
    static func prepare<Run, BatchRun>(
        _ method: String, _ params: MessagePackObject, known: @autoclosure () -> [String],
        handler: (String) -> Handler<Run, BatchRun>?
    ) -> Result<Prepared<Run, BatchRun>, any Error> {
        Result {
            if method == batchMethod {
                let batch = try batchCalls(params)
                guard let handler = handler(batch.method) else { throw noSuchMethod(batch.method, known: known()) }
                return .batch(handler.batch(batch.calls))
            }
            guard let handler = handler(method) else { throw noSuchMethod(method, known: known()) }
            return .single(try handler.single(params))
        }
    }

    /// What running a request came to: one call's result or error, or the results of a `$batch`.
    enum Outcome {
        case single(Result<ResultEncoder, any Error>)
        case batch(BatchEncoder)

        /// Writes the response to request `id` into `writer`; a response larger than
        /// `maximumMessageSize` (which the owner would refuse) is replaced by a `MessageTooLarge` error.
        func write(id: UInt32, into writer: inout MessagePackWriter, maximumMessageSize: Int) {
            switch self {
            case .single(let outcome):
                writeResponse(id: id, outcome, into: &writer)
            case .batch(let encoder):
                writeHeader(id: id, into: &writer)
                encoder(&writer)
            }
            guard writer.count > maximumMessageSize else { return }
            let failure = Failure(
                type: "MessageTooLarge",
                message: "its result is \(writer.count) bytes, over the maximumMessageSize of \(maximumMessageSize) bytes that the "
                    + "owner set (RPCClient.start(maximumMessageSize:), WorkerPool.Configuration.maximumMessageSize); "
                    + "raise that limit, or return less per call")
            writeResponse(id: id, .failure(failure), into: &writer)
        }
    }

    private static func writeHeader(id: UInt32, into writer: inout MessagePackWriter) {
        writer.reset()
        writer.writeArrayHeader(count: 4)
        writer.write(1)
        writer.write(Int(id))
        writer.write(.nil)
    }

    /// Writes the whole response to call `id` into `writer`: the result, or the error that computing
    /// or encoding it threw.
    static func writeResponse(id: UInt32, _ outcome: Result<ResultEncoder, any Error>, into writer: inout MessagePackWriter) {
        writeHeader(id: id, into: &writer)
        do {
            try outcome.get()(&writer)
        } catch {
            writer.reset()
            writer.write(RPCMessage.response(id: id, error: errorValue(error), result: .nil).value)
        }
    }

    /// A `$batch`'s inputs, decoded while the request can be read in place. Inputs are kept as
    /// plain values and the rare failures apart: a `Result` per item costs a generic metadata
    /// lookup per item in this unspecialized code, more than decoding an integer.
    struct BatchInputs<Input> {
        private var inputs: [Input] = []
        /// Why a call's params did not decode, by the call's position.
        private var failures: [Int: any Error] = [:]
        private var count: Int { inputs.count + failures.count }

        init(_ calls: [MessagePackObject], decode: (MessagePackObject) throws -> Input) {
            inputs.reserveCapacity(calls.count)
            for (index, call) in calls.enumerated() {
                do { inputs.append(try decode(call)) } catch { failures[index] = error }
            }
        }

        /// Runs `body` on every input in order and encodes one `[error, result]` pair per call.
        func run<Output: Encodable>(_ body: (Input) throws -> Output) -> BatchEncoder {
            var results = BatchResults(count: count)
            var next = 0
            for index in 0..<count {
                if let failure = failures[index] {
                    results.fail(failure)
                    continue
                }
                do { results.succeed(try body(inputs[next])) } catch { results.fail(error) }
                next += 1
            }
            return results.encoder()
        }

        /// The same for an `async` body.
        func run<Output: Encodable>(_ body: (Input) async throws -> Output) async -> BatchEncoder {
            var results = BatchResults(count: count)
            var next = 0
            for index in 0..<count {
                if let failure = failures[index] {
                    results.fail(failure)
                    continue
                }
                do { results.succeed(try await body(inputs[next])) } catch { results.fail(error) }
                next += 1
            }
            return results.encoder()
        }
    }

    /// The `[error, result]` pairs of a `$batch`, encoded as each call ends.
    private struct BatchResults: ~Copyable {
        private var writer = MessagePackWriter()

        init(count: Int) {
            writer.writeArrayHeader(count: count)
        }

        mutating func succeed<Output: Encodable>(_ output: Output) {
            let start = writer.count
            writer.writeArrayHeader(count: 2)
            writer.write(.nil)
            do {
                try encodeResult(output, into: &writer)
            } catch {
                writer.truncate(to: start)
                fail(error)
            }
        }

        mutating func fail(_ error: any Error) {
            writer.write([errorValue(error), .nil])
        }

        /// Copies the pairs into the response when it is written.
        consuming func encoder() -> BatchEncoder {
            let bytes = writer.bytes
            return { $0.write(encoded: bytes) }
        }
    }

    /// The error field of a response: `[type, message]` for the protocol's own errors;
    /// `[type, message, details]` for an error the function threw, its type by full name and its
    /// `Codable` encoding in the details when it has one (see ``RegisteredErrors``).
    static func errorValue(_ error: any Error) -> MessagePackValue {
        if let failure = error as? Failure {
            return [.string(failure.type), .string(failure.message)]
        }
        let type = MessagePackValue.string(RegisteredErrors.name(of: Swift.type(of: error)))
        guard let details = RegisteredErrors.details(of: error) else { return [type, .string(describe(error))] }
        return [type, .string(describe(error)), details]
    }

    /// What every call to a worker whose set-up registered `name` twice gets: the worker cannot know
    /// which of the two bodies was meant.
    static func registeredTwice(_ name: String) -> Failure {
        Failure(
            type: "DuplicateFunction",
            message: "worker \(getpid()) registered a function named '\(name)' twice in its set-up, so it serves no call; "
                + "give each function its own name")
    }

    /// The answer to a request that the owner cancelled before the worker started it: every request
    /// is answered, so that the owner can tell a worker that skipped a call from one that is stuck.
    static let cancelledBeforeStart = Failure(type: "Cancelled", message: "the owner cancelled this call before it started")

    /// The answer to a request for a function nobody serves, in `place` (this worker by default).
    static func noSuchMethod(_ method: String, known: [String], in place: String = "worker \(getpid())") -> Failure {
        let served = known.filter { !$0.hasPrefix("$") }.sorted().joined(separator: ", ")
        return Failure(type: "NoSuchMethod", message: "no function named '\(method)' in \(place); it serves: \(served.isEmpty ? "nothing" : served)")
    }

    /// The params of a worker's typed request to its owner: one value per argument.
    static func params<each Input: Encodable>(_ input: repeat each Input, of function: String) throws -> [MessagePackValue] {
        var params: [MessagePackValue] = []
        for value in repeat each input {
            do {
                params.append(try MessagePackEncoder().encodeValue(value))
            } catch {
                throw RPCError(.codingFailed, "cannot encode the argument as \(type(of: value)): \(error)", function: function)
            }
        }
        return params
    }

    /// A worker's request to its owner, encoded; refused before anything is sent when it holds a
    /// descriptor (they travel from the owner to its workers only) or is over the size limit.
    static func ownerRequest(id: UInt32, method: String, params: [MessagePackValue], maximumMessageSize: Int) throws(RPCError) -> [UInt8] {
        if params.contains(where: { $0.containsDescriptor }) {
            throw RPCError(
                .codingFailed, "descriptors travel from the owner to its workers only, not back; write into one the owner passed "
                    + "this worker instead (it was not sent)", function: method)
        }
        let bytes = RPCMessage.request(id: id, method: method, params: params).value.encoded()
        guard bytes.count <= maximumMessageSize else {
            throw RPCError(
                .messageTooLarge, "the request is \(bytes.count) bytes, over the maximumMessageSize of \(maximumMessageSize) bytes "
                    + "that the owner set; it was not sent. Send less per call, or raise the owner's limit", function: method)
        }
        return bytes
    }

    /// A worker's call to its owner that was not answered within `limit`.
    static func ownerDidNotAnswer(within limit: Duration, function: String) -> RPCError {
        RPCError(.timeout, "the owner did not answer within \(limit); it was sent $cancel", function: function)
    }

    /// A worker's call to its owner whose connection ended first.
    static func ownerClosed(function: String) -> RPCError {
        RPCError(.closed, "the owner closed the connection before it answered", function: function)
    }

    /// The owner's answer to a worker's request: the result as `Output`, or the error the owner
    /// answered with (as itself when its type is registered, as a call's error in the owner is).
    static func answer<Output: Decodable>(
        _ type: Output.Type, error: MessagePackValue, result: MessagePackValue, function: String
    ) throws -> Output {
        guard error == .nil else {
            let failure = RPCError(answer: error, function: function, pid: nil)
            throw failure.registeredError ?? failure
        }
        do {
            return try MessagePackDecoder().decode(Output.self, from: result)
        } catch {
            throw RPCError(.codingFailed, "the owner returned a result that is not \(Output.self): \(describe(error))", function: function)
        }
    }

    /// The method name of the `$batch` extension: `params` is `[method, [params, ...]]`, one params
    /// array per call, and the result holds one `[error, result]` pair per call, in order, so that
    /// one round trip carries many small calls (a pool's map).
    static let batchMethod = "$batch"

    /// The method and the calls' params of a `$batch` request, or an `InvalidArguments` failure.
    static func batchCalls(_ params: MessagePackObject) throws -> (method: String, calls: [MessagePackObject]) {
        guard params.count == 2, let method = params[0].stringValue, let count = params[1].count else {
            throw Failure(type: "InvalidArguments", message: "\(batchMethod) expects [method, [params, ...]]")
        }
        let calls = (0..<count).map { params[1][$0] }
        guard calls.allSatisfy({ $0.count != nil }) else {
            throw Failure(type: "InvalidArguments", message: "\(batchMethod) expects each call's params as an array")
        }
        return (method, calls)
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

extension RPCArguments.Prepared: Sendable where Run: Sendable, BatchRun: Sendable {}
extension RPCArguments.BatchInputs: Sendable where Input: Sendable {}
