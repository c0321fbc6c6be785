// An AsyncParsableCommand that tests start. Its run() runs on Swift's thread pool, so bootstrap
// goes in an overridden main(), before parsing. With FORKKIT_TEST_LATE_BOOTSTRAP set it calls
// bootstrap in run() instead, which a template cannot serve from: the owner must get a clear error.
import ArgumentParser
import ForkPool

#if canImport(Glibc)
import Glibc
#endif

let square = RPCFunction<Int, Int>("square")
let entryPoints: [ForkEntryPoint] = [.rpcWorker("math") { server in server.register(square) { $0 * $0 } }]
let lateBootstrap = getenv("FORKKIT_TEST_LATE_BOOTSTRAP") != nil

@main
struct TestAsyncCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "forkkit-test-async-command")

    @Option(help: "How many squares to add up.") var count: Int

    static func main() async {
        if !lateBootstrap { ForkTemplate.bootstrap(entryPoints) }
        await main(nil)
    }

    func run() async throws {
        if lateBootstrap { ForkTemplate.bootstrap(entryPoints) }
        var configuration = WorkerPool.Configuration()
        configuration.maximumWorkers = 2
        configuration.metricsPrefix = nil
        let count = self.count
        let total = try await withWorkerPool(running: "math", configuration: configuration) { pool in
            try await pool.map(square, 1...count).reduce(0, +)
        }
        print("sum of squares 1...\(count) = \(total)")
    }
}
