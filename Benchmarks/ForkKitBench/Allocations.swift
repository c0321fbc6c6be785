import AllocationCounter

/// Heap allocations of this process (every thread), counted by the AllocationCounter target.
enum Allocations {
    /// Allocations per repetition of `body`, over `repetitions` (after one warm-up repetition).
    static func per(_ repetitions: Int, _ body: (Int) async throws -> Void) async throws -> Double {
        try await body(0)
        let before = forkkit_allocation_count()
        for index in 0..<repetitions { try await body(index) }
        return Double(forkkit_allocation_count() - before) / Double(repetitions)
    }

    /// Allocations while `body` runs.
    static func during(_ body: () async throws -> Void) async throws -> Double {
        let before = forkkit_allocation_count()
        try await body()
        return Double(forkkit_allocation_count() - before)
    }
}
