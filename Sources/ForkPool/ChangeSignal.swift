import Synchronization

/// A count of changes that tasks can wait on: ``signal()`` counts one and wakes every waiter;
/// ``wait(after:)`` returns once the count is past the one a waiter saw, or when its task is
/// cancelled. A map's progress stream and a pool's end both wait this way.
final class ChangeSignal: Sendable {
    private let state = Mutex(State())

    private struct State {
        var count = 0
        var nextWaiter = 0
        var waiting: [Int: CheckedContinuation<Void, Never>] = [:]
    }

    /// How many changes have been signalled.
    var count: Int { state.withLock { $0.count } }

    /// Counts a change and wakes every waiter.
    func signal() {
        let woken = state.withLock { state in
            state.count += 1
            defer { state.waiting.removeAll() }
            return Array(state.waiting.values)
        }
        for waiter in woken { waiter.resume() }
    }

    /// Returns once the count is past `seen`, or at once when the calling task is cancelled.
    func wait(after seen: Int) async {
        let waiter = state.withLock { state in
            defer { state.nextWaiter += 1 }
            return state.nextWaiter
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let resumeNow = state.withLock { state in
                    guard state.count == seen, !Task.isCancelled else { return true }
                    state.waiting[waiter] = continuation
                    return false
                }
                if resumeNow { continuation.resume() }
            }
        } onCancel: {
            state.withLock { $0.waiting.removeValue(forKey: waiter) }?.resume()
        }
    }
}
