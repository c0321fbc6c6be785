/// Encodes `Encodable` values as MessagePack.
///
/// Structs and classes become maps keyed by their coding keys; arrays become arrays; `[UInt8]` (and
/// any ``MessagePackBinaryConvertible`` type, such as Foundation's `Data` with ForkRPC) becomes bin;
/// integers take their smallest encoding.
///
/// ```swift
/// struct Point: Codable { var x: Int; var y: Int }
/// let bytes = try MessagePackEncoder().encode(Point(x: 1, y: 2))   // 82 a1 78 01 a1 79 02
/// ```
public struct MessagePackEncoder: Sendable {
    /// Creates an encoder.
    public init() {}

    /// Encodes `value` to MessagePack bytes.
    public func encode<Value: Encodable>(_ value: Value) throws -> [UInt8] {
        try encodeValue(value).encoded()
    }

    /// Encodes `value` to a ``MessagePackValue`` tree (for embedding in a larger message).
    public func encodeValue<Value: Encodable>(_ value: Value) throws -> MessagePackValue {
        if let direct = Self.direct(value) { return direct }
        let root = EncodingNode()
        try value.encode(to: TreeEncoder(node: root, codingPath: []))
        return root.value
    }

    /// Values whose encoding is not what their `Encodable` conformance would produce.
    static func direct(_ value: Any) -> MessagePackValue? {
        switch value {
        case let value as MessagePackValue: return value
        case let bytes as MessagePackBinaryConvertible: return .binary(bytes.messagePackBytes)
        case let custom as MessagePackValueConvertible: return custom.messagePackValue
        default: return nil
        }
    }
}

/// A type with its own MessagePack form (an ext type, say), used by ``MessagePackEncoder`` and
/// ``MessagePackDecoder`` instead of its `Codable` conformance.
public protocol MessagePackValueConvertible {
    /// The value's MessagePack form.
    var messagePackValue: MessagePackValue { get }
    /// Reads the value back, or throws if `messagePackValue` is not its form.
    init(messagePackValue: MessagePackValue) throws
}

/// A type encoded as MessagePack bin rather than as an array of numbers.
public protocol MessagePackBinaryConvertible {
    /// The bytes to encode.
    var messagePackBytes: [UInt8] { get }
    /// Creates a value from decoded bytes.
    init(messagePackBytes: [UInt8])
}

extension Array: MessagePackBinaryConvertible where Element == UInt8 {
    /// The array itself.
    public var messagePackBytes: [UInt8] { self }
    /// The bytes themselves.
    public init(messagePackBytes: [UInt8]) { self = messagePackBytes }
}

/// One node of the tree being built; containers hold their children by reference until the end.
final class EncodingNode {
    enum Content {
        case unset
        case value(MessagePackValue)
        case array([EncodingNode])
        case map([(String, EncodingNode)])
    }

    var content = Content.unset

    var value: MessagePackValue {
        switch content {
        case .unset: return .nil
        case .value(let value): return value
        case .array(let nodes): return .array(nodes.map(\.value))
        case .map(let pairs): return .map(pairs.map { MessagePackPair(.string($0.0), $0.1.value) })
        }
    }

    func appendElement() -> EncodingNode {
        let node = EncodingNode()
        if case .array(var nodes) = content {
            nodes.append(node)
            content = .array(nodes)
        } else {
            content = .array([node])
        }
        return node
    }

    func child(forKey key: String) -> EncodingNode {
        var pairs: [(String, EncodingNode)] = []
        if case .map(let existing) = content { pairs = existing }
        if let found = pairs.first(where: { $0.0 == key }) { return found.1 }
        let node = EncodingNode()
        pairs.append((key, node))
        content = .map(pairs)
        return node
    }
}

struct TreeEncoder: Encoder {
    let node: EncodingNode
    let codingPath: [any CodingKey]
    var userInfo: [CodingUserInfoKey: Any] { [:] }

    func container<Key: CodingKey>(keyedBy type: Key.Type) -> KeyedEncodingContainer<Key> {
        if case .map = node.content {} else { node.content = .map([]) }
        return KeyedEncodingContainer(KeyedContainer<Key>(node: node, codingPath: codingPath))
    }

    func unkeyedContainer() -> any UnkeyedEncodingContainer {
        if case .array = node.content {} else { node.content = .array([]) }
        return UnkeyedContainer(node: node, codingPath: codingPath)
    }

    func singleValueContainer() -> any SingleValueEncodingContainer {
        SingleValueContainer(node: node, codingPath: codingPath)
    }

    /// Encodes a nested value into `node`.
    static func encode<Value: Encodable>(_ value: Value, into node: EncodingNode, codingPath: [any CodingKey]) throws {
        if let direct = MessagePackEncoder.direct(value) {
            node.content = .value(direct)
        } else {
            try value.encode(to: TreeEncoder(node: node, codingPath: codingPath))
        }
    }

    struct KeyedContainer<Key: CodingKey>: KeyedEncodingContainerProtocol {
        let node: EncodingNode
        let codingPath: [any CodingKey]

        mutating func encodeNil(forKey key: Key) throws { node.child(forKey: key.stringValue).content = .value(.nil) }
        mutating func encode<T: Encodable>(_ value: T, forKey key: Key) throws {
            try TreeEncoder.encode(value, into: node.child(forKey: key.stringValue), codingPath: codingPath + [key])
        }
        mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type, forKey key: Key) -> KeyedEncodingContainer<NestedKey> {
            TreeEncoder(node: node.child(forKey: key.stringValue), codingPath: codingPath + [key]).container(keyedBy: keyType)
        }
        mutating func nestedUnkeyedContainer(forKey key: Key) -> any UnkeyedEncodingContainer {
            TreeEncoder(node: node.child(forKey: key.stringValue), codingPath: codingPath + [key]).unkeyedContainer()
        }
        mutating func superEncoder() -> any Encoder {
            TreeEncoder(node: node.child(forKey: "super"), codingPath: codingPath)
        }
        mutating func superEncoder(forKey key: Key) -> any Encoder {
            TreeEncoder(node: node.child(forKey: key.stringValue), codingPath: codingPath + [key])
        }
    }

    struct UnkeyedContainer: UnkeyedEncodingContainer {
        let node: EncodingNode
        let codingPath: [any CodingKey]
        var count: Int {
            if case .array(let nodes) = node.content { return nodes.count }
            return 0
        }

        private var nextPath: [any CodingKey] { codingPath + [IndexKey(count)] }

        mutating func encodeNil() throws { node.appendElement().content = .value(.nil) }
        mutating func encode<T: Encodable>(_ value: T) throws {
            let path = nextPath
            try TreeEncoder.encode(value, into: node.appendElement(), codingPath: path)
        }
        mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type) -> KeyedEncodingContainer<NestedKey> {
            let path = nextPath
            return TreeEncoder(node: node.appendElement(), codingPath: path).container(keyedBy: keyType)
        }
        mutating func nestedUnkeyedContainer() -> any UnkeyedEncodingContainer {
            let path = nextPath
            return TreeEncoder(node: node.appendElement(), codingPath: path).unkeyedContainer()
        }
        mutating func superEncoder() -> any Encoder {
            let path = nextPath
            return TreeEncoder(node: node.appendElement(), codingPath: path)
        }
    }

    struct SingleValueContainer: SingleValueEncodingContainer {
        let node: EncodingNode
        let codingPath: [any CodingKey]

        private func set(_ value: MessagePackValue) { node.content = .value(value) }

        mutating func encodeNil() throws { set(.nil) }
        mutating func encode(_ value: Bool) throws { set(.bool(value)) }
        mutating func encode(_ value: String) throws { set(.string(value)) }
        mutating func encode(_ value: Double) throws { set(.float64(value)) }
        mutating func encode(_ value: Float) throws { set(.float32(value)) }
        mutating func encode(_ value: Int) throws { set(.int64(Int64(value))) }
        mutating func encode(_ value: Int8) throws { set(.int64(Int64(value))) }
        mutating func encode(_ value: Int16) throws { set(.int64(Int64(value))) }
        mutating func encode(_ value: Int32) throws { set(.int64(Int64(value))) }
        mutating func encode(_ value: Int64) throws { set(.int64(value)) }
        mutating func encode(_ value: UInt) throws { set(.uint(UInt64(value))) }
        mutating func encode(_ value: UInt8) throws { set(.uint(UInt64(value))) }
        mutating func encode(_ value: UInt16) throws { set(.uint(UInt64(value))) }
        mutating func encode(_ value: UInt32) throws { set(.uint(UInt64(value))) }
        mutating func encode(_ value: UInt64) throws { set(.uint(value)) }
        mutating func encode<T: Encodable>(_ value: T) throws {
            try TreeEncoder.encode(value, into: node, codingPath: codingPath)
        }
    }
}

/// The coding key of an array element.
struct IndexKey: CodingKey {
    let intValue: Int?
    var stringValue: String { "Index \(intValue ?? 0)" }
    init(_ index: Int) { intValue = index }
    init?(stringValue: String) { return nil }
    init?(intValue: Int) { self.intValue = intValue }
}

extension MessagePackValue {
    /// A signed integer in its smallest form: non-negative values as unsigned, as encoders do.
    public static func int64(_ value: Int64) -> MessagePackValue {
        value < 0 ? .int(value) : .uint(UInt64(value))
    }
}
