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
    /// - Throws: the first error of any item (an `RPCError` naming the function and worker); the
    ///   rest of the map is then cancelled.
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
    /// Ending the iteration early (or cancelling its task) cancels the remaining work.
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
    @usableFromInline
    func runChunks<Input, Output>(
        _ function: RPCFunction<Input, Output>, knownCount: Int, chunkSize: Int?, retries: Int?, progress: MapProgress?,
        nextChunk: (_ size: Int) -> [Input], deliver: (_ start: Int, _ outputs: [Output]) throws -> Void
    ) async throws {
        defer { progress?.finish() }
        let workers = maximumWorkers
        let parallelism = max(1, workers * configuration.load)
        var sizer = ChunkSizer(fixedSize: chunkSize, parallelism: workers)
        if knownCount > 0 { progress?.setTotal(knownCount) }
        var taken = 0
        var exhausted = false

        try await withThrowingTaskGroup(of: (start: Int, outputs: [Output], duration: Duration).self) { group in
            var running = 0
            func feed() {
                while running < parallelism, !exhausted {
                    let remaining = taken < knownCount ? knownCount - taken : nil
                    let size = sizer.nextSize(remaining: remaining)
                    let chunk = nextChunk(size)
                    if chunk.count < size {
                        exhausted = true
                        progress?.setTotal(taken + chunk.count)
                    }
                    guard !chunk.isEmpty else { return }
                    let start = taken
                    taken += chunk.count
                    running += 1
                    group.addTask { [chunk] in
                        let timeout = self.configuration.callTimeout.map { $0 * chunk.count }
                        // Timed from the request, not from the wait for a worker.
                        let (results, duration) = try await self.perform(retries: retries, timeout: timeout) { client, timeout in
                            let begin = ContinuousClock.now
                            let results = try await client.callBatchValues(function, chunk, timeout: timeout)
                            return (results, ContinuousClock.now - begin)
                        }
                        if let failure = results.firstFailure { throw failure }
                        return (start, results.outputs, duration)
                    }
                }
            }
            feed()
            while let (start, outputs, duration) = try await group.next() {
                running -= 1
                sizer.record(items: outputs.count, duration: duration)
                progress?.add(outputs.count)
                try deliver(start, outputs)
                feed()
            }
        }
    }
}
