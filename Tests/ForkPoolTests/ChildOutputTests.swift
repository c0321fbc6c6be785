import ForkKit
import ForkKitTestSupport
import ForkPool
import ForkRPC
import Foundation
import LoopbackSSH
import Logging
import Synchronization
import Testing

/// Lines captured from children, as a handler receives them.
final class CapturedLines: Sendable {
    private let lines = Mutex<[ChildOutput.Line]>([])
    var output: ChildOutput { ChildOutput { line in self.lines.withLock { $0.append(line) } } }
    var all: [ChildOutput.Line] { lines.withLock { $0 } }

    func from(_ pid: Int32, _ stream: ChildOutput.Stream) -> [String] {
        all.filter { $0.pid == pid && $0.stream == stream }.map(\.text)
    }
}

let printLine = RPCFunction<String, Int32>("print")

@Suite("Children's standard output and error captured into the owner", .noZombieChildren)
struct ChildOutputTests {
    @Test("each worker's lines arrive tagged with its pid, place and stream, while it runs")
    func poolWorkersLines() async throws {
        let captured = CapturedLines()
        let pool = try await makePool { $0.idleWorkers = 2; $0.load = 1; $0.childOutput = captured.output }
        async let first = pool.call(printLine, "hello from one")
        async let second = pool.call(printLine, "hello from two")
        let pids = try await [first, second]
        // Without an fflush in the worker: standard output is line-buffered, so the lines come now,
        // not when the worker exits.
        #expect(await eventually(within: 5) { captured.all.count >= 4 }, "captured: \(captured.all)")
        let texts = Set(pids.flatMap { captured.from($0, .standardOutput) })
        #expect(texts == ["hello from one", "hello from two"])
        // Usually one call per worker; both on one worker when the first was done before the second came.
        for pid in Set(pids) {
            let errors = captured.from(pid, .standardError)
            #expect(errors.count == pids.filter { $0 == pid }.count)
            #expect(errors.allSatisfy { $0.hasPrefix("to stderr: hello from") })
        }
        #expect(captured.all.allSatisfy { $0.place == "local" })
        // Many lines from one worker keep their order.
        for index in 0..<50 { _ = try await pool.call(printLine, "line \(index)") }
        #expect(await eventually(within: 5) { captured.all.filter { $0.text.hasPrefix("line ") && $0.stream == .standardOutput }.count == 50 })
        let numbered = captured.all.filter { $0.text.hasPrefix("line ") && $0.stream == .standardOutput }
        for pid in Set(numbered.map(\.pid)) {
            let indices = numbered.filter { $0.pid == pid }.compactMap { Int($0.text.dropFirst(5)) }
            #expect(indices == indices.sorted())
        }
        await pool.shutdown()
    }

    @Test("a crash's report reaches the handler as the worker's standard error, and the call fails as before")
    func crashReport() async throws {
        let captured = CapturedLines()
        let pool = try await makePool { $0.idleWorkers = 1; $0.childOutput = captured.output }
        let pid = try #require(pool.statistics.workers.first?.pid)
        await #expect(throws: RPCError.self) { try await pool.call(RPCFunction<Int, Int>("fatal"), 0) }
        #expect(await eventually(within: 5) { captured.from(pid, .standardError).contains { $0.contains("deliberate fatalError") } },
                "captured: \(captured.all)")
        await pool.shutdown()
    }

    @Test("a line without a line feed arrives when the worker exits; a very long line comes in pieces")
    func unterminatedAndLongLines() async throws {
        let captured = CapturedLines()
        let worker = try await RPCClient.start(try await workerTemplate(), running: "pool-worker", output: captured.output)
        let length = ChildOutput.maximumLineLength * 2 + 10
        let pid = try await worker.call(RPCFunction<Int, Int32>("print-unterminated"), length)
        try await worker.close()
        #expect(await eventually(within: 5) { captured.from(pid, .standardOutput).joined().count == length })
        #expect(captured.from(pid, .standardOutput).map(\.count) == [ChildOutput.maximumLineLength, ChildOutput.maximumLineLength, 10])
    }

    @Test("a Logger receives each line with pid, place and stream as metadata")
    func logging() async throws {
        let sink = LogRecords()
        let logger = Logger(label: "workers") { _ in CollectingLogHandler(sink: sink) }
        let worker = try await RPCClient.start(
            try await workerTemplate(), running: "pool-worker", output: .logging(to: logger, level: .notice, errorLevel: .error))
        let pid = try await worker.call(printLine, "logged")
        #expect(await eventually(within: 5) { sink.records.withLock { $0.count } == 2 })
        let records = sink.records.withLock { $0 }
        let out = try #require(records.first { $0.1 == "logged" })
        #expect(out.0 == .notice)
        #expect(out.2["pid"] == "\(pid)" && out.2["place"] == "local" && out.2["stream"] == "stdout")
        let err = try #require(records.first { $0.1 == "to stderr: logged" })
        #expect(err.0 == .error && err.2["stream"] == "stderr")
        try await worker.close()
    }

    @Test("without capture a worker's descriptors 1 and 2 are the template's; with it, two pipes")
    func offByDefault() async throws {
        let template = try await workerTemplate()
        func target(_ pid: Int32, _ descriptor: Int) throws -> String {
            try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/\(descriptor)")
        }
        let plain = try await RPCClient.start(template, running: "pool-worker")
        let plainPid = try await plain.call(printLine, "uncaptured")
        for descriptor in [1, 2] { #expect(try target(plainPid, descriptor) == target(template.pid, descriptor)) }
        let captured = CapturedLines()
        let capturing = try await RPCClient.start(template, running: "pool-worker", output: captured.output)
        let capturingPid = try await capturing.call(printLine, "captured")
        let pipes = try [1, 2].map { try target(capturingPid, $0) }
        #expect(pipes.allSatisfy { $0.hasPrefix("pipe:") } && pipes[0] != pipes[1], "\(pipes)")
        #expect(await eventually(within: 5) { captured.all.count == 2 })
        #expect(!captured.all.contains { $0.text.contains("uncaptured") })
        try await plain.close()
        try await capturing.close()
    }
}

@Suite(
    "A remote worker's output captured through ssh", .serialized, .noZombieChildren,
    .enabled("needs OpenSSH's sshd, ssh and ssh-keygen (Debian: openssh-server)") { sshAvailable })
struct RemoteChildOutputTests {
    @Test("a remote worker's standard output and error arrive as its standard error, tagged with its place")
    func remoteLines() async throws {
        let sshd = try SSHServer()
        defer { sshd.stop() }
        let captured = CapturedLines()
        let host = RemoteTemplate.ssh(host: "127.0.0.1", executable: Built.worker, options: sshd.clientOptions)
        let worker = try await RPCClient.start(host, running: "pool-worker", output: captured.output)
        let localPid = try #require(worker.pid)
        _ = try await worker.call(printLine, "from afar")
        #expect(await eventually(within: 5) { captured.from(localPid, .standardError).count >= 2 }, "captured: \(captured.all)")
        #expect(Set(captured.from(localPid, .standardError)).isSuperset(of: ["from afar", "to stderr: from afar"]))
        #expect(captured.all.allSatisfy { $0.place == "ssh 127.0.0.1" })
        // Closed before sshd stops (which would otherwise wait for the session, blocking a thread).
        try await worker.close()
        _ = await eventually(within: 5) { isDead(localPid) }
    }
}
