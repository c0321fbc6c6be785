import CMsgPack

/// The fast path of ``MessagePackEncoder``: writes each value straight into msgpack-c's packer as
/// `encode(to:)` produces it, with no tree in between.
///
/// MessagePack puts an element count before an array's or map's elements, and `Codable` does not
/// say how many will come, so a container starts with a 5-byte placeholder header that is patched
/// (and shrunk to the smallest form, moving the body) once the container is complete: when the
/// value that opened it returns from `encode(to:)`, or when its parent is written to again.
/// A value that writes to a container after a later one was opened, or asks for a super encoder,
/// cannot be streamed; the encoder then throws ``NotStreamable`` and ``MessagePackEncoder`` falls
/// back to building a tree.
final class StreamingEncoder {
    /// Thrown when a value encodes in an order that cannot be streamed.
    struct NotStreamable: Error {}

    private struct Frame {
        let id: Int
        let offset: Int
        let isMap: Bool
        /// The encoder whose `container` call opened it; asking again returns the same container.
        let owner: Int
        var count = 0
    }

    private struct State {
        var frames: [Frame] = []
        var nextID = 0
        /// Set when a write could not be streamed where no error could be thrown (a nested container).
        var failed = false
        /// The values written in their own MessagePack form (``MessagePackValueConvertible``,
        /// ``MessagePackValue``), for callers that look for particular ext types in them.
        var directValues: [MessagePackValue] = []
    }

    private let buffer: UnsafeMutablePointer<msgpack_sbuffer>
    let packer: UnsafeMutablePointer<msgpack_packer>
    // Behind a pointer: a class's stored properties are checked for exclusive access at run time
    // on every use, which cost more than the encoding itself.
    private let state = UnsafeMutablePointer<State>.allocate(capacity: 1)
    private var frames: [Frame] {
        _read { yield state.pointee.frames }
        _modify { yield &state.pointee.frames }
    }
    var failed: Bool { state.pointee.failed }
    var directValues: [MessagePackValue] { state.pointee.directValues }

    init(_ writer: borrowing MessagePackWriter) {
        buffer = writer.buffer
        packer = writer.packer
        state.initialize(to: State())
    }

    deinit {
        state.deinitialize(count: 1)
        state.deallocate()
    }

    private var size: Int { buffer.pointee.size }

    private func makeID() -> Int {
        defer { state.pointee.nextID += 1 }
        return state.pointee.nextID
    }

    // MARK: Values

    /// Encodes one value, closing every container it opened.
    func encode<Value: Encodable>(_ value: Value, kind known: SpecialCoding? = nil, codingPath: @autoclosure () -> [any CodingKey]) throws {
        if Self.writeLeaf(value, packer) { return }
        let kind = known ?? SpecialCoding.of(Value.self)
        switch kind {
        case .own(let encoding?, _):
            // A type that writes itself, into the same buffer.
            var writer = MessagePackWriter(borrowing: buffer, packer)
            try encoding.encode(value, asSelfTo: &writer)
            state.pointee.directValues += writer.directValues
        case .plain, .own(nil, _):
            let depth = frames.count
            let start = size
            try value.encode(to: Encoder(state: self, owner: makeID(), codingPath: codingPath()))
            // A value that asked for no container and wrote nothing is nil, as in the tree encoder.
            if size == start, frames.count == depth { msgpack_pack_nil(packer) }
            while frames.count > depth { closeInnermost() }
        case .binary:
            MessagePackWriter.pack(try MessagePackEncoder.direct(value, as: kind)!, packer)
        case .value, .custom:
            let direct = try MessagePackEncoder.direct(value, as: kind)!
            state.pointee.directValues.append(direct)
            MessagePackWriter.pack(direct, packer)
        }
    }

    /// Packs `value` if it is one of the common leaf types (without asking the runtime what it
    /// conforms to); false if it is not.
    @inline(__always)
    static func writeLeaf<Value>(_ value: Value, _ packer: UnsafeMutablePointer<msgpack_packer>) -> Bool {
        if Value.self == Int.self {
            msgpack_pack_int64(packer, Int64(unsafeBitCast(value, to: Int.self)))
        } else if Value.self == String.self {
            MessagePackWriter.pack(unsafeBitCast(value, to: String.self), packer)
        } else if Value.self == Double.self {
            msgpack_pack_double(packer, unsafeBitCast(value, to: Double.self))
        } else if Value.self == Bool.self {
            _ = unsafeBitCast(value, to: Bool.self) ? msgpack_pack_true(packer) : msgpack_pack_false(packer)
        } else if Value.self == [UInt8].self {
            MessagePackWriter.pack(unsafeBitCast(value, to: [UInt8].self), packer)
        } else {
            return false
        }
        return true
    }

    /// Whether ``writeLeaf(_:_:)`` writes values of `type`.
    static func isLeaf(_ type: Any.Type) -> Bool {
        type == Int.self || type == String.self || type == Double.self || type == Bool.self || type == [UInt8].self
    }

    func write(_ text: String) {
        MessagePackWriter.pack(text, packer)
    }

    // MARK: Containers

    /// Opens an array or a map for encoder `owner`, or returns the one it already opened.
    func open(isMap: Bool, owner: Int) -> Int {
        if let existing = frames.last(where: { $0.owner == owner }), existing.isMap == isMap {
            return existing.id
        }
        let id = makeID()
        frames.append(Frame(id: id, offset: size, isMap: isMap, owner: owner))
        var placeholder: (UInt8, UInt8, UInt8, UInt8, UInt8) = (isMap ? 0xdf : 0xdd, 0, 0, 0, 0)
        _ = withUnsafeBytes(of: &placeholder) { msgpack_sbuffer_write(buffer, $0.baseAddress, 5) }
        return id
    }

    /// Makes container `id` the innermost open one and counts one more element in it.
    func willWrite(into id: Int) throws {
        while let last = frames.last, last.id > id { closeInnermost() }
        guard let last = frames.indices.last, frames[last].id == id else {
            state.pointee.failed = true
            throw NotStreamable()
        }
        frames[last].count += 1
    }

    /// Elements written into container `id` so far.
    func count(of id: Int) -> Int {
        frames.last(where: { $0.id == id })?.count ?? 0
    }

    /// Writes the innermost container's real header in its smallest form.
    private func closeInnermost() {
        let frame = frames.removeLast()
        let data = UnsafeMutableRawPointer(buffer.pointee.data!).assumingMemoryBound(to: UInt8.self)
        let header = data + frame.offset
        let body = header + 5
        let bodyLength = size - frame.offset - 5
        let count = frame.count
        let headerLength: Int
        if count < 16 {
            header[0] = (frame.isMap ? 0x80 : 0x90) | UInt8(count)
            headerLength = 1
        } else if count <= 0xffff {
            header[0] = frame.isMap ? 0xde : 0xdc
            header[1] = UInt8(count >> 8)
            header[2] = UInt8(count & 0xff)
            headerLength = 3
        } else {
            for index in 0..<4 { header[1 + index] = UInt8((count >> (24 - 8 * index)) & 0xff) }
            return
        }
        (header + headerLength).update(from: body, count: bodyLength)
        buffer.pointee.size -= 5 - headerLength
    }

    // MARK: Encoder and containers

    struct Encoder: Swift.Encoder {
        let state: StreamingEncoder
        let owner: Int
        let codingPath: [any CodingKey]
        var userInfo: [CodingUserInfoKey: Any] { [:] }

        func container<Key: CodingKey>(keyedBy type: Key.Type) -> KeyedEncodingContainer<Key> {
            KeyedEncodingContainer(KeyedContainer<Key>(state: state, frame: state.open(isMap: true, owner: owner), codingPath: codingPath))
        }

        func unkeyedContainer() -> any UnkeyedEncodingContainer {
            UnkeyedContainer(state: state, frame: state.open(isMap: false, owner: owner), codingPath: codingPath)
        }

        func singleValueContainer() -> any SingleValueEncodingContainer {
            SingleValueContainer(state: state, codingPath: codingPath)
        }
    }

    struct KeyedContainer<Key: CodingKey>: KeyedEncodingContainerProtocol {
        let state: StreamingEncoder
        let frame: Int
        let codingPath: [any CodingKey]

        private func writeKey(_ key: Key) throws {
            try state.willWrite(into: frame)
            state.write(key.stringValue)
        }

        mutating func encodeNil(forKey key: Key) throws {
            try writeKey(key)
            msgpack_pack_nil(state.packer)
        }
        mutating func encode(_ value: Int, forKey key: Key) throws {
            try writeKey(key)
            msgpack_pack_int64(state.packer, Int64(value))
        }
        mutating func encode(_ value: String, forKey key: Key) throws {
            try writeKey(key)
            state.write(value)
        }
        mutating func encode<T: Encodable>(_ value: T, forKey key: Key) throws {
            try writeKey(key)
            try state.encode(value, codingPath: codingPath + [key])
        }
        mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type, forKey key: Key) -> KeyedEncodingContainer<NestedKey> {
            try? writeKey(key)
            return Encoder(state: state, owner: state.makeID(), codingPath: codingPath + [key]).container(keyedBy: keyType)
        }
        mutating func nestedUnkeyedContainer(forKey key: Key) -> any UnkeyedEncodingContainer {
            try? writeKey(key)
            return Encoder(state: state, owner: state.makeID(), codingPath: codingPath + [key]).unkeyedContainer()
        }
        mutating func superEncoder() -> any Swift.Encoder { NotStreamableEncoder(codingPath: codingPath) }
        mutating func superEncoder(forKey key: Key) -> any Swift.Encoder { NotStreamableEncoder(codingPath: codingPath) }
    }

    struct UnkeyedContainer: UnkeyedEncodingContainer {
        let state: StreamingEncoder
        let frame: Int
        let codingPath: [any CodingKey]
        var count: Int { state.count(of: frame) }

        mutating func encodeNil() throws {
            try state.willWrite(into: frame)
            msgpack_pack_nil(state.packer)
        }
        mutating func encode(_ value: Int) throws {
            try state.willWrite(into: frame)
            msgpack_pack_int64(state.packer, Int64(value))
        }
        mutating func encode(_ value: String) throws {
            try state.willWrite(into: frame)
            state.write(value)
        }
        mutating func encode<T: Encodable>(_ value: T) throws {
            let index = count
            try state.willWrite(into: frame)
            try state.encode(value, codingPath: codingPath + [IndexKey(index)])
        }
        mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type) -> KeyedEncodingContainer<NestedKey> {
            let index = count
            try? state.willWrite(into: frame)
            return Encoder(state: state, owner: state.makeID(), codingPath: codingPath + [IndexKey(index)]).container(keyedBy: keyType)
        }
        mutating func nestedUnkeyedContainer() -> any UnkeyedEncodingContainer {
            let index = count
            try? state.willWrite(into: frame)
            return Encoder(state: state, owner: state.makeID(), codingPath: codingPath + [IndexKey(index)]).unkeyedContainer()
        }
        mutating func superEncoder() -> any Swift.Encoder { NotStreamableEncoder(codingPath: codingPath) }
    }

    struct SingleValueContainer: SingleValueEncodingContainer {
        let state: StreamingEncoder
        let codingPath: [any CodingKey]
        private var packer: UnsafeMutablePointer<msgpack_packer> { state.packer }

        mutating func encodeNil() throws { msgpack_pack_nil(packer) }
        mutating func encode(_ value: Bool) throws { _ = value ? msgpack_pack_true(packer) : msgpack_pack_false(packer) }
        mutating func encode(_ value: String) throws { state.write(value) }
        mutating func encode(_ value: Double) throws { msgpack_pack_double(packer, value) }
        mutating func encode(_ value: Float) throws { msgpack_pack_float(packer, value) }
        mutating func encode(_ value: Int) throws { msgpack_pack_int64(packer, Int64(value)) }
        mutating func encode(_ value: Int8) throws { msgpack_pack_int64(packer, Int64(value)) }
        mutating func encode(_ value: Int16) throws { msgpack_pack_int64(packer, Int64(value)) }
        mutating func encode(_ value: Int32) throws { msgpack_pack_int64(packer, Int64(value)) }
        mutating func encode(_ value: Int64) throws { msgpack_pack_int64(packer, value) }
        mutating func encode(_ value: UInt) throws { msgpack_pack_uint64(packer, UInt64(value)) }
        mutating func encode(_ value: UInt8) throws { msgpack_pack_uint64(packer, UInt64(value)) }
        mutating func encode(_ value: UInt16) throws { msgpack_pack_uint64(packer, UInt64(value)) }
        mutating func encode(_ value: UInt32) throws { msgpack_pack_uint64(packer, UInt64(value)) }
        mutating func encode(_ value: UInt64) throws { msgpack_pack_uint64(packer, value) }
        mutating func encode<T: Encodable>(_ value: T) throws { try state.encode(value, codingPath: codingPath) }
    }

    /// What a super encoder request gets: the first use throws, and the tree encoder takes over.
    struct NotStreamableEncoder: Swift.Encoder {
        let codingPath: [any CodingKey]
        var userInfo: [CodingUserInfoKey: Any] { [:] }
        func container<Key: CodingKey>(keyedBy type: Key.Type) -> KeyedEncodingContainer<Key> {
            KeyedEncodingContainer(Refusing<Key>(codingPath: codingPath))
        }
        func unkeyedContainer() -> any UnkeyedEncodingContainer { Refusing<IndexKey>(codingPath: codingPath) }
        func singleValueContainer() -> any SingleValueEncodingContainer { Refusing<IndexKey>(codingPath: codingPath) }
    }

    /// A container every write to which throws ``NotStreamable``.
    struct Refusing<Key: CodingKey>: KeyedEncodingContainerProtocol, UnkeyedEncodingContainer, SingleValueEncodingContainer {
        let codingPath: [any CodingKey]
        var count: Int { 0 }
        mutating func encodeNil(forKey key: Key) throws { throw NotStreamable() }
        mutating func encode<T: Encodable>(_ value: T, forKey key: Key) throws { throw NotStreamable() }
        mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type, forKey key: Key) -> KeyedEncodingContainer<NestedKey> {
            KeyedEncodingContainer(Refusing<NestedKey>(codingPath: codingPath))
        }
        mutating func nestedUnkeyedContainer(forKey key: Key) -> any UnkeyedEncodingContainer { self }
        mutating func superEncoder() -> any Swift.Encoder { NotStreamableEncoder(codingPath: codingPath) }
        mutating func superEncoder(forKey key: Key) -> any Swift.Encoder { NotStreamableEncoder(codingPath: codingPath) }
        mutating func encodeNil() throws { throw NotStreamable() }
        mutating func encode<T: Encodable>(_ value: T) throws { throw NotStreamable() }
        mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type) -> KeyedEncodingContainer<NestedKey> {
            KeyedEncodingContainer(Refusing<NestedKey>(codingPath: codingPath))
        }
        mutating func nestedUnkeyedContainer() -> any UnkeyedEncodingContainer { self }
    }
}
