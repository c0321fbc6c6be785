/// How many items a map sends in one call, from how long items have taken so far.
///
/// A round trip costs tens of microseconds here, so a trivial function sent one item at a time is
/// limited by round trips. Chunks aim at `targetDuration` each, so the round trip is a few percent
/// of the work; near the end they shrink to a fraction of what is left per worker, so uneven items
/// do not leave one worker far behind the others (guided self-scheduling).
struct ChunkSizer {
    static let targetDuration = 0.004
    static let largestChunk = 4096

    /// A size the caller fixed, or nil to measure.
    let fixedSize: Int?
    /// Calls that run at once (workers x load).
    let parallelism: Int
    /// Seconds per item, smoothed.
    private(set) var secondsPerItem: Double?

    init(fixedSize: Int?, parallelism: Int) {
        self.fixedSize = fixedSize.map { max(1, $0) }
        self.parallelism = max(1, parallelism)
    }

    /// Records that a chunk of `items` took `duration` from request to answer.
    mutating func record(items: Int, duration: Duration) {
        guard items > 0 else { return }
        let sample = max(duration.seconds / Double(items), 1e-9)
        secondsPerItem = secondsPerItem.map { 0.5 * $0 + 0.5 * sample } ?? sample
    }

    /// The size of the next chunk when `remaining` items are left (nil: not known).
    func nextSize(remaining: Int?) -> Int {
        if let fixedSize { return fixedSize }
        // Until a chunk has come back, one item at a time: the first items may be slow ones.
        guard let secondsPerItem else { return 1 }
        var size = min(Self.largestChunk, max(1, Int(Self.targetDuration / secondsPerItem)))
        if let remaining, remaining > 0 {
            size = min(size, max(1, remaining / (2 * parallelism)))
        }
        return size
    }
}

extension Duration {
    /// The duration in seconds.
    var seconds: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) + Double(attoseconds) * 1e-18
    }
}
