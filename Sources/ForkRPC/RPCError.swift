import ForkKit

/// An error from a remote call: what happened, in which function, in which worker.
///
/// ```swift
/// do {
///     _ = try await worker.call(divide, Division(dividend: 1, divisor: 0))
/// } catch let error as RPCError where error.kind == .remote {
///     print(error.remoteType ?? "", error)   // MathError: 'divide' in worker 4242 threw: division by zero
/// }
/// ```
public struct RPCError: Error, Sendable, CustomStringConvertible {
    /// The kinds of failure.
    public enum Kind: String, Sendable, Hashable {
        /// The function threw in the worker; ``remoteType`` and ``message`` say what.
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
    /// A sentence saying what happened.
    public let message: String
    /// The function called, when the error belongs to a call.
    public var function: String?
    /// The worker's process id, when known.
    public var pid: Int32?
    /// The type of the error the remote function threw (for ``Kind/remote``).
    public var remoteType: String?
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

    /// A sentence for people, naming the function and the worker.
    public var description: String {
        var text = ""
        if let remoteType, kind == .remote { text += "\(remoteType): " }
        if let function { text += "'\(function)' " }
        if let pid { text += "in worker \(pid) " }
        return text.isEmpty ? message : text + message
    }
}
