/// Decodes `Decodable` values from MessagePack.
///
/// Lenient where other implementations differ: a `String` may arrive as bin if it is valid UTF-8
/// (Perl's Data::MessagePack and older peers send text as bin), bytes may arrive as str, a
/// floating-point value may arrive as an integer, and any integer width is accepted when the value
/// fits the target type. A mismatch is a `DecodingError` naming the path, the expected type and
/// what was found.
///
/// ```swift
/// let point = try MessagePackDecoder().decode(Point.self, from: bytes)
/// ```
public struct MessagePackDecoder: Sendable {
    /// Creates a decoder.
    public init() {}

    /// Decodes a value of `type` from exactly the given bytes.
    public func decode<Value: Decodable>(_ type: Value.Type, from bytes: [UInt8]) throws -> Value {
        try MessagePackObject.withObject(in: bytes) { try $0.decode(type) }
    }

    /// Decodes a value of `type` from a ``MessagePackValue`` tree.
    public func decode<Value: Decodable>(_ type: Value.Type, from value: MessagePackValue) throws -> Value {
        try TreeDecoder(value: value, parentPath: [], key: nil).decodeValue(type)
    }
}

struct TreeDecoder: Decoder {
    let value: MessagePackValue
    // The path is put together only when asked for (errors, mostly): building an array for every
    // nested value would cost more than decoding it.
    let parentPath: [any CodingKey]
    let key: (any CodingKey)?
    var codingPath: [any CodingKey] { key.map { parentPath + [$0] } ?? parentPath }
    var userInfo: [CodingUserInfoKey: Any] { [:] }

    func decodeValue<Value: Decodable>(_ type: Value.Type) throws -> Value {
        switch SpecialCoding.of(type) {
        case .plain, .own(_, nil):
            return try Value(from: self)
        case .own(_, let decoding?):
            // A type that reads itself reads msgpack-c's objects: unpack the value's encoding.
            do {
                return try MessagePackObject.withObject(in: value.encoded()) { try decoding.decode(type, asSelfFrom: $0) }
            } catch let error as DecodingError {
                throw error.under(codingPath)
            }
        case .value:
            return value as! Value
        case .binary:
            guard let bytes = value.bytesValue else { throw mismatch(type, expected: "bin") }
            return (type as! MessagePackBinaryConvertible.Type).init(messagePackBytes: bytes) as! Value
        case .custom:
            do {
                return try (type as! MessagePackValueConvertible.Type).init(messagePackValue: value) as! Value
            } catch {
                throw DecodingError.typeMismatch(type, DecodingError.Context(codingPath: codingPath, debugDescription: "\(error)", underlyingError: error))
            }
        }
    }

    func mismatch(_ type: Any.Type, expected: String) -> DecodingError {
        let found = value == .nil ? "nil" : value.typeName
        let context = DecodingError.Context(codingPath: codingPath, debugDescription: "expected \(expected) for \(type), found \(found)")
        return value == .nil ? .valueNotFound(type, context) : .typeMismatch(type, context)
    }

    func container<Key: CodingKey>(keyedBy type: Key.Type) throws -> KeyedDecodingContainer<Key> {
        guard case .map(let pairs) = value else { throw mismatch([String: MessagePackValue].self, expected: "a map") }
        var entries: [String: MessagePackValue] = [:]
        for pair in pairs {
            // Keys are text normally; integer keys (from other encoders) are matched by their digits.
            if let key = pair.key.stringValue {
                entries[key] = pair.value
            } else if let key = pair.key.integerValue {
                entries[String(key)] = pair.value
            }
        }
        return KeyedDecodingContainer(KeyedContainer<Key>(entries: entries, codingPath: codingPath))
    }

    func unkeyedContainer() throws -> any UnkeyedDecodingContainer {
        guard case .array(let elements) = value else { throw mismatch([MessagePackValue].self, expected: "an array") }
        return UnkeyedContainer(elements: elements, codingPath: codingPath)
    }

    func singleValueContainer() throws -> any SingleValueDecodingContainer {
        SingleValueContainer(decoder: self)
    }

    struct KeyedContainer<Key: CodingKey>: KeyedDecodingContainerProtocol {
        let entries: [String: MessagePackValue]
        let codingPath: [any CodingKey]
        var allKeys: [Key] { entries.keys.compactMap { Key(stringValue: $0) } }

        func contains(_ key: Key) -> Bool { entries[key.stringValue] != nil }

        private func decoder(for key: Key) throws -> TreeDecoder {
            guard let value = entries[key.stringValue] else {
                throw DecodingError.keyNotFound(key, DecodingError.Context(
                    codingPath: codingPath, debugDescription: "no value for key '\(key.stringValue)'"))
            }
            return TreeDecoder(value: value, parentPath: codingPath, key: key)
        }

        func decodeNil(forKey key: Key) throws -> Bool { try decoder(for: key).value == .nil }
        func decode<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T { try decoder(for: key).decodeValue(type) }
        func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type, forKey key: Key) throws -> KeyedDecodingContainer<NestedKey> {
            try decoder(for: key).container(keyedBy: type)
        }
        func nestedUnkeyedContainer(forKey key: Key) throws -> any UnkeyedDecodingContainer {
            try decoder(for: key).unkeyedContainer()
        }
        func superDecoder() throws -> any Decoder {
            TreeDecoder(value: entries["super"] ?? .nil, parentPath: codingPath, key: nil)
        }
        func superDecoder(forKey key: Key) throws -> any Decoder { try decoder(for: key) }
    }

    struct UnkeyedContainer: UnkeyedDecodingContainer {
        let elements: [MessagePackValue]
        let codingPath: [any CodingKey]
        var currentIndex = 0
        var count: Int? { elements.count }
        var isAtEnd: Bool { currentIndex >= elements.count }

        private mutating func next(_ type: Any.Type) throws -> TreeDecoder {
            guard !isAtEnd else {
                throw DecodingError.valueNotFound(type, DecodingError.Context(
                    codingPath: codingPath + [IndexKey(currentIndex)], debugDescription: "the array has only \(elements.count) elements"))
            }
            defer { currentIndex += 1 }
            return TreeDecoder(value: elements[currentIndex], parentPath: codingPath, key: IndexKey(currentIndex))
        }

        mutating func decodeNil() throws -> Bool {
            guard !isAtEnd, elements[currentIndex] == .nil else { return false }
            currentIndex += 1
            return true
        }
        mutating func decode<T: Decodable>(_ type: T.Type) throws -> T { try next(type).decodeValue(type) }
        mutating func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type) throws -> KeyedDecodingContainer<NestedKey> {
            try next([String: MessagePackValue].self).container(keyedBy: type)
        }
        mutating func nestedUnkeyedContainer() throws -> any UnkeyedDecodingContainer {
            try next([MessagePackValue].self).unkeyedContainer()
        }
        mutating func superDecoder() throws -> any Decoder { try next(MessagePackValue.self) }
    }

    struct SingleValueContainer: SingleValueDecodingContainer {
        let decoder: TreeDecoder
        var codingPath: [any CodingKey] { decoder.codingPath }
        private var value: MessagePackValue { decoder.value }

        func decodeNil() -> Bool { value == .nil }

        func decode(_ type: Bool.Type) throws -> Bool {
            guard case .bool(let flag) = value else { throw decoder.mismatch(type, expected: "bool") }
            return flag
        }

        func decode(_ type: String.Type) throws -> String {
            switch value {
            case .string(let text): return text
            case .binary(let bytes):
                guard let text = String(validating: bytes, as: UTF8.self) else {
                    throw DecodingError.dataCorrupted(DecodingError.Context(
                        codingPath: codingPath, debugDescription: "bin of \(bytes.count) bytes is not valid UTF-8, so it cannot be a String"))
                }
                return text
            default: throw decoder.mismatch(type, expected: "str")
            }
        }

        func decode(_ type: Double.Type) throws -> Double {
            switch value {
            case .float64(let number): return number
            case .float32(let number): return Double(number)
            case .int(let number): return Double(number)
            case .uint(let number): return Double(number)
            default: throw decoder.mismatch(type, expected: "float")
            }
        }

        func decode(_ type: Float.Type) throws -> Float { Float(try decode(Double.self)) }
        func decode(_ type: Int.Type) throws -> Int { try integer(type) }
        func decode(_ type: Int8.Type) throws -> Int8 { try integer(type) }
        func decode(_ type: Int16.Type) throws -> Int16 { try integer(type) }
        func decode(_ type: Int32.Type) throws -> Int32 { try integer(type) }
        func decode(_ type: Int64.Type) throws -> Int64 { try integer(type) }
        func decode(_ type: UInt.Type) throws -> UInt { try integer(type) }
        func decode(_ type: UInt8.Type) throws -> UInt8 { try integer(type) }
        func decode(_ type: UInt16.Type) throws -> UInt16 { try integer(type) }
        func decode(_ type: UInt32.Type) throws -> UInt32 { try integer(type) }
        func decode(_ type: UInt64.Type) throws -> UInt64 { try integer(type) }
        func decode<T: Decodable>(_ type: T.Type) throws -> T { try decoder.decodeValue(type) }

        private func integer<T: FixedWidthInteger>(_ type: T.Type) throws -> T {
            let result: T?
            switch value {
            case .int(let number): result = T(exactly: number)
            case .uint(let number): result = T(exactly: number)
            default: throw decoder.mismatch(type, expected: "an integer")
            }
            guard let result else {
                throw DecodingError.dataCorrupted(DecodingError.Context(
                    codingPath: codingPath, debugDescription: "\(value) does not fit in \(type)"))
            }
            return result
        }
    }
}
