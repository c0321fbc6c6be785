import Synchronization

/// How far a running map has come, for a progress bar: read it from any task while the map runs.
///
/// ```swift
/// let progress = MapProgress()
/// async let squares = pool.map(square, 1...100_000, progress: progress)
/// while !progress.isFinished {
///     print("\(progress.completed) of \(progress.total.map(String.init) ?? "?")")
///     try await Task.sleep(for: .milliseconds(100))
/// }
/// ```
public final class MapProgress: Sendable {
    private let completedCount = Atomic<Int>(0)
    private let totalCount = Atomic<Int>(-1)
    private let finished = Atomic<Bool>(false)

    /// A progress with nothing done and no total yet.
    public init() {}

    /// Items whose results have arrived.
    public var completed: Int { completedCount.load(ordering: .relaxed) }

    /// How many items the map has: known from the start for a collection, and once the input is
    /// used up for any other sequence.
    public var total: Int? {
        let total = totalCount.load(ordering: .relaxed)
        return total < 0 ? nil : total
    }

    /// `completed / total`, when the total is known.
    public var fractionCompleted: Double? {
        guard let total else { return nil }
        return total == 0 ? 1 : Double(completed) / Double(total)
    }

    /// True once the map has ended, with its results or with an error.
    public var isFinished: Bool { finished.load(ordering: .acquiring) }

    func add(_ count: Int) { completedCount.add(count, ordering: .relaxed) }
    func setTotal(_ total: Int) { totalCount.store(total, ordering: .relaxed) }
    func finish() { finished.store(true, ordering: .releasing) }
}
