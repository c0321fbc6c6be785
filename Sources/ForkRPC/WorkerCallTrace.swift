import MessagePack
import Synchronization
import Tracing

/// The worker's side of one traced call (one that came with a `$context`): runs the call's function
/// with the ``WorkerTracer`` bound and a service context whose parent is the caller's span, collects
/// the spans it finishes, and hands them out as `$spans` notifications.
///
/// Spans finished before the call's response go out just before it (``finishCall()``); those that
/// end later go out as they end, through `sendLate`, with the call's carrier so that the owner can
/// place them even once it has forgotten the call. A span is held back while its parent (another span
/// of this call) is still open, and goes out with it: in every message a span follows its parent.
final class WorkerCallTrace: Sendable {
    /// The msgid of the request this trace belongs to.
    let id: UInt32
    /// What `$context` carried (the caller's trace context as its instrument injected it).
    let carrier: [String: String]
    private let sendLate: @Sendable (RPCMessage) -> Void
    private let state = Mutex(State())

    private struct State {
        var nextSpanID: UInt64 = 1
        /// Spans started and not yet ended.
        var open: Set<UInt64> = []
        /// Finished spans (each followed by its held descendants) waiting for the call's response.
        var finished: [SpanRecord] = []
        /// Finished spans whose parent is still open, by that parent.
        var held: [UInt64: [SpanRecord]] = [:]
        /// The call's response has gone (or is going) out: spans are sent as they end.
        var answered = false
    }

    init(id: UInt32, carrier: [String: String], sendLate: @escaping @Sendable (RPCMessage) -> Void) {
        self.id = id
        self.carrier = carrier
        self.sendLate = sendLate
    }

    /// The service context a traced call's function runs in: its spans' parent is the caller's.
    var context: ServiceContext {
        var context = ServiceContext.topLevel
        context[WorkerSpanKey.self] = WorkerSpanKey.Value(call: self, span: 0)
        return context
    }

    /// Runs `body` as this call's function: with the worker's tracer bound and ``context`` current.
    func run<Result>(_ body: () -> Result) -> Result {
        withTracer(WorkerTracer()) {
            ServiceContext.withValue(context) { body() }
        }
    }

    /// The same for an `async` function.
    func run<Result>(_ body: () async -> Result) async -> Result {
        await withTracer(WorkerTracer()) {
            await ServiceContext.withValue(context) { await body() }
        }
    }

    /// A new span of this call begins: its number.
    func spanStarted() -> UInt64 {
        state.withLock { state in
            defer { state.nextSpanID += 1 }
            state.open.insert(state.nextSpanID)
            return state.nextSpanID
        }
    }

    /// A span of this call ended.
    func spanEnded(_ record: SpanRecord) {
        let late = state.withLock { state -> [SpanRecord]? in
            state.open.remove(record.id)
            let bundle = [record] + (state.held.removeValue(forKey: record.id) ?? [])
            if record.parent != 0, state.open.contains(record.parent) {
                state.held[record.parent, default: []] += bundle
                return nil
            }
            guard state.answered else {
                state.finished += bundle
                return nil
            }
            return bundle
        }
        if let late { sendLate(spansMessage(late, withCarrier: true)) }
    }

    /// The call's function has returned and its response is about to be sent: the `$spans`
    /// message of the spans finished so far, to send first (nil when there are none). Spans that
    /// end from now on are sent as they end.
    func finishCall() -> RPCMessage? {
        let finished = state.withLock { state in
            state.answered = true
            defer { state.finished = [] }
            return state.finished
        }
        return finished.isEmpty ? nil : spansMessage(finished, withCarrier: false)
    }

    private func spansMessage(_ records: [SpanRecord], withCarrier: Bool) -> RPCMessage {
        var params: [MessagePackValue] = [.uint(UInt64(id)), .array(records.map(\.value))]
        if withCarrier { params.append(CallTrace.value(of: carrier)) }
        return .notification(method: RPCMessage.spansMethod, params: params)
    }
}

/// Where a span of a worker sits: its call, and its own number in it (0: the caller's span, the
/// parent of the call's outermost spans).
enum WorkerSpanKey: ServiceContextKey {
    struct Value: Sendable {
        let call: WorkerCallTrace
        let span: UInt64
    }

    static var nameOverride: String? { "forkkit-worker-span" }
}
