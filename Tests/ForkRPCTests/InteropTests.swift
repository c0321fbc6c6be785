import ForkKit
import ForkKitTestSupport
import ForkRPC
import Foundation
import MessagePack
import Synchronization
import SystemPackage
import Testing

/// ForkKit against a MessagePack-RPC implementation that nobody here wrote: the msgpack_rpc layer
/// of pynvim (PyPI), driven by protocol/examples/interop_peer.py. Its server is called by an
/// `RPCClient`, and its client calls a ForkKit worker; requests go both ways, with notifications
/// and errors.
@Suite("Interop with pynvim's MessagePack-RPC (protocol/examples/interop_peer.py)", .noZombieChildren, .timeLimit(.minutes(1)))
struct InteropTests {
    static let script = protocolExample("interop_peer.py")

    /// Whether python3 with pynvim is installed (scripts/setup.sh installs it from PyPI).
    static let available = python3CanImport("pynvim.msgpack_rpc")

    @Test("an RPCClient calls pynvim's server, which calls back, notifies and fails",
          .enabled(if: available, "python3 with pynvim is not installed (scripts/setup.sh installs it: pip install pynvim)"))
    func callPynvimServer() async throws {
        let (process, client) = try startPipeWorker("/usr/bin/env", ["python3", Self.script, "serve"])
        client.register(RPCFunction<Int, Int>("double")) { $0 * 2 }
        client.register(RPCFunction<String>("owner_fails")) { throw TestTimeout(description: "the owner refuses") }

        #expect(try await client.call(RPCFunction<Int, Int, Int>("add"), 2, 3) == 5)
        #expect(try await client.call(RPCFunction<String>("greet")) == "hello")
        #expect(try await client.call(RPCFunction<String, String, String, String>("concat"), "a", "b", "c") == "abc")
        // Requests from the peer, answered by the owner's handlers: one served, one not, one failing.
        #expect(try await client.call(RPCFunction<Int, Int>("ask_owner"), 20) == 41)
        let unknown = try await client.call(RPCFunction<String>("ask_unknown"))
        #expect(unknown.contains("no function named 'no_such_method' in the owner"), "\(unknown)")
        let refused = try await client.call(RPCFunction<String>("peer_error"))
        #expect(refused.contains("the owner refuses"), "\(refused)")
        // Notifications from the peer arrive as events, in order.
        let ticks = Task { () -> [[MessagePackValue]] in
            var params: [[MessagePackValue]] = []
            for await event in client.events where event.name == "tick" {
                params.append(event.params)
                if params.count == 3 { break }
            }
            return params
        }
        #expect(try await client.call(RPCFunction<Int, Int>("notify_owner"), 3) == 3)
        #expect(await ticks.value == [[0], [1], [2]])
        // pynvim sends an exception as a plain string with its traceback: kept as sent.
        let failure = try await #require(throws: RPCError.self) { try await client.call(RPCFunction<String, Int>("fail"), "boom") }
        #expect(failure.kind == .remote)
        #expect(failure.message.hasPrefix("RuntimeError('boom')"), "\(failure.message)")
        #expect(failure.remoteError?.stringValue == failure.message)
        #expect(try await client.call(RPCFunction<Int, Int, Int>("add"), 40, 2) == 42)

        _ = try await client.close()
        try await waitForExit(process)
        #expect(process.terminationStatus == 0)
    }

    @Test("pynvim's client calls a ForkKit worker, which calls back and sends events",
          .enabled(if: available, "python3 with pynvim is not installed (scripts/setup.sh installs it: pip install pynvim)"))
    func pynvimCallsWorker() async throws {
        let worker = try await (try await workerTemplate()).launch(running: "interop-worker", arguments: [])
        let socket = try #require(worker.takeSocket())
        let report = FileManager.default.temporaryDirectory.appendingPathComponent("forkkit-interop-\(UUID()).json")
        defer { try? FileManager.default.removeItem(at: report) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", Self.script, "client", report.path]
        // The worker's socket is the client's standard input and output.
        let handle = FileHandle(fileDescriptor: socket.rawValue, closeOnDealloc: true)
        process.standardInput = handle
        process.standardOutput = handle
        try process.run()
        try handle.close()
        try await waitForExit(process)
        #expect(process.terminationStatus == 0)
        // The client hung up: the worker saw the end of its input and exited.
        #expect(try await worker.exitStatus() == .exited(0))

        let answers = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: report)) as? [String: Any])
        #expect((answers["library"] as? String)?.hasPrefix("pynvim ") == true)
        #expect(answers["square"] as? Int == 49)
        #expect(answers["add3"] as? Int == 6)
        #expect(answers["callback"] as? Int == 42)
        #expect(answers["progress"] as? Int == 3)
        #expect(answers["steps"] as? [[Int]] == [[0], [1], [2]])
        #expect((answers["served"] as? [[Any]])?.first?.first as? String == "owner_add")
        // ForkKit's errors, as they came on the wire: [type, message] for the protocol's own,
        // the thrown type's full name for a function's.
        let explode = try #require(answers["explode_error_wire"] as? [Any])
        #expect(explode.first as? String == "forkkit_test_worker.TestFailure")
        #expect(explode.dropFirst().first as? String == "exploded on purpose")
        let missing = try #require(answers["nothing_here_error_wire"] as? [Any])
        #expect(missing.first as? String == "NoSuchMethod")
        #expect((missing.dropFirst().first as? String)?.contains("no function named 'nothing_here'") == true)
    }
}
