import ForkKit
import ForkKitTestSupport
import ForkPool
import ForkRPC
import Foundation
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

let sleepMicroseconds = RPCFunction<Int, Int>("sleep-us")

/// Workers that stop answering (SIGSTOP, a socket closed by a worker that then hangs): every call
/// with a timeout ends in time, the stuck worker is killed and replaced on either backend, a map
/// runs the stuck worker's items again, and `shutdown()` ends.
@Suite("ForkPool with stuck workers", .serialized, .noZombieChildren)
struct StuckWorkerTests {
    /// Kills `pid` unless it is known to be gone (a test that failed leaves no stopped process).
    static func killIfAlive(_ pid: Int32) {
        if !isDead(pid) { kill(pid, SIGKILL) }
    }

    /// Stops a worker of `pool` while it holds a call, once `ready` holds; returns its pid.
    static func stopBusyWorker(of pool: WorkerPool, when ready: () -> Bool = { true }) async throws -> Int32 {
        #expect(await eventually(within: 5) { ready() && pool.statistics.workers.contains { $0.callsInFlight > 0 } })
        let victim = try #require(pool.statistics.workers.first { $0.callsInFlight > 0 }?.pid)
        kill(victim, SIGSTOP)
        return victim
    }

    /// A call on a one-worker pool whose worker is stopped mid-call: the call times out in time,
    /// the worker is killed and replaced, the next call succeeds, and shutdown ends.
    func stoppedMidCall(_ function: String, backend: WorkerPool.Backend) async throws {
        let pool = try await makePool(function) {
            $0.maximumWorkers = 1; $0.idleWorkers = 1; $0.backend = backend; $0.callTimeout = .milliseconds(300)
        }
        let before = try await pool.call(workerPID, 0)
        defer { Self.killIfAlive(before) }
        let call = Task { try await pool.call(sleepMilliseconds, 250) }
        let victim = try await Self.stopBusyWorker(of: pool)
        #expect(victim == before)
        let outcome = await bounded(seconds: 5, unstick: { kill(victim, SIGKILL) }) { try await call.value }
        #expect(!outcome.hung, "the call did not end within 5 s")
        #expect((outcome.error as? RPCError)?.kind == .timeout, "\(outcome.result)")
        #expect(outcome.time < .milliseconds(2500), "the call ended \(outcome.time) after the worker stopped; its timeout is 300 ms")

        // Killed and replaced (after the cancellation grace period on the asynchronous backend).
        #expect(await eventually(within: 5) { isDead(victim) }, "the stopped worker \(victim) is still there")
        let next = await bounded(seconds: 5, unstick: { kill(victim, SIGKILL) }) { try await pool.call(workerPID, 0) }
        #expect(!next.hung && (try? next.result.get()).map { $0 != victim } == true, "the next call: \(next.result)")
        #expect(pool.statistics.counters.workersLost == 1)
        let shutdown = await bounded(seconds: 5, unstick: { kill(victim, SIGKILL) }) { await pool.shutdown() }
        #expect(!shutdown.hung, "shutdown did not end within 5 s")
        print("stopped mid-call (\(backend)): the call ended \(outcome.time) after the stop, the next call \(next.time) later, shutdown took \(shutdown.time)")
    }

    @Test("a worker stopped (SIGSTOP) mid-call, synchronous backend: the call times out, the worker is replaced")
    func stoppedMidCallSynchronous() async throws {
        try await stoppedMidCall("pool-worker", backend: .synchronous)
    }

    @Test("a worker stopped (SIGSTOP) mid-call, asynchronous backend: the call times out, the worker is killed after the grace period and replaced")
    func stoppedMidCallAsynchronous() async throws {
        try await stoppedMidCall("pool-async-worker", backend: .asynchronous)
    }

    /// A map on two workers, one of which is stopped partway: with retries the map completes with
    /// every result, about two call timeouts after the stop.
    func stoppedMidMap(_ function: String, backend: WorkerPool.Backend) async throws {
        let timeout = Duration.milliseconds(500)
        let pool = try await makePool(function) {
            $0.idleWorkers = 2; $0.backend = backend; $0.callTimeout = timeout; $0.retries = 2
        }
        let inputs = Array(repeating: 100, count: 8_000)
        let progress = MapProgress()
        let map = Task { try await pool.map(sleepMicroseconds, inputs, progress: progress) }
        let victim = try await Self.stopBusyWorker(of: pool) { progress.completed > 500 }
        defer { Self.killIfAlive(victim) }
        let outcome = await bounded(seconds: 20, unstick: { kill(victim, SIGKILL) }) { try await map.value }
        #expect(!outcome.hung, "the map did not end within 20 s of the stop")
        #expect((try? outcome.result.get()) == inputs, "\(outcome.error.map { "\($0)" } ?? "wrong results")")
        // The work left at the stop takes well under a second on one worker; the stuck worker is
        // noticed after one call timeout.
        #expect(outcome.time < .seconds(4), "the map ended \(outcome.time) after the stop; callTimeout is \(timeout)")
        #expect(await eventually(within: 5) { isDead(victim) }, "the stopped worker \(victim) is still there")
        #expect(pool.statistics.counters.workersLost >= 1)
        let shutdown = await bounded(seconds: 5, unstick: { kill(victim, SIGKILL) }) { await pool.shutdown() }
        #expect(!shutdown.hung, "shutdown did not end within 5 s")
        print("stopped mid-map (\(backend)): the map ended \(outcome.time) after the stop")
    }

    @Test("a worker stopped (SIGSTOP) mid-map, synchronous backend: its items run again and the map completes")
    func stoppedMidMapSynchronous() async throws {
        try await stoppedMidMap("pool-worker", backend: .synchronous)
    }

    @Test("a worker stopped (SIGSTOP) mid-map, asynchronous backend: its items run again and the map completes")
    func stoppedMidMapAsynchronous() async throws {
        try await stoppedMidMap("pool-async-worker", backend: .asynchronous)
    }

    @Test("shutdown() ends when a worker is stopped while idle: it is killed after the grace period")
    func shutdownWithStoppedIdleWorker() async throws {
        for backend in [WorkerPool.Backend.synchronous, .asynchronous] {
            let pool = try await makePool(backend == .synchronous ? "pool-worker" : "pool-async-worker") {
                $0.idleWorkers = 2; $0.backend = backend; $0.cancellationGracePeriod = .milliseconds(300)
            }
            let victim = try #require(pool.statistics.workers.first?.pid)
            defer { Self.killIfAlive(victim) }
            kill(victim, SIGSTOP)
            let shutdown = await bounded(seconds: 5, unstick: { kill(victim, SIGKILL) }) { await pool.shutdown() }
            #expect(!shutdown.hung && shutdown.time < .seconds(3), "\(backend): shutdown took \(shutdown.time)")
            #expect(isDead(victim))
        }
    }

    @Test("a worker that closes its socket and hangs: a pool call ends at its timeout; the worker is replaced")
    func closedAndHanging() async throws {
        let pool = try await makePool("pool-faults") { $0.maximumWorkers = 1; $0.idleWorkers = 1 }
        let before = try await pool.call(workerPID, 0)
        defer { Self.killIfAlive(before) }
        let outcome = await bounded(seconds: 5, unstick: { kill(before, SIGKILL) }) {
            try await pool.call(RPCFunction<Int, Int>("close-socket"), 0, timeout: .milliseconds(200))
        }
        #expect(!outcome.hung, "the call did not end within 5 s")
        #expect((outcome.error as? RPCError)?.kind == .timeout, "\(outcome.result)")
        #expect(outcome.time < .milliseconds(2500), "took \(outcome.time) with a timeout of 200 ms")
        #expect(try await pool.call(workerPID, 0) != before)
        #expect(await eventually(within: 5) { isDead(before) })
        await pool.shutdown()
    }
}

/// How a map treats the pool's workers: a failing item interrupts none, a map with work for
/// several workers starts them at once, and the statistics are exact when it returns.
@Suite("ForkPool maps and their workers", .serialized, .noZombieChildren)
struct MapWorkerTests {
    @Test("a failing item in a 2,000-item map on 2 workers restarts no worker")
    func failingItemKillsNoWorker() async throws {
        let pool = try await makePool { $0.idleWorkers = 2 }
        let workers = Set(pool.statistics.workers.map(\.pid))
        #expect(workers.count == 2)
        var inputs = Array(0..<2_000)
        inputs[1_000] = -1
        await #expect {
            _ = try await pool.map(RPCFunction<Int, Int>("slow-fail-if-negative"), inputs)
        } throws: { error in
            (error as? RPCError)?.kind == .remote && "\(error)".contains("negative input -1")
        }
        let statistics = pool.statistics
        #expect(statistics.counters.workersLost == 0 && statistics.counters.workersStarted == 2, "\(statistics.counters)")
        #expect(Set(statistics.workers.map(\.pid)) == workers)
        #expect(statistics.workers.allSatisfy { $0.callsInFlight == 0 }, "calls still running after map threw")
        #expect(try await pool.map(square, 0..<100) == (0..<100).map { $0 * $0 })
        #expect(pool.statistics.counters.workersStarted == 2)
        await pool.shutdown()
    }

    @Test("a failing item while another chunk runs long: the map throws after the grace period, cancelling only that chunk")
    func failingItemWithLongChunk() async throws {
        let pool = try await makePool { $0.idleWorkers = 2; $0.load = 1; $0.cancellationGracePeriod = .milliseconds(300) }
        let outcome = await bounded(seconds: 10) {
            try await pool.map(RPCFunction<Int, Int>("sleep-ms-or-fail"), [10_000, -1], chunkSize: 1)
        }
        #expect((outcome.error as? RPCError)?.kind == .remote && "\(outcome.error!)".contains("negative input -1"), "\(outcome.result)")
        #expect(outcome.time < .seconds(3), "the map threw \(outcome.time) after it began; the grace period is 300 ms")
        // The synchronous worker that ran the long item was interrupted, so it was replaced.
        #expect(pool.statistics.counters.workersLost == 1)
        #expect(try await pool.call(square, 3) == 9)
        await pool.shutdown()
    }

    @Test("a map with more work than one worker can take starts the workers at once, whatever the start delay")
    func mapStartsWorkersAtOnce() async throws {
        // The default settings (no idle worker, a start delay of 0.1 s), two workers at most:
        // 40 items of 20 ms use both.
        let pool = try await makePool()
        #expect(try await pool.map(sleepMilliseconds, Array(repeating: 20, count: 40)) == Array(repeating: 20, count: 40))
        let served = pool.statistics.workers.map(\.callsServed)
        #expect(served.count == 2 && served.allSatisfy { $0 > 0 }, "calls served by each worker: \(served)")
        await pool.shutdown()

        // 2,000 tiny calls: without a start at once, one worker kept up with the queue.
        let tiny = try await makePool()
        #expect(try await tiny.map(square, 0..<2_000, chunkSize: 1).count == 2_000)
        // Started for the map, whether or not the second worker got calls before the first finished them.
        #expect(tiny.statistics.counters.workersStarted == 2, "\(tiny.statistics.counters)")
        await tiny.shutdown()

        // A start delay longer than the whole map: the second worker starts for the map at once.
        let patient = try await makePool { $0.startDelay = .seconds(10) }
        #expect(try await patient.map(sleepMilliseconds, Array(repeating: 20, count: 40)).count == 40)
        let patientServed = patient.statistics.workers.map(\.callsServed)
        #expect(patientServed.count == 2 && patientServed.allSatisfy { $0 > 0 }, "calls served by each worker: \(patientServed)")
        #expect(patient.statistics.counters.workersStarted == 2)
        await patient.shutdown()
    }

    @Test("statistics read right after map returns count every call, on each worker")
    func statisticsExactAfterMap() async throws {
        for backend in [WorkerPool.Backend.synchronous, .asynchronous] {
            let pool = try await makePool(backend == .synchronous ? "pool-worker" : "pool-async-worker") {
                $0.idleWorkers = 2; $0.backend = backend
            }
            var expected: [Int32: Int] = [:]
            for round in 1...3 {
                let pids = try await pool.map(workerPID, 0..<2_000, chunkSize: 1)
                for pid in pids { expected[pid, default: 0] += 1 }
                let statistics = pool.statistics
                #expect(statistics.counters.callsServed == 2_000 * round, "\(backend), round \(round): \(statistics.counters.callsServed)")
                let served = Dictionary(uniqueKeysWithValues: statistics.workers.map { ($0.pid, $0.callsServed) })
                #expect(served == expected, "\(backend), round \(round)")
                #expect(statistics.workers.allSatisfy { $0.callsInFlight == 0 })
            }
            await pool.shutdown()
        }
    }
}
