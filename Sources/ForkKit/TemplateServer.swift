import CForkSupport
import MessagePack
import SystemPackage

#if canImport(Glibc)
import Glibc
#endif

/// The serve loop of a template and of every forked child until it runs a function.
///
/// It is synchronous and blocking on purpose: no Dispatch, no Task, no NIO, so that the process stays
/// single-threaded and every fork is safe (see DESIGN.md). It answers each command on its control
/// socket, reaps its children and reports their exit, and leaves when the owner goes away.
struct TemplateServer: ~Copyable {
    /// Where commands arrive and replies go: one socket, or a remote template's stdin and stdout.
    private var connection: WireSocket
    /// Started by a command (``RemoteTemplate``): it cannot fork (a child would have no connection of
    /// its own) and receives no descriptors.
    private let isRemote: Bool
    private var reader = MessagePackFrameReader(maximumMessageSize: TemplateServer.maximumMessageSize)
    /// Descriptors that arrived but no command has claimed yet.
    private var unclaimedDescriptors: [FileDescriptor] = []
    /// What a function will receive (inherited by children forked from here).
    private var arguments: [[UInt8]] = []
    private var descriptors: [FileDescriptor] = []
    /// Whether code other than this loop has run since the thread count was last seen to be 1.
    /// Only such code (the program before `bootstrap`, an initializer, a plugin) can start a thread:
    /// this loop never does, so the count is read only after it, not on every fork.
    private var mayHaveThreads = true
    /// Set in a forked child until it first reads its own socket.
    private var readerIsStale = false
    private var pid = getpid()

    /// Arguments for initializers may be large (a table to load); a control message is refused beyond this.
    static let maximumMessageSize = 64 << 20

    /// Serves on `socket` (descriptor 3 in a spawned template) and never returns.
    static func serve(socket: Int32) -> Never {
        serve(input: socket, output: socket, isRemote: false)
    }

    /// Serves on two descriptors (a remote template's copies of its stdin and stdout); never returns.
    static func serve(input: Int32, output: Int32, isRemote: Bool) -> Never {
        let connection = WireSocket(
            adoptingInput: FileDescriptor(rawValue: input), output: FileDescriptor(rawValue: output), blocking: true)
        let server = TemplateServer(connection: connection, isRemote: isRemote)
        warmUpChildPath()
        server.send(.hello(version: ControlMessage.version, pid: getpid()))
        server.loop()
    }

    /// Runs, once, what every child runs right after the fork: reading a `run` command, answering it,
    /// and building a ``ChildContext``.
    ///
    /// A child's memory starts as the template's. Type metadata that Swift's runtime instantiates on
    /// first use would otherwise be built again in every child (a page fault and a copy for each page
    /// it writes); built here, it is inherited ready. This roughly halves a child's page faults.
    private static func warmUpChildPath() {
        let run = ControlMessage.run(name: "warm-up")
        var reader = MessagePackFrameReader(maximumMessageSize: maximumMessageSize)
        reader.append(run.encoded)
        if let value = try? reader.next() { _ = try? ControlMessage(value) }
        _ = ControlMessage.running(pid: getpid()).encoded
        _ = ForkRegistry.entry(named: "warm-up")
        _ = ChildContext(
            input: FileDescriptor(rawValue: -1), output: FileDescriptor(rawValue: -1), arguments: [[0]],
            descriptors: [FileDescriptor(rawValue: -1)])
        SharedMemoryRegion.protectForChild()
    }

    private init(connection: consuming WireSocket, isRemote: Bool) {
        self.connection = connection
        self.isRemote = isRemote
        signal(SIGPIPE, SIG_IGN)
        forkkit_become_subreaper()
        forkkit_watch_children()
    }

    private consuming func loop() -> Never {
        while true {
            let ready = forkkit_wait_readable_or_child(connection.input.rawValue)
            if ready < 0 { leave(status: 70) }
            if ready & 2 != 0 { reapChildren() }
            guard ready & 1 != 0 else { continue }

            if readerIsStale {
                reader = MessagePackFrameReader(maximumMessageSize: Self.maximumMessageSize)
                readerIsStale = false
            }
            let received: WireSocket.Received
            do {
                received = try connection.receive(into: &reader, atMost: 64 << 10, collecting: &unclaimedDescriptors)
            } catch .noBufferSpace {
                refuse("descriptors were lost in transit (more than 253 in one message, or the receive limit was hit)")
            } catch {
                refuse("process \(pid) could not read its next command: \(error)")
            }
            // End of stream (or a reset): the owner has gone away, and so does this process.
            if received == .endOfStream { leave(status: 0) }
            // A child forked by one of these messages stops here: the rest were the template's.
            while !readerIsStale {
                let value: MessagePackValue?
                do { value = try reader.next() } catch { refuse("\(error)") }
                guard let value else { break }
                do {
                    handle(try ControlMessage(value))
                } catch {
                    refuse(error.description)
                }
            }
        }
    }

    private mutating func handle(_ message: ControlMessage) {
        switch message {
        case .load(let path):
            mayHaveThreads = true
            do {
                try ForkRegistry.loadPlugin(at: path)
                send(.ok)
            } catch {
                send(.error(code: error.kind.rawValue, message: error.message))
            }
        case .initialize(let name, let initializerArguments):
            guard case .initializer(let body) = ForkRegistry.entry(named: name)?.body else {
                return send(unknownEntry(name, kind: "initializer"))
            }
            mayHaveThreads = true
            do {
                try body(initializerArguments)
                send(.ok)
            } catch {
                send(.error(code: ForkError.Kind.initializerFailed.rawValue, message: "initializer '\(name)' failed in process \(getpid()): \(error)"))
            }
        case .arguments(let newArguments):
            arguments += newArguments
            send(.ok)
        case .descriptors(let count):
            let claimed = claim(count, for: "descriptors")
            descriptors += claimed
            send(.ok)
        case .fork where isRemote, .forkRun where isRemote:
            refuse("process \(pid) is a remote process started by a command: it cannot fork, since a child would have "
                   + "no connection of its own; RemoteTemplate starts a new process for every child instead")
        case .fork(let parentDeathSignal):
            let childSocket = claim(1, for: "fork")[0]
            _ = fork(childSocket: childSocket, parentDeathSignal: parentDeathSignal)
        case .forkRun(let parentDeathSignal, let name, let newArguments, let count, let capturesOutput):
            let outputs = capturesOutput ? 2 : 0
            let claimed = claim(1 + outputs + count, for: "fork-run")
            let output = Array(claimed.dropFirst().prefix(outputs))
            let passed = Array(claimed.dropFirst(1 + outputs))
            guard case .function(let body) = ForkRegistry.entry(named: name)?.body else {
                claimed.forEach { try? $0.close() }
                return send(unknownEntry(name, kind: "function"))
            }
            if fork(childSocket: claimed[0], parentDeathSignal: parentDeathSignal) {
                if capturesOutput { forkkit_redirect_output(output[0].rawValue, output[1].rawValue) }
                arguments += newArguments
                descriptors += passed
                run(name: name, body, announce: false)
            }
            // The descriptors were for the child alone.
            (output + passed).forEach { try? $0.close() }
        case .run(let name):
            guard case .function(let body) = ForkRegistry.entry(named: name)?.body else {
                // A child that cannot run its function has nothing left to do.
                send(unknownEntry(name, kind: "function"))
                leave(status: 0)
            }
            run(name: name, body, announce: true)
        case .limits(let limits):
            do {
                try limits.applyToCurrentProcess()
                send(.ok)
            } catch {
                send(.error(code: error.kind.rawValue, message: error.message))
            }
        case .hello, .ok, .forked, .running, .error, .exited:
            refuse("'\(message.value.arrayValue?.first?.stringValue ?? "?")' is a reply, not a command")
        }
    }

    /// Takes `count` descriptors that arrived with the current message, or refuses the message.
    private mutating func claim(_ count: Int, for command: String) -> [FileDescriptor] {
        guard unclaimedDescriptors.count >= count else {
            refuse("'\(command)' announces \(count) descriptor(s) but \(unclaimedDescriptors.count) arrived with it; "
                   + "attach them as SCM_RIGHTS to the same message")
        }
        let claimed = Array(unclaimedDescriptors.prefix(count))
        unclaimedDescriptors.removeFirst(count)
        return claimed
    }

    /// Forks; returns `true` in the child, which from now on serves on `childSocket`.
    private mutating func fork(childSocket: FileDescriptor, parentDeathSignal: Int32) -> Bool {
        let threads = mayHaveThreads ? forkkit_thread_count() : 1
        mayHaveThreads = threads != 1
        guard threads == 1 else {
            try? childSocket.close()
            send(.error(
                code: ForkError.Kind.forkRefused.rawValue,
                message: "process \(pid) has \(threads) threads, so fork() is unsafe and was refused; "
                    + "initializers must not leave threads (Dispatch, Task, Thread) running in a template"))
            return false
        }
        let templatePid = pid
        fflush(nil)
        let childPid = Glibc.fork()
        switch childPid {
        case -1:
            let error = errno
            try? childSocket.close()
            send(.error(code: ForkError.Kind.forkRefused.rawValue, message: "fork() failed in process \(templatePid): \(String(cString: strerror(error)))"))
            return false
        case 0:
            // The child: its own connection replaces the template's; what the template had buffered
            // or had not yet claimed belongs to the template.
            if parentDeathSignal != 0 {
                forkkit_set_parent_death_signal(parentDeathSignal)
                if getppid() != templatePid { _exit(0) }
            }
            pid = getpid()
            unclaimedDescriptors.forEach { try? $0.close() }
            unclaimedDescriptors = []
            // The template's connection closes as it is replaced.
            connection = WireSocket(adoptingSocket: childSocket, blocking: true)
            // Bytes the template had buffered are the template's; a fresh reader is made only if this
            // child goes on to read commands (a `fork-run` child never does).
            readerIsStale = true
            return true
        default:
            try? childSocket.close()
            send(.forked(pid: childPid))
            return false
        }
    }

    /// Runs a function and exits; `announce` answers a `run` command first (`fork-run` has no reply
    /// from the child: the template's `forked` already said everything).
    private mutating func run(name: String, _ body: @Sendable (ChildContext) throws -> Void, announce: Bool) -> Never {
        if announce { send(.running(pid: pid)) }
        forkkit_reset_signals()
        SharedMemoryRegion.protectForChild()
        unclaimedDescriptors.forEach { try? $0.close() }
        let context = ChildContext(input: connection.input, output: connection.output, arguments: arguments, descriptors: descriptors)
        do {
            try body(context)
            fflush(nil)
            _exit(0)
        } catch {
            let report = "forkkit: function '\(name)' failed in process \(getpid()): \(error)\n"
            _ = try? FileDescriptor.standardError.writeAll(Array(report.utf8))
            fflush(nil)
            _exit(1)
        }
    }

    /// Reaps every child that has ended and tells the owner how each ended.
    private func reapChildren() {
        var status: Int32 = 0
        while true {
            let pid = waitpid(-1, &status, WNOHANG)
            guard pid > 0 else { return }
            send(.exited(pid: pid, status: ExitStatus(waitStatus: status)))
        }
    }

    private func send(_ message: ControlMessage) {
        // A failure means the owner is gone; the next read sees end of stream.
        try? connection.sendAll(message.encoded)
    }

    private func unknownEntry(_ name: String, kind: String) -> ControlMessage {
        let known = ForkRegistry.names.joined(separator: ", ")
        return .error(
            code: ForkError.Kind.unknownFunction.rawValue,
            message: "no \(kind) named '\(name)' is registered in process \(pid) (registered: \(known.isEmpty ? "none" : known)); "
                + "pass it to ForkTemplate.bootstrap or load the plugin that defines it")
    }

    /// Answers with an error and closes the connection: after bad input the stream cannot be trusted.
    private func refuse(_ reason: String) -> Never {
        send(.error(code: ForkError.Kind.protocolViolation.rawValue, message: reason))
        leave(status: 0)
    }

    private func leave(status: Int32) -> Never {
        unclaimedDescriptors.forEach { try? $0.close() }
        fflush(nil)
        exit(status)
    }
}
