import CForkSupport
import ForkKit
import MessagePack
import SystemPackage

#if canImport(Glibc)
import Glibc
#endif

/// The worker side of MessagePack-RPC, synchronous backend: one call at a time, in a blocking loop
/// with no threads (AnyEvent::Fork::RPC's sync backend, and the smallest overhead).
///
/// ```swift
/// ForkTemplate.bootstrap([
///     .rpcWorker("math") { server in
///         server.register(square) { $0 * $0 }
///     },
/// ])
/// ```
///
/// A function that throws answers with an error carrying the error's type and description. An
/// unknown method or arguments of the wrong type answer with an error naming the function (and the
/// expected type). `serve()` returns when the owner closes its end: queued calls are answered first.
public final class RPCServer {
    private typealias Handler = ([MessagePackValue]) throws -> MessagePackValue

    private let input: Int32
    private let output: Int32
    private var handlers: [String: Handler] = [:]
    private var reader: MessagePackFrameReader
    /// Requests the owner cancelled before they were started.
    private var cancelled: Set<UInt32> = []
    /// Descriptors that arrived (SCM_RIGHTS) and no request has claimed yet.
    private var received: [Int32] = []
    /// False once the input turned out to be a pipe: then plain reads, and no descriptors.
    private var inputIsSocket = true

    /// Serves on one bidirectional socket (a forked child's socket).
    public convenience init(socket: FileDescriptor, maximumMessageSize: Int = 64 << 20) {
        self.init(input: socket, output: socket, maximumMessageSize: maximumMessageSize)
    }

    /// Serves on separate input and output descriptors (a pipe pair, or standard input and output).
    /// A message from the owner larger than `maximumMessageSize` ends `serve()` with an error.
    public init(input: FileDescriptor, output: FileDescriptor, maximumMessageSize: Int = 64 << 20) {
        reader = MessagePackFrameReader(maximumMessageSize: maximumMessageSize)
        self.input = input.rawValue
        self.output = output.rawValue
        signal(SIGPIPE, SIG_IGN)
    }

    /// Serves `function` with `body`.
    public func register<Input, Output>(_ function: RPCFunction<Input, Output>, _ body: @escaping (Input) throws -> Output) {
        handlers[function.name] = { params in
            let input: Input
            do {
                guard params.count == 1 else {
                    throw RemoteFailure(type: "InvalidArguments", message: "expects 1 argument of type \(Input.self), got \(params.count)")
                }
                input = try MessagePackDecoder().decode(Input.self, from: params[0])
            } catch let failure as RemoteFailure {
                throw failure
            } catch {
                throw RemoteFailure(type: "InvalidArguments", message: "expects \(Input.self): \(Self.describe(error))")
            }
            return try MessagePackEncoder().encodeValue(try body(input))
        }
    }

    /// Serves `method` with untyped parameters and result (for peers that send plain msgpack-rpc).
    public func register(method: String, _ body: @escaping ([MessagePackValue]) throws -> MessagePackValue) {
        handlers[method] = body
    }

    /// Sends an event to the owner: a notification `[2, name, [value]]`.
    public func emit<Value: Encodable>(_ name: String, _ value: Value) throws {
        try write(.notification(method: name, params: [MessagePackEncoder().encodeValue(value)]))
    }

    /// Answers requests until the owner closes its end. Throws (and the worker should exit) when the
    /// owner sends something that is not MessagePack-RPC: the stream can no longer be trusted.
    public func serve() throws {
        defer { received.forEach { close($0) } }
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        var incoming = [Int32](repeating: -1, count: 253)
        while true {
            var arrived: Int32 = 0, truncated: Int32 = 0
            let count = buffer.withUnsafeMutableBytes { bytes in
                inputIsSocket
                    ? forkkit_receive_with_descriptors(input, bytes.baseAddress, bytes.count, &incoming, 253, &arrived, &truncated)
                    : read(input, bytes.baseAddress, bytes.count)
            }
            if count < 0 {
                if errno == EINTR { continue }
                if errno == ENOTSOCK && inputIsSocket {
                    inputIsSocket = false
                    continue
                }
                throw Errno(rawValue: errno)
            }
            received += incoming.prefix(Int(arrived))
            if count == 0 { return }
            buffer.withUnsafeBytes { reader.append(UnsafeRawBufferPointer(rebasing: $0.prefix(count))) }
            var batch: [RPCMessage] = []
            while let value = try reader.next() {
                batch.append(try RPCMessage(try PassedDescriptor.substitute(value, from: &received)))
            }
            // A cancel that arrived together with its request spares the work.
            for case .notification("$cancel", let params) in batch {
                if let id = params.first?.integerValue.flatMap(UInt32.init(exactly:)) { cancelled.insert(id) }
            }
            for message in batch { try handle(message) }
        }
    }

    private func handle(_ message: RPCMessage) throws {
        guard case .request(let id, let method, let params) = message else { return }
        if cancelled.remove(id) != nil { return }
        let response: RPCMessage
        if let handler = handlers[method] {
            do {
                response = .response(id: id, error: .nil, result: try handler(params))
            } catch let failure as RemoteFailure {
                response = .response(id: id, error: [.string(failure.type), .string(failure.message)], result: .nil)
            } catch {
                response = .response(id: id, error: [.string(String(describing: type(of: error))), .string(Self.describe(error))], result: .nil)
            }
        } else {
            let known = handlers.keys.sorted().joined(separator: ", ")
            response = .response(id: id, error: ["NoSuchMethod", .string("no function named '\(method)' in worker \(getpid()); it serves: \(known)")], result: .nil)
        }
        try write(response)
    }

    private func write(_ message: RPCMessage) throws {
        var value = message.value
        if case .response(let id, _, _) = message, !PassedDescriptor.descriptors(in: value).isEmpty {
            value = RPCMessage.response(
                id: id, error: ["InvalidResult", "results cannot carry descriptors; only arguments can"], result: .nil).value
        }
        let bytes = value.encoded()
        var offset = 0
        while offset < bytes.count {
            let sent = bytes.withUnsafeBytes { Glibc.write(output, $0.baseAddress! + offset, $0.count - offset) }
            if sent < 0 {
                if errno == EINTR { continue }
                throw Errno(rawValue: errno)
            }
            offset += sent
        }
    }

    private static func describe(_ error: any Error) -> String {
        switch error {
        case DecodingError.typeMismatch(_, let context), DecodingError.valueNotFound(_, let context),
             DecodingError.keyNotFound(_, let context), DecodingError.dataCorrupted(let context):
            let path = context.codingPath.map(\.stringValue).joined(separator: ".")
            return path.isEmpty ? context.debugDescription : "at \(path): \(context.debugDescription)"
        default:
            return "\(error)"
        }
    }

    private struct RemoteFailure: Error {
        let type: String
        let message: String
    }
}

extension ForkEntryPoint {
    /// A function that serves MessagePack-RPC on the child's socket with the synchronous backend:
    /// `setUp` registers the functions, then the child answers calls until its owner closes.
    public static func rpcWorker(_ name: String, _ setUp: @escaping @Sendable (RPCServer) throws -> Void) -> ForkEntryPoint {
        .function(name) { child in
            let server = RPCServer(socket: child.socket)
            try setUp(server)
            try server.serve()
        }
    }
}
