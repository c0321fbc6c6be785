import ForkKit
import ForkKitTestSupport
import ForkRPC
import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Testing

/// One message-size setting that both sides honour, and set-up mistakes that fail every call with a
/// sentence instead of passing silently.
@Suite("Worker safety: message limits both ways, names registered twice", .noZombieChildren)
struct WorkerSafetyTests {
    let square = RPCFunction<Int, Int>("square")
    let echo = RPCFunction<[UInt8], [UInt8]>("echo-bytes")
    let makeBytes = RPCFunction<Int, [UInt8]>("make-bytes")

    @Test("an argument over the limit is refused before it is sent, naming its size and the setting")
    func argumentOverLimit() async throws {
        let worker = try await RPCClient.start(try await workerTemplate(), running: "rpc-math")
        let error = try await #require(throws: RPCError.self) { _ = try await worker.call(echo, [UInt8](repeating: 1, count: 80 << 20)) }
        #expect(error.kind == .messageTooLarge)
        #expect(error.message.contains("over the maximumMessageSize of 67108864 bytes"), "\(error)")
        #expect(error.message.contains("WorkerPool.Configuration.maximumMessageSize"), "\(error)")
        // Nothing was sent: the connection and the worker live on.
        #expect(try await worker.call(square, 3) == 9)
        try await worker.close()
    }

    @Test("a result over the owner's limit becomes an error in the worker, on both backends", arguments: ["rpc-math", "rpc-async"])
    func resultOverLimit(function: String) async throws {
        let worker = try await RPCClient.start(try await workerTemplate(), running: function, maximumMessageSize: 1 << 20)
        let error = try await #require(throws: RPCError.self) { _ = try await worker.call(makeBytes, 2 << 20) }
        #expect(error.kind == .messageTooLarge)
        #expect(error.message.contains("over the maximumMessageSize of 1048576 bytes that the owner set"), "\(error)")
        #expect(try await worker.call(makeBytes, 1000).count == 1000)
        #expect(try await worker.call(square, 4) == 16)
        try await worker.close()
    }

    @Test("the worker honours a limit above its own default")
    func largerLimitHonoured() async throws {
        let worker = try await RPCClient.start(try await workerTemplate(), running: "rpc-math", maximumMessageSize: 80 << 20)
        let large = [UInt8](repeating: 3, count: 65 << 20)
        #expect(try await worker.call(echo, large, timeout: .seconds(60)).count == large.count)
        try await worker.close()
    }

    @Test("a crashing worker's error carries the gist of its crash report; the owner's terminal gets a line or two, not the backtrace")
    func crashReport() throws {
        let process = Process()
        // Under timeout(1): a regression that hangs fails this test instead of holding the suite.
        process.executableURL = URL(fileURLWithPath: "/usr/bin/timeout")
        process.arguments = ["60", Built.worker, "crash-owner"]
        let output = Pipe(), errors = Pipe()
        process.standardOutput = output
        process.standardError = errors
        try process.run()
        let printed = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        let terminal = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        #expect(printed.contains("died (signal 11 (SIGSEGV)) before answering (Program crashed: Bad pointer dereference"), "\(printed)")
        #expect(terminal.split(separator: "\n").count <= 2, "\(terminal)")
    }

    @Test("a large request to a stopped worker ends at its timeout; so do the calls waiting behind it")
    func largeRequestToStoppedWorker() async throws {
        let worker = try await RPCClient.start(try await workerTemplate(), running: "rpc-math")
        let pid = try #require(worker.pid)
        kill(pid, SIGSTOP)
        defer { kill(pid, SIGKILL); kill(pid, SIGCONT) }
        let started = ContinuousClock.now
        // Far more than the socket buffers hold: the send cannot finish while the worker is stopped.
        let echo = self.echo, square = self.square
        let large = Task { try await worker.call(echo, [UInt8](repeating: 1, count: 16 << 20), timeout: .milliseconds(300)) }
        let small = Task { try await worker.call(square, 2, timeout: .milliseconds(300)) }
        let largeError = await #expect(throws: RPCError.self) { _ = try await large.value }
        await #expect(throws: RPCError.self) { _ = try await small.value }
        let elapsed = ContinuousClock.now - started
        #expect(largeError?.kind == .timeout, "\(String(describing: largeError))")
        // The code aims at the timeout plus a slice; the bound only keeps a loaded machine from failing the test.
        #expect(elapsed < .seconds(3), "took \(elapsed)")
    }

    @Test("a function registered twice fails every call, naming it, on both backends", arguments: ["registers-twice", "async-registers-twice"])
    func registeredTwice(function: String) async throws {
        let worker = try await RPCClient.start(try await workerTemplate(), running: function)
        let error = try await #require(throws: RPCError.self) { _ = try await worker.call(square, 3) }
        #expect(error.message.contains("registered a function named 'square' twice"), "\(error)")
        try await worker.close()
    }
}
