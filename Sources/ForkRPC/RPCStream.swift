import ForkKit
import MessagePack
import SystemPackage

#if canImport(Glibc)
import Glibc
#endif

/// The worker's reading side of the wire, shared by both server backends: whole messages in, with
/// the descriptors that came along. It reads from a blocking ``WireSocket`` that the server owns;
/// one reader at a time.
struct RPCStream: ~Copyable {
    private var reader: MessagePackFrameReader
    /// Descriptors that arrived (SCM_RIGHTS) and no request has claimed yet.
    private var received: [FileDescriptor] = []
    /// How long a read polls before it blocks (the low-latency mode); zero blocks at once.
    private let spin: Duration

    init(maximumMessageSize: Int, spin: Duration = .zero) {
        self.spin = spin
        reader = MessagePackFrameReader(maximumMessageSize: maximumMessageSize)
    }

    deinit {
        received.forEach { try? $0.close() }
    }

    /// The largest message accepted (and, by the servers, sent): the owner's `$limits`, or the
    /// size the stream was made with until one arrives.
    var maximumMessageSize: Int { reader.maximumMessageSize }

    /// The messages that the next read from `socket` completes, each request's params decoded by
    /// `prepare`; nil at end of stream. Throws on bytes that are not MessagePack-RPC: the stream
    /// can no longer be trusted.
    mutating func read<Call>(
        from socket: borrowing WireSocket, prepare: (_ method: String, _ params: MessagePackObject) -> Call
    ) throws -> [IncomingMessage<Call>]? {
        while true {
            if spin > .zero { waitSpinning(on: socket) }
            guard case .bytes = try socket.receive(into: &reader, atMost: 256 << 10, collecting: &received) else { return nil }
            var batch: [IncomingMessage<Call>] = []
            while let message = try reader.nextObject({ message in try IncomingMessage(message, received: &received, prepare: prepare) }) {
                // The owner's limit holds from the next message on, for what arrives and what is sent.
                if case .limits(let limit) = message { reader.maximumMessageSize = limit }
                batch.append(message)
            }
            if !batch.isEmpty { return batch }
        }
    }

    /// Polls the input without sleeping until something arrives or the spin time is over: a reply
    /// to a caller that is also spinning then costs no wake-up on either side.
    private func waitSpinning(on socket: borrowing WireSocket) {
        let clock = ContinuousClock()
        let deadline = clock.now + spin
        while true {
            if socket.waitUntilReadable(upTo: .zero) { return }
            if clock.now >= deadline { return }
            // Yield while spinning: the scheduler often puts a woken peer on this same core, and
            // two spinners sharing a core would each burn a whole spin before the other answers
            // (measured: 10 us or 115 us per call at random without yielding, 18 us steadily with).
            sched_yield()
        }
    }
}

extension WireSocket {
    /// Writes a message whole (a notification: responses are encoded by ``RPCArguments``).
    func send(_ message: RPCMessage) throws(Errno) {
        try sendAll(message.value.encoded())
    }

    /// Writes `$spans` whole, unless it is larger than `limit` (the owner would close the
    /// connection on it): spans are diagnostics, and too many of them are dropped, never fatal.
    func send(spans message: RPCMessage, limit: Int) throws(Errno) {
        let bytes = Self.encoded(spans: message, limit: limit)
        guard !bytes.isEmpty else { return }
        try sendAll(bytes)
    }

    /// `$spans`'s bytes, or none when they are over `limit`.
    private static func encoded(spans message: RPCMessage, limit: Int) -> [UInt8] {
        let bytes = message.value.encoded()
        return bytes.count <= limit ? bytes : []
    }

    /// Writes a traced call's `$spans` (unless over `limit`) and its response (what `writer`
    /// holds) in one write: the owner reads both with one wake-up, spans first.
    func send(spans message: RPCMessage?, then writer: borrowing MessagePackWriter, limit: Int) throws(Errno) {
        guard let message else { return try send(writer) }
        var bytes = Self.encoded(spans: message, limit: limit)
        _ = try writer.withBytes { response in
            Result { () throws(Errno) in
                bytes.append(contentsOf: response)
                try sendAll(bytes)
            }
        }.get()
    }

    /// Writes what `writer` holds, whole.
    func send(_ writer: borrowing MessagePackWriter) throws(Errno) {
        _ = try writer.withBytes { bytes in Result { () throws(Errno) in try sendAll(bytes) } }.get()
    }
}
