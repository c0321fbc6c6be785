import ForkKitTestSupport
import ForkPool
import ForkRPC
import InMemoryTracing
import Testing
import Tracing

let tracedParse = RPCFunction<Int, Int>("parse")

/// A pool's calls and maps carry the caller's trace context to the workers, whose spans come back
/// into the caller's in-memory tracer (bound with `withTracer`).
@Suite("Tracing through a pool", .serialized, .noZombieChildren)
struct PoolTracingTests {
    @Test("a pool call inside a span: the worker's spans are the caller's children", arguments: ["rpc-traced", "async-traced"])
    func tracedCall(entry: String) async throws {
        let pool = try await makePool(entry) { $0.backend = entry == "rpc-traced" ? .synchronous : .asynchronous }
        let tracer = InMemoryTracer()
        let before = DefaultTracerClock.now.nanosecondsSinceEpoch
        let tokens = try await withTracer(tracer) {
            try await withSpan("caller") { _ in try await pool.call(tracedParse, 5) }
        }
        let after = DefaultTracerClock.now.nanosecondsSinceEpoch
        #expect(tokens == 10)
        let spans = tracer.finishedSpans
        let caller = try #require(spans.first { $0.operationName == "caller" })
        let parse = try #require(spans.first { $0.operationName == "parse" })
        let tokenize = try #require(spans.first { $0.operationName == "tokenize" })
        #expect(parse.traceID == caller.traceID && tokenize.traceID == caller.traceID)
        #expect(parse.parentSpanID == caller.spanID && tokenize.parentSpanID == parse.spanID)
        #expect(parse.attributes.get("items") == .int64(5))
        #expect(parse.events.map(\.name) == ["halfway"])
        #expect(parse.status == SpanStatus(code: .ok))
        for span in [parse, tokenize] {
            let start = span.startInstant.nanosecondsSinceEpoch, end = span.endInstant.nanosecondsSinceEpoch
            #expect(before <= start && start <= end && end <= after)
        }
        await pool.shutdown()
    }

    @Test("a pool map inside a span: every item's spans are the caller's children, chunks ($batch) included", arguments: ["rpc-traced", "async-traced"])
    func tracedMap(entry: String) async throws {
        let pool = try await makePool(entry) { $0.backend = entry == "rpc-traced" ? .synchronous : .asynchronous }
        let tracer = InMemoryTracer()
        let inputs = Array(1...40)
        let outputs = try await withTracer(tracer) {
            try await withSpan("caller") { _ in try await pool.map(tracedParse, inputs, chunkSize: 8) }
        }
        #expect(outputs == inputs.map { $0 * 2 })
        let spans = tracer.finishedSpans
        let caller = try #require(spans.first { $0.operationName == "caller" })
        let parses = spans.filter { $0.operationName == "parse" }
        #expect(parses.count == inputs.count)
        #expect(parses.allSatisfy { $0.parentSpanID == caller.spanID && $0.traceID == caller.traceID })
        #expect(Set(parses.compactMap { span -> Int64? in
            if case .int64(let items)? = span.attributes.get("items") { items } else { nil }
        }) == Set(inputs.map(Int64.init)))
        let parseIDs = Set(parses.map(\.spanID))
        let tokenizes = spans.filter { $0.operationName == "tokenize" }
        #expect(tokenizes.count == inputs.count)
        #expect(tokenizes.allSatisfy { parseIDs.contains($0.parentSpanID ?? "") })
        await pool.shutdown()
    }
}
