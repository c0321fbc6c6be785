import Synchronization

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
        var writer = MessagePackWriter(reusingSpare: ())
        try encode(value, into: &writer)
        return writer.bytes
    }

    /// Appends `value`'s encoding to `writer` (after a message header written by hand, say).
    public func encode<Value: Encodable>(_ value: Value, into writer: inout MessagePackWriter) throws {
        var ignored: [MessagePackValue] = []
        try encode(value, into: &writer, directValues: &ignored)
    }

    /// Appends `value`'s encoding to `writer`, and to `directValues` the parts that were written in
    /// their own MessagePack form (``MessagePackValueConvertible`` values, ``MessagePackValue``s), so
    /// that ForkRPC can find the descriptors a message carries without a second pass.
    package func encode<Value: Encodable>(_ value: Value, into writer: inout MessagePackWriter, directValues: inout [MessagePackValue]) throws {
        // A leaf needs no encoder state: the common result of a small remote call.
        if StreamingEncoder.writeLeaf(value, writer.packer) { return }
        let kind = SpecialCoding.of(Value.self)
        guard case .own(let encoding?, _) = kind else {
            return try encodeStreaming(value, kind: kind, into: &writer, directValues: &directValues)
        }
        // A type that writes itself; what it wrote in their own form collects in the writer.
        let mark = writer.directValues.count
        try encoding.encode(value, asSelfTo: &writer)
        if writer.directValues.count > mark {
            directValues += writer.directValues[mark...]
            writer.directValues.removeSubrange(mark...)
        }
    }

    /// Encodes a value of a type that does not write itself through `Codable`, straight into the
    /// packer when it can.
    func encodeStreaming<Value: Encodable>(
        _ value: Value, kind: SpecialCoding, into writer: inout MessagePackWriter, directValues: inout [MessagePackValue]
    ) throws {
        let start = writer.count
        let streaming = StreamingEncoder(writer)
        do {
            try streaming.encode(value, kind: kind, codingPath: [])
            if !streaming.failed {
                directValues += streaming.directValues
                return
            }
        } catch is StreamingEncoder.NotStreamable {}
        // Written out of order: build the tree instead.
        writer.truncate(to: start)
        let tree = try encodeValue(value)
        writer.write(tree)
        directValues.append(tree)
    }

    /// Encodes `value` to a ``MessagePackValue`` tree (for embedding in a larger message).
    public func encodeValue<Value: Encodable>(_ value: Value) throws -> MessagePackValue {
        if let direct = try Self.direct(value) { return direct }
        let root = EncodingNode()
        try value.encode(to: TreeEncoder(node: root, parentPath: [], key: nil))
        return root.value
    }

    /// Values whose encoding is not what their `Encodable` conformance would produce.
    static func direct<Value>(_ value: Value) throws -> MessagePackValue? {
        try direct(value, as: SpecialCoding.of(Value.self))
    }

    /// The same, for a caller that has already looked the type up.
    static func direct<Value>(_ value: Value, as kind: SpecialCoding) throws -> MessagePackValue? {
        switch kind {
        case .plain, .own(nil, _): return nil
        case .own(let encoding?, _):
            // A type that writes itself: its own form, as a tree.
            var writer = MessagePackWriter()
            try encoding.encode(value, asSelfTo: &writer)
            return try MessagePackObject.withObject(in: writer.bytes) { try $0.value() }
        case .value: return (value as! MessagePackValue)
        case .binary: return .binary((value as! MessagePackBinaryConvertible).messagePackBytes)
        case .custom: return (value as! MessagePackValueConvertible).messagePackValue
        }
    }
}

/// Which types the coders treat specially, looked up once per type: asking the runtime whether a
/// type conforms to a protocol on every value costs more than coding the value.
enum SpecialCoding: @unchecked Sendable {  // the metatypes of `own` are immutable
    case plain, value, binary, custom
    /// A type that writes itself (``MessagePackEncodable``), reads itself (``MessagePackDecodable``), or both.
    case own(encoding: (any MessagePackEncodable.Type)?, decoding: (any MessagePackDecodable.Type)?)

    /// The types seen so far, read without a lock: every value of a struct type looks itself up
    /// here, from every thread that codes at once (with a lock, two threads coding took turns in
    /// the kernel). Each new type publishes a new table; the old ones are kept, never freed, so a
    /// reader can never hold a freed one (there are as many as types coded: a few dozen).
    private static let published = Atomic<UInt>(0)  // the current table's address
    private static let writers = Mutex<Void>(())

    private final class Table: Sendable {
        let kinds: [ObjectIdentifier: SpecialCoding]
        init(_ kinds: [ObjectIdentifier: SpecialCoding]) { self.kinds = kinds }
    }

    private static var table: Table? {
        UnsafeRawPointer(bitPattern: published.load(ordering: .acquiring)).map { Unmanaged<Table>.fromOpaque($0).takeUnretainedValue() }
    }

    static func of(_ type: Any.Type) -> SpecialCoding {
        let key = ObjectIdentifier(type)
        if let cached = table?.kinds[key] { return cached }
        let kind: SpecialCoding =
            type == MessagePackValue.self ? .value
            : type is MessagePackBinaryConvertible.Type ? .binary
            : type is MessagePackValueConvertible.Type ? .custom
            : type is MessagePackEncodable.Type || type is MessagePackDecodable.Type
            ? .own(encoding: type as? MessagePackEncodable.Type, decoding: type as? MessagePackDecodable.Type)
            : .plain
        writers.withLock { _ in
            var kinds = table?.kinds ?? [:]
            guard kinds[key] == nil else { return }
            kinds[key] = kind
            published.store(UInt(bitPattern: Unmanaged.passRetained(Table(kinds)).toOpaque()), ordering: .releasing)
        }
        return kind
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
        case array
        case map
    }

    var content = Content.unset
    // Children live outside the enum: appending to an array held in an enum payload copies it
    // every time, which made encoding a large array quadratic.
    private var elements: [EncodingNode] = []
    private var pairs: [(String, EncodingNode)] = []
    private var keyIndex: [String: Int] = [:]

    var elementCount: Int { elements.count }

    var value: MessagePackValue {
        switch content {
        case .unset: return .nil
        case .value(let value): return value
        case .array: return .array(elements.map(\.value))
        case .map: return .map(pairs.map { MessagePackPair(.string($0.0), $0.1.value) })
        }
    }

    func appendElement() -> EncodingNode {
        if case .array = content {} else { content = .array }
        let node = EncodingNode()
        elements.append(node)
        return node
    }

    func child(forKey key: String) -> EncodingNode {
        if case .map = content {} else { content = .map }
        if let index = keyIndex[key] { return pairs[index].1 }
        let node = EncodingNode()
        keyIndex[key] = pairs.count
        pairs.append((key, node))
        return node
    }
}

struct TreeEncoder: Encoder {
    let node: EncodingNode
    // As in the decoder, the path is only put together when asked for.
    let parentPath: [any CodingKey]
    let key: (any CodingKey)?
    var codingPath: [any CodingKey] { key.map { parentPath + [$0] } ?? parentPath }
    var userInfo: [CodingUserInfoKey: Any] { [:] }

    func container<Key: CodingKey>(keyedBy type: Key.Type) -> KeyedEncodingContainer<Key> {
        if case .map = node.content {} else { node.content = .map }
        return KeyedEncodingContainer(KeyedContainer<Key>(node: node, codingPath: codingPath))
    }

    func unkeyedContainer() -> any UnkeyedEncodingContainer {
        if case .array = node.content {} else { node.content = .array }
        return UnkeyedContainer(node: node, codingPath: codingPath)
    }

    func singleValueContainer() -> any SingleValueEncodingContainer {
        SingleValueContainer(node: node, codingPath: codingPath)
    }

    /// Encodes a nested value into `node`.
    static func encode<Value: Encodable>(_ value: Value, into node: EncodingNode, parentPath: [any CodingKey], key: (any CodingKey)?) throws {
        if let direct = try MessagePackEncoder.direct(value) {
            node.content = .value(direct)
        } else {
            try value.encode(to: TreeEncoder(node: node, parentPath: parentPath, key: key))
        }
    }

    struct KeyedContainer<Key: CodingKey>: KeyedEncodingContainerProtocol {
        let node: EncodingNode
        let codingPath: [any CodingKey]

        mutating func encodeNil(forKey key: Key) throws { node.child(forKey: key.stringValue).content = .value(.nil) }
        mutating func encode<T: Encodable>(_ value: T, forKey key: Key) throws {
            try TreeEncoder.encode(value, into: node.child(forKey: key.stringValue), parentPath: codingPath, key: key)
        }
        mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type, forKey key: Key) -> KeyedEncodingContainer<NestedKey> {
            TreeEncoder(node: node.child(forKey: key.stringValue), parentPath: codingPath, key: key).container(keyedBy: keyType)
        }
        mutating func nestedUnkeyedContainer(forKey key: Key) -> any UnkeyedEncodingContainer {
            TreeEncoder(node: node.child(forKey: key.stringValue), parentPath: codingPath, key: key).unkeyedContainer()
        }
        mutating func superEncoder() -> any Encoder {
            TreeEncoder(node: node.child(forKey: "super"), parentPath: codingPath, key: nil)
        }
        mutating func superEncoder(forKey key: Key) -> any Encoder {
            TreeEncoder(node: node.child(forKey: key.stringValue), parentPath: codingPath, key: key)
        }
    }

    struct UnkeyedContainer: UnkeyedEncodingContainer {
        let node: EncodingNode
        let codingPath: [any CodingKey]
        var count: Int {
            node.elementCount
        }

        /// The encoder of the next element (its key is taken before the element is added).
        private func nextElement() -> TreeEncoder {
            let key = IndexKey(count)
            return TreeEncoder(node: node.appendElement(), parentPath: codingPath, key: key)
        }

        mutating func encodeNil() throws { node.appendElement().content = .value(.nil) }
        mutating func encode<T: Encodable>(_ value: T) throws {
            let next = nextElement()
            try TreeEncoder.encode(value, into: next.node, parentPath: next.parentPath, key: next.key)
        }
        mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type) -> KeyedEncodingContainer<NestedKey> {
            nextElement().container(keyedBy: keyType)
        }
        mutating func nestedUnkeyedContainer() -> any UnkeyedEncodingContainer {
            nextElement().unkeyedContainer()
        }
        mutating func superEncoder() -> any Encoder {
            nextElement()
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
            try TreeEncoder.encode(value, into: node, parentPath: codingPath, key: nil)
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
