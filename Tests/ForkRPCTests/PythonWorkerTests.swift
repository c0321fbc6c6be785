import ForkKitTestSupport
import ForkRPC
import Foundation
import MessagePack
import SystemPackage
import Testing

/// A worker written in Python from protocol/README.md alone (protocol/examples/python_worker.py),
/// called by a ForkRPC client over pipes: the protocol is complete enough for another language.
@Suite("A Python worker (protocol/examples/python_worker.py)")
struct PythonWorkerTests {
    static let script = protocolExample("python_worker.py")

    /// Whether python3 with the msgpack package is installed (`.ci/run` installs it).
    static let available = python3CanImport("msgpack")

    @Test("typed calls, a batch, an event, a Python exception and an unknown function",
          .enabled(if: available, "python3 with the msgpack package is not installed (pip install msgpack)"))
    func callPython() async throws {
        let (process, client) = try startPipeWorker("/usr/bin/env", ["python3", Self.script])

        #expect(try await client.call(RPCFunction<Int, Int>("square"), 12345) == 152_399_025)
        let events = Task { () -> RPCEvent? in
            for await event in client.events { return event }
            return nil
        }
        #expect(try await client.call(RPCFunction<String, String>("greet"), "Swift") == "hello, Swift")
        let event = try #require(await events.value)
        #expect(event.name == "progress" && event.params == [1])
        let batch = try await client.callBatch(RPCFunction<Int, Int>("square"), [1, 2, 3])
        #expect(try batch.map { try $0.get() } == [1, 4, 9])
        await #expect {
            _ = try await client.call(RPCFunction<Int, Int>("fail"), 0)
        } throws: { error in
            guard let error = error as? RPCError else { return false }
            return error.kind == .remote && error.remoteType == "ValueError" && error.message.contains("deliberate failure in Python")
        }
        await #expect {
            _ = try await client.call(RPCFunction<Int, Int>("cube"), 2)
        } throws: { error in
            (error as? RPCError)?.kind == .unknownFunction
        }
        _ = try await client.close()
        process.waitUntilExit()
        #expect(process.terminationStatus == 0)
    }
}
