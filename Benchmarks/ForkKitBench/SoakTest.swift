import ArgumentParser
import DemoWorkloads
import ForkKit
import ForkPool
import ForkRPC
import Foundation
import Synchronization

/// `forkkit-bench soak`: minutes of mixed traffic through one pool that recycles its workers every
/// 1,000 calls while a worker is SIGKILLed every second (`--kill-every`). Every call must come back right (retries
/// are on), and the owner must not grow: resident memory and open descriptors are read throughout.
///
/// The mix is what a program sends a pool: small calls (x*x, primes), 256 KiB and 1 MiB echoes,
/// events, maps of x*x and of 256 KiB echoes, and streaming maps (`results(of:)`) in both orders;
/// `--only` narrows it (issue 12's report: `--only square echo-256k map stream --kill-every 0`).
struct SoakTest: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "soak",
        abstract: "Mixed calls, maps and streams for minutes under recycling and a worker killed every second; calls lost, memory and descriptors."
    )

    @OptionGroup var options: BenchmarkOptions

    @Option(help: "How long to run, in minutes (the issue's soak is 10).")
    var minutes = 10.0

    @Option(help: "Seconds between SIGKILLs of a random worker; 0: none.")
    var killEvery = 1.0

    @Option(parsing: .upToNextOption, help: "Only these kinds of traffic (default: all of them, in turn).")
    var only: [Traffic] = []

    @Option(help: "A CSV file that receives every sample (seconds, RSS, heap in use and free in MB, arenas, descriptors, RPC clients, children tracked, descriptors watched).")
    var memoryLog: String?

    static let echo = RPCFunction<[UInt8], [UInt8]>("soak-echo")
    static let countDown = RPCFunction<Int, Int>("soak-count-down")

    /// Concurrent callers; each goes round every kind of traffic in turn.
    static let lanes = 8

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
        let payloads = Payloads()
        let started = ContinuousClock.now
        let deadline = started + duration
        let schedule = Schedule(duration: duration)
        let kinds = only.isEmpty ? Traffic.allCases : only
        run.log.say("soak: \(duration) of \(kinds.map(\.rawValue).joined(separator: ", ")), recycling every 1,000 calls, "
                    + (killEvery > 0 ? "a worker killed every \(killEvery) s" : "no worker killed"))

        // Memory is read all along (every second in a long run), so that a reading is the median
        // of a window rather than one instant: a few 1 MiB messages in flight move RSS by MBs.
        let sampler = Task { [log = run.log] in
            var samples: [(at: Duration, memory: OwnerMemory)] = []
            var nextReport = schedule.reportInterval
            while ContinuousClock.now < deadline {
                try? await Task.sleep(for: schedule.sampleInterval)
                let at = ContinuousClock.now - started
                let memory = OwnerMemory.read()
                samples.append((at, memory))
                if at >= nextReport {
                    nextReport += schedule.reportInterval
                    log.say(String(
                        format: "%5.0f s: RSS %.1f MB, heap in use %.1f MB, free in malloc %.1f MB (%d arenas), %d descriptors, "
                            + "%d RPC clients, %d children tracked, %d watched; %d calls served",
                        at.seconds, memory.residentMegabytes, memory.heapInUseMegabytes ?? .nan, memory.heapFreeMegabytes ?? .nan,
                        memory.arenas ?? 0, memory.descriptors, memory.rpcClients, memory.childrenTracked, memory.descriptorsWatched,
                        counts.served.load(ordering: .relaxed)))
                }
            }
            return samples
        }
        let killer = Task { [killEvery] in
            var kills = 0
            while killEvery > 0, ContinuousClock.now < deadline {
                try? await Task.sleep(for: .seconds(killEvery))
                if let victim = pool.statistics.workers.randomElement()?.pid {
                    kill(victim, SIGKILL)
                    kills += 1
                }
            }
            return kills
        }
        await withTaskGroup(of: Void.self) { group in
            for lane in 0..<Self.lanes {
                group.addTask {
                    // Each lane goes round every kind in turn, and at any moment the lanes are at
                    // different kinds.
                    var round = 0
                    while ContinuousClock.now < deadline {
                        let kind = kinds[(lane + round) % kinds.count]
                        do {
                            let right = try await Self.call(kind, pool, value: lane + round * Self.lanes, payloads)
                            if right { counts.served.add(1, ordering: .relaxed) } else { counts.wrong.add(1, ordering: .relaxed) }
                        } catch {
                            counts.lost.add(1, ordering: .relaxed)
                        }
                        round += 1
                    }
                }
            }
        }
        let kills = await killer.value
        let samples = await sampler.value
        let statistics = pool.statistics
        await pool.shutdown()
        let eventCount = await events.value
        // Connections of the last workers killed close when their exit is known (up to a second).
        try await Task.sleep(for: .seconds(2))
        let end = OwnerMemory.read()
        // What malloc holds free and gives back: the part of RSS that is fragmentation, not use.
        OwnerMemory.trim()
        let trimmed = OwnerMemory.read()

        if let memoryLog {
            let lines = samples.map { sample in
                let memory = sample.memory
                return String(format: "%.1f,%.2f,%.2f,%.2f,%d,%d,%d,%d,%d", sample.at.seconds, memory.residentMegabytes, memory.heapInUseMegabytes ?? .nan,
                              memory.heapFreeMegabytes ?? .nan, memory.arenas ?? 0, memory.descriptors, memory.rpcClients,
                              memory.childrenTracked, memory.descriptorsWatched)
            }
            try (["seconds,rss_mb,heap_in_use_mb,heap_free_mb,arenas,descriptors,rpc_clients,children_tracked,descriptors_watched"] + lines).joined(separator: "\n")
                .appending("\n").write(toFile: memoryLog, atomically: true, encoding: .utf8)
        }
        let start = schedule.reading(of: samples, endingAt: schedule.warmUp)
        let minuteTwo = schedule.reading(of: samples, endingAt: schedule.secondReading)
        let endOfCalls = schedule.reading(of: samples, endingAt: duration)
        run.report.record("calls_served", Double(counts.served.load(ordering: .relaxed)))
        run.report.record("calls_wrong", Double(counts.wrong.load(ordering: .relaxed)))
        run.report.record("calls_lost", Double(counts.lost.load(ordering: .relaxed)))
        run.report.record("events_received", Double(eventCount))
        run.report.record("workers_killed", Double(kills))
        run.report.record("workers_lost", Double(statistics.counters.workersLost))
        run.report.record("workers_recycled", Double(statistics.counters.workersRecycled))
        run.report.record("retries", Double(statistics.counters.retries))
        run.report.record("owner_rss_start_mb", start.resident)
        run.report.record("owner_rss_minute_2_mb", minuteTwo.resident)
        run.report.record("owner_rss_end_of_calls_mb", endOfCalls.resident)
        run.report.record("owner_rss_end_mb", end.residentMegabytes)
        run.report.record("owner_rss_end_after_malloc_trim_mb", trimmed.residentMegabytes)
        // What RSS is made of: the heap in use (a leak grows it) and what malloc keeps free in its
        // arenas (fragmentation grows it); the rest (code, stacks) does not change.
        if let heap = minuteTwo.heapInUse { run.report.record("owner_heap_in_use_minute_2_mb", heap) }
        if let heap = endOfCalls.heapInUse { run.report.record("owner_heap_in_use_end_of_calls_mb", heap) }
        if let heap = end.heapInUseMegabytes { run.report.record("owner_heap_in_use_end_mb", heap) }
        if let free = minuteTwo.heapFree { run.report.record("owner_malloc_free_minute_2_mb", free) }
        if let free = endOfCalls.heapFree { run.report.record("owner_malloc_free_end_of_calls_mb", free) }
        if let free = end.heapFreeMegabytes { run.report.record("owner_malloc_free_end_mb", free) }
        // ForkKit's per-worker tables: after shutdown, nothing of the thousands of workers is left
        // (the template's connection stays watched).
        run.report.record("owner_rpc_clients_end", Double(end.rpcClients))
        run.report.record("owner_children_tracked_end", Double(end.childrenTracked))
        run.report.record("owner_descriptors_watched_end", Double(end.descriptorsWatched))
        run.report.record("owner_descriptors_start", Double(start.descriptors))
        run.report.record("owner_descriptors_end", Double(end.descriptors))
        run.report.target("calls_lost", "calls_lost", atMost: 0, "calls that failed although retries were on")
        run.report.target("calls_wrong", "calls_wrong", atMost: 0, "calls whose result was not the right one")
        run.report.target("rss_growth", "owner_rss_end_mb", over: "owner_rss_start_mb", atMost: 1.1,
                          "the owner's resident memory, after shutdown over after warm-up (\(schedule.warmUp))")
        run.report.target("soak_rss_growth_after_minute_2", "owner_rss_end_of_calls_mb", over: "owner_rss_minute_2_mb", atMost: 1.1,
                          "the owner's resident memory while the pool runs, at the end of the calls over at \(schedule.secondReading)"
                            + " (medians of \(schedule.window) each)")
        run.report.target("descriptor_growth", "owner_descriptors_end", over: "owner_descriptors_start", atMost: 1.0,
                          "the owner's open descriptors, end over start")
        if let heapBefore = minuteTwo.heapInUse, let heapAfter = endOfCalls.heapInUse,
           let freeBefore = minuteTwo.heapFree, let freeAfter = endOfCalls.heapFree {
            run.report.notes.append(String(
                format: "from %@ to the end of the calls RSS changed by %+.1f MB: the heap in use by %+.1f MB, what malloc keeps free by %+.1f MB; "
                    + "after shutdown malloc_trim(0) gave back %.1f MB of RSS",
                "\(schedule.secondReading)", endOfCalls.resident - minuteTwo.resident, heapAfter - heapBefore, freeAfter - freeBefore,
                end.residentMegabytes - trimmed.residentMegabytes))
        }
        if duration < .seconds(240) {
            run.report.notes.append("a run shorter than 4 minutes takes its 'minute 2' reading half-way, at \(schedule.secondReading)")
        }
        try run.finish(json: options.json)
    }

    /// Calls that came back right, wrong, or not at all; counted from every lane.
    final class Counts: Sendable {
        let served = Atomic<Int>(0)
        let wrong = Atomic<Int>(0)
        let lost = Atomic<Int>(0)
    }

    /// The echoed payloads, made once.
    struct Payloads: Sendable {
        let large = [UInt8](repeating: 0xa5, count: 1 << 20)
        let medium = (0..<(256 << 10)).map { UInt8(truncatingIfNeeded: $0 &* 31) }
    }

    /// When memory is read, and which samples make each reading.
    struct Schedule: Sendable {
        let duration: Duration
        /// Every second in a run of 100 s or more; a hundred samples in a shorter one.
        var sampleInterval: Duration { min(.seconds(1), duration / 100) }
        /// The samples one reading is the median of: the last 30 s (a twentieth of a short run).
        /// RSS swings by 5 MB within seconds here (1 MiB messages in flight, freed memory malloc
        /// keeps for a while); over 30 s the median is steady.
        var window: Duration { min(.seconds(30), duration / 20) }
        /// How often progress shows the memory: every 15 s, or twenty times in a short run.
        var reportInterval: Duration { min(.seconds(15), duration / 20) }
        /// The first reading, once the mix has run a while (a tenth of the run, at most 30 s): buffers
        /// for 1 MiB messages and the allocator's per-thread arenas have grown by then.
        var warmUp: Duration { min(duration / 10, .seconds(30)) }
        /// Minute 2 (the reference point), or half-way through a run shorter than 4 minutes.
        var secondReading: Duration { min(.seconds(120), duration / 2) }

        /// The medians of the samples in the window that ends at `end` (the last sample, if none is).
        func reading(of samples: [(at: Duration, memory: OwnerMemory)], endingAt end: Duration)
            -> (resident: Double, heapInUse: Double?, heapFree: Double?, descriptors: Int) {
            var chosen = samples.filter { $0.at <= end && $0.at > end - window }.map(\.memory)
            if chosen.isEmpty { chosen = samples.suffix(1).map(\.memory) }
            if chosen.isEmpty { chosen = [OwnerMemory.read()] }
            let heap = chosen.compactMap(\.heapInUseMegabytes), free = chosen.compactMap(\.heapFreeMegabytes)
            return (median(chosen.map(\.residentMegabytes)), heap.isEmpty ? nil : median(heap), free.isEmpty ? nil : median(free),
                    Int(median(chosen.map { Double($0.descriptors) })))
        }
    }

    /// The kinds of traffic in the mix.
    enum Traffic: String, CaseIterable, ExpressibleByArgument, Sendable {
        /// One call of x*x.
        case square
        /// One CPU-bound call: the primes in a range of 1,000 numbers.
        case primes
        /// One call that echoes 1 MiB.
        case echo1MiB = "echo-1m"
        /// One call that emits 20 events.
        case events
        /// One call that echoes 256 KiB.
        case echo256KiB = "echo-256k"
        /// A map of x*x over 1,000 numbers.
        case map
        /// A streaming map (`results(of:)`) of x*x over 1,000 numbers, in input or completion order.
        case stream
        /// A map of four 256 KiB echoes.
        case mapOfEchoes = "map-echo-256k"
    }

    /// One item of the mix, of `kind`, with `value` as its input (or the first of its inputs).
    /// True when every result is right.
    static func call(_ kind: Traffic, _ pool: WorkerPool, value: Int, _ payloads: Payloads) async throws -> Bool {
        switch kind {
        case .square: return try await pool.call(PoolBenchmark.square, value) == value * value
        case .primes:
            let range = PrimeRange(lower: 1_000_000 + value % 1000 * 1000, upper: 1_001_000 + value % 1000 * 1000)
            return try await pool.call(PrimeCounting.countPrimes, range) == PrimeCounting.count(in: range)
        case .echo1MiB: return try await pool.call(echo, payloads.large) == payloads.large
        case .events: return try await pool.call(countDown, 20) == 20
        case .echo256KiB: return try await pool.call(echo, payloads.medium) == payloads.medium
        case .map:
            let inputs = value..<(value + 1_000)
            return try await pool.map(PoolBenchmark.square, inputs).elementsEqual(inputs.lazy.map { $0 * $0 })
        case .stream:
            let inputs = value..<(value + 1_000)
            var seen = Set<Int>()
            for try await result in pool.results(of: PoolBenchmark.square, inputs, order: value % 16 < 8 ? .input : .completion) {
                let input = inputs.lowerBound + result.index
                guard result.output == input * input else { return false }
                seen.insert(result.index)
            }
            return seen.count == inputs.count
        case .mapOfEchoes:
            let outputs = try await pool.map(echo, repeatElement(payloads.medium, count: 4))
            return outputs.count == 4 && outputs.allSatisfy { $0 == payloads.medium }
        }
    }
}
