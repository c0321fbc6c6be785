import ForkKit
import ForkRPC

/// A worker process started to host distributed actors (``WorkerActorSystem/startWorker(_:)``):
/// make actors in it with `system.make(Hasher.self, on: worker)`. It goes (its input is closed,
/// and it exits) when the last of its actors and this object have been released.
public final class ActorWorker: Sendable {
    /// The connection to the worker.
    public let client: RPCClient

    /// The worker's process id.
    public var pid: Int32 { client.pid ?? 0 }

    init(client: RPCClient) {
        self.client = client
    }

    deinit {
        let client = client
        Task { _ = try? await client.close() }
    }
}
