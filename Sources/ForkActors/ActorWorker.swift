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
        // A worker whose function ignores cancellation must not outlive its actors for ever.
        client.cancellationGracePeriod = .seconds(1)
    }

    /// Closes the worker now, whatever actors still live in it (their calls then fail), and
    /// returns how it ended: the way to wait for it, where releasing its actors lets it go in the
    /// background.
    @discardableResult
    public func close() async throws -> ExitStatus? {
        try await client.close()
    }

    deinit {
        let client = client
        Task { _ = try? await client.close() }
    }
}
