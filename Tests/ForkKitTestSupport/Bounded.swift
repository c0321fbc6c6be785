import Foundation
import Synchronization

/// How a bounded piece of a test ended: its result, how long it took, and whether it had to be
/// unstuck.
public struct BoundedOutcome<Value: Sendable>: Sendable {
    /// What the body returned or threw.
    public let result: Result<Value, any Error>
    /// From the start until the body ended (for a hung body: until it was given up on).
    public let time: Duration
    /// True when the body did not end within its bound and `unstick` had to end it.
    public let hung: Bool

    /// The error the body threw, if it threw.
    public var error: (any Error)? {
        if case .failure(let error) = result { return error }
        return nil
    }
}

/// Runs `body` in a task and waits at most `seconds` for it to end, so that a test of something
/// that must not hang fails instead of hanging the suite: past the bound, `unstick` runs (it must
/// make `body` end, for example by killing a worker) and the outcome says `hung`.
public func bounded<Value: Sendable>(
    seconds: Double, unstick: @escaping @Sendable () -> Void = {}, _ body: @escaping @Sendable () async throws -> Value
) async -> BoundedOutcome<Value> {
    let start = ContinuousClock.now
    let ended = Mutex<ContinuousClock.Instant?>(nil)
    let task = Task {
        defer { ended.withLock { $0 = .now } }
        return try await body()
    }
    let inTime = await eventually(within: seconds) { ended.withLock { $0 != nil } }
    if !inTime { unstick() }
    let result = await task.result
    let end = inTime ? ended.withLock { $0 } ?? .now : start + .milliseconds(Int(seconds * 1000))
    return BoundedOutcome(result: result, time: end - start, hung: !inTime)
}
