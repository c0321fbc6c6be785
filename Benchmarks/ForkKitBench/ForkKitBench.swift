import ArgumentParser
import DemoWorkloads
import ForkKit
import ForkRPC
import Foundation

/// `forkkit-bench`: ForkKit's benchmarks, each compared side by side with its peers in one run.
@main
struct ForkKitBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "forkkit-bench",
        abstract: "Measure ForkKit against its peers (Perl AnyEvent::Fork, a C floor) in one run.",
        discussion: "Run in release mode: swift build -c release && .build/release/forkkit-bench spawn",
        subcommands: [SpawnBenchmark.self, RPCBenchmark.self, ActorBenchmark.self, PoolBenchmark.self, SweepBenchmark.self, StartupBenchmark.self, RemoteBenchmark.self, SoakTest.self, AllBenchmarks.self, ReportCommand.self]
    )

    static func main() async {
        // The bench binary can serve as a template too (the fallback when the small one is missing),
        // and it is the pool benchmark's template, whose workers run the demo's prime counting.
        ForkTemplate.bootstrap([
            .function("exit-now") { _ in },
            // The actor benchmark's workers: distributed actors, and their RPC twin on the same backend.
            .distributedActors,
            .asyncRPCWorker("rpc-bench-async", maximumConcurrentCalls: 1024) { server in
                server.register(ActorBenchmark.square) { $0 * $0 }
            },
            .rpcWorker("pool-bench") { server in
                server.register(PoolBenchmark.square) { $0 * $0 }
                server.register(SweepBenchmark.spin, SweepBenchmark.spinFor)
                server.register(SweepBenchmark.size) { $0.count }
                server.register(PoolBenchmark.scale, PoolBenchmark.Reading.scaled)
                server.register(PrimeCounting.countPrimes, PrimeCounting.count(in:))
                server.register(SoakTest.echo) { $0 }
                server.register(SoakTest.countDown) { count in
                    for remaining in stride(from: count, to: 0, by: -1) { try server.emit("tick", remaining) }
                    return count
                }
            },
        ])
        await main(nil)
    }
}

/// Options every benchmark takes.
struct BenchmarkOptions: ParsableArguments {
    @Flag(help: "Print one JSON object instead of a table.")
    var json = false

    @Flag(help: "A short smoke run (for CI): fewer rounds and iterations, no multi-gigabyte parents.")
    var quick = false

    @Option(help: "Rounds per measurement; each figure is the median of the rounds.")
    var rounds: Int?
}

/// What every benchmark run sets up and tears down: the round count, the report, progress lines,
/// a scratch directory for the peers' programs, and the small template to fork from.
struct BenchmarkRun: ~Copyable {
    let rounds: Int
    var report: Report
    let log: Progress
    let scratch: URL
    let templatePath: String

    init(_ name: String, options: BenchmarkOptions) throws {
        rounds = options.rounds ?? (options.quick ? 2 : 5)
        report = Report(benchmark: name)
        log = Progress(quiet: options.json)
        scratch = FileManager.default.temporaryDirectory.appendingPathComponent("forkkit-bench-\(name)-\(getpid())")
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
        let (path, note) = SpawnBenchmark.templateExecutable()
        templatePath = path
        if let note { report.notes.append(note) }
    }

    deinit {
        try? FileManager.default.removeItem(at: scratch)
    }

    /// Prints the report as a table, or as JSON.
    func finish(json: Bool) throws {
        Report.finished.withLock { $0.append(report) }
        if json { try report.printJSON() } else { report.printTable() }
    }
}

/// Every benchmark in turn.
struct AllBenchmarks: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "all", abstract: "Run every benchmark.")

    @OptionGroup var options: BenchmarkOptions

    func run() async throws {
        var arguments = options.json ? ["--json"] : []
        if options.quick { arguments.append("--quick") }
        if let rounds = options.rounds { arguments += ["--rounds", "\(rounds)"] }
        let spawn = try SpawnBenchmark.parse(arguments)
        try await spawn.run()
        let rpc = try RPCBenchmark.parse(arguments)
        try await rpc.run()
        let actors = try ActorBenchmark.parse(arguments)
        try await actors.run()
        let pool = try PoolBenchmark.parse(arguments)
        try await pool.run()
        let sweep = try SweepBenchmark.parse(arguments)
        try await sweep.run()
        let startup = try StartupBenchmark.parse(arguments)
        try await startup.run()
        let remote = try RemoteBenchmark.parse(arguments)
        try await remote.run()
        // The soak is ten minutes unless quick; `all` runs it only as a smoke run.
        if options.quick {
            let soak = try SoakTest.parse(arguments)
            try await soak.run()
        }
    }
}
