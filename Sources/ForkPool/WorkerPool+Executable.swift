import ForkKit

extension WorkerPool {
    /// Makes a pool whose workers are forked from a new template started from `executable` (a
    /// program whose `main` calls `ForkTemplate.bootstrap` first), for example an executable product
    /// of your package in its tests, where the running program is the test runner:
    ///
    /// ```swift
    /// let pool = try await WorkerPool(executable: try ForkTemplate.executable(named: "my-tool"), running: "math")
    /// ```
    ///
    /// The pool owns the template: it ends when the pool has shut down (``shutdown()``,
    /// ``terminate()``, or the end of ``run()`` in a `ServiceGroup`), or when the pool is dropped.
    public convenience init(
        executable: String, running workerFunction: String, configuration: Configuration = Configuration()
    ) async throws {
        try await self.init(
            template: try await ForkTemplate.spawn(executable: executable), owned: true, running: workerFunction,
            configuration: configuration)
    }
}
