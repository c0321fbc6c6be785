// forkkit-demo: what ForkKit is for. The same CPU-bound parallel map (counting the primes below a
// limit, one range of numbers per item) runs three ways: on worker processes through ForkPool, on
// threads through a Swift TaskGroup, and on one thread. A table compares them, and the demo checks
// that all three found the same number of primes.
import ArgumentParser
import DemoWorkloads
import ForkKit
import ForkPool
import ForkRPC
import Foundation

@main
struct Demo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "forkkit-demo",
        abstract: "A parallel map on worker processes, on threads and on one thread, side by side.",
        discussion: """
            Worker processes share nothing but what the template loaded, so a crash in one cannot take the \
            program down, and they scale like threads for CPU-bound work. This demo shows the second part.
            """
    )

    @Option(help: "Count the primes below this number.")
    var limit = 40_000_000

    @Option(help: "Items of the map: the numbers are cut into this many ranges.")
    var pieces = 400

    @Option(help: "Worker processes, and threads (default: one per CPU core).")
    var workers = WorkerPool.Configuration().maximumWorkers

    static func main() async {
        // First line of main: when this binary is started as the template it serves here; every
        // worker forked from it runs "primes", the worker function registered below.
        ForkTemplate.bootstrap([
            .rpcWorker("primes") { server in
                server.register(PrimeCounting.countPrimes, PrimeCounting.count(in:))
            },
        ])
        await main(nil)
    }

    func validate() throws {
        guard limit > 0, pieces > 0, workers > 0 else { throw ValidationError("--limit, --pieces and --workers must be positive") }
    }

    func run() async throws {
        let ranges = PrimeCounting.ranges(below: limit, pieces: pieces)
        print("Counting the primes below \(limit.formatted()) in \(ranges.count) ranges, \(workers) at a time.\n")

        var outcomes: [Outcome] = []
        outcomes.append(try await onWorkerProcesses(ranges))
        outcomes.append(await onThreads(ranges))
        outcomes.append(await onOneThread(ranges))
        report(outcomes, items: ranges.count)

        let answers = Set(outcomes.map(\.primes))
        guard answers.count == 1 else {
            print("\nThe three ways disagree: \(outcomes.map { "\($0.way): \($0.primes)" }.joined(separator: ", "))")
            throw ExitCode.failure
        }
        print("\nAll three agree: \(outcomes[0].primes.formatted()) primes below \(limit.formatted()).")
    }

    /// One way's result and how long it took.
    struct Outcome {
        let way: String
        let primes: Int
        let time: Duration
        var notes: [String] = []
    }

    /// ForkPool: a map over worker processes forked from this program's template.
    func onWorkerProcesses(_ ranges: [PrimeRange]) async throws -> Outcome {
        var configuration = WorkerPool.Configuration()
        configuration.maximumWorkers = workers
        configuration.idleWorkers = workers
        let progress = MapProgress()
        let bar = ProgressBar(label: "worker processes (\(workers))")
        let start = ContinuousClock.now
        let (counts, statistics) = try await bar.show(progress: progress) {
            try await withWorkerPool(running: "primes", configuration: configuration) { pool in
                (try await pool.map(PrimeCounting.countPrimes, ranges, progress: progress), pool.statistics)
            }
        }
        let time = ContinuousClock.now - start
        let notes = statistics.workers.map { worker in
            "worker \(worker.pid): \(worker.callsServed) calls, busy \(Self.seconds(worker.busyTime))"
        }
        return Outcome(way: "worker processes (ForkPool, \(workers))", primes: counts.reduce(0, +), time: time, notes: notes)
    }

    /// Threads: a TaskGroup on Swift's cooperative thread pool (one thread per core).
    func onThreads(_ ranges: [PrimeRange]) async -> Outcome {
        // Not a pool map, but the same progress type, so that one bar serves all three ways.
        let progress = MapProgress(total: ranges.count)
        let bar = ProgressBar(label: "threads (TaskGroup)")
        let start = ContinuousClock.now
        let primes = await bar.show(progress: progress) {
            await PrimeCounting.countOnThreads(ranges, width: workers) { progress.advance() }
        }
        return Outcome(way: "threads (TaskGroup, \(workers))", primes: primes, time: ContinuousClock.now - start)
    }

    /// One thread, for the speed-up's baseline.
    func onOneThread(_ ranges: [PrimeRange]) async -> Outcome {
        let progress = MapProgress(total: ranges.count)
        let bar = ProgressBar(label: "one thread")
        let start = ContinuousClock.now
        let primes = await bar.show(progress: progress) {
            var total = 0
            for range in ranges {
                total += PrimeCounting.count(in: range)
                progress.advance()
            }
            return total
        }
        return Outcome(way: "one thread", primes: primes, time: ContinuousClock.now - start)
    }

    func report(_ outcomes: [Outcome], items: Int) {
        let baseline = outcomes.last!.time
        let rows = [["way", "time", "ranges/s", "speed-up", "primes"]] + outcomes.map { outcome in
            [
                outcome.way, Self.seconds(outcome.time), String(format: "%.1f", Double(items) / Self.secondsValue(outcome.time)),
                String(format: "%.2fx", Self.secondsValue(baseline) / Self.secondsValue(outcome.time)), outcome.primes.formatted(),
            ]
        }
        let widths = (0..<rows[0].count).map { column in rows.map { $0[column].count }.max()! }
        for (index, row) in rows.enumerated() {
            let cells = row.enumerated().map { column, cell in
                column == 0 ? cell.padding(toLength: widths[column], withPad: " ", startingAt: 0)
                    : String(repeating: " ", count: widths[column] - cell.count) + cell
            }
            print(cells.joined(separator: "   "))
            if index == 0 { print(widths.map { String(repeating: "-", count: $0) }.joined(separator: "   ")) }
        }
        for note in outcomes.flatMap(\.notes) { print("  \(note)") }
    }

    static func secondsValue(_ duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }

    static func seconds(_ duration: Duration) -> String { String(format: "%.2f s", secondsValue(duration)) }
}
