// A long-running program in the shape of a server: a WorkerPool runs as a swift-service-lifecycle
// Service next to a job that uses it, the workers' own output goes to the program's Logger tagged
// with their pid, and the job's progress is a `for await` over MapProgress. SIGTERM or Ctrl-C (or
// the job's end) shuts the group down gracefully: the job stops first, then the pool drains.
//
//     swift run forkkit-pool-service 300
import DemoWorkloads
import ForkPool
import Logging
import ServiceLifecycle

/// The prime factors of a number, in a worker.
let factor = RPCFunction<Int, [Int]>("factor")

@main
struct PoolService {
    static func main() async throws {
        // First line of main: the worker function every pool worker runs. Its `print` is the kind
        // of line that, captured, reaches the owner's logger instead of its terminal.
        ForkTemplate.bootstrap([
            .rpcWorker("factoring") { server in
                server.register(factor) { number in
                    let factors = primeFactors(of: number)
                    if factors == [number] { print("\(number) is prime") }
                    return factors
                }
            },
        ])
        let count = CommandLine.arguments.dropFirst().first.flatMap { Int($0) } ?? 300
        let logger = Logger(label: "pool-service")

        var configuration = WorkerPool.Configuration()
        configuration.maximumWorkers = 2
        configuration.childOutput = .logging(to: logger)
        configuration.gracefulShutdownTimeout = .seconds(5)
        let pool = try await WorkerPool(running: "factoring", configuration: configuration)
        let job = FactoringJob(pool: pool, numbers: Array(1_000_000_000..<(1_000_000_000 + count)), logger: logger)

        // The pool first: a group shuts its services down in reverse order, so the job ends first
        // and the pool still serves the calls it finishes with.
        let group = ServiceGroup(configuration: ServiceGroupConfiguration(
            services: [
                .init(service: pool),
                .init(service: job, successTerminationBehavior: .gracefullyShutdownGroup),
            ],
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger))
        try await group.run()
        logger.info("service group ended; the pool has \(pool.statistics.workers.count) workers left")
    }
}

/// Factors numbers on the pool, logging its progress as it streams in.
struct FactoringJob: Service {
    let pool: WorkerPool
    let numbers: [Int]
    let logger: Logger

    func run() async throws {
        let progress = MapProgress()
        // A graceful shutdown (SIGTERM) cancels the map; the pool then drains what it had started.
        do {
            try await factorAll(progress: progress)
        } catch is CancellationError {
            logger.info("shutting down: stopped after factoring \(progress.completed) of \(numbers.count)")
        }
    }

    private func factorAll(progress: MapProgress) async throws {
        try await cancelWhenGracefulShutdown {
            async let factored = pool.map(factor, numbers, progress: progress)
            var nextReport = 0.0
            for await update in progress where update.total != nil {
                let fraction = update.fractionCompleted ?? 0
                if fraction >= nextReport || update.isFinished {
                    logger.info("factored \(update.completed) of \(update.total.map(String.init) ?? "?")")
                    nextReport = fraction + 0.25
                }
            }
            let results = try await factored
            let correct = zip(numbers, results).allSatisfy { number, factors in factors.reduce(1, *) == number }
            logger.info("factored \(results.count) numbers; every product checks: \(correct)")
        }
    }
}
