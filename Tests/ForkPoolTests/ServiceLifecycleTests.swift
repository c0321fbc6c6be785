import ForkKitTestSupport
import ForkPool
import Foundation
import Logging
import ServiceLifecycle
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Reads `output` without blocking a thread of the cooperative pool until `done` holds for what
/// was read, or until end of stream; fails after `seconds`.
private func read(_ output: Pipe, seconds: Double = 30, until done: (String) -> Bool = { _ in false }) async throws -> String {
    let descriptor = output.fileHandleForReading.fileDescriptor
    var text: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 4096)
    let deadline = ContinuousClock.now + .seconds(seconds)
    while !done(String(decoding: text, as: UTF8.self)) {
        var watched = pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)
        if poll(&watched, 1, 0) > 0 {
            let count = Glibc.read(descriptor, &buffer, buffer.count)
            if count <= 0 { break }
            text += buffer.prefix(count)
            continue
        }
        guard ContinuousClock.now < deadline else {
            throw TestTimeout(description: "read so far: \(String(decoding: text, as: UTF8.self))")
        }
        try await Task.sleep(for: .milliseconds(5))
    }
    return String(decoding: text, as: UTF8.self)
}

/// The pids after `name=` in a line such as `ready template=12 workers=13,14`.
private func pids(_ name: String, in text: String) -> [Int32] {
    guard let field = text.split(whereSeparator: \.isWhitespace).first(where: { $0.hasPrefix("\(name)=") }) else { return [] }
    return field.dropFirst(name.count + 1).split(separator: ",").compactMap { Int32($0) }
}

/// Starts forkkit-test-service with `arguments`, waits for its `ready` line, sends it SIGTERM and
/// waits for it to exit: its ready line, what it printed after, how long it took from the signal.
private func runUntilTerminated(_ arguments: [String]) async throws -> (ready: String, rest: String, took: Duration, status: Int32) {
    let (process, output) = try startProgram(Built.service, arguments)
    let ready = try await read(output) { $0.contains("\n") }
    let signalled = ContinuousClock.now
    kill(process.processIdentifier, SIGTERM)
    let rest = try await read(output)
    try await waitForExit(process)
    return (ready, rest, ContinuousClock.now - signalled, process.terminationStatus)
}

@Suite("A WorkerPool as a swift-service-lifecycle Service in a real ServiceGroup, stopped by SIGTERM", .serialized)
struct ServiceLifecycleTests {
    @Test("SIGTERM: no new calls, the queued calls finish, the workers and the template exit, and so does the program")
    func gracefulShutdown() async throws {
        // 6 calls of 300 ms on 2 workers: 2 run and 4 wait in the queue when SIGTERM arrives.
        let (ready, rest, took, status) = try await runUntilTerminated(["6", "300", "10000"])
        let workers = pids("workers", in: ready), template = pids("template", in: ready)
        #expect(workers.count == 2 && template.count == 1, "\(ready)")
        #expect(status == 0, "\(rest)")
        #expect(rest.contains("ok=6 failed=0"), "\(rest)")
        // The pool's own template (WorkerPool(executable:)) ended with it, before the program did.
        #expect(rest.contains("template-ended=true"), "\(rest)")
        // Calls made after shutdown began fail at once, saying why.
        #expect(rest.contains("after: ") && rest.contains("shut down"), "\(rest)")
        // Three rounds of 300 ms at most, not the 10 s limit.
        #expect(took < .seconds(5), "shutdown took \(took)")
        #expect(await eventually(within: 5) { (workers + template).allSatisfy(isDead) })
    }

    @Test("a call that outlasts the graceful-shutdown timeout is ended with its worker, and the program exits in time")
    func timeoutTerminates() async throws {
        // 3 calls of 20 s on 2 workers, 500 ms to finish them.
        let (ready, rest, took, status) = try await runUntilTerminated(["3", "20000", "500"])
        let workers = pids("workers", in: ready)
        #expect(workers.count == 2, "\(ready)")
        #expect(status == 0, "\(rest)")
        #expect(rest.contains("ok=0 failed=3"), "\(rest)")
        // The calls running when the timeout passed were ended with their workers, saying so.
        let failures = rest.split(separator: "\n").filter { $0.hasPrefix("failed: ") }
        #expect(!failures.isEmpty && failures.allSatisfy { $0.contains("its graceful shutdown did not finish within 0.5 seconds") }, "\(rest)")
        #expect(took >= .milliseconds(500) && took < .seconds(5), "shutdown took \(took)")
        #expect(await eventually(within: 5) { workers.allSatisfy(isDead) })
    }

    @Test("in a group in this process: a pool shut down by other code ends its run(), and so the group; cancelling the group kills the workers")
    func endedElsewhereAndCancelled() async throws {
        let pool = try await makePool { $0.idleWorkers = 1 }
        let group = ServiceGroup(services: [pool], logger: Logger(label: "test"))
        let running = Task { try await group.run() }
        #expect(try await pool.call(square, 4) == 16)
        await pool.shutdown()
        let outcome = await bounded(seconds: 5, unstick: { running.cancel() }) { try await running.value }
        #expect(!outcome.hung, "the group did not end after the pool was shut down")
        #expect(outcome.error is ServiceGroupError, "\(outcome.result)")

        let second = try await makePool { $0.idleWorkers = 2 }
        let workers = second.statistics.workers.map(\.pid)
        let secondGroup = ServiceGroup(services: [second], logger: Logger(label: "test"))
        let secondRunning = Task { try await secondGroup.run() }
        try await Task.sleep(for: .milliseconds(50))
        secondRunning.cancel()
        let ended = await bounded(seconds: 5) { try await secondRunning.value }
        #expect(!ended.hung)
        #expect(await eventually(within: 5) { workers.allSatisfy(isDead) })
        await #expect(throws: WorkerPoolError.self) { try await second.call(square, 2) }
    }
}
