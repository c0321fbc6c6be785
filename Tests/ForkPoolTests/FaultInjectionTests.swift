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

/// Workers that die in every way a process can, under load and one at a time: every call ends with
/// its result or an error that names what happened, and the pool goes on serving.
@Suite("ForkPool under fault injection", .serialized, .noZombieChildren)
struct FaultInjectionTests {
    static let sleepMicroseconds = RPCFunction<Int, Int>("sleep-us")

    /// Runs `calls` calls of `sleep-us` (returning their input) on 16 lanes while a killer SIGKILLs a
    /// random worker every 50 ms; returns each call's outcome, and how many workers were killed.
    func crashStorm(_ pool: WorkerPool, calls: Int) async -> (outcomes: [Result<Int, any Error>], kills: Int) {
        let running = Atomic<Bool>(true)
        let killer = Task {
            var kills = 0
            while running.load(ordering: .relaxed) {
                try? await Task.sleep(for: .milliseconds(50))
                if running.load(ordering: .relaxed), let victim = pool.statistics.workers.randomElement()?.pid {
                    kill(victim, SIGKILL)
                    kills += 1
                }
            }
            return kills
        }
        let outcomes = await withTaskGroup(of: [(Int, Result<Int, any Error>)].self) { group in
            let lanes = 16
            for lane in 0..<lanes {
                group.addTask {
                    var outcomes: [(Int, Result<Int, any Error>)] = []
                    for index in stride(from: lane, to: calls, by: lanes) {
                        do {
                            outcomes.append((index, .success(try await pool.call(Self.sleepMicroseconds, 50 + index % 100))))
                        } catch {
                            outcomes.append((index, .failure(error)))
                        }
                    }
                    return outcomes
                }
            }
            var all = [Result<Int, any Error>?](repeating: nil, count: calls)
            for await part in group {
                for (index, outcome) in part { all[index] = outcome }
            }
            return all.map { $0! }
        }
        running.store(false, ordering: .relaxed)
        return (outcomes, await killer.value)
    }

    @Test("crash storm with retries: 20,000 calls, a worker SIGKILLed every 50 ms, every call succeeds")
    func crashStormWithRetries() async throws {
        let pool = try await makePool("pool-faults") { $0.idleWorkers = 2; $0.retries = 50 }
        let (outcomes, kills) = await crashStorm(pool, calls: 20_000)
        let wrong = outcomes.enumerated().filter { index, outcome in (try? outcome.get()) != 50 + index % 100 }
        #expect(wrong.isEmpty, "\(wrong.count) calls failed or were wrong, first: \(String(describing: wrong.first))")
        #expect(kills >= 5)
        #expect(pool.statistics.counters.workersLost >= 1)
        #expect(pool.statistics.counters.retries >= 1)
        await pool.shutdown()
    }

    @Test("crash storm without retries: every call succeeds or fails naming the killed worker")
    func crashStormWithoutRetries() async throws {
        let pool = try await makePool("pool-faults") { $0.idleWorkers = 2 }
        let (outcomes, kills) = await crashStorm(pool, calls: 20_000)
        var succeeded = 0, died = 0, namingTheSignal = 0
        var other: [String] = []
        for (index, outcome) in outcomes.enumerated() {
            switch outcome {
            case .success(let value) where value == 50 + index % 100:
                succeeded += 1
            case .failure(let error as RPCError) where error.kind == .workerDied && error.pid != nil:
                died += 1
                if "\(error)".contains("SIGKILL") { namingTheSignal += 1 }
            default:
                other.append("\(outcome)")
            }
        }
        #expect(other.isEmpty, "unexpected outcomes: \(other.prefix(3))")
        #expect(succeeded + died == 20_000)
        #expect(kills >= 5 && died >= 1 && succeeded > 0)
        // A call that reaches a worker in the moment between its death and its exit status being
        // known is told only that the worker has gone; the calls it held learn the signal.
        #expect(namingTheSignal * 2 >= died, "\(namingTheSignal) of \(died) errors name SIGKILL")
        await pool.shutdown()
    }

    /// Calls `function` on a one-worker pool and returns the error it ends with; then checks that
    /// the pool serves the next call on a fresh worker and that the failed one is gone.
    func failure(_ name: String, _ argument: Int = 0, timeout: Duration? = nil) async throws -> any Error {
        let pool = try await makePool("pool-faults") { $0.maximumWorkers = 1; $0.idleWorkers = 1 }
        let pid = try await pool.call(workerPID, 0)
        var caught: (any Error)?
        do {
            _ = try await pool.call(RPCFunction<Int, Int>(name), argument, timeout: timeout)
        } catch {
            caught = error
        }
        #expect(try await pool.call(square, 7) == 49, "the pool serves on after '\(name)'")
        #expect(try await pool.call(workerPID, 0) != pid)
        #expect(await eventually(within: 5) { isReaped(pid) }, "worker \(pid) is gone after '\(name)'")
        await pool.shutdown()
        return try #require(caught, "'\(name)' returned instead of failing")
    }

    @Test("a worker that exits, calls fatalError, segfaults or runs out of memory: each is named")
    func deaths() async throws {
        func status(_ error: any Error) -> ForkKit.ExitStatus? {
            guard let error = error as? RPCError, error.kind == .workerDied else { return nil }
            return error.exitStatus
        }
        let exited = try await failure("exit-with", 7)
        #expect(status(exited) == .exited(7) && "\(exited)".contains("exit code 7"), "\(exited)")

        let fatal = try await failure("fatal")
        // Swift traps (ud2): SIGILL on x86_64, SIGTRAP on arm64.
        #expect([ForkKit.ExitStatus.signaled(SIGILL), .signaled(SIGTRAP)].contains(status(fatal)), "\(fatal)")

        let segfault = try await failure("segfault")
        #expect(status(segfault) == .signaled(SIGSEGV) && "\(segfault)".contains("SIGSEGV"), "\(segfault)")

        let memory = try await failure("allocate", 256)
        guard case .signaled = status(memory) else {
            Issue.record("an out-of-memory worker should end by a signal: \(memory)")
            return
        }
    }

    @Test("a worker that closes its socket, writes garbage, or never answers: each is named")
    func misbehaviour() async throws {
        let closed = try await failure("close-socket")
        #expect((closed as? RPCError)?.kind == .workerDied && "\(closed)".contains("closed its connection"), "\(closed)")

        let garbage = try await failure("write-garbage")
        #expect((garbage as? RPCError)?.kind == .protocolViolation, "\(garbage)")

        let silent = try await failure("never-answer", timeout: .milliseconds(300))
        #expect((silent as? RPCError)?.kind == .timeout, "\(silent)")
    }

    @Test("shutdown with 10,000 calls queued: graceful finishes them all, immediate fails the rest clearly")
    func shutdownWithQueue() async throws {
        for graceful in [true, false] {
            let pool = try await makePool("pool-faults") { $0.idleWorkers = 2 }
            // Immediate shutdown gets calls of 1 ms, so that most are still waiting when it comes.
            func work(_ index: Int) -> Int { graceful ? index % 10 : 1_000 }
            let calls = (0..<10_000).map { index in Task { try await pool.call(Self.sleepMicroseconds, work(index)) } }
            // Every call made (queued, running or answered) before the shutdown begins.
            #expect(await eventually(within: 10) {
                let statistics = pool.statistics
                return statistics.queueLength + statistics.workers.map(\.callsInFlight).reduce(0, +) + statistics.counters.callsServed == 10_000
            })
            let time = await elapsed { graceful ? await pool.shutdown() : await pool.terminate() }
            var succeeded = 0, shutDown = 0
            for (index, call) in calls.enumerated() {
                switch await call.result {
                case .success(let value): if value == work(index) { succeeded += 1 }
                case .failure(let error): if (error as? WorkerPoolError)?.kind == .shutDown { shutDown += 1 }
                }
            }
            if graceful {
                #expect(succeeded == 10_000)
            } else {
                #expect(succeeded + shutDown == 10_000 && shutDown > 5_000)
                #expect(time < .seconds(3))
            }
        }
    }

    @Test("graceful shutdown while the only worker dies with calls queued: a new worker serves them")
    func shutdownWhileWorkerDies() async throws {
        let pool = try await makePool("pool-faults") { $0.maximumWorkers = 1; $0.load = 1; $0.idleWorkers = 1; $0.retries = 2 }
        let pid = try await pool.call(workerPID, 0)
        let calls = (0..<5).map { _ in Task { try await pool.call(Self.sleepMicroseconds, 20_000) } }
        #expect(await eventually(within: 2) { pool.statistics.queueLength == 4 })
        kill(pid, SIGKILL)
        let time = await elapsed { await pool.shutdown() }
        for call in calls { #expect(try await call.value == 20_000) }
        #expect(time < .seconds(5))
    }

    @Test("the template killed under a running map: restarted, the map completes; not restarted, it fails clearly")
    func templateKilled() async throws {
        let inputs = (0..<6_000).map { 100 + $0 % 100 }
        let pool = try await makePool("pool-faults") {
            $0.idleWorkers = 2; $0.retries = 10; $0.templateRecovery = .restart { try await workerTemplate() }
        }
        let first = pool.template.pid
        let killer = Task {
            try await Task.sleep(for: .milliseconds(100))
            kill(first, SIGKILL)
        }
        #expect(try await pool.map(Self.sleepMicroseconds, inputs, chunkSize: 10) == inputs)
        try await killer.value
        #expect(pool.template.pid != first)
        #expect(pool.statistics.counters.templatesRestarted == 1)
        #expect(pool.statistics.counters.workersLost >= 2)
        await pool.shutdown()

        let failing = try await makePool("pool-faults") { $0.idleWorkers = 2; $0.retries = 3 }
        let doomed = failing.template.pid
        let time = await elapsed {
            await #expect {
                let killer = Task {
                    try await Task.sleep(for: .milliseconds(100))
                    kill(doomed, SIGKILL)
                }
                defer { killer.cancel() }
                _ = try await failing.map(Self.sleepMicroseconds, inputs, chunkSize: 10)
            } throws: { error in
                (error as? WorkerPoolError)?.kind == .cannotStartWorker && "\(error)".contains("\(doomed)")
            }
        }
        #expect(time < .seconds(10))
        await failing.shutdown()
    }

    @Test("resource limits: every worker runs under them, the template does not; a CPU hog is stopped")
    func resourceLimits() async throws {
        let limits = ResourceLimits(addressSpaceBytes: 2 << 30, cpuSeconds: 1, openFiles: 99, niceness: 3)
        let pool = try await makePool("pool-faults") { $0.idleWorkers = 2; $0.resourceLimits = limits }
        let limitsOf = RPCFunction<Int, [Int]>("limits")
        #expect(try await pool.call(limitsOf, 0) == [2 << 30, 1, 99, 3])
        let unlimited = try await pool.template.fork(running: "report-limits")
        #expect(try readAll(unlimited.socket).split(separator: " ").last == "0")
        // A worker that spins past its CPU seconds gets SIGXCPU (then SIGKILL), named in the error.
        let spin = try await #require(throws: RPCError.self) {
            _ = try await pool.call(Self.sleepMicroseconds, -1)
        }
        #expect(spin.kind == .workerDied && ("\(spin)".contains("SIGXCPU") || "\(spin)".contains("SIGKILL")), "\(spin)")
        #expect(try await pool.call(square, 4) == 16)
        await pool.shutdown()
    }

    @Test("the owner SIGKILLed: its template and every pool worker are gone within a second")
    func ownerKilled() async throws {
        let (owner, output) = try startWorkerProgram(["pool-owner"])
        defer { if owner.isRunning { kill(owner.processIdentifier, SIGKILL) } }
        let line = String(decoding: output.fileHandleForReading.availableData, as: UTF8.self)
        let pids = line.split(whereSeparator: \.isWhitespace).compactMap { Int32($0) }
        try #require(pids.count == 3, "the owner printed \(line.debugDescription)")
        kill(owner.processIdentifier, SIGKILL)
        owner.waitUntilExit()
        // Gone, or a zombie waiting for whatever reaps orphans here.
        #expect(await eventually(within: 1) { pids.allSatisfy(isDead) }, "still running: \(pids.filter { !isDead($0) })")
    }
}
