import ForkKit
import ForkPool
import ForkKitTestSupport
import ForkRPC
import Foundation
import MetricsTestKit
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

let square = RPCFunction<Int, Int>("square")
let workerPID = RPCFunction<Int, Int32>("pid")
let sleepMilliseconds = RPCFunction<Int, Int>("sleep-ms")
let slowSquare = RPCFunction<Int, Int>("slow-square")
let failIfNegative = RPCFunction<Int, Int>("fail-if-negative")
let retire = RPCFunction<Int, Int32>("retire")
let emitProgress = RPCFunction<Int, Int>("emit-progress")

/// A pool of the test worker's "pool-worker" function, configured by `adjust`.
func makePool(
    _ function: String = "pool-worker", _ adjust: (inout WorkerPool.Configuration) -> Void = { _ in }
) async throws -> WorkerPool {
    var configuration = WorkerPool.Configuration()
    configuration.maximumWorkers = 2
    configuration.metricsPrefix = nil
    adjust(&configuration)
    return try await WorkerPool(template: try await workerTemplate(), running: function, configuration: configuration)
}

/// Measures how long `body` takes.
func elapsed(_ body: () async throws -> Void) async rethrows -> Duration {
    let start = ContinuousClock.now
    try await body()
    return ContinuousClock.now - start
}

@Suite("ForkPool against real worker processes", .serialized, .noZombieChildren)
struct WorkerPoolTests {
    @Test("call and map return the right results; a map of a tiny function travels in chunks")
    func callAndMap() async throws {
        let pool = try await makePool()
        #expect(try await pool.call(square, 7) == 49)
        let numbers = Array(0..<20_000)
        let squares = try await pool.map(square, numbers)
        #expect(squares == numbers.map { $0 * $0 })
        let calls = pool.statistics.counters.callsServed
        // One round trip per item would be 20,000 calls; chunks make it a few hundred at most.
        #expect(calls < 2_000, "map made \(calls) calls for 20,000 items")
        #expect(try await pool.map(square, [Int]()) == [])
        // Any Sequence, including one whose length is not known in advance.
        #expect(try await pool.map(square, (1...100).lazy.filter { $0 % 2 == 0 }) == (1...50).map { 4 * $0 * $0 })
        await pool.shutdown()
    }

    @Test("a fixed chunk size is honoured, and the progress view counts to the total")
    func progressAndChunkSize() async throws {
        let pool = try await makePool()
        let progress = MapProgress()
        #expect(progress.total == nil && !progress.isFinished)
        let results = try await pool.map(square, 0..<1_000, chunkSize: 100, progress: progress)
        #expect(results.count == 1_000)
        #expect(progress.completed == 1_000 && progress.total == 1_000 && progress.fractionCompleted == 1 && progress.isFinished)
        #expect(pool.statistics.counters.callsServed == 10)
        await pool.shutdown()
    }

    @Test("progress read as a stream: counts rise to the total while the map runs, and the stream ends with it")
    func progressAsStream() async throws {
        let pool = try await makePool { $0.load = 1; $0.idleWorkers = 2 }
        let progress = MapProgress()
        async let outputs = pool.map(sleepMilliseconds, [Int](repeating: 20, count: 12), chunkSize: 1, progress: progress)
        var updates: [MapProgress.Update] = []
        for await update in progress { updates.append(update) }
        #expect(try await outputs.count == 12)
        #expect(updates.last == MapProgress.Update(completed: 12, total: 12, isFinished: true))
        #expect(updates.dropLast().allSatisfy { !$0.isFinished })
        #expect(zip(updates, updates.dropFirst()).allSatisfy { $0.completed <= $1.completed })
        // 12 calls of 20 ms on 2 workers: the reader saw the map part-way, not only its end.
        #expect(updates.contains { $0.completed > 0 && $0.completed < 12 }, "updates: \(updates)")
        // A second reader after the end gets the final state at once, then the end.
        var late: [MapProgress.Update] = []
        for await update in progress { late.append(update) }
        #expect(late == [updates.last!])

        // A failing map ends the stream too.
        let failing = MapProgress()
        async let failed: [Int] = pool.map(RPCFunction<Int, Int>("sleep-ms-or-fail"), [5, -1, 5], chunkSize: 1, progress: failing)
        var lastUpdate: MapProgress.Update?
        for await update in failing { lastUpdate = update }
        do {
            _ = try await failed
            Issue.record("a map with a failing item returned")
        } catch {
            #expect(error is RPCError)
        }
        #expect(lastUpdate?.isFinished == true)
        await pool.shutdown()
    }

    @Test("a progress follows one map: a second map given it fails at once, saying so, and the first's counts stand")
    func progressReuseRefused() async throws {
        let pool = try await makePool()
        let progress = MapProgress()
        _ = try await pool.map(square, 0..<10, progress: progress)
        await #expect {
            _ = try await pool.map(square, 0..<20, progress: progress)
        } throws: { error in
            (error as? WorkerPoolError)?.kind == .invalidArgument && "\(error)".contains("give each map a new MapProgress")
        }
        #expect(progress.current == MapProgress.Update(completed: 10, total: 10, isFinished: true))
        // The stream's first update is the map's, with its total: not the empty state before it began.
        let fresh = MapProgress()
        async let squares = pool.map(sleepMilliseconds, [5, 5, 5], chunkSize: 1, progress: fresh)
        var iterator = fresh.makeAsyncIterator()
        let first = await iterator.next()
        #expect(first?.total == 3, "\(String(describing: first))")
        #expect(try await squares.count == 3)
        await pool.shutdown()
    }

    @Test("a reader waiting on progress that never moves returns nil when its task is cancelled")
    func progressStreamCancellation() async throws {
        let progress = MapProgress(total: 3)
        progress.advance()
        let reader = Task {
            var seen: [MapProgress.Update] = []
            for await update in progress { seen.append(update) }
            return seen
        }
        try await Task.sleep(for: .milliseconds(50))
        reader.cancel()
        #expect(await reader.value == [MapProgress.Update(completed: 1, total: 3, isFinished: false)])
    }

    @Test("streaming results in input order and in completion order")
    func streaming() async throws {
        let pool = try await makePool { $0.load = 1; $0.idleWorkers = 2 }
        // The first input is slow: in completion order it comes after the others.
        let inputs = [300, 1, 1, 1, 1]
        var inputOrder: [Int] = []
        for try await result in pool.results(of: sleepMilliseconds, inputs, chunkSize: 1) {
            inputOrder.append(result.index)
            #expect(result.output == inputs[result.index])
        }
        #expect(inputOrder == [0, 1, 2, 3, 4])
        var completionOrder: [Int] = []
        for try await result in pool.results(of: sleepMilliseconds, inputs, order: .completion, chunkSize: 1) {
            completionOrder.append(result.index)
        }
        #expect(completionOrder.sorted() == [0, 1, 2, 3, 4])
        #expect(completionOrder.last == 0)
        await pool.shutdown()
    }

    @Test("a worker's error names the function, the worker and the message, and the pool goes on")
    func remoteError() async throws {
        let pool = try await makePool()
        await #expect {
            _ = try await pool.map(failIfNegative, [1, 2, -3, 4], chunkSize: 1)
        } throws: { error in
            guard let error = error as? RPCError else { return false }
            return error.kind == .remote && error.function == "fail-if-negative" && error.pid != nil
                && "\(error)".contains("negative input -3")
        }
        #expect(try await pool.call(square, 3) == 9)
        // In chunks of many items too, the error names the failing item's place among the inputs.
        let inputs = (0..<100).map { $0 == 57 ? -1 : $0 }
        let failure = try await #require(throws: RPCError.self) { try await pool.map(failIfNegative, inputs, chunkSize: 10) }
        #expect(failure.itemIndex == 57)
        #expect("\(failure)".contains("item 57 of 'fail-if-negative' in worker"), "\(failure)")
        await pool.shutdown()
    }

    @Test("the pool's handlers serve every worker's requests to the owner")
    func handlersForEveryWorker() async throws {
        let queue = Mutex(Array(1...200))
        let askers = Mutex(Set<Int>())
        let pool = try await makePool("rpc-calls-owner") { configuration in
            configuration.idleWorkers = 2
            configuration.load = 1  // one call per worker: the two pulls run in two workers
            configuration.handlers.register(RPCFunction<Int, Int?>("next-item")) { pid in
                askers.withLock { _ = $0.insert(pid) }
                // Slow enough that both workers are pulling at once.
                try await Task.sleep(for: .milliseconds(1))
                return queue.withLock { $0.isEmpty ? nil : $0.removeFirst() }
            }
        }
        let pull = RPCFunction<Int, Int>("pull")
        async let first = pool.call(pull, 0)
        async let second = pool.call(pull, 0)
        #expect(try await first + second == (1...200).map { $0 * $0 }.reduce(0, +))
        #expect(askers.withLock { $0.count } == 2)
        await pool.shutdown()
    }

    @Test("a SIGKILLed worker in the middle of a map: with retries the map completes")
    func killedWorkerWithRetries() async throws {
        let pool = try await makePool { $0.idleWorkers = 2; $0.retries = 5 }
        let killer = Task {
            try await Task.sleep(for: .milliseconds(150))
            let victim = try #require(pool.statistics.workers.first?.pid)
            kill(victim, SIGKILL)
            return victim
        }
        let inputs = Array(0..<600)
        let results = try await pool.map(slowSquare, inputs)
        #expect(results == inputs.map { $0 * $0 })
        let victim = try await killer.value
        #expect(pool.statistics.counters.workersLost == 1)
        #expect(!pool.statistics.workers.contains { $0.pid == victim })
        #expect(await eventually(within: 5) { isReaped(victim) })
        await pool.shutdown()
    }

    @Test("a SIGKILLed worker in the middle of a map: without retries the map fails, naming pid and signal")
    func killedWorkerWithoutRetries() async throws {
        let pool = try await makePool { $0.idleWorkers = 2 }
        let victim = try #require(pool.statistics.workers.first?.pid)
        let killer = Task {
            try await Task.sleep(for: .milliseconds(150))
            kill(victim, SIGKILL)
        }
        let time = await elapsed {
            await #expect {
                _ = try await pool.map(slowSquare, Array(0..<2_000))
            } throws: { error in
                guard let error = error as? RPCError else { return false }
                return error.kind == .workerDied && error.pid == victim && "\(error)".contains("SIGKILL")
            }
        }
        try await killer.value
        #expect(time < .seconds(10))
        // The pool replaced the worker and serves on.
        #expect(try await pool.call(square, 5) == 25)
        await pool.shutdown()
    }

    @Test("maximumCallsPerWorker recycles workers; no call is lost")
    func recycling() async throws {
        let pool = try await makePool { $0.maximumWorkers = 1; $0.maximumCallsPerWorker = 3 }
        var pids: [Int32] = []
        for _ in 0..<10 { pids.append(try await pool.call(workerPID, 0)) }
        #expect(Set(pids).count == 4)
        #expect(Array(pids[0..<3]) == Array(repeating: pids[0], count: 3))
        #expect(pool.statistics.counters.workersRecycled == 3)
        #expect(await eventually(within: 5) { isReaped(pids[0]) })
        await pool.shutdown()
    }

    @Test("a worker that calls retire() is replaced after its call")
    func retiring() async throws {
        let pool = try await makePool { $0.maximumWorkers = 1 }
        let retired = try await pool.call(retire, 0)
        #expect(await eventually(within: 5) { pool.statistics.counters.workersRetired == 1 })
        let next = try await pool.call(workerPID, 0)
        #expect(next != retired)
        #expect(await eventually(within: 5) { isReaped(retired) })
        await pool.shutdown()
    }

    @Test("cancelling a queued call removes it from the queue; the running one is not disturbed")
    func cancelQueued() async throws {
        let pool = try await makePool { $0.maximumWorkers = 1; $0.load = 1; $0.idleWorkers = 1 }
        let running = Task { try await pool.call(sleepMilliseconds, 400) }
        try await Task.sleep(for: .milliseconds(50))
        let queued = Task { try await pool.call(sleepMilliseconds, 1) }
        #expect(await eventually(within: 2) { pool.statistics.queueLength == 1 })
        queued.cancel()
        await #expect(throws: CancellationError.self) { try await queued.value }
        #expect(pool.statistics.queueLength == 0)
        #expect(try await running.value == 400)
        #expect(pool.statistics.counters.workersLost == 0)
        await pool.shutdown()
    }

    @Test("cancelling a running call on a synchronous worker replaces the worker at once")
    func cancelRunningSynchronous() async throws {
        let pool = try await makePool { $0.maximumWorkers = 1; $0.idleWorkers = 1 }
        let before = try await pool.call(workerPID, 0)
        let running = Task { try await pool.call(sleepMilliseconds, 10_000) }
        try await Task.sleep(for: .milliseconds(100))
        let time = await elapsed {
            running.cancel()
            await #expect(throws: CancellationError.self) { try await running.value }
        }
        #expect(time < .seconds(2))
        let after = try await pool.call(workerPID, 0)
        #expect(after != before)
        #expect(await eventually(within: 5) { isReaped(before) })
        await pool.shutdown()
    }

    @Test("cancelling a running call on an asynchronous worker cancels it there; the worker stays")
    func cancelRunningAsynchronous() async throws {
        let pool = try await makePool("pool-async-worker") { $0.maximumWorkers = 1; $0.idleWorkers = 1; $0.backend = .asynchronous }
        let before = try await pool.call(workerPID, 0)
        let running = Task { try await pool.call(sleepMilliseconds, 10_000) }
        try await Task.sleep(for: .milliseconds(100))
        running.cancel()
        await #expect(throws: CancellationError.self) { try await running.value }
        #expect(try await pool.call(workerPID, 0) == before)
        #expect(pool.statistics.counters.workersLost == 0)
        await pool.shutdown()
    }

    @Test("a call timeout kills a stuck synchronous worker and a new one serves the next call")
    func timeout() async throws {
        let pool = try await makePool { $0.maximumWorkers = 1; $0.idleWorkers = 1 }
        let stuck = try await pool.call(workerPID, 0)
        await #expect {
            _ = try await pool.call(sleepMilliseconds, 10_000, timeout: .milliseconds(200))
        } throws: { error in
            (error as? RPCError)?.kind == .timeout
        }
        #expect(try await pool.call(workerPID, 0) != stuck)
        #expect(await eventually(within: 5) { isReaped(stuck) })
        await pool.shutdown()
    }

    @Test("a bounded queue makes callers wait for room instead of queueing without end")
    func queueBound() async throws {
        let pool = try await makePool { $0.maximumWorkers = 1; $0.load = 1; $0.idleWorkers = 1; $0.queueLimit = 2 }
        let calls = (0..<6).map { _ in Task { try await pool.call(sleepMilliseconds, 100) } }
        #expect(await eventually(within: 2) { pool.statistics.callersWaitingForQueueRoom == 3 })
        #expect(pool.statistics.queueLength == 2)
        for call in calls { #expect(try await call.value == 100) }
        #expect(pool.statistics.queueLength == 0 && pool.statistics.callersWaitingForQueueRoom == 0)
        await pool.shutdown()
    }

    @Test("graceful shutdown lets queued calls finish; then no call is taken")
    func gracefulShutdown() async throws {
        let pool = try await makePool { $0.maximumWorkers = 1; $0.load = 1; $0.idleWorkers = 1 }
        let pid = try await pool.call(workerPID, 0)
        let calls = (0..<5).map { index in Task { try await pool.call(sleepMilliseconds, 20 + index) } }
        #expect(await eventually(within: 2) { pool.statistics.queueLength == 4 })
        await pool.shutdown()
        for (index, call) in calls.enumerated() { #expect(try await call.value == 20 + index) }
        #expect(isReaped(pid))
        await #expect {
            _ = try await pool.call(square, 1)
        } throws: { error in
            (error as? WorkerPoolError)?.kind == .shutDown
        }
    }

    @Test("terminate fails running and queued calls at once, clearly")
    func terminate() async throws {
        let pool = try await makePool { $0.maximumWorkers = 1; $0.load = 1; $0.idleWorkers = 1; $0.retries = 3 }
        let pid = try await pool.call(workerPID, 0)
        let calls = (0..<4).map { _ in Task { try await pool.call(sleepMilliseconds, 10_000) } }
        #expect(await eventually(within: 2) { pool.statistics.queueLength == 3 })
        let time = await elapsed { await pool.terminate() }
        #expect(time < .seconds(3))
        for call in calls {
            await #expect { _ = try await call.value } throws: { error in (error as? WorkerPoolError)?.kind == .shutDown }
        }
        #expect(isReaped(pid))
    }

    @Test("the pool grows under load after the start delay and shrinks after the stop delay")
    func dynamicSizing() async throws {
        let pool = try await makePool {
            $0.idleWorkers = 1; $0.load = 1; $0.startDelay = .milliseconds(50); $0.stopDelay = .milliseconds(300)
        }
        #expect(pool.statistics.workers.count == 1)
        let calls = (0..<8).map { _ in Task { try await pool.call(sleepMilliseconds, 150) } }
        #expect(await eventually(within: 2) { pool.statistics.workers.count == 2 })
        for call in calls { _ = try await call.value }
        #expect(await eventually(within: 3) { pool.statistics.workers.count == 1 })
        #expect(pool.statistics.counters.workersStopped == 1)
        let served = pool.statistics.workers.map(\.callsServed)
        #expect(served.count == 1 && served[0] > 0)
        await pool.shutdown()
    }

    @Test("swift-metrics counters count calls, started and lost workers")
    func metrics() async throws {
        let metrics = TestMetrics()
        let pool = try await makePool {
            $0.idleWorkers = 1; $0.maximumWorkers = 1; $0.metricsPrefix = "test_pool"; $0.metricsFactory = metrics; $0.retries = 1
        }
        let pid = try await pool.call(workerPID, 0)
        for number in 0..<5 { _ = try await pool.call(square, number) }
        kill(pid, SIGKILL)
        #expect(await eventually(within: 5) { pool.statistics.counters.workersLost == 1 })
        #expect(try await pool.call(square, 9) == 81)
        #expect(metrics.counterTotal(label: "test_pool_calls_total") == 7)
        #expect(metrics.counterTotal(label: "test_pool_workers_started_total") == 2)
        #expect(metrics.counterTotal(label: "test_pool_workers_lost_total") == 1)
        #expect(try metrics.expectGauge("test_pool_workers").lastValue == 1)
        await pool.shutdown()
    }

    @Test("events from the workers arrive on the pool's events with the worker's pid")
    func events() async throws {
        let pool = try await makePool { $0.maximumWorkers = 1 }
        let pid = try await pool.call(workerPID, 0)
        #expect(try await pool.call(emitProgress, 3) == 3)
        var steps: [Int] = []
        for await event in pool.events {
            #expect(event.pid == pid && event.event.name == "progress")
            steps.append(try event.event.value(as: Int.self))
            if steps.count == 3 { break }
        }
        #expect(steps == [1, 2, 3])
        await pool.shutdown()
    }

    @Test("a pool that cannot fork its workers fails its callers clearly and does not hang")
    func cannotStart() async throws {
        await #expect {
            _ = try await makePool("no-such-function") { $0.idleWorkers = 1 }
        } throws: { error in
            "\(error)".contains("no-such-function")
        }
        let pool = try await makePool("no-such-function")
        await #expect {
            _ = try await pool.call(square, 1)
        } throws: { error in
            (error as? WorkerPoolError)?.kind == .cannotStartWorker && "\(error)".contains("no-such-function")
        }
        await pool.shutdown()
    }

    @Test("workers that came and went (recycled, killed) leave nothing in the owner's tables: RPC clients, children tracked, descriptors watched")
    func tablesDoNotGrow() async throws {
        // Run in a process of its own (Tests/ForkKitTestWorker, "pool-tables"): the counts are the
        // whole process's, and other suites start workers meanwhile.
        let (owner, output) = try startWorkerProgram(["pool-tables"])
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        owner.waitUntilExit()
        #expect(owner.terminationStatus == 0)
        let fields = Dictionary(uniqueKeysWithValues: text.split(whereSeparator: \.isWhitespace).map { field -> (String, String) in
            let parts = field.split(separator: "=", maxSplits: 1)
            return (String(parts[0]), parts.count > 1 ? String(parts[1]) : "")
        })
        #expect(Int(fields["workers"] ?? "") ?? 0 >= 20, "the owner printed \(text.debugDescription)")
        #expect(fields["before"] != nil && fields["after"] == fields["before"], "the owner printed \(text.debugDescription)")
    }

    @Test("withWorkerPool leaves no worker, zombie or descriptor behind, whether the body returns or throws")
    func scopedLifetime() async throws {
        // Run in a process of its own (Tests/ForkKitTestWorker, "pool-scope"): other suites open
        // and close descriptors in this one meanwhile.
        let (owner, output) = try startWorkerProgram(["pool-scope"])
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        owner.waitUntilExit()
        #expect(owner.terminationStatus == 0)
        let fields = Dictionary(uniqueKeysWithValues: text.trimmingCharacters(in: .whitespacesAndNewlines)
            .split(separator: " ", maxSplits: 1).map { field -> (String, String) in
                let parts = field.split(separator: "=", maxSplits: 1)
                return (String(parts[0]), parts.count > 1 ? String(parts[1]) : "")
            })
        let pids = (fields["pids"] ?? "").split(separator: ",").compactMap { Int32($0) }
        #expect(pids.count == 4, "the owner printed \(text.debugDescription)")
        #expect(await eventually(within: 2) { pids.allSatisfy(isReaped) }, "still there: \(pids.filter { !isReaped($0) })")
        #expect(fields["leaked"] == "[]", "descriptors left open: \(fields["leaked"] ?? text)")
    }

    @Test("a map whose chunks are over the size limit, though each item fits, runs their items one by one")
    func chunkOverLimitRunsItemByItem() async throws {
        let pool = try await makePool { $0.maximumMessageSize = 64 << 10 }
        // 100 results of 4 KiB: any chunk of more than about 15 is over 64 KiB.
        let results = try await pool.map(RPCFunction<Int, [UInt8]>("make-bytes"), Array(repeating: 4096, count: 100), chunkSize: 50)
        #expect(results.count == 100 && results.allSatisfy { $0.count == 4096 })
        // One item alone over the limit still fails, naming it.
        let error = await #expect(throws: RPCError.self) { _ = try await pool.call(RPCFunction<Int, [UInt8]>("make-bytes"), 100_000) }
        #expect(error?.kind == .messageTooLarge)
        await pool.shutdown()
    }
}
