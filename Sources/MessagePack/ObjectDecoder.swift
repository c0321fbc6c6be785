import CMsgPack

/// The fast path of ``MessagePackDecoder``: decodes straight from the objects msgpack-c's unpacker
/// made, with no ``MessagePackValue`` tree in between. Objects (and the str and bin bytes they
/// point into) live only as long as the unpacker's zone and the input; everything here is used
/// within one `decode` call.
///
/// It accepts and refuses exactly what the tree decoder does, with the same messages.
struct ObjectDecoder: Decoder {
    let object: UnsafePointer<msgpack_object>
    let codingPath: [any CodingKey]
    var userInfo: [CodingUserInfoKey: Any] { [:] }

    func decodeValue<Value: Decodable>(_ type: Value.Type) throws -> Value {
        let leaf = Leaf(type)
        if leaf != .other { return try Self.leaf(leaf, as: type, object, codingPath) }
        switch SpecialCoding.of(type) {
        case .plain, .own(_, nil):
            return try Value(from: self)
        case .own(_, let decoding?):
            do {
                return try decoding.decode(type, asSelfFrom: MessagePackObject(object))
            } catch let error as DecodingError {
                throw error.under(codingPath)
            }
        case .value:
            return try MessagePackValue(object.pointee) as! Value
        case .binary:
            guard let bytes = Self.bytes(object) else { throw Self.mismatch(type, object, codingPath, expected: "bin") }
            return (type as! MessagePackBinaryConvertible.Type).init(messagePackBytes: bytes) as! Value
        case .custom:
            let value = try MessagePackValue(object.pointee)
            do {
                return try (type as! MessagePackValueConvertible.Type).init(messagePackValue: value) as! Value
            } catch {
                throw DecodingError.typeMismatch(type, DecodingError.Context(codingPath: codingPath, debugDescription: "\(error)", underlyingError: error))
            }
        }
    }

    func container<Key: CodingKey>(keyedBy type: Key.Type) throws -> KeyedDecodingContainer<Key> {
        guard object.pointee.type == MSGPACK_OBJECT_MAP else {
            throw Self.mismatch([String: MessagePackValue].self, object, codingPath, expected: "a map")
        }
        return KeyedDecodingContainer(KeyedContainer<Key>(map: object.pointee.via.map, codingPath: codingPath))
    }

    func unkeyedContainer() throws -> any UnkeyedDecodingContainer {
        guard object.pointee.type == MSGPACK_OBJECT_ARRAY else {
            throw Self.mismatch([MessagePackValue].self, object, codingPath, expected: "an array")
        }
        return UnkeyedContainer(array: object.pointee.via.array, codingPath: codingPath)
    }

    func singleValueContainer() throws -> any SingleValueDecodingContainer {
        SingleValueContainer(decoder: self)
    }

    // MARK: Leaves

    /// The common leaf types, recognised without asking the runtime what they conform to.
    enum Leaf {
        case int, string, double, bool, other

        @inline(__always)
        init(_ type: Any.Type) {
            self = type == Int.self ? .int : type == String.self ? .string : type == Double.self ? .double : type == Bool.self ? .bool : .other
        }
    }

    /// Decodes a value of a ``Leaf`` type (not `.other`). Not through an optional result: a generic
    /// `Value?` costs a metadata lookup on every call, more than decoding the value.
    @inline(__always)
    static func leaf<Value>(_ leaf: Leaf, as type: Value.Type, _ object: UnsafePointer<msgpack_object>, _ path: @autoclosure () -> [any CodingKey]) throws -> Value {
        switch leaf {
        case .int: unsafeBitCast(try integer(Int.self, object, path()), to: Value.self)
        case .string: unsafeBitCast(try string(object, path()), to: Value.self)
        case .double: unsafeBitCast(try double(object, path()), to: Value.self)
        case .bool: unsafeBitCast(try bool(object, path()), to: Value.self)
        case .other: preconditionFailure("not a leaf type: \(type)")
        }
    }

    static func bool(_ object: UnsafePointer<msgpack_object>, _ path: @autoclosure () -> [any CodingKey]) throws -> Bool {
        guard object.pointee.type == MSGPACK_OBJECT_BOOLEAN else { throw mismatch(Bool.self, object, path(), expected: "bool") }
        return object.pointee.via.boolean
    }

    static func string(_ object: UnsafePointer<msgpack_object>, _ path: @autoclosure () -> [any CodingKey]) throws -> String {
        switch object.pointee.type {
        case MSGPACK_OBJECT_STR:
            let str = object.pointee.via.str
            let bytes = UnsafeRawBufferPointer(start: str.ptr, count: Int(str.size)).bindMemory(to: UInt8.self)
            guard let text = String(validating: bytes, as: UTF8.self) else {
                throw DecodingError.dataCorrupted(DecodingError.Context(codingPath: path(), debugDescription: "a str value is not valid UTF-8"))
            }
            return text
        case MSGPACK_OBJECT_BIN:
            let bin = object.pointee.via.bin
            let bytes = UnsafeRawBufferPointer(start: bin.ptr, count: Int(bin.size)).bindMemory(to: UInt8.self)
            guard let text = String(validating: bytes, as: UTF8.self) else {
                throw DecodingError.dataCorrupted(DecodingError.Context(
                    codingPath: path(), debugDescription: "bin of \(bin.size) bytes is not valid UTF-8, so it cannot be a String"))
            }
            return text
        default:
            throw mismatch(String.self, object, path(), expected: "str")
        }
    }

    static func double(_ object: UnsafePointer<msgpack_object>, _ path: @autoclosure () -> [any CodingKey]) throws -> Double {
        switch object.pointee.type {
        case MSGPACK_OBJECT_FLOAT32, MSGPACK_OBJECT_FLOAT64: return object.pointee.via.f64
        case MSGPACK_OBJECT_POSITIVE_INTEGER: return Double(object.pointee.via.u64)
        case MSGPACK_OBJECT_NEGATIVE_INTEGER: return Double(object.pointee.via.i64)
        default: throw mismatch(Double.self, object, path(), expected: "float")
        }
    }

    static func integer<Integer: FixedWidthInteger>(
        _ type: Integer.Type, _ object: UnsafePointer<msgpack_object>, _ path: @autoclosure () -> [any CodingKey]
    ) throws -> Integer {
        let result: Integer?
        switch object.pointee.type {
        case MSGPACK_OBJECT_POSITIVE_INTEGER: result = Integer(exactly: object.pointee.via.u64)
        case MSGPACK_OBJECT_NEGATIVE_INTEGER: result = Integer(exactly: object.pointee.via.i64)
        default: throw mismatch(type, object, path(), expected: "an integer")
        }
        guard let result else {
            let value = (try? MessagePackValue(object.pointee)).map { "\($0)" } ?? "the value"
            throw DecodingError.dataCorrupted(DecodingError.Context(codingPath: path(), debugDescription: "\(value) does not fit in \(type)"))
        }
        return result
    }

    /// The bytes of a bin or str object.
    static func bytes(_ object: UnsafePointer<msgpack_object>) -> [UInt8]? {
        switch object.pointee.type {
        case MSGPACK_OBJECT_BIN: MessagePackValue.bytes(object.pointee.via.bin.ptr, Int(object.pointee.via.bin.size))
        case MSGPACK_OBJECT_STR: MessagePackValue.bytes(object.pointee.via.str.ptr, Int(object.pointee.via.str.size))
        default: nil
        }
    }

    static func mismatch(_ type: Any.Type, _ object: UnsafePointer<msgpack_object>, _ path: [any CodingKey], expected: String) -> DecodingError {
        let isNil = object.pointee.type == MSGPACK_OBJECT_NIL
        let context = DecodingError.Context(codingPath: path, debugDescription: "expected \(expected) for \(type), found \(typeName(object))")
        return isNil ? .valueNotFound(type, context) : .typeMismatch(type, context)
    }

    /// The same names as ``MessagePackValue/typeName``.
    static func typeName(_ object: UnsafePointer<msgpack_object>) -> String {
        switch object.pointee.type {
        case MSGPACK_OBJECT_NIL: "nil"
        case MSGPACK_OBJECT_BOOLEAN: "bool"
        case MSGPACK_OBJECT_POSITIVE_INTEGER, MSGPACK_OBJECT_NEGATIVE_INTEGER: "integer"
        case MSGPACK_OBJECT_FLOAT32, MSGPACK_OBJECT_FLOAT64: "float"
        case MSGPACK_OBJECT_STR: "string"
        case MSGPACK_OBJECT_BIN: "binary"
        case MSGPACK_OBJECT_ARRAY: "array"
        case MSGPACK_OBJECT_MAP: "map"
        default: object.pointee.via.ext.type == -1 ? "timestamp" : "ext"
        }
    }

    // MARK: Containers

    /// A key as the tree decoder reads it: text, or an integer matched by its digits.
    static func keyText(_ key: UnsafePointer<msgpack_object>) -> String? {
        switch key.pointee.type {
        case MSGPACK_OBJECT_STR: try? ObjectDecoder.string(key, [])
        case MSGPACK_OBJECT_POSITIVE_INTEGER: String(key.pointee.via.u64)
        case MSGPACK_OBJECT_NEGATIVE_INTEGER: String(key.pointee.via.i64)
        default: nil
        }
    }


    struct KeyedContainer<Key: CodingKey>: KeyedDecodingContainerProtocol {
        let map: msgpack_object_map
        let codingPath: [any CodingKey]
        /// For large maps (a dictionary, say), the position of each key: scanning for every key
        /// would be quadratic. A struct's few fields are found faster by comparing bytes.
        private let index: [String: Int]?

        init(map: msgpack_object_map, codingPath: [any CodingKey]) {
            self.map = map
            self.codingPath = codingPath
            guard map.size > 16 else {
                index = nil
                return
            }
            var index: [String: Int] = [:]
            index.reserveCapacity(Int(map.size))
            for position in 0..<Int(map.size) {
                if let key = withUnsafePointer(to: map.ptr[position].key, ObjectDecoder.keyText) { index[key] = position }
            }
            self.index = index
        }

        var allKeys: [Key] {
            (0..<Int(map.size)).compactMap { index in
                let key = withUnsafePointer(to: map.ptr[index].key) { ObjectDecoder.keyText($0) }
                return key.flatMap(Key.init(stringValue:))
            }
        }

        /// The value for `key`; the last one when a key repeats, as in the tree decoder.
        private func find(_ key: Key) -> UnsafePointer<msgpack_object>? {
            if let index {
                return index[key.stringValue].map { UnsafePointer(map.ptr + $0).pointer(to: \.val)! }
            }
            var name = key.stringValue
            return name.withUTF8 { utf8 -> UnsafePointer<msgpack_object>? in
                for index in stride(from: Int(map.size) - 1, through: 0, by: -1) {
                    let entry = map.ptr + index
                    let candidate = entry.pointer(to: \.key)!
                    if candidate.pointee.type == MSGPACK_OBJECT_STR {
                        let str = candidate.pointee.via.str
                        guard Int(str.size) == utf8.count, utf8.count == 0 || memcmp(str.ptr, utf8.baseAddress!, utf8.count) == 0 else { continue }
                        return UnsafePointer(entry.pointer(to: \.val)!)
                    } else if ObjectDecoder.keyText(candidate) == key.stringValue {
                        return UnsafePointer(entry.pointer(to: \.val)!)
                    }
                }
                return nil
            }
        }

        private func value(for key: Key) throws -> UnsafePointer<msgpack_object> {
            guard let value = find(key) else {
                throw DecodingError.keyNotFound(key, DecodingError.Context(codingPath: codingPath, debugDescription: "no value for key '\(key.stringValue)'"))
            }
            return value
        }

        func contains(_ key: Key) -> Bool { find(key) != nil }
        func decodeNil(forKey key: Key) throws -> Bool { try value(for: key).pointee.type == MSGPACK_OBJECT_NIL }
        func decode<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T {
            let object = try value(for: key)
            let leaf = Leaf(type)
            if leaf != .other { return try ObjectDecoder.leaf(leaf, as: type, object, codingPath + [key]) }
            return try ObjectDecoder(object: object, codingPath: codingPath + [key]).decodeValue(type)
        }
        func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type, forKey key: Key) throws -> KeyedDecodingContainer<NestedKey> {
            try ObjectDecoder(object: try value(for: key), codingPath: codingPath + [key]).container(keyedBy: type)
        }
        func nestedUnkeyedContainer(forKey key: Key) throws -> any UnkeyedDecodingContainer {
            try ObjectDecoder(object: try value(for: key), codingPath: codingPath + [key]).unkeyedContainer()
        }
        func superDecoder() throws -> any Decoder {
            // No "super" key: a nil value, as in the tree decoder.
            guard let key = Key(stringValue: "super"), let object = find(key) else { return TreeDecoder(value: .nil, parentPath: codingPath, key: nil) }
            return ObjectDecoder(object: object, codingPath: codingPath)
        }
        func superDecoder(forKey key: Key) throws -> any Decoder {
            ObjectDecoder(object: try value(for: key), codingPath: codingPath + [key])
        }
    }

    struct UnkeyedContainer: UnkeyedDecodingContainer {
        let array: msgpack_object_array
        let codingPath: [any CodingKey]
        var currentIndex = 0
        var count: Int? { Int(array.size) }
        var isAtEnd: Bool { currentIndex >= Int(array.size) }

        private mutating func next(_ type: Any.Type) throws -> UnsafePointer<msgpack_object> {
            guard !isAtEnd else {
                throw DecodingError.valueNotFound(type, DecodingError.Context(
                    codingPath: codingPath + [IndexKey(currentIndex)], debugDescription: "the array has only \(array.size) elements"))
            }
            defer { currentIndex += 1 }
            return UnsafePointer(array.ptr + currentIndex)
        }

        mutating func decodeNil() throws -> Bool {
            guard !isAtEnd, array.ptr[currentIndex].type == MSGPACK_OBJECT_NIL else { return false }
            currentIndex += 1
            return true
        }
        mutating func decode<T: Decodable>(_ type: T.Type) throws -> T {
            let index = currentIndex
            let object = try next(type)
            let leaf = Leaf(type)
            if leaf != .other { return try ObjectDecoder.leaf(leaf, as: type, object, codingPath + [IndexKey(index)]) }
            return try ObjectDecoder(object: object, codingPath: codingPath + [IndexKey(index)]).decodeValue(type)
        }
        mutating func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type) throws -> KeyedDecodingContainer<NestedKey> {
            let index = currentIndex
            return try ObjectDecoder(object: try next([String: MessagePackValue].self), codingPath: codingPath + [IndexKey(index)]).container(keyedBy: type)
        }
        mutating func nestedUnkeyedContainer() throws -> any UnkeyedDecodingContainer {
            let index = currentIndex
            return try ObjectDecoder(object: try next([MessagePackValue].self), codingPath: codingPath + [IndexKey(index)]).unkeyedContainer()
        }
        mutating func superDecoder() throws -> any Decoder {
            let index = currentIndex
            return ObjectDecoder(object: try next(MessagePackValue.self), codingPath: codingPath + [IndexKey(index)])
        }
    }

    struct SingleValueContainer: SingleValueDecodingContainer {
        let decoder: ObjectDecoder
        var codingPath: [any CodingKey] { decoder.codingPath }
        private var object: UnsafePointer<msgpack_object> { decoder.object }

        func decodeNil() -> Bool { object.pointee.type == MSGPACK_OBJECT_NIL }
        func decode(_ type: Bool.Type) throws -> Bool { try ObjectDecoder.bool(object, codingPath) }
        func decode(_ type: String.Type) throws -> String { try ObjectDecoder.string(object, codingPath) }
        func decode(_ type: Double.Type) throws -> Double { try ObjectDecoder.double(object, codingPath) }
        func decode(_ type: Float.Type) throws -> Float { Float(try ObjectDecoder.double(object, codingPath)) }
        func decode(_ type: Int.Type) throws -> Int { try ObjectDecoder.integer(type, object, codingPath) }
        func decode(_ type: Int8.Type) throws -> Int8 { try ObjectDecoder.integer(type, object, codingPath) }
        func decode(_ type: Int16.Type) throws -> Int16 { try ObjectDecoder.integer(type, object, codingPath) }
        func decode(_ type: Int32.Type) throws -> Int32 { try ObjectDecoder.integer(type, object, codingPath) }
        func decode(_ type: Int64.Type) throws -> Int64 { try ObjectDecoder.integer(type, object, codingPath) }
        func decode(_ type: UInt.Type) throws -> UInt { try ObjectDecoder.integer(type, object, codingPath) }
        func decode(_ type: UInt8.Type) throws -> UInt8 { try ObjectDecoder.integer(type, object, codingPath) }
        func decode(_ type: UInt16.Type) throws -> UInt16 { try ObjectDecoder.integer(type, object, codingPath) }
        func decode(_ type: UInt32.Type) throws -> UInt32 { try ObjectDecoder.integer(type, object, codingPath) }
        func decode(_ type: UInt64.Type) throws -> UInt64 { try ObjectDecoder.integer(type, object, codingPath) }
        func decode<T: Decodable>(_ type: T.Type) throws -> T { try decoder.decodeValue(type) }
    }
}
