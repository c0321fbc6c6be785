/// The calls of one RPC connection, as a state machine: events in, actions out.
///
/// It holds no lock, does no I/O and resumes nobody: ``RPCClient`` feeds it events under its lock
/// and carries out what comes back once the lock is released. `Caller` is what a call's waiting
/// caller is resumed through (a continuation; a plain value in tests), `Watcher` the same for those
/// who wait for the table to change (a close waiting for the calls in flight, a check that the
/// worker answered the calls it was told to cancel).
///
/// A call is *held* from ``admit(_:function:caller:)`` until its response arrives, it is given up
/// on (``abandon(_:)``: timeout or cancellation, after which its late response is expected and
/// dropped), it could not be sent (``withdraw(_:)``), or the connection ends and the caller fails
/// (``failHeldCalls(with:)``).
struct CallTable<Caller, Watcher> {
    /// A call waiting for its response.
    struct Call {
        /// The function it calls, for errors.
        let function: String
        let caller: Caller
    }

    /// Why a new call is refused.
    enum Refusal {
        /// ``beginClosing(_:)`` was called: no new calls.
        case closing
        /// The connection has ended; the failure says why.
        case ended(RPCError)
        /// The caller's task was cancelled before the call was held.
        case cancelled
        /// Not a refusal: the connection has ended and how the worker ended is not known yet, so
        /// the call is held without being sent, and ``failHeldCalls(with:)`` fails it saying how.
        case heldUntilEnd
    }

    /// What to do with a response that arrived.
    enum ResponseOutcome {
        /// Hand it to this call's caller. `drained`: watchers of a close, now that no call is held.
        case deliver(Call, drained: [Watcher])
        /// The late answer to a call given up on: drop it. `answered`: watchers that waited for it.
        case late(answered: [Watcher])
        /// No call has this msgid: the peer breaks the protocol.
        case unexpected
    }

    /// What to do for a call given up on.
    struct Abandonment {
        let call: Call
        /// Whether to send the worker `$cancel` (not once the connection has ended).
        let tellWorker: Bool
        let drained: [Watcher]
    }

    private var calls: [UInt32: Call] = [:]
    /// Calls given up on and not answered yet: their late responses are expected and dropped.
    private var abandoned: Set<UInt32> = []
    /// Watchers waiting until the worker has answered the abandoned calls each one names.
    private var answerWatchers: [UInt64: (calls: Set<UInt32>, watcher: Watcher)] = [:]
    private var nextWatcherKey: UInt64 = 0
    /// Watchers of a close, waiting until no call is held.
    private var drainWatchers: [Watcher] = []
    /// When the worker last answered: a worker that runs one call at a time starts the next then.
    private(set) var lastAnswer: ContinuousClock.Instant?
    /// Why the connection ended, once it has.
    private(set) var failure: RPCError?
    /// Whether ``failure`` is the last word, or will give way to one that says how the worker ended.
    private var failureIsFinal = false
    /// The connection is over: nothing more is read. Held calls still end by their timeout or
    /// cancellation until ``failHeldCalls(with:)``.
    private(set) var ended = false
    private(set) var closing = false

    /// How many calls are held.
    var heldCount: Int { calls.count }
    /// Whether calls given up on are still unanswered.
    var awaitsAbandonedAnswers: Bool { !abandoned.isEmpty }

    // MARK: - Calls

    /// Holds call `id` for `caller`, or says why not. `cancelled`: the caller's task is cancelled
    /// (its cancellation handler ran before there was a call to cancel).
    mutating func admit(_ id: UInt32, function: String, caller: Caller, cancelled: Bool = false) -> Refusal? {
        if closing { return .closing }
        if let failure {
            guard !failureIsFinal, !cancelled else { return .ended(failure) }
            calls[id] = Call(function: function, caller: caller)
            return .heldUntilEnd
        }
        if cancelled { return .cancelled }
        calls[id] = Call(function: function, caller: caller)
        return nil
    }

    /// A response to msgid `id` arrived at `now`.
    mutating func responseArrived(_ id: UInt32, at now: ContinuousClock.Instant) -> ResponseOutcome {
        lastAnswer = now
        if let call = calls.removeValue(forKey: id) { return .deliver(call, drained: takeDrainWatchersIfIdle()) }
        guard abandoned.remove(id) != nil else { return .unexpected }
        return .late(answered: abandonedCallAnswered(id))
    }

    /// Gives up on call `id` (timeout or cancellation); nil when it is no longer held.
    mutating func abandon(_ id: UInt32) -> Abandonment? {
        guard let call = calls.removeValue(forKey: id) else { return nil }
        // After the connection ended no answer can come, and the worker cannot be told.
        if !ended { abandoned.insert(id) }
        return Abandonment(call: call, tellWorker: !ended, drained: takeDrainWatchersIfIdle())
    }

    /// What to do for a call whose request could not be sent.
    struct Withdrawal {
        /// The call, when it was still held (its caller is failed with the send's error).
        let call: Call?
        let drained: [Watcher]
        /// Watchers that waited for the worker to answer it: it never will, having never had it.
        let answered: [Watcher]
    }

    /// Takes back call `id`, whose request could not be sent; also when it was given up on while
    /// the send waited (the worker will never answer a request it never had).
    mutating func withdraw(_ id: UInt32) -> Withdrawal {
        if let call = calls.removeValue(forKey: id) {
            return Withdrawal(call: call, drained: takeDrainWatchersIfIdle(), answered: [])
        }
        guard abandoned.remove(id) != nil else { return Withdrawal(call: nil, drained: [], answered: []) }
        return Withdrawal(call: nil, drained: [], answered: abandonedCallAnswered(id))
    }

    // MARK: - The connection's end

    /// The connection is over (`failure` says why; unless `final`, ``failHeldCalls(with:)`` will
    /// say more, and new calls wait for it). Returns the watchers of abandoned calls, which nothing
    /// will answer now; nil if it had already ended.
    mutating func end(_ failure: RPCError, final: Bool = true) -> [Watcher]? {
        guard !ended else { return nil }
        ended = true
        if self.failure == nil {
            self.failure = failure
            failureIsFinal = final
        }
        abandoned = []
        defer { answerWatchers = [:] }
        return answerWatchers.values.map(\.watcher)
    }

    /// Fails every held call with `failure` (each named after its function), which from now on is
    /// also what new calls are refused with.
    mutating func failHeldCalls(with failure: RPCError) -> (calls: [(Caller, RPCError)], drained: [Watcher]) {
        self.failure = failure
        failureIsFinal = true
        let held = calls.values.map { call in
            var named = failure
            named.function = call.function
            return (call.caller, named)
        }
        calls = [:]
        return (held, takeDrainWatchersIfIdle())
    }

    // MARK: - Watchers

    /// Refuses new calls from now on. Returns true when no call is held; otherwise `watcher` is
    /// given back once none is (or the connection failed).
    mutating func beginClosing(_ watcher: Watcher) -> Bool {
        closing = true
        if calls.isEmpty || failure != nil { return true }
        drainWatchers.append(watcher)
        return false
    }

    /// Watches until the worker has answered every call given up on so far. Returns nil when
    /// there is nothing to wait for (then the answer is yes), or a key for ``stopWatching(_:)``.
    mutating func watchAbandonedCalls(_ watcher: Watcher) -> UInt64? {
        if ended || abandoned.isEmpty { return nil }
        defer { nextWatcherKey &+= 1 }
        answerWatchers[nextWatcherKey] = (abandoned, watcher)
        return nextWatcherKey
    }

    /// Stops a watch (its time ran out); returns its watcher unless it was already given back.
    mutating func stopWatching(_ key: UInt64) -> Watcher? {
        answerWatchers.removeValue(forKey: key)?.watcher
    }

    private mutating func takeDrainWatchersIfIdle() -> [Watcher] {
        guard calls.isEmpty, !drainWatchers.isEmpty else { return [] }
        defer { drainWatchers = [] }
        return drainWatchers
    }

    /// Notes that abandoned call `id` was answered; returns the watchers with nothing left to wait for.
    private mutating func abandonedCallAnswered(_ id: UInt32) -> [Watcher] {
        guard !answerWatchers.isEmpty else { return [] }
        var ready: [Watcher] = []
        for (key, var entry) in answerWatchers where entry.calls.remove(id) != nil {
            if entry.calls.isEmpty {
                answerWatchers[key] = nil
                ready.append(entry.watcher)
            } else {
                answerWatchers[key] = entry
            }
        }
        return ready
    }
}
