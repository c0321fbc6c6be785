import ForkKit
import MessagePack

/// An error from a remote call: what happened, in which function, in which worker.
///
/// ```swift
/// do {
///     _ = try await worker.call(divide, Division(dividend: 1, divisor: 0))
/// } catch let error as RPCError where error.kind == .remote {
///     print(error)           // Math.MathError: 'divide' in worker 4242 threw: division by zero
///     print(error.message)   // division by zero
/// }
/// ```
///
/// An error type that is `Codable` and registered with ``register(_:)`` in the owner is not
/// wrapped: it is thrown as itself (`catch let error as BadShape`).
public struct RPCError: Error, Sendable, CustomStringConvertible {
    /// The kinds of failure.
    public enum Kind: String, Sendable, Hashable {
        /// The function threw in the worker (or the peer answered with an error); ``remoteType``,
        /// ``message`` and ``remoteError`` say what.
        case remote
        /// The worker serves no function of that name.
        case unknownFunction
        /// The worker could not decode the arguments as the function's input type.
        case invalidArguments
        /// The result could not be decoded as the expected output type, or the input not encoded.
        case codingFailed
        /// The worker went away (exit, signal, closed socket) before it answered.
        case workerDied
        /// The call took longer than its timeout; the worker was asked to cancel it.
        case timeout
        /// The peer broke the protocol; the connection was closed.
        case protocolViolation
        /// The client was closed; no more calls can be made.
        case closed
        /// A message (an argument or a result) is larger than the maximum message size that both
        /// sides honour (`maximumMessageSize`): it was not sent, and the connection lives on.
        case messageTooLarge
    }

    /// What kind of failure this is.
    public let kind: Kind
    /// A sentence saying what happened; for a remote error, the message as the peer sent it.
    public let message: String
    /// The function called, when the error belongs to a call.
    public var function: String?
    /// The worker's process id, when known.
    public var pid: Int32?
    /// The type of the error the remote function threw (for ``Kind/remote``): a ForkKit worker
    /// sends the Swift type's full name (`Module.Type`), another peer what it chooses.
    public var remoteType: String?
    /// The integer code of a peer that sends errors as `[code, message]` (as Neovim does).
    public var remoteCode: Int?
    /// The error object exactly as the peer sent it (a string, an array, a map...), for errors
    /// that came over the wire.
    public var remoteError: MessagePackValue?
    /// The position of the failing item in a map's inputs, or in a batch.
    public var itemIndex: Int?
    /// How the worker ended (for ``Kind/workerDied``), when known.
    public var exitStatus: ExitStatus?

    /// Creates an error.
    public init(_ kind: Kind, _ message: String, function: String? = nil, pid: Int32? = nil,
                remoteType: String? = nil, exitStatus: ExitStatus? = nil) {
        self.kind = kind
        self.message = message
        self.function = function
        self.pid = pid
        self.remoteType = remoteType
        self.exitStatus = exitStatus
    }

    /// A sentence for people, naming the function, the item and the worker:
    /// `Math.MathError: 'divide' in worker 4242 threw: division by zero`, or for the other kinds
    /// `'square' in worker 4242: the worker took none of the message in time ...`.
    public var description: String {
        var context: [String] = []
        if let itemIndex { context.append("item \(itemIndex) of") }
        if let function { context.append("'\(function)'") }
        if let pid { context.append("in worker \(pid)") }
        let origin = kind == .remote ? (remoteType ?? remoteCode.map { "error \($0)" }).map { "\($0): " } ?? "" : ""
        // Something the function threw, not one of the protocol's own errors (InvalidResult...).
        let threw = kind == .remote && !Self.protocolErrorNames.contains(remoteType ?? "")
        switch (context.isEmpty, threw) {
        case (true, true): return origin + "threw: " + message
        case (true, false): return origin + message
        case (false, true): return origin + context.joined(separator: " ") + " threw: " + message
        case (false, false): return origin + context.joined(separator: " ") + ": " + message
        }
    }

    /// The error names that ForkKit's workers send for failures of the protocol rather than of
    /// the function (protocol/README.md).
    static let protocolErrorNames: Set<String> = [
        "NoSuchMethod", "InvalidArguments", "InvalidResult", "MessageTooLarge", "DuplicateFunction", "Cancelled",
    ]
}

extension RPCError {
    /// The error a peer answered a call with, keeping it as sent. Any error
    /// object is accepted: `[type, message]` and `[type, message, details]` (ForkKit's), `[code,
    /// message]` (an integer code, as Neovim sends), a string, a map with a `message`, or anything
    /// else (its description is the message). Only the protocol's own error names (sent by a worker,
    /// never a Swift type's full name) choose a kind other than ``Kind/remote``.
    init(answer error: MessagePackValue, function: String, pid: Int32?) {
        var type: String?
        var code: Int?
        var text: String?
        switch error {
        case .string(let message):
            text = message
        case .array(let fields) where fields.count >= 2:
            type = fields[0].stringValue
            code = fields[0].integerValue
            text = fields[1].stringValue
        case .map(let pairs):
            func field(_ name: MessagePackValue) -> MessagePackValue? { pairs.first { $0.key == name }?.value }
            text = field("message")?.stringValue
            type = (field("type") ?? field("name"))?.stringValue
            code = field("code")?.integerValue
        default:
            break
        }
        let kind: RPCError.Kind = switch type {
        case "NoSuchMethod": .unknownFunction
        case "InvalidArguments": .invalidArguments
        case "MessageTooLarge": .messageTooLarge
        default: .remote
        }
        self.init(kind, text ?? "\(error)", function: function, pid: pid, remoteType: type)
        remoteCode = code
        remoteError = error
    }
}
