import CForkSupport
import Synchronization
import SystemPackage

#if canImport(Glibc)
import Glibc
#endif

/// A process that forks children on request: a template, or a forked child that has not yet run a
/// function (which can itself be given more arguments and descriptors, or forked again).
///
/// A template is started early, by `posix_spawn` of a program whose `main` begins with
/// ``bootstrap(_:)``, while it is small and single-threaded; code and data loaded into it once are
/// shared copy-on-write by every child it forks. This is Perl's `AnyEvent::Fork`, with a back channel:
/// every failure comes back as a ``ForkError`` that says what happened.
///
/// ```swift
/// let template = try await ForkTemplate.shared                 // the program's own binary
/// try await template.initialize("load-table", arguments: ["/data/table.bin"])
/// let child = try await template.fork().run("serve")         // pid, socket, exit status
/// ```
///
/// Dropping the last reference to a handle tells the process to exit once it is idle.
public final class ForkTemplate: Sendable {
    /// The process id.
    public let pid: Int32
    let connection: ControlConnection
    /// The handle this one was forked from, kept alive: a child dies with its parent process.
    private let parent: ForkTemplate?

    init(pid: Int32, connection: ControlConnection, parent: ForkTemplate?) {
        self.pid = pid
        self.connection = connection
        self.parent = parent
    }

    /// Ends this process now, as dropping the last reference to it would: it sees end of stream on
    /// its control connection and exits, and the children it forked that still run end with it
    /// (their parent-death signal). Commands sent to it afterwards fail. It does not wait.
    ///
    /// ```swift
    /// let template = try await ForkTemplate.spawn(executable: path)
    /// defer { template.close() }
    /// ```
    public func close() {
        connection.close(because: "was closed with ForkTemplate.close()")
    }

    deinit {
        connection.hangUp()
        // A forked child that never ran (or whose RunningChild is gone too) needs no exit status kept.
        if parent != nil { ChildExitBook.forget(pid: pid) }
    }

    // MARK: - Starting a template

    /// Starts a fresh template by `posix_spawn` of `executable` (by default this program's own binary),
    /// with only descriptors 0-2 and its control socket open.
    ///
    /// The executable's `main` must call ``bootstrap(_:)`` first. If it does not start serving within
    /// `startTimeout`, it is killed and the call fails with ``ForkError/Kind/notATemplate``; until it
    /// serves, it is killed if this process dies.
    ///
    /// - Parameters:
    ///   - executable: the program to start; `nil` for this program's own binary. In tests, where
    ///     this program is the test runner, name an executable product of your package:
    ///     ``executable(named:)``.
    ///   - arguments: its arguments (after its path); `nil` for this program's own arguments when
    ///     `executable` is `nil` (so that a command-line parser that runs before ``bootstrap(_:)``
    ///     accepts them again), and none otherwise.
    ///   - startTimeout: how long it may take to start serving.
    ///
    /// ```swift
    /// let template = try await ForkTemplate.spawn()
    /// ```
    public static func spawn(
        executable: String? = nil, arguments: [String]? = nil, startTimeout: Duration = .seconds(10)
    ) async throws -> ForkTemplate {
        refuseIfBootstrapWasForgotten(toStart: "a template")
        let path = try executable ?? ownExecutableAsTemplate()
        let (ours, theirs) = try socketPair()
        // This program's own arguments, so that a command-line parser that runs before bootstrap
        // (a ParsableCommand's run()) accepts them again.
        let ownArguments = executable == nil ? Array(CommandLine.arguments.dropFirst()) : []
        let argv = [path] + (arguments ?? ownArguments)
        let environment = templateEnvironment() + ["\(FORKKIT_TEMPLATE_VARIABLE)=\(getpid())"]
        // Spawned from the I/O thread, which lives as long as this process: until bootstrap, the
        // template's parent-death signal follows the thread that spawned it, and a thread of
        // Swift's pool may retire while the template is still starting.
        let (result, pid) = try await withTaskExecutorPreference(DescriptorMonitor.shared) {
            var result: Int32 = 0
            var spawnedPid: pid_t = 0
            for _ in 0..<50 {
                result = withCStrings(argv) { argv in
                    withCStrings(environment) { envp in
                        forkkit_spawn_template(path, argv, envp, theirs, &spawnedPid)
                    }
                }
                // "Text file busy": a concurrent fork elsewhere in this process briefly holds the freshly
                // written executable open for writing. It passes within milliseconds.
                guard result == ETXTBSY else { break }
                try await Task.sleep(for: .milliseconds(10))
            }
            return (result, spawnedPid)
        }
        Glibc.close(theirs)
        guard result == 0 else {
            Glibc.close(ours)
            throw ForkError(.spawnFailed, "cannot start template \(path): \(String(cString: strerror(result)))")
        }
        let connection = ControlConnection(socket: ours, name: "template \(pid) (\(path))", pidToReap: pid)
        connection.start()
        try await awaitHello(
            on: connection, pid: pid, program: path, startTimeout: startTimeout,
            advice: "Is \(path) a ForkKit program? Its main() must call ForkTemplate.bootstrap(...) before anything else")
        return ForkTemplate(pid: pid, connection: connection, parent: nil)
    }

    /// Waits for a new template's `hello`; kills it after `startTimeout` without one.
    ///
    /// - Throws: ``ForkError/Kind/notATemplate`` with `advice`, when it ends or says something else.
    static func awaitHello(
        on connection: ControlConnection, pid: Int32, program: String, startTimeout: Duration, advice: String
    ) async throws {
        let watchdog = Task {
            try await Task.sleep(for: startTimeout)
            if !connection.hasSaidHello {
                connection.noteBeforeFailure("it did not start serving within \(startTimeout) and was killed")
                kill(pid, SIGKILL)
            }
        }
        defer { watchdog.cancel() }
        let hello: ControlMessage
        do {
            hello = try await connection.hello()
        } catch let error as ForkError where error.kind == .notATemplate {
            throw error  // The process itself said why (it forgot to call bootstrap).
        } catch let error as ForkError {
            throw ForkError(.notATemplate, "\(error.message). \(advice)")
        }
        guard case .hello(let version, _) = hello, version == ControlMessage.version else {
            kill(pid, SIGKILL)
            throw ForkError(.notATemplate, "\(program) speaks control protocol \(hello), this library speaks version \(ControlMessage.version); rebuild both from the same ForkKit")
        }
    }

    /// Set in a template's environment when ForkKit added `LD_BIND_NOW`, so that the template can
    /// remove both before any child execs another program.
    static let bindNowMarker = "FORKKIT_ADDED_LD_BIND_NOW"

    /// This process's environment, plus `LD_BIND_NOW=1`: the dynamic loader then resolves every
    /// symbol when the template starts, instead of every child resolving (and copying the pages of)
    /// the symbols it is first to call. Measured: about 20% more forks per second.
    private static func templateEnvironment() -> [String] {
        var environment: [String] = []
        var pointer = environ
        while let entry = pointer.pointee {
            environment.append(String(cString: entry))
            pointer += 1
        }
        if !environment.contains(where: { $0.hasPrefix("LD_BIND_NOW=") }) {
            environment += ["LD_BIND_NOW=1", "\(bindNowMarker)=1"]
        }
        if let crashReports = CrashReports.environmentEntry { environment.append(crashReports) }
        return environment
    }

    private static let sharedTemplate = Mutex<Task<ForkTemplate, any Error>?>(nil)

    /// The default template, started from this program's binary the first time it is asked for.
    /// `try await ForkTemplate.shared.fork()` is Perl's `AnyEvent::Fork->new`: a new process forked
    /// from it.
    public static var shared: ForkTemplate {
        get async throws {
            let task = sharedTemplate.withLock { task in
                if let task { return task }
                let fresh = Task { try await spawn() }
                task = fresh
                return fresh
            }
            do {
                return try await task.value
            } catch {
                // Let the next caller try again rather than inherit a failure forever.
                sharedTemplate.withLock { if $0 == task { $0 = nil } }
                throw error
            }
        }
    }

    /// Makes a template of the running program by forking it (AnyEvent::Fork::Template).
    ///
    /// Only safe while the program is single-threaded: call it at the very start of `main`, before
    /// anything starts a Task or Dispatch work. Otherwise it throws ``ForkError/Kind/forkRefused``,
    /// naming the thread count. The child keeps every descriptor the program had open.
    public static func forkingCurrentProcess() throws -> ForkTemplate {
        refuseIfBootstrapWasForgotten(toStart: "a template")
        let threads = forkkit_thread_count()
        guard threads == 1 else {
            throw ForkError(
                .forkRefused,
                "this process has \(threads) threads, so forking it is unsafe; call forkingCurrentProcess() "
                    + "first thing in main, or use ForkTemplate.spawn() instead")
        }
        let (ours, theirs) = try socketPair()
        fflush(nil)
        let pid = Glibc.fork()
        if pid < 0 { throw ForkError.systemCall("fork", errno: errno) }
        if pid == 0 {
            Glibc.close(ours)
            TemplateServer.serve(socket: theirs)
        }
        Glibc.close(theirs)
        let connection = ControlConnection(socket: ours, name: "template \(pid) (forked from \(getpid()))", pidToReap: pid)
        connection.start()
        return ForkTemplate(pid: pid, connection: connection, parent: nil)
    }

    // MARK: - Verbs

    /// Loads a plugin (a shared library built as `.library(type: .dynamic)`) into the process; its
    /// `forkkit_plugin_register` adds entry points that children forked afterwards can run.
    public func loadPlugin(at path: String) async throws {
        try await connection.request(.load(path: path))
    }

    /// Runs the registered initializer `name` inside the process, with argument byte strings.
    public func initialize(_ name: String, arguments: [[UInt8]] = []) async throws {
        try await connection.request(.initialize(name: name, arguments: arguments))
    }

    /// Runs the registered initializer `name` inside the process, with text arguments.
    public func initialize(_ name: String, arguments: [String]) async throws {
        try await initialize(name, arguments: arguments.map { Array($0.utf8) })
    }

    /// Puts resource limits on this process; every child forked from it afterwards inherits them.
    /// Send them to a not-yet-running child (``fork(parentDeathSignal:)``) to make a limited
    /// template without limiting the original.
    public func apply(_ limits: ResourceLimits) async throws {
        try await connection.request(.limits(limits))
    }

    /// Appends argument byte strings; the function run later receives them, as does every child
    /// forked from this process afterwards.
    public func send(arguments: [[UInt8]]) async throws {
        try await connection.request(.arguments(arguments))
    }

    /// Appends text arguments (sent as UTF-8).
    public func send(arguments: [String]) async throws {
        try await send(arguments: arguments.map { Array($0.utf8) })
    }

    /// Sends duplicates of `descriptors` (SCM_RIGHTS); the caller keeps its own. The function run
    /// later receives them, as does every child forked from this process afterwards, so a listening
    /// socket sent once to a template reaches every child.
    public func send(descriptors: [FileDescriptor]) async throws {
        for reply in Self.submit(descriptors: descriptors, on: connection) {
            try await reply.value()
        }
    }

    /// Forks a new child, which starts out as a copy of this process that has not yet run anything.
    ///
    /// - Parameter parentDeathSignal: the signal the child gets if this process dies while the child
    ///   is busy (`PR_SET_PDEATHSIG`); `nil` for none. An idle child exits on its own when its owner
    ///   goes away.
    public func fork(parentDeathSignal: Int32? = SIGKILL) async throws -> ForkTemplate {
        let (forked, child) = try submitFork(parentDeathSignal: parentDeathSignal)
        return try await forkedChild(forked, child)
    }

    /// Forks a new child that runs `function` at once, with `arguments` and `descriptors` added to
    /// what this process already holds: the common case, in one message (Perl's `fork->send_arg->run`).
    ///
    /// This process checks that `function` exists before it forks, so an unknown name fails with
    /// ``ForkError/Kind/unknownFunction`` and no child; and nothing but the function's own traffic
    /// ever travels on the child's socket.
    ///
    /// ```swift
    /// let child = try await template.fork(running: "resize", arguments: ["photo.jpg"])
    /// let status = try await child.exitStatus()
    /// ```
    ///
    /// With `output`, the child's standard output and standard error are captured line by line
    /// (see ``ChildOutput``) instead of going where this template's go.
    public func fork(
        running function: String, arguments: [[UInt8]] = [], descriptors: [FileDescriptor] = [],
        parentDeathSignal: Int32? = SIGKILL, output: ChildOutput? = nil
    ) async throws -> RunningChild {
        guard descriptors.count <= 250 || (output == nil && descriptors.count <= 252) else {
            throw ForkError(.invalidState, "fork(running:) passes at most 252 descriptors (250 with output captured) in one message; send more with send(descriptors:) first")
        }
        let pipes = output == nil ? [] : try ChildOutputReader.makePipes()
        // The write ends are in flight (or the request failed); either way these copies are done with.
        defer { pipes.forEach { Glibc.close($0.write) } }
        let (ours, theirs): (Int32, Int32)
        do {
            (ours, theirs) = try Self.socketPair()
        } catch {
            pipes.forEach { Glibc.close($0.read) }
            throw error
        }
        let reply: ControlMessage
        do {
            let message = ControlMessage.forkRun(
                parentDeathSignal: parentDeathSignal ?? 0, function: function, arguments: arguments,
                descriptorCount: descriptors.count, capturesOutput: output != nil)
            let sent = [FileDescriptor(rawValue: theirs)] + pipes.map { FileDescriptor(rawValue: $0.write) } + descriptors
            let forked = connection.submit(message, descriptors: sent)
            Glibc.close(theirs)
            reply = try await forked.value()
        } catch {
            Glibc.close(ours)
            pipes.forEach { Glibc.close($0.read) }
            throw error
        }
        guard case .forked(let childPid) = reply else {
            Glibc.close(ours)
            pipes.forEach { Glibc.close($0.read) }
            throw ForkError(.protocolViolation, "process \(pid) answered 'fork-run' with \(reply)")
        }
        if let output {
            for (pipe, stream) in zip(pipes, [ChildOutput.Stream.standardOutput, .standardError]) {
                ChildOutputReader.start(reading: pipe.read, pid: childPid, place: placeName, stream: stream, into: output)
            }
        }
        return RunningChild(pid: childPid, socket: FileDescriptor(rawValue: ours), keeping: self)
    }

    /// Runs the registered function `name` in this process, which from then on belongs to the
    /// function: the returned ``RunningChild`` holds its socket and learns its exit status.
    public func run(_ name: String) async throws -> RunningChild {
        let reply = try await connection.request(.run(name: name))
        guard case .running = reply else {
            throw ForkError(.protocolViolation, "process \(pid) answered 'run' with \(reply)")
        }
        return RunningChild(pid: pid, socket: connection.takeSocket(), keeping: self)
    }

    /// Asks this process to fork, handing it the child's end of a new socket; returns the pending
    /// `forked` reply and the connection to the child-to-be, which is read from now on.
    private func submitFork(parentDeathSignal: Int32?) throws -> (PendingReply, ControlConnection) {
        let (ours, theirs) = try Self.socketPair()
        let forked = connection.submit(.fork(parentDeathSignal: parentDeathSignal ?? 0), descriptors: [FileDescriptor(rawValue: theirs)])
        // The descriptor is in flight (or the request failed); either way this copy is done with.
        Glibc.close(theirs)
        let child = ControlConnection(socket: ours, name: "child of process \(pid)", pidToReap: nil, rootID: connection.familyID, readMode: .exact)
        child.start()
        return (forked, child)
    }

    private func forkedChild(_ forked: PendingReply, _ child: ControlConnection) async throws -> ForkTemplate {
        let reply = try await forked.value()
        guard case .forked(let childPid) = reply else {
            throw ForkError(.protocolViolation, "process \(pid) answered 'fork' with \(reply)")
        }
        child.rename("child \(childPid)")
        return ForkTemplate(pid: childPid, connection: child, parent: self)
    }

    /// Queues `descriptors` in messages of at most 253 (the kernel's limit for one message).
    private static func submit(descriptors: [FileDescriptor], on connection: ControlConnection) -> [PendingReply] {
        let limit = WireSocket.maximumDescriptorsPerMessage
        return stride(from: 0, to: descriptors.count, by: limit).map { start in
            let part = Array(descriptors[start..<min(start + limit, descriptors.count)])
            return connection.submit(.descriptors(count: part.count), descriptors: part)
        }
    }

    // MARK: - Helpers

    /// The thread that reads every control connection, as a task executor.
    ///
    /// A task that prefers it resumes right where its reply was read, without waking another
    /// thread; wrap a tight loop of forks in it for the lowest latency. Do not block in it: it
    /// reads for every template and child of the process.
    ///
    /// ```swift
    /// try await withTaskExecutorPreference(ForkTemplate.ioExecutor) {
    ///     for _ in 0..<1000 { _ = try await template.fork(running: "work").exitStatus() }
    /// }
    /// ```
    public static var ioExecutor: any TaskExecutor { DescriptorMonitor.shared }

    /// Children whose exit status this process keeps track of now: one for each ``RunningChild``
    /// and forked ``ForkTemplate`` handle that exists. For tests and the soak benchmark, which
    /// check that the book does not grow with every child that came and went.
    package static var trackedChildCount: Int { ChildExitBook.count }

    static func socketPair() throws(ForkError) -> (Int32, Int32) {
        var pair: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &pair) == 0 else {
            throw ForkError.systemCall("socketpair", errno: errno)
        }
        // Large messages (a 1 MiB argument) cross in a few big writes instead of many 200 KB
        // hand-offs; the kernel only commits the memory while data is queued.
        var size: Int32 = 2 << 20
        for end in pair {
            setsockopt(end, SOL_SOCKET, SO_SNDBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        }
        return (pair[0], pair[1])
    }

    /// Finds the executable product `name` of your package next to the running program: in tests
    /// (`swift test`), the test runner and your package's executables are built into one directory.
    ///
    /// A program that is started as a template must call ``bootstrap(_:)`` first; the test runner
    /// does not, so tests start one of the package's own programs instead:
    ///
    /// ```swift
    /// @Test func squares() async throws {
    ///     let template = try await ForkTemplate.spawn(executable: try ForkTemplate.executable(named: "my-tool"))
    ///     let worker = try await RPCClient.start(template, running: "math")
    ///     #expect(try await worker.call(square, 3) == 9)
    /// }
    /// ```
    ///
    /// - Throws: ``ForkError/Kind/spawnFailed`` naming the directory searched, when there is no
    ///   executable file of that name.
    public static func executable(named name: String) throws(ForkError) -> String {
        let program = try currentExecutable()
        let directory = program.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/")
        let path = "\(directory)/\(name)"
        guard access(path, X_OK) == 0 else {
            throw ForkError(
                .spawnFailed,
                "no executable named '\(name)' next to \(program) (in \(directory)); build it first (`swift build` "
                    + "builds every product of the package; `swift build --build-tests` also the tests) and check the product's name")
        }
        return path
    }

    /// This program's binary, for the default template; refused with advice when it is a test runner,
    /// which would run the tests again instead of serving, or when it has not called ``bootstrap(_:)``.
    static func ownExecutableAsTemplate() throws(ForkError) -> String {
        let path = try currentExecutable()
        let name = path.split(separator: "/").last.map(String.init) ?? path
        if name.hasSuffix(".xctest") || name == "swiftpm-testing-helper" {
            throw ForkError(
                .notATemplate,
                "this program is a test runner (\(path)), so it cannot be started as its own template: it does not call "
                    + "ForkTemplate.bootstrap. In tests, start an executable product of your package that does: "
                    + "ForkTemplate.spawn(executable: try ForkTemplate.executable(named: \"my-tool\")), or "
                    + "withWorkerPool(executable: try ForkTemplate.executable(named: \"my-tool\"), running: ...)")
        }
        // Its copy runs the same main: without bootstrap it would run the program again, not serve.
        guard forkkit_was_bootstrapped() != 0 else {
            throw ForkError(
                .notATemplate,
                "this program (\(path)) has not called ForkTemplate.bootstrap(...), so a copy of it started as its template "
                    + "would run the program again instead of serving. Call ForkTemplate.bootstrap([...]) first thing in main() "
                    + "(in a synchronous ParsableCommand, first thing in run(); in an AsyncParsableCommand, in an overridden "
                    + "static func main() before parsing)")
        }
        return path
    }

    static func currentExecutable() throws(ForkError) -> String {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let length = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        guard length > 0 else { throw ForkError.systemCall("readlink /proc/self/exe", errno: errno) }
        return String(decoding: buffer.prefix(length).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    static func withCStrings<R>(_ strings: [String], _ body: (UnsafePointer<UnsafeMutablePointer<CChar>?>) -> R) -> R {
        var pointers = strings.map { strdup($0) }
        pointers.append(nil)
        defer { pointers.forEach { free($0) } }
        return pointers.withUnsafeBufferPointer { body($0.baseAddress!) }
    }
}
