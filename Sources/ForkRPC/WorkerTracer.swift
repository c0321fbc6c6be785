import Tracing

/// The tracer a worker binds (with `withTracer`) while it runs a traced call's function: the spans
/// that the function starts (`withSpan("parse") { ... }`) are ``WorkerSpan``s, children of the caller's
/// span or of one another, and reach the owner's tracer when they end (see ``WorkerCallTrace``).
///
/// A span started in a context that belongs to no traced call (`context: .topLevel`) records nothing.
/// Injecting a context (a call the function makes onwards, over HTTP for example) passes on the
/// caller's own trace context, as the worker received it: the worker has no trace ids of its own.
struct WorkerTracer: Tracer {
    typealias Span = WorkerSpan

    func startSpan<Instant: TracerInstant>(
        _ operationName: String, context: @autoclosure () -> ServiceContext, ofKind kind: SpanKind, at instant: @autoclosure () -> Instant,
        function: String, file fileID: String, line: UInt
    ) -> WorkerSpan {
        var context = context()
        let start = instant().nanosecondsSinceEpoch
        guard let parent = context[WorkerSpanKey.self] else {
            return WorkerSpan(name: operationName, context: context, kind: kind, start: start, place: nil)
        }
        let place = WorkerSpan.Place(call: parent.call, id: parent.call.spanStarted(), parent: parent.span)
        context[WorkerSpanKey.self] = WorkerSpanKey.Value(call: place.call, span: place.id)
        return WorkerSpan(name: operationName, context: context, kind: kind, start: start, place: place)
    }

    func forceFlush() {}

    func inject<Carrier, Inject: Injector>(_ context: ServiceContext, into carrier: inout Carrier, using injector: Inject)
    where Inject.Carrier == Carrier {
        guard let call = context[WorkerSpanKey.self]?.call else { return }
        for (key, value) in call.carrier { injector.inject(value, forKey: key, into: &carrier) }
    }

    func extract<Carrier, Extract: Extractor>(_ carrier: Carrier, into context: inout ServiceContext, using extractor: Extract)
    where Extract.Carrier == Carrier {}
}
