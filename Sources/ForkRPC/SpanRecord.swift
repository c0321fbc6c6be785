import MessagePack
import Tracing

/// One span a worker finished, as the `$spans` notification carries it to the owner (see
/// <doc:TracingAcrossProcesses> and protocol/README.md):
///
/// ```
/// [id: uint, parent: uint, name: str, kind: uint, start: uint, end: uint, attributes: map, events: array, status]
/// ```
///
/// - `id` numbers the span within its call, from 1; `parent` is 0 for a span whose parent is the
///   caller's span (the remote parent), otherwise the `id` of another span of the same call. In a
///   message a span comes after its parent whenever both are in it.
/// - `kind`: 0 internal, 1 server, 2 client, 3 producer, 4 consumer.
/// - `start`, `end`: nanoseconds since the Unix epoch, read from the worker's clock.
/// - `attributes`: `{name: value}`, each value an integer, float, bool, str or an array of one of those.
/// - `events`: `[[name: str, time: uint, attributes: map], ...]`; a recorded error is an event named
///   `exception` with the attributes `exception.type` and `exception.message` (OpenTelemetry's convention).
/// - `status`: nil when never set, otherwise `[code: uint, message: str or nil]`, code 0 ok, 1 error.
///
/// Links are not carried.
struct SpanRecord: Sendable {
    /// The span's number within its call (from 1).
    var id: UInt64
    /// The number of its parent within the call, or 0 when its parent is the caller's span.
    var parent: UInt64
    var name: String
    var kind: SpanKind
    /// Nanoseconds since the Unix epoch.
    var start: UInt64
    /// Nanoseconds since the Unix epoch.
    var end: UInt64
    var attributes: SpanAttributes
    var events: [SpanEvent]
    var status: SpanStatus?

    /// The record as the wire carries it.
    var value: MessagePackValue {
        .array([
            .uint(id), .uint(parent), .string(name), .uint(Self.code(of: kind)), .uint(start), .uint(end),
            Self.value(of: attributes),
            .array(events.map { event in [.string(event.name), .uint(event.nanosecondsSinceEpoch), Self.value(of: event.attributes)] }),
            status.map { status in [.uint(status.code == .ok ? 0 : 1), status.message.map(MessagePackValue.string) ?? .nil] } ?? .nil,
        ])
    }

    /// Reads a record; nil when `value` is not one (a malformed record is dropped, not fatal: spans
    /// are diagnostics, never a reason to close a worker's connection).
    init?(_ value: MessagePackValue) {
        guard case .array(let fields) = value, fields.count == 9,
              let id = fields[0].unsignedValue, let parent = fields[1].unsignedValue, let name = fields[2].stringValue,
              let kind = fields[3].unsignedValue, let start = fields[4].unsignedValue, let end = fields[5].unsignedValue,
              let attributes = Self.attributes(from: fields[6]), case .array(let events) = fields[7]
        else { return nil }
        self.id = id
        self.parent = parent
        self.name = name
        self.kind = Self.kind(ofCode: kind)
        self.start = start
        self.end = end
        self.attributes = attributes
        self.events = events.compactMap { event in
            guard case .array(let parts) = event, parts.count == 3, let name = parts[0].stringValue, let time = parts[1].unsignedValue,
                  let attributes = Self.attributes(from: parts[2]) else { return nil }
            return SpanEvent(name: name, at: DefaultTracerClock.Timestamp(nanosecondsSinceEpoch: time), attributes: attributes)
        }
        switch fields[8] {
        case .array(let parts) where parts.count == 2:
            status = SpanStatus(code: parts[0].unsignedValue == 0 ? .ok : .error, message: parts[1].stringValue)
        default:
            status = nil
        }
    }

    init(
        id: UInt64, parent: UInt64, name: String, kind: SpanKind, start: UInt64, end: UInt64, attributes: SpanAttributes,
        events: [SpanEvent], status: SpanStatus?
    ) {
        self.id = id
        self.parent = parent
        self.name = name
        self.kind = kind
        self.start = start
        self.end = end
        self.attributes = attributes
        self.events = events
        self.status = status
    }

    // MARK: - Kinds

    static func code(of kind: SpanKind) -> UInt64 {
        switch kind {
        case .internal: 0
        case .server: 1
        case .client: 2
        case .producer: 3
        case .consumer: 4
        }
    }

    static func kind(ofCode code: UInt64) -> SpanKind {
        switch code {
        case 1: .server
        case 2: .client
        case 3: .producer
        case 4: .consumer
        default: .internal
        }
    }

    // MARK: - Attributes

    static func value(of attributes: SpanAttributes) -> MessagePackValue {
        var pairs: [MessagePackPair] = []
        pairs.reserveCapacity(attributes.count)
        attributes.forEach { name, attribute in pairs.append(MessagePackPair(.string(name), value(of: attribute))) }
        return .map(pairs)
    }

    static func value(of attribute: SpanAttribute) -> MessagePackValue {
        switch attribute {
        case .int32(let value): .int(Int64(value))
        case .int64(let value): .int(value)
        case .int32Array(let values): .array(values.map { .int(Int64($0)) })
        case .int64Array(let values): .array(values.map { .int($0) })
        case .double(let value): .float64(value)
        case .doubleArray(let values): .array(values.map { .float64($0) })
        case .bool(let value): .bool(value)
        case .boolArray(let values): .array(values.map { .bool($0) })
        case .string(let value): .string(value)
        case .stringArray(let values): .array(values.map { .string($0) })
        case .stringConvertible(let value): .string(value.description)
        case .stringConvertibleArray(let values): .array(values.map { .string($0.description) })
        default: .nil
        }
    }

    /// The attributes in a map; nil when `value` is not a map. Values of no attribute type are left out.
    static func attributes(from value: MessagePackValue) -> SpanAttributes? {
        guard case .map(let pairs) = value else { return nil }
        var attributes = SpanAttributes()
        for pair in pairs {
            guard let name = pair.key.stringValue, let attribute = attribute(from: pair.value) else { continue }
            attributes.set(name, value: attribute)
        }
        return attributes
    }

    static func attribute(from value: MessagePackValue) -> SpanAttribute? {
        switch value {
        case .int(let value): return .int64(value)
        case .uint(let value): return .int64(Int64(truncatingIfNeeded: value))
        case .float32(let value): return .double(Double(value))
        case .float64(let value): return .double(value)
        case .bool(let value): return .bool(value)
        case .string(let value): return .string(value)
        case .array(let elements):
            let integers = elements.compactMap { element -> Int64? in
                switch element {
                case .int(let value): value
                case .uint(let value): Int64(truncatingIfNeeded: value)
                default: nil
                }
            }
            if integers.count == elements.count { return .int64Array(integers) }
            let doubles = elements.compactMap { element -> Double? in
                switch element {
                case .float64(let value): value
                case .float32(let value): Double(value)
                default: nil
                }
            }
            if doubles.count == elements.count { return .doubleArray(doubles) }
            let bools = elements.compactMap { element -> Bool? in if case .bool(let value) = element { value } else { nil } }
            if bools.count == elements.count { return .boolArray(bools) }
            return .stringArray(elements.map { $0.stringValue ?? "\($0)" })
        default:
            return nil
        }
    }
}

extension MessagePackValue {
    /// The value as an unsigned integer, when it is a non-negative integer.
    var unsignedValue: UInt64? {
        switch self {
        case .uint(let value): value
        case .int(let value): UInt64(exactly: value)
        default: nil
        }
    }
}
