import ForkKit
import MessagePack

#if canImport(Glibc)
import Glibc
#endif

/// Requests from the worker: the owner serves its ``RPCHandlers``, each request in a task of its own.
extension RPCClient {
    /// Serves `function` to the worker from now on (see ``RPCHandlers``); a request that arrived
    /// before has had its `NoSuchMethod` answer. Handlers given to `start` are there from the first
    /// message.
    public func register<each Input, Output>(
        _ function: RPCFunction<repeat each Input, Output>, _ body: @escaping @Sendable (repeat each Input) async throws -> Output
    ) {
        state.withLock { $0.handlers.register(function, body) }
    }

    /// Serves `method` with untyped parameters and result from now on.
    public func register(method: String, _ body: @escaping @Sendable ([MessagePackValue]) async throws -> MessagePackValue) {
        state.withLock { $0.handlers.register(method: method, body) }
    }

    /// Runs the handler of request `id` in a task of its own (never on the monitor thread, which
    /// reads every connection) and answers it: with the result, the error it threw, or
    /// `NoSuchMethod` when nothing serves `method`.
    func serve(request id: UInt32, method: String, params: [MessagePackValue]) {
        let handler = state.withLock { $0.handlers.table[method] }
        guard let handler else {
            let served = state.withLock { $0.handlers.names }.joined(separator: ", ")
            let reason = served.isEmpty ? "it serves no functions (RPCHandlers)" : "it serves: \(served)"
            return answer(id, .failure(RPCArguments.Failure(
                type: "NoSuchMethod", message: "no function named '\(method)' in the owner (pid \(getpid())); \(reason)")))
        }
        // Held under the lock as it is made, so that even a handler that ends at once finds itself held.
        state.withLock { state in
            guard !state.table.ended else { return }
            state.serving[id] = Task { [weak self] in
                let outcome: Result<MessagePackValue, any Error>
                do { outcome = .success(try await handler(params)) } catch { outcome = .failure(error) }
                guard let self else { return }
                // Cancelled by the worker's `$cancel` (or the end of the connection): it stopped waiting.
                guard self.state.withLock({ $0.serving.removeValue(forKey: id) }) != nil else { return }
                self.answer(id, outcome)
            }
        }
    }

    /// The worker stopped waiting for request `id` (`$cancel`): its handler's task is cancelled,
    /// and it is answered no more.
    func cancelServing(_ id: UInt32) {
        state.withLock { $0.serving.removeValue(forKey: id) }?.cancel()
    }

    /// Cancels every handler still running: the connection is over.
    func cancelServingAll() {
        let tasks = state.withLock { state in
            defer { state.serving = [:] }
            return Array(state.serving.values)
        }
        for task in tasks { task.cancel() }
    }

    /// Sends the response to the worker's request `id`. A result over the size limit is answered
    /// with `MessageTooLarge` instead, as a worker answers the owner's.
    private func answer(_ id: UInt32, _ outcome: Result<MessagePackValue, any Error>) {
        let response: RPCMessage = switch outcome {
        case .success(let result): .response(id: id, error: .nil, result: result)
        case .failure(let error): .response(id: id, error: RPCArguments.errorValue(error), result: .nil)
        }
        guard let failure = send(response), failure.kind == .messageTooLarge else { return }
        send(.response(id: id, error: RPCArguments.errorValue(RPCArguments.Failure(type: "MessageTooLarge", message: failure.message)), result: .nil))
    }
}
