import ForkKit
import ForkKitTestSupport
import ForkRPC
import Foundation
import Testing

/// RPC connections spread over several monitor threads (`DescriptorMonitor.connectionThreads`),
/// against real workers.
@Suite("ForkRPC: connections read by several monitor threads", .serialized)
struct ConnectionThreadsTests {
    /// The names of this process's threads that read connections.
    func monitorThreadNames() -> Set<String> {
        let tasks = "/proc/self/task"
        let ids = (try? FileManager.default.contentsOfDirectory(atPath: tasks)) ?? []
        return Set(ids.compactMap { id in
            (try? String(contentsOfFile: "\(tasks)/\(id)/comm", encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
        }.filter { $0.hasPrefix("forkkit-monitor") || $0.hasPrefix("forkkit-io-") })
    }

    @Test("three threads: clients take them in turn, calls on all of them are answered, and a caller on its client's executor runs on that thread")
    func spreadOverThreads() async throws {
        let before = DescriptorMonitor.connectionThreads
        DescriptorMonitor.connectionThreads = 3
        defer { DescriptorMonitor.connectionThreads = before }
        let template = try await workerTemplate()
        // Clients take the threads in turn, but tests running alongside take turns too: start
        // clients until two threads are seen (three in a row can all land on one when others'
        // connections come in between), at most 12.
        var clients: [RPCClient] = []
        var executors: Set<ObjectIdentifier> = []
        while clients.count < 3 || (executors.count < 2 && clients.count < 12) {
            let client = try await RPCClient.start(template, running: "rpc-math")
            clients.append(client)
            executors.insert(ObjectIdentifier(client.ioExecutor as AnyObject))
        }
        #expect(executors.count >= 2, "\(clients.count) clients in a row were all read by one thread")
        #expect(monitorThreadNames().count >= 2, "threads: \(monitorThreadNames())")

        try await withThrowingTaskGroup(of: Void.self) { group in
            for (index, client) in clients.enumerated() {
                group.addTask {
                    for value in 0..<200 {
                        let result = try await client.call(square, value + index * 1000)
                        #expect(result == (value + index * 1000) * (value + index * 1000))
                    }
                }
            }
            try await group.waitForAll()
        }
        for client in clients {
            let onItsThread = try await withTaskExecutorPreference(client.ioExecutor) {
                _ = try await client.call(square, 3)
                return (client.ioExecutor as! DescriptorMonitor).isCurrentThread
            }
            #expect(onItsThread)
            _ = try await client.close()
        }
    }
}
