import ForkKit
import ForkKitTestSupport
import ForkPool
import ForkRPC
import Foundation
import LoopbackSSH
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Whether this machine can run the tests' sshd; says why not, once, on standard error.
let sshAvailable: Bool = {
    guard let reason = SSHServer.unavailableReason else { return true }
    FileHandle.standardError.write(Data("RemoteWorkerTests skipped: \(reason)\n".utf8))
    return false
}()

/// A pool of "pool-worker" with `local` workers here and `remote` through `sshd` (the same test
/// worker binary, started by ssh on 127.0.0.1), all started at once.
func makeMixedPool(
    through sshd: SSHServer, local: Int = 1, remote: Int = 1, _ adjust: (inout WorkerPool.Configuration) -> Void = { _ in }
) async throws -> WorkerPool {
    let host = RemoteTemplate.ssh(host: "127.0.0.1", executable: Built.worker, options: sshd.clientOptions)
    return try await makePool { configuration in
        configuration.maximumWorkers = local
        configuration.remoteHosts = [WorkerPool.RemoteHost(host, maximumWorkers: remote)]
        configuration.idleWorkers = local + remote
        adjust(&configuration)
    }
}

/// Whether this machine can make a network namespace for the two-host test; says why not, once.
let namespacesAvailable: Bool = {
    guard sshAvailable else { return false }
    guard let reason = NetworkNamespaceHost.unavailableReason else { return true }
    FileHandle.standardError.write(Data("RemoteWorkerTests' two-host test skipped: \(reason)\n".utf8))
    return false
}()

let networkNamespace = RPCFunction<Int, String>("network-namespace")

@Suite(
    "ForkPool with remote workers through a real sshd on 127.0.0.1", .serialized, .noZombieChildren,
    .enabled("needs OpenSSH's sshd, ssh and ssh-keygen (Debian: openssh-server)") { sshAvailable })
struct RemoteWorkerTests {
    @Test("one local and one remote worker share calls, a map, events and errors")
    func mixedPool() async throws {
        let sshd = try SSHServer()
        defer { sshd.stop() }
        let pool = try await makeMixedPool(through: sshd)
        let places = Set(pool.statistics.workers.map(\.place))
        #expect(places == ["local", "ssh 127.0.0.1"])

        // Both workers answer: two calls that each hold a worker for a while go one to each.
        async let first = pool.call(sleepMilliseconds, 300)
        async let second = pool.call(sleepMilliseconds, 300)
        #expect(try await [first, second] == [300, 300])
        #expect(pool.statistics.workers.allSatisfy { $0.callsServed >= 1 }, "\(pool.statistics.workers)")

        let numbers = Array(0..<1_000)
        #expect(try await pool.map(slowSquare, numbers, chunkSize: 50) == numbers.map { $0 * $0 })
        #expect(pool.statistics.workers.allSatisfy { $0.callsServed >= 5 }, "both places took part: \(pool.statistics.workers)")

        // An error thrown in the remote worker arrives with its message.
        for _ in 0..<4 {
            await #expect { try await pool.call(failIfNegative, -3) } throws: { error in
                "\(error)".contains("negative input -3")
            }
        }

        // Events come from both places, named by the worker's (local) pid.
        async let a = pool.call(emitProgress, 3)
        async let b = pool.call(emitProgress, 3)
        _ = try await (a, b)
        var senders: Set<Int32> = []
        var received = 0
        for await event in pool.events {
            senders.insert(event.pid)
            received += 1
            if received == 6 { break }
        }
        #expect(senders.isSubset(of: Set(pool.statistics.workers.map(\.pid))))
        await pool.shutdown()
    }

    @Test("a killed ssh connection in the middle of a map: its calls run again locally, the map completes, the host is reconnected")
    func killedConnection() async throws {
        let sshd = try SSHServer()
        defer { sshd.stop() }
        let pool = try await makeMixedPool(through: sshd) { $0.retries = 3 }
        let remotePid = try #require(pool.statistics.workers.first { $0.place != "local" }?.pid)
        let numbers = Array(0..<3_000)
        let killer = Task {
            try await Task.sleep(for: .milliseconds(400))
            kill(remotePid, SIGKILL)
        }
        let squares = try await pool.map(slowSquare, numbers, chunkSize: 20)
        try await killer.value
        #expect(squares == numbers.map { $0 * $0 })
        #expect(pool.statistics.counters.workersLost >= 1)
        #expect(pool.statistics.counters.retries >= 1)
        #expect(await eventually(within: 2) { isReaped(remotePid) })
        // The pool reconnects: a new remote worker (a new ssh) takes the old one's place.
        #expect(await eventually(within: 20) {
            pool.statistics.workers.contains { $0.place == "ssh 127.0.0.1" && $0.pid != remotePid }
        }, "workers: \(pool.statistics.workers)")
        #expect(try await pool.map(square, Array(0..<100)) == (0..<100).map { $0 * $0 })
        await pool.shutdown()
    }

    @Test(
        "two hosts: a pool across a veth link to sshd in another network namespace",
        .enabled("needs `ip netns` (iproute2, and the right to make namespaces)") { namespacesAvailable })
    func twoHosts() async throws {
        let other = try NetworkNamespaceHost()
        defer { other.remove() }
        let sshd = try SSHServer(in: other)
        defer { sshd.stop() }
        let host = RemoteTemplate.ssh(host: other.address, executable: Built.worker, options: sshd.clientOptions)
        let pool = try await makePool { configuration in
            configuration.maximumWorkers = 1
            configuration.remoteHosts = [WorkerPool.RemoteHost(host, maximumWorkers: 1)]
            configuration.idleWorkers = 2
        }
        #expect(Set(pool.statistics.workers.map(\.place)) == ["local", "ssh \(other.address)"])
        // Each worker answers from its own network: one from ours, one from the other host's.
        let ours = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/ns/net")
        let seen = try await withThrowingTaskGroup(of: String.self) { group in
            for _ in 0..<20 { group.addTask { try await pool.call(networkNamespace, 0) } }
            var seen: Set<String> = []
            for try await namespace in group { seen.insert(namespace) }
            return seen
        }
        #expect(seen.count == 2 && seen.contains(ours), "namespaces seen: \(seen), ours: \(ours)")
        let numbers = Array(0..<2_000)
        #expect(try await pool.map(slowSquare, numbers, chunkSize: 20) == numbers.map { $0 * $0 })
        #expect(pool.statistics.workers.allSatisfy { $0.callsServed > 0 }, "\(pool.statistics.workers)")
        await pool.shutdown()
    }

    @Test("an unreachable host: the pool serves with local workers and backs off; a remote-only pool fails calls clearly")
    func unreachableHost() async throws {
        let sshd = try SSHServer()
        var options = sshd.clientOptions
        sshd.stop()  // Nothing listens on its port now.
        options += ["-o", "ConnectTimeout=5"]
        let host = RemoteTemplate.ssh(host: "127.0.0.1", executable: Built.worker, options: options)

        let mixed = try await makePool { configuration in
            configuration.maximumWorkers = 1
            configuration.remoteHosts = [WorkerPool.RemoteHost(host, maximumWorkers: 1)]
            configuration.idleWorkers = 2
            configuration.reconnectDelay = .milliseconds(200)
        }
        #expect(mixed.statistics.workers.map(\.place) == ["local"])
        #expect(try await mixed.map(square, Array(0..<1_000)) == (0..<1_000).map { $0 * $0 })
        #expect(await eventually(within: 5) { mixed.statistics.unreachablePlaces == ["ssh 127.0.0.1"] })
        await mixed.shutdown()

        let remoteOnly = try await makePool { configuration in
            configuration.maximumWorkers = 0
            configuration.remoteHosts = [WorkerPool.RemoteHost(host, maximumWorkers: 2)]
        }
        let started = ContinuousClock.now
        await #expect { try await remoteOnly.call(square, 2) } throws: { error in
            (error as? WorkerPoolError)?.kind == .cannotStartWorker && "\(error)".contains("`ssh` ended with exit code 255")
        }
        #expect(ContinuousClock.now - started < .seconds(15))
        await remoteOnly.shutdown()
    }
}
