import ArgumentParser
import DemoWorkloads
import ForkKit
import ForkPool
import ForkRPC
import Foundation
import LoopbackSSH

/// `forkkit-bench remote`: what the SSH transport costs, on loopback: a worker's start, one call,
/// and maps over one local + one remote worker against two local ones.
struct RemoteBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "remote",
        abstract: "Remote workers through a real sshd on 127.0.0.1 against local workers: start, call, maps."
    )

    @OptionGroup var options: BenchmarkOptions

    func run() async throws {
        var run = try BenchmarkRun("remote", options: options)
        let (rounds, log) = (run.rounds, run.log)
        if let reason = SSHServer.unavailableReason {
            run.report.skipped.append(("remote", reason))
            return try run.finish(json: options.json)
        }
        let sshd = try SSHServer()
        defer { sshd.stop() }
        let executable = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")
        let local = try await ForkTemplate.shared
        let overSSH = RemoteTemplate.ssh(host: "127.0.0.1", executable: executable, options: sshd.clientOptions)
        // The same stdin/stdout protocol without ssh: separates the transport's cost from the protocol's.
        let overPipes = RemoteTemplate(command: [executable, RemoteTemplate.remoteFlag], name: "direct command")
        let launchers: [(String, any ChildLauncher)] = [("local_fork", local), ("ssh", overSSH), ("direct_command", overPipes)]

        let calls = options.quick ? 200 : 2000
        let items = options.quick ? 20_000 : 200_000
        let ranges = PrimeCounting.ranges(below: options.quick ? 1_000_000 : 6_000_000, pieces: 100)
        let pools = (
            local: try await PoolBenchmark.pool(local: 2),
            mixed: try await PoolBenchmark.pool(local: 1, remote: overSSH)
        )

        var samples: [String: [Double]] = [:]
        for round in 1...rounds {
            log.say("round \(round)/\(rounds): worker start and one call (local, ssh, direct command); maps on 2 local vs 1 local + 1 ssh")
            for (name, launcher) in launchers {
                let started = ContinuousClock.now
                let client = try await RPCClient.start(launcher, running: "pool-bench")
                samples["\(name)_worker_start_ms", default: []].append((ContinuousClock.now - started).seconds * 1000)
                samples["\(name)_call_rtt_us", default: []].append(try await PoolBenchmark.latency(calls: calls) {
                    try await client.call(PoolBenchmark.square, $0)
                })
                _ = try await client.close()
            }
            for (name, pool) in [("local_pool", pools.local), ("mixed_pool", pools.mixed)] {
                samples["\(name)_map_square_items_per_s", default: []].append(try await PoolBenchmark.mapRate(pool, items: items))
                samples["\(name)_primes_ms", default: []].append(try await 1000 * PoolBenchmark.time {
                    _ = try await pool.map(PrimeCounting.countPrimes, ranges)
                })
            }
        }
        await pools.local.shutdown()
        await pools.mixed.shutdown()
        for (name, values) in samples.sorted(by: { $0.key < $1.key }) { run.report.record(name, rounds: values) }

        run.report.target("mixed_vs_local_primes_time", "mixed_pool_primes_ms", over: "local_pool_primes_ms", atMost: 1.15,
                          "CPU-bound map (primes, 100 uneven ranges): 1 local + 1 ssh worker over 2 local workers (same 2 cores)")
        run.report.target("mixed_vs_local_map_rate", "mixed_pool_map_square_items_per_s", over: "local_pool_map_square_items_per_s", atLeast: 0.5,
                          "map of x*x, automatic chunks: items/s on 1 local + 1 ssh worker over 2 local workers")
        run.report.target("ssh_call_vs_local_call", "ssh_call_rtt_us", over: "local_fork_call_rtt_us", atMost: 5,
                          "one call at a time: through ssh (two more processes, encryption) over a local worker's socket")
        run.report.notes.append("every remote worker is a new process (ssh + the program started afresh, initializers replayed); a fork is not")
        try run.finish(json: options.json)
    }
}
