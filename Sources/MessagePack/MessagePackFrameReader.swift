import CMsgPack

/// Splits a byte stream into whole MessagePack messages, however the bytes arrive.
///
/// MessagePack is self-delimiting, so a stream needs no length prefix: feed the reader whatever a
/// socket returned (one byte or a megabyte) and take out every message that is complete.
///
/// ```swift
/// var reader = MessagePackFrameReader()
/// reader.append(chunk)
/// while let message = try reader.next() { handle(message) }
/// ```
///
/// A message that grows past ``maximumMessageSize`` before it is complete is refused with
/// ``MessagePackError/messageTooLarge(size:limit:)``; after any error the stream cannot be trusted
/// and the reader should be discarded with its connection.
public struct MessagePackFrameReader: ~Copyable {
    /// The largest single message accepted, in bytes.
    public var maximumMessageSize: Int
    private let unpacker: UnsafeMutablePointer<msgpack_unpacker>
    private let unpacked = UnsafeMutablePointer<msgpack_unpacked>.allocate(capacity: 1)
    private var failure: MessagePackError?

    /// Creates a reader that refuses messages larger than `maximumMessageSize` bytes (64 MiB by default).
    public init(maximumMessageSize: Int = 64 << 20) {
        self.maximumMessageSize = maximumMessageSize
        guard let unpacker = msgpack_unpacker_new(Int(4096)) else {
            fatalError("msgpack_unpacker_new failed: out of memory")
        }
        self.unpacker = unpacker
        msgpack_unpacked_init(unpacked)
    }

    deinit {
        msgpack_unpacked_destroy(unpacked)
        unpacked.deallocate()
        msgpack_unpacker_free(unpacker)
    }

    /// Appends received bytes.
    public mutating func append(_ bytes: UnsafeRawBufferPointer) {
        guard !bytes.isEmpty, failure == nil else { return }
        guard msgpack_unpacker_reserve_buffer(unpacker, bytes.count) else {
            failure = .malformed("out of memory while buffering \(bytes.count) bytes")
            return
        }
        UnsafeMutableRawPointer(msgpack_unpacker_buffer(unpacker))!
            .copyMemory(from: bytes.baseAddress!, byteCount: bytes.count)
        msgpack_unpacker_buffer_consumed(unpacker, bytes.count)
    }

    /// Appends received bytes.
    public mutating func append(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { append($0) }
    }

    /// Returns the next complete message, or `nil` when more bytes are needed.
    public mutating func next() throws(MessagePackError) -> MessagePackValue? {
        do {
            return try nextObject { try $0.value() }
        } catch let error as MessagePackError {
            failure = error
            throw error
        } catch {
            preconditionFailure("only MessagePack errors are thrown here: \(error)")
        }
    }

    /// Bytes received and not yet taken out as messages: the start of an incomplete message.
    public var bufferedByteCount: Int { Int(unpacker.pointee.used) - Int(unpacker.pointee.off) + Int(unpacker.pointee.parsed) }

    /// Up to `count` of the bytes received and not yet parsed (what a peer sent, for an error that
    /// shows it when it was not what was expected).
    public func unparsedBytes(upTo count: Int) -> [UInt8] {
        let used = Int(unpacker.pointee.used), offset = Int(unpacker.pointee.off)
        guard let base = unpacker.pointee.buffer, used > offset else { return [] }
        return Array(UnsafeRawBufferPointer(start: base + offset, count: min(count, used - offset)))
    }

    /// Lets `read` write at most `limit` bytes straight into the reader's buffer (a socket's
    /// receive, without a copy in between); `read` returns how many it wrote. Returns false, and
    /// calls nothing, when the reader has failed or cannot make room (out of memory; the reader
    /// has failed then).
    ///
    /// While the buffer has room it is filled as it is: a buffer sized for a large message (see
    /// the headers check in ``nextObject(_:)``) is never grown, which would copy the message so far.
    @discardableResult
    public mutating func fill<Failure: Error>(
        atMost limit: Int, from read: (UnsafeMutableRawBufferPointer) throws(Failure) -> Int
    ) throws(Failure) -> Bool {
        guard failure == nil, limit > 0 else { return failure == nil }
        var room = Int(msgpack_unpacker_buffer_capacity(unpacker))
        if room == 0 {
            guard msgpack_unpacker_reserve_buffer(unpacker, limit) else {
                failure = .malformed("out of memory while buffering \(limit) bytes")
                return false
            }
            room = Int(msgpack_unpacker_buffer_capacity(unpacker))
        }
        let count = try read(UnsafeMutableRawBufferPointer(start: msgpack_unpacker_buffer(unpacker), count: min(limit, room)))
        msgpack_unpacker_buffer_consumed(unpacker, count)
        return true
    }

    /// Calls `body` with a view of the next complete message, read in place (see
    /// ``MessagePackObject``), or returns `nil` when more bytes are needed. An error `body` throws
    /// comes out as it is, and the reader can go on.
    public mutating func nextObject<Result>(_ body: (_ message: MessagePackObject) throws -> Result) throws -> Result? {
        guard try advance() else { return nil }
        return try withUnsafePointer(to: unpacked.pointee.data) { try body(MessagePackObject($0)) }
    }

    /// Takes the next complete message out of the reader, with the memory it lives in, or returns
    /// `nil` when more bytes are needed: it can be kept, and read on another thread, until
    /// ``MessagePackMessage/release()``.
    package mutating func nextMessage() throws(MessagePackError) -> MessagePackMessage? {
        guard try advance() else { return nil }
        return MessagePackMessage(zone: msgpack_unpacked_release_zone(unpacked), root: unpacked.pointee.data)
    }

    /// Parses up to the end of the next message; true when one is complete (in `unpacked`).
    private mutating func advance() throws(MessagePackError) -> Bool {
        if let failure { throw failure }
        // A message whose headers already declare more than the limit is refused before its body
        // is waited for (or buffered).
        if unpacker.pointee.parsed == 0, !(try prepareForNextMessage()) { return false }
        let start = Int(unpacker.pointee.off) - Int(unpacker.pointee.parsed)
        switch msgpack_unpacker_next(unpacker, unpacked) {
        case MSGPACK_UNPACK_SUCCESS:
            // A message that arrived whole in one piece is only measured now.
            let size = Int(unpacker.pointee.off) - start
            if size > maximumMessageSize {
                failure = .messageTooLarge(size: size, limit: maximumMessageSize)
                throw failure!
            }
            return true
        case MSGPACK_UNPACK_CONTINUE:
            let pending = Int(msgpack_unpacker_message_size(unpacker))
            if pending > maximumMessageSize {
                failure = .messageTooLarge(size: pending, limit: maximumMessageSize)
                throw failure!
            }
            return false
        case MSGPACK_UNPACK_NOMEM_ERROR:
            failure = .malformed("nesting too deep or out of memory")
            throw failure!
        default:
            failure = .malformed("invalid type byte")
            throw failure!
        }
    }
}

extension MessagePackFrameReader {
    /// Checks the next message's headers, before its body is there: one that announces more than
    /// the limit is refused now, and room for what it announces is made at once, so that a large
    /// message is received into one buffer instead of one that is copied each time it doubles
    /// (a 64 MiB message would otherwise be copied about 64 MiB over, in pieces of up to 32 MiB, on
    /// the thread that reads every connection).
    private mutating func prepareForNextMessage() throws(MessagePackError) -> Bool {
        let used = Int(unpacker.pointee.used), offset = Int(unpacker.pointee.off)
        guard let base = unpacker.pointee.buffer, used > offset else { return false }
        let buffered = used - offset
        let (least, headersComplete) = Self.leastSize(ofMessageAt: UnsafeRawBufferPointer(start: base + offset, count: buffered))
        if least > maximumMessageSize {
            failure = .messageTooLarge(size: least, limit: maximumMessageSize)
            throw failure!
        }
        // A header cut short is left unparsed until it is whole (msgpack-c would take its first
        // bytes, and the message would not be checked again).
        guard headersComplete else { return false }
        if least > buffered, least - buffered > Int(msgpack_unpacker_buffer_capacity(unpacker)) {
            _ = msgpack_unpacker_reserve_buffer(unpacker, least - buffered)
        }
        return true
    }

    /// The least size of the message that starts `bytes`, as far as its headers there tell: every
    /// value whose header is not there yet counts as one byte. Looks at the first `limit` values
    /// only (the envelope of an RPC message and its first large part), so it costs little.
    /// `headersComplete` is false when `bytes` end at or inside a header it would look at (fewer
    /// than `limit` values there and more to come), not inside a body.
    static func leastSize(ofMessageAt bytes: UnsafeRawBufferPointer, examining limit: Int = 64) -> (size: Int, headersComplete: Bool) {
        var offset = 0
        var pending = 1  // values still to come
        var examined = 0
        while pending > 0 && examined < limit {
            // Past the end inside a body: what follows it cannot be there yet, so the headers are
            // known as far as they can be. At the end exactly: the next header has not come.
            guard offset < bytes.count else { return (offset + pending, offset > bytes.count) }
            examined += 1
            let type = bytes[offset]
            func length(_ width: Int) -> Int? {
                guard offset + width < bytes.count else { return nil }
                return (1...width).reduce(0) { $0 << 8 | Int(bytes[offset + $1]) }
            }
            // Header size, body size, values inside; nil when the header is not all there.
            let shape: (header: Int, body: Int, children: Int)?
            switch type {
            case 0x00...0x7f, 0xc0...0xc3, 0xe0...0xff: shape = (1, 0, 0)
            case 0x80...0x8f: shape = (1, 0, 2 * Int(type & 0x0f))
            case 0x90...0x9f: shape = (1, 0, Int(type & 0x0f))
            case 0xa0...0xbf: shape = (1, Int(type & 0x1f), 0)
            case 0xc4, 0xd9: shape = length(1).map { (2, $0, 0) }       // bin 8, str 8
            case 0xc5, 0xda: shape = length(2).map { (3, $0, 0) }       // bin 16, str 16
            case 0xc6, 0xdb: shape = length(4).map { (5, $0, 0) }       // bin 32, str 32
            case 0xc7: shape = length(1).map { (3, $0, 0) }             // ext 8 (length, type)
            case 0xc8: shape = length(2).map { (4, $0, 0) }             // ext 16
            case 0xc9: shape = length(4).map { (6, $0, 0) }             // ext 32
            case 0xca: shape = (5, 0, 0)                                // float 32
            case 0xcb: shape = (9, 0, 0)                                // float 64
            case 0xcc, 0xd0: shape = (2, 0, 0)
            case 0xcd, 0xd1: shape = (3, 0, 0)
            case 0xce, 0xd2: shape = (5, 0, 0)
            case 0xcf, 0xd3: shape = (9, 0, 0)
            case 0xd4...0xd8: shape = (2, 1 << Int(type - 0xd4), 0)     // fixext 1, 2, 4, 8, 16
            case 0xdc: shape = length(2).map { (3, 0, $0) }             // array 16
            case 0xdd: shape = length(4).map { (5, 0, $0) }             // array 32
            case 0xde: shape = length(2).map { (3, 0, 2 * $0) }         // map 16
            case 0xdf: shape = length(4).map { (5, 0, 2 * $0) }         // map 32
            default: shape = (1, 0, 0)
            }
            guard let shape, offset + shape.header <= bytes.count else { return (offset + pending, false) }
            pending += shape.children - 1
            offset += shape.header + shape.body
        }
        return (offset + pending, true)
    }
}

extension MessagePackValue {
    /// Decodes exactly one value that fills `bytes`.
    public init(decoding bytes: some Collection<UInt8>) throws(MessagePackError) {
        let array = Array(bytes)
        guard let (value, consumed) = try MessagePackValue.decodeFirst(of: array) else {
            throw .truncated
        }
        guard consumed == array.count else { throw .trailingBytes(count: array.count - consumed) }
        self = value
    }

    /// Decodes the first value in `bytes`, returning it with the number of bytes it took,
    /// or `nil` when the bytes end before the value does.
    public static func decodeFirst(of bytes: [UInt8]) throws(MessagePackError) -> (MessagePackValue, Int)? {
        var unpacked = msgpack_unpacked()
        msgpack_unpacked_init(&unpacked)
        defer { msgpack_unpacked_destroy(&unpacked) }
        let outcome = bytes.withUnsafeBytes { raw in Result { () throws(MessagePackError) in try unpackFirst(raw, into: &unpacked) } }
        guard let consumed = try outcome.get() else { return nil }
        return (try MessagePackValue(unpacked.data), consumed)
    }

    /// Unpacks the first value in `bytes` into `unpacked` (whose objects may point into `bytes`);
    /// returns how many bytes it took, or `nil` when the bytes end before the value does.
    static func unpackFirst(_ bytes: UnsafeRawBufferPointer, into unpacked: inout msgpack_unpacked) throws(MessagePackError) -> Int? {
        var offset = 0
        switch msgpack_unpack_next(&unpacked, bytes.baseAddress?.assumingMemoryBound(to: CChar.self), bytes.count, &offset) {
        case MSGPACK_UNPACK_SUCCESS, MSGPACK_UNPACK_EXTRA_BYTES:
            return offset
        case MSGPACK_UNPACK_CONTINUE:
            return nil
        case MSGPACK_UNPACK_NOMEM_ERROR:
            throw .malformed("nesting too deep or out of memory")
        default:
            throw .malformed("invalid type byte")
        }
    }

    /// Converts msgpack-c's object tree (valid only while its zone lives) into an owned value.
    init(_ object: msgpack_object) throws(MessagePackError) {
        switch object.type {
        case MSGPACK_OBJECT_NIL:
            self = .nil
        case MSGPACK_OBJECT_BOOLEAN:
            self = .bool(object.via.boolean)
        case MSGPACK_OBJECT_POSITIVE_INTEGER:
            self = .uint(object.via.u64)
        case MSGPACK_OBJECT_NEGATIVE_INTEGER:
            self = .int(object.via.i64)
        case MSGPACK_OBJECT_FLOAT32:
            self = .float32(Float(object.via.f64))
        case MSGPACK_OBJECT_FLOAT64:
            self = .float64(object.via.f64)
        case MSGPACK_OBJECT_STR:
            let bytes = Self.bytes(object.via.str.ptr, Int(object.via.str.size))
            guard let text = String(validating: bytes, as: UTF8.self) else {
                throw .malformed("a str value is not valid UTF-8")
            }
            self = .string(text)
        case MSGPACK_OBJECT_BIN:
            self = .binary(Self.bytes(object.via.bin.ptr, Int(object.via.bin.size)))
        case MSGPACK_OBJECT_ARRAY:
            let array = object.via.array
            var elements: [MessagePackValue] = []
            elements.reserveCapacity(Int(array.size))
            for index in 0..<Int(array.size) {
                elements.append(try MessagePackValue(array.ptr[index]))
            }
            self = .array(elements)
        case MSGPACK_OBJECT_MAP:
            let map = object.via.map
            var pairs: [MessagePackPair] = []
            pairs.reserveCapacity(Int(map.size))
            for index in 0..<Int(map.size) {
                let entry = map.ptr[index]
                pairs.append(MessagePackPair(try MessagePackValue(entry.key), try MessagePackValue(entry.val)))
            }
            self = .map(pairs)
        case MSGPACK_OBJECT_EXT:
            var object = object
            var stamp = msgpack_timestamp()
            if object.via.ext.type == -1 {
                guard msgpack_object_to_timestamp(&object, &stamp) else {
                    throw .malformed("a timestamp extension has \(object.via.ext.size) bytes, not 4, 8 or 12")
                }
                self = .timestamp(seconds: stamp.tv_sec, nanoseconds: stamp.tv_nsec)
            } else {
                self = .extended(type: object.via.ext.type, data: Self.bytes(object.via.ext.ptr, Int(object.via.ext.size)))
            }
        default:
            throw .malformed("unknown object type \(object.type.rawValue)")
        }
    }

    static func bytes(_ pointer: UnsafePointer<CChar>?, _ count: Int) -> [UInt8] {
        guard let pointer, count > 0 else { return [] }
        return Array(UnsafeRawBufferPointer(start: pointer, count: count))
    }
}
