import CForkSupport
import MessagePack
import SystemPackage

#if canImport(Glibc)
import Glibc
#endif

/// The worker's side of the wire, shared by both server backends: whole messages in (with the
/// descriptors that came along), whole messages out. Blocking; one reader, one writer at a time.
struct RPCStream: ~Copyable {
    let input: Int32
    let output: Int32
    private var reader: MessagePackFrameReader
    /// Descriptors that arrived (SCM_RIGHTS) and no request has claimed yet.
    private var received: [Int32] = []
    /// False once the input turned out to be a pipe: then plain reads, and no descriptors.
    private var inputIsSocket = true
    private var buffer = [UInt8](repeating: 0, count: 256 * 1024)
    /// How long a read polls before it blocks (the low-latency mode); zero blocks at once.
    private let spin: Duration

    init(input: Int32, output: Int32, maximumMessageSize: Int, spin: Duration = .zero) {
        self.input = input
        self.output = output
        self.spin = spin
        reader = MessagePackFrameReader(maximumMessageSize: maximumMessageSize)
        signal(SIGPIPE, SIG_IGN)
    }

    deinit {
        received.forEach { close($0) }
    }

    /// The largest message accepted (and, by the servers, sent): the owner's `$limits`, or the
    /// size the stream was made with until one arrives.
    var maximumMessageSize: Int { reader.maximumMessageSize }

    /// The messages that the next read completes, each request's params decoded by `prepare`; nil
    /// at end of stream. Throws on bytes that are not MessagePack-RPC: the stream can no longer be
    /// trusted.
    mutating func read<Call>(prepare: (_ method: String, _ params: MessagePackObject) -> Call) throws -> [IncomingMessage<Call>]? {
        var incoming = [Int32](repeating: -1, count: 253)
        while true {
            if spin > .zero { waitSpinning() }
            var arrived: Int32 = 0, truncated: Int32 = 0
            let input = self.input, isSocket = inputIsSocket
            let count = buffer.withUnsafeMutableBytes { bytes in
                isSocket
                    ? forkkit_receive_with_descriptors(input, bytes.baseAddress, bytes.count, &incoming, 253, &arrived, &truncated)
                    : Glibc.read(input, bytes.baseAddress, bytes.count)
            }
            if count < 0 {
                if errno == EINTR { continue }
                if errno == ENOTSOCK && inputIsSocket {
                    inputIsSocket = false
                    continue
                }
                throw Errno(rawValue: errno)
            }
            received += incoming.prefix(Int(arrived))
            if count == 0 { return nil }
            buffer.withUnsafeBytes { reader.append(UnsafeRawBufferPointer(rebasing: $0.prefix(count))) }
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
    private func waitSpinning() {
        let clock = ContinuousClock()
        let deadline = clock.now + spin
        var watched = pollfd(fd: input, events: Int16(POLLIN), revents: 0)
        while true {
            if poll(&watched, 1, 0) > 0 { return }
            let now = clock.now
            if now >= deadline { return }
            // Yield while spinning: the scheduler often puts a woken peer on this same core, and
            // two spinners sharing a core would each burn a whole spin before the other answers
            // (measured: 10 us or 115 us per call at random without yielding, 18 us steadily with).
            sched_yield()
        }
    }

    /// Writes a message whole (a notification: responses are written by ``RPCArguments``).
    func write(_ message: RPCMessage) throws {
        try message.value.encoded().withUnsafeBytes { try send($0) }
    }

    /// Writes what `writer` holds, whole.
    func send(_ writer: borrowing MessagePackWriter) throws {
        try writer.withBytes { try send($0) }
    }

    /// Writes `bytes` whole.
    func send(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { try send($0) }
    }

    private func send(_ bytes: UnsafeRawBufferPointer) throws {
        let error = forkkit_send_all(output, bytes.baseAddress, bytes.count)
        if error != 0 { throw Errno(rawValue: error) }
    }
}
