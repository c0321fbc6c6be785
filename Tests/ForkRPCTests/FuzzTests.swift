import ForkKit
import ForkKitTestSupport
import ForkRPC
import Foundation
import FuzzHarness
import MessagePack
import SystemPackage
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The fuzzer's findings, replayed; and random and mutated frames thrown at real processes.
@Suite("Fuzzing", .noZombieChildren)
struct FuzzTests {
    /// A small deterministic generator, so that a failure can be replayed.
    struct SplitMix: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    /// Valid messages with a few bytes changed, or bytes at random.
    static func frames(count: Int, seed: UInt64) -> [[UInt8]] {
        var random = SplitMix(state: seed)
        let valid: [[UInt8]] = [
            RPCMessage.request(id: 1, method: "square", params: [7]).value.encoded(),
            RPCMessage.response(id: 0, error: nil, result: 49).value.encoded(),
            RPCMessage.notification(method: "progress", params: [3]).value.encoded(),
            RPCMessage.request(id: 2, method: "$batch", params: ["square", [[1], [2]]]).value.encoded(),
        ]
        return (0..<count).map { index in
            if index % 3 == 0 {
                return (0..<Int.random(in: 1...64, using: &random)).map { _ in UInt8.random(in: 0...255, using: &random) }
            }
            var frame = valid[index % valid.count]
            for _ in 0..<Int.random(in: 1...3, using: &random) {
                frame[Int.random(in: 0..<frame.count, using: &random)] = UInt8.random(in: 0...255, using: &random)
            }
            return frame
        }
    }

    @Test("the committed corpus (Tests/FuzzCorpus) runs through the harness without a crash")
    func corpus() throws {
        let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("FuzzCorpus")
        let files = try FileManager.default.contentsOfDirectory(atPath: directory.path)
        #expect(files.count >= 20)
        for file in files {
            FuzzHarness.exercise(Array(try Data(contentsOf: directory.appendingPathComponent(file))))
        }
        for frame in Self.frames(count: 2_000, seed: 1) { FuzzHarness.exercise([3] + frame) }
    }

    @Test("random and mutated frames to a real worker: it refuses them and exits, never by a signal, never hanging")
    func intoAWorker() async throws {
        let template = try await workerTemplate()
        for (index, frame) in Self.frames(count: 60, seed: 2).enumerated() {
            let child = try await template.fork(running: "rpc-math")
            try child.socket.writeAll(frame)
            // End of stream: a worker waiting for the rest of a frame must then give up too.
            shutdown(child.socket.rawValue, Int32(SHUT_WR))
            let status = try await withThrowingTaskGroup(of: ForkKit.ExitStatus?.self) { group in
                group.addTask { try await child.exitStatus() }
                group.addTask { try await Task.sleep(for: .seconds(5)); return nil }
                defer { group.cancelAll() }
                return try await group.next() ?? nil
            }
            guard case .exited = status else {
                Issue.record("frame \(index) \(frame.hexString): the worker ended with \(String(describing: status))")
                child.send(signal: SIGKILL)
                continue
            }
        }
    }

    @Test("random and mutated frames to the owner: every call ends, with a protocol error where the bytes were bad")
    func intoTheOwner() async throws {
        for (index, frame) in Self.frames(count: 200, seed: 3).enumerated() {
            var ends: [Int32] = [0, 0]
            #expect(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &ends) == 0)
            let client = RPCClient(input: FileDescriptor(rawValue: ends[0]), output: FileDescriptor(rawValue: ends[0]))
            let peer = FileDescriptor(rawValue: ends[1])
            let call = Task { try await client.call(RPCFunction<Int, Int>("square"), 7, timeout: .seconds(5)) }
            // The request arrives; the answer is the frame, then the connection ends.
            var request = [UInt8](repeating: 0, count: 64)
            _ = try request.withUnsafeMutableBytes { try peer.read(into: $0) }
            try peer.writeAll(frame)
            try peer.close()
            switch await call.result {
            case .success(let value):
                // A mutation that left a well-formed answer to the call (msgid 0) is a fine answer.
                #expect(RPCMessage.response(id: 0, error: nil, result: .uint(UInt64(value))).value.encoded() == frame, "frame \(index)")
            case .failure(let error as RPCError):
                #expect([.protocolViolation, .workerDied, .remote, .codingFailed, .unknownFunction, .invalidArguments].contains(error.kind),
                        "frame \(index) \(frame.hexString): \(error)")
                #expect(error.kind != .timeout)
            case .failure(let error):
                Issue.record("frame \(index) \(frame.hexString): \(error)")
            }
        }
    }
}
