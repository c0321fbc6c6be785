// forkkit-remote-pool: one pool over workers on this machine and on another, reached by ssh.
//
//     forkkit-remote-pool                      # the "other machine" is this one, without ssh
//     forkkit-remote-pool worker1 -p 2222      # ssh worker1 (options after the host go to ssh)
//
// The remote host needs this same binary at the same path (see the README's "Remote workers").
import ForkPool
import Foundation

let square = RPCFunction<Int, Int>("square")
let whereAmI = RPCFunction<Int, String>("where-am-i")

@main struct RemotePool {
    static func main() async throws {
        ForkTemplate.bootstrap([
            .rpcWorker("math") { server in
                server.register(square) { $0 * $0 }
                server.register(whereAmI) { _ in "\(ProcessInfo.processInfo.hostName) pid \(getpid())" }
            },
        ])
        let executable = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")
        let arguments = CommandLine.arguments.dropFirst()
        let remote = if let host = arguments.first {
            RemoteTemplate.ssh(host: host, executable: executable, options: Array(arguments.dropFirst()))
        } else {
            // The same stdin/stdout protocol that ssh would carry, to this binary started afresh.
            RemoteTemplate(command: [executable, RemoteTemplate.remoteFlag], name: "direct command")
        }
        try await remote.check()  // the command, the program and its replayed steps, once, up front

        var configuration = WorkerPool.Configuration()
        configuration.maximumWorkers = 1                                              // here
        configuration.remoteHosts = [WorkerPool.RemoteHost(remote, maximumWorkers: 2)]  // there
        configuration.idleWorkers = 3
        configuration.retries = 2
        try await withWorkerPool(running: "math", configuration: configuration) { pool in
            for worker in pool.statistics.workers.sorted(by: { $0.place < $1.place }) {
                print("worker \(worker.pid): \(worker.place)")
            }
            let squares = try await pool.map(square, 1...10_000)
            print("10000 squares, the last \(squares.last!), sum \(squares.reduce(0, +))")
            // Six calls at once: the least-loaded worker takes each, wherever it runs.
            let seen = try await withThrowingTaskGroup(of: String.self) { group in
                for _ in 0..<6 { group.addTask { try await pool.call(whereAmI, 0) } }
                var seen: Set<String> = []
                for try await answer in group { seen.insert(answer) }
                return seen
            }
            print("answered by \(seen.count) processes: \(seen.sorted().joined(separator: "; "))")
            for worker in pool.statistics.workers.sorted(by: { $0.place < $1.place }) {
                print("  \(worker.place): \(worker.callsServed) calls")
            }
        }
    }
}
