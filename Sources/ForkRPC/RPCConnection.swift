import ForkKit
import MessagePack
import Synchronization
import SystemPackage

/// The I/O of one MessagePack-RPC connection on the owner's side, and nothing else: whole messages
/// out (encoded by the sending task into the connection's buffer, sent without ever blocking in the
/// kernel), whole messages in (framed on its ``DescriptorMonitor``'s thread and handed over
/// undecoded: each is decoded by the task that waits for it).
///
/// The monitor thread reads each connection in bounded slices, so that one large message cannot hold
/// up the others: a 64 MiB result is read a slice at a time between everyone else's replies.
final class RPCConnection: Sendable {
    /// What the reading side reports.
    enum Incoming {
        /// One whole message; its receiver releases it.
        case message(MessagePackMessage)
        /// The connection is over. `violation`: how the peer broke the protocol (nil when it just went away).
        case ended(violation: String?)
    }

    /// The worker's pid, for errors.
    let pid: Int32?
    /// Where the worker runs when it is remote (ssh), for errors; descriptors cannot go there.
    let remoteName: String?
    /// The largest message sent or accepted.
    let maximumMessageSize: Int
    /// The thread that reads this connection (``DescriptorMonitor/forNewConnection()``).
    let monitor = DescriptorMonitor.forNewConnection()
    private let socket: WireSocket
    private let reading: MonitorBound<MessagePackFrameReader>
    /// Set once the connection has ended: nothing more is read or delivered.
    private let readingStopped = Atomic<Bool>(false)
    /// Guards the writing side: whether it is still open, and the buffer each message is encoded into.
    private let outgoing = Mutex(Outgoing())

    private struct Outgoing: ~Copyable {
        var open = true
        var writer = MessagePackWriter()
    }

    /// A message arriving in pieces is read this much at a time, so that the other connections'
    /// replies wait at most one slice: measured with a worker streaming 64 MiB results, 64 KiB
    /// slices gave the other worker's calls a p99 of 1.4x their unloaded p99 and the stream 8.3
    /// results/s, against 4.6x and 6.0/s with 256 KiB (copying into fresh pages costs more per byte
    /// than the extra reads). Between messages, less: most replies are small, and a buffer still
    /// referenced by a message handed over is replaced, not reused.
    private static let largeSlice = 64 << 10
    private static let smallSlice = 16 << 10

    init(socket: consuming WireSocket, pid: Int32?, remoteName: String?, maximumMessageSize: Int) {
        self.socket = socket
        self.pid = pid
        self.remoteName = remoteName
        self.maximumMessageSize = maximumMessageSize
        reading = MonitorBound(MessagePackFrameReader(maximumMessageSize: maximumMessageSize), on: monitor)
    }

    deinit {
        monitor.unwatch(socket.input.rawValue)
    }

    /// Starts reading: `deliver` is called on the monitor thread with every message, and once with
    /// the end. It holds its receiver weakly (a client dropped without `close()` must still go).
    func startReading(_ deliver: @escaping @Sendable (Incoming) -> Void) {
        monitor.watch(socket.input.rawValue) { [weak self] in self?.readable(deliver) }
    }

    /// Stops reading (the connection is over); `breaking` also shuts it, so the peer sees the end.
    func stopReading(breaking: Bool) {
        guard !readingStopped.exchange(true, ordering: .acquiringAndReleasing) else { return }
        monitor.unwatch(socket.input.rawValue)
        if breaking { socket.breakConnection() }
    }

    private func readable(_ deliver: (Incoming) -> Void) {
        guard !readingStopped.load(ordering: .acquiring) else { return }
        let ending: String?? = reading.withValue { reader in
            let slice = reader.bufferedByteCount > 0 ? Self.largeSlice : Self.smallSlice
            do {
                switch try socket.receive(into: &reader, atMost: slice) {
                case .wouldBlock: return nil
                case .endOfStream: return .some(nil)
                case .bytes: break
                }
            } catch {
                return .some(nil)  // a broken connection ends like a closed one; the exit status says why
            }
            do {
                while !readingStopped.load(ordering: .relaxed), let message = try reader.nextMessage() {
                    deliver(.message(message))
                }
            } catch MessagePackError.messageTooLarge(let size, let limit) {
                // Well-formed, only too large: an event or log record (a worker checks its results, not
                // those), or a peer that was never told the limit.
                return "sent a message of at least \(size) bytes, over the maximumMessageSize of \(limit) bytes (an event, log "
                    + "record or request to the owner that large, or a peer that was not told the limit); the connection was closed. Raise the limit, or send less at once"
            } catch {
                return "sent bytes that are not MessagePack-RPC (\(error)); the connection was closed"
            }
            return nil
        }
        guard let ending else { return }
        deliver(.ended(violation: ending))
    }

    // MARK: - Writing

    /// Encodes a message with `write` into the connection's buffer and sends it whole, with the
    /// descriptors found in the values `write` reports. When the worker does not take it all by
    /// `deadline` (or, when `cancellable`, the calling task is cancelled meanwhile), it gives up:
    /// without closing anything if no byte went out, and otherwise by breaking the connection
    /// (half a message cannot be taken back; `brokeConnection` says so).
    ///
    /// The wait happens under the connection's write lock, in 20 ms slices: a send with no deadline
    /// to a worker that never reads (stopped, and without a timeout) holds the senders behind it.
    func send(
        until deadline: ContinuousClock.Instant?, cancellable: Bool,
        _ write: (inout MessagePackWriter, inout [MessagePackValue]) throws -> Void
    ) -> SendOutcome {
        outgoing.withLock { outgoing in
            guard outgoing.open else { return SendOutcome(RPCError(.closed, "the client's output is closed", pid: pid)) }
            outgoing.writer.reset()
            var direct: [MessagePackValue] = []
            do {
                try write(&outgoing.writer, &direct)
            } catch {
                return SendOutcome(error as? RPCError ?? RPCError(.codingFailed, "cannot encode the message: \(error)", pid: pid))
            }
            guard outgoing.writer.count <= maximumMessageSize else {
                return SendOutcome(RPCError(
                    .messageTooLarge,
                    "the message is \(outgoing.writer.count) bytes, over the maximumMessageSize of \(maximumMessageSize) bytes "
                        + "that both sides honour (RPCClient.start(maximumMessageSize:), WorkerPool.Configuration.maximumMessageSize); "
                        + "it was not sent. Raise the limit, or send less per call", pid: pid))
            }
            let descriptors = direct.flatMap(PassedDescriptor.descriptors(in:))
            if !descriptors.isEmpty {
                guard socket.canPassDescriptors else {
                    return SendOutcome(RPCError(.codingFailed, "descriptors can only be passed over a Unix socket, not a pipe", pid: pid))
                }
                if let remoteName {
                    return SendOutcome(RPCError(
                        .codingFailed,
                        "descriptors cannot be passed to a remote worker (\(remoteName)): its connection is a byte stream "
                            + "between machines; open the file or socket in the worker instead", pid: pid))
                }
                guard descriptors.count <= WireSocket.maximumDescriptorsPerMessage else {
                    return SendOutcome(RPCError(
                        .codingFailed,
                        "the message holds \(descriptors.count) descriptors; at most \(WireSocket.maximumDescriptorsPerMessage) travel "
                            + "in one message (the kernel's limit): pass them over several calls", pid: pid))
                }
            }
            let outcome = outgoing.writer.withBytes { bytes in
                sendWhole(bytes, descriptors: descriptors, until: deadline, cancellable: cancellable)
            }
            if outcome.brokeConnection { outgoing.open = false }
            return outcome
        }
    }

    /// Writes `bytes` whole without blocking in the kernel: while the worker's input is full it
    /// waits for room in short slices, so that a stopped worker cannot hold the caller past its
    /// deadline or (when `cancellable`) the task's cancellation.
    private func sendWhole(
        _ bytes: UnsafeRawBufferPointer, descriptors: [FileDescriptor], until deadline: ContinuousClock.Instant?, cancellable: Bool
    ) -> SendOutcome {
        let sent: Int
        do {
            sent = try socket.sendAll(bytes, descriptors: descriptors, until: deadline, giveUp: { cancellable && Task.isCancelled })
        } catch .brokenPipe, .connectionReset, .socketNotConnected {
            // The worker is gone: end the connection here too, so that the reader sees its end at
            // once and fails the calls held with the worker's exit status, which says more.
            socket.breakConnection()
            return SendOutcome(RPCError(.workerDied, "cannot send to the worker: it has gone", pid: pid), peerGone: true)
        } catch .badFileDescriptor where !descriptors.isEmpty {
            // Refused with the first part, which carries the descriptors: nothing went out.
            return SendOutcome(RPCError(
                .codingFailed, "a descriptor passed in the call is not open (EBADF); nothing was sent", pid: pid))
        } catch {
            // Any other failure may have come after part of the message: the stream cannot go on.
            socket.breakConnection()
            return SendOutcome(RPCError(.workerDied, "cannot send to the worker: \(error); the connection was closed", pid: pid), brokeConnection: true)
        }
        guard sent < bytes.count else { return SendOutcome(nil) }
        let kind: RPCError.Kind = cancellable && Task.isCancelled ? .closed : .timeout
        guard sent > 0 else {
            return SendOutcome(RPCError(kind, "the worker took none of the message in time (is it stopped, or not reading?); nothing was sent", pid: pid))
        }
        socket.breakConnection()
        return SendOutcome(RPCError(
            kind,
            "the worker took \(sent) of the message's \(bytes.count) bytes and no more in time (is "
                + "it stopped, or not reading?); the connection was closed, since half a message cannot be taken back", pid: pid),
            brokeConnection: true)
    }

    /// Tells the worker no more requests come: end of stream on its input.
    func finishSending() {
        outgoing.withLock { outgoing in
            guard outgoing.open else { return }
            outgoing.open = false
            socket.finishSending()
        }
    }
}

/// How a send ended: `failure` nil when the whole message went out.
struct SendOutcome {
    /// Why the message did not go out whole.
    let failure: RPCError?
    /// The connection was closed because part of the message went out (it cannot be taken back) or
    /// the socket failed: the calls held fail, saying so.
    var brokeConnection = false
    /// The worker had gone (EPIPE, ECONNRESET): a call stays held, and the connection's end fails
    /// it with the worker's exit status.
    var peerGone = false

    init(_ failure: RPCError?, brokeConnection: Bool = false, peerGone: Bool = false) {
        self.failure = failure
        self.brokeConnection = brokeConnection
        self.peerGone = peerGone
    }
}
