import MessagePack
import Synchronization
import SystemPackage

#if canImport(Glibc)
import Glibc
#endif

/// The owner's end of a control socket to a template or a not-yet-running child.
///
/// Requests are written by the calling task; every reply is read by the ``DescriptorMonitor`` thread
/// and handed to the oldest waiting request (replies come in order). Notices of exited children go
/// to ``ChildExitBook``. A child's connection is read ``ReadMode/exact``: the reader never takes a
/// byte beyond the message it parses, so that after the `running` reply the socket can be handed to
/// the function's owner exactly at the message boundary.
final class ControlConnection: Sendable {
    /// How the connection is read.
    enum ReadMode {
        /// A template's connection, never handed over: whatever arrived, split into messages.
        case stream
        /// A child's: one message's bytes at a time (peeked first), so that after `running` none of
        /// the function's own traffic has been taken.
        case exact
    }

    /// The id of the template this process was forked from (or its own, for a template): a template's
    /// death settles the exit status of every child it forked.
    let rootID: ObjectIdentifier?
    private let readMode: ReadMode
    private let pidToReap: Int32?
    /// Nil once handed over (``takeSocket()``). Locked by writers and by the monitor thread's reads.
    private let socket: Mutex<WireSocket?>
    /// The descriptor, to watch and unwatch (valid while ``socket`` holds it).
    private let descriptor: Int32
    private let sendOrder = Mutex<Void>(())
    /// A template's first message; not a reply to anything.
    private let helloReply = PendingReply()
    private let reading: MonitorBound<ReadState>
    private let state: Mutex<State>

    /// What the monitor thread keeps between reads.
    private struct ReadState: ~Copyable {
        var scratch = [UInt8](repeating: 0, count: 16 * 1024)
        var stream = MessagePackFrameReader(maximumMessageSize: TemplateServer.maximumMessageSize)
        /// The start of an incomplete message, already taken from the socket (exact reads only).
        var partial: [UInt8] = []
        /// The first bytes the peer sent, kept until its `hello`: when they are not ForkKit's, the
        /// error shows them (often text a login script printed, or another program's output).
        var firstBytes: [UInt8]?
    }

    private struct State {
        var name: String
        var waiting: [PendingReply] = []
        var saidHello = false
        var failure: ForkError?
        var handedOver = false
        var note: String?
        /// Why this process stopped taking commands, when its owner closed it.
        var closedBecause: String?
    }

    /// - Parameters:
    ///   - socket: the owner's end, adopted.
    ///   - name: how errors name the peer, such as `template 1234`.
    ///   - pidToReap: the peer's pid when this process is its parent and must reap it.
    ///   - rootID: see ``rootID``; `nil` makes this connection its own root (a template's).
    ///   - readMode: ``ReadMode/exact`` for a child whose socket is handed over after `running`.
    init(socket: Int32, name: String, pidToReap: Int32?, rootID: ObjectIdentifier? = nil, readMode: ReadMode = .stream) {
        self.socket = Mutex(WireSocket(adoptingSocket: FileDescriptor(rawValue: socket), blocking: false))
        self.descriptor = socket
        self.pidToReap = pidToReap
        self.state = Mutex(State(name: name))
        self.rootID = rootID
        self.readMode = readMode
        self.reading = MonitorBound(ReadState(), on: .shared)
    }

    /// The id that children of this connection are filed under in ``ChildExitBook``.
    var familyID: ObjectIdentifier { rootID ?? ObjectIdentifier(self) }

    /// Starts reading replies.
    func start() {
        DescriptorMonitor.shared.watch(descriptor) { [self] in readable() }
    }

    func rename(_ name: String) {
        state.withLock { $0.name = name }
    }

    /// Adds a sentence to the error that ends this connection (for example why it was killed).
    func noteBeforeFailure(_ note: String) {
        state.withLock { $0.note = note }
    }

    /// Waits for the template's `hello`.
    func hello() async throws -> ControlMessage {
        try await helloReply.value()
    }

    var hasSaidHello: Bool { state.withLock { $0.saidHello } }

    /// Sends a command (with `descriptors` attached) and returns its reply; an `error` reply is thrown.
    @discardableResult
    func request(_ message: ControlMessage, descriptors: [FileDescriptor] = []) async throws -> ControlMessage {
        try await submit(message, descriptors: descriptors).value()
    }

    /// Sends a command (with `descriptors` attached) without waiting for its reply.
    func submit(_ message: ControlMessage, descriptors: [FileDescriptor] = []) -> PendingReply {
        let bytes = message.encoded
        return sendOrder.withLock { _ in
            let reply = PendingReply()
            let failure: ForkError? = state.withLock { state in
                // Closed on purpose says more than the end of stream that follows it.
                if let reason = state.closedBecause {
                    return ForkError(.invalidState, "\(state.name) \(reason); it takes no more commands")
                }
                if let failure = state.failure { return failure }
                if state.handedOver {
                    return ForkError(.invalidState, "\(state.name) is already running a function; it takes no more commands")
                }
                state.waiting.append(reply)
                return nil
            }
            if let failure { return PendingReply(failure: failure) }
            do throws(Errno) {
                try send(bytes, descriptors: descriptors)
            } catch {
                // The reader then sees the end of the stream and fails every waiter, this one included.
                noteBeforeFailure("sending '\(message.value.arrayValue?.first?.stringValue ?? "")' failed: \(error)")
                socket.withLock { $0?.breakConnection() }
            }
            return reply
        }
    }

    /// Sends `bytes` whole (under ``sendOrder``). The socket's lock, which the monitor thread takes
    /// to read, is held only while bytes are handed to the kernel, never while waiting for room: a
    /// large `initialize` to a slow template must not stall every other connection's replies.
    private func send(_ bytes: [UInt8], descriptors: [FileDescriptor]) throws(Errno) {
        _ = try bytes.withUnsafeBytes { raw in
            Result { () throws(Errno) in
                try WireSocket.sendAll(
                    raw, descriptors: descriptors, until: nil, giveUp: { false },
                    sendSome: { (part, descriptors) throws(Errno) in
                        try withSocket { (socket) throws(Errno) in try socket.sendSome(part, descriptors: descriptors) }?.get() ?? 0
                    },
                    waitForRoom: { _ = WireSocket.poll(FileDescriptor(rawValue: descriptor), for: POLLOUT, upTo: $0) })
            }
        }.get()
    }

    /// Runs `body` with the socket under its lock; nil once the socket was handed over.
    private func withSocket<Value: Sendable>(_ body: (borrowing WireSocket) throws(Errno) -> Value) -> Result<Value, Errno>? {
        socket.withLock { socket in
            switch socket {
            case .none: nil
            case .some(let socket): Result { () throws(Errno) in try body(socket) }
            }
        }
    }

    /// Tells the peer that no more commands come: an idle template or child then exits.
    /// Ends the connection on purpose: commands sent afterwards fail at once, saying `reason`.
    func close(because reason: String) {
        state.withLock { state in
            state.closedBecause = reason
            state.note = reason
        }
        hangUp()
    }

    /// Tells the peer that no more commands come (end of stream on its input).
    func hangUp() {
        socket.withLock { socket in
            if !state.withLock({ $0.handedOver }) { socket?.finishSending() }
        }
    }

    /// Gives up the socket after the `running` reply; the caller owns it from now on.
    func takeSocket() -> FileDescriptor {
        sendOrder.withLock { _ in
            socket.withLock { socket in
                let taken = consume socket
                socket = nil
                guard let taken else { preconditionFailure("the socket of \(state.withLock { $0.name }) was taken twice") }
                return taken.release()
            }
        }
    }

    // MARK: - Reading (on the monitor thread)

    private func readable() {
        reading.withValue { reading in
            switch readMode {
            case .stream: readStream(&reading)
            case .exact: readExactly(&reading)
            }
        }
    }

    /// Receives into the scratch buffer; returns how many bytes came, or nil when reading stops
    /// here (see ``count(of:)``).
    private func receive(into reading: inout ReadState, peeking: Bool) -> Int? {
        let outcome = reading.scratch.withUnsafeMutableBytes { buffer in
            withSocket { (socket) throws(Errno) in try socket.receive(into: buffer, peeking: peeking) }
        }
        return count(of: outcome)
    }

    /// How many bytes a receive brought, or nil when reading stops here: nothing is there now, the
    /// socket was handed over, or the connection ended (which fails it).
    private func count(of outcome: Result<WireSocket.Received, Errno>?) -> Int? {
        switch outcome {
        case nil, .success(.wouldBlock): return nil
        case .success(.endOfStream):
            fail(.processGone, nil)
            return nil
        case .failure(let error):
            fail(.processGone, "broke the connection: \(error)")
            return nil
        case .success(.bytes(let count)): return count
        }
    }

    /// A template's connection is never handed over: read whatever is there, straight into the
    /// frame reader, and split it into messages.
    private func readStream(_ reading: inout ReadState) {
        while true {
            let outcome = withSocket { (socket) throws(Errno) in try socket.receive(into: &reading.stream, atMost: 16 << 10) }
            guard let count = count(of: outcome) else { return }
            if reading.firstBytes == nil { reading.firstBytes = reading.stream.unparsedBytes(upTo: 64) }
            while true {
                let value: MessagePackValue?
                do {
                    value = try reading.stream.next()
                } catch {
                    return fail(.protocolViolation, "it sent bytes that are not a control message\(beforeHello(reading.firstBytes)) (\(error))")
                }
                guard let value else { break }
                guard deliver(value, firstBytes: reading.firstBytes) else { return }
            }
            if count < 16 << 10 { return }
        }
    }

    /// A child's connection may be handed over after `running`: peek, and take exactly one message's
    /// bytes at a time, so that nothing of the function's own traffic is consumed.
    private func readExactly(_ reading: inout ReadState) {
        while true {
            guard let count = receive(into: &reading, peeking: true) else { return }
            let available = reading.partial + reading.scratch.prefix(count)
            if reading.firstBytes == nil { reading.firstBytes = Array(available.prefix(64)) }
            let decoded: (MessagePackValue, Int)?
            do {
                decoded = try MessagePackValue.decodeFirst(of: available)
            } catch {
                return fail(.protocolViolation, "it sent bytes that are not MessagePack\(beforeHello(reading.firstBytes)) (\(error))")
            }
            guard let (value, length) = decoded else {
                // Everything available belongs to one incomplete message: keep it and wait for the rest.
                consume(count)
                reading.partial += reading.scratch.prefix(count)
                if reading.partial.count > TemplateServer.maximumMessageSize {
                    return fail(.protocolViolation, "it sent a control message larger than \(TemplateServer.maximumMessageSize) bytes")
                }
                continue
            }
            consume(length - reading.partial.count)
            reading.partial = []
            guard deliver(value, firstBytes: reading.firstBytes) else { return }
        }
    }

    /// Parses and dispatches one message; returns `false` once the connection is no longer read.
    private func deliver(_ value: MessagePackValue, firstBytes: [UInt8]?) -> Bool {
        do {
            return dispatch(try ControlMessage(value))
        } catch {
            fail(.protocolViolation, "it broke the control protocol\(beforeHello(firstBytes)): \(error)")
            return false
        }
    }

    /// For a peer that has not said `hello`: what it wrote instead, as text where it is text.
    private func beforeHello(_ firstBytes: [UInt8]?) -> String {
        guard !hasSaidHello, let bytes = firstBytes else { return "" }
        let printable = bytes.allSatisfy { (0x20..<0x7f).contains($0) || $0 == 0x0a || $0 == 0x0d || $0 == 0x09 }
        let shown = printable ? String(decoding: bytes, as: UTF8.self).debugDescription : bytes.map { String($0, radix: 16) }.joined(separator: " ")
        return " before its hello, starting with \(shown) (output of a login script, or of a program that is not ForkKit?)"
    }

    /// Handles one message; returns `false` once the connection is no longer read.
    private func dispatch(_ message: ControlMessage) -> Bool {
        switch message {
        case .exited(let pid, let status):
            ChildExitBook.record(pid: pid, status: status)
            return true
        case .hello:
            state.withLock { $0.saidHello = true }
            helloReply.resolve(.success(message))
            return true
        case .error where state.withLock({ !$0.saidHello && $0.waiting.isEmpty }):
            // A program that cannot serve says why instead of hello (nothing was asked of it yet: a
            // forked child's error answers a request instead); it ends next, which reaps it.
            helloReply.resolve(.success(message))
            return true
        case .forked(let pid):
            ChildExitBook.expect(pid: pid, family: familyID)
        case .running:
            DescriptorMonitor.shared.unwatch(descriptor)
            state.withLock { $0.handedOver = true }
        default:
            break
        }
        let waiter: PendingReply? = state.withLock { state in
            state.waiting.isEmpty ? nil : state.waiting.removeFirst()
        }
        guard let waiter else {
            fail(.protocolViolation, "it sent a reply that no request asked for")
            return false
        }
        waiter.resolve(.success(message))
        return !state.withLock { $0.handedOver }
    }

    private func consume(_ count: Int) {
        _ = withSocket { (socket) throws(Errno) in try socket.discard(count) }
    }

    /// Ends the connection: every waiting request fails with an error that says why.
    private func fail(_ kind: ForkError.Kind, _ reason: String?) {
        DescriptorMonitor.shared.unwatch(descriptor)
        if kind == .protocolViolation { socket.withLock { $0?.breakConnection() } }
        let status = pidToReap.flatMap(Self.reap)
        let (waiters, error): ([PendingReply], ForkError) = state.withLock { state in
            var sentence = "\(state.name) "
            if let reason {
                sentence += reason
                if let status { sentence += " and ended with \(status)" }
            } else if let status {
                sentence += "ended with \(status)"
            } else {
                sentence += "closed its connection"
            }
            if let note = state.note { sentence += "; \(note)" }
            let error = ForkError(kind, sentence)
            state.failure = error
            defer { state.waiting = [] }
            return (state.waiting + [helloReply], error)
        }
        if rootID == nil {
            // The template's children die with it (their parent-death signal); nobody will report them.
            ChildExitBook.templateEnded(family: ObjectIdentifier(self), error: error)
        }
        for waiter in waiters { waiter.resolve(.failure(error)) }
    }

    /// Waits for a process that closed its socket to exit; kills it if it lingers.
    private static func reap(_ pid: Int32) -> ExitStatus? {
        var status: Int32 = 0
        for attempt in 0..<400 {
            let result = waitpid(pid, &status, WNOHANG)
            if result == pid { return ExitStatus(waitStatus: status) }
            if result < 0 { return nil }  // Someone else reaped it (or SIGCHLD is ignored).
            if attempt == 200 { kill(pid, SIGKILL) }
            usleep(1000)
        }
        return nil
    }
}
