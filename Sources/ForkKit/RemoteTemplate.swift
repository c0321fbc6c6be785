import CForkSupport
import Synchronization
import SystemPackage

#if canImport(Glibc)
import Glibc
#endif

/// A template on another machine, reached through a command such as `ssh host program` whose
/// standard input and output carry the same control protocol, and after `run` the same
/// MessagePack-RPC, as a local template's socket (Perl's `AnyEvent::Fork::Remote`).
///
/// A remote process cannot fork children that would each need a connection of their own, so every
/// child is a fresh process: the command runs again, and what was sent to the template (plugins,
/// initializers, arguments, resource limits) is replayed to it before it runs its function. Only the
/// program is needed on the remote host: the same binary, started with `--forkkit-remote`, whose
/// `main` calls ``ForkTemplate/bootstrap(_:)`` first, as for a local template.
///
/// ```swift
/// let remote = RemoteTemplate.ssh(host: "worker1", executable: "/opt/app/tool")
/// remote.initialize("load-table", arguments: ["/data/table.bin"])
/// let client = try await RPCClient.start(remote, running: "math")
/// ```
///
/// Descriptors cannot cross the command's byte stream: ``send(descriptors:)`` always throws.
public final class RemoteTemplate: ChildLauncher {
    /// The argument that makes ``ForkTemplate/bootstrap(_:)`` serve on standard input and output.
    public static let remoteFlag = "--forkkit-remote"

    /// The command run for every child; its standard input and output become the connection.
    public let command: [String]
    /// How errors and statistics name this place (`ssh worker1`).
    public let placeName: String
    /// How long a new process may take to answer (ssh's connection and login included).
    public let startTimeout: Duration
    /// What every new process is sent before its function runs, in order.
    private let steps = Mutex<[ControlMessage]>([])

    /// A template reached by running `command` (its first element is searched on `PATH`).
    ///
    /// ```swift
    /// // The same binary on this machine, without ssh: a remote template for tests and trials.
    /// let nearby = RemoteTemplate(command: ["/opt/app/tool", RemoteTemplate.remoteFlag])
    /// ```
    public init(command: [String], name: String? = nil, startTimeout: Duration = .seconds(30)) {
        precondition(!command.isEmpty, "RemoteTemplate needs a command to run")
        self.command = command
        self.placeName = name ?? command.joined(separator: " ")
        self.startTimeout = startTimeout
    }

    /// A template on `host`, started by `ssh [options] host executable --forkkit-remote`.
    ///
    /// ssh runs without a terminal (`-T`) and never asks for a password (`BatchMode=yes`): set up
    /// key authentication first. `options` are passed to ssh as they are (`["-p", "2222", "-i", key]`).
    /// `executable` is the path of the same program on the remote host.
    public static func ssh(
        host: String, executable: String, options: [String] = [], startTimeout: Duration = .seconds(30)
    ) -> RemoteTemplate {
        let remoteCommand = [executable, remoteFlag].map(shellQuoted).joined(separator: " ")
        return RemoteTemplate(
            command: ["ssh", "-T", "-o", "BatchMode=yes"] + options + [host, remoteCommand],
            name: "ssh \(host)", startTimeout: startTimeout)
    }

    // MARK: - What every child is sent first

    /// Loads a plugin (its path on the remote host) into every child before its function runs.
    public func loadPlugin(at path: String) {
        steps.withLock { $0.append(.load(path: path)) }
    }

    /// Runs the initializer `name` in every child before its function runs.
    public func initialize(_ name: String, arguments: [[UInt8]] = []) {
        steps.withLock { $0.append(.initialize(name: name, arguments: arguments)) }
    }

    /// Runs the initializer `name` in every child, with text arguments.
    public func initialize(_ name: String, arguments: [String]) {
        initialize(name, arguments: arguments.map { Array($0.utf8) })
    }

    /// Appends argument byte strings that every child's function receives.
    public func send(arguments: [[UInt8]]) {
        steps.withLock { $0.append(.arguments(arguments)) }
    }

    /// Appends text arguments (sent as UTF-8).
    public func send(arguments: [String]) {
        send(arguments: arguments.map { Array($0.utf8) })
    }

    /// Puts resource limits on every child.
    public func apply(_ limits: ResourceLimits) {
        steps.withLock { $0.append(.limits(limits)) }
    }

    /// Always throws: descriptors travel only over a Unix socket, and this connection is the
    /// command's byte stream (through ssh, on another machine).
    public func send(descriptors: [FileDescriptor]) throws(ForkError) {
        throw Self.noDescriptors(placeName)
    }

    /// A template that starts from what this one has been sent so far; what is sent to either
    /// afterwards is its own (AnyEvent::Fork::Remote's `fork`: nothing runs until a child starts).
    ///
    /// ```swift
    /// remote.initialize("load-table", arguments: ["/data/table.bin"])
    /// let english = remote.fork(), german = remote.fork()
    /// english.send(arguments: ["en"])
    /// german.send(arguments: ["de"])
    /// ```
    public func fork() -> RemoteTemplate {
        let copy = RemoteTemplate(command: command, name: placeName, startTimeout: startTimeout)
        let recorded = steps.withLock { $0 }
        copy.steps.withLock { $0 = recorded }
        return copy
    }

    // MARK: - Children

    /// Starts a child: runs the command, replays what was sent to this template, and runs `function`
    /// with `arguments` added.
    ///
    /// - Throws: ``ForkError/Kind/notATemplate`` when the command does not start a ForkKit program
    ///   in time (ssh cannot connect or log in, the program is missing), the error of a replayed
    ///   step (an unknown initializer, say), or ``ForkError/Kind/unknownFunction``.
    ///
    /// With `output`, the command's standard error, which carries the remote program's standard
    /// output and error, is captured line by line as the child's ``ChildOutput/Stream/standardError``
    /// (see ``ChildOutput``); without it, it goes where this process's goes.
    public func fork(running function: String, arguments: [[UInt8]] = [], output: ChildOutput? = nil) async throws -> RunningChild {
        var last: [ControlMessage] = arguments.isEmpty ? [] : [.arguments(arguments)]
        last.append(.run(name: function))
        let (pid, connection, reply) = try await start(then: last, output: output)
        guard case .running = reply else {
            _ = await endUnstarted(pid)
            throw ForkError(.protocolViolation, "\(placeName) answered 'run' with \(reply)")
        }
        return RunningChild(pid: pid, socket: connection.takeSocket(), keeping: self, remoteName: placeName)
    }

    /// Starts a child running `function` (``fork(running:arguments:output:)``).
    public func launch(running function: String, arguments: [[UInt8]]) async throws -> RunningChild {
        try await fork(running: function, arguments: arguments)
    }

    /// Starts a child running `function`, capturing its output (``fork(running:arguments:output:)``).
    public func launch(running function: String, arguments: [[UInt8]], output: ChildOutput?) async throws -> RunningChild {
        try await fork(running: function, arguments: arguments, output: output)
    }

    /// Starts one process, replays what was sent to this template, and ends it: a quick check that
    /// the command, the remote program and every step work, before a pool depends on them.
    public func check() async throws {
        let (pid, connection, _) = try await start(then: [])
        connection.hangUp()
        _ = try? await ChildExitBook.wait(for: pid)
        ChildExitBook.forget(pid: pid)
    }

    /// Runs the command, waits for its `hello`, and sends the recorded steps and then `last`, all at
    /// once (one round trip over the network, not one per step); returns the last reply.
    private func start(then last: [ControlMessage], output: ChildOutput? = nil) async throws -> (Int32, ControlConnection, ControlMessage) {
        let errorPipe = output == nil ? nil : try ChildOutputReader.makePipes(count: 1)[0]
        let (ours, theirs): (Int32, Int32)
        do {
            (ours, theirs) = try ForkTemplate.socketPair()
        } catch {
            if let errorPipe { close(errorPipe.read); close(errorPipe.write) }
            throw error
        }
        let pid: Int32
        do {
            defer { if let errorPipe { close(errorPipe.write) } }
            pid = try spawn(connection: theirs, errorOutput: errorPipe?.write ?? -1)
        } catch {
            close(ours)
            if let errorPipe { close(errorPipe.read) }
            throw error
        }
        close(theirs)
        if let output, let errorPipe {
            ChildOutputReader.start(reading: errorPipe.read, pid: pid, place: placeName, stream: .standardError, into: output)
        }
        ChildExitBook.expect(pid: pid, family: ObjectIdentifier(self))
        Self.reapWhenExited(pid)
        let connection = ControlConnection(
            socket: ours, name: "\(placeName) (local pid \(pid))", pidToReap: nil, rootID: ObjectIdentifier(self), readMode: .exact)
        connection.start()
        do {
            try await ForkTemplate.awaitHello(
                on: connection, pid: pid, program: "`\(command.joined(separator: " "))`", startTimeout: startTimeout,
                advice: "Does it work from a shell? (ssh exits with 255 when it cannot connect or log in, and says why "
                    + (output == nil ? "on standard error.)" : "on standard error, which goes to the ChildOutput handler here.)")
                    + " The remote program's main() must call ForkTemplate.bootstrap(...) first")
            let replies = (steps.withLock { $0 } + last).map { connection.submit($0) }
            var reply = ControlMessage.ok
            for pending in replies { reply = try await pending.value() }
            return (pid, connection, reply)
        } catch {
            connection.hangUp()
            let status = await endUnstarted(pid)
            guard let error = error as? ForkError, let status else { throw error }
            throw ForkError(error.kind, "\(error.message) (`\(command[0])` ended with \(status))")
        }
    }

    // MARK: - Helpers

    private static func noDescriptors(_ placeName: String) -> ForkError {
        ForkError(
            .invalidState,
            "descriptors cannot be passed to \(placeName): they travel only over a Unix socket on one machine, and a "
                + "remote child's connection is its command's byte stream; open the file or socket on the remote side instead")
    }

    private func spawn(connection: Int32, errorOutput: Int32) throws(ForkError) -> Int32 {
        ForkTemplate.refuseIfBootstrapWasForgotten(toStart: "a remote template")
        var pid: pid_t = 0
        let result = ForkTemplate.withCStrings(command) { argv in
            forkkit_spawn_command(argv, environ, connection, errorOutput, &pid)
        }
        guard result == 0 else {
            close(connection)
            throw ForkError(.spawnFailed, "cannot run `\(command.joined(separator: " "))`: \(String(cString: strerror(result)))")
        }
        return pid
    }

    /// Ends a command whose child never started (it must not outlive it) and tells how it ended:
    /// ssh's own exit code, when it gave up by itself, says more than the closed connection.
    private func endUnstarted(_ pid: Int32) async -> ExitStatus? {
        defer { ChildExitBook.forget(pid: pid) }
        let ended = Task { try await ChildExitBook.wait(for: pid) }
        let killer = Task {
            try await Task.sleep(for: .milliseconds(500))
            kill(pid, SIGKILL)
        }
        defer { killer.cancel() }
        guard let status = try? await ended.value else { return nil }
        return status == .signaled(SIGKILL) || status == .exited(0) ? nil : status
    }

    /// Reaps `pid` when it exits (watching a pidfd on the monitor thread) and files its status.
    private static func reapWhenExited(_ pid: Int32) {
        let pidfd = forkkit_pidfd_open(pid)
        guard pidfd >= 0 else { return }
        DescriptorMonitor.shared.watch(pidfd) {
            var status: Int32 = 0
            let reaped = waitpid(pid, &status, WNOHANG)
            guard reaped != 0 else { return }
            DescriptorMonitor.shared.unwatch(pidfd)
            close(pidfd)
            if reaped == pid { ChildExitBook.record(pid: pid, status: ExitStatus(waitStatus: status)) }
        }
    }

    /// `text` as one word for a POSIX shell (ssh hands the remote command to the login shell).
    static func shellQuoted(_ text: String) -> String {
        "'" + text.split(separator: "'", omittingEmptySubsequences: false).joined(separator: "'\\''") + "'"
    }
}
