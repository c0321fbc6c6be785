import MessagePack
import Tracing

/// The owner's side of a traced call: the caller's service context and tracer, read in the caller's
/// task when the call is made, and the carrier that `$context` sends to the worker. The spans the
/// worker sends back (`$spans`) are replayed into that tracer, under that context.
struct CallTrace: Sendable {
    /// The tracer active in the caller's task (a task-local one bound by `withTracer` first).
    let tracer: any Tracer
    /// The caller's context: the parent of the worker's outermost spans.
    let context: ServiceContext
    /// The caller's context as the active instrument injected it (W3C `traceparent` and
    /// `tracestate` with swift-otel).
    let carrier: [String: String]

    /// The trace of a call the current task makes now; nil (at the cost of one task-local read)
    /// when it has no service context, or when the instrument injects nothing from it: then nothing
    /// about the call changes.
    @inline(__always)
    static func current() -> CallTrace? {
        guard let context = ServiceContext.current else { return nil }
        return traced(context)
    }

    private static func traced(_ context: ServiceContext) -> CallTrace? {
        var carrier: [String: String] = [:]
        InstrumentationSystem.instrument.inject(context, into: &carrier, using: CarrierInjector())
        guard !carrier.isEmpty else { return nil }
        return CallTrace(tracer: InstrumentationSystem.tracer, context: context, carrier: carrier)
    }

    /// Writes `[2, "$context", [id, {carrier}]]`, the notification that goes just before request `id`.
    func writeContext(for id: UInt32, into writer: inout MessagePackWriter) {
        writer.write(.array([
            2, .string(RPCMessage.contextMethod),
            .array([.uint(UInt64(id)), Self.value(of: carrier)]),
        ]))
    }

    static func value(of carrier: [String: String]) -> MessagePackValue {
        .map(carrier.map { MessagePackPair(.string($0.key), .string($0.value)) })
    }

    static func carrier(from value: MessagePackValue) -> [String: String]? {
        guard case .map(let pairs) = value else { return nil }
        var carrier: [String: String] = [:]
        for pair in pairs {
            guard let key = pair.key.stringValue, let value = pair.value.stringValue else { return nil }
            carrier[key] = value
        }
        return carrier
    }

    /// The trace for spans that arrive when the call that made them is no longer known (they
    /// ended after its response): the process's bootstrapped tracer, under the context its
    /// instrument extracts from the carrier the worker sent back.
    static func detached(carrier: [String: String]) -> CallTrace {
        var context = ServiceContext.topLevel
        InstrumentationSystem.instrument.extract(carrier, into: &context, using: CarrierExtractor())
        return CallTrace(tracer: InstrumentationSystem.tracer, context: context, carrier: carrier)
    }

    /// Replays spans a worker finished into ``tracer``: each starts and ends at the worker's own
    /// times, with its attributes, events and status; its parent is the caller's span, or the replayed
    /// span of its parent in the worker. A span whose parent is not among `records` (it outlived
    /// its parent, which was sent before) is given the caller's span as parent.
    func replay(_ records: [SpanRecord]) {
        var replayed: [UInt64: any Span] = [:]
        var order: [(any Span, UInt64)] = []
        for record in records {
            let parent = record.parent == 0 ? context : (replayed[record.parent]?.context ?? context)
            let span = tracer.startSpan(
                record.name, context: parent, ofKind: record.kind, at: DefaultTracerClock.Timestamp(nanosecondsSinceEpoch: record.start))
            span.attributes = record.attributes
            for event in record.events { span.addEvent(event) }
            if let status = record.status { span.setStatus(status) }
            replayed[record.id] = span
            order.append((span, record.end))
        }
        // Children end before their parents, as they did in the worker.
        for (span, end) in order.reversed() { span.end(at: DefaultTracerClock.Timestamp(nanosecondsSinceEpoch: end)) }
    }
}

/// Writes a context's fields into a `[String: String]` carrier.
struct CarrierInjector: Injector {
    func inject(_ value: String, forKey key: String, into carrier: inout [String: String]) {
        carrier[key] = value
    }
}

/// Reads a context's fields from a `[String: String]` carrier.
struct CarrierExtractor: Extractor {
    func extract(key: String, from carrier: [String: String]) -> String? {
        carrier[key]
    }
}
