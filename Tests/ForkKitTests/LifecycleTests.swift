import ForkKit
import ForkKitTestSupport
import Foundation
import SystemPackage
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite("Template lifetime: death, reaping, start-up failures", .noZombieChildren)
struct LifecycleTests {
    @Test("killing the owner makes the template and its busy and idle children exit within a second")
    func ownerDeath() async throws {
        let (owner, output) = try startWorkerProgram(["owner"])
        let line = String(decoding: output.fileHandleForReading.availableData, as: UTF8.self)
        let pids = line.split(whereSeparator: \.isWhitespace).compactMap { Int32($0) }
        try #require(pids.count == 3, "the owner printed '\(line)'")
        #expect(pids.allSatisfy { !isDead($0) })
        kill(owner.processIdentifier, SIGKILL)
        owner.waitUntilExit()
        #expect(await eventually(within: 1) { pids.allSatisfy(isDead) }, "still alive: \(pids.filter { !isDead($0) })")
    }

    @Test("a dropped template exits and is reaped: no zombie is left")
    func droppedTemplateIsReaped() async throws {
        // A running child keeps its template alive, so both handles go out of scope here.
        func startAndFinish() async throws -> (template: Int32, child: Int32) {
            let template = try await workerTemplate()
            let child = try await template.fork().run("exit-now")
            #expect(try await child.exitStatus() == .exited(0))
            return (template.pid, child.pid)
        }
        let pids = try await startAndFinish()
        #expect(await eventually(within: 2) { isReaped(pids.template) }, "template \(pids.template) was not reaped")
        #expect(isReaped(pids.child))
    }

    @Test("a killed template fails the next request with its signal, and its children's exit waits")
    func killedTemplate() async throws {
        let template = try await workerTemplate()
        let busy = try await template.fork().run("sleep-forever")
        kill(template.pid, SIGKILL)
        let error = try await #require(throws: ForkError.self) {
            // The first request may be written before the death is noticed; it fails all the same.
            for _ in 0..<100 {
                _ = try await template.fork()
                try await Task.sleep(for: .milliseconds(10))
            }
        }
        #expect(error.kind == .processGone)
        #expect(error.message.contains("signal 9 (SIGKILL)"))
        // The busy child dies with its template (parent-death signal), and nobody hangs waiting for it.
        let statusError = try await #require(throws: ForkError.self) { try await busy.exitStatus() }
        #expect(statusError.message.contains("template went away"))
        #expect(await eventually(within: 1) { isDead(busy.pid) })
        #expect(isReaped(template.pid))
    }

    @Test("an executable that does not exist cannot be spawned, and says so")
    func missingExecutable() async throws {
        let error = try await #require(throws: ForkError.self) {
            _ = try await ForkTemplate.spawn(executable: "/nonexistent/program")
        }
        #expect(error.kind == .spawnFailed)
        #expect(error.message.contains("/nonexistent/program"))
    }

    @Test("a program that is not a ForkKit template is reported, not waited on forever")
    func notATemplate() async throws {
        let exits = try await #require(throws: ForkError.self) {
            _ = try await ForkTemplate.spawn(executable: "/bin/true")
        }
        #expect(exits.kind == .notATemplate)
        #expect(exits.message.contains("ended with exit code 0"))
        #expect(exits.message.contains("ForkTemplate.bootstrap"))

        let script = FileManager.default.temporaryDirectory.appendingPathComponent("forkkit-sleeper-\(getpid()).sh").path
        try "#!/bin/sh\nexec sleep 30\n".write(toFile: script, atomically: true, encoding: .utf8)
        chmod(script, 0o755)
        defer { unlink(script) }
        let silent = try await #require(throws: ForkError.self) {
            _ = try await ForkTemplate.spawn(executable: script, startTimeout: .milliseconds(300))
        }
        #expect(silent.kind == .notATemplate)
        #expect(silent.message.contains("did not start serving"))
    }

    @Test("after run, the handle takes no more commands")
    func noCommandsAfterRun() async throws {
        let template = try await workerTemplate()
        let child = try await template.fork()
        let running = try await child.run("wait-for-eof")
        let error = try await #require(throws: ForkError.self) {
            try await child.send(arguments: ["late"])
        }
        #expect(error.kind == .invalidState)
        running.closeSocket()
        #expect(try await running.exitStatus() == .exited(0))
    }
}
