import ForkKit
import ForkKitTestSupport
import ForkRPC
import MessagePack
import Synchronization
import Testing

/// An owner handler that sleeps for 30 s and notes whether it was cancelled instead.
final class CancellationNote: Sendable {
    private let cancelled = Mutex(false)

    @Sendable func sleepingHandler(_: Int) async throws -> String {
        do {
            try await Task.sleep(for: .seconds(30))
        } catch {
            cancelled.withLock { $0 = true }
            throw error
        }
        return "too late"
    }

    /// Whether the handler was cancelled within `seconds`.
    func noted(within seconds: Double = 10) async throws -> Bool {
        let deadline = ContinuousClock.now + .seconds(seconds)
        while !cancelled.withLock({ $0 }), ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(10)) }
        return cancelled.withLock { $0 }
    }
}

/// MessagePack-RPC in the other direction: a worker calls functions that its owner serves
/// (`RPCServer.call`, `AsyncRPCServer.call`, `RPCHandlers`), on both backends.
@Suite("Requests from the worker to its owner", .noZombieChildren)
struct RequestsFromWorkerTests {
    static let backends = ["rpc-calls-owner", "async-calls-owner"]
    let nextItem = RPCFunction<Int, Int?>("next-item")
    let pull = RPCFunction<Int, Int>("pull")
    let ask = RPCFunction<String, String>("ask")

    @Test("a worker pulls its work from a queue in the owner until it is empty", arguments: backends)
    func pullsWork(function: String) async throws {
        let queue = Mutex(Array(1...50))
        let askers = Mutex(Set<Int>())
        var handlers = RPCHandlers()
        handlers.register(nextItem) { pid in
            askers.withLock { _ = $0.insert(pid) }
            return queue.withLock { $0.isEmpty ? nil : $0.removeFirst() }
        }
        let worker = try await RPCClient.start(try await workerTemplate(), running: function, handlers: handlers)
        #expect(try await worker.call(pull, 0) == (1...50).map { $0 * $0 }.reduce(0, +))
        #expect(queue.withLock { $0.isEmpty })
        #expect(askers.withLock { $0 } == [Int(worker.pid!)])
        #expect(try await worker.close() == .exited(0))
    }

    @Test("a request for a function the owner does not serve gets NoSuchMethod, and the connection lives on", arguments: backends)
    func unknownFunction(function: String) async throws {
        let worker = try await RPCClient.start(try await workerTemplate(), running: function)
        let answer = try await worker.call(ask, "not-served")
        #expect(answer.hasPrefix("unknownFunction: no function named 'not-served' in the owner"), "\(answer)")
        #expect(answer.hasSuffix("it serves: nothing"), "\(answer)")
        // Registered later, on the client: the same worker now gets an answer.
        worker.register(RPCFunction<Int, String>("not-served")) { "now served \($0)" }
        let later = try await worker.call(ask, "not-served")
        #expect(later == "ok: now served 1", "\(later)")
        #expect(try await worker.close() == .exited(0))
    }

    @Test("an owner handler's error reaches the worker: as an RPCError, or as itself when registered", arguments: backends)
    func handlerErrors(function: String) async throws {
        var handlers = RPCHandlers()
        handlers.register(RPCFunction<Int, String>("fails")) { _ in throw TestTimeout(description: "the owner's own failure") }
        handlers.register(RPCFunction<Int, String>("bad-shape")) { _ in throw BadShape(sides: 2) }
        handlers.register(RPCFunction<String, String>("wrong-input")) { $0 }
        let worker = try await RPCClient.start(try await workerTemplate(), running: function, handlers: handlers)
        let fails = try await worker.call(ask, "fails")
        #expect(fails == "remote: the owner's own failure", "\(fails)")
        #expect(try await worker.call(ask, "bad-shape") == "BadShape: 2")
        let wrongInput = try await worker.call(ask, "wrong-input")
        #expect(wrongInput.hasPrefix("invalidArguments: expects String"), "\(wrongInput)")
        #expect(try await worker.close() == .exited(0))
    }

    @Test("a worker's call to its owner times out, cancels the owner's handler, and the worker serves on", arguments: backends)
    func timeout(function: String) async throws {
        let cancelled = CancellationNote()
        var handlers = RPCHandlers()
        handlers.register(RPCFunction<Int, String>("slow"), cancelled.sleepingHandler)
        let worker = try await RPCClient.start(try await workerTemplate(), running: function, handlers: handlers)
        let answer = try await worker.call(ask, "slow", timeout: .seconds(10))
        #expect(answer.hasPrefix("timeout: the owner did not answer within"), "\(answer)")
        #expect(try await cancelled.noted(), "the owner's handler was not cancelled after the worker's $cancel")
        worker.register(RPCFunction<Int, String>("fast")) { "\($0 + 1)" }
        let fast = try await worker.call(ask, "fast")
        #expect(fast == "ok: 2", "\(fast)")
        #expect(try await worker.close() == .exited(0))
    }

    @Test("a Codable error type registered in the owner is thrown as itself; another keeps its type name, without 'threw: ' in its message", arguments: backends)
    func typedErrors(function: String) async throws {
        RPCError.register(BadShape.self)
        let worker = try await RPCClient.start(try await workerTemplate(), running: function)
        await #expect(throws: BadShape(sides: 5)) { try await worker.call(RPCFunction<Int, Int>("throw-shape"), 5) }
        let error = try await #require(throws: RPCError.self) { try await worker.call(RPCFunction<Int, Int>("throw-plain"), 0) }
        #expect(error.kind == .remote)
        #expect(error.remoteType == "forkkit_test_worker.TestFailure")
        #expect(error.message == "plain failure")
        #expect(error.description == "forkkit_test_worker.TestFailure: 'throw-plain' in worker \(worker.pid!) threw: plain failure")
        #expect(error.remoteError == ["forkkit_test_worker.TestFailure", "plain failure"])
        // In a batch the item keeps its RPCError (with its index), which re-makes the typed error.
        let results = try await worker.callBatch(RPCFunction<Int, Int>("throw-shape"), [3, 4])
        guard case .failure(let second) = results[1] else { Issue.record("the batch item did not fail"); return }
        #expect(second.itemIndex == 1)
        #expect(second.registeredError as? BadShape == BadShape(sides: 4))
        #expect(try await worker.close() == .exited(0))
    }
}

/// The cases a review found: what arrives while a worker waits for its owner, calls from a set-up,
/// descriptors toward the owner, and a cancelled call that waits for the owner.
@Suite("Requests to the owner: waiting, set-up, descriptors, cancellation", .noZombieChildren)
struct RequestsToOwnerEdgeTests {
    let ask = RPCFunction<String, String>("ask")

    @Test("two calls to the owner in one function, while other requests arrive meanwhile", arguments: RequestsFromWorkerTests.backends)
    func requestsWhileWaiting(function: String) async throws {
        var handlers = RPCHandlers()
        handlers.register(RPCFunction<Int, String>("slowish")) { value in
            try await Task.sleep(for: .milliseconds(50))  // the other calls arrive while the worker waits
            return "got \(value)"
        }
        let worker = try await RPCClient.start(try await workerTemplate(), running: function, handlers: handlers)
        async let twice = worker.call(RPCFunction<String, String>("ask-twice"), "slowish")
        async let sum = worker.call(RPCFunction<Int, Int, Int, Int>("add3"), 1, 2, 3)
        async let greeting = worker.call(RPCFunction<String>("greet"))
        #expect(try await twice == "got 1 got 2")
        #expect(try await sum == 6)
        #expect(try await greeting == "hello")
        #expect(try await worker.close() == .exited(0))
    }

    @Test("a synchronous worker's set-up may call its owner; an asynchronous one's is told at once that it cannot")
    func fromSetUp() async throws {
        var handlers = RPCHandlers()
        handlers.register(RPCFunction<String>("greeting")) { "hello from the owner" }
        let sync = try await RPCClient.start(try await workerTemplate(), running: "rpc-asks-at-setup", handlers: handlers)
        #expect(try await sync.call(RPCFunction<String>("greeting")) == "hello from the owner")
        #expect(try await sync.close() == .exited(0))
        let async = try await RPCClient.start(try await workerTemplate(), running: "async-asks-at-setup", handlers: handlers)
        let refusal = try await async.call(RPCFunction<String>("greeting"))
        #expect(refusal.hasPrefix("closed: the asynchronous server reads the owner's answers only once it serves"), "\(refusal)")
        #expect(try await async.close() == .exited(0))
    }

    @Test("a descriptor toward the owner is refused before it is sent", arguments: RequestsFromWorkerTests.backends)
    func descriptorTowardOwner(function: String) async throws {
        var handlers = RPCHandlers()
        handlers.register(RPCFunction<PassedDescriptor, Int>("take")) { _ in 1 }
        let worker = try await RPCClient.start(try await workerTemplate(), running: function, handlers: handlers)
        let answer = try await worker.call(RPCFunction<Int, String>("ask-with-descriptor"), 0)
        #expect(answer.hasPrefix("codingFailed: descriptors travel from the owner to its workers only"), "\(answer)")
        #expect(try await worker.close() == .exited(0))
    }

    @Test("a call given up on while its function waits for the owner cancels the owner's handler", arguments: RequestsFromWorkerTests.backends)
    func cancelledWhileWaiting(function: String) async throws {
        let cancelled = CancellationNote()
        var handlers = RPCHandlers()
        handlers.register(RPCFunction<Int, String>("very-slow"), cancelled.sleepingHandler)
        handlers.register(RPCFunction<Int, String>("fast")) { "\($0)" }
        let worker = try await RPCClient.start(try await workerTemplate(), running: function, handlers: handlers)
        let timeout = try await #require(throws: RPCError.self) { try await worker.call(ask, "very-slow", timeout: .milliseconds(300)) }
        #expect(timeout.kind == .timeout)
        #expect(try await cancelled.noted(), "the owner's handler ran on after the worker's caller gave up")
        // The worker is free again.
        #expect(try await worker.call(ask, "fast") == "ok: 1")
        #expect(try await worker.close() == .exited(0))
    }
}

/// Typed functions of any arity (`RPCFunction<A, B, C, Output>`, `RPCFunction<Output>`), in both
/// directions: `[a, b, c]` on the wire, `[]` for none.
@Suite("Functions of any number of arguments", .noZombieChildren)
struct ArityTests {
    @Test("calls with 0, 2 and 3 arguments, typed and untyped, on both backends", arguments: RequestsFromWorkerTests.backends)
    func arities(function: String) async throws {
        let worker = try await RPCClient.start(try await workerTemplate(), running: function)
        #expect(try await worker.call(RPCFunction<Int, Int, Int, Int>("add3"), 1, 2, 3) == 6)
        #expect(try await worker.call(RPCFunction<String>("greet")) == "hello")
        #expect(try await worker.call(RPCFunction<String, Int, [String]>("repeat"), "ab", 3) == ["ab", "ab", "ab"])
        // The same functions untyped: the params array is the arguments.
        #expect(try await worker.call(method: "add3", params: [10, 20, 30]) == 60)
        #expect(try await worker.call(method: "greet", params: []) == "hello")
        let tooFew = try await #require(throws: RPCError.self) { try await worker.call(method: "add3", params: [1, 2]) }
        #expect(tooFew.kind == .invalidArguments)
        #expect(tooFew.message == "expects 3 arguments (Int, Int, Int), got 2", "\(tooFew.message)")
        let wrongType = try await #require(throws: RPCError.self) { try await worker.call(method: "repeat", params: ["ab", "three"]) }
        #expect(wrongType.kind == .invalidArguments)
        #expect(wrongType.message.hasPrefix("expects Int as argument 2"), "\(wrongType.message)")
        let extra = try await #require(throws: RPCError.self) { try await worker.call(method: "greet", params: [1]) }
        #expect(extra.message == "expects no arguments, got 1", "\(extra.message)")
        #expect(try await worker.close() == .exited(0))
    }

    @Test("a worker calls owner functions of 0 and 2 arguments", arguments: RequestsFromWorkerTests.backends)
    func towardTheOwner(function: String) async throws {
        var handlers = RPCHandlers()
        handlers.register(RPCFunction<Int, Int, Int>("add")) { a, b in a + b }
        handlers.register(RPCFunction<String>("name")) { "the owner" }
        let worker = try await RPCClient.start(try await workerTemplate(), running: function, handlers: handlers)
        #expect(try await worker.call(RPCFunction<Int, Int, Int>("add-via-owner"), 40, 2) == 42)
        #expect(try await worker.call(RPCFunction<String>("owner-name")) == "the owner")
        #expect(try await worker.close() == .exited(0))
    }
}
