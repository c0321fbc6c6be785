/// Trial division: slow enough per number for worker processes to matter. The work-queue and
/// pool-service examples factor numbers with it.
public func primeFactors(of number: Int) -> [Int] {
    var factors: [Int] = []
    var rest = number
    var divisor = 2
    while divisor * divisor <= rest {
        while rest % divisor == 0 {
            factors.append(divisor)
            rest /= divisor
        }
        divisor += 1
    }
    if rest > 1 { factors.append(rest) }
    return factors
}
