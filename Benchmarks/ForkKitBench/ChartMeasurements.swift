import DemoWorkloads
import ForkKit
import ForkPool
import ForkRPC
import Foundation

/// What the report's charts show, measured in one run: throughput against the number of workers
/// (processes vs threads), the distribution of one call's latency, and the process-creation rate
/// against the parent's size (the shape of the table in Perl's AnyEvent::Fork documentation).
struct ChartMeasurements {
    /// Ranges of primes per second with `workers` worker processes and with as many threads.
    struct Scaling {
        var workers: [Int] = []
        var processes: [Double] = []
        var threads: [Double] = []
    }

    /// Latency percentiles (in microseconds) of one call at a time, for each way of calling.
    struct Latency {
        static let percentiles = [50.0, 75, 90, 95, 99, 99.9]
        var series: [(name: String, microseconds: [Double])] = []
    }

    /// Processes per second against megabytes of touched memory in the parent.
    struct CreationRate {
        var parentMegabytes: [Int] = []
        var template: [Double] = []
        var manualFork: [Double] = []
    }

    let quick: Bool
    let rounds: Int
    let log: Progress

    func scaling() async throws -> Scaling {
        let ranges = PrimeCounting.ranges(below: quick ? 1_000_000 : 6_000_000, pieces: 100)
        var result = Scaling()
        for workers in quick ? [1, 2] : [1, 2, 3, 4] {
            log.say("scaling: \(workers) worker processes vs \(workers) threads")
            let pool = try await PoolBenchmark.pool(local: workers)
            var processes: [Double] = [], threads: [Double] = []
            for _ in 1...rounds {
                processes.append(Double(ranges.count) / (try await PoolBenchmark.time { _ = try await pool.map(PrimeCounting.countPrimes, ranges) }))
                threads.append(Double(ranges.count) / (try await PoolBenchmark.time { _ = await PrimeCounting.countOnThreads(ranges, width: workers) }))
            }
            await pool.shutdown()
            result.workers.append(workers)
            result.processes.append(median(processes))
            result.threads.append(median(threads))
        }
        return result
    }

    func latency() async throws -> Latency {
        let calls = quick ? 200 : 1000
        log.say("latency distribution: \(rounds) rounds of \(calls) calls each way")
        let template = try await ForkTemplate.shared
        let client = try await RPCClient.start(template, running: "pool-bench")
        let pool = try await PoolBenchmark.pool(local: 1)
        // Rounds of each way in turn, so that the machine's noise hits all of them alike.
        var samples: [[Double]] = [[], [], []]
        for _ in 1...rounds {
            samples[0] += try await PoolBenchmark.roundTrips(calls: calls) { try await client.call(PoolBenchmark.square, $0) }
            // The whole loop prefers the executor: entering and leaving the preference per call
            // would add the hops it saves.
            samples[1] += try await withTaskExecutorPreference(ForkTemplate.ioExecutor) {
                try await PoolBenchmark.roundTrips(calls: calls) { try await client.call(PoolBenchmark.square, $0) }
            }
            samples[2] += try await PoolBenchmark.roundTrips(calls: calls) { try await pool.call(PoolBenchmark.square, $0) }
        }
        var result = Latency()
        for (name, times) in zip(["RPCClient.call", "the same, caller on ioExecutor", "WorkerPool.call"], samples) {
            let sorted = times.sorted()
            result.series.append((name, Latency.percentiles.map { sorted[min(sorted.count - 1, Int(Double(sorted.count) * $0 / 100))] }))
        }
        await pool.shutdown()
        _ = try await client.close()
        return result
    }

    func creationRate(templatePath: String) async throws -> CreationRate {
        let template = try await ForkTemplate.spawn(executable: templatePath)
        let iterations = quick ? 30 : 300
        var result = CreationRate()
        var grown: [UnsafeMutableRawPointer] = []
        defer { grown.forEach { free($0) } }
        var current = 0
        for size in quick ? [0, 50] : [0, 100, 250, 500, 1000] {
            if size > current {
                let extra = (size - current) << 20
                guard let block = malloc(extra) else { throw PeerFailure(description: "cannot allocate \(size) MB") }
                memset(block, 1, extra)
                grown.append(block)
                current = size
            }
            log.say("creation rate with \(size) MB touched in the parent")
            var fromTemplate: [Double] = [], manual: [Double] = []
            for _ in 1...rounds {
                fromTemplate.append(try await SpawnBenchmark.forkRate(template, iterations: iterations))
                manual.append(SpawnBenchmark.manualForkRate(iterations: max(5, iterations / 10)))
            }
            result.parentMegabytes.append(size)
            result.template.append(median(fromTemplate))
            result.manualFork.append(median(manual))
        }
        return result
    }
}
