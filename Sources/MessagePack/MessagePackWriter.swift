import CMsgPack
import Synchronization

/// Writes MessagePack values into a growing byte buffer, in the smallest encoding of each value.
///
/// A thin wrapper over libmsgpack-c's packer. Write any number of values, then take ``bytes``:
///
/// ```swift
/// var writer = MessagePackWriter()
/// writer.write(["fork"])
/// let frame = writer.bytes
/// ```
public struct MessagePackWriter: ~Copyable {
    // The packer and its buffer live on the heap: msgpack-c keeps a pointer to the buffer.
    let buffer: UnsafeMutablePointer<msgpack_sbuffer>
    let packer: UnsafeMutablePointer<msgpack_packer>
    /// Whose buffer it is: its own, another writer's (the streaming encoder's, for a nested
    /// ``MessagePackEncodable`` value), or the spare one that one-shot encodes reuse.
    private let storage: Storage
    private enum Storage { case owned, borrowed, spare }
    /// What ``MessagePackEncodable`` values wrote in their own MessagePack form (descriptors, say),
    /// for ``MessagePackEncoder`` to hand on.
    var directValues: [MessagePackValue] = []

    /// Creates an empty writer.
    public init() {
        buffer = msgpack_sbuffer_new()
        packer = msgpack_packer_new(UnsafeMutableRawPointer(buffer), msgpack_sbuffer_write)
        storage = .owned
    }

    /// The packer (and through it the buffer) of the last writer made by ``init(reusingSpare:)``:
    /// a one-shot encode then allocates only its result, not a packer, a buffer and its 8 KiB.
    /// Taken and given back atomically; a second thread meanwhile makes its own.
    private static let spare = Atomic<UInt>(0)

    /// An empty writer over the spare buffer if no other writer holds it.
    init(reusingSpare: Void) {
        if let packer = UnsafeMutablePointer<msgpack_packer>(bitPattern: Self.spare.exchange(0, ordering: .acquiring)) {
            self.packer = packer
            buffer = packer.pointee.data.assumingMemoryBound(to: msgpack_sbuffer.self)
            msgpack_sbuffer_clear(buffer)
        } else {
            buffer = msgpack_sbuffer_new()
            packer = msgpack_packer_new(UnsafeMutableRawPointer(buffer), msgpack_sbuffer_write)
        }
        storage = .spare
    }

    /// A writer that appends to another's buffer, and frees nothing.
    init(borrowing buffer: UnsafeMutablePointer<msgpack_sbuffer>, _ packer: UnsafeMutablePointer<msgpack_packer>) {
        self.buffer = buffer
        self.packer = packer
        storage = .borrowed
    }

    deinit {
        switch storage {
        case .borrowed:
            return
        case .spare where buffer.pointee.alloc <= 64 << 10:
            // Kept for the next one-shot encode, unless another is kept already (or it grew large).
            if Self.spare.compareExchange(expected: 0, desired: UInt(bitPattern: packer), ordering: .releasing).exchanged { return }
        case .owned, .spare:
            break
        }
        msgpack_packer_free(packer)
        msgpack_sbuffer_free(buffer)
    }

    /// The bytes written so far.
    public var bytes: [UInt8] {
        guard let data = buffer.pointee.data, buffer.pointee.size > 0 else { return [] }
        return data.withMemoryRebound(to: UInt8.self, capacity: buffer.pointee.size) {
            Array(UnsafeBufferPointer(start: $0, count: buffer.pointee.size))
        }
    }

    /// How many bytes have been written.
    public var count: Int { buffer.pointee.size }

    /// Calls `body` with the bytes written so far, without copying them.
    public func withBytes<Result>(_ body: (UnsafeRawBufferPointer) throws -> Result) rethrows -> Result {
        try body(UnsafeRawBufferPointer(start: buffer.pointee.data, count: buffer.pointee.size))
    }

    /// Forgets what was written after the first `count` bytes.
    public mutating func truncate(to count: Int) {
        buffer.pointee.size = min(count, buffer.pointee.size)
    }

    /// Appends an array header: `count` values must follow.
    public mutating func writeArrayHeader(count: Int) {
        msgpack_pack_array(packer, count)
    }

    /// Appends an integer in its smallest form.
    public mutating func write(_ number: Int) {
        msgpack_pack_int64(packer, Int64(number))
    }

    /// Forgets what was written, keeping the allocated buffer.
    public mutating func reset() {
        msgpack_sbuffer_clear(buffer)
    }

    /// Appends bytes that already are MessagePack (values encoded by another writer).
    public mutating func write(encoded bytes: [UInt8]) {
        _ = bytes.withUnsafeBytes { msgpack_sbuffer_write(buffer, $0.baseAddress, $0.count) }
    }

    /// Appends one value.
    public mutating func write(_ value: MessagePackValue) {
        Self.pack(value, packer)
    }

    /// Packs `value` with `packer`, in the smallest encoding of each part.
    static func pack(_ value: MessagePackValue, _ packer: UnsafeMutablePointer<msgpack_packer>) {
        switch value {
        case .nil:
            msgpack_pack_nil(packer)
        case .bool(let flag):
            _ = flag ? msgpack_pack_true(packer) : msgpack_pack_false(packer)
        case .int(let number):
            msgpack_pack_int64(packer, number)
        case .uint(let number):
            msgpack_pack_uint64(packer, number)
        case .float32(let number):
            msgpack_pack_float(packer, number)
        case .float64(let number):
            msgpack_pack_double(packer, number)
        case .string(let text):
            pack(text, packer)
        case .binary(let bytes):
            pack(bytes, packer)
        case .array(let elements):
            msgpack_pack_array(packer, elements.count)
            for element in elements { pack(element, packer) }
        case .map(let pairs):
            msgpack_pack_map(packer, pairs.count)
            for pair in pairs {
                pack(pair.key, packer)
                pack(pair.value, packer)
            }
        case .extended(let type, let data):
            msgpack_pack_ext(packer, data.count, type)
            data.withUnsafeBytes { _ = msgpack_pack_ext_body(packer, $0.baseAddress, $0.count) }
        case .timestamp(let seconds, let nanoseconds):
            var stamp = msgpack_timestamp(tv_sec: seconds, tv_nsec: nanoseconds)
            msgpack_pack_timestamp(packer, &stamp)
        }
    }

    /// Packs a str.
    static func pack(_ text: String, _ packer: UnsafeMutablePointer<msgpack_packer>) {
        var text = text
        text.withUTF8 { utf8 in
            msgpack_pack_str(packer, utf8.count)
            msgpack_pack_str_body(packer, utf8.baseAddress, utf8.count)
        }
    }

    /// Packs a bin.
    static func pack(_ bytes: [UInt8], _ packer: UnsafeMutablePointer<msgpack_packer>) {
        msgpack_pack_bin(packer, bytes.count)
        bytes.withUnsafeBytes { _ = msgpack_pack_bin_body(packer, $0.baseAddress, $0.count) }
    }
}

extension MessagePackValue {
    /// The value's MessagePack encoding.
    public func encoded() -> [UInt8] {
        var writer = MessagePackWriter()
        writer.write(self)
        return writer.bytes
    }
}
