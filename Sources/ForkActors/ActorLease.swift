import ForkPool
import ForkRPC

/// The owner's hold on one actor in a worker, kept in the actor's ID: when the last reference
/// to the actor goes, the worker is told to release it, and the worker that hosts it learns that
/// it hosts one actor fewer (a pool's worker may then stop when idle; a worker started for actors
/// goes when its last actor goes).
final class ActorLease: Sendable {
    /// Where the actor lives.
    enum Host: Sendable {
        /// A worker started for actors (``WorkerActorSystem/startWorker(_:)``).
        case worker(ActorWorker)
        /// A worker of a pool.
        case pool(WorkerPool, pid: Int32)
    }

    let client: RPCClient
    let number: UInt64
    let host: Host

    init(client: RPCClient, number: UInt64, host: Host) {
        self.client = client
        self.number = number
        self.host = host
    }

    deinit {
        let (client, number) = (client, number)
        // Nobody waits for the answer; a worker that has gone has released it anyway.
        Task { _ = try? await client.call(method: WorkerActorSystem.releaseMethod, params: [.uint(number)], timeout: .seconds(10)) }
        if case .pool(let pool, let pid) = host { pool.actorReleased(fromWorker: pid) }
    }
}
