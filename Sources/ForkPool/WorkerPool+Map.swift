import DequeModule
import ForkRPC

/// One result of ``WorkerPool/results(of:_:order:chunkSize:retries:progress:)``: which input it
/// belongs to, and the function's output for it.
public struct MapResult<Output: Sendable>: Sendable {
    /// The position of the input in the input sequence, from 0.
    public let index: Int
    /// The function's result for that input.
    public let output: Output

    @usableFromInline
    init(index: Int, output: Output) {
        self.index = index
        self.output = output
    }
}

/// The order in which a streaming map yields its results.
public enum MapOrder: Sendable, Hashable {
    /// In the order of the inputs (a result waits for those before it).
    case input
    /// As they arrive.
    case completion
}

extension WorkerPool {
    /// Calls `function` on every input across the pool's workers and returns the results in input
    /// order (Python's `Pool.map`).
    ///
    /// Small items travel in chunks, one round trip each, sized from measured call times (or
    /// `chunkSize`); near the end chunks shrink, so that no worker is left far behind. Inputs are
    /// read from the sequence only as workers have room, so a long lazy sequence is not held in
    /// memory at once (the results are).
    ///
    /// ```swift
    /// let progress = MapProgress()
    /// let squares = try await pool.map(square, 1...1_000_000, progress: progress)
    /// ```
    ///
    /// A map with more work than one worker can take starts the workers it needs at once, up to
    /// ``Configuration/maximumWorkers`` (the start delay paces bursts of separate calls). With a
    /// ``Configuration/callTimeout``, a worker that stops answering is noticed after about that
    /// long: it is killed and replaced, and its items run again.
    ///
    /// - Throws: the first error of any item (an `RPCError` naming the function and worker). No
    ///   new items are sent after it; the chunks already running are given
    ///   ``Configuration/cancellationGracePeriod`` to finish (their results are dropped), so that
    ///   no worker is interrupted for another item's error; any still running then are cancelled.
    @inlinable  // specialized where it is called: the per-item loops below then cost nanoseconds
    public func map<Inputs: Sequence, Input, Output>(
        _ function: RPCFunction<Input, Output>, _ inputs: Inputs, chunkSize: Int? = nil, retries: Int? = nil,
        progress: MapProgress? = nil
    ) async throws -> [Output] where Inputs.Element == Input {
        var iterator = inputs.makeIterator()
        var results: [Output?] = []
        results.reserveCapacity(inputs.underestimatedCount)
        try await runChunks(
            function, knownCount: inputs.underestimatedCount, chunkSize: chunkSize, retries: retries, progress: progress,
            nextChunk: { size in Self.take(size, from: &iterator) },
            deliver: { start, outputs in
                if results.count < start + outputs.count {
                    results.append(contentsOf: repeatElement(nil, count: start + outputs.count - results.count))
                }
                for offset in outputs.indices { results[start + offset] = outputs[offset] }
            })
        return results.map { $0! }
    }

    /// Up to `size` inputs from `iterator`.
    @inlinable
    static func take<Iterator: IteratorProtocol>(_ size: Int, from iterator: inout Iterator) -> [Iterator.Element] {
        var chunk: [Iterator.Element] = []
        chunk.reserveCapacity(size)
        while chunk.count < size, let input = iterator.next() { chunk.append(input) }
        return chunk
    }

    /// Like ``map(_:_:chunkSize:retries:progress:)``, but yields each result as soon as `order`
    /// allows, so that a consumer can act on early results while later ones are computed. Results
    /// arrive a chunk at a time (see ``MapResults``).
    ///
    /// ```swift
    /// for try await result in pool.results(of: render, rows, order: .completion) {
    ///     image.replaceRow(result.index, with: result.output)
    /// }
    /// ```
    ///
    /// Ending the iteration early (or cancelling its task) cancels the remaining work. An item's
    /// error ends the sequence with that error, as it ends ``map(_:_:chunkSize:retries:progress:)``.
    @inlinable  // as map: the per-item loops specialized where it is called
    public func results<Inputs: Sequence & Sendable, Input, Output>(
        of function: RPCFunction<Input, Output>, _ inputs: Inputs, order: MapOrder = .input, chunkSize: Int? = nil,
        retries: Int? = nil, progress: MapProgress? = nil
    ) -> MapResults<Output> where Inputs.Element == Input {
        let (stream, continuation) = AsyncThrowingStream.makeStream(of: [MapResult<Output>].self)
        let task = Task {
            var early: [Int: [Output]] = [:]
            var nextIndex = 0
            var iterator = inputs.makeIterator()
            do {
                try await runChunks(
                    function, knownCount: inputs.underestimatedCount, chunkSize: chunkSize, retries: retries, progress: progress,
                    nextChunk: { size in Self.take(size, from: &iterator) }
                ) { start, outputs in
                    switch order {
                    case .completion:
                        continuation.yield(outputs.indices.map { MapResult(index: start + $0, output: outputs[$0]) })
                    case .input:
                        early[start] = outputs
                        while let ready = early.removeValue(forKey: nextIndex) {
                            continuation.yield(ready.indices.map { MapResult(index: nextIndex + $0, output: ready[$0]) })
                            nextIndex += ready.count
                        }
                    }
                }
                continuation.finish()
            } catch {
                continuation.finish(throwing: error)
            }
        }
        continuation.onTermination = { _ in task.cancel() }
        return MapResults(chunks: stream)
    }

    /// Runs `function` over the inputs that `nextChunk` hands out (fewer than asked: the last),
    /// at most as many chunks at once as the workers can take, and hands each chunk's outputs to
    /// `deliver` (on the calling task) as it completes.
    ///
    /// The first failure stops the feeding; the chunks already running get the grace period to
    /// finish (their outputs are dropped, their workers are not interrupted; what still runs then is
    /// cancelled), then it is thrown. A chunk of several items that overruns the call timeout runs
    /// again one item per call (see ``Configuration/callTimeout``).
    @usableFromInline
    func runChunks<Input, Output>(
        _ function: RPCFunction<Input, Output>, knownCount: Int, chunkSize: Int?, retries: Int?, progress: MapProgress?,
        nextChunk: (_ size: Int) -> [Input], deliver: (_ start: Int, _ outputs: [Output]) throws -> Void
    ) async throws {
        if let progress, !progress.takeForMap() { throw WorkerPoolError.progressAlreadyTaken }
        defer { progress?.finish() }
        let workers = maximumWorkers
        let parallelism = max(1, workers * configuration.load)
        var sizer = ChunkSizer(fixedSize: chunkSize, parallelism: workers)
        if knownCount > 0 { progress?.setTotal(knownCount) }
        var taken = 0
        var exhausted = false
        /// Items of chunks that overran the call timeout, with their indices, to run one per call.
        var singles: Deque<(index: Int, input: Input)> = []
        var firstFailure: (any Error)?

        await withTaskGroup(of: ChunkOutcome<Input, Output>.self) { group in
            var running = 0  // chunks (not the grace timer)
            var graceTimerStarted = false
            func feed() {
                while running < parallelism, firstFailure == nil {
                    let start: Int
                    let chunk: [Input]
                    if let single = singles.popFirst() {
                        (start, chunk) = (single.index, [single.input])
                    } else {
                        guard !exhausted else { return }
                        let remaining = taken < knownCount ? knownCount - taken : nil
                        let size = sizer.nextSize(remaining: remaining)
                        chunk = nextChunk(size)
                        if chunk.count < size {
                            exhausted = true
                            progress?.setTotal(taken + chunk.count)
                        }
                        guard !chunk.isEmpty else { return }
                        start = taken
                        taken += chunk.count
                    }
                    running += 1
                    group.addTask { await self.runChunk(function, chunk, start: start, retries: retries) }
                }
            }
            feed()
            prepareForMap(calls: running)
            while let outcome = await group.next() {
                if case .gracePassed = outcome {} else { running -= 1 }
                switch outcome {
                case .completed(let start, let outputs, let duration) where firstFailure == nil:
                    sizer.record(items: outputs.count, duration: duration)
                    progress?.advance(by: outputs.count)
                    do {
                        try deliver(start, outputs)
                    } catch {
                        firstFailure = error
                    }
                case .completed:
                    break  // after a failure the map's outcome is decided: later outputs are dropped
                case .overran(let start, let inputs):
                    singles.append(contentsOf: inputs.indices.map { (start + $0, inputs[$0]) })
                case .failed(let error):
                    if firstFailure == nil { firstFailure = error }
                case .gracePassed:
                    // Chunks still running after a failure: they are cancelled (a synchronous
                    // worker is then replaced).
                    group.cancelAll()
                }
                if firstFailure != nil {
                    if running == 0 {
                        group.cancelAll()  // ends the grace timer
                    } else if !graceTimerStarted {
                        graceTimerStarted = true
                        group.addTask { [grace = configuration.cancellationGracePeriod] in
                            try? await Task.sleep(for: grace)
                            return .gracePassed
                        }
                    }
                }
                feed()
            }
        }
        if let firstFailure { throw firstFailure }
    }

    /// Runs one chunk on a worker (again elsewhere if its worker dies, with retries).
    private func runChunk<Input, Output>(
        _ function: RPCFunction<Input, Output>, _ chunk: [Input], start: Int, retries: Int?
    ) async -> ChunkOutcome<Input, Output> {
        // A synchronous worker runs its calls one at a time: a chunk's time starts when it can run.
        let oneCallAtATime = configuration.backend == .synchronous
        do {
            let (results, duration) = try await perform(
                retries: retries, timeout: configuration.callTimeout, retryingTimeouts: chunk.count == 1
            ) { client, timeout in
                // Timed from the request, not from the wait for a worker.
                let begin = ContinuousClock.now
                let results = try await client.callBatchValues(function, chunk, timeout: timeout, oneCallAtATime: oneCallAtATime)
                return (results, ContinuousClock.now - begin)
            }
            if var failure = results.firstFailure {
                // Named by its place among the map's inputs; a registered error type is thrown as itself.
                failure.itemIndex = start + (failure.itemIndex ?? 0)
                return .failed(failure.registeredError ?? failure)
            }
            return .completed(start: start, outputs: results.outputs, duration: duration)
        } catch let error as RPCError where error.kind == .timeout && chunk.count > 1 && !Task.isCancelled {
            // Perhaps one slow item, perhaps a stuck worker (killed or being killed by now): each
            // item runs again on its own, so that only an item that is itself too slow fails.
            configuration.logger?.notice("running the \(chunk.count) items of a chunk again one by one: \(error)")
            return .overran(start: start, inputs: chunk)
        } catch let error as RPCError where error.kind == .messageTooLarge && chunk.count > 1 {
            // The chunk's request or response as a whole is over the size limit, though its items
            // may each fit: they run one by one, and only an item too large by itself fails.
            configuration.logger?.notice("running the \(chunk.count) items of a chunk again one by one: \(error)")
            return .overran(start: start, inputs: chunk)
        } catch var error as RPCError where chunk.count == 1 && error.itemIndex == nil {
            // One item's call (run again alone, say) that timed out or lost its worker: it is that item's.
            error.itemIndex = start
            return .failed(error)
        } catch {
            return .failed(error)
        }
    }
}

/// How one chunk of a map ended.
enum ChunkOutcome<Input: Sendable, Output: Sendable>: Sendable {
    /// Its outputs, in order, and how long its round trip took.
    case completed(start: Int, outputs: [Output], duration: Duration)
    /// It overran the call timeout as a whole: its items are to run again one by one.
    case overran(start: Int, inputs: [Input])
    /// It failed: an item's error, or the chunk's when no retry was left.
    case failed(any Error)
    /// Not a chunk: the time that chunks still running after a failure are given has passed.
    case gracePassed
}
