import ForkKit
import ForkKitTestSupport
import ForkRPC
import MessagePack
import Testing

/// The untyped API: calls, functions and owner handlers with MessagePack values, for peers whose
/// types are not known at compile time, on both backends.
@Suite("Untyped calls with MessagePack values", .noZombieChildren)
struct UntypedCallTests {
    static let backends = ["rpc-untyped", "async-untyped"]

    @Test("every kind of MessagePack value goes to a worker and back unchanged", arguments: backends)
    func roundTrip(function: String) async throws {
        let worker = try await RPCClient.start(try await workerTemplate(), running: function)
        let values: [MessagePackValue] = [
            nil, true, false, -5, 7, .uint(UInt64.max), .int(Int64.min), .float32(0.25), .float64(-1.5), "text", "",
            .binary([0, 1, 255]), [1, [2, [3]]], ["a": [1], 2: "two"], .extended(type: 5, data: [1, 2, 3]),
            .timestamp(seconds: 1_700_000_000, nanoseconds: 123),
        ]
        #expect(try await worker.call(method: "echo", params: values) == .array(values))
        #expect(try await worker.call(method: "echo", params: []) == [])
        #expect(try await worker.call(method: "sum", params: [1, 2, 3, -10]) == -4)
        let unknown = try await #require(throws: RPCError.self) { try await worker.call(method: "nope", params: []) }
        #expect(unknown.kind == .unknownFunction)
        #expect(try await worker.close() == .exited(0))
    }

    @Test("a worker calls an untyped handler in the owner", arguments: backends)
    func towardTheOwner(function: String) async throws {
        var handlers = RPCHandlers()
        handlers.register(method: "owner-reverse") { .array($0.reversed()) }
        let worker = try await RPCClient.start(try await workerTemplate(), running: function, handlers: handlers)
        #expect(try await worker.call(method: "ask-owner", params: [1, "two", nil]) == [nil, "two", 1])
        #expect(try await worker.close() == .exited(0))
    }

    /// Descriptors travel with calls, owner to worker, not back: the owner's reading thread frames
    /// every worker's replies and hands them over undecoded (see the ForkRPC article). A worker
    /// that must hand back a file writes into one the owner passed it.
    @Test("a result that carries a descriptor is refused with InvalidResult, and the worker serves on", arguments: backends)
    func descriptorResultRefused(function: String) async throws {
        let worker = try await RPCClient.start(try await workerTemplate(), running: function)
        let refusal = try await #require(throws: RPCError.self) { try await worker.call(RPCFunction<Int, PassedDescriptor>("descriptor-result"), 0) }
        #expect(refusal.remoteType == "InvalidResult")
        #expect(refusal.message == "results cannot carry descriptors; only arguments can")
        #expect(try await worker.call(method: "sum", params: [2, 2]) == 4)
        #expect(try await worker.close() == .exited(0))
    }
}
