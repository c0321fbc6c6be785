import ForkKit
import ForkKitTestSupport
import ForkRPC
import Foundation
import Logging
import MessagePack
import Synchronization
import SystemPackage
import Testing

#if canImport(Glibc)
import Glibc
#endif

struct Division: Codable, Sendable {
    var dividend: Int
    var divisor: Int
}

let square = RPCFunction<Int, Int>("square")
let divide = RPCFunction<Division, Int>("divide")
let echoBytes = RPCFunction<[UInt8], [UInt8]>("echo-bytes")
let sleepMilliseconds = RPCFunction<Int, Int>("sleep-ms")
let countDown = RPCFunction<Int, Int>("count-down")
let die = RPCFunction<Int, Int>("die")

/// Starts `executable` with `arguments` as a plain program and attaches a client to its standard
/// input and output, as to a worker started by any means (ssh, a program in another language).
func startPipeWorker(_ executable: String, _ arguments: [String], maximumMessageSize: Int = 64 << 20) throws -> (Process, RPCClient) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    let toWorker = Pipe(), fromWorker = Pipe()
    process.standardInput = toWorker
    process.standardOutput = fromWorker
    try process.run()
    let client = RPCClient(
        input: FileDescriptor(rawValue: dup(fromWorker.fileHandleForReading.fileDescriptor)),
        output: FileDescriptor(rawValue: dup(toWorker.fileHandleForWriting.fileDescriptor)), maximumMessageSize: maximumMessageSize)
    try toWorker.fileHandleForWriting.close()
    try fromWorker.fileHandleForReading.close()
    return (process, client)
}

func mathWorker() async throws -> RPCClient {
    try await RPCClient.start(try await workerTemplate(), running: "rpc-math")
}

@Suite("ForkRPC against real workers", .noZombieChildren)
struct RPCTests {
    @Test("a typed call returns its result")
    func typedCall() async throws {
        let worker = try await mathWorker()
        #expect(try await worker.call(square, 12345) == 152_399_025)
        #expect(try await worker.call(divide, Division(dividend: 10, divisor: 3)) == 3)
        #expect(try await worker.close() == .exited(0))
    }

    @Test("many calls in flight on one socket, each matched to its own result")
    func pipelined() async throws {
        let worker = try await mathWorker()
        let results = try await withThrowingTaskGroup(of: (Int, Int).self) { group in
            for number in 0..<500 {
                group.addTask { (number, try await worker.call(square, number)) }
            }
            return try await group.reduce(into: [Int: Int]()) { $0[$1.0] = $1.1 }
        }
        #expect(results.count == 500)
        #expect(results.allSatisfy { $0.value == $0.key * $0.key })
    }

    @Test("a throwing function becomes an error with its type, message, function and pid")
    func remoteError() async throws {
        let worker = try await mathWorker()
        let error = try await #require(throws: RPCError.self) {
            _ = try await worker.call(divide, Division(dividend: 1, divisor: 0))
        }
        #expect(error.kind == .remote)
        // The type's full name, so that no user type can pass for a protocol error (`NoSuchMethod`).
        #expect(error.remoteType == "forkkit_test_worker.MathError")
        #expect(error.message == "division by zero")
        #expect(error.function == "divide")
        #expect(error.pid == worker.pid)
        #expect("\(error)".contains("'divide' in worker \(worker.pid!)"))
        // The worker goes on serving.
        #expect(try await worker.call(square, 3) == 9)
    }

    @Test("an unknown function and arguments of the wrong type are named")
    func badCalls() async throws {
        let worker = try await mathWorker()
        let unknown = try await #require(throws: RPCError.self) {
            _ = try await worker.call(RPCFunction<Int, Int>("cube"), 2)
        }
        #expect(unknown.kind == .unknownFunction)
        #expect(unknown.message.contains("no function named 'cube'"))
        #expect(unknown.message.contains("square"))

        let wrongType = try await #require(throws: RPCError.self) {
            _ = try await worker.call(RPCFunction<String, Int>("square"), "three")
        }
        #expect(wrongType.kind == .invalidArguments)
        #expect(wrongType.function == "square")
        #expect(wrongType.message.contains("expects Int"))
        #expect(try await worker.call(square, 4) == 16)
    }

    @Test("events from the worker arrive in order before the result")
    func events() async throws {
        let worker = try await mathWorker()
        #expect(try await worker.call(countDown, 3) == 0)
        var received: [Int] = []
        for await event in worker.events {
            #expect(event.name == "progress")
            received.append(try event.value(as: Int.self))
            if received.count == 3 { break }
        }
        #expect(received == [3, 2, 1])
    }

    @Test("a worker that dies in a call fails it with the signal")
    func workerDiesInCall() async throws {
        let worker = try await mathWorker()
        let error = try await #require(throws: RPCError.self) {
            _ = try await worker.call(die, Int(SIGTERM))
        }
        #expect(error.kind == .workerDied)
        #expect(error.exitStatus == .signaled(SIGTERM))
        #expect("\(error)".contains("signal 15 (SIGTERM)"))
        #expect(error.function == "die")
        let after = try await #require(throws: RPCError.self) { _ = try await worker.call(square, 2) }
        #expect(after.kind == .workerDied)
    }

    @Test("a worker killed mid-call fails every call it held, running and queued; nothing hangs")
    func workerKilled() async throws {
        let worker = try await mathWorker()
        let running = Task { try await worker.call(sleepMilliseconds, 5000) }
        let queued = Task { try await worker.call(square, 2) }
        try await Task.sleep(for: .milliseconds(100))
        worker.terminate()
        for call in [running, queued] {
            let error = await #expect(throws: RPCError.self) { _ = try await call.value }
            #expect(error?.kind == .workerDied)
            #expect(error?.exitStatus == .signaled(SIGKILL))
        }
    }

    @Test("a timeout fails the call and asks the worker to cancel; later calls still work")
    func timeout() async throws {
        let worker = try await mathWorker()
        let error = try await #require(throws: RPCError.self) {
            _ = try await worker.call(sleepMilliseconds, 3000, timeout: .milliseconds(100))
        }
        #expect(error.kind == .timeout)
        // The late answer to the abandoned call is dropped, not mistaken for this one.
        #expect(try await worker.call(square, 5) == 25)
    }

    @Test("task cancellation fails the call with CancellationError")
    func cancellation() async throws {
        let worker = try await mathWorker()
        let task = Task { try await worker.call(sleepMilliseconds, 3000) }
        try await Task.sleep(for: .milliseconds(30))
        task.cancel()
        await #expect(throws: CancellationError.self) { _ = try await task.value }
        #expect(try await worker.call(square, 6) == 36)
    }

    @Test("close lets queued calls finish, then the worker exits cleanly")
    func gracefulClose() async throws {
        let worker = try await mathWorker()
        async let first = worker.call(sleepMilliseconds, 100)
        async let second = worker.call(square, 7)
        try await Task.sleep(for: .milliseconds(20))
        let status = try await worker.close()
        #expect(try await first == 100)
        #expect(try await second == 49)
        #expect(status == .exited(0))
        let late = try await #require(throws: RPCError.self) { _ = try await worker.call(square, 1) }
        #expect(late.kind == .closed)
    }

    @Test("the low-latency mode: a spinning worker, a spinning monitor, the caller on the I/O executor")
    func lowLatencyMode() async throws {
        let worker = try await RPCClient.start(try await workerTemplate(), running: "rpc-spinning")
        DescriptorMonitor.shared.spinBeforeSleeping = .microseconds(50)
        defer { DescriptorMonitor.shared.spinBeforeSleeping = .zero }
        #expect(DescriptorMonitor.shared.spinBeforeSleeping == .microseconds(50))
        let sum = try await withTaskExecutorPreference(ForkTemplate.ioExecutor) {
            var sum = 0
            for value in 0..<200 { sum += try await worker.call(square, value) }
            return sum
        }
        #expect(sum == (0..<200).reduce(0) { $0 + $1 * $1 })
        #expect(try await worker.close() == .exited(0))
    }

    @Test("1 MiB of bytes goes there and back as bin")
    func largePayload() async throws {
        let worker = try await mathWorker()
        let payload = (0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        #expect(try await worker.call(echoBytes, payload) == payload)
    }

    @Test("garbage from the worker closes the connection with a protocol error; the parent goes on")
    func garbageFromWorker() async throws {
        let worker = try await RPCClient.start(try await workerTemplate(), running: "rpc-misbehaving")
        let error = try await #require(throws: RPCError.self) {
            _ = try await worker.call(RPCFunction<Int, Int>("write-garbage"), 0)
        }
        #expect(error.kind == .protocolViolation)
    }

    @Test("a response to a msgid nobody sent is a protocol error")
    func unknownResponse() async throws {
        let worker = try await RPCClient.start(try await workerTemplate(), running: "rpc-misbehaving")
        let error = try await #require(throws: RPCError.self) {
            _ = try await worker.call(RPCFunction<Int, Int>("answer-unknown-id"), 0)
        }
        #expect(error.kind == .protocolViolation)
        #expect(error.message.contains("msgid 99999"))
    }
}

@Suite("ForkRPC logging", .noZombieChildren)
struct LoggingTests {
    @Test("a worker's log records come out of the owner's logger, with the worker's pid")
    func forwarded() async throws {
        let sink = LogRecords()
        let logger = Logger(label: "owner") { _ in CollectingLogHandler(sink: sink) }
        let worker = try await RPCClient.start(try await workerTemplate(), running: "rpc-math", logger: logger)
        #expect(try await worker.call(RPCFunction<String, Int>("log"), "hello from the worker") == 21)
        try await worker.close()
        let collected = sink.records.withLock { $0 }
        #expect(collected.count == 1)
        #expect(collected.first?.0 == .info)
        #expect(collected.first?.1 == "hello from the worker")
        #expect(collected.first?.2["stage"] == "testing")
        #expect(collected.first?.2["worker-pid"] == .stringConvertible(worker.pid!))
        #expect(collected.first?.3 == "math-worker")
    }
}

@Suite("ForkRPC asynchronous backend", .noZombieChildren)
struct AsyncBackendTests {
    let nap = RPCFunction<Int, Int>("nap-ms")

    @Test("several slow calls run at once in one worker, up to its limit")
    func concurrent() async throws {
        let worker = try await RPCClient.start(try await workerTemplate(), running: "rpc-async")
        let results = try await withThrowingTaskGroup(of: Int.self) { group in
            for _ in 0..<5 { group.addTask { try await worker.call(nap, 200) } }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(results == [200, 200, 200, 200, 200])
        #expect(try await worker.call(RPCFunction<Int, Int>("peak"), 0) == 3)
    }

    @Test("a timeout cancels the running call inside the worker")
    func remoteCancellation() async throws {
        let worker = try await RPCClient.start(try await workerTemplate(), running: "rpc-async")
        let error = try await #require(throws: RPCError.self) {
            _ = try await worker.call(nap, 10_000, timeout: .milliseconds(100))
        }
        #expect(error.kind == .timeout)
        var cancelled = 0
        for _ in 0..<100 where cancelled == 0 {
            cancelled = try await worker.call(RPCFunction<Int, Int>("cancelled"), 0)
            try await Task.sleep(for: .milliseconds(10))
        }
        #expect(cancelled == 1)
    }

    @Test("the count-down example: events while the call runs, then the result")
    func countDown() async throws {
        let worker = try await RPCClient.start(try await workerTemplate(), running: "rpc-async")
        #expect(try await worker.call(RPCFunction<Int, String>("count-down"), 3) == "liftoff")
        var ticks: [Int] = []
        for await event in worker.events {
            ticks.append(try event.value(as: Int.self))
            if ticks.count == 3 { break }
        }
        #expect(ticks == [3, 2, 1])
        #expect(try await worker.close() == .exited(0))
    }
}

@Suite("ForkRPC: descriptors, pipes, limits, bad input", .noZombieChildren)
struct RPCEdgeTests {
    @Test("a descriptor passed as an argument arrives in the worker and works")
    func passDescriptor() async throws {
        let worker = try await mathWorker()
        let pipe = try FileDescriptor.pipe()
        defer { try? pipe.readEnd.close() }
        let pid = try await worker.call(RPCFunction<PassedDescriptor, Int32>("write-pid-to"), PassedDescriptor(pipe.writeEnd))
        try pipe.writeEnd.close()
        #expect(pid == worker.pid)
        var buffer = [UInt8](repeating: 0, count: 64)
        let count = try buffer.withUnsafeMutableBytes { try pipe.readEnd.read(into: $0) }
        #expect(String(decoding: buffer.prefix(count), as: UTF8.self) == "\(pid)\n")
    }

    @Test("a descriptor that is not open: the call fails at once, saying so, and the worker serves on")
    func closedDescriptor() async throws {
        let worker = try await mathWorker()
        await #expect {
            _ = try await worker.call(RPCFunction<PassedDescriptor, Int32>("write-pid-to"), PassedDescriptor(FileDescriptor(rawValue: 9_999)))
        } throws: { error in
            (error as? RPCError)?.kind == .codingFailed && "\(error)".contains("not open")
        }
        #expect(try await worker.call(square, 7) == 49)
        #expect(try await worker.close() == .exited(0))
    }

    @Test("calls to a worker killed a moment before fail naming its signal, not a broken pipe")
    func callsAfterKill() async throws {
        for _ in 0..<5 {
            let worker = try await mathWorker()
            let pid = try #require(worker.pid)
            kill(pid, SIGKILL)
            // Some of these find the connection open and the worker gone (EPIPE on send); some find
            // it ended already. Either way the error says how the worker ended.
            await withTaskGroup(of: String.self) { group in
                for value in 0..<8 {
                    group.addTask {
                        do { return "returned \(try await worker.call(square, value))" } catch { return "\(error)" }
                    }
                }
                for await outcome in group {
                    #expect(outcome.contains("SIGKILL"), "\(outcome)")
                }
            }
        }
    }

    @Test("a client attaches to any pipe pair: a worker on standard input and output")
    func pipePair() async throws {
        let (process, client) = try startPipeWorker(Built.worker, ["pipe-server"])
        #expect(try await client.call(square, 11) == 121)
        try await client.close()
        process.waitUntilExit()
        #expect(process.terminationStatus == 0)
    }

    @Test("a response over the client's size limit, from a peer that was not told the limit, closes the connection with a protocol error")
    func tooLarge() async throws {
        // A client attached to a pipe pair sends no $limits (the peer may not be ForkKit's), so the
        // worker answers in full; ForkKit's own workers are told (WorkerSafetyTests).
        let (process, worker) = try startPipeWorker(Built.worker, ["pipe-server"], maximumMessageSize: 1000)
        let error = try await #require(throws: RPCError.self) {
            _ = try await worker.call(RPCFunction<Int, [UInt8]>("make-bytes"), 5000)
        }
        #expect(error.kind == .protocolViolation)
        #expect(error.message.contains("over the maximumMessageSize of 1000 bytes"))
        // SIGKILL: a child Foundation started from a concurrency thread may have SIGTERM blocked.
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    @Test("garbage sent to a worker ends it with an error; nothing hangs")
    func garbageToWorker() async throws {
        let child = try await workerTemplate().fork(running: "rpc-math")
        try child.socket.writeAll([0xc1, 0xc1, 0xc1])
        #expect(try await child.exitStatus() == .exited(1))
    }
}

@Suite("MessagePack-RPC messages")
struct RPCMessageTests {
    @Test("the spec's three messages encode to the canonical bytes")
    func canonical() throws {
        // From protocol/vectors/msgpack-canonical.json ("rpc request", "rpc response ok", "rpc notification").
        #expect(RPCMessage.request(id: 1, method: "square", params: [12345]).value.encoded() == bytes("940001a673717561726591cd3039"))
        #expect(RPCMessage.response(id: 1, error: nil, result: 152_399_025).value.encoded() == bytes("940101c0ce09156cb1"))
        #expect(RPCMessage.notification(method: "progress", params: [3, 10]).value.encoded() == bytes("9302a870726f677265737392030a"))
        #expect(try RPCMessage(MessagePackValue(decoding: bytes("940001a673717561726591cd3039"))) == .request(id: 1, method: "square", params: [12345]))
    }

    @Test("protocol/vectors/rpc.json: ForkRPC's messages, byte for byte")
    func forkRPCVectors() throws {
        let url = URL(fileURLWithPath: #filePath)
            .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("protocol/vectors/rpc.json")
        let root = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
        let vectors = Dictionary(uniqueKeysWithValues: (root["vectors"] as! [[String: Any]]).map {
            ($0["name"] as! String, bytes($0["hex"] as! String))
        })
        let encoder = MessagePackEncoder()
        // The last three, `$context` and `$spans`, are checked by TracingTests.
        #expect(vectors.count == 26)
        #expect(RPCMessage.request(id: 7, method: "square", params: [try encoder.encodeValue(12345)]).value.encoded() == vectors["request"])
        #expect(RPCMessage.response(id: 7, error: nil, result: try encoder.encodeValue(152_399_025)).value.encoded() == vectors["response"])
        #expect(RPCMessage.response(id: 8, error: ["MathError", "division by zero"], result: nil).value.encoded() == vectors["error response"])
        #expect(RPCMessage.notification(method: "progress", params: [try encoder.encodeValue(3)]).value.encoded() == vectors["event"])
        #expect(RPCMessage.cancel(7).value.encoded() == vectors["cancel"])
        let descriptor = try encoder.encodeValue(PassedDescriptor(FileDescriptor(rawValue: 5)))
        #expect(RPCMessage.request(id: 10, method: "write-log", params: [descriptor]).value.encoded() == vectors["descriptor argument"])
        #expect(RPCMessage.request(id: 11, method: "$batch", params: ["square", [[1], [2], [3]]]).value.encoded() == vectors["batch request"])
        #expect(RPCMessage.response(id: 11, error: nil, result: [[nil, 1], [nil, 4], [["MathError", "too big"], nil]]).value.encoded()
                == vectors["batch response"])
        #expect(RPCMessage.retire.value.encoded() == vectors["retire"])
        #expect(RPCMessage.limits(maximumMessageSize: 64 << 20).value.encoded() == vectors["limits"])
        #expect(RPCMessage.worker(backend: "synchronous", maximumConcurrentCalls: 1).value.encoded() == vectors["worker"])
        // Any arity, errors with details, requests toward the owner, and peers' other error forms.
        #expect(RPCMessage.request(id: 12, method: "add3", params: [1, 2, 3]).value.encoded() == vectors["request of three arguments"])
        #expect(RPCMessage.request(id: 13, method: "greet", params: []).value.encoded() == vectors["request of no arguments"])
        let details: MessagePackValue = ["value": try encoder.encodeValue(BadShape(sides: 2))]
        #expect(RPCMessage.response(id: 14, error: ["Shapes.BadShape", "a shape cannot have 2 sides", details], result: nil).value.encoded()
                == vectors["error with details"])
        #expect(RPCMessage.request(id: 0, method: "next-item", params: [4242]).value.encoded() == vectors["request to the owner"])
        let noSuchMethod: MessagePackValue = ["NoSuchMethod", "no function named 'next-item' in the owner (pid 100, RPCHandlers); it serves: nothing"]
        #expect(RPCMessage.response(id: 0, error: noSuchMethod, result: nil).value.encoded() == vectors["owner has no such method"])
        #expect(RPCMessage.response(id: 15, error: [404, "not found"], result: nil).value.encoded() == vectors["error as code and message"])
        #expect(RPCMessage.response(id: 16, error: "RuntimeError('boom')", result: nil).value.encoded() == vectors["error as a string"])
        // ForkActors' requests (Sources/ForkActors/WorkerActorSystem.swift builds them so).
        #expect(RPCMessage.request(id: 20, method: "$actor.make", params: ["4Demo6HasherC", 1]).value.encoded() == vectors["actor make"])
        let target = "$s4Demo6HasherC6digest_6roundsSays5UInt8VGAH_SitYaKFTE"
        #expect(RPCMessage.request(id: 21, method: "$actor.call", params: [1, .string(target), [], [try encoder.encodeValue([UInt8]("hi".utf8)), 3]])
                .value.encoded() == vectors["actor call"])
        #expect(RPCMessage.request(id: 22, method: "$actor.release", params: [1]).value.encoded() == vectors["actor release"])
        // Every vector reads back as a message.
        for (name, encoded) in vectors {
            #expect(throws: Never.self, "\(name)") { _ = try RPCMessage(MessagePackValue(decoding: encoded)) }
        }
    }

    @Test("a batch runs every input in one round trip, each outcome in its place")
    func batch() async throws {
        let worker = try await mathWorker()
        let outcomes = try await worker.callBatch(divide, [Division(dividend: 10, divisor: 2), Division(dividend: 1, divisor: 0), Division(dividend: 9, divisor: 3)])
        #expect(outcomes.count == 3)
        #expect(try outcomes[0].get() == 5 && outcomes[2].get() == 3)
        guard case .failure(let error) = outcomes[1] else { Issue.record("division by zero succeeded"); return }
        #expect(error.kind == .remote && error.function == "divide" && error.pid == worker.pid && "\(error)".contains("division by zero"))
        #expect(try await worker.callBatch(square, []).isEmpty)
        await #expect {
            _ = try await worker.callBatch(RPCFunction<Int, Int>("cube"), [1, 2])
        } throws: { error in
            (error as? RPCError)?.kind == .unknownFunction && "\(error)".contains("cube") && "\(error)".contains("square")
        }
        // A wrong argument type fails its own item, naming the expected type.
        let wrongType = try await worker.callBatch(RPCFunction<String, Int>("square"), ["seven"])
        guard case .failure(let invalid) = wrongType.first else { Issue.record("a String was taken as an Int"); return }
        #expect(invalid.kind == .invalidArguments && "\(invalid)".contains("Int"))
        #expect(try await worker.close() == .exited(0))
    }

    @Test("malformed messages are refused with a reason")
    func malformed() {
        #expect(throws: RPCError.self) { try RPCMessage([3, 1, 2]) }
        #expect(throws: RPCError.self) { try RPCMessage([0, -1, "f", []]) }
        #expect(throws: RPCError.self) { try RPCMessage([0, 1, 2, []]) }
        #expect(throws: RPCError.self) { try RPCMessage([2, "event", "not an array"]) }
    }

    func bytes(_ hex: String) -> [UInt8] {
        [UInt8](hex: hex)!
    }
}
