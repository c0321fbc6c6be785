import ArgumentParser
import ForkKit
import Foundation

/// `forkkit-bench spawn`: processes created per second, against Perl's AnyEvent::Fork and a C loop,
/// with the parent grown large, with large data shared through a template, and fresh templates.
struct SpawnBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "spawn",
        abstract: "Processes created per second: fork from a template, run a function that exits, see it exit."
    )

    @OptionGroup var options: BenchmarkOptions

    @Option(help: "Processes per round.")
    var iterations: Int?

    func run() async throws {
        let iterations = self.iterations ?? (options.quick ? 100 : 1000)
        let parentSizes = options.quick ? [200] : [200, 2000]
        let sharedSize = options.quick ? 100 : 1000
        var run = try BenchmarkRun("spawn", options: options)
        let (rounds, log, scratch, templatePath) = (run.rounds, run.log, run.scratch, run.templatePath)
        let template = try await ForkTemplate.spawn(executable: templatePath)

        // 1. Side by side with the peers, rounds interleaved so that noise hits all alike.
        var peers: [Peer] = []
        for candidate in [Peer.perlAnyEventFork(in: scratch), Peer.cFloor(in: scratch)] {
            switch candidate {
            case .success(let peer): peers.append(peer)
            case .failure(let failure):
                let name = failure.description.contains("perl") || failure.description.contains("AnyEvent") ? "perl_anyevent_fork_new_run_exit_per_s" : "c_socketpair_fork_exit_per_s"
                run.report.skipped.append((name, failure.description))
            }
        }
        let ours = "template_fork_run_exit_per_s"
        // The same with the children's output captured (ChildOutput): two pipes per child.
        let captured = "template_fork_run_exit_output_captured_per_s"
        let discard = ChildOutput { _ in }
        var samples: [String: [Double]] = [:]
        _ = try await Self.forkRate(template, iterations: min(iterations, 100))  // warm-up
        for round in 1...rounds {
            log.say("round \(round)/\(rounds): ForkKit, ForkKit capturing output, \(peers.map(\.metric).joined(separator: ", "))")
            samples[ours, default: []].append(try await Self.forkRate(template, iterations: iterations))
            samples[captured, default: []].append(try await Self.forkRate(template, iterations: iterations, output: discard))
            for peer in peers {
                do {
                    samples[peer.metric, default: []].append(try peer.rate(iterations: iterations))
                } catch {
                    run.report.notes.append("\(peer.metric) failed: \(error)")
                }
            }
        }
        for (name, values) in samples.sorted(by: { $0.key < $1.key }) where !values.isEmpty {
            run.report.record(name, rounds: values)
        }

        // 2. The parent grows: the template does not care; a manual fork of the parent does.
        var grown: [UnsafeMutableRawPointer] = []
        defer { grown.forEach { free($0) } }
        var grownMegabytes = 0
        for size in parentSizes {
            log.say("growing this process to \(size) MB of touched memory")
            let extra = (size - grownMegabytes) << 20
            guard let block = malloc(extra) else { throw PeerFailure(description: "cannot allocate \(size) MB") }
            memset(block, 1, extra)
            grown.append(block)
            grownMegabytes = size
            var rates: [Double] = []
            for _ in 1...rounds { rates.append(try await Self.forkRate(template, iterations: iterations)) }
            run.report.record("template_fork_run_exit_parent_\(size)mb_per_s", rounds: rates)
            run.report.record("manual_fork_parent_\(size)mb_per_s", Self.manualForkRate(iterations: options.quick ? 5 : 20))
        }
        grown.forEach { free($0) }
        grown = []

        // 3. Large data loaded into a template: in a shared region it costs nothing at fork; on the
        //    ordinary heap every fork copies its page tables.
        log.say("loading \(sharedSize) MB into a shared region of one template, and onto the heap of another")
        let empty = try await ForkTemplate.spawn(executable: templatePath)
        let shared = try await ForkTemplate.spawn(executable: templatePath)
        try await shared.initialize("shared-region", arguments: ["\(sharedSize)"])
        var emptyRates: [Double] = [], sharedRates: [Double] = []
        for _ in 1...rounds {
            emptyRates.append(try await Self.forkRate(empty, iterations: iterations))
            sharedRates.append(try await Self.forkRate(shared, iterations: iterations))
        }
        run.report.record("template_fork_run_exit_empty_template_per_s", rounds: emptyRates)
        run.report.record("template_fork_run_exit_shared_\(sharedSize)mb_per_s", rounds: sharedRates)
        let heavy = try await ForkTemplate.spawn(executable: templatePath)
        try await heavy.initialize("private-heap", arguments: ["\(sharedSize)"])
        run.report.record("template_fork_run_exit_private_heap_\(sharedSize)mb_per_s",
                      try await Self.forkRate(heavy, iterations: options.quick ? 5 : 20))

        // 4. Starting a fresh template (posix_spawn, exec, hello).
        log.say("spawning fresh templates")
        var spawnRates: [Double] = []
        for _ in 1...rounds {
            let count = options.quick ? 5 : 30
            let clock = ContinuousClock()
            let start = clock.now
            for _ in 0..<count { _ = try await ForkTemplate.spawn(executable: templatePath) }
            spawnRates.append(Double(count) / (clock.now - start).seconds)
        }
        run.report.record("template_spawn_per_s", rounds: spawnRates)

        run.report.target("vs_perl_anyevent_fork", ours, over: "perl_anyevent_fork_new_run_exit_per_s", atLeast: 1.5,
                      "fork+run+exit through a template vs Perl's AnyEvent::Fork->new->run")
        run.report.target("vs_c_floor", ours, over: "c_socketpair_fork_exit_per_s", atLeast: 0.5,
                      "vs a plain C socketpair+fork+_exit+wait loop")
        if let plainRounds = samples[ours], let capturedRounds = samples[captured] {
            let (plain, withOutput) = (median(plainRounds), median(capturedRounds))
            run.report.notes.append(String(
                format: "Capturing the children's output (ChildOutput) costs %.0f%% of the fork+run+exit rate (%.0f vs %.0f per s, medians).",
                (1 - withOutput / plain) * 100, withOutput, plain))
        }
        run.report.target("parent_\(parentSizes.last!)mb_vs_small", "template_fork_run_exit_parent_\(parentSizes.last!)mb_per_s",
                      over: ours, atLeast: 0.9, "the template's rate with a \(parentSizes.last!) MB parent vs a small one")
        run.report.target("shared_\(sharedSize)mb_vs_empty", "template_fork_run_exit_shared_\(sharedSize)mb_per_s",
                      over: "template_fork_run_exit_empty_template_per_s", atLeast: 0.8,
                      "a template holding \(sharedSize) MB in a shared region vs an empty one")
        try run.finish(json: options.json)
    }

    /// Forks `iterations` children one at a time, each running a function that returns at once, and
    /// waits until the template has reaped each: processes per second.
    static func forkRate(_ template: ForkTemplate, iterations: Int, output: ChildOutput? = nil) async throws -> Double {
        let clock = ContinuousClock()
        let start = clock.now
        for _ in 0..<iterations {
            let status = try await template.fork(running: "exit-now", output: output).exitStatus()
            guard status.isSuccess else { throw PeerFailure(description: "a benchmark child ended with \(status)") }
        }
        return Double(iterations) / (clock.now - start).seconds
    }

    /// `fork` of this (large) process itself, the child exiting at once: what a template avoids.
    static func manualForkRate(iterations: Int) -> Double {
        let clock = ContinuousClock()
        let start = clock.now
        for _ in 0..<iterations {
            let pid = fork()
            if pid == 0 { _exit(0) }
            var status: Int32 = 0
            waitpid(pid, &status, 0)
        }
        return Double(iterations) / (clock.now - start).seconds
    }

    /// The small template built next to this binary, or this binary itself (with a note) if it is missing.
    static func templateExecutable() -> (String, String?) {
        let own = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        let small = (own as NSString).deletingLastPathComponent + "/forkkit-bench-template"
        if FileManager.default.isExecutableFile(atPath: small) { return (small, nil) }
        return (own, "forkkit-bench-template was not built, so this binary (with Foundation) served as the template; "
                + "build it with `swift build -c release` for the intended figures")
    }
}

/// Progress lines on standard error, so that `--json` output stays clean.
struct Progress {
    let quiet: Bool
    func say(_ line: String) {
        guard !quiet else { return }
        FileHandle.standardError.write(Data("… \(line)\n".utf8))
    }
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
