import ForkKit

/// Makes a pool, runs `body` with it, and always ends the pool before returning: gracefully when
/// `body` returns (calls it made finish first), at once when it throws. No worker outlives the
/// call, whatever happens in `body`.
///
/// ```swift
/// let total = try await withWorkerPool(running: "primes") { pool in
///     try await pool.map(countPrimes, ranges).reduce(0, +)
/// }
/// ```
///
/// `body` runs in the caller's isolation (the main actor, say), so it may use what the caller can.
public func withWorkerPool<Result>(
    template: ForkTemplate? = nil, running workerFunction: String, configuration: WorkerPool.Configuration = WorkerPool.Configuration(),
    isolation: isolated (any Actor)? = #isolation,
    _ body: (WorkerPool) async throws -> Result
) async throws -> Result {
    let pool = if let template {
        try await WorkerPool(template: template, running: workerFunction, configuration: configuration)
    } else {
        try await WorkerPool(running: workerFunction, configuration: configuration)
    }
    let result: Result
    do {
        result = try await body(pool)
    } catch {
        await pool.terminate()
        throw error
    }
    await pool.shutdown()
    return result
}
