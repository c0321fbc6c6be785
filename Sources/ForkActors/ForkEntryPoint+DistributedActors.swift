import ForkKit
import ForkRPC

extension ForkEntryPoint {
    /// The entry point that hosts distributed actors (``WorkerActor``) in workers: add it to the
    /// program's bootstrap, `ForkTemplate.bootstrap([.distributedActors, ...])`, and make actors
    /// with ``WorkerActorSystem``. Its workers use the asynchronous backend: many calls at once,
    /// each actor isolating its own state as any actor does (its calls interleave at `await`s).
    public static var distributedActors: ForkEntryPoint {
        .asyncRPCWorker(WorkerActorSystem.hostFunction, maximumConcurrentCalls: 1024) { server in
            let system = WorkerActorSystem(hosting: ())
            server.register(method: WorkerActorSystem.makeMethod) { try system.host($0) }
            server.register(method: WorkerActorSystem.callMethod) { try await system.execute($0) }
            server.register(method: WorkerActorSystem.releaseMethod) { system.release($0) }
        }
    }
}
