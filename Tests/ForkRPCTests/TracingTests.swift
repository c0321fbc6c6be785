import ForkKit
import ForkKitTestSupport
import Foundation
@testable import ForkRPC
import InMemoryTracing
import Synchronization
import Testing
import Tracing

let tracedParse = RPCFunction<Int, Int>("parse")
let tracedParseFails = RPCFunction<Int, Int>("parse-fails")
let sawContext = RPCFunction<Int, Bool>("saw-context")

/// Spans across processes: a call made inside a span carries its context to a real worker, whose
/// spans come back into the caller's in-memory tracer (bound with `withTracer`, never bootstrapped).
@Suite("Tracing across processes", .noZombieChildren)
struct TracingTests {
    @Test("a worker's nested spans become children of the caller's span, with attributes, event and status", arguments: ["rpc-traced", "async-traced"])
    func nestedSpans(entry: String) async throws {
        let worker = try await RPCClient.start(try await workerTemplate(), running: entry)
        let tracer = InMemoryTracer()
        let before = DefaultTracerClock.now.nanosecondsSinceEpoch
        let tokens = try await withTracer(tracer) {
            try await withSpan("caller") { _ in try await worker.call(tracedParse, 21) }
        }
        let after = DefaultTracerClock.now.nanosecondsSinceEpoch
        #expect(tokens == 42)
        let spans = tracer.finishedSpans
        let caller = try #require(spans.first { $0.operationName == "caller" })
        let parse = try #require(spans.first { $0.operationName == "parse" })
        let tokenize = try #require(spans.first { $0.operationName == "tokenize" })
        #expect(spans.count == 3)
        // One trace; the worker's outermost span under the caller's, the nested one under it.
        #expect(parse.traceID == caller.traceID && tokenize.traceID == caller.traceID)
        #expect(parse.parentSpanID == caller.spanID)
        #expect(tokenize.parentSpanID == parse.spanID)
        #expect(parse.kind == .server && tokenize.kind == .internal)
        #expect(parse.attributes.get("items") == .int64(21))
        #expect(tokenize.attributes.get("tokens") == .int64(42))
        #expect(parse.events.map(\.name) == ["halfway"])
        #expect(parse.events.first?.attributes.get("done") == .int64(10))
        #expect(parse.status == SpanStatus(code: .ok))
        #expect(tokenize.status == nil)
        // The worker's own times, within the call's.
        for span in [parse, tokenize] {
            let start = span.startInstant.nanosecondsSinceEpoch, end = span.endInstant.nanosecondsSinceEpoch
            #expect(before <= start && start <= end && end <= after, "\(span.operationName): \(start)...\(end) outside \(before)...\(after)")
        }
        #expect(parse.startInstant.nanosecondsSinceEpoch <= tokenize.startInstant.nanosecondsSinceEpoch)
        #expect(tokenize.endInstant.nanosecondsSinceEpoch <= parse.endInstant.nanosecondsSinceEpoch)
        #expect(try await worker.close() == .exited(0))
    }

    @Test("an error thrown inside a worker's span comes back as its error status and exception event", arguments: ["rpc-traced", "async-traced"])
    func errorInSpan(entry: String) async throws {
        let worker = try await RPCClient.start(try await workerTemplate(), running: entry)
        let tracer = InMemoryTracer()
        _ = await withTracer(tracer) {
            await withSpan("caller") { _ in
                await #expect(throws: RPCError.self) { try await worker.call(tracedParseFails, 7) }
            }
        }
        let risky = try #require(tracer.finishedSpans.first { $0.operationName == "risky" })
        let caller = try #require(tracer.finishedSpans.first { $0.operationName == "caller" })
        #expect(risky.parentSpanID == caller.spanID)
        #expect(risky.status?.code == .error)
        let exception = try #require(risky.events.first { $0.name == "exception" })
        #expect(exception.attributes.get("exception.type") == .string("forkkit_test_worker.TracedFailure"))
        #expect(exception.attributes.get("exception.message") == .string("cannot parse 7 items"))
        #expect(try await worker.close() == .exited(0))
    }

    @Test("a call made without a traced context sends no $context: the worker sees none", arguments: ["rpc-traced", "async-traced"])
    func untracedCallSendsNoContext(entry: String) async throws {
        let worker = try await RPCClient.start(try await workerTemplate(), running: entry)
        // No context at all.
        #expect(try await worker.call(sawContext, 0) == false)
        // A tracer bound, but no span: still no context.
        let tracer = InMemoryTracer()
        let bound = try await withTracer(tracer) { try await worker.call(sawContext, 0) }
        #expect(bound == false)
        #expect(tracer.performedContextInjections.isEmpty)
        // A span of the no-op tracer: a context, from which nothing is injected.
        let noOp = try await withSpan("no-op") { _ in try await worker.call(sawContext, 0) }
        #expect(noOp == false)
        // And a traced call does carry one.
        let traced = try await withTracer(tracer) { try await withSpan("caller") { _ in try await worker.call(sawContext, 0) } }
        #expect(traced == true)
        #expect(try await worker.close() == .exited(0))
    }

    @Test("many traced calls in flight at once each get their own spans", arguments: ["rpc-traced", "async-traced"])
    func concurrentTracedCalls(entry: String) async throws {
        let worker = try await RPCClient.start(try await workerTemplate(), running: entry)
        let tracer = InMemoryTracer()
        try await withTracer(tracer) {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for items in 1...20 {
                    group.addTask { _ = try await withSpan("caller-\(items)") { _ in try await worker.call(tracedParse, items) } }
                }
                for try await _ in group {}
            }
        }
        let spans = tracer.finishedSpans
        #expect(spans.count == 60)
        for items in 1...20 {
            let caller = try #require(spans.first { $0.operationName == "caller-\(items)" })
            let parse = try #require(spans.first { $0.operationName == "parse" && $0.parentSpanID == caller.spanID })
            #expect(parse.attributes.get("items") == .int64(Int64(items)))
            #expect(spans.contains { $0.operationName == "tokenize" && $0.parentSpanID == parse.spanID })
        }
        #expect(try await worker.close() == .exited(0))
    }

    @Test("the span record survives the wire: kind, times, attributes of each type, events, status")
    func recordRoundTrip() throws {
        var attributes = SpanAttributes()
        attributes.set("int", value: .int64(-3))
        attributes.set("double", value: .double(1.5))
        attributes.set("bool", value: .bool(true))
        attributes.set("string", value: .string("text"))
        attributes.set("ints", value: .int64Array([1, 2]))
        attributes.set("strings", value: .stringArray(["a", "b"]))
        let record = SpanRecord(
            id: 2, parent: 1, name: "work", kind: .consumer, start: 1_700_000_000_000_000_001, end: 1_700_000_000_000_000_900,
            attributes: attributes,
            events: [SpanEvent(name: "tick", at: DefaultTracerClock.Timestamp(nanosecondsSinceEpoch: 1_700_000_000_000_000_500), attributes: ["n": 1])],
            status: SpanStatus(code: .error, message: "broken"))
        let read = try #require(SpanRecord(try MessagePackDecoder().decode(MessagePackValue.self, from: record.value.encoded())))
        #expect(read.id == 2 && read.parent == 1 && read.name == "work" && read.kind == .consumer)
        #expect(read.start == record.start && read.end == record.end)
        #expect(read.attributes == attributes)
        #expect(read.events == record.events)
        #expect(read.status == record.status)
        #expect(SpanRecord(.array([1, 2])) == nil)
    }

    @Test("protocol/vectors/rpc.json: $context and $spans, byte for byte")
    func vectors() throws {
        let url = URL(fileURLWithPath: #filePath)
            .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("protocol/vectors/rpc.json")
        let root = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
        let vectors = Dictionary(uniqueKeysWithValues: (root["vectors"] as! [[String: Any]]).map { vector in
            let hex = Array((vector["hex"] as! String).utf8)
            let bytes = stride(from: 0, to: hex.count, by: 2).map { UInt8(String(decoding: hex[$0..<$0 + 2], as: UTF8.self), radix: 16)! }
            return (vector["name"] as! String, bytes)
        })
        let carrier = ["traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"]
        var context = MessagePackWriter()
        CallTrace(tracer: NoOpTracer(), context: .topLevel, carrier: carrier).writeContext(for: 7, into: &context)
        #expect(context.bytes == vectors["context"])

        let base: UInt64 = 1_700_000_000_000_000_000
        func at(_ offset: UInt64) -> DefaultTracerClock.Timestamp { DefaultTracerClock.Timestamp(nanosecondsSinceEpoch: base + offset) }
        let parse = SpanRecord(
            id: 1, parent: 0, name: "parse", kind: .server, start: base, end: base + 500_000, attributes: ["items": 21],
            events: [SpanEvent(name: "halfway", at: at(200_000), attributes: ["done": 10])], status: SpanStatus(code: .ok))
        let tokenize = SpanRecord(
            id: 2, parent: 1, name: "tokenize", kind: .internal, start: base + 100_000, end: base + 400_000, attributes: [:], events: [],
            status: nil)
        let spans = RPCMessage.notification(method: RPCMessage.spansMethod, params: [7, .array([parse.value, tokenize.value])])
        #expect(spans.value.encoded() == vectors["spans"])

        // A span that ended after the response, made by the worker's own tracer and trace.
        let sent = Mutex<[RPCMessage]>([])
        let call = WorkerCallTrace(id: 7, carrier: carrier) { message in sent.withLock { $0.append(message) } }
        _ = call.finishCall()
        call.run {
            let span = WorkerTracer().startSpan("flush", at: at(600_000))
            span.recordError(DiskFull(), attributes: [:], at: at(800_000))
            span.setStatus(SpanStatus(code: .error, message: "disk full"))
            span.end(at: at(900_000))
        }
        // Its attributes are a map of two keys, whose order a Swift dictionary does not keep: compared as values.
        guard case .notification(RPCMessage.spansMethod, let params)? = sent.withLock({ $0 }).first, params.count == 3,
              case .notification(RPCMessage.spansMethod, let expected) = try RPCMessage(MessagePackDecoder().decode(MessagePackValue.self, from: vectors["late spans"]!)),
              let made = params[1].arrayValue?.compactMap(SpanRecord.init).first,
              var vector = expected[1].arrayValue?.compactMap(SpanRecord.init).first
        else {
            Issue.record("no late $spans: \(sent.withLock { $0 })")
            return
        }
        #expect(params[0] == expected[0] && params[2] == expected[2])
        // The vector's error is of type App.DiskFull.
        vector.events[0].attributes.set("exception.type", value: .string(String(reflecting: DiskFull.self)))
        #expect(made.parent == vector.parent && made.name == vector.name && made.kind == vector.kind)
        #expect(made.start == vector.start && made.end == vector.end && made.attributes == vector.attributes)
        #expect(made.events == vector.events && made.status == vector.status)
    }

    @Test("a worker holds a finished span back while its parent is open, and sends spans that end after the response with the carrier")
    func workerHoldsAndSendsLate() throws {
        let sent = Mutex<[RPCMessage]>([])
        let call = WorkerCallTrace(id: 9, carrier: ["k": "v"]) { message in sent.withLock { $0.append(message) } }
        let (outer, inner, lingering) = call.run { () -> (any Span, any Span, any Span) in
            let outer = startSpan("outer")
            let inner = ServiceContext.withValue(outer.context) { startSpan("inner") }
            return (outer, inner, startSpan("lingering"))
        }
        inner.end()
        // The inner span waits for its parent.
        outer.end()
        guard case .notification(RPCMessage.spansMethod, let params)? = call.finishCall() else {
            Issue.record("no $spans before the response")
            return
        }
        #expect(params.count == 2 && params[0] == 9)
        let records = params[1].arrayValue?.compactMap(SpanRecord.init) ?? []
        #expect(records.map(\.name) == ["outer", "inner"])
        #expect(records.map(\.parent) == [0, records[0].id])
        #expect(sent.withLock { $0 }.isEmpty)
        lingering.end()
        let late = sent.withLock { $0 }
        guard late.count == 1, case .notification(RPCMessage.spansMethod, let lateParams) = late[0] else {
            Issue.record("the late span was not sent: \(late)")
            return
        }
        #expect(lateParams.count == 3 && lateParams[2] == ["k": "v"])
        #expect(lateParams[1].arrayValue?.compactMap(SpanRecord.init).map(\.name) == ["lingering"])
    }
}

/// The error of the `late spans` vector.
struct DiskFull: Error, CustomStringConvertible {
    var description: String { "disk full" }
}
