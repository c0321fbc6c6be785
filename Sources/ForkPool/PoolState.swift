import DequeModule

/// What the scheduler hands around without looking inside: a worker's handle, a caller waiting
/// for a worker, and a caller waiting for a shutdown to end. The pool's are an `RPCClient` and
/// continuations (``LivePool``); the scheduler's unit tests use plain values and run without
/// processes.
protocol PoolStateTypes {
    associatedtype Handle: Sendable
    associatedtype Caller
    associatedtype ShutdownWaiter
}

/// A worker handed to one call: the call goes to `handle`, and is given back by pid.
struct Lease<Handle: Sendable>: Sendable {
    let handle: Handle
    let pid: Int32
}

/// What the pool does once its lock is released: resuming callers, starting or stopping
/// processes, setting timers and publishing metrics never happen while the state is locked.
enum PoolEffect<Types: PoolStateTypes> {
    case resume(Types.Caller, Lease<Types.Handle>)
    case fail(Types.Caller, any Error)
    /// Start a worker at `place` (0: this machine's template; then the remote hosts in order).
    case startWorker(place: Int)
    /// Call ``PoolState/startTimerFired()`` after the delay (``WorkerPool/Configuration/startDelay``).
    case startWorkerAfterDelay(Duration)
    /// Call ``PoolState/pump()`` after `delay` (a host's reconnection delay has passed).
    case wake(after: Duration)
    /// Call ``PoolState/stopTimerFired(pid:idleSince:)`` after the delay
    /// (``WorkerPool/Configuration/stopDelay``).
    case stopWorkerWhenIdle(pid: Int32, idleSince: ContinuousClock.Instant, after: Duration)
    /// Graceful: the worker has answered every call it was given.
    case close(Types.Handle)
    case kill(Types.Handle)
    case finishedShutdown([Types.ShutdownWaiter])
    /// Hand what was counted since the last publication to swift-metrics.
    case publishMetrics(PoolMetrics.Update)
}

/// The scheduler: which worker takes which call, when workers start and stop. Pure bookkeeping
/// under the pool's lock, on a clock it is given; every decision comes back as ``PoolEffect``s
/// (or a value) for the pool to carry out. Its state is private: the pool tells it what happened
/// (events) and asks it questions (queries).
struct PoolState<Types: PoolStateTypes> {
    typealias Effect = PoolEffect<Types>
    typealias Clock = @Sendable () -> ContinuousClock.Instant

    /// One worker as the scheduler sees it.
    private struct Worker {
        let handle: Types.Handle
        let pid: Int32
        let place: Int
        var inFlight = 0
        /// Calls given up on (timeout, cancellation) that the worker was told to cancel and has not
        /// answered yet; they count in `inFlight`, and the worker takes no new call meanwhile.
        var unanswered = 0
        var assigned = 0
        var served = 0
        var busyTime = Duration.zero
        var busySince: ContinuousClock.Instant?
        var idleSince: ContinuousClock.Instant?
        var stopTimerSet = false
        /// Takes no new calls; closed once it has answered the ones it has.
        var draining = false
        /// Distributed actors that live in it (ForkActors): it is not stopped for being idle.
        var hosted = 0
    }

    /// A caller waiting for a worker.
    struct Waiter {
        let id: UInt64
        let caller: Types.Caller
    }

    enum Shutdown { case graceful, immediate }

    /// What a caller asking for a worker gets at once.
    enum Admission {
        case leased(Lease<Types.Handle>)
        /// No worker has room: the caller is to wait, as waiter `id` (``enqueue(_:isRetry:)``).
        case mustWait(id: UInt64)
        case refused(any Error)
    }

    /// What a call whose worker died under it does next.
    enum AfterWorkerLoss: Equatable {
        /// The pool was terminated: the call fails saying so.
        case terminated
        /// The pool killed the worker for another call's sake: the call runs again, and it is not
        /// counted as a retry.
        case runAgain
        /// The call runs again elsewhere (counted in ``WorkerPoolStatistics/Counters/retries``).
        case retry
        /// No retry left: the call fails with the worker's death.
        case fail
    }

    /// Where workers start: this machine's template (index 0), then each remote host.
    private struct Place {
        let name: String
        let capacity: Int
        var starting = 0
        /// Failed starts in a row; the reconnection delay doubles with each.
        var failuresInARow = 0
        /// A remote host whose last start failed is left alone until then.
        var downUntil: ContinuousClock.Instant?
    }

    /// What swift-metrics was last given.
    private struct Published {
        var counters = WorkerPoolStatistics.Counters()
        var workers = 0
        var queueLength = 0
        var at: ContinuousClock.Instant
    }

    /// Counts of calls are published at least this often under load (and at once when the pool
    /// falls idle or its workers change).
    static var metricsInterval: Duration { .seconds(1) }

    private let configuration: WorkerPool.Configuration
    private let now: Clock
    private let publishesMetrics: Bool
    private var workers: [Worker] = []
    private var places: [Place]
    /// Starts asked for and not yet answered, at every place.
    private var starting = 0
    /// Callers waiting for a worker, in order.
    private var queue: Deque<Waiter> = []
    /// Callers waiting for room in a bounded queue.
    private var overflow: Deque<Waiter> = []
    /// Workers that died, retired or are being recycled, whose replacement has not started yet.
    private var replacementsOwed = 0
    private var startTimerSet = false
    /// After a failed fork, only a caller's demand starts another (a dead template must not be
    /// asked again and again).
    private var startsHeld = false
    private var shutdown: Shutdown?
    private var shutdownWaiters: [Types.ShutdownWaiter] = []
    /// Workers the pool killed itself (a timed-out or cancelled call): their other calls run again.
    /// Bounded: only calls that were on such a worker when it was killed look it up, moments later.
    private var killedByPool: Set<Int32> = []
    private var killedByPoolOrder: Deque<Int32> = []
    private static var killedByPoolMemory: Int { 1024 }
    private var nextWaiterID: UInt64 = 0
    private var counters = WorkerPoolStatistics.Counters()
    private var published: Published

    /// A scheduler for a pool configured so, reading the time from `now` (tests pass a clock they
    /// advance by hand).
    init(configuration: WorkerPool.Configuration, now: @escaping Clock = { .now }) {
        self.configuration = configuration
        self.now = now
        publishesMetrics = configuration.metricsPrefix != nil
        published = Published(at: now())
        let remote = configuration.remoteHosts.map { Place(name: $0.template.placeName, capacity: max(0, $0.maximumWorkers)) }
        // A pool needs somewhere to run: with no remote host, at least one local worker.
        let localCapacity = remote.contains { $0.capacity > 0 } ? max(0, configuration.maximumWorkers) : max(1, configuration.maximumWorkers)
        places = [Place(name: "local", capacity: localCapacity)] + remote
    }

    // MARK: Queries

    /// Most workers at once, over every place.
    var maximumWorkers: Int { places.reduce(0) { $0 + $1.capacity } }

    /// Workers owed for ones that died, retired or are being recycled, not started yet (no room).
    var owedReplacements: Int { replacementsOwed }

    /// Workers that take calls, counting those being forked.
    private var activeCount: Int { workers.count(where: { !$0.draining }) + starting }

    private var hasWaiters: Bool { !queue.isEmpty || !overflow.isEmpty }

    // MARK: Calls

    /// A caller wants a worker: it gets the least-loaded one at once, or is to wait (or is refused:
    /// the pool is shutting down). A call that runs again (its worker died) was made before any
    /// shutdown, so a graceful one lets it in.
    mutating func admit(isRetry: Bool = false) -> Admission {
        if let refusal = refusal(isRetry: isRetry) { return .refused(refusal) }
        startsHeld = false
        if let index = leastLoadedIndex() { return .leased(assign(index)) }
        defer { nextWaiterID &+= 1 }
        return .mustWait(id: nextWaiterID)
    }

    /// A caller told to wait (``admit(isRetry:)``) waits: it gets the least-loaded worker if one
    /// has room by now, or joins the queue.
    mutating func enqueue(_ waiter: Waiter, isRetry: Bool = false) -> [Effect] {
        if let refusal = refusal(isRetry: isRetry) { return [.fail(waiter.caller, refusal)] }
        startsHeld = false
        if let index = leastLoadedIndex() {
            return [.resume(waiter.caller, assign(index))]
        }
        if let limit = configuration.queueLimit, queue.count >= limit {
            overflow.append(waiter)
        } else {
            queue.append(waiter)
        }
        return pump()
    }

    private func refusal(isRetry: Bool) -> (any Error)? {
        shutdown == .immediate || (shutdown == .graceful && !isRetry) ? WorkerPoolError.shutDown() : nil
    }

    /// A waiting caller was cancelled: it leaves the queue.
    mutating func cancelWaiter(_ id: UInt64) -> [Effect] {
        var effects: [Effect] = []
        if let index = queue.firstIndex(where: { $0.id == id }) {
            effects.append(.fail(queue.remove(at: index).caller, CancellationError()))
        } else if let index = overflow.firstIndex(where: { $0.id == id }) {
            effects.append(.fail(overflow.remove(at: index).caller, CancellationError()))
        }
        return effects + pump()
    }

    /// A call on worker `pid` ended (answered or not).
    mutating func finished(pid: Int32, succeeded: Bool) -> [Effect] {
        countFinished(pid: pid, succeeded: succeeded)
        return pump()
    }

    private mutating func countFinished(pid: Int32, succeeded: Bool) {
        if succeeded { counters.callsServed += 1 } else { counters.callsFailed += 1 }
        if let index = workers.firstIndex(where: { $0.pid == pid }) {
            workers[index].served += 1
            release(index)
        }
    }

    /// A call on worker `pid` failed because the worker is gone (it died, or broke the protocol):
    /// the call ends, the worker leaves the pool (no other call may be given to it while its end is
    /// noticed), and the call runs again when it was killed by the pool for another call's sake or
    /// `retryAllowed`.
    mutating func workerDiedUnderCall(pid: Int32, retryAllowed: Bool) -> (next: AfterWorkerLoss, effects: [Effect]) {
        countFinished(pid: pid, succeeded: false)
        removeEndedWorker(pid: pid)
        let next: AfterWorkerLoss
        if shutdown == .immediate {
            next = .terminated
        } else if killedByPool.contains(pid) {
            next = .runAgain
        } else if retryAllowed {
            counters.retries += 1
            next = .retry
        } else {
            next = .fail
        }
        return (next, pump())
    }

    /// A call that timed out runs again (a map's single item).
    mutating func retryCounted() {
        counters.retries += 1
    }

    /// A call on asynchronous worker `pid` was given up on (timeout, cancellation) and the worker
    /// told to cancel it: the call has failed, but it keeps its place on the worker, which takes no
    /// new call, until the worker answers it (``abandonedCallAnswered(pid:)``) or is killed.
    mutating func abandoned(pid: Int32) -> [Effect] {
        counters.callsFailed += 1
        if let index = workers.firstIndex(where: { $0.pid == pid }) {
            workers[index].served += 1
            workers[index].unanswered += 1
        }
        return pump()
    }

    /// Worker `pid` answered a call it was told to cancel (or has gone): the call's place is free.
    mutating func abandonedCallAnswered(pid: Int32) -> [Effect] {
        if let index = workers.firstIndex(where: { $0.pid == pid }) {
            workers[index].unanswered -= 1
            release(index)
        }
        return pump()
    }

    /// One call fewer in flight on worker `index`.
    private mutating func release(_ index: Int) {
        workers[index].inFlight -= 1
        if workers[index].inFlight == 0 {
            let now = now()
            if let since = workers[index].busySince { workers[index].busyTime += now - since }
            workers[index].busySince = nil
            workers[index].idleSince = now
        }
    }

    /// A map is about to keep `calls` calls in flight: the workers they need start at once, up to
    /// the maximum. (The start delay paces a pool through bursts of separate calls; a map's demand
    /// is known, and a worker that joins late leaves the first one doing all the work.)
    mutating func prepareForMap(calls: Int) -> [Effect] {
        guard shutdown == nil else { return [] }
        let load = max(1, configuration.load)
        let wanted = min(maximumWorkers, (calls + load - 1) / load)
        var effects: [Effect] = []
        while activeCount < wanted, let place = nextPlace() {
            effects.append(beginStart(at: place))
        }
        return effects
    }

    // MARK: Worker life

    /// Reserves a start at the next place with room (for the pool's first workers), or `nil`.
    mutating func reserveStart() -> Int? {
        guard let place = nextPlace(ignoringHold: true) else { return nil }
        _ = beginStart(at: place)
        return place
    }

    /// Counts a start at `place` as under way until its worker starts or fails.
    private mutating func beginStart(at place: Int) -> Effect {
        starting += 1
        places[place].starting += 1
        return .startWorker(place: place)
    }

    mutating func workerStarted(_ handle: Types.Handle, pid: Int32, place: Int) -> [Effect] {
        starting -= 1
        places[place].starting -= 1
        places[place].failuresInARow = 0
        places[place].downUntil = nil
        if place == 0 { startsHeld = false }
        // A graceful shutdown still serves the calls made before it.
        if shutdown == .immediate || (shutdown == .graceful && !hasWaiters) { return [.kill(handle)] + pump() }
        workers.append(Worker(handle: handle, pid: pid, place: place, idleSince: now()))
        counters.workersStarted += 1
        return pump()
    }

    /// A start at `place` failed. The local template is then asked again only on a caller's
    /// demand; a remote host is left alone for its reconnection delay (doubling with each failure
    /// in a row), and the worker it owed is started elsewhere or there again afterwards.
    mutating func workerFailedToStart(_ error: any Error, place: Int) -> [Effect] {
        starting -= 1
        places[place].starting -= 1
        var effects: [Effect] = []
        if place == 0 {
            startsHeld = true
        } else {
            places[place].failuresInARow += 1
            let doublings = min(places[place].failuresInARow - 1, 16)
            let delay = min(configuration.reconnectDelay * (1 << doublings), configuration.maximumReconnectDelay)
            places[place].downUntil = now() + delay
            if shutdown == nil { replacementsOwed += 1 }
            effects.append(.wake(after: delay))
        }
        // With no worker left to serve them and nowhere else to start one, the waiting callers
        // would wait forever.
        guard activeCount == 0, !canStart(otherThan: place) else { return effects + pump() }
        let failure = WorkerPoolError.cannotStartWorker(error)
        let waiters = queue + overflow
        queue.removeAll()
        overflow.removeAll()
        return effects + waiters.map { .fail($0.caller, failure) } + pump()
    }

    /// The connection to worker `pid` ended: it died, or it was closed. `wasInService`: the worker
    /// was still taking calls (it was not retiring, nor already out of the pool).
    mutating func workerEnded(pid: Int32) -> (wasInService: Bool, effects: [Effect]) {
        let wasInService = removeEndedWorker(pid: pid)
        return (wasInService, pump())
    }

    @discardableResult
    private mutating func removeEndedWorker(pid: Int32) -> Bool {
        guard let index = workers.firstIndex(where: { $0.pid == pid }) else { return false }
        let worker = workers.remove(at: index)
        if !worker.draining, shutdown == nil {
            counters.workersLost += 1
            replacementsOwed += 1
        }
        return !worker.draining
    }

    /// Worker `pid` asked to retire: it takes no new calls and is replaced.
    mutating func retire(pid: Int32) -> [Effect] {
        guard let index = workers.firstIndex(where: { $0.pid == pid }), !workers[index].draining else { return [] }
        workers[index].draining = true
        counters.workersRetired += 1
        replacementsOwed += 1
        return pump()
    }

    /// The pool kills worker `pid` (its call timed out or was cancelled): it leaves the pool at once,
    /// and a new one replaces it. `nil`: it had left the pool already.
    mutating func kill(pid: Int32) -> [Effect]? {
        guard let index = workers.firstIndex(where: { $0.pid == pid }) else { return nil }
        let worker = workers.remove(at: index)
        killedByPool.insert(pid)
        killedByPoolOrder.append(pid)
        if killedByPoolOrder.count > Self.killedByPoolMemory { killedByPool.remove(killedByPoolOrder.removeFirst()) }
        counters.workersLost += 1
        if shutdown == nil { replacementsOwed += 1 }
        return [.kill(worker.handle)] + pump()
    }

    /// The template was started again in place of one that died.
    mutating func templateRestarted() {
        counters.templatesRestarted += 1
    }

    /// The start delay has passed: one more worker starts if calls still wait and no worker has room.
    mutating func startTimerFired() -> [Effect] {
        startTimerSet = false
        guard shutdown == nil, !queue.isEmpty, leastLoadedIndex() == nil, let place = nextPlace(ignoringHold: true) else {
            return pump()
        }
        return [beginStart(at: place)] + pump()
    }

    /// The stop delay of worker `pid`, idle since `idleSince`, has passed: it is stopped if it has
    /// been idle ever since and the pool has more workers than its idle minimum.
    mutating func stopTimerFired(pid: Int32, idleSince: ContinuousClock.Instant) -> [Effect] {
        guard let index = workers.firstIndex(where: { $0.pid == pid }) else { return [] }
        workers[index].stopTimerSet = false
        if workers[index].idleSince == idleSince, workers[index].inFlight == 0, workers[index].hosted == 0,
           activeCount > configuration.idleWorkers {
            workers[index].draining = true
            counters.workersStopped += 1
        }
        return pump()
    }

    /// `reason`: why an immediate shutdown happens, for the errors of the calls it ends.
    mutating func beginShutdown(_ mode: Shutdown, waiter: Types.ShutdownWaiter, reason: String? = nil) -> [Effect] {
        shutdownWaiters.append(waiter)
        if shutdown != .immediate { shutdown = mode }
        replacementsOwed = 0
        var effects: [Effect] = []
        if mode == .immediate {
            for waiter in queue + overflow {
                effects.append(.fail(waiter.caller, WorkerPoolError.shutDown(whileWaiting: true, reason: reason)))
            }
            queue.removeAll()
            overflow.removeAll()
            for worker in workers { effects.append(.kill(worker.handle)) }
            workers.removeAll()
        }
        return effects + pump()
    }

    // MARK: Hosted actors

    /// Chooses the worker for a new distributed actor and counts it there: worker `pid` when
    /// given, otherwise the one with the fewest actors (then the fewest calls). Nil when there is
    /// no such worker (none started yet, or `pid` is not one of this pool's).
    mutating func placeActor(onWorker pid: Int32?) -> Lease<Types.Handle>? {
        let candidates = workers.indices.filter { !workers[$0].draining && (pid == nil || workers[$0].pid == pid) }
        guard let index = candidates.min(by: { (workers[$0].hosted, workers[$0].inFlight) < (workers[$1].hosted, workers[$1].inFlight) })
        else { return nil }
        workers[index].hosted += 1
        workers[index].idleSince = nil
        return Lease(handle: workers[index].handle, pid: workers[index].pid)
    }

    /// An actor in worker `pid` was released: once it hosts none, the worker may stop when idle.
    mutating func actorReleased(fromWorker pid: Int32) -> [Effect] {
        guard let index = workers.firstIndex(where: { $0.pid == pid }), workers[index].hosted > 0 else { return [] }
        workers[index].hosted -= 1
        if workers[index].hosted == 0, workers[index].inFlight == 0 { workers[index].idleSince = now() }
        return pump()
    }

    // MARK: Places

    /// Workers at `place` that take calls, counting those starting.
    private func activeCount(at place: Int) -> Int {
        workers.count(where: { $0.place == place && !$0.draining }) + places[place].starting
    }

    private func hasRoom(_ place: Int, holdApplies: Bool, now: ContinuousClock.Instant) -> Bool {
        if place == 0, holdApplies, startsHeld { return false }
        if let until = places[place].downUntil, until > now { return false }
        return activeCount(at: place) < places[place].capacity
    }

    /// Where the next worker starts: the first place with room, this machine first. A held local
    /// template (its last fork failed) is asked again only when `ignoringHold` (a caller's demand)
    /// and no other place has room.
    private func nextPlace(ignoringHold: Bool = false) -> Int? {
        let now = now()
        return places.indices.first { hasRoom($0, holdApplies: true, now: now) }
            ?? (ignoringHold && hasRoom(0, holdApplies: false, now: now) ? 0 : nil)
    }

    private func canStart(otherThan failed: Int) -> Bool {
        let now = now()
        return places.indices.contains { $0 != failed && hasRoom($0, holdApplies: true, now: now) }
    }

    // MARK: Scheduling

    /// The worker with the fewest calls in flight among those below `load` (and not holding a call
    /// it was told to cancel and has not answered: it may be stuck); the first of those on a tie.
    private func leastLoadedIndex() -> Int? {
        var best: Int?
        for index in workers.indices
        where !workers[index].draining && workers[index].inFlight < configuration.load && workers[index].unanswered == 0 {
            if best == nil || workers[index].inFlight < workers[best!].inFlight { best = index }
        }
        return best
    }

    private mutating func assign(_ index: Int) -> Lease<Types.Handle> {
        if workers[index].inFlight == 0 { workers[index].busySince = now() }
        workers[index].inFlight += 1
        workers[index].assigned += 1
        workers[index].idleSince = nil
        if let limit = configuration.maximumCallsPerWorker, workers[index].assigned >= limit {
            workers[index].draining = true
            counters.workersRecycled += 1
            replacementsOwed += 1
        }
        return Lease(handle: workers[index].handle, pid: workers[index].pid)
    }

    /// Brings the pool in line with its state: hands waiting calls to free workers, closes drained
    /// workers, starts and stops workers, ends a shutdown, publishes metrics when due.
    mutating func pump() -> [Effect] {
        var effects = schedule()
        if let update = metricsUpdate() { effects.append(.publishMetrics(update)) }
        return effects
    }

    private mutating func schedule() -> [Effect] {
        var effects: [Effect] = []
        while !queue.isEmpty, let index = leastLoadedIndex() {
            effects.append(.resume(queue.removeFirst().caller, assign(index)))
        }
        while !overflow.isEmpty, queue.count < configuration.queueLimit ?? .max {
            queue.append(overflow.removeFirst())
        }
        // A graceful shutdown with nothing left to hand out retires every worker.
        if shutdown == .graceful, !hasWaiters {
            for index in workers.indices { workers[index].draining = true }
        }
        // Close the retiring workers that are idle (assigning may have just retired one: recycling).
        workers.removeAll { worker in
            // A worker that hosts actors is closed only by a shutdown: closing it would end them.
            guard worker.draining, worker.inFlight == 0, worker.hosted == 0 || shutdown != nil else { return false }
            effects.append(.close(worker.handle))
            return true
        }
        guard shutdown == nil else {
            // Calls made before a graceful shutdown are still served, by a new worker if need be.
            if shutdown == .graceful, hasWaiters { effects += growth() }
            if workers.isEmpty, starting == 0, !hasWaiters, !shutdownWaiters.isEmpty {
                effects.append(.finishedShutdown(shutdownWaiters))
                shutdownWaiters = []
            }
            return effects
        }
        effects += growth()
        for index in workers.indices
        where workers[index].inFlight == 0 && workers[index].hosted == 0 && !workers[index].draining && !workers[index].stopTimerSet {
            guard activeCount > configuration.idleWorkers, let since = workers[index].idleSince else { continue }
            workers[index].stopTimerSet = true
            effects.append(.stopWorkerWhenIdle(pid: workers[index].pid, idleSince: since, after: configuration.stopDelay))
        }
        return effects
    }

    /// Which workers to start now, and whether to start one after the start delay.
    private mutating func growth() -> [Effect] {
        var effects: [Effect] = []
        let maximum = maximumWorkers
        while replacementsOwed > 0, let place = nextPlace() {
            replacementsOwed -= 1
            effects.append(beginStart(at: place))
        }
        while activeCount < min(configuration.idleWorkers, maximum), let place = nextPlace() {
            effects.append(beginStart(at: place))
        }
        replacementsOwed = min(replacementsOwed, maximum)
        if !queue.isEmpty, activeCount == 0, let place = nextPlace(ignoringHold: true) {
            effects.append(beginStart(at: place))
        } else if !queue.isEmpty, starting == 0, !startTimerSet, nextPlace(ignoringHold: true) != nil {
            startTimerSet = true
            effects.append(.startWorkerAfterDelay(configuration.startDelay))
        }
        return effects
    }

    // MARK: Metrics

    /// What to hand to swift-metrics now, if anything: at once when the workers changed, and
    /// otherwise (calls served, failed, retried; the queue's length) when the pool has fallen idle
    /// or ``metricsInterval`` has passed, so that a busy pool's calls do not each publish.
    private mutating func metricsUpdate() -> PoolMetrics.Update? {
        guard publishesMetrics else { return nil }
        let last = published.counters
        let workersChanged = workers.count != published.workers || counters.workersStarted != last.workersStarted
            || counters.workersLost != last.workersLost
        if !workersChanged {
            guard counters != last || queue.count != published.queueLength else { return nil }
            let idle = queue.isEmpty && workers.allSatisfy { $0.inFlight == 0 }
            guard idle || now() - published.at >= Self.metricsInterval else { return nil }
        }
        let update = PoolMetrics.Update(
            calls: counters.callsServed - last.callsServed, failures: counters.callsFailed - last.callsFailed,
            retries: counters.retries - last.retries, workersStarted: counters.workersStarted - last.workersStarted,
            workersLost: counters.workersLost - last.workersLost, workers: workers.count, queueLength: queue.count)
        published = Published(counters: counters, workers: workers.count, queueLength: queue.count, at: now())
        return update
    }

    // MARK: Introspection

    var statistics: WorkerPoolStatistics {
        let now = now()
        return WorkerPoolStatistics(
            workers: workers.map { worker in
                var busy = worker.busyTime
                if let since = worker.busySince { busy += now - since }
                return WorkerPoolStatistics.Worker(
                    pid: worker.pid, place: places[worker.place].name, callsInFlight: worker.inFlight, callsServed: worker.served,
                    busyTime: busy, isRetiring: worker.draining)
            },
            workersStarting: starting,
            unreachablePlaces: places.filter { place in place.downUntil.map { $0 > now } ?? false }.map(\.name),
            queueLength: queue.count,
            callersWaitingForQueueRoom: overflow.count,
            counters: counters)
    }
}
