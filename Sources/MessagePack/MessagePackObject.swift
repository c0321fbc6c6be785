import CMsgPack
import Synchronization

/// The memory zone of the last value `MessagePackObject.withObject(in:_:)` unpacked (msgpack-c
/// reuses a zone it is given): a one-shot decode then allocates no zone and no 8 KiB chunk. Taken
/// and given back atomically; a second thread meanwhile makes its own.
private let spareZone = Atomic<UInt>(0)

/// A view of one value inside a message that msgpack-c has unpacked, read in place: no copy, no
/// ``MessagePackValue`` tree. Valid only inside the closure that receives it
/// (``MessagePackFrameReader/nextObject(_:)``, `MessagePackObject.withObject(in:_:)`); keep what it yields, not
/// the view.
///
/// ```swift
/// try MessagePackObject.withObject(in: frame) { message in
///     let id = message[1].integerValue
///     let argument = try message[3][0].decode(Int.self)
/// }
/// ```
public struct MessagePackObject {
    let pointer: UnsafePointer<msgpack_object>
    /// Where a ``MessagePackDecodable`` conformance found the value, for the paths of errors.
    let location: Location

    enum Location {
        case root
        case key(UnsafePointer<msgpack_object>)
        case index(Int)
    }

    init(_ pointer: UnsafePointer<msgpack_object>, at location: Location = .root) {
        self.pointer = pointer
        self.location = location
    }

    /// The coding path of errors about this value.
    var path: [any CodingKey] {
        switch location {
        case .root: []
        case .key(let key): [TextKey(ObjectDecoder.keyText(key) ?? "")]
        case .index(let index): [IndexKey(index)]
        }
    }

    /// True for nil.
    public var isNil: Bool { pointer.pointee.type == MSGPACK_OBJECT_NIL }

    /// The integer, if the value is one that fits in `Int`.
    public var integerValue: Int? {
        switch pointer.pointee.type {
        case MSGPACK_OBJECT_POSITIVE_INTEGER: Int(exactly: pointer.pointee.via.u64)
        case MSGPACK_OBJECT_NEGATIVE_INTEGER: Int(exactly: pointer.pointee.via.i64)
        default: nil
        }
    }

    /// The text of a str value (or of a bin value that is UTF-8).
    public var stringValue: String? { try? ObjectDecoder.string(pointer, []) }

    /// The number of elements of an array, nil for anything else.
    public var count: Int? {
        pointer.pointee.type == MSGPACK_OBJECT_ARRAY ? Int(pointer.pointee.via.array.size) : nil
    }

    /// Element `index` of an array; `index` must be below ``count``.
    public subscript(index: Int) -> MessagePackObject {
        precondition(index >= 0 && index < count ?? 0, "element \(index) of a MessagePack value with \(count.map(String.init) ?? "no") elements")
        return MessagePackObject(UnsafePointer(pointer.pointee.via.array.ptr + index))
    }

    /// The kind of value, as ``MessagePackValue/typeName`` names it.
    public var typeName: String { ObjectDecoder.typeName(pointer) }

    /// A copy of the value as a tree, to keep.
    public func value() throws(MessagePackError) -> MessagePackValue {
        try MessagePackValue(pointer.pointee)
    }

    /// Decodes the value as `type`, as ``MessagePackDecoder`` does.
    public func decode<Value: Decodable>(_ type: Value.Type) throws -> Value {
        try decodeAny(type, path: path)
    }

    /// Decodes the value as any type, with errors at `path`.
    func decodeAny<Value: Decodable>(_ type: Value.Type, path: @autoclosure () -> [any CodingKey]) throws -> Value {
        let leaf = ObjectDecoder.Leaf(type)
        if leaf != .other { return try ObjectDecoder.leaf(leaf, as: type, pointer, path()) }
        return try ObjectDecoder(object: pointer, codingPath: path()).decodeValue(type)
    }

    /// Unpacks exactly one value from `bytes` and calls `body` with a view of it.
    public static func withObject<Result>(in bytes: UnsafeRawBufferPointer, _ body: (MessagePackObject) throws -> Result) throws -> Result {
        var unpacked = msgpack_unpacked()
        msgpack_unpacked_init(&unpacked)
        unpacked.zone = UnsafeMutablePointer(bitPattern: spareZone.exchange(0, ordering: .acquiring))
        defer {
            // The zone is kept for the next value unless another is kept already (clearing it frees
            // all but its first chunk).
            if let zone = unpacked.zone {
                msgpack_zone_clear(zone)
                if spareZone.compareExchange(expected: 0, desired: UInt(bitPattern: zone), ordering: .releasing).exchanged {
                    unpacked.zone = nil
                }
            }
            msgpack_unpacked_destroy(&unpacked)
        }
        guard let consumed = try MessagePackValue.unpackFirst(bytes, into: &unpacked) else { throw MessagePackError.truncated }
        guard consumed == bytes.count else { throw MessagePackError.trailingBytes(count: bytes.count - consumed) }
        return try withUnsafePointer(to: unpacked.data) { try body(MessagePackObject($0)) }
    }

    /// Unpacks exactly one value from `bytes` and calls `body` with a view of it.
    public static func withObject<Result>(in bytes: [UInt8], _ body: (MessagePackObject) throws -> Result) throws -> Result {
        try bytes.withUnsafeBytes { try withObject(in: $0, body) }
    }
}
