import ArgumentParser
import ForkKit
import ForkPool
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// `forkkit-bench sweep`: the question users ask, "from what work per item do worker processes pay
/// off?". A map's throughput on 2 worker processes (ForkPool), 2 threads (a TaskGroup of two
/// lanes) and Python's `Pool(2)`, with the CPU work per item swept from 100 ns to 10 ms, and then
/// the payload per item from 8 B to 1 MiB, all in one run.
struct SweepBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sweep",
        abstract: "Map throughput of processes, threads and Python's Pool(2), by CPU work and by payload per item."
    )

    @OptionGroup var options: BenchmarkOptions

    /// Spins for the given number of nanoseconds of wall-clock time (CPU-bound), returns how many
    /// times it looked at the clock.
    static let spin = RPCFunction<Int, Int>("spin")
    /// Takes a payload, returns its size.
    static let size = RPCFunction<[UInt8], Int>("size")

    /// The CPU work per item swept, in nanoseconds.
    static let workLevels = [100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000]
    /// The payload per item swept, in bytes.
    static let payloadLevels = [8, 64, 1 << 10, 16 << 10, 128 << 10, 1 << 20]

    /// Busy-waits for `nanoseconds` on the monotonic clock (the same in the worker and on a thread).
    static func spinFor(_ nanoseconds: Int) -> Int {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        let end = Int(now.tv_sec) * 1_000_000_000 + now.tv_nsec + nanoseconds
        var looks = 0
        repeat {
            clock_gettime(CLOCK_MONOTONIC, &now)
            looks &+= 1
        } while Int(now.tv_sec) * 1_000_000_000 + now.tv_nsec < end
        return looks
    }

    /// Items for one measurement of `work` nanoseconds each: about half a second of work over the
    /// two lanes, between 40 and 200,000 items.
    static func itemCount(work nanoseconds: Int) -> Int { min(200_000, max(40, 1_000_000_000 / nanoseconds)) }

    /// Items for one measurement of `bytes` each: 128 MiB in all, between 50 and 200,000 items.
    static func itemCount(payload bytes: Int) -> Int { min(200_000, max(50, (128 << 20) / bytes)) }

    func run() async throws {
        var run = try BenchmarkRun("sweep", options: options)
        let (rounds, log, scratch) = (run.rounds, run.log, run.scratch)
        let pool = try await PoolBenchmark.pool(local: 2)
        var python: Peer?
        switch Peer.pythonSweep(in: scratch) {
        case .success(let peer): python = peer
        case .failure(let failure): run.report.skipped.append(("python_sweep", failure.description))
        }
        let payloads = Dictionary(uniqueKeysWithValues: Self.payloadLevels.map { size in
            (size, (0..<Self.itemCount(payload: size)).map { _ in [UInt8](repeating: 0x5a, count: size) })
        })
        var samples: [String: [Double]] = [:]
        for round in 1...rounds {
            log.say("round \(round)/\(rounds): work per item \(Self.workLevels.map(Self.duration).joined(separator: ", ")); payload \(Self.payloadLevels.map(Self.bytes).joined(separator: ", "))")
            for work in Self.workLevels {
                let items = Array(repeating: work, count: Self.itemCount(work: work))
                samples["work_\(work)ns_processes_items_per_s", default: []].append(
                    Double(items.count) / (try await PoolBenchmark.time { _ = try await pool.map(Self.spin, items) }))
                samples["work_\(work)ns_threads_items_per_s", default: []].append(
                    Double(items.count) / (try await PoolBenchmark.time { await Self.onTwoThreads(items, Self.spinFor) }))
            }
            for size in Self.payloadLevels {
                let items = payloads[size]!
                samples["payload_\(size)b_processes_items_per_s", default: []].append(
                    Double(items.count) / (try await PoolBenchmark.time { _ = try await pool.map(Self.size, items) }))
                samples["payload_\(size)b_threads_items_per_s", default: []].append(
                    Double(items.count) / (try await PoolBenchmark.time { await Self.onTwoThreads(items) { $0.count } }))
            }
            if let python {
                let arguments = Self.workLevels.map { "work:\($0):\(Self.itemCount(work: $0))" }
                    + Self.payloadLevels.map { "payload:\($0):\(Self.itemCount(payload: $0))" }
                for (name, value) in try python.measure(arguments: arguments) { samples[name, default: []].append(value) }
            }
        }
        await pool.shutdown()
        for (name, values) in samples.sorted(by: { $0.key < $1.key }) { run.report.record(name, rounds: values) }

        // Where processes reach 90% of threads, and how they stand against Python at each level.
        let crossing = Self.workLevels.first { work in
            guard let processes = run.report.metric("work_\(work)ns_processes_items_per_s"),
                  let threads = run.report.metric("work_\(work)ns_threads_items_per_s") else { return false }
            return processes >= 0.9 * threads
        }
        if let crossing { run.report.record("work_ns_where_processes_reach_90pct_of_threads", Double(crossing)) }
        run.report.notes.append(
            crossing.map { "2 worker processes reach 90% of 2 threads' throughput from \(Self.duration($0)) of CPU work per item (levels: \(Self.workLevels.map(Self.duration).joined(separator: ", ")))" }
                ?? "2 worker processes stay under 90% of 2 threads' throughput at every level of work per item measured")
        try run.finish(json: options.json)
    }

    /// Runs `body` over `items` on two concurrent lanes, each taking every other item: the threads'
    /// side, with no per-item task.
    static func onTwoThreads<Item: Sendable>(_ items: [Item], _ body: @escaping @Sendable (Item) -> Int) async {
        await withTaskGroup(of: Int.self) { group in
            for lane in 0..<2 {
                group.addTask {
                    var total = 0
                    for index in stride(from: lane, to: items.count, by: 2) { total &+= body(items[index]) }
                    return total
                }
            }
            for await _ in group {}
        }
    }

    /// `100 ns`, `10 us`, `1 ms`.
    static func duration(_ nanoseconds: Int) -> String {
        switch nanoseconds {
        case ..<1_000: "\(nanoseconds) ns"
        case ..<1_000_000: "\(nanoseconds / 1_000) us"
        default: "\(nanoseconds / 1_000_000) ms"
        }
    }

    /// `8 B`, `16 KiB`, `1 MiB`.
    static func bytes(_ count: Int) -> String {
        switch count {
        case ..<1024: "\(count) B"
        case ..<(1 << 20): "\(count >> 10) KiB"
        default: "\(count >> 20) MiB"
        }
    }
}
