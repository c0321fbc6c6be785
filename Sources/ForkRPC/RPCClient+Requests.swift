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
        // Held under the lock as it is made, so that even a handler that ends at once finds itself held.
        state.withLock { state in
            guard !state.table.ended else { return }
            let handler = state.handlers.table[method]
            let served = handler == nil ? state.handlers.names : []
            state.serving[id] = Task { [weak self] in
                let outcome: Result<MessagePackValue, any Error>
                do {
                    guard let handler else {
                        throw RPCArguments.noSuchMethod(method, known: served, in: "the owner (pid \(getpid()), RPCHandlers)")
                    }
                    // Descriptors travel from the owner to its workers only (see PassedDescriptor).
                    guard !params.contains(where: { $0.containsDescriptor }) else {
                        throw RPCArguments.Failure(type: "InvalidArguments", message: "descriptors cannot be passed to the owner; only the owner passes them")
                    }
                    outcome = .success(try await handler(params))
                } catch {
                    outcome = .failure(error)
                }
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

    /// Sends the response to the worker's request `id`. A result that cannot go as it is (over the
    /// size limit, holding a descriptor, not encodable) is answered with an error instead: the
    /// worker waits for an answer, so one is always sent while the connection lives.
    private func answer(_ id: UInt32, _ outcome: Result<MessagePackValue, any Error>) {
        var response: RPCMessage = switch outcome {
        case .success(let result) where result.containsDescriptor:
            .response(id: id, error: RPCArguments.errorValue(RPCArguments.Failure(
                type: "InvalidResult", message: "results cannot carry descriptors; only the owner's requests can")), result: .nil)
        case .success(let result): .response(id: id, error: .nil, result: result)
        case .failure(let error): .response(id: id, error: RPCArguments.errorValue(error), result: .nil)
        }
        // The worker is reading (it waits for this): room comes, for a large answer too, unless it is stopped.
        let patience = max(state.withLock { $0.cancellationGracePeriod } ?? .seconds(1), .seconds(30))
        for _ in 0..<2 {
            guard let failure = send(until: .now + patience, cancellable: false, { writer, _ in writer.write(response.value) }).failure,
                  failure.kind == .messageTooLarge || failure.kind == .codingFailed else { return }
            // Nothing went: the error goes in its place.
            response = .response(id: id, error: [.string(failure.kind == .messageTooLarge ? "MessageTooLarge" : "InvalidResult"), .string(failure.message)], result: .nil)
        }
    }
}
