import ArgumentParser
import ForkKit

/// `forkkit-bench`: ForkKit's benchmarks, each compared side by side with its peers in one run.
@main
struct ForkKitBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "forkkit-bench",
        abstract: "Measure ForkKit against its peers (Perl AnyEvent::Fork, a C floor) in one run.",
        discussion: "Run in release mode: swift build -c release && .build/release/forkkit-bench spawn",
        subcommands: [SpawnBenchmark.self, RPCBenchmark.self, AllBenchmarks.self]
    )

    static func main() async {
        // The bench binary can serve as a template too (the fallback when the small one is missing).
        ForkTemplate.bootstrap([.function("exit-now") { _ in }])
        await main(nil)
    }
}

/// Options every benchmark takes.
struct BenchmarkOptions: ParsableArguments {
    @Flag(help: "Print one JSON object instead of a table.")
    var json = false

    @Flag(help: "A short smoke run (for CI): fewer rounds and iterations, no multi-gigabyte parents.")
    var quick = false
}

/// Every benchmark in turn.
struct AllBenchmarks: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "all", abstract: "Run every benchmark.")

    @OptionGroup var options: BenchmarkOptions

    func run() async throws {
        var spawn = SpawnBenchmark()
        spawn.options = options
        try await spawn.run()
        var rpc = RPCBenchmark()
        rpc.options = options
        try await rpc.run()
    }
}
