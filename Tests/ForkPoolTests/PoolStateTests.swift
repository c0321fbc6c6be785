import ForkKit
@testable import ForkPool
import Synchronization
import Testing

/// The scheduler's types in these tests: a worker is named `w<pid>`, a caller is a number, a caller
/// waiting for shutdown a name. No process is started.
enum TestPool: PoolStateTypes {
    typealias Handle = String
    typealias Caller = Int
    typealias ShutdownWaiter = String
}

/// A clock that moves only when the test advances it.
final class ManualClock: Sendable {
    private let instant = Mutex(ContinuousClock.now)

    var now: ContinuousClock.Instant { instant.withLock { $0 } }

    func advance(by duration: Duration) {
        instant.withLock { $0 = $0 + duration }
    }
}

/// A scheduler on a manual clock, driven as `WorkerPool` drives it. Each event returns its effects
/// described in words (see ``describe(_:)``); `lastEffects` keeps them as they were.
struct Scheduler {
    var state: PoolState<TestPool>
    let clock = ManualClock()
    private(set) var lastEffects: [PoolEffect<TestPool>] = []
    private var waiterIDs: [Int: UInt64] = [:]

    /// A scheduler for a pool of at most two workers (without metrics) adjusted by `adjust`, with
    /// `workers` started as `WorkerPool.init` starts its first ones.
    init(workers: Int32..., adjust: (inout WorkerPool.Configuration) -> Void = { _ in }) {
        var configuration = WorkerPool.Configuration()
        configuration.maximumWorkers = 2
        configuration.metricsPrefix = nil
        adjust(&configuration)
        state = PoolState(configuration: configuration, now: { [clock] in clock.now })
        for pid in workers { startWorker(pid) }
    }

    private mutating func record(_ effects: [PoolEffect<TestPool>]) -> [String] {
        lastEffects = effects
        return describe(effects)
    }

    /// Starts a worker as `WorkerPool.init` does (a start reserved, then its worker started).
    private mutating func startWorker(_ pid: Int32) {
        guard let place = state.reserveStart() else {
            Issue.record("no room for worker \(pid)")
            return
        }
        lastEffects = state.workerStarted("w\(pid)", pid: pid, place: place)
    }

    /// Caller `caller` asks for a worker, as `WorkerPool.acquire` does: leased at once, refused, or
    /// queued (with the effects of queueing).
    mutating func call(_ caller: Int, isRetry: Bool = false) -> [String] {
        switch state.admit(isRetry: isRetry) {
        case .leased(let lease):
            lastEffects = []
            return ["resume \(caller) on \(lease.pid)"]
        case .refused(let error):
            return record([.fail(caller, error)])
        case .mustWait(let id):
            waiterIDs[caller] = id
            return record(state.enqueue(PoolState.Waiter(id: id, caller: caller), isRetry: isRetry))
        }
    }

    /// Callers ask for workers, whatever happens to them (the test looks at the state afterwards).
    mutating func calls(_ callers: Int...) {
        for caller in callers { _ = call(caller) }
    }

    mutating func cancel(_ caller: Int) -> [String] { record(state.cancelWaiter(waiterIDs[caller] ?? .max)) }
    mutating func finished(_ pid: Int32, succeeded: Bool = true) -> [String] { record(state.finished(pid: pid, succeeded: succeeded)) }
    mutating func started(_ pid: Int32, place: Int = 0) -> [String] { record(state.workerStarted("w\(pid)", pid: pid, place: place)) }
    mutating func failedToStart(place: Int) -> [String] { record(state.workerFailedToStart(StartFailure(), place: place)) }
    mutating func pump() -> [String] { record(state.pump()) }
    mutating func startTimerFired() -> [String] { record(state.startTimerFired()) }

    mutating func stopTimerFired(pid: Int32, idleSince: ContinuousClock.Instant) -> [String] {
        record(state.stopTimerFired(pid: pid, idleSince: idleSince))
    }

    mutating func workerDiedUnderCall(_ pid: Int32, retryAllowed: Bool) -> PoolState<TestPool>.AfterWorkerLoss {
        let (next, effects) = state.workerDiedUnderCall(pid: pid, retryAllowed: retryAllowed)
        lastEffects = effects
        return next
    }

    /// The idle-since instant of the stop timer last asked for for `pid`.
    func stopTimer(of pid: Int32) -> ContinuousClock.Instant? {
        lastEffects.lazy.compactMap { effect -> ContinuousClock.Instant? in
            if case .stopWorkerWhenIdle(pid, let idleSince, _) = effect { return idleSince }
            return nil
        }.first
    }

    /// Calls in flight on each worker, by pid.
    var inFlight: [Int32: Int] {
        Dictionary(uniqueKeysWithValues: state.statistics.workers.map { ($0.pid, $0.callsInFlight) })
    }

    var counters: WorkerPoolStatistics.Counters { state.statistics.counters }
}

struct StartFailure: Error {}

/// Effects in words: `resume 3 on 101`, `start at 0`, `stop 101 after 10.0 seconds`, ...
func describe(_ effects: [PoolEffect<TestPool>]) -> [String] {
    effects.map { effect in
        switch effect {
        case .resume(let caller, let lease): "resume \(caller) on \(lease.pid)"
        case .fail(let caller, let error as WorkerPoolError): "fail \(caller): \(error.kind)"
        case .fail(let caller, is CancellationError): "fail \(caller): cancelled"
        case .fail(let caller, let error): "fail \(caller): \(error)"
        case .startWorker(let place): "start at \(place)"
        case .startWorkerAfterDelay(let delay): "start after \(delay)"
        case .wake(let delay): "wake after \(delay)"
        case .stopWorkerWhenIdle(let pid, _, let delay): "stop \(pid) after \(delay)"
        case .close(let handle): "close \(handle)"
        case .kill(let handle): "kill \(handle)"
        case .finishedShutdown(let waiters): "shutdown done \(waiters.joined(separator: ","))"
        case .publishMetrics: "metrics"
        }
    }
}

@Suite("The pool's scheduler (PoolState) on a manual clock, without processes")
struct PoolStateTests {
    @Test("a call goes to the worker with the fewest calls in flight; on a tie, the first started")
    func leastLoaded() {
        var pool = Scheduler(workers: 101, 102) { $0.load = 3 }
        #expect(pool.call(1) == ["resume 1 on 101"])  // tie 0/0: the first
        #expect(pool.call(2) == ["resume 2 on 102"])  // 1/0
        #expect(pool.call(3) == ["resume 3 on 101"])  // tie 1/1
        #expect(pool.call(4) == ["resume 4 on 102"])  // 2/1
        #expect(pool.inFlight == [101: 2, 102: 2])
        #expect(pool.finished(101) == [])
        #expect(pool.call(5) == ["resume 5 on 101"])  // 1/2
        #expect(pool.inFlight == [101: 2, 102: 2])
        #expect(pool.counters.callsServed == 1)
    }

    @Test("busy time is read from the injected clock")
    func busyTime() {
        var pool = Scheduler(workers: 101)
        _ = pool.call(1)
        pool.clock.advance(by: .seconds(2))
        _ = pool.call(2)
        pool.clock.advance(by: .seconds(1))
        #expect(pool.state.statistics.workers.map(\.busyTime) == [.seconds(3)])  // still busy: counted to now
        _ = pool.finished(101)
        _ = pool.finished(101)
        pool.clock.advance(by: .seconds(5))  // idle: not counted
        #expect(pool.state.statistics.workers.map(\.busyTime) == [.seconds(3)])
    }

    @Test("a worker takes at most `load` calls; then callers queue (a bounded queue overflows) and move up as calls finish")
    func loadLimitAndQueue() {
        var pool = Scheduler(workers: 101) { $0.maximumWorkers = 1; $0.load = 1; $0.queueLimit = 1 }
        #expect(pool.call(1) == ["resume 1 on 101"])
        #expect(pool.call(2) == [])  // no worker has room, and no room for another worker
        #expect(pool.call(3) == [])
        #expect(pool.state.statistics.queueLength == 1)
        #expect(pool.state.statistics.callersWaitingForQueueRoom == 1)
        #expect(pool.finished(101) == ["resume 2 on 101"])
        #expect(pool.state.statistics.queueLength == 1 && pool.state.statistics.callersWaitingForQueueRoom == 0)
        #expect(pool.finished(101) == ["resume 3 on 101"])
        #expect(pool.state.statistics.queueLength == 0)
        #expect(pool.counters.callsServed == 2)
    }

    @Test("the first worker starts at once; another only after the start delay, and only if calls still wait")
    func startDelay() {
        var pool = Scheduler { $0.load = 1; $0.startDelay = .milliseconds(100) }
        #expect(pool.call(1) == ["start at 0"])  // no worker at all: no delay
        #expect(pool.state.statistics.workersStarting == 1)
        #expect(pool.started(101) == ["resume 1 on 101"])
        #expect(pool.call(2) == ["start after 0.1 seconds"])
        #expect(pool.call(3) == [])  // one timer at a time
        pool.clock.advance(by: .milliseconds(100))
        #expect(pool.startTimerFired() == ["start at 0"])
        #expect(pool.started(102) == ["resume 2 on 102"])
        #expect(pool.finished(102) == ["resume 3 on 102"])
        // Demand that went away before the delay passed starts nothing.
        #expect(pool.call(4) == [])  // both at maximum: no room for a third
        #expect(pool.finished(101) == ["resume 4 on 101"])
        var quiet = Scheduler(workers: 101) { $0.load = 1 }
        _ = quiet.call(1)
        #expect(quiet.call(2) == ["start after 0.1 seconds"])
        #expect(quiet.finished(101) == ["resume 2 on 101"])
        #expect(quiet.startTimerFired() == [])
        #expect(quiet.state.statistics.workersStarting == 0)
    }

    @Test("a worker beyond `idleWorkers` is stopped after the stop delay, unless it worked meanwhile")
    func stopDelay() throws {
        var pool = Scheduler(workers: 101) { $0.idleWorkers = 1; $0.load = 1; $0.stopDelay = .seconds(10) }
        #expect(pool.lastEffects.isEmpty)
        pool.calls(1, 2)
        _ = pool.startTimerFired()
        #expect(pool.started(102) == ["resume 2 on 102"])
        #expect(pool.finished(102) == ["stop 102 after 10.0 seconds"])
        let firstIdle = try #require(pool.stopTimer(of: 102))
        pool.clock.advance(by: .seconds(5))
        #expect(pool.call(3) == ["resume 3 on 102"])
        pool.clock.advance(by: .seconds(1))
        #expect(pool.finished(102) == [])  // its timer is still running
        pool.clock.advance(by: .seconds(4))
        // The first timer ends: the worker has not been idle since then; a new timer is set.
        #expect(pool.stopTimerFired(pid: 102, idleSince: firstIdle) == ["stop 102 after 10.0 seconds"])
        let secondIdle = try #require(pool.stopTimer(of: 102))
        #expect(secondIdle == firstIdle + .seconds(6))
        pool.clock.advance(by: .seconds(6))
        #expect(pool.stopTimerFired(pid: 102, idleSince: secondIdle) == ["close w102"])
        #expect(pool.counters.workersStopped == 1)
        #expect(pool.state.statistics.workers.map(\.pid) == [101])
        // The idle minimum is kept.
        #expect(pool.finished(101) == [])
        #expect(pool.state.statistics.workers.count == 1)
    }

    @Test("a call whose worker died runs again only when allowed; counters and replacements follow")
    func retriesAfterDeath() {
        var pool = Scheduler(workers: 101, 102)
        pool.calls(1, 2)
        #expect(pool.inFlight == [101: 1, 102: 1])
        #expect(pool.workerDiedUnderCall(101, retryAllowed: true) == .retry)
        #expect(describe(pool.lastEffects) == ["start at 0"])  // its replacement
        #expect(pool.counters.retries == 1 && pool.counters.callsFailed == 1 && pool.counters.workersLost == 1)
        #expect(pool.call(1, isRetry: true) == ["resume 1 on 102"])
        // Its connection's end, noticed later, changes nothing.
        let ended = pool.state.workerEnded(pid: 101)
        #expect(!ended.wasInService && describe(ended.effects) == [])
        #expect(pool.counters.workersLost == 1)
        #expect(pool.workerDiedUnderCall(102, retryAllowed: false) == .fail)
        #expect(pool.counters.retries == 1 && pool.counters.callsFailed == 2 && pool.counters.workersLost == 2)
        #expect(pool.state.statistics.workersStarting == 2)
        // A call on a worker the pool killed for another call's sake runs again, not as a retry.
        _ = pool.started(103)
        pool.calls(3, 4)
        #expect(describe(pool.state.kill(pid: 103) ?? []) == ["kill w103", "start at 0"])
        #expect(pool.state.kill(pid: 103) == nil)
        #expect(pool.workerDiedUnderCall(103, retryAllowed: false) == .runAgain)
        #expect(pool.counters.retries == 1 && pool.counters.workersLost == 3)
        // A timed-out map item that runs again is counted by the pool.
        pool.state.retryCounted()
        #expect(pool.counters.retries == 2)
    }

    @Test("a worker that has been given `maximumCallsPerWorker` calls retires, is replaced, and closed once idle")
    func recycling() {
        var pool = Scheduler(workers: 101) { $0.maximumWorkers = 1; $0.maximumCallsPerWorker = 2 }
        pool.calls(1, 2)
        #expect(pool.state.statistics.workers.map(\.isRetiring) == [true])
        #expect(pool.counters.workersRecycled == 1 && pool.state.owedReplacements == 1)
        #expect(pool.call(3) == ["start at 0"])  // the replacement, while the old one finishes
        #expect(pool.state.owedReplacements == 0)
        #expect(pool.finished(101) == [])
        #expect(pool.finished(101) == ["close w101"])
        #expect(pool.started(102) == ["resume 3 on 102"])
        #expect(pool.state.statistics.workers.map(\.pid) == [102])
    }

    @Test("a worker that asks to retire takes no new call and is replaced")
    func retire() {
        var pool = Scheduler(workers: 101) { $0.maximumWorkers = 1 }
        _ = pool.call(1)
        #expect(describe(pool.state.retire(pid: 101)) == ["start at 0"])
        #expect(describe(pool.state.retire(pid: 101)) == [])
        #expect(pool.call(2) == [])  // waits for the replacement
        #expect(pool.started(102) == ["resume 2 on 102"])
        #expect(pool.finished(101) == ["close w101"])
        #expect(pool.counters.workersRetired == 1)
    }

    @Test("remote places: workers start at the first place with room; a failed host is left alone for a doubling delay")
    func remotePlaces() {
        let alpha = WorkerPool.RemoteHost(RemoteTemplate(command: ["alpha"], name: "alpha"), maximumWorkers: 1)
        let beta = WorkerPool.RemoteHost(RemoteTemplate(command: ["beta"], name: "beta"), maximumWorkers: 2)
        var pool = Scheduler {
            $0.maximumWorkers = 1; $0.load = 1; $0.remoteHosts = [alpha, beta]
            $0.reconnectDelay = .seconds(1); $0.maximumReconnectDelay = .seconds(3)
        }
        #expect(pool.state.maximumWorkers == 4)
        #expect(describe(pool.state.prepareForMap(calls: 4)) == ["start at 0", "start at 1", "start at 2", "start at 2"])
        #expect(pool.failedToStart(place: 1) == ["wake after 1.0 seconds"])  // nowhere else has room
        #expect(pool.state.statistics.unreachablePlaces == ["alpha"])
        #expect(pool.state.owedReplacements == 1)
        pool.clock.advance(by: .milliseconds(999))
        #expect(pool.pump() == [])
        pool.clock.advance(by: .milliseconds(1))
        #expect(pool.state.statistics.unreachablePlaces == [])
        #expect(pool.pump() == ["start at 1"])
        #expect(pool.failedToStart(place: 1) == ["wake after 2.0 seconds"])
        pool.clock.advance(by: .seconds(2))
        #expect(pool.pump() == ["start at 1"])
        #expect(pool.failedToStart(place: 1) == ["wake after 3.0 seconds"])  // 4 s, at most 3
        pool.clock.advance(by: .seconds(3))
        #expect(pool.pump() == ["start at 1"])
        _ = pool.started(201, place: 1)  // one success resets the delay
        #expect(pool.state.statistics.workers.map(\.place) == ["alpha"])
        _ = pool.started(101, place: 0)
        #expect(describe(pool.state.kill(pid: 201) ?? []) == ["kill w201", "start at 1"])
        #expect(pool.state.statistics.workers.map(\.place) == ["local"])
        #expect(pool.failedToStart(place: 1) == ["wake after 1.0 seconds"])
    }

    @Test("a failed local fork with nowhere else to start fails the waiting callers; a caller's demand tries again")
    func failedLocalStart() {
        var pool = Scheduler { $0.maximumWorkers = 1; $0.idleWorkers = 1 }
        #expect(pool.call(1) == ["start at 0"])
        #expect(pool.failedToStart(place: 0) == ["fail 1: cannotStartWorker"])
        #expect(pool.pump() == [])  // held: the idle minimum does not ask the template again
        #expect(pool.call(2) == ["start at 0"])
    }

    @Test("graceful shutdown serves the calls made before it, refuses new ones, then closes every worker")
    func gracefulShutdown() {
        var pool = Scheduler(workers: 101) { $0.maximumWorkers = 1; $0.load = 1 }
        pool.calls(1, 2)
        #expect(describe(pool.state.beginShutdown(.graceful, waiter: "owner")) == [])
        #expect(pool.call(3) == ["fail 3: shutDown"])
        #expect(pool.call(4, isRetry: true) == [])  // a retry of a call made before: let in, queued
        #expect(pool.finished(101) == ["resume 2 on 101"])
        #expect(pool.finished(101) == ["resume 4 on 101"])
        #expect(pool.finished(101) == ["close w101", "shutdown done owner"])
        #expect(pool.counters.callsServed == 3)
    }

    @Test("immediate shutdown fails the waiting callers, kills every worker, and the calls running learn it")
    func immediateShutdown() {
        var pool = Scheduler(workers: 101) { $0.maximumWorkers = 1; $0.load = 1 }
        pool.calls(1, 2)
        #expect(describe(pool.state.beginShutdown(.immediate, waiter: "owner")) == ["fail 2: shutDown", "kill w101", "shutdown done owner"])
        #expect(pool.call(3, isRetry: true) == ["fail 3: shutDown"])
        #expect(pool.workerDiedUnderCall(101, retryAllowed: true) == .terminated)
        #expect(pool.counters.retries == 0 && pool.counters.workersLost == 0)
        // A worker whose start was under way is killed as it arrives.
        var starting = Scheduler()
        _ = starting.call(1)
        #expect(describe(starting.state.beginShutdown(.immediate, waiter: "owner")) == ["fail 1: shutDown"])
        #expect(starting.started(101) == ["kill w101", "shutdown done owner"])
    }

    @Test("a cancelled caller leaves the queue or the overflow; nothing else changes")
    func cancelWaiter() {
        var pool = Scheduler(workers: 101) { $0.maximumWorkers = 1; $0.load = 1; $0.queueLimit = 1 }
        pool.calls(1, 2, 3)
        #expect(pool.cancel(3) == ["fail 3: cancelled"])
        #expect(pool.state.statistics.callersWaitingForQueueRoom == 0)
        #expect(pool.cancel(2) == ["fail 2: cancelled"])
        #expect(pool.state.statistics.queueLength == 0)
        #expect(pool.cancel(2) == [])
        #expect(pool.finished(101) == [])  // nobody to resume (and its stop timer is set already)
    }

    @Test("metrics are published when workers change, when the pool falls idle, and at most once a second under load")
    func metricsPublication() {
        var pool = Scheduler { $0.maximumWorkers = 1; $0.load = 2; $0.metricsPrefix = "test" }
        func updates(_ effects: [PoolEffect<TestPool>]) -> [PoolMetrics.Update] {
            effects.compactMap { if case .publishMetrics(let update) = $0 { update } else { nil } }
        }
        _ = pool.state.reserveStart()
        #expect(updates(pool.state.workerStarted("w101", pid: 101, place: 0)) == [PoolMetrics.Update(workersStarted: 1, workers: 1)])
        pool.calls(1, 2)
        _ = pool.finished(101)
        #expect(updates(pool.lastEffects) == [])  // a call still in flight: not yet
        _ = pool.finished(101, succeeded: false)
        #expect(updates(pool.lastEffects) == [PoolMetrics.Update(calls: 1, failures: 1, workers: 1)])  // idle
        // Under load: the queue and the calls are published once the interval has passed.
        pool.calls(3, 4, 5)
        #expect(updates(pool.lastEffects) == [])
        #expect(pool.finished(101) == ["resume 5 on 101"])
        pool.clock.advance(by: .seconds(1))
        _ = pool.call(6)
        #expect(updates(pool.lastEffects) == [PoolMetrics.Update(calls: 1, workers: 1, queueLength: 1)])
        _ = pool.finished(101)
        #expect(updates(pool.lastEffects) == [])
        _ = pool.finished(101)
        _ = pool.finished(101)
        #expect(updates(pool.lastEffects) == [PoolMetrics.Update(calls: 3, workers: 1)])
        // A lost worker at once.
        _ = pool.call(7)
        #expect(pool.workerDiedUnderCall(101, retryAllowed: true) == .retry)
        #expect(updates(pool.lastEffects) == [PoolMetrics.Update(failures: 1, retries: 1, workersLost: 1, workers: 0)])
    }
}
