/// An error from ForkKit: what happened, to which process, and what to do about it.
///
/// Match on ``kind``; show ``description`` to people.
///
/// ```swift
/// do {
///     _ = try await template.fork().run("no-such-function")
/// } catch let error as ForkError where error.kind == .unknownFunction {
///     print(error)   // no function named 'no-such-function' is registered in ...
/// }
/// ```
public struct ForkError: Error, Sendable, CustomStringConvertible {
    /// The kinds of failure.
    public enum Kind: String, Sendable, Hashable {
        /// The template executable could not be started.
        case spawnFailed = "spawn-failed"
        /// The executable ran but did not serve as a template (its `main` does not call `bootstrap`).
        case notATemplate = "not-a-template"
        /// The template or child went away (exited, was killed, or closed its socket).
        case processGone = "process-gone"
        /// No function or initializer of that name is registered in the process.
        case unknownFunction = "unknown-function"
        /// A plugin could not be loaded.
        case pluginLoadFailed = "plugin-load-failed"
        /// An initializer threw.
        case initializerFailed = "initializer-failed"
        /// The process refused to fork (for example because it is no longer single-threaded).
        case forkRefused = "fork-refused"
        /// A message broke the control protocol; the connection was closed.
        case protocolViolation = "protocol"
        /// The handle cannot do this any more (for example after `run`).
        case invalidState = "invalid-state"
        /// A system call failed.
        case systemCall = "system-call"
    }

    /// What kind of failure this is.
    public let kind: Kind
    /// A sentence saying what happened and what to do.
    public let message: String

    /// Creates an error.
    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    /// A sentence for people.
    public var description: String { message }

    /// An error for a failed system call, naming the call and errno.
    static func systemCall(_ call: String, errno: Int32) -> ForkError {
        ForkError(.systemCall, "\(call) failed: \(String(cString: strerror(errno))) (errno \(errno))")
    }
}

#if canImport(Glibc)
import Glibc
#endif
