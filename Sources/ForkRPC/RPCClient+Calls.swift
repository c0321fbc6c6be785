import ForkKit
import Logging
import MessagePack
import Synchronization
import SystemPackage

#if canImport(Glibc)
import Glibc
#endif

/// Calls: each is held in the call table from its send to its answer, and decoded by its caller.
extension RPCClient {
    // MARK: - Calls

    /// Calls `function` with `input` (its arguments, as many as it takes) and waits for its result.
    ///
    /// - Parameters:
    ///   - function: the typed handle of a function the worker registered.
    ///   - input: its arguments: `call(square, 3)`, `call(clamp, x, 0, 1)`, `call(uptime)`.
    ///   - timeout: how long to wait before giving up with ``RPCError/Kind/timeout``; the
    ///     worker is then sent `$cancel`. Task cancellation does the same with `CancellationError`.
    public func call<each Input, Output>(
        _ function: RPCFunction<repeat each Input, Output>, _ input: repeat each Input, timeout: Duration? = nil
    ) async throws -> Output {
        let response = try await exchange(method: function.name, naming: function.name, timeout: timeout) { writer, direct in
            writer.writeArrayHeader(count: RPCArguments.count(repeat (each Input).self))
            for argument in repeat each input {
                try self.encode(argument, of: function.name, into: &writer, directValues: &direct)
            }
        }
        return try result(of: response, function: function.name) { try self.decode(Output.self, of: function.name, from: $0) }
    }

    /// Calls `function` once for each of `inputs` in one round trip (the `$batch` extension), and
    /// returns each call's outcome in order: a pool's map sends its small items this way.
    ///
    /// Throws only when the batch as a whole fails (the worker died, the timeout passed, the
    /// function does not exist); an input whose call threw has its ``RPCError`` in its place.
    public func callBatch<Input, Output>(
        _ function: RPCFunction<Input, Output>, _ inputs: [Input], timeout: Duration? = nil
    ) async throws -> [Result<Output, RPCError>] {
        try await batch(function, inputs, timeout: timeout) { results, count in
            var outcomes: [Result<Output, RPCError>] = []
            outcomes.reserveCapacity(count)
            for index in 0..<count {
                do throws(RPCError) {
                    outcomes.append(.success(try self.batchItem(results[index], at: index, of: function)))
                } catch {
                    outcomes.append(.failure(error))
                }
            }
            return outcomes
        }
    }

    /// Like ``callBatch(_:_:timeout:)``, but the results as plain values, up to the first call that
    /// failed, and that call's error. (A pool's map wants exactly this, and a `Result` per item
    /// costs a generic metadata lookup per item here.)
    ///
    /// `oneCallAtATime`: the worker runs one call at a time (the synchronous backend), so the
    /// timeout counts from when it has answered the calls sent before this one, not from the send.
    package func callBatchValues<Input, Output>(
        _ function: RPCFunction<Input, Output>, _ inputs: [Input], timeout: Duration? = nil, oneCallAtATime: Bool = false
    ) async throws -> (outputs: [Output], firstFailure: RPCError?) {
        try await batch(function, inputs, timeout: timeout, oneCallAtATime: oneCallAtATime) { results, count in
            var outputs: [Output] = []
            outputs.reserveCapacity(count)
            for index in 0..<count {
                do throws(RPCError) {
                    outputs.append(try self.batchItem(results[index], at: index, of: function))
                } catch {
                    return (outputs, error)
                }
            }
            return (outputs, nil)
        }
    }

    /// Sends `inputs` as one `$batch` request; `collect` reads the `count` `[error, result]` pairs.
    func batch<Input, Output, Collected>(
        _ function: RPCFunction<Input, Output>, _ inputs: [Input], timeout: Duration?, oneCallAtATime: Bool = false,
        collect: (MessagePackObject, Int) throws -> Collected
    ) async throws -> Collected {
        let name = function.name
        let response = try await exchange(
            method: RPCArguments.batchMethod, naming: name, timeout: timeout, oneCallAtATime: oneCallAtATime
        ) { writer, direct in
            writer.writeArrayHeader(count: 2)
            writer.write(.string(name))
            writer.writeArrayHeader(count: inputs.count)
            // By index: an array's iterator costs more than the encoding of a small input here.
            for index in inputs.indices {
                writer.writeArrayHeader(count: 1)
                try self.encode(inputs[index], of: name, into: &writer, directValues: &direct)
            }
        }
        return try result(of: response, function: name) { results in
            guard let count = results.count, count == inputs.count else {
                throw RPCError(.protocolViolation, "answered a batch of \(inputs.count) with \(results.typeName)", function: name, pid: self.pid)
            }
            return try collect(results, count)
        }
    }

    /// One `[error, result]` pair of a batch's response: the result, or the error it carries,
    /// which names the item's position `index` in the batch.
    func batchItem<Input, Output>(_ pair: MessagePackObject, at index: Int, of function: RPCFunction<Input, Output>) throws(RPCError) -> Output {
        do throws(RPCError) {
            guard pair.count == 2 else {
                throw RPCError(.protocolViolation, "answered a batch item with \(pair.typeName), not [error, result]", function: function.name, pid: pid)
            }
            guard pair[0].isNil else {
                throw RPCError(answer: (try? pair[0].value()) ?? .nil, function: function.name, pid: pid)
            }
            return try decode(Output.self, of: function.name, from: pair[1])
        } catch {
            var failure = error
            failure.itemIndex = index
            throw failure
        }
    }

    /// Calls `method` with untyped parameters (for peers outside ForkKit).
    public func call(method: String, params: [MessagePackValue], timeout: Duration? = nil) async throws -> MessagePackValue {
        let response = try await exchange(method: method, naming: method, timeout: timeout) { writer, direct in
            let params = MessagePackValue.array(params)
            writer.write(params)
            direct.append(params)
        }
        return try result(of: response, function: method) { result in
            do {
                return try result.value()
            } catch {
                throw RPCError(.protocolViolation, "sent a result that is not MessagePack (\(error))", function: method, pid: self.pid)
            }
        }
    }

    func encode<Input: Encodable>(
        _ input: Input, of function: String, into writer: inout MessagePackWriter, directValues: inout [MessagePackValue]
    ) throws {
        do {
            try MessagePackEncoder().encode(input, into: &writer, directValues: &directValues)
        } catch {
            throw RPCError(.codingFailed, "cannot encode the argument as \(Input.self): \(error)", function: function, pid: pid)
        }
    }

    func decode<Output: Decodable>(_ type: Output.Type, of function: String, from result: MessagePackObject) throws(RPCError) -> Output {
        do {
            return try result.decode(type)
        } catch {
            throw RPCError(.codingFailed, "returned a result that is not \(Output.self): \(error)", function: function, pid: pid)
        }
    }

    /// Reads a response `[1, msgid, error, result]` (and releases it): `read` decodes the result,
    /// or the error is thrown as an ``RPCError``.
    func result<Result>(
        of response: MessagePackMessage, function: String, _ read: (MessagePackObject) throws -> Result
    ) throws -> Result {
        defer { response.release() }
        return try response.withObject { message in
            guard message[2].isNil else {
                let error: MessagePackValue
                do {
                    error = try message[2].value()
                } catch {
                    throw RPCError(.protocolViolation, "sent an error that is not MessagePack (\(error))", function: function, pid: pid)
                }
                let failure = RPCError(answer: error, function: function, pid: pid)
                throw failure.registeredError ?? failure
            }
            return try read(message[3])
        }
    }

    /// Sends request `method`, whose params `writeParams` appends (noting the values written in
    /// their own form, where descriptors may be), and waits for the response, which the caller
    /// decodes (and releases). Errors name the call `function` (a batch is named after the function
    /// it runs). With `oneCallAtATime`, the timeout counts from the worker's last answer when that
    /// came after the send.
    func exchange(
        method: String, naming function: String, timeout: Duration?, oneCallAtATime: Bool = false,
        writeParams: (inout MessagePackWriter, inout [MessagePackValue]) throws -> Void
    ) async throws -> MessagePackMessage {
        let id = nextID.wrappingAdd(1, ordering: .relaxed).oldValue
        // Read here, in the caller's task (a task-local read; more only when the caller is traced).
        let trace = CallTrace.current()
        // Started once the call is held, so that even a timeout of zero finds it to give up on.
        var timer: Task<Void, any Error>?
        defer { timer?.cancel() }
        return try await withTaskCancellationHandler {
            try await withUnsafeThrowingContinuation { (caller: Caller) in
                let refusal = state.withLock { state in
                    let refusal = state.table.admit(id, function: function, caller: caller, cancelled: Task.isCancelled)
                    if refusal == nil, let trace { state.traces[id] = trace }
                    return refusal
                }
                // The worker has gone: the call waits (unsent) for the error that says how it ended.
                if case .heldUntilEnd = refusal { return }
                if let refusal {
                    return caller.resume(throwing: error(for: refusal, function: function))
                }
                timer = timeout.map { limit in startTimer(for: id, function: function, limit: limit, oneCallAtATime: oneCallAtATime) }
                let sent = send(until: timeout.map { ContinuousClock.now + $0 }, cancellable: true) { writer, direct in
                    // `$context` goes first, in the same write: the worker has it when the request comes.
                    trace?.writeContext(for: id, into: &writer)
                    writer.writeArrayHeader(count: 4)
                    writer.write(0)
                    writer.write(Int(id))
                    writer.write(.string(method))
                    try writeParams(&writer, &direct)
                }
                // The worker has gone: the call stays held, and the connection's end fails it with
                // the worker's exit status (SIGKILL, say), which says more than a broken pipe.
                guard var failure = sent.failure, !sent.peerGone else { return }
                if failure.function == nil { failure.function = function }
                // A close() waiting for the calls in flight may have been waiting for this one.
                let withdrawal = state.withLock { state in
                    if trace != nil { state.traces[id] = nil }
                    return state.table.withdraw(id)
                }
                withdrawal.call?.caller.resume(throwing: failure)
                for watcher in withdrawal.drained + withdrawal.answered { watcher.resume(returning: true) }
            }
        } onCancel: {
            abandon(id, with: CancellationError())
        }
    }

    func error(for refusal: CallTable<Caller, Watcher>.Refusal, function: String) -> any Error {
        switch refusal {
        case .closing: RPCError(.closed, "the client was closed; it takes no new calls", function: function, pid: pid)
        case .ended(let failure): failure
        case .cancelled: CancellationError()
        case .heldUntilEnd: RPCError(.workerDied, "the worker has gone", function: function, pid: pid)
        }
    }

    /// Gives up on call `id` once `limit` has passed.
    func startTimer(for id: UInt32, function: String, limit: Duration, oneCallAtATime: Bool) -> Task<Void, any Error> {
        Task { [weak self] in
            let sent = ContinuousClock.now
            var deadline = sent + limit
            while true {
                try await Task.sleep(until: deadline, clock: .continuous)
                // A worker that runs one call at a time starts this one once it has answered the
                // calls before it: the time it waited for them does not count.
                guard oneCallAtATime, let answer = self?.state.withLock({ $0.table.lastAnswer }), answer > sent,
                      answer + limit > deadline else { break }
                deadline = answer + limit
            }
            self?.abandon(id, with: RPCError(.timeout, "did not answer within \(limit); the worker was asked to cancel it", function: function, pid: self?.pid))
        }
    }

    /// Gives up on call `id` (timeout or cancellation): it fails now, and the worker is told. With a
    /// ``cancellationGracePeriod``, a worker that does not answer it in time is killed.
    func abandon(_ id: UInt32, with error: any Error) {
        let (abandonment, grace) = state.withLock { state in (state.table.abandon(id), state.cancellationGracePeriod) }
        guard let abandonment else { return }
        abandonment.call.caller.resume(throwing: error)
        for watcher in abandonment.drained { watcher.resume(returning: true) }
        guard abandonment.tellWorker else { return }
        send(.cancel(id))
        if let grace {
            Task { [weak self] in
                guard let self, await !self.abandonedCallsAnswered(within: grace) else { return }
                self.stopUnresponsiveWorker(because: "it did not answer a call it was told to cancel within \(grace)")
            }
        }
    }

    /// Waits until the worker has answered every call given up on so far (after a timeout or a
    /// cancelled task it was sent `$cancel` for each), or its connection has ended. Returns false
    /// when `limit` passed first: the worker is not answering (stopped, deadlocked, or in a
    /// function that ignores cancellation).
    package func abandonedCallsAnswered(within limit: Duration) async -> Bool {
        await withCheckedContinuation { (watcher: Watcher) in
            guard let key = state.withLock({ $0.table.watchAbandonedCalls(watcher) }) else { return watcher.resume(returning: true) }
            // The caller holds this client while it waits, so the timer finds it.
            Task { [weak self] in
                try? await Task.sleep(for: limit)
                self?.state.withLock { $0.table.stopWatching(key) }?.resume(returning: false)
            }
        }
    }
}
