import ArgumentParser
import ForkActors
import ForkKit
import ForkRPC

/// The actor the benchmark calls: the same work as the RPC benchmark's `square`, as a distributed
/// function. Declared here, in the program that is also the template.
distributed actor Squarer: WorkerActor {
    typealias ActorSystem = WorkerActorSystem

    distributed func square(_ value: Int) -> Int { value * value }
}

/// `forkkit-bench actors`: a distributed actor's calls side by side with `RPCClient.call` to the
/// same kind of worker (the asynchronous backend, which actors use), in one run.
struct ActorBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "actors",
        abstract: "Distributed actor calls (ForkActors) vs RPCClient.call: round trip and throughput on 2 workers."
    )

    @OptionGroup var options: BenchmarkOptions

    /// The RPC twin of ``Squarer/square(_:)``, served by the bench binary's `rpc-bench-async` worker.
    static let square = RPCFunction<Int, Int>("square")

    func run() async throws {
        let calls = options.quick ? 300 : 3000
        var run = try BenchmarkRun("actors", options: options)
        let (rounds, log) = (run.rounds, run.log)
        let template = try await ForkTemplate.shared
        let system = WorkerActorSystem()
        let clients = [try await RPCClient.start(template, running: "rpc-bench-async"), try await RPCClient.start(template, running: "rpc-bench-async")]
        let actors = [try await system.make(Squarer.self, in: template), try await system.make(Squarer.self, in: template)]

        var samples: [String: [Double]] = [:]
        _ = try await PoolBenchmark.latency(calls: 200) { try await clients[0].call(Self.square, $0) }
        _ = try await PoolBenchmark.latency(calls: 200) { try await actors[0].square($0) }
        for round in 1...rounds {
            log.say("round \(round)/\(rounds): round trips and throughput, RPC and actors in turn")
            samples["rpc_async_call_rtt_us", default: []].append(
                try await PoolBenchmark.latency(calls: calls) { try await clients[0].call(Self.square, $0) })
            samples["actor_call_rtt_us", default: []].append(try await PoolBenchmark.latency(calls: calls) { try await actors[0].square($0) })
            samples["rpc_async_2_workers_calls_per_s", default: []].append(
                try await RPCBenchmark.throughput(clients, calls: calls * 10))
            samples["actor_2_workers_calls_per_s", default: []].append(
                try await RPCBenchmark.throughput(lanes: actors.count, calls: calls * 10) { lane, value in try await actors[lane].square(value) })
        }
        for (name, values) in samples.sorted(by: { $0.key < $1.key }) { run.report.record(name, rounds: values) }
        for client in clients { _ = try await client.close() }

        run.report.target("actor_rtt_vs_rpc_call", "actor_call_rtt_us", over: "rpc_async_call_rtt_us", atMost: 1.2,
                          "one distributed call at a time vs RPCClient.call to the same kind of worker (asynchronous backend)")
        run.report.target("actor_throughput_vs_rpc", "actor_2_workers_calls_per_s", over: "rpc_async_2_workers_calls_per_s", atLeast: 0.8,
                          "x*x on 2 workers with 64 calls in flight: distributed actors vs RPCClient.call")
        try run.finish(json: options.json)
    }
}
