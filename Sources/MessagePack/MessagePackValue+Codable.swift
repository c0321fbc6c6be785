/// `MessagePackValue` as a `Codable` field: through ``MessagePackEncoder`` and ``MessagePackDecoder``
/// it passes through unchanged (any MessagePack, ext and timestamp included); through other coders
/// (JSON, for example) it takes the nearest plain form.
extension MessagePackValue: Codable {
    /// Encodes the value; other encoders get maps with text keys, bytes as arrays of numbers, and
    /// extensions as `[type, bytes]`.
    public func encode(to encoder: any Encoder) throws {
        func single(_ value: some Encodable) throws {
            var container = encoder.singleValueContainer()
            try container.encode(value)
        }
        func sequence(_ values: [any Encodable]) throws {
            var container = encoder.unkeyedContainer()
            for value in values { try container.encode(value) }
        }
        switch self {
        case .nil:
            var container = encoder.singleValueContainer()
            try container.encodeNil()
        case .bool(let flag): try single(flag)
        case .int(let number): try single(number)
        case .uint(let number): try single(number)
        case .float32(let number): try single(number)
        case .float64(let number): try single(number)
        case .string(let text): try single(text)
        case .binary(let bytes): try single(bytes)
        case .array(let elements): try sequence(elements)
        case .map(let pairs):
            var container = encoder.container(keyedBy: TextKey.self)
            for pair in pairs {
                try container.encode(pair.value, forKey: TextKey(pair.key.stringValue ?? "\(pair.key)"))
            }
        case .extended(let type, let data): try sequence([type, data])
        case .timestamp(let seconds, let nanoseconds): try sequence([seconds, nanoseconds])
        }
    }

    /// Decodes whatever the decoder holds, trying scalars, then arrays, then maps.
    public init(from decoder: any Decoder) throws {
        if let tree = decoder as? TreeDecoder {
            self = tree.value
            return
        }
        if let container = try? decoder.singleValueContainer() {
            if container.decodeNil() { self = .nil; return }
            if let flag = try? container.decode(Bool.self) { self = .bool(flag); return }
            if let number = try? container.decode(Int64.self) { self = .int64(number); return }
            if let number = try? container.decode(UInt64.self) { self = .uint(number); return }
            if let number = try? container.decode(Double.self) { self = .float64(number); return }
            if let text = try? container.decode(String.self) { self = .string(text); return }
        }
        if var container = try? decoder.unkeyedContainer() {
            var elements: [MessagePackValue] = []
            while !container.isAtEnd { elements.append(try container.decode(MessagePackValue.self)) }
            self = .array(elements)
            return
        }
        let container = try decoder.container(keyedBy: TextKey.self)
        self = .map(try container.allKeys.map { MessagePackPair(.string($0.stringValue), try container.decode(MessagePackValue.self, forKey: $0)) })
    }
}

/// A coding key that is any text.
struct TextKey: CodingKey {
    let stringValue: String
    var intValue: Int? { nil }
    init(_ text: String) { stringValue = text }
    init?(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { stringValue = String(intValue) }
}
