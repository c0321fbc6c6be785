import Synchronization

/// A reply that was asked for and arrives later: resolved once, awaited at most once.
///
/// Separating the asking from the waiting lets an owner queue several commands (to a template and to
/// the child it is about to fork) before it waits for any of them.
final class PendingReply: Sendable {
    private enum State {
        case waiting(CheckedContinuation<ControlMessage, any Error>?)
        case resolved(Result<ControlMessage, ForkError>)
    }

    private let state = Mutex(State.waiting(nil))

    /// A reply that is already known (for a request that could not be sent).
    convenience init(failure: ForkError) {
        self.init()
        resolve(.failure(failure))
    }

    /// Settles the reply; only the first call counts.
    func resolve(_ result: Result<ControlMessage, ForkError>) {
        let waiter: CheckedContinuation<ControlMessage, any Error>? = state.withLock { state in
            guard case .waiting(let waiter) = state else { return nil }
            state = .resolved(result)
            return waiter
        }
        waiter?.resume(with: result)
    }

    /// Waits for the reply; an `error` reply is thrown as the ``ForkError`` it describes.
    @discardableResult
    func value() async throws -> ControlMessage {
        let reply: ControlMessage = try await withCheckedThrowingContinuation { continuation in
            let ready: Result<ControlMessage, ForkError>? = state.withLock { state in
                switch state {
                case .resolved(let result): return result
                case .waiting: state = .waiting(continuation); return nil
                }
            }
            if let ready { continuation.resume(with: ready) }
        }
        if case .error(let code, let text) = reply {
            throw ForkError(ForkError.Kind(rawValue: code) ?? .protocolViolation, text)
        }
        return reply
    }
}
