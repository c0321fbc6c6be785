import Distributed
import MessagePack
import Synchronization

/// Takes what a distributed function returned or threw in the worker, for the response.
public struct WorkerResultHandler: DistributedTargetInvocationResultHandler {
    /// Arguments and results are `Codable`, carried as MessagePack.
    public typealias SerializationRequirement = Codable

    /// Where the outcome is kept until the response is written.
    final class Outcome: Sendable {
        let result = Mutex<Result<MessagePackValue, any Error>?>(nil)
    }

    let outcome = Outcome()

    init() {}

    /// The function returned `value`: encoded for the response.
    public func onReturn<Success: Codable>(value: Success) async throws {
        let encoded = Result { try MessagePackEncoder().encodeValue(value) }
        outcome.result.withLock { $0 = encoded }
    }

    /// The function returned nothing: nil in the response.
    public func onReturnVoid() async throws {
        outcome.result.withLock { $0 = .success(.nil) }
    }

    /// The function threw `error`: it becomes the response's error, as a ForkRPC function's does.
    public func onThrow<Err: Error>(error: Err) async throws {
        outcome.result.withLock { $0 = .failure(error) }
    }
}
