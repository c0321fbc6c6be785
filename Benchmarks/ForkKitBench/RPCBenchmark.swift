import ArgumentParser
import CMsgPack
import ForkKit
import ForkRPC
import Foundation
import InMemoryTracing
import Tracing
import MessagePack
import MessagePackMacros

/// `forkkit-bench rpc`: calls over worker sockets, against a C ping-pong floor and Python's
/// multiprocessing, plus the cost of the Codable layer against raw msgpack-c.
struct RPCBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rpc",
        abstract: "Round-trip latency, throughput on 2 workers, 1 MiB payloads, and MessagePack coding cost."
    )

    @OptionGroup var options: BenchmarkOptions

    static let square = RPCFunction<Int, Int>("square")
    static let echo = RPCFunction<[UInt8], [UInt8]>("echo-bytes")
    static let bytes = RPCFunction<Int, [UInt8]>("bytes")
    static let squareTraced = RPCFunction<Int, Int>("square-traced")

    func run() async throws {
        let calls = options.quick ? 300 : 3000
        var run = try BenchmarkRun("rpc", options: options)
        let (rounds, log, scratch, templatePath) = (run.rounds, run.log, run.scratch, run.templatePath)
        let template = try await ForkTemplate.spawn(executable: templatePath)
        let first = try await RPCClient.start(template, running: "rpc-bench")
        let second = try await RPCClient.start(template, running: "rpc-bench")
        let spinning = try await RPCClient.start(template, running: "rpc-bench-spin")

        var floor: Peer?, python: Peer?
        switch Peer.cPingPong(in: scratch) {
        case .success(let peer): floor = peer
        case .failure(let failure): run.report.skipped.append(("c_pingpong_rtt_us", failure.description))
        }
        switch Peer.pythonMultiprocessing(in: scratch) {
        case .success(let peer): python = peer
        case .failure(let failure): run.report.skipped.append(("python_pool_apply_rtt_us", failure.description))
        }

        var samples: [String: [Double]] = [:]
        _ = try await Self.latency(first, calls: 200)
        for round in 1...rounds {
            log.say("round \(round)/\(rounds): latency, throughput, 1 MiB echo, peers")
            samples["forkkit_call_rtt_us", default: []].append(try await Self.latency(first, calls: calls))
            samples["forkkit_call_rtt_io_executor_us", default: []].append(
                try await withTaskExecutorPreference(ForkTemplate.ioExecutor) { try await Self.latency(first, calls: calls) })
            samples["forkkit_call_rtt_spin_us", default: []].append(try await Self.spinningLatency(spinning, calls: calls))
            let (rate, monitorSeconds) = try await MonitorThread.cpuSeconds { try await Self.throughput([first, second], calls: calls * 10) }
            samples["forkkit_2_workers_calls_per_s", default: []].append(rate)
            if let monitorSeconds { samples["monitor_thread_cpu_ns_per_call", default: []].append(monitorSeconds * 1e9 / Double(calls * 10)) }
            samples["forkkit_2_workers_io_executor_calls_per_s", default: []].append(
                try await withTaskExecutorPreference(ForkTemplate.ioExecutor) { try await Self.throughput([first, second], calls: calls * 10) })
            samples["forkkit_echo_1mib_gb_per_s", default: []].append(try await Self.echoRate(first, calls: options.quick ? 5 : 20))
            if let floor {
                for (name, value) in try floor.measure(arguments: ["\(calls * 3)"]) { samples[name, default: []].append(value) }
            }
            if let python {
                for (name, value) in try python.measure(arguments: ["\(calls / 3)"]) { samples[name, default: []].append(value) }
            }
        }
        log.say("tail latency, alone and while another worker streams 64 MiB results")
        let streamer = try await RPCClient.start(template, running: "rpc-bench", maximumMessageSize: 128 << 20)
        for _ in 1...rounds {
            samples["forkkit_64mib_results_per_s", default: []].append(try await 10 / PoolBenchmark.time {
                for _ in 0..<10 { _ = try await streamer.call(Self.bytes, 64 << 20) }
            })
            let tailCalls = options.quick ? 3000 : 20000
            let alone = try await PoolBenchmark.roundTrips(calls: tailCalls) { try await first.call(Self.square, $0) }.sorted()
            let (loaded, streamed) = try await Self.underStreamingLoad(streamer) {
                try await PoolBenchmark.roundTrips(calls: tailCalls) { try await first.call(Self.square, $0) }.sorted()
            }
            for (name, times) in [("alone", alone), ("under_64mib_stream", loaded)] {
                samples["forkkit_call_p99_\(name)_us", default: []].append(percentile(times, 0.99))
                samples["forkkit_call_p999_\(name)_us", default: []].append(percentile(times, 0.999))
                samples["forkkit_call_max_\(name)_us", default: []].append(times.last ?? 0)
            }
            samples["forkkit_streamed_64mib_results", default: []].append(Double(streamed))
        }
        _ = try await streamer.close()

        // Traced calls last, in rounds of their own: right after a round of traced calls on the I/O
        // executor, untraced calls there were 2-3x slower for about 2 s (seen 2026-11-28, not yet
        // explained), which would have spoiled the figures measured after them.
        log.say("traced calls")
        for _ in 1...rounds {
            samples["forkkit_call_rtt_traced_us", default: []].append(try await Self.tracedLatency(first, calls: calls))
            // What swift-distributed-tracing's async `withSpan` costs by itself around an untraced
            // call (no tracer: nothing is sent), which is mostly a hop between threads of its own,
            // and the traced call with no thread hop at all (the caller on the I/O thread).
            samples["forkkit_call_rtt_in_noop_span_us", default: []].append(try await PoolBenchmark.latency(calls: calls) { number in
                try await withSpan("call") { _ in try await first.call(Self.square, number) }
            })
            samples["forkkit_call_rtt_traced_io_executor_us", default: []].append(
                try await withTaskExecutorPreference(ForkTemplate.ioExecutor) { try await Self.tracedLatency(first, calls: calls) })
        }
        // What the traced calls left behind settles before the next benchmark.
        try await Task.sleep(for: .seconds(3))
        log.say("coding cost")
        let iterations = options.quick ? 20_000 : 200_000
        samples["codable_request_encode_decode_ns"] = (1...rounds).map { _ in Self.codableCost(iterations: iterations) }
        samples["msgpack_c_request_pack_unpack_ns"] = (1...rounds).map { _ in Self.rawCost(iterations: iterations) }
        samples["macro_request_encode_decode_ns"] = (1...rounds).map { _ in Self.macroCost(iterations: iterations) }
        for (name, values) in samples.sorted(by: { $0.key < $1.key }) { run.report.record(name, rounds: values) }
        _ = try await first.close()
        _ = try await second.close()
        _ = try await spinning.close()

        run.report.target("rtt_vs_c_pingpong", "forkkit_call_rtt_us", over: "c_pingpong_rtt_us", atMost: 1.5,
                      "one call at a time vs a blocking C socketpair ping-pong")
        run.report.target("rtt_io_executor_vs_c_pingpong", "forkkit_call_rtt_io_executor_us", over: "c_pingpong_rtt_us", atMost: 1.5,
                      "the same, with the caller preferring ForkTemplate.ioExecutor (no thread hop on the way back)")
        run.report.target("rtt_vs_python_apply", "forkkit_call_rtt_us", over: "python_pool_apply_rtt_us", atMost: 0.5,
                      "one call at a time vs Python multiprocessing pool.apply")
        run.report.target("throughput_vs_python_map", "forkkit_2_workers_calls_per_s", over: "python_pool_map_chunksize1_calls_per_s", atLeast: 5,
                      "x*x on 2 workers, many calls in flight, vs Pool(2).map(chunksize=1)")
        run.report.target("throughput_io_executor_vs_python_map", "forkkit_2_workers_io_executor_calls_per_s",
                      over: "python_pool_map_chunksize1_calls_per_s", atLeast: 5, "the same, callers preferring ForkTemplate.ioExecutor")
        run.report.target("echo_1mib_gb_per_s", "forkkit_echo_1mib_gb_per_s", atLeast: 1,
                      "1 MiB bin argument echoed back, GB of argument per second")
        run.report.target("codable_vs_msgpack_c", "codable_request_encode_decode_ns", over: "msgpack_c_request_pack_unpack_ns", atMost: 2,
                      "[0, 1, \"square\", [12345]] through the Codable layer vs raw msgpack-c")
        run.report.target("macro_codable_vs_msgpack_c", "macro_request_encode_decode_ns", over: "msgpack_c_request_pack_unpack_ns", atMost: 2,
                      "the same request with a @MessagePackCodable type vs raw msgpack-c")
        run.report.target("p99_under_stream_vs_alone", "forkkit_call_p99_under_64mib_stream_us", over: "forkkit_call_p99_alone_us", atMost: 2,
                          "one call at a time to worker A while worker B streams 64 MiB results, p99 vs A alone")
        run.report.target("p999_under_stream_us", "forkkit_call_p999_under_64mib_stream_us", atMost: 1000,
                          "the same, p99.9 in microseconds")
        run.report.target("spin_rtt_vs_c_spin_pingpong", "forkkit_call_rtt_spin_us", over: "c_pingpong_spin_rtt_us", atMost: 2,
                          "low-latency mode (worker and monitor spin 100 us, caller on ioExecutor) vs a spinning C ping-pong")
        run.report.target("python_apply_vs_spin_rtt", "python_pool_apply_rtt_us", over: "forkkit_call_rtt_spin_us", atLeast: 30,
                          "Python pool.apply's round trip over the low-latency mode's")
        try run.finish(json: options.json)
    }

    /// Median round trip of one call at a time, in microseconds.
    static func latency(_ client: RPCClient, calls: Int) async throws -> Double {
        try await PoolBenchmark.latency(calls: calls) { try await client.call(square, $0) }
    }

    /// Median round trip of one traced call at a time, in microseconds: each call inside a span of
    /// an in-memory tracer bound with `withTracer`, so that it carries `$context`; the worker opens
    /// one span, which comes back (`$spans`) and is replayed into the tracer.
    static func tracedLatency(_ client: RPCClient, calls: Int) async throws -> Double {
        let tracer = InMemoryTracer(recordInjections: false, recordExtractions: false)
        defer { tracer.clearAll() }
        return try await withTracer(tracer) {
            try await PoolBenchmark.latency(calls: calls) { number in
                try await withSpan("call") { _ in try await client.call(squareTraced, number) }
            }
        }
    }

    /// The low-latency mode: the worker spins, the monitor thread spins, the caller runs on it.
    static func spinningLatency(_ client: RPCClient, calls: Int) async throws -> Double {
        DescriptorMonitor.shared.spinBeforeSleeping = .microseconds(100)
        defer { DescriptorMonitor.shared.spinBeforeSleeping = .zero }
        return try await withTaskExecutorPreference(ForkTemplate.ioExecutor) { try await latency(client, calls: calls) }
    }

    /// Runs `body` while `streamer` is asked for 64 MiB results one after another; returns what
    /// `body` returned and how many results were streamed meanwhile.
    static func underStreamingLoad<Result: Sendable>(
        _ streamer: RPCClient, size: Int = 64 << 20, _ body: () async throws -> Result
    ) async throws -> (Result, Int) {
        let load = Task {
            var streamed = 0
            while !Task.isCancelled {
                guard (try? await streamer.call(bytes, size))?.count == size else { break }
                streamed += 1
            }
            return streamed
        }
        // The load is under way before the first measured call.
        try await Task.sleep(for: .milliseconds(50))
        let result = try await body()
        load.cancel()
        return (result, await load.value)
    }

    /// Calls per second with many calls in flight, spread over the workers.
    static func throughput(_ clients: [RPCClient], calls: Int) async throws -> Double {
        try await throughput(lanes: clients.count, calls: calls) { lane, value in try await clients[lane].call(square, value) }
    }

    /// Calls per second with 64 calls in flight, spread over `lanes` workers; `call(lane, value)`
    /// squares `value` on worker `lane` (an RPC client's call, or a distributed actor's).
    static func throughput(lanes: Int, calls: Int, _ call: @escaping @Sendable (Int, Int) async throws -> Int) async throws -> Double {
        let clock = ContinuousClock()
        let start = clock.now
        let inFlight = 64
        try await withThrowingTaskGroup(of: Void.self) { group in
            for lane in 0..<inFlight {
                group.addTask {
                    for value in stride(from: lane, to: calls, by: inFlight) {
                        guard try await call(lane % lanes, value) == value * value else { throw PeerFailure(description: "wrong square") }
                    }
                }
            }
            try await group.waitForAll()
        }
        return Double(calls) / (clock.now - start).seconds
    }

    /// GB of argument per second for a 1 MiB bin echoed back.
    static func echoRate(_ client: RPCClient, calls: Int) async throws -> Double {
        let payload = [UInt8](repeating: 0x5a, count: 1 << 20)
        let clock = ContinuousClock()
        let start = clock.now
        for _ in 0..<calls {
            guard try await client.call(echo, payload).count == payload.count else { throw PeerFailure(description: "short echo") }
        }
        return Double(calls * payload.count) / (clock.now - start).seconds / 1e9
    }

    /// `[0, 1, "square", [12345]]` as a Codable value.
    struct Request: Codable {
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

    /// Nanoseconds per encode + decode through MessagePackEncoder and MessagePackDecoder.
    static func codableCost(iterations: Int) -> Double {
        roundTripCost(Request(type: 0, id: 1, method: "square", params: [12345]), iterations: iterations) { $0.params[0] }
    }

    /// Nanoseconds per encode of `request` to bytes and decode back, through MessagePackEncoder and
    /// MessagePackDecoder; `check` reads 12345 from the decoded value.
    static func roundTripCost<Value: Codable>(_ request: Value, iterations: Int, check: (Value) -> Int) -> Double {
        let encoder = MessagePackEncoder(), decoder = MessagePackDecoder()
        var sum = 0
        let clock = ContinuousClock()
        let start = clock.now
        for _ in 0..<iterations {
            let bytes = try! encoder.encode(request)
            sum &+= check(try! decoder.decode(Value.self, from: bytes))
        }
        precondition(sum == 12345 &* iterations)
        return (clock.now - start).seconds * 1e9 / Double(iterations)
    }

    /// The same request with no coding code: `@MessagePackCodable` writes its conformances.
    @MessagePackCodable(layout: .array)
    struct MacroRequest {
        var type: Int
        var id: Int
        var method: String
        var params: [Int]
    }

    /// Nanoseconds per encode + decode of ``MacroRequest`` through the same public entry points
    /// (MessagePackEncoder and MessagePackDecoder, which take its generated conformance).
    static func macroCost(iterations: Int) -> Double {
        roundTripCost(MacroRequest(type: 0, id: 1, method: "square", params: [12345]), iterations: iterations) { $0.params[0] }
    }

    /// Nanoseconds per pack + unpack of the same message with msgpack-c directly.
    static func rawCost(iterations: Int) -> Double {
        let buffer = msgpack_sbuffer_new()!
        let packer = msgpack_packer_new(UnsafeMutableRawPointer(buffer), msgpack_sbuffer_write)!
        var unpacked = msgpack_unpacked()
        msgpack_unpacked_init(&unpacked)
        defer {
            msgpack_unpacked_destroy(&unpacked)
            msgpack_packer_free(packer)
            msgpack_sbuffer_free(buffer)
        }
        var check = 0
        let clock = ContinuousClock()
        let start = clock.now
        for _ in 0..<iterations {
            msgpack_sbuffer_clear(buffer)
            msgpack_pack_array(packer, 4)
            msgpack_pack_int(packer, 0)
            msgpack_pack_int(packer, 1)
            msgpack_pack_str(packer, 6)
            msgpack_pack_str_body(packer, "square", 6)
            msgpack_pack_array(packer, 1)
            msgpack_pack_int(packer, 12345)
            var offset = 0
            _ = msgpack_unpack_next(&unpacked, buffer.pointee.data, buffer.pointee.size, &offset)
            check &+= Int(unpacked.data.via.array.ptr[3].via.array.ptr[0].via.u64)
        }
        precondition(check == 12345 &* iterations)
        return (clock.now - start).seconds * 1e9 / Double(iterations)
    }
}
