import DequeModule
import ForkRPC

/// A worker handed to one call: the call goes to `client`, and is given back by pid.
struct Lease: Sendable {
    let client: RPCClient
    let pid: Int32
}

/// What the pool does once its lock is released: resuming callers and starting or stopping
/// processes never happens while the state is locked.
enum PoolEffect {
    case resume(CheckedContinuation<Lease, any Error>, Lease)
    case fail(CheckedContinuation<Lease, any Error>, any Error)
    /// Start a worker at `place` (0: this machine's template; then the remote hosts in order).
    case startWorker(place: Int)
    case startWorkerAfterDelay
    /// Look at the pool again after `delay` (a host's reconnection delay has passed).
    case wake(after: Duration)
    case stopWorkerWhenIdle(pid: Int32, idleSince: ContinuousClock.Instant)
    /// Graceful: the worker has answered every call it was given.
    case close(RPCClient)
    case kill(RPCClient)
    case finishedShutdown([CheckedContinuation<Void, Never>])
}

/// The scheduler: which worker takes which call, when workers start and stop. Pure bookkeeping
/// under the pool's lock; every decision comes back as ``PoolEffect``s for the pool to carry out.
struct PoolState {
    /// One worker as the scheduler sees it.
    struct Worker {
        let client: RPCClient
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
        var idleSince: ContinuousClock.Instant? = .now
        var stopTimerSet = false
        /// Takes no new calls; closed once it has answered the ones it has.
        var draining = false
    }

    /// A caller waiting for a worker.
    struct Waiter {
        let id: UInt64
        let continuation: CheckedContinuation<Lease, any Error>
    }

    enum Shutdown { case graceful, immediate }

    /// Where workers start: this machine's template (index 0), then each remote host.
    struct Place {
        let name: String
        let capacity: Int
        var starting = 0
        /// Failed starts in a row; the reconnection delay doubles with each.
        var failuresInARow = 0
        /// A remote host whose last start failed is left alone until then.
        var downUntil: ContinuousClock.Instant?
    }

    let configuration: WorkerPool.Configuration
    var workers: [Worker] = []
    var places: [Place]
    /// Starts asked for and not yet answered, at every place.
    var starting = 0
    /// Callers waiting for a worker, in order.
    var queue: Deque<Waiter> = []
    /// Callers waiting for room in a bounded queue.
    var overflow: Deque<Waiter> = []
    /// Workers that died, retired or are being recycled, whose replacement has not started yet.
    var replacementsOwed = 0
    var startTimerSet = false
    /// After a failed fork, only a caller's demand starts another (a dead template must not be
    /// asked again and again).
    var startsHeld = false
    var shutdown: Shutdown?
    var shutdownWaiters: [CheckedContinuation<Void, Never>] = []
    /// Workers the pool killed itself (a timed-out or cancelled call): their other calls run again.
    /// Bounded: only calls that were on such a worker when it was killed look it up, moments later.
    var killedByPool: Set<Int32> = []
    private var killedByPoolOrder: Deque<Int32> = []
    private static let killedByPoolMemory = 1024
    var nextWaiterID: UInt64 = 0
    var counters = WorkerPoolStatistics.Counters()

    init(configuration: WorkerPool.Configuration) {
        self.configuration = configuration
        let remote = configuration.remoteHosts.map { Place(name: $0.template.placeName, capacity: max(0, $0.maximumWorkers)) }
        // A pool needs somewhere to run: with no remote host, at least one local worker.
        let localCapacity = remote.contains { $0.capacity > 0 } ? max(0, configuration.maximumWorkers) : max(1, configuration.maximumWorkers)
        places = [Place(name: "local", capacity: localCapacity)] + remote
    }

    /// Most workers at once, over every place.
    var maximumWorkers: Int { places.reduce(0) { $0 + $1.capacity } }

    /// Workers that take calls, counting those being forked.
    private var activeCount: Int { workers.count(where: { !$0.draining }) + starting }

    private var hasWaiters: Bool { !queue.isEmpty || !overflow.isEmpty }

    // MARK: Calls

    /// A caller wants a worker: it gets the least-loaded one, or waits in the queue. A call that
    /// runs again (its worker died) was made before any shutdown, so a graceful one lets it in.
    mutating func enqueue(_ waiter: Waiter, isRetry: Bool = false) -> [PoolEffect] {
        if shutdown == .immediate || (shutdown == .graceful && !isRetry) {
            return [.fail(waiter.continuation, WorkerPoolError.shutDown())]
        }
        startsHeld = false
        if let index = leastLoadedIndex() {
            return [.resume(waiter.continuation, assign(index))]
        }
        if let limit = configuration.queueLimit, queue.count >= limit {
            overflow.append(waiter)
        } else {
            queue.append(waiter)
        }
        return pump()
    }

    /// A waiting caller was cancelled: it leaves the queue.
    mutating func cancelWaiter(_ id: UInt64) -> [PoolEffect] {
        var effects: [PoolEffect] = []
        if let index = queue.firstIndex(where: { $0.id == id }) {
            effects.append(.fail(queue.remove(at: index).continuation, CancellationError()))
        } else if let index = overflow.firstIndex(where: { $0.id == id }) {
            effects.append(.fail(overflow.remove(at: index).continuation, CancellationError()))
        }
        return effects + pump()
    }

    /// A call on worker `pid` ended (answered or not).
    mutating func finished(pid: Int32, succeeded: Bool) -> [PoolEffect] {
        if succeeded { counters.callsServed += 1 } else { counters.callsFailed += 1 }
        if let index = workers.firstIndex(where: { $0.pid == pid }) {
            workers[index].served += 1
            release(index)
        }
        return pump()
    }

    /// A call on asynchronous worker `pid` was given up on (timeout, cancellation) and the worker
    /// told to cancel it: the call has failed, but it keeps its place on the worker, which takes no
    /// new call, until the worker answers it (``abandonedCallAnswered(pid:)``) or is killed.
    mutating func abandoned(pid: Int32) -> [PoolEffect] {
        counters.callsFailed += 1
        if let index = workers.firstIndex(where: { $0.pid == pid }) {
            workers[index].served += 1
            workers[index].unanswered += 1
        }
        return pump()
    }

    /// Worker `pid` answered a call it was told to cancel (or has gone): the call's place is free.
    mutating func abandonedCallAnswered(pid: Int32) -> [PoolEffect] {
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
            let now = ContinuousClock.now
            if let since = workers[index].busySince { workers[index].busyTime += now - since }
            workers[index].busySince = nil
            workers[index].idleSince = now
        }
    }

    /// A map is about to keep `calls` calls in flight: the workers they need start at once, up to
    /// the maximum. (The start delay paces a pool through bursts of separate calls; a map's demand
    /// is known, and a worker that joins late leaves the first one doing all the work.)
    mutating func prepareForMap(calls: Int) -> [PoolEffect] {
        guard shutdown == nil else { return [] }
        let load = max(1, configuration.load)
        let wanted = min(maximumWorkers, (calls + load - 1) / load)
        var effects: [PoolEffect] = []
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
    private mutating func beginStart(at place: Int) -> PoolEffect {
        starting += 1
        places[place].starting += 1
        return .startWorker(place: place)
    }

    mutating func workerStarted(client: RPCClient, pid: Int32, place: Int) -> [PoolEffect] {
        starting -= 1
        places[place].starting -= 1
        places[place].failuresInARow = 0
        places[place].downUntil = nil
        if place == 0 { startsHeld = false }
        // A graceful shutdown still serves the calls made before it.
        if shutdown == .immediate || (shutdown == .graceful && !hasWaiters) { return [.kill(client)] + pump() }
        workers.append(Worker(client: client, pid: pid, place: place))
        counters.workersStarted += 1
        return pump()
    }

    /// A start at `place` failed. The local template is then asked again only on a caller's
    /// demand; a remote host is left alone for its reconnection delay (doubling with each failure
    /// in a row), and the worker it owed is started elsewhere or there again afterwards.
    mutating func workerFailedToStart(_ error: any Error, place: Int) -> [PoolEffect] {
        starting -= 1
        places[place].starting -= 1
        var effects: [PoolEffect] = []
        if place == 0 {
            startsHeld = true
        } else {
            places[place].failuresInARow += 1
            let doublings = min(places[place].failuresInARow - 1, 16)
            let delay = min(configuration.reconnectDelay * (1 << doublings), configuration.maximumReconnectDelay)
            places[place].downUntil = .now + delay
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
        return effects + waiters.map { .fail($0.continuation, failure) } + pump()
    }

    /// The connection to worker `pid` ended: it died, or it was closed. Also called when a call
    /// learns of it first, so that the worker is not given another call before its events end.
    mutating func workerEnded(pid: Int32) -> [PoolEffect] {
        guard let index = workers.firstIndex(where: { $0.pid == pid }) else { return pump() }
        let worker = workers.remove(at: index)
        if !worker.draining, shutdown == nil {
            counters.workersLost += 1
            replacementsOwed += 1
        }
        return pump()
    }

    /// Worker `pid` asked to retire: it takes no new calls and is replaced.
    mutating func retire(pid: Int32) -> [PoolEffect] {
        guard let index = workers.firstIndex(where: { $0.pid == pid }), !workers[index].draining else { return [] }
        workers[index].draining = true
        counters.workersRetired += 1
        replacementsOwed += 1
        return pump()
    }

    /// The pool kills worker `pid` (its call timed out or was cancelled): it leaves the pool at once,
    /// and a new one replaces it.
    mutating func kill(pid: Int32) -> [PoolEffect] {
        guard let index = workers.firstIndex(where: { $0.pid == pid }) else { return [] }
        let worker = workers.remove(at: index)
        killedByPool.insert(pid)
        killedByPoolOrder.append(pid)
        if killedByPoolOrder.count > Self.killedByPoolMemory { killedByPool.remove(killedByPoolOrder.removeFirst()) }
        counters.workersLost += 1
        if shutdown == nil { replacementsOwed += 1 }
        return [.kill(worker.client)] + pump()
    }

    mutating func startTimerFired() -> [PoolEffect] {
        startTimerSet = false
        guard shutdown == nil, !queue.isEmpty, leastLoadedIndex() == nil, let place = nextPlace(ignoringHold: true) else {
            return pump()
        }
        return [beginStart(at: place)] + pump()
    }

    mutating func stopTimerFired(pid: Int32, idleSince: ContinuousClock.Instant) -> [PoolEffect] {
        guard let index = workers.firstIndex(where: { $0.pid == pid }) else { return [] }
        workers[index].stopTimerSet = false
        if workers[index].idleSince == idleSince, workers[index].inFlight == 0, activeCount > configuration.idleWorkers {
            workers[index].draining = true
            counters.workersStopped += 1
        }
        return pump()
    }

    mutating func beginShutdown(_ mode: Shutdown, waiter: CheckedContinuation<Void, Never>) -> [PoolEffect] {
        shutdownWaiters.append(waiter)
        if shutdown != .immediate { shutdown = mode }
        replacementsOwed = 0
        var effects: [PoolEffect] = []
        if mode == .immediate {
            for waiter in queue + overflow {
                effects.append(.fail(waiter.continuation, WorkerPoolError.shutDown(whileWaiting: true)))
            }
            queue.removeAll()
            overflow.removeAll()
            for worker in workers { effects.append(.kill(worker.client)) }
            workers.removeAll()
        }
        return effects + pump()
    }

    // MARK: Places

    /// Workers at `place` that take calls, counting those starting.
    private func activeCount(at place: Int) -> Int {
        workers.count(where: { $0.place == place && !$0.draining }) + places[place].starting
    }

    private func hasRoom(_ place: Int, holdApplies: Bool) -> Bool {
        if place == 0, holdApplies, startsHeld { return false }
        if let until = places[place].downUntil, until > .now { return false }
        return activeCount(at: place) < places[place].capacity
    }

    /// Where the next worker starts: the first place with room, this machine first. A held local
    /// template (its last fork failed) is asked again only when `ignoringHold` (a caller's demand)
    /// and no other place has room.
    private func nextPlace(ignoringHold: Bool = false) -> Int? {
        places.indices.first { hasRoom($0, holdApplies: true) }
            ?? (ignoringHold && hasRoom(0, holdApplies: false) ? 0 : nil)
    }

    private func canStart(otherThan failed: Int) -> Bool {
        places.indices.contains { $0 != failed && hasRoom($0, holdApplies: true) }
    }

    // MARK: Scheduling

    /// The worker with the fewest calls in flight among those below `load` (and not holding a call
    /// it was told to cancel and has not answered: it may be stuck).
    private func leastLoadedIndex() -> Int? {
        var best: Int?
        for index in workers.indices
        where !workers[index].draining && workers[index].inFlight < configuration.load && workers[index].unanswered == 0 {
            if best == nil || workers[index].inFlight < workers[best!].inFlight { best = index }
        }
        return best
    }

    private mutating func assign(_ index: Int) -> Lease {
        if workers[index].inFlight == 0 { workers[index].busySince = .now }
        workers[index].inFlight += 1
        workers[index].assigned += 1
        workers[index].idleSince = nil
        if let limit = configuration.maximumCallsPerWorker, workers[index].assigned >= limit {
            workers[index].draining = true
            counters.workersRecycled += 1
            replacementsOwed += 1
        }
        return Lease(client: workers[index].client, pid: workers[index].pid)
    }

    /// Brings the pool in line with its state: hands waiting calls to free workers, closes drained
    /// workers, starts and stops workers, ends a shutdown.
    mutating func pump() -> [PoolEffect] {
        var effects: [PoolEffect] = []
        while !queue.isEmpty, let index = leastLoadedIndex() {
            effects.append(.resume(queue.removeFirst().continuation, assign(index)))
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
            guard worker.draining, worker.inFlight == 0 else { return false }
            effects.append(.close(worker.client))
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
        for index in workers.indices where workers[index].inFlight == 0 && !workers[index].draining && !workers[index].stopTimerSet {
            guard activeCount > configuration.idleWorkers, let since = workers[index].idleSince else { continue }
            workers[index].stopTimerSet = true
            effects.append(.stopWorkerWhenIdle(pid: workers[index].pid, idleSince: since))
        }
        return effects
    }

    /// Which workers to start now, and whether to start one after the start delay.
    private mutating func growth() -> [PoolEffect] {
        var effects: [PoolEffect] = []
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
            effects.append(.startWorkerAfterDelay)
        }
        return effects
    }

    // MARK: Introspection

    var statistics: WorkerPoolStatistics {
        WorkerPoolStatistics(
            workers: workers.map { worker in
                var busy = worker.busyTime
                if let since = worker.busySince { busy += .now - since }
                return WorkerPoolStatistics.Worker(
                    pid: worker.pid, place: places[worker.place].name, callsInFlight: worker.inFlight, callsServed: worker.served,
                    busyTime: busy, isRetiring: worker.draining)
            },
            workersStarting: starting,
            unreachablePlaces: places.filter { place in place.downUntil.map { $0 > .now } ?? false }.map(\.name),
            queueLength: queue.count,
            callersWaitingForQueueRoom: overflow.count,
            counters: counters)
    }
}
