import ArgumentParser
import DemoWorkloads
import ForkKit
import ForkPool
import ForkRPC
import Foundation
import Synchronization

/// `forkkit-bench soak`: minutes of mixed calls on a pool that recycles its workers every 1,000
/// calls while a worker is SIGKILLed every second. Every call must come back right (retries are
/// on), and the owner must not grow: resident memory and open descriptors at the start and the end.
struct SoakTest: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "soak",
        abstract: "Mixed calls for minutes under recycling and a worker killed every second; calls lost, memory and descriptors."
    )

    @OptionGroup var options: BenchmarkOptions

    @Option(help: "How long to run, in minutes (the issue's soak is 10).")
    var minutes = 10.0

    static let echo = RPCFunction<[UInt8], [UInt8]>("soak-echo")
    static let countDown = RPCFunction<Int, Int>("soak-count-down")

    func run() async throws {
        var run = try BenchmarkRun("soak", options: options)
        let duration = Duration.seconds(options.quick ? min(minutes * 60, 10) : minutes * 60)
        var configuration = WorkerPool.Configuration()
        configuration.maximumWorkers = 2
        configuration.idleWorkers = 2
        configuration.maximumCallsPerWorker = 1_000
        configuration.retries = 20
        configuration.metricsPrefix = nil
        let pool = try await WorkerPool(running: "pool-bench", configuration: configuration)
        // Events are read as they come, as a program that asks for them would.
        let events = Task { var count = 0; for await _ in pool.events { count += 1 }; return count }

        let counts = Counts()
        let payload = [UInt8](repeating: 0xa5, count: 1 << 20)
        let deadline = ContinuousClock.now + duration
        // The first reading is taken once the mix has run a while (a tenth of the run, at most
        // 30 s): buffers for 1 MiB messages and the allocator's per-thread arenas have grown by then,
        // and what is measured is growth after that.
        let warmUp = min(duration / 10, .seconds(30))
        let firstReading = Task {
            try? await Task.sleep(for: warmUp)
            return Self.reading()
        }
        run.log.say("soak: \(duration) of mixed calls, recycling every 1,000 calls, a worker killed every second")

        let killer = Task {
            var kills = 0
            while ContinuousClock.now < deadline {
                try? await Task.sleep(for: .seconds(1))
                if let victim = pool.statistics.workers.randomElement()?.pid {
                    kill(victim, SIGKILL)
                    kills += 1
                }
            }
            return kills
        }
        await withTaskGroup(of: Void.self) { group in
            for lane in 0..<8 {
                group.addTask {
                    var index = lane
                    while ContinuousClock.now < deadline {
                        do {
                            let right = try await Self.mixedCall(pool, index, payload)
                            if right { counts.served.add(1, ordering: .relaxed) } else { counts.wrong.add(1, ordering: .relaxed) }
                        } catch {
                            counts.lost.add(1, ordering: .relaxed)
                        }
                        index += 8
                    }
                }
            }
        }
        let kills = await killer.value
        let start = await firstReading.value
        let statistics = pool.statistics
        await pool.shutdown()
        let eventCount = await events.value
        // Connections of the last workers killed close when their exit is known (up to a second).
        try await Task.sleep(for: .seconds(2))
        let end = Self.reading()

        run.report.record("calls_served", Double(counts.served.load(ordering: .relaxed)))
        run.report.record("calls_wrong", Double(counts.wrong.load(ordering: .relaxed)))
        run.report.record("calls_lost", Double(counts.lost.load(ordering: .relaxed)))
        run.report.record("events_received", Double(eventCount))
        run.report.record("workers_killed", Double(kills))
        run.report.record("workers_lost", Double(statistics.counters.workersLost))
        run.report.record("workers_recycled", Double(statistics.counters.workersRecycled))
        run.report.record("retries", Double(statistics.counters.retries))
        run.report.record("owner_rss_start_mb", start.residentMegabytes)
        run.report.record("owner_rss_end_mb", end.residentMegabytes)
        run.report.record("owner_descriptors_start", Double(start.descriptors))
        run.report.record("owner_descriptors_end", Double(end.descriptors))
        run.report.target("calls_lost", "calls_lost", atMost: 0, "calls that failed although retries were on")
        run.report.target("calls_wrong", "calls_wrong", atMost: 0, "calls whose result was not the right one")
        run.report.target("rss_growth", "owner_rss_end_mb", over: "owner_rss_start_mb", atMost: 1.1, "the owner's resident memory, end over start")
        run.report.target("descriptor_growth", "owner_descriptors_end", over: "owner_descriptors_start", atMost: 1.0,
                          "the owner's open descriptors, end over start")
        try run.finish(json: options.json)
    }

    /// Calls that came back right, wrong, or not at all; counted from every lane.
    final class Counts: Sendable {
        let served = Atomic<Int>(0)
        let wrong = Atomic<Int>(0)
        let lost = Atomic<Int>(0)
    }

    /// One call of the mix, chosen by `index`: tiny, CPU-bound, 1 MiB echoed, or events. True when
    /// the result is right.
    static func mixedCall(_ pool: WorkerPool, _ index: Int, _ payload: [UInt8]) async throws -> Bool {
        switch index % 4 {
        case 0: return try await pool.call(PoolBenchmark.square, index) == index * index
        case 1:
            let range = PrimeRange(lower: 1_000_000 + index % 1000 * 1000, upper: 1_001_000 + index % 1000 * 1000)
            return try await pool.call(PrimeCounting.countPrimes, range) == PrimeCounting.count(in: range)
        case 2: return try await pool.call(echo, payload) == payload
        default: return try await pool.call(countDown, 20) == 20
        }
    }

    /// The owner's resident memory and open descriptors.
    static func reading() -> (residentMegabytes: Double, descriptors: Int) {
        let statm = (try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8)) ?? ""
        let pages = statm.split(separator: " ").dropFirst().first.flatMap { Double($0) } ?? 0
        let descriptors = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? 0
        return (pages * Double(sysconf(Int32(_SC_PAGESIZE))) / 1_048_576, descriptors)
    }
}
