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
    return try await run(body, endingAfterwards: pool)
}

/// Makes a pool whose workers are forked from a new template started from `executable`, runs `body`
/// with it, and always ends the pool (and the template) before returning. In the tests of a package,
/// where the running program is the test runner, this is how pool code is tested:
///
/// ```swift
/// @Test func primes() async throws {
///     let total = try await withWorkerPool(executable: try ForkTemplate.executable(named: "my-tool"), running: "primes") { pool in
///         try await pool.map(countPrimes, ranges).reduce(0, +)
///     }
///     #expect(total == 664_579)
/// }
/// ```
public func withWorkerPool<Result>(
    executable: String, running workerFunction: String, configuration: WorkerPool.Configuration = WorkerPool.Configuration(),
    isolation: isolated (any Actor)? = #isolation,
    _ body: (WorkerPool) async throws -> Result
) async throws -> Result {
    let pool = try await WorkerPool(executable: executable, running: workerFunction, configuration: configuration)
    return try await run(body, endingAfterwards: pool)
}

/// Runs `body` with `pool`, then shuts the pool down: gracefully when `body` returns, at once when it throws.
private func run<Result>(
    _ body: (WorkerPool) async throws -> Result, endingAfterwards pool: WorkerPool,
    isolation: isolated (any Actor)? = #isolation
) async throws -> Result {
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
