// A synchronous swift-argument-parser command that tests start: it calls bootstrap first thing in
// run(), as a newcomer's command-line tool would; one subcommand forgets bootstrap altogether.
import ArgumentParser
import Dispatch
import ForkPool
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

let square = RPCFunction<Int, Int>("square")

@main
struct TestCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "forkkit-test-command",
        subcommands: [Squares.self, Forgetful.self, SlowTemplate.self, OwnSlowTemplate.self])
}

/// `squares --count N`: bootstrap first thing in run(), then a pool of copies of this same command
/// (started with the same arguments, which the parser accepts again before run() serves).
struct Squares: ParsableCommand {
    @Option(help: "How many squares to add up.") var count: Int

    func run() throws {
        ForkTemplate.bootstrap([
            .rpcWorker("math") { server in server.register(square) { $0 * $0 } },
        ])
        let count = self.count
        let total = try runBlocking {
            var configuration = WorkerPool.Configuration()
            configuration.maximumWorkers = 2
            configuration.metricsPrefix = nil
            return try await withWorkerPool(running: "math", configuration: configuration) { pool in
                try await pool.map(square, 1...count).reduce(0, +)
            }
        }
        print("sum of squares 1...\(count) = \(total)")
    }
}

/// `forgetful`: never calls bootstrap, and starts a pool. The default template is refused before
/// anything starts; with `--by-path` the template is this program named by its path, so a copy
/// starts, and it must refuse to start another. Prints the error and how long it took to arrive.
struct Forgetful: ParsableCommand {
    @Flag(help: "Name this program's path, so that ForkKit cannot tell that the copy will not serve.") var byPath = false

    func run() throws {
        let started = ContinuousClock.now
        let byPath = self.byPath
        do {
            _ = try runBlocking {
                let template = byPath
                    ? try await ForkTemplate.spawn(executable: try ForkTemplate.executable(named: "forkkit-test-command"), arguments: ["forgetful", "--by-path"])
                    : try await ForkTemplate.shared
                return try await withWorkerPool(template: template, running: "math") { pool in try await pool.call(square, 2) }
            }
            print("unexpected: the pool worked")
        } catch {
            let elapsed = ContinuousClock.now - started
            print("failed after \(elapsed.components.seconds * 1000 + elapsed.components.attoseconds / 1_000_000_000_000_000) ms: \(error)")
            throw ExitCode(3)
        }
    }
}

/// `slow-template TAG`: a template that takes 30 s before it calls bootstrap.
struct SlowTemplate: ParsableCommand {
    @Argument var tag: String

    func run() throws {
        sleep(30)
        ForkTemplate.bootstrap([])
    }
}

/// `own-slow-template TAG`: starts `slow-template TAG` as its template and waits (to be killed).
struct OwnSlowTemplate: ParsableCommand {
    @Argument var tag: String

    func run() throws {
        let tag = self.tag
        _ = try runBlocking {
            try await ForkTemplate.spawn(
                executable: try ForkTemplate.executable(named: "forkkit-test-command"), arguments: ["slow-template", tag],
                startTimeout: .seconds(60))
        }
    }
}

/// Runs async code from a synchronous command, as a synchronous tool would.
func runBlocking<Value: Sendable>(_ body: @escaping @Sendable () async throws -> Value) throws -> Value {
    let outcome = Mutex<Result<Value, any Error>?>(nil)
    let done = DispatchSemaphore(value: 0)
    Task {
        let result: Result<Value, any Error>
        do { result = .success(try await body()) } catch { result = .failure(error) }
        outcome.withLock { $0 = result }
        done.signal()
    }
    done.wait()
    return try outcome.withLock { $0! }.get()
}
