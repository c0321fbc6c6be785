import ForkKit
import ForkKitTestSupport
import ForkPool
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// What a newcomer gets wrong at start-up must end in one clear error, fast: never in a chain of
/// processes, a hang, or a parser that rejects ForkKit's own mark.
@Suite("Start-up safety: forgotten bootstrap, argument parsers, exec")
struct StartupSafetyTests {
    /// The pids of every process whose environment holds `tag` (inherited from the program a test
    /// started), zombies included.
    private static func processes(taggedWith tag: String) -> Set<Int32> {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return Set(entries.compactMap(Int32.init).filter { pid in
            guard let environment = FileManager.default.contents(atPath: "/proc/\(pid)/environ") else { return false }
            return String(decoding: environment, as: UTF8.self).contains(tag)
        })
    }

    /// Reads what `process` writes until it exits, polling `watch` meanwhile; kills it (and every
    /// tagged process) after `seconds`, so that a regression cannot leave a chain running.
    private static func finish(
        _ process: Process, _ output: Pipe, tag: String, seconds: Double, watch: () -> Void = {}
    ) -> String {
        let deadline = Date().addingTimeInterval(seconds)
        while process.isRunning && Date() < deadline {
            watch()
            usleep(2_000)
        }
        if process.isRunning {
            for pid in processes(taggedWith: tag) { kill(pid, SIGKILL) }
            process.waitUntilExit()
        }
        watch()
        return String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    }

    @Test("a program that forgot bootstrap starts at most 2 processes, and its owner's error names the fix", arguments: [false, true])
    func forgottenBootstrapStartsNoChain(byPath: Bool) throws {
        let id = UUID().uuidString
        let tag = "FORKKIT_TEST_TAG=\(id)"
        let (process, output) = try startProgram(
            Built.command, ["forgetful"] + (byPath ? ["--by-path"] : []), environment: ["FORKKIT_TEST_TAG": id], mergingErrors: true)
        var seen: Set<Int32> = []
        let text = Self.finish(process, output, tag: tag, seconds: 10) { seen.formUnion(Self.processes(taggedWith: tag)) }
        // Whatever happened, nothing tagged may be left behind.
        for pid in Self.processes(taggedWith: tag) { kill(pid, SIGKILL) }
        #expect(seen.count <= 2, "processes started: \(seen.sorted())")
        #expect(process.terminationStatus == 3, "\(text)")
        // The default template is refused in the owner; a program named by its path starts, and its copy refuses.
        let sentence = byPath
            ? "was started as a ForkKit template, but it tried to start a template before calling ForkTemplate.bootstrap"
            : "has not called ForkTemplate.bootstrap(...), so a copy of it started as its template would run the program again"
        #expect(text.contains(sentence), "\(text)")
        #expect(text.contains("first thing in main()"), "\(text)")
        // One clear error: the copy does not print its own as well.
        #expect(text.components(separatedBy: "ForkTemplate.bootstrap([...])").count == 2, "\(text)")
        // It arrives at once (well under a second here; the bound only keeps a loaded machine from failing the test).
        let milliseconds = text.split(separator: " ").dropFirst(2).first.flatMap { Int($0) } ?? .max
        #expect(milliseconds < 5_000, "\(text)")
    }

    @Test("a template that has not yet called bootstrap dies with its owner")
    func templateDiesWithOwnerBeforeBootstrap() async throws {
        let tag = UUID().uuidString
        let (owner, _) = try startProgram(Built.command, ["own-slow-template", tag])
        defer { if owner.isRunning { owner.terminate() } }
        var template: Int32?
        let started = await eventually(within: 10) {
            template = Self.processes(withCommandLine: ["slow-template", tag]).first
            return template != nil
        }
        try #require(started, "the owner did not start the slow template")
        kill(owner.processIdentifier, SIGKILL)
        owner.waitUntilExit()
        let gone = await eventually(within: 5) { isDead(template!) }
        if !gone { kill(template!, SIGKILL) }
        #expect(gone, "template \(template!) outlived its owner")
    }

    /// The pids of processes whose arguments include `words`, in order.
    private static func processes(withCommandLine words: [String]) -> [Int32] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.compactMap(Int32.init).filter { pid in
            guard let line = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return false }
            return String(decoding: line, as: UTF8.self).contains(words.joined(separator: "\0"))
        }
    }

    @Test("a synchronous ParsableCommand calls bootstrap from run(), and its arguments parse again in the template")
    func parsableCommandBootstrapsInRun() throws {
        let (process, output) = try startProgram(Built.command, ["squares", "--count", "100"], mergingErrors: true)
        let text = Self.finish(process, output, tag: "-", seconds: 60)
        #expect(process.terminationStatus == 0, "\(text)")
        #expect(text == "sum of squares 1...100 = 338350\n")
    }

    @Test("an AsyncParsableCommand calls bootstrap from main(); from run() its owner gets one clear error")
    func asyncParsableCommand() throws {
        let (working, workingOutput) = try startProgram(Built.asyncCommand, ["--count", "10"], mergingErrors: true)
        let text = Self.finish(working, workingOutput, tag: "-", seconds: 60)
        #expect(working.terminationStatus == 0, "\(text)")
        #expect(text == "sum of squares 1...10 = 385\n")

        let (late, lateOutput) = try startProgram(
            Built.asyncCommand, ["--count", "10"], environment: ["FORKKIT_TEST_LATE_BOOTSTRAP": "1"], mergingErrors: true)
        let error = Self.finish(late, lateOutput, tag: "-", seconds: 30)
        #expect(late.terminationStatus != 0)
        #expect(error.contains("called ForkTemplate.bootstrap(...) when it already had"), "\(error)")
        #expect(error.contains("override `static func main() async`"), "\(error)")
        #expect(error.components(separatedBy: "was started as a ForkKit template").count == 2, "\(error)")
    }

    @Test("a pool whose backend does not match its worker function's kind refuses, naming the setting", arguments: [
        ("pool-async-worker", WorkerPool.Backend.synchronous, "set configuration.backend = .asynchronous"),
        ("pool-worker", WorkerPool.Backend.asynchronous, "set configuration.backend = .synchronous"),
    ])
    func backendMismatch(function: String, backend: WorkerPool.Backend, fix: String) async throws {
        var configuration = WorkerPool.Configuration()
        configuration.maximumWorkers = 1
        configuration.backend = backend
        configuration.metricsPrefix = nil
        let pool = try await WorkerPool(template: try await workerTemplate(), running: function, configuration: configuration)
        let error = try await #require(throws: WorkerPoolError.self) { _ = try await pool.call(RPCFunction<Int, Int>("square"), 2) }
        #expect(error.kind == .cannotStartWorker)
        #expect(error.message.contains(fix), "\(error)")
        await pool.terminate()
    }

    @Test("a program the owner execs holds none of the pool's sockets")
    func workerSocketsAreCloseOnExec() throws {
        let (process, output) = try startWorkerProgram(["pool-exec"])
        let text = Self.finish(process, output, tag: "-", seconds: 60)
        #expect(process.terminationStatus == 0)
        // The template's socket and each of the two workers'.
        #expect(text.hasPrefix("pool-sockets=3 "), "\(text)")
        #expect(text.hasSuffix(" inherited=[]\n"), "\(text)")
    }
}
