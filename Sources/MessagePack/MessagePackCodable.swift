import CMsgPack

/// A type that writes its own MessagePack form, which ``MessagePackEncoder`` uses instead of its
/// `Encodable` conformance wherever a value of the type is encoded (alone, or inside any other
/// value): no `Codable` containers, several times faster.
///
/// `@MessagePackCodable` (module `MessagePackMacros`) generates this conformance; written by hand,
/// it should produce what the type's `Encodable` conformance produces, so that peers using plain
/// `Codable` read it:
///
/// ```swift
/// struct Point: MessagePackEncodable {
///     var x: Int, y: Int
///     func encode(to writer: inout MessagePackWriter) throws {
///         writer.writeMapHeader(count: 2)
///         writer.write(key: "x")
///         try writer.encode(x)
///         writer.write(key: "y")
///         try writer.encode(y)
///     }
/// }
/// ```
public protocol MessagePackEncodable: Encodable {
    /// Appends the value's MessagePack form to `writer`: exactly one value.
    func encode(to writer: inout MessagePackWriter) throws
}

/// A type that reads itself from MessagePack, which ``MessagePackDecoder`` uses instead of its
/// `Decodable` conformance wherever a value of the type is decoded.
///
/// `@MessagePackCodable` (module `MessagePackMacros`) generates this conformance. By hand:
///
/// ```swift
/// extension Point: MessagePackDecodable {
///     init(from object: MessagePackObject) throws {
///         var x: Int?, y: Int?
///         for (key, value) in try object.fields(of: Point.self) {
///             switch key {
///             case "x": x = try value.decode(Int.self)
///             case "y": y = try value.decode(Int.self)
///             default: continue
///             }
///         }
///         self.x = try object.required(x, forKey: "x")
///         self.y = try object.required(y, forKey: "y")
///     }
/// }
/// ```
///
/// Errors thrown here are relative to `object`; the decoder adds the path that led to it.
public protocol MessagePackDecodable: Decodable {
    /// Reads a value from `object`, or throws a `DecodingError`.
    init(from object: MessagePackObject) throws
}

/// A type that is both ``MessagePackEncodable`` and ``MessagePackDecodable``.
public typealias MessagePackCodable = MessagePackEncodable & MessagePackDecodable

extension MessagePackEncodable {
    /// Encodes `value`, which is of this type, with this conformance (for coders that looked the
    /// conformance up once, through the type).
    static func encode<Value>(_ value: Value, asSelfTo writer: inout MessagePackWriter) throws {
        try unsafeBitCast(value, to: Self.self).encode(to: &writer)
    }
}

extension MessagePackDecodable {
    /// Decodes a value of this type as `type`, which is this type.
    static func decode<Value>(_ type: Value.Type, asSelfFrom object: MessagePackObject) throws -> Value {
        unsafeBitCast(try Self(from: object), to: Value.self)
    }
}

// MARK: - Writing, for MessagePackEncodable conformances

extension MessagePackWriter {
    /// Appends a map header: `count` key-value pairs must follow.
    public mutating func writeMapHeader(count: Int) {
        msgpack_pack_map(packer, count)
    }

    /// Appends nil.
    public mutating func writeNil() {
        msgpack_pack_nil(packer)
    }

    /// Appends a map key (a str).
    public mutating func write(key: StaticString) {
        key.withUTF8Buffer { utf8 in
            msgpack_pack_str(packer, utf8.count)
            msgpack_pack_str_body(packer, utf8.baseAddress, utf8.count)
        }
    }

    /// Appends an integer in its smallest form.
    public mutating func encode(_ value: Int) throws { msgpack_pack_int64(packer, Int64(value)) }
    /// Appends an integer in its smallest form.
    public mutating func encode(_ value: Int8) throws { msgpack_pack_int64(packer, Int64(value)) }
    /// Appends an integer in its smallest form.
    public mutating func encode(_ value: Int16) throws { msgpack_pack_int64(packer, Int64(value)) }
    /// Appends an integer in its smallest form.
    public mutating func encode(_ value: Int32) throws { msgpack_pack_int64(packer, Int64(value)) }
    /// Appends an integer in its smallest form.
    public mutating func encode(_ value: Int64) throws { msgpack_pack_int64(packer, value) }
    /// Appends an integer in its smallest form.
    public mutating func encode(_ value: UInt) throws { msgpack_pack_uint64(packer, UInt64(value)) }
    /// Appends an integer in its smallest form.
    public mutating func encode(_ value: UInt8) throws { msgpack_pack_uint64(packer, UInt64(value)) }
    /// Appends an integer in its smallest form.
    public mutating func encode(_ value: UInt16) throws { msgpack_pack_uint64(packer, UInt64(value)) }
    /// Appends an integer in its smallest form.
    public mutating func encode(_ value: UInt32) throws { msgpack_pack_uint64(packer, UInt64(value)) }
    /// Appends an integer in its smallest form.
    public mutating func encode(_ value: UInt64) throws { msgpack_pack_uint64(packer, value) }
    /// Appends a float 64.
    public mutating func encode(_ value: Double) throws { msgpack_pack_double(packer, value) }
    /// Appends a float 32.
    public mutating func encode(_ value: Float) throws { msgpack_pack_float(packer, value) }
    /// Appends true or false.
    public mutating func encode(_ value: Bool) throws { _ = value ? msgpack_pack_true(packer) : msgpack_pack_false(packer) }
    /// Appends a str.
    public mutating func encode(_ value: String) throws { Self.pack(value, packer) }
    /// Appends a bin.
    public mutating func encode(_ value: [UInt8]) throws { Self.pack(value, packer) }

    /// Appends a value that writes its own form.
    public mutating func encode<Value: MessagePackEncodable>(_ value: Value) throws {
        try value.encode(to: &self)
    }

    /// Appends nil, or the value.
    public mutating func encode<Wrapped: Encodable>(_ value: Wrapped?) throws {
        if let value { try encode(value) } else { msgpack_pack_nil(packer) }
    }

    /// Appends an array, as ``MessagePackEncoder`` encodes it (`[UInt8]` as bin).
    public mutating func encode<Element: Encodable>(_ array: [Element]) throws {
        if StreamingEncoder.isLeaf(Element.self) {
            msgpack_pack_array(packer, array.count)
            for element in array { _ = StreamingEncoder.writeLeaf(element, packer) }
        } else if case .own(let type?, _) = SpecialCoding.of(Element.self) {
            msgpack_pack_array(packer, array.count)
            for element in array { try type.encode(element, asSelfTo: &self) }
        } else {
            try encodeAsCodable(array)
        }
    }

    /// Appends a map, as ``MessagePackEncoder`` encodes it.
    public mutating func encode<Value: Encodable>(_ dictionary: [String: Value]) throws {
        if StreamingEncoder.isLeaf(Value.self) {
            msgpack_pack_map(packer, dictionary.count)
            for (key, value) in dictionary {
                Self.pack(key, packer)
                _ = StreamingEncoder.writeLeaf(value, packer)
            }
        } else if case .own(let type?, _) = SpecialCoding.of(Value.self) {
            msgpack_pack_map(packer, dictionary.count)
            for (key, value) in dictionary {
                Self.pack(key, packer)
                try type.encode(value, asSelfTo: &self)
            }
        } else {
            try encodeAsCodable(dictionary)
        }
    }

    /// Appends any value, as ``MessagePackEncoder`` encodes it.
    public mutating func encode<Value: Encodable>(_ value: Value) throws {
        if StreamingEncoder.writeLeaf(value, packer) { return }
        let kind = SpecialCoding.of(Value.self)
        if case .own(let type?, _) = kind {
            try type.encode(value, asSelfTo: &self)
        } else {
            try encodeAsCodable(value, kind: kind)
        }
    }

    /// Encodes through `Codable`, keeping the values written in their own form (ForkRPC looks for
    /// descriptors among them).
    private mutating func encodeAsCodable<Value: Encodable>(_ value: Value, kind: SpecialCoding? = nil) throws {
        var direct: [MessagePackValue] = []
        try MessagePackEncoder().encodeStreaming(value, kind: kind ?? SpecialCoding.of(Value.self), into: &self, directValues: &direct)
        directValues += direct
    }
}

// MARK: - Reading, for MessagePackDecodable conformances

extension MessagePackObject {
    /// The key-value pairs of a map, for a conformance that decodes `type`; throws if the value is
    /// not a map.
    public func fields(of type: Any.Type) throws -> Fields {
        guard pointer.pointee.type == MSGPACK_OBJECT_MAP else {
            throw ObjectDecoder.mismatch(type, pointer, [], expected: "a map")
        }
        return Fields(map: pointer.pointee.via.map)
    }

    /// The elements of an array, for a conformance that decodes `type`; throws if the value is
    /// not an array.
    public func elements(of type: Any.Type) throws -> Elements {
        guard pointer.pointee.type == MSGPACK_OBJECT_ARRAY else {
            throw ObjectDecoder.mismatch(type, pointer, [], expected: "an array")
        }
        return Elements(array: pointer.pointee.via.array)
    }

    /// `value`, or `DecodingError.keyNotFound` for `key` if it is nil (a required field that was
    /// not in the map).
    public func required<Value>(_ value: Value?, forKey key: StaticString) throws -> Value {
        guard let value else {
            throw DecodingError.keyNotFound(TextKey("\(key)"), DecodingError.Context(codingPath: [], debugDescription: "no value for key '\(key)'"))
        }
        return value
    }

    /// Decodes a value that reads itself.
    public func decode<Value: MessagePackDecodable>(_ type: Value.Type) throws -> Value {
        do {
            return try Value(from: self)
        } catch let error as DecodingError {
            throw error.under(path)
        }
    }

    /// Decodes an array, as ``MessagePackDecoder`` does.
    public func decode<Element: Decodable>(_ type: [Element].Type) throws -> [Element] {
        guard pointer.pointee.type == MSGPACK_OBJECT_ARRAY, Element.self != UInt8.self else {
            return try ObjectDecoder(object: pointer, codingPath: path).decodeValue(type)
        }
        let array = pointer.pointee.via.array
        var elements: [Element] = []
        elements.reserveCapacity(Int(array.size))
        for index in 0..<Int(array.size) {
            elements.append(try MessagePackObject(UnsafePointer(array.ptr + index)).decodeAny(Element.self, path: path + [IndexKey(index)]))
        }
        return elements
    }

    /// Decodes a map with text keys, as ``MessagePackDecoder`` does.
    public func decode<Value: Decodable>(_ type: [String: Value].Type) throws -> [String: Value] {
        guard pointer.pointee.type == MSGPACK_OBJECT_MAP else {
            return try ObjectDecoder(object: pointer, codingPath: path).decodeValue(type)
        }
        var dictionary: [String: Value] = [:]
        dictionary.reserveCapacity(Int(pointer.pointee.via.map.size))
        for (key, value) in Fields(map: pointer.pointee.via.map) {
            guard let text = key.stringValue else { continue }
            dictionary[text] = try value.decodeAny(Value.self, path: path + [TextKey(text)])
        }
        return dictionary
    }

    /// The key-value pairs of a map, in the order they were written.
    public struct Fields: Sequence, IteratorProtocol {
        let map: msgpack_object_map
        var index = 0

        /// The next pair.
        public mutating func next() -> (key: MessagePackKey, value: MessagePackObject)? {
            guard index < Int(map.size) else { return nil }
            defer { index += 1 }
            let entry = UnsafePointer(map.ptr + index)
            let key = entry.pointer(to: \.key)!
            return (MessagePackKey(pointer: key), MessagePackObject(entry.pointer(to: \.val)!, at: .key(key)))
        }
    }

    /// The elements of an array, by position.
    public struct Elements {
        let array: msgpack_object_array

        /// How many elements there are.
        public var count: Int { Int(array.size) }

        /// Element `index`, or `DecodingError.valueNotFound` if the array is shorter.
        public func element(_ index: Int) throws -> MessagePackObject {
            guard index < count else {
                throw DecodingError.valueNotFound(Any.self, DecodingError.Context(
                    codingPath: [IndexKey(index)], debugDescription: "the array has only \(count) elements"))
            }
            return MessagePackObject(UnsafePointer(array.ptr + index), at: .index(index))
        }

        /// Element `index`, or nil if it is nil or the array is shorter.
        public func elementIfPresent(_ index: Int) -> MessagePackObject? {
            guard index < count, array.ptr[index].type != MSGPACK_OBJECT_NIL else { return nil }
            return MessagePackObject(UnsafePointer(array.ptr + index), at: .index(index))
        }
    }
}

/// A map key as a ``MessagePackDecodable`` conformance sees it: matched against string literals
/// in a `switch` without making a `String`. An integer key matches its digits, as with `Codable`.
public struct MessagePackKey {
    let pointer: UnsafePointer<msgpack_object>

    /// The key's text (an integer key's digits), or nil for a key that is neither.
    public var stringValue: String? { ObjectDecoder.keyText(pointer) }

    /// Whether `key` is `pattern`.
    public static func ~= (pattern: StaticString, key: MessagePackKey) -> Bool {
        pattern.withUTF8Buffer { utf8 in
            let object = key.pointer.pointee
            if object.type == MSGPACK_OBJECT_STR {
                return Int(object.via.str.size) == utf8.count && (utf8.isEmpty || memcmp(object.via.str.ptr, utf8.baseAddress!, utf8.count) == 0)
            }
            return key.stringValue.map { $0.utf8.elementsEqual(utf8) } ?? false
        }
    }
}

extension DecodingError {
    /// The same error, for a value found at `prefix`.
    func under(_ prefix: [any CodingKey]) -> DecodingError {
        guard !prefix.isEmpty else { return self }
        func moved(_ context: Context) -> Context {
            Context(codingPath: prefix + context.codingPath, debugDescription: context.debugDescription, underlyingError: context.underlyingError)
        }
        switch self {
        case .typeMismatch(let type, let context): return .typeMismatch(type, moved(context))
        case .valueNotFound(let type, let context): return .valueNotFound(type, moved(context))
        case .keyNotFound(let key, let context): return .keyNotFound(key, moved(context))
        case .dataCorrupted(let context): return .dataCorrupted(moved(context))
        @unknown default: return self
        }
    }
}
