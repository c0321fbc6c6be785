import Synchronization
import Tracing

/// A span started in a worker by ``WorkerTracer``: it records its name, kind, times, attributes,
/// events, status and errors, and when it ends becomes a ``SpanRecord`` that its call sends to the
/// owner. Links are not recorded.
final class WorkerSpan: Span {
    /// Where the span sits: its call, its number in it, and its parent's number (0: the caller's span).
    struct Place: Sendable {
        let call: WorkerCallTrace
        let id: UInt64
        let parent: UInt64
    }

    let context: ServiceContext
    private let place: Place?
    private let kind: SpanKind
    private let start: UInt64
    private let state: Mutex<State>

    private struct State {
        var name: String
        var attributes = SpanAttributes()
        var events: [SpanEvent] = []
        var status: SpanStatus?
        var ended = false
    }

    /// A span that records and reports nothing when `place` is nil.
    init(name: String, context: ServiceContext, kind: SpanKind, start: UInt64, place: Place?) {
        self.context = context
        self.place = place
        self.kind = kind
        self.start = start
        state = Mutex(State(name: name, ended: place == nil))
    }

    var operationName: String {
        get { state.withLock { $0.name } }
        set { state.withLock { if !$0.ended { $0.name = newValue } } }
    }

    var attributes: SpanAttributes {
        get { state.withLock { $0.attributes } }
        set { state.withLock { if !$0.ended { $0.attributes = newValue } } }
    }

    var isRecording: Bool { state.withLock { !$0.ended } }

    func setStatus(_ status: SpanStatus) {
        state.withLock { if !$0.ended { $0.status = status } }
    }

    func addEvent(_ event: SpanEvent) {
        state.withLock { if !$0.ended { $0.events.append(event) } }
    }

    /// Records `error` as OpenTelemetry does: an event named `exception` with `exception.type` (the
    /// error's type by full name) and `exception.message` (its description).
    func recordError<Instant: TracerInstant>(_ error: any Error, attributes: SpanAttributes, at instant: @autoclosure () -> Instant) {
        var attributes = attributes
        attributes.set("exception.type", value: .string(String(reflecting: type(of: error))))
        attributes.set("exception.message", value: .string(String(describing: error)))
        addEvent(SpanEvent(name: "exception", at: instant(), attributes: attributes))
    }

    func addLink(_ link: SpanLink) {}

    func end<Instant: TracerInstant>(at instant: @autoclosure () -> Instant) {
        guard let place else { return }
        let end = instant().nanosecondsSinceEpoch
        let record = state.withLock { state -> SpanRecord? in
            guard !state.ended else { return nil }
            state.ended = true
            return SpanRecord(
                id: place.id, parent: place.parent, name: state.name, kind: kind, start: start, end: end, attributes: state.attributes,
                events: state.events, status: state.status)
        }
        if let record { place.call.spanEnded(record) }
    }
}
