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
        #expect(outcome.time < .milliseconds(2500), "took \(outcome.time) with a timeout of 300 ms")
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
        #expect(outcome.time < .milliseconds(2500), "took \(outcome.time), cancelled at 200 ms")
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

    @Test("cancellationGracePeriod: a stopped worker that does not answer $cancel is killed; one that answers is kept")
    func gracePeriod() async throws {
        let nap = RPCFunction<Int, Int>("nap-ms")
        let healthy = try await RPCClient.start(try await workerTemplate(), running: "rpc-async")
        healthy.cancellationGracePeriod = .milliseconds(300)
        let first = try await #require(throws: RPCError.self) { _ = try await healthy.call(nap, 10_000, timeout: .milliseconds(100)) }
        #expect(first.kind == .timeout)
        // It answered the cancelled call at once: still alive and serving after the grace period.
        try await Task.sleep(for: .milliseconds(600))
        #expect(try await healthy.call(nap, 1) == 1)
        #expect(try await healthy.close() == .exited(0))

        let stuck = try await RPCClient.start(try await workerTemplate(), running: "rpc-async")
        stuck.cancellationGracePeriod = .milliseconds(300)
        let pid = try #require(stuck.pid)
        defer { stuck.terminate() }
        #expect(try await stuck.call(nap, 1) == 1)
        let held = Task { try await stuck.call(nap, 10_000) }  // held by the worker, no timeout
        try await Task.sleep(for: .milliseconds(50))
        kill(pid, SIGSTOP)
        let timedOut = await bounded(seconds: 5, unstick: stuck.terminate) { try await stuck.call(nap, 10_000, timeout: .milliseconds(200)) }
        #expect((timedOut.error as? RPCError)?.kind == .timeout && timedOut.time < .milliseconds(1200), "\(timedOut.result) after \(timedOut.time)")
        // Killed after the grace period; the call it held fails, saying why.
        let status = await bounded(seconds: 5, unstick: stuck.terminate) { try await stuck.worker!.exitStatus() }
        #expect(!status.hung && (try? status.result.get()) == .signaled(SIGKILL), "\(status.result)")
        let heldOutcome = await bounded(seconds: 5, unstick: stuck.terminate) { try await held.value }
        let heldError = heldOutcome.error as? RPCError
        #expect(heldError?.kind == .workerDied && "\(heldOutcome.error!)".contains("did not answer a call it was told to cancel"), "\(heldOutcome.result)")

        // close() of a stopped worker: it cannot see the end of its input, so it is killed.
        let stopped = try await RPCClient.start(try await workerTemplate(), running: "rpc-async")
        stopped.cancellationGracePeriod = .milliseconds(300)
        defer { stopped.terminate() }
        #expect(try await stopped.call(nap, 1) == 1)
        kill(try #require(stopped.pid), SIGSTOP)
        let closed = await bounded(seconds: 5, unstick: stopped.terminate) { try await stopped.close() }
        #expect(!closed.hung && (try? closed.result.get()) == .signaled(SIGKILL), "\(closed.result)")
    }
}
