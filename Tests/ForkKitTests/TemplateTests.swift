import ForkKit
import ForkKitTestSupport
import Foundation
import SystemPackage
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite("Template: spawn, fork, run", .noZombieChildren)
struct TemplateTests {
    @Test("a spawned template has only descriptors 0-3 open and reports its pid")
    func freshTemplateIsClean() async throws {
        let template = try await workerTemplate()
        #expect(try openDescriptors(of: template.pid) == [0, 1, 2, 3])
        let commandLine = try String(contentsOfFile: "/proc/\(template.pid)/cmdline", encoding: .utf8)
        // Marked by an environment variable, not an argument that a parser would see; it is removed
        // before main, so its children (and what they exec) do not inherit it.
        #expect(!commandLine.contains("--forkkit"))
        let child = try await template.fork(running: "report-template-mark")
        #expect(try readAll(child.socket) == "none")
        #expect(try String(contentsOfFile: "/proc/\(template.pid)/status", encoding: .utf8).contains("Threads:\t1\n"))
    }

    @Test("a forked child has only 0-2 and its socket open, and the pid it reports is its own")
    func childIsCleanAndPidIsRight() async throws {
        let template = try await workerTemplate()
        let child = try await template.fork().run("wait-for-eof")
        let descriptors = try openDescriptors(of: child.pid)
        #expect(descriptors.count == 4)
        #expect(Array(descriptors.prefix(3)) == [0, 1, 2])
        // Its parent is the template, and its socket is the one we hold.
        let stat = try String(contentsOfFile: "/proc/\(child.pid)/stat", encoding: .utf8)
        let fields = stat[stat.index(after: stat.lastIndex(of: ")")!)...].split(separator: " ")
        #expect(Int32(fields[1]) == template.pid)
        child.closeSocket()
        #expect(try await child.exitStatus() == .exited(0))
    }

    @Test("exit statuses come back: return, exit code, throw, signal")
    func exitStatuses() async throws {
        let template = try await workerTemplate()
        #expect(try await template.fork().run("exit-now").exitStatus() == .exited(0))

        let coded = try await template.fork()
        try await coded.send(arguments: ["7"])
        #expect(try await coded.run("exit-with-code").exitStatus() == .exited(7))

        #expect(try await template.fork().run("throwing").exitStatus() == .exited(1))
        let crashed = try await template.fork().run("crash").exitStatus()
        #expect(crashed == .signaled(SIGSEGV))
    }

    @Test("arguments sent to the template and to the child arrive in order")
    func argumentsInherited() async throws {
        let template = try await workerTemplate()
        try await template.send(arguments: ["first", "second"])
        let child = try await template.fork()
        try await child.send(arguments: [Array("third".utf8)])
        let running = try await child.run("echo-arguments")
        #expect(try readAll(running.socket) == "first\nsecond\nthird")
        // A second child sees the template's arguments only.
        let other = try await template.fork().run("echo-arguments")
        #expect(try readAll(other.socket) == "first\nsecond")
    }

    @Test("a descriptor sent to a child arrives and works; the child's pid matches")
    func descriptorArrives() async throws {
        let template = try await workerTemplate()
        let pipe = try makePipe()
        defer { try? pipe.read.close() }
        let child = try await template.fork()
        try await child.send(descriptors: [pipe.write])
        try pipe.write.close()
        let running = try await child.run("write-pid-to-descriptors")
        #expect(try readAll(pipe.read) == "\(running.pid)\n")
        #expect(try await running.exitStatus() == .exited(0))
    }

    @Test("a listening socket sent once to the template is accepted on by two forked children")
    func listeningSocketSharedByChildren() async throws {
        let template = try await workerTemplate()
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        #expect(listener >= 0)
        defer { close(listener) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { generic in
                #expect(bind(listener, generic, length) == 0)
                #expect(listen(listener, 16) == 0)
                #expect(getsockname(listener, generic, &length) == 0)
            }
        }
        try await template.send(descriptors: [FileDescriptor(rawValue: listener)])
        let first = try await template.fork().run("accept-and-greet")
        let second = try await template.fork().run("accept-and-greet")

        var served: Set<String> = []
        for _ in 0..<2 {
            let client = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            let connected = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(client, $0, length) }
            }
            #expect(connected == 0)
            served.insert(try readAll(FileDescriptor(rawValue: client)))
            close(client)
        }
        #expect(served == ["served by \(first.pid)\n", "served by \(second.pid)\n"])
    }

    @Test("an initializer's data is visible in children forked afterwards")
    func initializerDataShared() async throws {
        let template = try await workerTemplate()
        try await template.initialize("remember", arguments: ["loaded once"])
        let child = try await template.fork().run("report-remembered")
        #expect(try readAll(child.socket) == "loaded once")
    }

    @Test("resource limits given to a not-yet-running child reach the children forked from it, not the template")
    func resourceLimits() async throws {
        let template = try await workerTemplate()
        let limited = try await template.fork()
        try await limited.apply(ResourceLimits(addressSpaceBytes: 3 << 30, cpuSeconds: 77, openFiles: 99, niceness: 5))
        let child = try await limited.fork(running: "report-limits")
        #expect(try readAll(child.socket) == "\(3 << 30) 77 99 5")
        let unlimited = try await template.fork(running: "report-limits")
        let fields = try readAll(unlimited.socket).split(separator: " ")
        #expect(fields.count == 4 && fields[1] != "77" && fields[2] != "99" && fields[3] == "0")
        // A limit the system refuses is an error naming it; the process goes on serving.
        let refused = try await #require(throws: ForkError.self) {
            try await limited.apply(ResourceLimits(openFiles: 1 << 40))
        }
        #expect(refused.message.contains("RLIMIT_NOFILE"))
        #expect(try await limited.fork(running: "exit-now").exitStatus() == .exited(0))
    }

    @Test("a failing initializer is reported with its message, and the template goes on serving")
    func failingInitializer() async throws {
        let template = try await workerTemplate()
        let error = try await #require(throws: ForkError.self) {
            try await template.initialize("fail")
        }
        #expect(error.kind == .initializerFailed)
        #expect(error.message.contains("initializer 'fail' failed"))
        #expect(error.message.contains("the table file is missing"))
        #expect(try await template.fork().run("exit-now").exitStatus() == .exited(0))
    }

    @Test("a shared region filled by an initializer is read by children, read-only")
    func sharedRegion() async throws {
        let template = try await workerTemplate()
        let size = 1 << 20
        try await template.initialize("make-table", arguments: ["\(size)"])
        let reader = try await template.fork().run("sum-shared-table")
        let expected = (0..<size).reduce(UInt64(0)) { $0 + UInt64(UInt8(truncatingIfNeeded: $1)) }
        #expect(try readAll(reader.socket) == "\(size) \(expected)")
        // Writing to it is a segmentation fault in the child, not a silent corruption.
        let writer = try await template.fork().run("write-shared-table")
        #expect(try await writer.exitStatus() == .signaled(SIGSEGV))
        // The template keeps no descriptor for it.
        #expect(try openDescriptors(of: template.pid) == [0, 1, 2, 3])
    }

    @Test("a plugin built by the package loads and its function runs")
    func pluginLoads() async throws {
        let template = try await workerTemplate()
        try await template.loadPlugin(at: Built.plugin)
        let child = try await template.fork()
        try await child.send(arguments: ["tests"])
        let running = try await child.run("plugin-greet")
        #expect(try readAll(running.socket) == "hello from the plugin, tests")

        let error = try await #require(throws: ForkError.self) {
            try await template.initialize("plugin-fail")
        }
        #expect(error.kind == .initializerFailed)
        #expect(error.message.contains("the plugin's initializer refused"))
    }

    @Test("a plugin whose names are taken is refused, naming them")
    func pluginNameClash() async throws {
        let template = try await workerTemplate()
        try await template.loadPlugin(at: Built.plugin)
        let error = try await #require(throws: ForkError.self) { try await template.loadPlugin(at: Built.plugin) }
        #expect(error.kind == .pluginLoadFailed)
        #expect(error.message.contains("'plugin-greet'"), "\(error)")
        #expect(error.message.contains("already registered"), "\(error)")
    }

    @Test("two entry points with one name end the program at once, naming it")
    func duplicateEntryPoint() throws {
        let process = Process()
        // Under timeout(1): a regression that hangs fails this test instead of holding the suite.
        process.executableURL = URL(fileURLWithPath: "/usr/bin/timeout")
        process.arguments = ["60", Built.worker]
        process.environment = ProcessInfo.processInfo.environment.merging(["FORKKIT_TEST_DUPLICATE_ENTRY": "1"]) { $1 }
        let errors = Pipe()
        process.standardError = errors
        try process.run()
        let text = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        #expect(process.terminationStatus == 70)
        #expect(text == "ForkTemplate.bootstrap(...) was given two entry points named 'twice'; give each its own name\n")
    }

    @Test("a plugin that cannot be loaded is named in the error")
    func pluginLoadFailure() async throws {
        let template = try await workerTemplate()
        let error = try await #require(throws: ForkError.self) {
            try await template.loadPlugin(at: "/nonexistent/libnothing.so")
        }
        #expect(error.kind == .pluginLoadFailed)
        #expect(error.message.contains("/nonexistent/libnothing.so"))
        // Loading a library that is not a plugin says what is missing.
        let notAPlugin = try await #require(throws: ForkError.self) {
            try await template.loadPlugin(at: "libm.so.6")
        }
        #expect(notAPlugin.message.contains("forkkit_plugin_register"))
        #expect(try await template.fork().run("exit-now").exitStatus() == .exited(0))
    }

    @Test("an unknown function is refused with its name and the registered ones")
    func unknownFunction() async throws {
        let template = try await workerTemplate()
        let child = try await template.fork()
        let error = try await #require(throws: ForkError.self) {
            _ = try await child.run("no-such-function")
        }
        #expect(error.kind == .unknownFunction)
        #expect(error.message.contains("no-such-function"))
        #expect(error.message.contains("exit-now"))
        // The child closed its connection; the template is unaffected.
        #expect(try await template.fork().run("exit-now").exitStatus() == .exited(0))
    }

    @Test("fork(running:) in one message: arguments and descriptors arrive, the status comes back")
    func forkRunning() async throws {
        let template = try await workerTemplate()
        try await template.send(arguments: ["from the template"])
        let echo = try await template.fork(running: "echo-arguments", arguments: [Array("from the call".utf8)])
        #expect(try readAll(echo.socket) == "from the template\nfrom the call")
        #expect(try await echo.exitStatus() == .exited(0))

        let pipe = try makePipe()
        defer { try? pipe.read.close() }
        let writer = try await template.fork(running: "write-pid-to-descriptors", descriptors: [pipe.write])
        try pipe.write.close()
        #expect(try readAll(pipe.read) == "\(writer.pid)\n")
        // The descriptor went to the child only: the template holds nothing new.
        #expect(try openDescriptors(of: template.pid) == [0, 1, 2, 3])
    }

    @Test("fork(running:) with output captured and descriptors: the two pipes come first, the passed descriptors still arrive")
    func forkRunningCapturedWithDescriptors() async throws {
        let template = try await workerTemplate()
        let lines = Mutex<[ChildOutput.Line]>([])
        let pipe = try makePipe()
        defer { try? pipe.read.close() }
        let writer = try await template.fork(
            running: "write-pid-to-descriptors", descriptors: [pipe.write], output: ChildOutput { line in lines.withLock { $0.append(line) } })
        try pipe.write.close()
        #expect(try readAll(pipe.read) == "\(writer.pid)\n")
        #expect(try await writer.exitStatus() == .exited(0))
        #expect(!lines.withLock { $0 }.contains { $0.text.contains("\(writer.pid)") })
        #expect(try openDescriptors(of: template.pid) == [0, 1, 2, 3])
    }

    @Test("close() ends a template at once; a command after it fails saying why")
    func closeTemplate() async throws {
        let template = try await workerTemplate()
        template.close()
        await #expect {
            _ = try await template.fork(running: "exit-now")
        } throws: { error in
            (error as? ForkError)?.kind == .invalidState && "\(error)".contains("ForkTemplate.close()")
        }
        #expect(await eventually(within: 5) { isDead(template.pid) })
        // The same once the template has gone (its end of stream seen): still the reason it was closed.
        await #expect {
            _ = try await template.fork(running: "exit-now")
        } throws: { error in
            (error as? ForkError)?.kind == .invalidState && "\(error)".contains("ForkTemplate.close()")
        }
    }

    @Test("fork(running:) of an unknown function forks nothing and leaves the template usable")
    func forkRunningUnknown() async throws {
        let template = try await workerTemplate()
        let error = try await #require(throws: ForkError.self) {
            _ = try await template.fork(running: "no-such-function")
        }
        #expect(error.kind == .unknownFunction)
        #expect(error.message.contains("no function named 'no-such-function'"))
        #expect(try await template.fork(running: "exit-now").exitStatus() == .exited(0))
    }

    @Test("the thread guard refuses to fork a template that has started a thread")
    func threadGuard() async throws {
        let template = try await workerTemplate()
        try await template.initialize("start-thread")
        let error = try await #require(throws: ForkError.self) {
            _ = try await template.fork()
        }
        #expect(error.kind == .forkRefused)
        #expect(error.message.contains("has 2 threads"))
    }

    @Test("forking the running test process is refused: it is multi-threaded")
    func forkingCurrentProcessGuard() throws {
        let error = try #require(throws: ForkError.self) {
            _ = try ForkTemplate.forkingCurrentProcess()
        }
        #expect(error.kind == .forkRefused)
        #expect(error.message.contains("threads"))
    }

    @Test("a program can make a template of itself while single-threaded (AnyEvent::Fork::Template)")
    func forkingCurrentProcess() throws {
        let (process, output) = try startWorkerProgram(["self-template"])
        process.waitUntilExit()
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(process.terminationStatus == 0)
        #expect(text.contains("output=inherited,given status=exit code 0"), "got: \(text)")
        // The template is a fork of the program, not a fresh spawn.
        let pids = text.split(separator: " ").compactMap { $0.split(separator: "=").last.flatMap { Int32($0) } }
        #expect(pids.count >= 2 && pids[0] != pids[1])
    }

    @Test("a child forked without a parent-death signal outlives its template")
    func parentDeathSignalOptional() async throws {
        let template = try await workerTemplate()
        let guarded = try await template.fork(running: "sleep-forever")
        let free = try await template.fork(running: "sleep-forever", parentDeathSignal: nil)
        kill(template.pid, SIGKILL)
        #expect(await eventually(within: 2) { isDead(guarded.pid) })
        try await Task.sleep(for: .milliseconds(200))
        #expect(!isDead(free.pid), "a child without a parent-death signal should survive")
        kill(free.pid, SIGKILL)
        #expect(await eventually(within: 2) { isDead(free.pid) })
    }

    @Test("a child forked from a not-yet-running child works, and inherits its arguments")
    func forkFromChild() async throws {
        let template = try await workerTemplate()
        let middle = try await template.fork()
        try await middle.send(arguments: ["from the middle"])
        let grandchild = try await middle.fork().run("echo-arguments")
        #expect(try readAll(grandchild.socket) == "from the middle")
        #expect(try await grandchild.exitStatus() == .exited(0))
    }

    @Test("the default template is started once, from the program's own binary")
    func sharedTemplate() throws {
        let (process, output) = try startWorkerProgram(["shared"])
        process.waitUntilExit()
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(text == "same-template=true status=exit code 3\n")
        #expect(process.terminationStatus == 0)
    }
}
