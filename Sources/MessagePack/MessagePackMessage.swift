import CMsgPack

/// One whole message taken out of a ``MessagePackFrameReader`` together with the memory msgpack-c
/// unpacked it into, so that it can be read later and on another thread: the reading thread only
/// frames messages, and each is decoded by the task that asked for it.
///
/// A plain value (continuations cannot carry a non-copyable one): exactly one holder reads it and
/// then calls ``release()`` once.
///
/// ```swift
/// let message = try reader.nextMessage()!
/// defer { message.release() }
/// let id = message.withObject { $0[1].integerValue }
/// ```
package struct MessagePackMessage: @unchecked Sendable {
    // msgpack-c's zone owns the objects, and keeps the unpacker's buffer alive while they point
    // into it (the unpacker counts its references): nothing is copied to hand a message over.
    private let zone: UnsafeMutablePointer<msgpack_zone>?
    private let root: msgpack_object

    init(zone: UnsafeMutablePointer<msgpack_zone>?, root: msgpack_object) {
        self.zone = zone
        self.root = root
    }

    /// Calls `body` with a view of the message (see ``MessagePackObject``).
    package func withObject<Result>(_ body: (MessagePackObject) throws -> Result) rethrows -> Result {
        try withUnsafePointer(to: root) { try body(MessagePackObject($0)) }
    }

    /// Frees the message's memory; the message must not be read afterwards.
    package func release() {
        if let zone { msgpack_zone_free(zone) }
    }
}
