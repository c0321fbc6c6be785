// forkkit-distributed-actors: distributed actors that live in worker processes. The compiler
// checks every remote call: no function names as strings, no handle types to keep in step.
import ForkActors

#if canImport(Glibc)
import Glibc
#endif

/// What a hasher refuses: Codable and registered, so the owner catches it as itself.
struct TooManyRounds: Error, Codable {
    let rounds: Int
}

/// Declared once, here, in the program that is also the template: the owner calls it, a worker runs it.
distributed actor Hasher: WorkerActor {
    typealias ActorSystem = WorkerActorSystem

    private var hashed = 0

    /// FNV-1a over `data`, `rounds` times.
    distributed func digest(_ data: [UInt8], rounds: Int) throws -> UInt64 {
        guard rounds <= 1000 else { throw TooManyRounds(rounds: rounds) }
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for _ in 0..<rounds {
            for byte in data { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
        }
        hashed += 1
        return hash
    }

    /// How many digests this actor has made (its state stays in its worker).
    distributed func count() -> Int { hashed }

    /// The worker process it lives in.
    distributed func workerPID() -> Int32 { getpid() }
}

@main struct DistributedActors {
    static func main() async throws {
        ForkTemplate.bootstrap([.distributedActors])  // first line of main: the workers' side

        let system = WorkerActorSystem()
        RPCError.register(TooManyRounds.self)

        // 1. One actor in a worker of its own: the worker goes when the actor goes.
        let hasher = try await system.make(Hasher.self, in: try await ForkTemplate.shared)
        let digest = try await hasher.digest(Array("hello".utf8), rounds: 3)
        print("digest of hello, 3 rounds: \(String(digest, radix: 16)) (in worker \(try await hasher.workerPID()))")

        // 2. Its error, thrown in the worker, caught here as itself.
        do {
            _ = try await hasher.digest([1], rounds: 5000)
        } catch let error as TooManyRounds {
            print("caught TooManyRounds as itself: \(error.rounds) rounds")
        }

        // 3. A pool of two workers, one actor in each, working at once.
        var configuration = WorkerPool.Configuration()
        configuration.maximumWorkers = 2
        let pool = try await WorkerActorSystem.startPool(configuration: configuration)
        let hashers = [try await system.make(Hasher.self, in: pool), try await system.make(Hasher.self, in: pool)]
        let pieces = (0..<200).map { Array("piece \($0)".utf8) }
        let digests = try await withThrowingTaskGroup(of: (Int, UInt64).self) { group in
            for (index, piece) in pieces.enumerated() {
                group.addTask { (index, try await hashers[index % 2].digest(piece, rounds: 10)) }
            }
            var digests = [UInt64](repeating: 0, count: pieces.count)
            for try await (index, digest) in group { digests[index] = digest }
            return digests
        }
        let workers = Set([try await hashers[0].workerPID(), try await hashers[1].workerPID()])
        print("\(digests.count) digests in \(workers.count) workers; each actor made \(try await hashers[0].count()) and \(try await hashers[1].count())")
        await pool.shutdown()
    }
}
