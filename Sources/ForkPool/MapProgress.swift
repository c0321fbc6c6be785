import Synchronization

/// How far a running map has come, for a progress bar: read it as a stream of updates, or poll it.
///
/// It is an `AsyncSequence` of ``Update``s, so a progress bar is a `for await`; the sequence ends
/// after the update that says the map has finished:
///
/// ```swift
/// let progress = MapProgress()
/// async let squares = pool.map(square, 1...100_000, progress: progress)
/// for await update in progress {
///     print("\(update.completed) of \(update.total.map(String.init) ?? "?")")
/// }
/// print(try await squares.count)
/// ```
///
/// Updates are not queued: a reader that is slower than the map skips to the latest state, so a
/// stream never falls behind or grows. Several tasks may read the same progress, each seeing every
/// state it has not seen yet. ``completed``, ``total`` and ``isFinished`` read the same state
/// without waiting.
///
/// Work that is not a pool map (a baseline on threads, say) can report through the same type with
/// ``advance(by:)`` and ``finish()``, so one progress bar serves both.
///
/// A progress follows one map: give each map a new one. A map given a progress that another map
/// has had fails at once, saying so. The stream ends when its map ends; a progress that no map is
/// given (and that nobody calls ``finish()`` on) never ends.
public final class MapProgress: Sendable {
    /// One state of a map: what a progress bar draws.
    public struct Update: Sendable, Hashable {
        /// Items whose results have arrived.
        public let completed: Int
        /// How many items the map has, once known.
        public let total: Int?
        /// True in the last update: the map has ended, with its results or with an error.
        public let isFinished: Bool

        /// A state with these values (what a test compares with).
        public init(completed: Int, total: Int?, isFinished: Bool) {
            self.completed = completed
            self.total = total
            self.isFinished = isFinished
        }

        /// `completed / total`, when the total is known.
        public var fractionCompleted: Double? {
            guard let total else { return nil }
            return total == 0 ? 1 : Double(completed) / Double(total)
        }
    }

    private let completedCount = Atomic<Int>(0)
    private let totalCount = Atomic<Int>(-1)
    private let finished = Atomic<Bool>(false)
    /// Whether a map has taken this progress (each progress follows one map).
    private let taken = Atomic<Bool>(false)
    /// Counts changes (one per chunk of results, not per item); stream readers wait on it.
    fileprivate let changes = ChangeSignal()

    /// A progress with nothing done and no total yet.
    public init() {}

    /// A progress of `total` items, for work reported with ``advance(by:)``.
    public convenience init(total: Int) {
        self.init()
        setTotal(total)
    }

    /// Items whose results have arrived.
    public var completed: Int { completedCount.load(ordering: .relaxed) }

    /// How many items the map has: known from the start for a collection, and once the input is
    /// used up for any other sequence.
    public var total: Int? {
        let total = totalCount.load(ordering: .relaxed)
        return total < 0 ? nil : total
    }

    /// `completed / total`, when the total is known.
    public var fractionCompleted: Double? { current.fractionCompleted }

    /// True once the map has ended, with its results or with an error.
    public var isFinished: Bool { finished.load(ordering: .acquiring) }

    /// The state now, as one ``Update``.
    public var current: Update {
        // `finished` first: once it is seen, the counts it follows are final.
        let isFinished = isFinished
        return Update(completed: completed, total: total, isFinished: isFinished)
    }

    /// Records `count` more items done, for work that is not a pool map (a map records its own).
    public func advance(by count: Int = 1) {
        completedCount.add(count, ordering: .relaxed)
        changes.signal()
    }

    /// Records that the work has ended, which ends every stream of updates (a map does this itself).
    public func finish() {
        finished.store(true, ordering: .releasing)
        changes.signal()
    }

    /// Takes this progress for a map; false when another map has taken it already.
    func takeForMap() -> Bool {
        taken.compareExchange(expected: false, desired: true, ordering: .relaxed).exchanged
    }

    func setTotal(_ total: Int) {
        totalCount.store(total, ordering: .relaxed)
        changes.signal()
    }
}

extension MapProgress: AsyncSequence {
    /// Reads the updates of one ``MapProgress``; see ``MapProgress``.
    public struct Iterator: AsyncIteratorProtocol {
        /// Progress streams never fail.
        public typealias Failure = Never

        private let progress: MapProgress
        /// The version last returned: 0, the state before anything happened, is never returned,
        /// so that the first update has the map's total when it is known.
        private var seen = 0
        private var isDone = false

        fileprivate init(progress: MapProgress) {
            self.progress = progress
        }

        /// The next state not seen yet (the current one, the first time, once the map has begun),
        /// waiting for a change when there is none; `nil` after the finished state has been
        /// returned, or when the task is cancelled.
        public mutating func next() async -> Update? {
            while !isDone {
                let version = progress.changes.count
                if version != seen {
                    seen = version
                    let update = progress.current
                    isDone = update.isFinished
                    return update
                }
                await progress.changes.wait(after: seen)
                if Task.isCancelled { return nil }
            }
            return nil
        }
    }

    /// A stream of this progress's updates, starting with its current state once its map has begun.
    public func makeAsyncIterator() -> Iterator { Iterator(progress: self) }
}
