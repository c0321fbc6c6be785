// ForkKit's hot path in ordo-one/benchmark: the codec, one call, one batch, one fork.
//
// Each benchmark runs in a process of its own (the harness starts one per benchmark), and measures
// wall clock and heap allocations (the malloc interposer counts every thread of the process, so the
// I/O thread's allocations for a call are counted too).
//
// Thresholds, checked by `swift package benchmark thresholds check` / `baseline check`
// (scripts/microbench.sh; the root README, "Microbenchmarks (ordo-one/benchmark)"):
//   - allocations: Thresholds/ForkKitMicro.<name>.p90.json holds each benchmark's p90 allocation
//     count (committed, written by `thresholds update --metric mallocCountTotal` on the measured
//     values); `allocations` below is how far a run may stray from it.
//   - time: relative to a saved baseline (`baseline update NAME`, then `baseline check NAME`), with
//     the tolerances of `time` below; never against a committed figure, since time is per machine.
//
// Benchmark names have no spaces or slashes: 1.38.1 writes a thresholds file with those replaced
// by "_" but looks it up by the name as it is, so such a benchmark would never be checked.
import Benchmark
import ForkKit
import ForkRPC
import Foundation
import MessagePack

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .mallocCountTotal],
        timeUnits: .microseconds,
        warmupIterations: 10,
        maxDuration: .seconds(2),
        maxIterations: 10_000
    )

    // MARK: Codec

    let request = Request(type: 0, id: 1, method: "square", params: [12345])
    Benchmark(
        "codec_request_round_trip",
        configuration: .init(
            timeUnits: .nanoseconds, warmupIterations: 1000, maxIterations: 100_000,
            thresholds: tolerances(allocations: 0, time: .cpuBound))
    ) { benchmark in
        let encoder = MessagePackEncoder(), decoder = MessagePackDecoder()
        benchmark.startMeasurement()
        let bytes = try encoder.encode(request)
        let decoded = try decoder.decode(Request.self, from: bytes)
        benchmark.stopMeasurement()
        guard decoded.params == [12345] else { return benchmark.error("decoded \(decoded)") }
    }

    let record = Record(count: 42, ratio: 0.75, name: "eight ch")
    Benchmark(
        "codec_struct_round_trip",
        configuration: .init(
            timeUnits: .nanoseconds, warmupIterations: 1000, maxIterations: 100_000,
            thresholds: tolerances(allocations: 0, time: .cpuBound))
    ) { benchmark in
        let encoder = MessagePackEncoder(), decoder = MessagePackDecoder()
        benchmark.startMeasurement()
        let bytes = try encoder.encode(record)
        let decoded = try decoder.decode(Record.self, from: bytes)
        benchmark.stopMeasurement()
        guard decoded == record else { return benchmark.error("decoded \(decoded)") }
    }

    // MARK: One call, one batch

    let worker = Fixture<RPCClient>()
    let square = RPCFunction<Int, Int>("square")

    Benchmark(
        "rpc_call",
        configuration: .init(
            thresholds: tolerances(allocations: 1, time: .roundTrip),
            setup: { try await worker.start { try await startWorker() } },
            teardown: { try await worker.stop { _ = try await $0.close() } })
    ) { benchmark in
        let result = try await worker.value.call(square, 12345)
        benchmark.stopMeasurement()
        guard result == 12345 * 12345 else { return benchmark.error("square(12345) returned \(result)") }
    }

    let inputs = Array(0..<100)
    Benchmark(
        "rpc_call_batch_100",
        configuration: .init(
            thresholds: tolerances(allocations: 2, time: .roundTrip),
            setup: { try await worker.start { try await startWorker() } },
            teardown: { try await worker.stop { _ = try await $0.close() } })
    ) { benchmark in
        let results = try await worker.value.callBatch(square, inputs)
        benchmark.stopMeasurement()
        guard results.count == 100, case .success(9801) = results[99] else {
            return benchmark.error("callBatch returned \(results.count) results, the last \(String(describing: results.last))")
        }
    }

    // MARK: One fork

    let template = Fixture<ForkTemplate>()
    Benchmark(
        "fork_exit_now",
        configuration: .init(
            maxIterations: 2_000,
            thresholds: tolerances(allocations: 3, time: .fork),
            setup: { try await template.start { try await startTemplate() } },
            teardown: { try await template.stop { _ in } })
    ) { benchmark in
        let status = try await template.value.fork(running: "exit-now").exitStatus()
        benchmark.stopMeasurement()
        guard status.isSuccess else { return benchmark.error("the child ended with \(status)") }
    }
}

// MARK: - Thresholds

/// How much slower than the saved baseline a benchmark may run before `baseline check` fails, in
/// percent of the baseline's percentile. Set above the spread of repeated runs on a shared 2-core VM
/// (the codec's median moved 1% to 2%, a call's p75 up to 18%): a smaller regression is not told
/// apart from noise there.
enum TimeTolerance {
    /// The codec: no I/O, no other thread; the median moves least.
    case cpuBound
    /// A round trip through a worker process: two thread wake-ups, the scheduler's noise.
    case roundTrip
    /// fork, exit, reap: the kernel's work for a whole process.
    case fork

    var relative: BenchmarkThresholds.RelativeThresholds {
        switch self {
        case .cpuBound: [.p50: 15, .p75: 20]
        case .roundTrip: [.p50: 25, .p75: 30]
        case .fork: [.p50: 25, .p75: 30]
        }
    }
}

/// The tolerances of one benchmark: `allocations` is how many heap allocations (at p90) above or
/// below its committed thresholds file (or the saved baseline) a run may have; `time`, how far its
/// wall clock may move from the saved baseline.
func tolerances(allocations: Int, time: TimeTolerance) -> [BenchmarkMetric: BenchmarkThresholds] {
    [
        .mallocCountTotal: .init(absolute: [.p90: allocations]),
        .wallClock: .init(relative: time.relative),
    ]
}

// MARK: - Workers and templates

/// The small template next to this binary (target `microbench-template`, built with it), without
/// the malloc interposer: the harness preloads it into this process with `LD_PRELOAD`, which a
/// spawned template would inherit (it links the Swift runtime statically, and has no use for it).
func startTemplate() async throws -> ForkTemplate {
    let own = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")
    let path = URL(fileURLWithPath: own).deletingLastPathComponent().appendingPathComponent("microbench-template").path
    guard FileManager.default.isExecutableFile(atPath: path) else {
        throw BenchmarkSetupError(description: "\(path) is missing: build the package (swift build -c release) so that it is next to \(own)")
    }
    unsetenv("LD_PRELOAD")
    // A template that links the runtime statically cannot find swift-backtrace, and says so on
    // standard error each time it starts; a crash still ends the worker, and the benchmark with it.
    setenv("SWIFT_BACKTRACE", "enable=no", 0)
    return try await ForkTemplate.spawn(executable: path)
}

/// A worker forked from a fresh template, serving `square`, checked once before it is measured.
func startWorker() async throws -> RPCClient {
    let template = try await startTemplate()
    let client = try await RPCClient.start(template, running: "square")
    guard try await client.call(RPCFunction<Int, Int>("square"), 3) == 9 else {
        throw BenchmarkSetupError(description: "the worker's square(3) is not 9")
    }
    return client
}

struct BenchmarkSetupError: Error, CustomStringConvertible {
    var description: String
}

/// What a benchmark's setup made and its closure and teardown use. The harness runs each benchmark
/// in a process of its own, setup before the first iteration and teardown after the last, never at
/// the same time as an iteration.
final class Fixture<Value: Sendable>: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: Value?

    var value: Value {
        lock.withLock { stored! }
    }

    func start(_ make: () async throws -> Value) async throws {
        let made = try await make()
        lock.withLock { stored = made }
    }

    func stop(_ end: (Value) async throws -> Void) async throws {
        guard let value = lock.withLock({ stored.take() }) else { return }
        try await end(value)
    }
}

// MARK: - Coded values

/// `[0, 1, "square", [12345]]`: a request as the wire carries it, through the Codable layer.
struct Request: Codable, Equatable {
    var type: Int, id: Int, method: String, params: [Int]

    init(type: Int, id: Int, method: String, params: [Int]) {
        self.type = type; self.id = id; self.method = method; self.params = params
    }

    init(from decoder: any Decoder) throws {
        var container = try decoder.unkeyedContainer()
        type = try container.decode(Int.self)
        id = try container.decode(Int.self)
        method = try container.decode(String.self)
        params = try container.decode([Int].self)
    }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.unkeyedContainer()
        try container.encode(type)
        try container.encode(id)
        try container.encode(method)
        try container.encode(params)
    }
}

/// A small struct with synthesized (keyed) Codable conformances: what a typical call's argument is.
struct Record: Codable, Equatable {
    var count: Int
    var ratio: Double
    var name: String
}
