// A program that runs a WorkerPool as a swift-service-lifecycle Service in a ServiceGroup, for the
// tests that send it SIGTERM. Arguments: calls, milliseconds per call, graceful-shutdown timeout in
// milliseconds. It makes every call at once (two run, the rest wait in the queue), prints `ready`
// with the pids once they are all in, and after the group has ended prints how the calls ended.
import ForkPool
import Foundation
import Logging
import ServiceLifecycle

ForkTemplate.bootstrap([
    .rpcWorker("service-worker") { server in
        server.register(RPCFunction<Int, Int>("sleep-ms")) { milliseconds in
            usleep(UInt32(milliseconds) * 1000)
            return milliseconds
        }
    },
])

let arguments = CommandLine.arguments.dropFirst().compactMap { Int($0) }
guard arguments.count == 3 else {
    FileHandle.standardError.write(Data("usage: forkkit-test-service CALLS MILLISECONDS TIMEOUT-MILLISECONDS\n".utf8))
    exit(64)
}
let (calls, milliseconds, timeout) = (arguments[0], arguments[1], arguments[2])
let sleep = RPCFunction<Int, Int>("sleep-ms")

var configuration = WorkerPool.Configuration()
configuration.maximumWorkers = 2
configuration.idleWorkers = 2
configuration.metricsPrefix = nil
configuration.gracefulShutdownTimeout = .milliseconds(timeout)
// A template of the pool's own (this program, started again), which the pool ends when it ends.
let executable = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")
let pool = try await WorkerPool(executable: executable, running: "service-worker", configuration: configuration)
let templatePid = pool.template.pid
let group = ServiceGroup(services: [pool], gracefulShutdownSignals: [.sigterm], logger: Logger(label: "forkkit-test-service"))

let outcomes = Task {
    await withTaskGroup(of: String.self) { group in
        for _ in 0..<calls {
            group.addTask {
                do {
                    return "ok \(try await pool.call(sleep, milliseconds))"
                } catch {
                    return "failed: \(error)"
                }
            }
        }
        var ended: [String] = []
        for await outcome in group { ended.append(outcome) }
        return ended
    }
}
let reporter = Task {
    while true {
        let statistics = pool.statistics
        if statistics.queueLength + statistics.workers.map(\.callsInFlight).reduce(0, +) == calls {
            let workers = statistics.workers.map { String($0.pid) }.joined(separator: ",")
            print("ready template=\(templatePid) workers=\(workers)")
            fflush(nil)
            return
        }
        try await Task.sleep(for: .milliseconds(5))
    }
}
try await group.run()
try await reporter.value
// The template ends with the pool: gone (or a zombie about to be reaped) within a second.
var templateEnded = false
for _ in 0..<100 where !templateEnded {
    let state = (try? String(contentsOfFile: "/proc/\(templatePid)/stat", encoding: .utf8))?.split(separator: ")").last?.dropFirst().first
    templateEnded = state == nil || state == "Z"
    if !templateEnded { try await Task.sleep(for: .milliseconds(10)) }
}
print("template-ended=\(templateEnded)")
let ended = await outcomes.value
print("ok=\(ended.filter { $0.hasPrefix("ok") }.count) failed=\(ended.filter { $0.hasPrefix("failed") }.count)")
for failure in Set(ended.filter { $0.hasPrefix("failed") }) { print(failure) }
do {
    _ = try await pool.call(sleep, 1)
    print("after: ok")
} catch {
    print("after: \(error)")
}
