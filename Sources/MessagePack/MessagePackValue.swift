/// One MessagePack value, for data whose shape is not known at compile time.
///
/// Integers keep the signedness they were read with: a non-negative integer always decodes as
/// ``uint(_:)`` and a negative one as ``int(_:)``, as the format itself does. Maps keep their pairs in
/// wire order, so that a value written out again produces the same bytes.
///
/// ```swift
/// let request: MessagePackValue = [0, 1, "square", [12345]]
/// let bytes = request.encoded()          // 94 00 01 a6 73 71 75 61 72 65 91 cd 30 39
/// let back = try MessagePackValue(decoding: bytes)
/// ```
public enum MessagePackValue: Sendable, Hashable {
    /// The nil value.
    case `nil`
    /// A boolean.
    case bool(Bool)
    /// A negative integer (or any integer the writer chose to store as signed).
    case int(Int64)
    /// A non-negative integer.
    case uint(UInt64)
    /// A 32-bit float.
    case float32(Float)
    /// A 64-bit float.
    case float64(Double)
    /// UTF-8 text (the str family).
    case string(String)
    /// Bytes (the bin family).
    case binary([UInt8])
    /// An array of values.
    case array([MessagePackValue])
    /// Key-value pairs in wire order; keys may be of any type.
    case map([MessagePackPair])
    /// An application-defined extension type (negative types other than -1 are reserved by the spec).
    case extended(type: Int8, data: [UInt8])
    /// The spec's timestamp extension (type -1): seconds since the epoch and nanoseconds.
    case timestamp(seconds: Int64, nanoseconds: UInt32)
}

/// One key-value pair of a MessagePack map.
public struct MessagePackPair: Sendable, Hashable {
    /// The key.
    public var key: MessagePackValue
    /// The value.
    public var value: MessagePackValue

    /// Creates a pair.
    public init(_ key: MessagePackValue, _ value: MessagePackValue) {
        self.key = key
        self.value = value
    }
}

extension MessagePackValue {
    /// The value as a signed integer, if it is an integer that fits.
    public var integerValue: Int? {
        switch self {
        case .int(let value): return Int(exactly: value)
        case .uint(let value): return Int(exactly: value)
        default: return nil
        }
    }

    /// The value as text, if it is a string (or a binary that is valid UTF-8, as some peers send text).
    public var stringValue: String? {
        switch self {
        case .string(let value): return value
        case .binary(let bytes): return String(validating: bytes, as: UTF8.self)
        default: return nil
        }
    }

    /// The value as bytes, if it is a binary or a string.
    public var bytesValue: [UInt8]? {
        switch self {
        case .binary(let bytes): return bytes
        case .string(let value): return Array(value.utf8)
        default: return nil
        }
    }

    /// The elements, if the value is an array.
    public var arrayValue: [MessagePackValue]? {
        if case .array(let elements) = self { return elements }
        return nil
    }

    /// A short name of the value's type, for error messages.
    public var typeName: String {
        switch self {
        case .nil: "nil"
        case .bool: "bool"
        case .int, .uint: "integer"
        case .float32, .float64: "float"
        case .string: "string"
        case .binary: "binary"
        case .array: "array"
        case .map: "map"
        case .extended: "ext"
        case .timestamp: "timestamp"
        }
    }
}

extension MessagePackValue: ExpressibleByNilLiteral {
    /// Creates `nil`.
    public init(nilLiteral: ()) { self = .nil }
}

extension MessagePackValue: ExpressibleByBooleanLiteral {
    /// Creates a boolean.
    public init(booleanLiteral value: Bool) { self = .bool(value) }
}

extension MessagePackValue: ExpressibleByIntegerLiteral {
    /// Creates an integer, stored as unsigned when it is not negative (as encoders do).
    public init(integerLiteral value: Int64) {
        self = value < 0 ? .int(value) : .uint(UInt64(value))
    }
}

extension MessagePackValue: ExpressibleByFloatLiteral {
    /// Creates a 64-bit float.
    public init(floatLiteral value: Double) { self = .float64(value) }
}

extension MessagePackValue: ExpressibleByStringLiteral {
    /// Creates a string.
    public init(stringLiteral value: String) { self = .string(value) }
}

extension MessagePackValue: ExpressibleByArrayLiteral {
    /// Creates an array.
    public init(arrayLiteral elements: MessagePackValue...) { self = .array(elements) }
}

extension MessagePackValue: ExpressibleByDictionaryLiteral {
    /// Creates a map with the pairs in the order written.
    public init(dictionaryLiteral elements: (MessagePackValue, MessagePackValue)...) {
        self = .map(elements.map { MessagePackPair($0.0, $0.1) })
    }
}
