// forkkit-work-queue: workers that pull their work from a queue in the owner and report back to
// it. MessagePack-RPC goes both ways: the owner serves functions (RPCHandlers) that its workers
// call (server.call), as a Python program would share a multiprocessing.Queue.
import DemoWorkloads
import ForkPool

#if canImport(Glibc)
import Glibc
#endif

/// Worker → owner: the next number to factor, nil when the queue is empty.
let nextNumber = RPCFunction<Int32, Int?>("next-number")
/// Worker → owner: a number's prime factors, from the worker with this pid (three arguments).
let report = RPCFunction<Int32, Int, [Int], Bool>("report")
/// Owner → worker: factor numbers until the queue is empty; returns how many it did.
let drain = RPCFunction<Int>("drain")

/// The owner's queue and what the workers reported: one actor, called by every worker's requests.
actor FactorQueue {
    private var pending: [Int]
    private(set) var factors: [Int: [Int]] = [:]
    private(set) var doneBy: [Int32: Int] = [:]

    init(_ numbers: [Int]) { pending = numbers.reversed() }

    func next() -> Int? { pending.popLast() }

    func record(_ number: Int, _ primes: [Int], by worker: Int32) {
        factors[number] = primes
        doneBy[worker, default: 0] += 1
    }
}

@main struct WorkQueue {
    static func main() async throws {
        ForkTemplate.bootstrap([
            .rpcWorker("factorer") { server in
                server.register(drain) {
                    var done = 0
                    // Each call is a request to the owner, answered by its handler.
                    while let number = try server.call(nextNumber, getpid()) {
                        _ = try server.call(report, getpid(), number, primeFactors(of: number))
                        done += 1
                    }
                    return done
                }
            },
        ])

        let count = CommandLine.arguments.dropFirst().first.flatMap(Int.init) ?? 2000
        let numbers = (0..<count).map { 1_000_000_007 + 7919 * $0 }
        let queue = FactorQueue(numbers)

        var configuration = WorkerPool.Configuration()
        configuration.maximumWorkers = 2
        configuration.idleWorkers = 2
        configuration.load = 1  // one drain per worker: a synchronous worker runs one call at a time
        // What the owner serves to every worker of the pool.
        configuration.handlers.register(nextNumber) { _ in await queue.next() }
        configuration.handlers.register(report) { pid, number, primes in
            await queue.record(number, primes, by: pid)
            return true
        }

        let drained = try await withWorkerPool(running: "factorer", configuration: configuration) { pool in
            // One drain per worker; each pulls numbers until none is left.
            try await withThrowingTaskGroup(of: Int.self) { group in
                for _ in 0..<configuration.maximumWorkers { group.addTask { try await pool.call(drain) } }
                var total = 0
                for try await done in group { total += done }
                return total
            }
        }

        let factors = await queue.factors
        let doneBy = await queue.doneBy
        print("factored \(drained) numbers")
        for (pid, done) in doneBy.sorted(by: { $0.key < $1.key }) { print("worker \(pid) took \(done)") }
        let correct = numbers.allSatisfy { number in factors[number]?.reduce(1, *) == number }
        print("every number's factors multiply back to it: \(correct)")
    }
}
