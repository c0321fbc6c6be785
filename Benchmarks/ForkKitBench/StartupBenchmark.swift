import ArgumentParser
import ForkKit
import ForkPool
import Foundation

/// `forkkit-bench startup`: what a pool costs before its first result, and what an idle worker
/// keeps for itself, against Python's `Pool(2)` with each start method, in the same rounds.
struct StartupBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "startup",
        abstract: "A fresh pool of 2 to its first result (template start included, or not) and an idle worker's private memory, vs Python's Pool(2)."
    )

    @OptionGroup var options: BenchmarkOptions

    static let square = RPCFunction<Int, Int>("square")

    func run() async throws {
        var run = try BenchmarkRun("startup", options: options)
        let (rounds, log, scratch, templatePath) = (run.rounds, run.log, run.scratch, run.templatePath)
        var python: Peer?
        switch Peer.pythonStartup(in: scratch) {
        case .success(let peer): python = peer
        case .failure(let failure): run.report.skipped.append(("python_pool_first_result_ms", failure.description))
        }
        var configuration = WorkerPool.Configuration()
        configuration.maximumWorkers = 2
        configuration.metricsPrefix = nil
        var samples: [String: [Double]] = [:]
        let warm = try await ForkTemplate.spawn(executable: templatePath)
        for round in 1...rounds {
            log.say("round \(round)/\(rounds): a fresh pool of 2 to its first result, from a new template and from a running one; an idle worker's USS; Python")
            let clock = ContinuousClock()
            var start = clock.now
            let template = try await ForkTemplate.spawn(executable: templatePath)
            let coldPool = try await WorkerPool(template: template, running: "rpc-bench", configuration: configuration)
            _ = try await coldPool.call(Self.square, 3)
            samples["pool_first_result_with_template_start_ms", default: []].append((clock.now - start).milliseconds)
            await coldPool.shutdown()

            start = clock.now
            let warmPool = try await WorkerPool(template: warm, running: "rpc-bench", configuration: configuration)
            _ = try await warmPool.call(Self.square, 3)
            samples["pool_first_result_template_running_ms", default: []].append((clock.now - start).milliseconds)
            // An idle synchronous worker, after one call: what it keeps for itself alone.
            try await Task.sleep(for: .milliseconds(100))
            if let pid = warmPool.statistics.workers.first?.pid, let uss = Self.uniqueKilobytes(of: pid) {
                samples["idle_sync_worker_uss_kb", default: []].append(uss)
            }
            await warmPool.shutdown()
            samples["table_100mb_4_workers_total_pss_mb", default: []].append(try await Self.sharedTablePSS(templatePath: templatePath))
            if let python {
                for (name, value) in try python.measure(arguments: []) { samples[name, default: []].append(value) }
            }
        }
        for (name, values) in samples.sorted(by: { $0.key < $1.key }) { run.report.record(name, rounds: values) }
        run.report.target("first_result_vs_python_fork", "pool_first_result_with_template_start_ms", over: "python_pool_fork_first_result_ms", atMost: 1,
                          "a fresh pool of 2 to its first result, template start included, vs Python's Pool(2) with fork")
        run.report.target("first_result_template_running_ms", "pool_first_result_template_running_ms", atMost: 1,
                          "the same with the template already running, in milliseconds")
        run.report.target("table_total_pss_mb", "table_100mb_4_workers_total_pss_mb", atMost: 150,
                          "a 100 MB table loaded into the template, read by 4 workers: total PSS of the template and the workers, in MB")
        run.report.target("idle_worker_uss_kb", "idle_sync_worker_uss_kb", atMost: 2048,
                          "an idle synchronous worker's private memory (USS, Private_Clean + Private_Dirty of smaps_rollup), in KiB")
        try run.finish(json: options.json)
    }

    /// A 100 MB table loaded into a template (a `SharedMemoryRegion`), read by 4 workers forked
    /// from it: the total PSS of the template and the workers, in MB.
    static func sharedTablePSS(templatePath: String) async throws -> Double {
        let template = try await ForkTemplate.spawn(executable: templatePath)
        try await template.initialize("shared-region", arguments: ["100"])
        var workers: [RPCClient] = []
        for _ in 0..<4 {
            let worker = try await RPCClient.start(template, running: "table-reader")
            guard try await worker.call(RPCFunction<Int, Int>("read-table"), 0) > 0 else { throw PeerFailure(description: "the table is missing") }
            workers.append(worker)
        }
        let pids = [template.pid] + workers.compactMap(\.pid)
        let total = pids.compactMap { kilobytes(of: $0, fields: ["Pss:"]) }.reduce(0, +) / 1024
        for worker in workers { _ = try await worker.close() }
        return total
    }

    /// A process's unique set size (memory no other process shares), in KiB, from /proc.
    static func uniqueKilobytes(of pid: Int32) -> Double? {
        kilobytes(of: pid, fields: ["Private_Clean:", "Private_Dirty:"])
    }

    /// The sum of `fields` of a process's /proc/PID/smaps_rollup, in KiB.
    static func kilobytes(of pid: Int32, fields: [String]) -> Double? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/smaps_rollup", encoding: .utf8) else { return nil }
        var total = 0.0
        for line in text.split(separator: "\n") where fields.contains(where: { line.hasPrefix($0) }) {
            total += Double(line.split(separator: " ").dropFirst().first ?? "0") ?? 0
        }
        return total
    }
}

extension Duration {
    /// The duration in milliseconds.
    var milliseconds: Double { Double(components.seconds) * 1e3 + Double(components.attoseconds) * 1e-15 }
}
