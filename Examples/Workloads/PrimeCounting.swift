import ForkRPC

/// A half-open range of numbers whose primes one call counts.
public struct PrimeRange: Codable, Sendable {
    /// The first number of the range.
    public var lower: Int
    /// The number after the last one.
    public var upper: Int

    /// The numbers from `lower` up to, not including, `upper`.
    public init(lower: Int, upper: Int) {
        self.lower = lower
        self.upper = upper
    }
}

/// The demo's CPU-bound work: counting primes by trial division, one range per item. Higher ranges
/// cost more than lower ones, so the items are uneven, as real work is. Shared by the demo and the
/// pool benchmark.
public enum PrimeCounting {
    /// The function each worker process serves.
    public static let countPrimes = RPCFunction<PrimeRange, Int>("count-primes")

    /// The numbers below `limit` cut into `pieces` ranges of equal width.
    public static func ranges(below limit: Int, pieces: Int) -> [PrimeRange] {
        let width = max(1, (limit + pieces - 1) / pieces)
        return stride(from: 0, to: limit, by: width).map { PrimeRange(lower: $0, upper: min($0 + width, limit)) }
    }

    /// The primes in all of `ranges`, counted on a TaskGroup (Swift's cooperative threads), at most
    /// `width` ranges at a time; `completed` is called after each range.
    public static func countOnThreads(_ ranges: [PrimeRange], width: Int, completed: @Sendable () -> Void = {}) async -> Int {
        await withTaskGroup(of: Int.self) { group in
            var next = 0
            var total = 0
            func addNext() {
                guard next < ranges.count else { return }
                let range = ranges[next]
                group.addTask { count(in: range) }
                next += 1
            }
            for _ in 0..<width { addNext() }
            while let count = await group.next() {
                total += count
                completed()
                addNext()
            }
            return total
        }
    }

    /// How many primes `range` holds.
    public static func count(in range: PrimeRange) -> Int {
        (range.lower..<range.upper).reduce(0) { $0 + (isPrime($1) ? 1 : 0) }
    }

    /// Whether `number` is prime, by trial division.
    public static func isPrime(_ number: Int) -> Bool {
        if number < 4 { return number >= 2 }
        if number % 2 == 0 { return false }
        var divisor = 3
        while divisor * divisor <= number {
            if number % divisor == 0 { return false }
            divisor += 2
        }
        return true
    }
}
