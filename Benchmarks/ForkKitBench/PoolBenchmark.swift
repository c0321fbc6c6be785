import ArgumentParser
import DemoWorkloads
import ForkKit
import ForkPool
import ForkRPC
import Foundation

/// `forkkit-bench pool`: maps over a ForkPool against Python's `multiprocessing.Pool` and against
/// threads, and what the pool's scheduler adds to one call.
struct PoolBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pool",
        abstract: "Map throughput on a pool of 2 workers, processes against threads on CPU-bound work, pool overhead per call."
    )

    @OptionGroup var options: BenchmarkOptions

    static let square = RPCFunction<Int, Int>("square")

    func run() async throws {
        var run = try BenchmarkRun("pool", options: options)
        let (rounds, log, scratch) = (run.rounds, run.log, run.scratch)
        let items = options.quick ? 20_000 : 200_000
        let calls = options.quick ? 300 : 3000
        let ranges = PrimeCounting.ranges(below: options.quick ? 1_000_000 : 6_000_000, pieces: 100)
        let workers = 2

        let pool = try await Self.pool(local: workers)
        let direct = try await RPCClient.start(try await ForkTemplate.shared, running: "pool-bench")

        var python: Peer?
        switch Peer.pythonPoolMap(in: scratch) {
        case .success(let peer): python = peer
        case .failure(let failure): run.report.skipped.append(("python_pool_map_items_per_s", failure.description))
        }

        var samples: [String: [Double]] = [:]
        for round in 1...rounds {
            log.say("round \(round)/\(rounds): map of x*x, primes on processes / threads / one thread, call overhead, Python")
            samples["forkkit_pool_map_square_items_per_s", default: []].append(try await Self.mapRate(pool, items: items))
            samples["forkkit_pool_results_stream_square_items_per_s", default: []].append(try await Self.streamRate(pool, items: items))
            samples["forkkit_pool_primes_ms", default: []].append(try await 1000 * Self.time {
                _ = try await pool.map(PrimeCounting.countPrimes, ranges)
            })
            samples["threads_primes_ms", default: []].append(try await 1000 * Self.time { _ = await PrimeCounting.countOnThreads(ranges, width: workers) })
            samples["one_thread_primes_ms", default: []].append(try await 1000 * Self.time {
                _ = ranges.reduce(0) { $0 + PrimeCounting.count(in: $1) }
            })
            samples["forkkit_pool_call_rtt_us", default: []].append(try await Self.latency(calls: calls) { try await pool.call(Self.square, $0) })
            samples["forkkit_client_call_rtt_us", default: []].append(try await Self.latency(calls: calls) { try await direct.call(Self.square, $0) })
            if let python {
                for (name, value) in try python.measure(arguments: ["\(items)"]) { samples[name, default: []].append(value) }
            }
        }
        await pool.shutdown()
        _ = try await direct.close()
        for (name, values) in samples.sorted(by: { $0.key < $1.key }) { run.report.record(name, median(values)) }

        run.report.target("pool_map_vs_python_map", "forkkit_pool_map_square_items_per_s", over: "python_pool_map_items_per_s", atLeast: 1,
                          "x*x over 2 workers, map with automatic chunks vs Python Pool(2).map with its default chunks")
        run.report.target("processes_vs_threads_time", "forkkit_pool_primes_ms", over: "threads_primes_ms", atMost: 1.1,
                          "CPU-bound map (primes, 100 uneven ranges): time on 2 worker processes over time on 2 threads")
        run.report.target("processes_speedup", "one_thread_primes_ms", over: "forkkit_pool_primes_ms", atLeast: 1.7,
                          "the same map: one thread's time over 2 worker processes' time")
        run.report.target("pool_call_vs_client_call", "forkkit_pool_call_rtt_us", over: "forkkit_client_call_rtt_us", atMost: 1.2,
                          "one call at a time through the pool's scheduler vs straight to one worker")
        try run.finish(json: options.json)
    }

    /// Items per second of a map of x*x.
    static func mapRate(_ pool: WorkerPool, items: Int) async throws -> Double {
        let seconds = try await time {
            let results = try await pool.map(square, 0..<items)
            guard results.last == (items - 1) * (items - 1) else { throw PeerFailure(description: "wrong squares") }
        }
        return Double(items) / seconds
    }

    /// Results per second of `results(of:)` over x*x, in completion order, read one at a time.
    static func streamRate(_ pool: WorkerPool, items: Int) async throws -> Double {
        var received = 0
        let seconds = try await time {
            for try await _ in pool.results(of: square, 0..<items, order: .completion) { received += 1 }
        }
        guard received == items else { throw PeerFailure(description: "the stream gave \(received) of \(items) results") }
        return Double(items) / seconds
    }

    /// A started and warmed-up pool of the bench's "pool-bench" worker: `local` forked workers, and
    /// one more over `remote` when given.
    static func pool(local: Int, remote: RemoteTemplate? = nil) async throws -> WorkerPool {
        var configuration = WorkerPool.Configuration()
        configuration.maximumWorkers = local
        configuration.remoteHosts = remote.map { [WorkerPool.RemoteHost($0, maximumWorkers: 1)] } ?? []
        configuration.idleWorkers = local + (remote == nil ? 0 : 1)
        configuration.metricsPrefix = nil
        let pool = try await WorkerPool(running: "pool-bench", configuration: configuration)
        _ = try await pool.map(square, 0..<1000)
        return pool
    }

    /// Median microseconds of `body`, one call at a time.
    static func latency(calls: Int, _ body: (Int) async throws -> Int) async throws -> Double {
        median(try await roundTrips(calls: calls, body))
    }

    /// Microseconds of each of `calls` round trips of x*x (`body` squares its argument), one at a time.
    static func roundTrips(calls: Int, _ body: (Int) async throws -> Int) async throws -> [Double] {
        var times: [Double] = []
        times.reserveCapacity(calls)
        for value in 0..<calls {
            let start = ContinuousClock.now
            guard try await body(value) == value * value else { throw PeerFailure(description: "wrong square") }
            times.append((ContinuousClock.now - start).seconds * 1e6)
        }
        return times
    }

    /// Seconds `body` takes.
    static func time(_ body: () async throws -> Void) async throws -> Double {
        let start = ContinuousClock.now
        try await body()
        return (ContinuousClock.now - start).seconds
    }
}
