import ForkKit
import ForkKitTestSupport
import ForkRPC
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Every call ends, by its timeout, its task's cancellation or its worker's end, even when the
/// worker broke the protocol or closed its socket and then hangs without exiting.
@Suite("ForkRPC: calls end on every path", .noZombieChildren)
struct CallEndingTests {
    let closeAndHang = RPCFunction<Int, Int>("close-and-hang")
    let garbageAndHang = RPCFunction<Int, Int>("garbage-and-hang")

    func misbehavingWorker() async throws -> RPCClient {
        try await RPCClient.start(try await workerTemplate(), running: "rpc-misbehaving")
    }

    @Test("a worker that closes its socket and hangs: a call with a timeout ends at its timeout")
    func closedAndHangingTimeout() async throws {
        let worker = try await misbehavingWorker()
        defer { worker.terminate() }
        let outcome = await bounded(seconds: 5, unstick: worker.terminate) {
            try await worker.call(closeAndHang, 0, timeout: .milliseconds(300))
        }
        #expect(!outcome.hung, "the call did not end within 5 s")
        #expect((outcome.error as? RPCError)?.kind == .timeout, "\(outcome.result)")
        #expect(outcome.time < .milliseconds(1300), "took \(outcome.time) with a timeout of 300 ms")
    }

    @Test("a worker that closes its socket and hangs: a call without a timeout ends, naming what happened")
    func closedAndHangingNoTimeout() async throws {
        let worker = try await misbehavingWorker()
        defer { worker.terminate() }
        let outcome = await bounded(seconds: 8, unstick: worker.terminate) {
            try await worker.call(closeAndHang, 0)
        }
        #expect(!outcome.hung, "the call did not end within 8 s")
        let error = outcome.error as? RPCError
        #expect(error?.kind == .workerDied && "\(outcome.error!)".contains("closed its connection"), "\(outcome.result)")
        // The client waits up to 1 s for an exit status that never comes.
        #expect(outcome.time < .seconds(4), "took \(outcome.time)")
        #expect(worker.worker?.exitStatusIfKnown == nil, "the worker was meant to hang")
    }

    @Test("a worker that closes its socket and hangs: cancelling the task ends the call")
    func closedAndHangingCancelled() async throws {
        let worker = try await misbehavingWorker()
        defer { worker.terminate() }
        let outcome = await bounded(seconds: 8, unstick: worker.terminate) {
            try await withThrowingTaskGroup(of: Int.self) { group in
                group.addTask { try await worker.call(closeAndHang, 0) }
                // Cancelled once the connection has ended, while the client waits for an exit status.
                try await Task.sleep(for: .milliseconds(200))
                group.cancelAll()
                return try await group.next()!
            }
        }
        #expect(!outcome.hung, "the call did not end within 8 s")
        #expect(outcome.error is CancellationError, "\(outcome.result)")
        #expect(outcome.time < .milliseconds(1200), "took \(outcome.time), cancelled at 200 ms")
    }

    @Test("a worker that breaks the protocol and hangs: the call fails at once with a protocol error")
    func garbageAndHanging() async throws {
        let worker = try await misbehavingWorker()
        defer { worker.terminate() }
        let outcome = await bounded(seconds: 8, unstick: worker.terminate) {
            try await worker.call(garbageAndHang, 0)
        }
        #expect(!outcome.hung, "the call did not end within 8 s")
        #expect((outcome.error as? RPCError)?.kind == .protocolViolation, "\(outcome.result)")
        #expect(outcome.time < .seconds(2), "took \(outcome.time)")
        // A timeout ends it too, while the worker hangs on.
        let second = try await misbehavingWorker()
        defer { second.terminate() }
        let timed = await bounded(seconds: 8, unstick: second.terminate) {
            try await second.call(garbageAndHang, 0, timeout: .milliseconds(300))
        }
        #expect(!timed.hung && timed.time < .milliseconds(1300), "took \(timed.time)")
    }
}
