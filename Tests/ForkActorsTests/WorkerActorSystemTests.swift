import ForkActors
import ForkKitTestActors
import ForkKitTestSupport
import Foundation
import LoopbackSSH
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Whether `pid` is gone within `seconds` (a zombie counts as gone: it no longer runs).
func processEnds(_ pid: Int32, within seconds: Double = 10) async throws -> Bool {
    let deadline = ContinuousClock.now + .seconds(seconds)
    while ContinuousClock.now < deadline {
        let state = (try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8))?.split(separator: " ").dropFirst(2).first
        if state == nil || state == "Z" { return true }
        try await Task.sleep(for: .milliseconds(10))
    }
    return false
}

/// Distributed actors in real worker processes: calls the compiler checks, placement, arity,
/// errors, cancellation, worker death, release, pools and remote workers.
@Suite("Distributed actors in worker processes (ForkActors)", .noZombieChildren)
struct WorkerActorSystemTests {
    let system = WorkerActorSystem()

    @Test("an actor made in a worker runs its distributed functions there: any arity, state, generics")
    func calls() async throws {
        let hasher = try await system.make(Hasher.self, in: try await workerTemplate())
        let pid = try await hasher.pid()
        #expect(pid != getpid())
        #expect(hasher.id.pid == pid)
        #expect(try await hasher.digest([1, 2, 3], rounds: 2).count == 8)
        #expect(try await hasher.add(1, 2, 3) == 6)
        #expect(try await hasher.greeting() == "hello from \(pid)")
        #expect(try await hasher.count() == 1)
        #expect(try await hasher.count() == 2)
        #expect(try await hasher.echo("text") == "text")
        #expect(try await hasher.echo([1.5, 2.5]) == [1.5, 2.5])
        // Many calls in flight at once on one actor, each answered.
        let results = try await withThrowingTaskGroup(of: Int.self) { group in
            for value in 0..<50 { group.addTask { try await hasher.add(value, value, value) } }
            return try await group.reduce(into: Set<Int>()) { $0.insert($1) }
        }
        #expect(results == Set((0..<50).map { $0 * 3 }))
    }

    @Test("errors cross as in the RPC layer: a registered type as itself, another as an RPCError naming the function")
    func errors() async throws {
        RPCError.register(BadShape.self)
        let hasher = try await system.make(Hasher.self, in: try await workerTemplate())
        await #expect(throws: BadShape(sides: 2)) { try await hasher.shape(sides: 2) }
        #expect(try await hasher.shape(sides: 4) == 4)
        let error = try await #require(throws: RPCError.self) { try await hasher.refuse() }
        #expect(error.kind == .remote)
        #expect(error.message == "refused on purpose")
        #expect(error.remoteType == "ForkKitTestSupport.TestTimeout")
        #expect(error.function?.contains("refuse") == true, "\(error)")
    }

    @Test("cancelling the calling task cancels the call in the worker; a timeout does too")
    func cancellation() async throws {
        let hasher = try await system.make(Hasher.self, in: try await workerTemplate())
        let nap = Task { try await hasher.nap(milliseconds: 30_000) }
        // Cancelled once it runs in the worker (the actor takes other calls while it sleeps).
        let begun = ContinuousClock.now + .seconds(10)
        while try await !hasher.hasBegunNap(), ContinuousClock.now < begun { try await Task.sleep(for: .milliseconds(10)) }
        nap.cancel()
        await #expect(throws: CancellationError.self) { try await nap.value }
        let deadline = ContinuousClock.now + .seconds(10)
        while try await !hasher.wasCancelled(), ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
        #expect(try await hasher.wasCancelled())

        let slow = try await system.make(Hasher.self, in: try await workerTemplate())
        let timeout = try await #require(throws: RPCError.self) {
            try await WorkerActorSystem.withCallTimeout(.milliseconds(200)) { try await slow.nap(milliseconds: 30_000) }
        }
        #expect(timeout.kind == .timeout)
        #expect(try await slow.add(1, 1, 1) == 3)
    }

    @Test("a worker that dies fails its actors' calls with its exit status; a new actor can be made elsewhere")
    func workerDeath() async throws {
        let template = try await workerTemplate()
        let doomed = try await system.make(Hasher.self, in: template)
        let error = try await #require(throws: RPCError.self) { try await doomed.exitWorker() }
        #expect(error.kind == .workerDied)
        #expect(error.exitStatus == .exited(3), "\(error)")
        await #expect(throws: RPCError.self) { try await doomed.count() }
        let replacement = try await system.make(Hasher.self, in: template)
        #expect(try await replacement.count() == 1)
    }

    @Test("an actor released in the owner is released in its worker; the worker goes with its last actor")
    func release() async throws {
        let worker = try await system.startWorker(try await workerTemplate())
        let second = try await system.make(Hasher.self, on: worker)
        do {
            let first = try await system.make(Hasher.self, on: worker)
            #expect(try await first.actorsInWorker() == 2)
        }
        let deadline = ContinuousClock.now + .seconds(10)
        while try await second.actorsInWorker() != 1, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(10)) }
        #expect(try await second.actorsInWorker() == 1)
        // A worker started for one actor goes when that actor goes.
        let alonePID = try await Self.pidOfShortLivedActor(system)
        #expect(try await processEnds(alonePID), "worker \(alonePID) outlived its only actor")
    }

    /// Makes an actor in a worker of its own, and lets it go.
    static func pidOfShortLivedActor(_ system: WorkerActorSystem) async throws -> Int32 {
        let alone = try await system.make(Hasher.self, in: try await workerTemplate())
        return try await alone.pid()
    }

    @Test("a pool keeps a worker while it hosts an actor, and may stop it once the actor is released")
    func poolKeepsHostingWorkers() async throws {
        var configuration = WorkerPool.Configuration()
        configuration.maximumWorkers = 1
        configuration.metricsPrefix = nil
        configuration.backend = .asynchronous
        configuration.stopDelay = .milliseconds(50)
        let pool = try await WorkerPool(template: try await workerTemplate(), running: WorkerActorSystem.hostFunction, configuration: configuration)
        do {
            let hasher = try await system.make(Hasher.self, in: pool)
            try await Task.sleep(for: .milliseconds(300))  // six stop delays
            #expect(try await hasher.count() == 1, "the pool stopped the worker that hosts an actor")
        }
        let deadline = ContinuousClock.now + .seconds(10)
        while !pool.statistics.workers.isEmpty, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
        #expect(pool.statistics.workers.isEmpty, "an idle worker that hosts nothing was kept")
        await pool.shutdown()
    }

    @Test("an actor reference passed to a worker's actor is refused, saying why")
    func actorReferencesStayPut() async throws {
        let hasher = try await system.make(Hasher.self, in: try await workerTemplate())
        let error = try await #require(throws: WorkerActorError.self) { try await hasher.befriend(hasher) }
        #expect(error.message.hasPrefix("a distributed actor cannot be passed to or returned from a worker's actor"), "\(error)")
        #expect(try await hasher.count() == 1)
    }

    @Test("in a pool: actors spread over the workers, or go to a chosen one; the pool keeps its workers")
    func pool() async throws {
        var configuration = WorkerPool.Configuration()
        configuration.maximumWorkers = 2
        configuration.metricsPrefix = nil
        configuration.stopDelay = .milliseconds(50)
        let pool = try await WorkerActorSystem.startPool(template: try await workerTemplate(), configuration: configuration)
        let a = try await system.make(Hasher.self, in: pool)
        let b = try await system.make(Hasher.self, in: pool)
        let pids = Set([try await a.pid(), try await b.pid()])
        #expect(pids.count == 2, "two actors in a pool of two workers share one: \(pids)")
        let chosen = try #require(pids.first)
        let c = try await system.make(Hasher.self, in: pool, onWorker: chosen)
        #expect(try await c.pid() == chosen)
        // Past the stop delay, a worker that hosts actors is still there.
        try await Task.sleep(for: .milliseconds(300))
        #expect(try await a.count() == 1)
        #expect(try await b.count() == 1)
        await #expect(throws: WorkerPoolError.self) { try await system.make(Hasher.self, in: pool, onWorker: 1) }
        await pool.shutdown()
    }

    @Test("a pool whose workers do not host actors says so")
    func mistakes() async throws {
        var configuration = WorkerPool.Configuration()
        configuration.maximumWorkers = 1
        configuration.metricsPrefix = nil
        let plain = try await WorkerPool(template: try await workerTemplate(), running: "pool-worker", configuration: configuration)
        let error = try await #require(throws: WorkerActorError.self) { try await system.make(Hasher.self, in: plain) }
        #expect(error.message.contains("does not host distributed actors"), "\(error)")
        await plain.shutdown()
    }
}

@Suite(
    "Distributed actors in a remote worker through a real sshd on 127.0.0.1", .noZombieChildren,
    .enabled("needs OpenSSH's sshd, ssh and ssh-keygen (Debian: openssh-server)") { SSHServer.unavailableReason == nil })
struct RemoteActorTests {
    @Test("an actor made in a RemoteTemplate's worker answers its calls")
    func remote() async throws {
        let sshd = try SSHServer()
        defer { sshd.stop() }
        let system = WorkerActorSystem()
        let remote = RemoteTemplate.ssh(host: "127.0.0.1", executable: Built.worker, options: sshd.clientOptions)
        let worker = try await system.startWorker(remote)
        let hasher = try await system.make(Hasher.self, on: worker)
        #expect(try await hasher.add(40, 1, 1) == 42)
        #expect(try await hasher.digest([9], rounds: 1).count == 8)
        #expect(try await hasher.count() == 1)
        // The ssh session ends before sshd stops (stopping waits for its sessions, blocking a thread).
        #expect(try await worker.close() == .exited(0))
    }
}
