import CForkSupport
import MessagePack
import SystemPackage

#if canImport(Glibc)
import Glibc
#endif

/// The one connection type of ForkKit's wire: a Unix socket (or, to a remote peer, a pair of
/// pipes), carrying bytes with descriptors attached.
///
/// Every protocol speaks through it: the control protocol (the owner's connections to templates
/// and children, the template's server) and MessagePack-RPC on both sides. Made by `adopting`, it
/// owns its descriptors and closes them when it goes away; made by `using`, it leaves them to their
/// owner. It never raises SIGPIPE (a vanished peer is `EPIPE`), and reports failures as
/// swift-system's `Errno`.
///
/// A *non-blocking* socket never waits in the kernel: ``receive(into:atMost:)`` and
/// ``sendSome(_:descriptors:)`` return at once with what could be done, and the owner waits for
/// readiness itself (the ``DescriptorMonitor`` for reading). A *blocking* one (a template, a
/// worker) waits in every call.
///
/// ```swift
/// let socket = WireSocket(adopting: descriptor, blocking: false)
/// try socket.sendAll(bytes.withUnsafeBytes { $0 })
/// var reader = MessagePackFrameReader()
/// if case .bytes = try socket.receive(into: &reader, atMost: 64 << 10) { ... }
/// ```
public struct WireSocket: ~Copyable, Sendable {
    /// What a receive found.
    public enum Received: Equatable, Sendable {
        /// This many bytes arrived.
        case bytes(Int)
        /// The peer closed its end (or reset the connection): nothing more will arrive.
        case endOfStream
        /// Nothing is there now (non-blocking sockets only).
        case wouldBlock
    }

    /// Where reading happens. The same as ``output`` for a socket.
    public let input: FileDescriptor
    /// Where writing happens.
    public let output: FileDescriptor
    /// Whether descriptors can travel: the output is a socket, not a pipe.
    public let canPassDescriptors: Bool
    private let inputIsSocket: Bool
    private let blocking: Bool
    /// Whether the descriptors are closed when the socket goes away.
    private let owning: Bool

    /// The most descriptors one message can carry (the kernel's SCM_RIGHTS limit is 253).
    public static let maximumDescriptorsPerMessage = 253

    /// Takes ownership of `descriptor`, read and written alike (a socket, or one end of a pipe).
    public init(adopting descriptor: FileDescriptor, blocking: Bool) {
        self.init(
            input: descriptor, output: descriptor, inputIsSocket: Self.isSocket(descriptor), outputIsSocket: nil, blocking: blocking,
            owning: true)
    }

    /// Takes ownership of `descriptor`, known to be a Unix socket (one ForkKit made): nothing is
    /// asked of the kernel, which matters on the path of every fork.
    package init(adoptingSocket descriptor: FileDescriptor, blocking: Bool) {
        self.init(input: descriptor, output: descriptor, inputIsSocket: true, outputIsSocket: true, blocking: blocking, owning: true)
    }

    /// Takes ownership of `input` and `output` (two pipes to a remote peer, or one socket twice).
    public init(adoptingInput input: FileDescriptor, output: FileDescriptor, blocking: Bool) {
        self.init(input: input, output: output, blocking: blocking, owning: true)
    }

    /// Reads `input` and writes `output` without owning them: their owner closes them, after this
    /// socket has gone (a server on descriptors its caller passed, standard input and output say).
    public init(usingInput input: FileDescriptor, output: FileDescriptor, blocking: Bool) {
        self.init(input: input, output: output, blocking: blocking, owning: false)
    }

    private init(input: FileDescriptor, output: FileDescriptor, blocking: Bool, owning: Bool) {
        let inputIsSocket = Self.isSocket(input)
        self.init(
            input: input, output: output, inputIsSocket: inputIsSocket,
            outputIsSocket: output == input ? inputIsSocket : Self.isSocket(output), blocking: blocking, owning: owning)
    }

    private init(
        input: FileDescriptor, output: FileDescriptor, inputIsSocket: Bool, outputIsSocket: Bool?, blocking: Bool, owning: Bool
    ) {
        self.input = input
        self.output = output
        self.blocking = blocking
        self.owning = owning
        self.inputIsSocket = inputIsSocket
        canPassDescriptors = outputIsSocket ?? inputIsSocket
        if !canPassDescriptors {
            // A pipe whose reader died raises SIGPIPE on write, which would kill this process.
            signal(SIGPIPE, SIG_IGN)
        }
        if !blocking {
            // Sockets are asked not to wait call by call (MSG_DONTWAIT); a pipe only has the flag.
            for pipe in [inputIsSocket ? nil : input, canPassDescriptors ? nil : output].compactMap({ $0 }) {
                _ = fcntl(pipe.rawValue, F_SETFL, fcntl(pipe.rawValue, F_GETFL) | O_NONBLOCK)
            }
        }
    }

    deinit {
        guard owning else { return }
        try? input.close()
        if output != input { try? output.close() }
    }

    /// Gives up ownership of a socket (one descriptor read and written alike): returns it without
    /// closing it. Of a pair of pipes, the input is returned and the output closed (when owned).
    public consuming func release() -> FileDescriptor {
        let (input, output, owning) = (self.input, self.output, self.owning)
        discard self
        if owning && output != input { try? output.close() }
        return input
    }

    private static func isSocket(_ descriptor: FileDescriptor) -> Bool {
        var kind: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        return getsockopt(descriptor.rawValue, SOL_SOCKET, SO_TYPE, &kind, &length) == 0
    }

    private var waitFlag: Int32 { blocking ? 0 : Int32(MSG_DONTWAIT) }

    // MARK: - Sending

    /// Sends as much of `bytes` as the peer takes now, with `descriptors` riding on the first byte
    /// (so they arrive before the message is complete); returns how many bytes went (0 when a
    /// non-blocking socket is full). A blocking socket sends at least one byte.
    public func sendSome(_ bytes: UnsafeRawBufferPointer, descriptors: [FileDescriptor] = []) throws(Errno) -> Int {
        guard !bytes.isEmpty else { return 0 }
        while true {
            let sent: Int
            if !descriptors.isEmpty {
                guard canPassDescriptors else { throw Errno.notSocket }
                guard descriptors.count <= Self.maximumDescriptorsPerMessage else { throw Errno.invalidArgument }
                sent = descriptors.map(\.rawValue).withUnsafeBufferPointer { raw in
                    forkkit_send_with_descriptors(output.rawValue, bytes.baseAddress, bytes.count, raw.baseAddress, Int32(raw.count), waitFlag)
                }
            } else if canPassDescriptors {
                sent = Glibc.send(output.rawValue, bytes.baseAddress, bytes.count, Int32(MSG_NOSIGNAL) | waitFlag)
            } else {
                sent = Glibc.write(output.rawValue, bytes.baseAddress, bytes.count)
            }
            if sent >= 0 { return sent }
            switch errno {
            case EINTR: continue
            case EAGAIN: return 0  // only a non-blocking socket or pipe gets it
            case let error: throw Errno(rawValue: error)
            }
        }
    }

    /// Sends all of `bytes` (descriptors on the first byte), waiting for room in short slices. Gives
    /// up when `deadline` passes or `giveUp` says so while the peer takes nothing; returns how many
    /// bytes went: all of them, unless it gave up.
    @discardableResult
    public func sendAll(
        _ bytes: UnsafeRawBufferPointer, descriptors: [FileDescriptor] = [], until deadline: ContinuousClock.Instant? = nil,
        giveUp: () -> Bool = { false }
    ) throws(Errno) -> Int {
        try Self.sendAll(
            bytes, descriptors: descriptors, until: deadline, giveUp: giveUp,
            sendSome: { (part, descriptors) throws(Errno) in try sendSome(part, descriptors: descriptors) },
            waitForRoom: { waitForRoom(upTo: $0) })
    }

    /// Sends all of `bytes` (descriptors on the first byte), waiting for room as long as it takes.
    public func sendAll(_ bytes: [UInt8], descriptors: [FileDescriptor] = []) throws(Errno) {
        _ = try bytes.withUnsafeBytes { raw in Result { () throws(Errno) in try sendAll(raw, descriptors: descriptors) } }.get()
    }

    /// The loop of ``sendAll(_:descriptors:until:giveUp:)`` around any `sendSome` and wait: for an
    /// owner that must hold a lock while it hands bytes to the kernel but not while it waits.
    package static func sendAll(
        _ bytes: UnsafeRawBufferPointer, descriptors: [FileDescriptor], until deadline: ContinuousClock.Instant?, giveUp: () -> Bool,
        sendSome: (UnsafeRawBufferPointer, [FileDescriptor]) throws(Errno) -> Int, waitForRoom: (Duration) -> Void
    ) throws(Errno) -> Int {
        var offset = 0
        while offset < bytes.count {
            // The descriptors ride on the first bytes that go.
            let sent = try sendSome(UnsafeRawBufferPointer(rebasing: bytes[offset...]), offset == 0 ? descriptors : [])
            offset += sent
            if sent > 0 { continue }
            if deadline.map({ ContinuousClock.now >= $0 }) == true || giveUp() { return offset }
            waitForRoom(.milliseconds(20))
        }
        return offset
    }

    /// Waits until the output has room, or `timeout` has passed.
    public func waitForRoom(upTo timeout: Duration) {
        _ = Self.poll(output, for: POLLOUT, upTo: timeout)
    }

    /// Waits until the input is readable (or hung up), or `timeout` has passed; true when readable.
    public func waitUntilReadable(upTo timeout: Duration) -> Bool {
        Self.poll(input, for: POLLIN, upTo: timeout)
    }

    /// Waits until `descriptor` is ready for `events`, or `timeout` has passed; true when ready.
    package static func poll(_ descriptor: FileDescriptor, for events: Int32, upTo timeout: Duration) -> Bool {
        var watched = pollfd(fd: descriptor.rawValue, events: Int16(events), revents: 0)
        let milliseconds = timeout.components.seconds * 1000 + timeout.components.attoseconds / 1_000_000_000_000_000
        return Glibc.poll(&watched, 1, Int32(clamping: milliseconds)) > 0
    }

    /// Ends this side's writing: the peer reads end of stream. A pipe cannot be half-shut like a
    /// socket: its write end is replaced by /dev/null instead (the descriptor stays this socket's
    /// to close, and nothing more reaches the peer).
    public func finishSending() {
        if Glibc.shutdown(output.rawValue, Int32(SHUT_WR)) == 0 || output == input { return }
        let null = open("/dev/null", O_WRONLY | O_CLOEXEC)
        guard null >= 0 else { return }
        if dup2(null, output.rawValue) >= 0 { _ = fcntl(output.rawValue, F_SETFD, FD_CLOEXEC) }
        Glibc.close(null)
    }

    /// Ends the connection both ways (after bad input, or half a message that cannot be taken
    /// back): this side's reads and writes end, and the peer reads end of stream.
    public func breakConnection() {
        _ = Glibc.shutdown(input.rawValue, Int32(SHUT_RDWR))
        if output != input { finishSending() }
    }

    // MARK: - Receiving

    /// Receives at most `limit` bytes straight into `reader`'s buffer. Descriptors that arrive
    /// with them are closed: use ``receive(into:atMost:collecting:)`` where they are expected.
    /// A reset connection reads as end of stream.
    public func receive(into reader: inout MessagePackFrameReader, atMost limit: Int) throws(Errno) -> Received {
        try receive(into: &reader, atMost: limit, descriptors: nil)
    }

    /// Receives at most `limit` bytes into `reader`, appending the descriptors that came with them
    /// (close-on-exec) to `descriptors`. Throws `Errno.noBufferSpace` when descriptors were lost
    /// on the way (more than 253 with one message, or this process's limit reached): the peer
    /// then cannot be served as it asked. Throws `Errno.noMemory` when the reader cannot make room.
    public func receive(
        into reader: inout MessagePackFrameReader, atMost limit: Int, collecting descriptors: inout [FileDescriptor]
    ) throws(Errno) -> Received {
        try withUnsafeMutablePointer(to: &descriptors) { (sink) throws(Errno) in try receive(into: &reader, atMost: limit, descriptors: sink) }
    }

    private func receive(
        into reader: inout MessagePackFrameReader, atMost limit: Int, descriptors: UnsafeMutablePointer<[FileDescriptor]>?
    ) throws(Errno) -> Received {
        var outcome = Received.wouldBlock
        let madeRoom = try reader.fill(atMost: limit) { (buffer) throws(Errno) -> Int in
            outcome = try receive(into: buffer, peeking: false, descriptors: descriptors)
            if case .bytes(let count) = outcome { return count }
            return 0
        }
        // The reader has failed (it could not buffer the bytes): nothing more can be read.
        guard madeRoom else { throw Errno.noMemory }
        return outcome
    }

    /// Receives into `buffer` (bytes only). With `peeking`, the bytes stay queued for the next
    /// receive (sockets only: how a reader takes exactly one message's bytes and no more).
    public func receive(into buffer: UnsafeMutableRawBufferPointer, peeking: Bool = false) throws(Errno) -> Received {
        try receive(into: buffer, peeking: peeking, descriptors: nil)
    }

    private func receive(
        into buffer: UnsafeMutableRawBufferPointer, peeking: Bool, descriptors: UnsafeMutablePointer<[FileDescriptor]>?
    ) throws(Errno) -> Received {
        guard !buffer.isEmpty else { return .bytes(0) }
        var flags = waitFlag
        if peeking { flags |= Int32(MSG_PEEK) }
        while true {
            var count = 0
            var lost = false
            if !inputIsSocket {
                count = Glibc.read(input.rawValue, buffer.baseAddress, buffer.count)
            } else {
                let capacity = descriptors == nil ? 0 : Self.maximumDescriptorsPerMessage
                (count, lost) = withUnsafeTemporaryAllocation(of: Int32.self, capacity: max(capacity, 1)) { incoming in
                    var arrived: Int32 = 0, truncated: Int32 = 0
                    let count = forkkit_receive_with_descriptors(
                        input.rawValue, buffer.baseAddress, buffer.count, incoming.baseAddress, Int32(capacity), &arrived, &truncated, flags)
                    descriptors?.pointee += incoming.prefix(Int(arrived)).map(FileDescriptor.init(rawValue:))
                    return (count, truncated != 0 && descriptors != nil)
                }
            }
            if lost { throw Errno.noBufferSpace }
            if count > 0 { return .bytes(count) }
            if count == 0 { return .endOfStream }
            switch errno {
            case EINTR: continue
            case EAGAIN: return .wouldBlock  // only a non-blocking socket or pipe gets it
            case ECONNRESET: return .endOfStream
            case let error: throw Errno(rawValue: error)
            }
        }
    }

    /// Drops the next `count` bytes of input (after a peek that found a whole message in them).
    public func discard(_ count: Int) throws(Errno) {
        var left = count
        var sink = [UInt8](repeating: 0, count: min(count, 64 << 10))
        while left > 0 {
            let outcome = try sink.withUnsafeMutableBytes { buffer in
                Result { () throws(Errno) in try receive(into: UnsafeMutableRawBufferPointer(rebasing: buffer.prefix(left))) }
            }.get()
            switch outcome {
            case .bytes(let taken): left -= taken
            case .endOfStream: return
            case .wouldBlock: _ = waitUntilReadable(upTo: .seconds(1))
            }
        }
    }
}
