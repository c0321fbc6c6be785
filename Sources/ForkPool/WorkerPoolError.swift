/// A failure of the pool itself rather than of one worker (those are `RPCError`s naming the worker).
public struct WorkerPoolError: Error, Sendable, CustomStringConvertible {
    /// The kinds of failure.
    public enum Kind: String, Sendable, Hashable {
        /// The pool was shut down: it takes no new calls, or it was terminated under this one.
        case shutDown
        /// No worker could be forked (the template is gone, or does not serve the function).
        case cannotStartWorker
        /// The call or map was given something it cannot use (a `MapProgress` that another map
        /// has had); nothing ran.
        case invalidArgument
    }

    /// What kind of failure this is.
    public let kind: Kind
    /// A sentence saying what happened and what to do.
    public let message: String
    /// The error behind it (the fork's error for ``Kind/cannotStartWorker``).
    public let underlyingError: (any Error)?

    /// A sentence for people.
    public var description: String { message }

    static func backendMismatch(function: String, announced: String, configured: String) -> WorkerPoolError {
        let entryPoint = announced == "synchronous" ? "an rpcWorker" : "an asyncRPCWorker"
        return WorkerPoolError(
            kind: .cannotStartWorker,
            message: "worker function '\(function)' is \(entryPoint) (the \(announced) backend), but the pool's "
                + "configuration.backend is .\(configured); set configuration.backend = .\(announced)",
            underlyingError: nil)
    }

    /// `reason`: why the pool was terminated, when it was not by ``WorkerPool/terminate()``.
    static func shutDown(whileWaiting: Bool = false, reason: String? = nil) -> WorkerPoolError {
        WorkerPoolError(
            kind: .shutDown,
            message: whileWaiting
                ? "the pool was terminated\(reason.map { " (\($0))" } ?? "") while this call waited for a worker; it never ran"
                : "the pool has been shut down; it takes no new calls (in a ServiceGroup, list the pool before the "
                    + "services that call it, so that it shuts down after them; otherwise make a new pool)",
            underlyingError: nil)
    }

    static func terminatedWhileRunning(pid: Int32, reason: String?) -> WorkerPoolError {
        WorkerPoolError(
            kind: .shutDown,
            message: "the pool was terminated\(reason.map { " (\($0))" } ?? "") while worker \(pid) ran this call; its result is lost",
            underlyingError: nil)
    }

    static let progressAlreadyTaken = WorkerPoolError(
        kind: .invalidArgument,
        message: "this MapProgress already follows another map (a progress follows one map; its counts and its end are that "
            + "map's); give each map a new MapProgress",
        underlyingError: nil)

    static func cannotStartWorker(_ error: any Error) -> WorkerPoolError {
        // A pool's own refusal (a worker of the wrong backend) already says what to do.
        if let error = error as? WorkerPoolError { return error }
        // So does a template that answered with the reason (a function it does not have, a copy
        // that forgot bootstrap); other failures get the usual suspects.
        let explained = (error as? ForkError).map { [.unknownFunction, .notATemplate].contains($0.kind) } ?? false
        let advice = explained ? "" : ". Check that the template (or remote host) is alive and serves the pool's function"
        return WorkerPoolError(
            kind: .cannotStartWorker,
            message: "no worker could be started, so the call cannot run: \(error)\(advice)",
            underlyingError: error)
    }
}
