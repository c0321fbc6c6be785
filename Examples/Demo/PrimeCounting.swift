import ForkRPC

/// A half-open range of numbers whose primes one call counts.
struct PrimeRange: Codable, Sendable {
    var lower: Int
    var upper: Int
}

/// The demo's CPU-bound work: counting primes by trial division, one range per item. Higher ranges
/// cost more than lower ones, so the items are uneven, as real work is.
enum PrimeCounting {
    /// The function each worker process serves.
    static let countPrimes = RPCFunction<PrimeRange, Int>("count-primes")

    /// The numbers below `limit` cut into `pieces` ranges of equal width.
    static func ranges(below limit: Int, pieces: Int) -> [PrimeRange] {
        let width = max(1, (limit + pieces - 1) / pieces)
        return stride(from: 0, to: limit, by: width).map { PrimeRange(lower: $0, upper: min($0 + width, limit)) }
    }

    static func count(in range: PrimeRange) -> Int {
        (range.lower..<range.upper).reduce(0) { $0 + (isPrime($1) ? 1 : 0) }
    }

    static func isPrime(_ number: Int) -> Bool {
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
