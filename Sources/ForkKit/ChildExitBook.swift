import Synchronization

/// Exit statuses of forked children, as their templates report them, for whoever asks.
///
/// A child's pid is filed when its `forked` reply arrives, before any `exited` notice can, so no
/// status is missed; statuses of pids nobody filed are dropped, and a pid is forgotten when its
/// handle goes away, so the book does not grow with every fork.
enum ChildExitBook {
    private struct Entry {
        var family: ObjectIdentifier
        var outcome: Result<ExitStatus, ForkError>?
        var waiters: [(id: UInt64, continuation: CheckedContinuation<ExitStatus, any Error>)] = []
    }

    private static let entries = Mutex<[Int32: Entry]>([:])
    private static let nextWaiterID = Atomic<UInt64>(0)

    static func expect(pid: Int32, family: ObjectIdentifier) {
        entries.withLock { $0[pid] = Entry(family: family) }
    }

    static func record(pid: Int32, status: ExitStatus) {
        settle { entries in
            guard entries[pid] != nil, entries[pid]?.outcome == nil else { return [] }
            entries[pid]!.outcome = .success(status)
            return [pid]
        }
    }

    /// Every child of a template that ended is gone too, but its status will never be reported.
    static func templateEnded(family: ObjectIdentifier, error: ForkError) {
        settle { entries in
            let pids = entries.filter { $0.value.family == family && $0.value.outcome == nil }.map(\.key)
            for pid in pids {
                entries[pid]!.outcome = .failure(ForkError(
                    .processGone, "the exit status of child \(pid) is unknown: its template went away (\(error.message))"))
            }
            return pids
        }
    }

    static func status(of pid: Int32) -> ExitStatus? {
        entries.withLock { try? $0[pid]?.outcome?.get() }
    }

    /// Waits for `pid`'s exit status; a cancelled task stops waiting with `CancellationError`.
    static func wait(for pid: Int32) async throws -> ExitStatus {
        let id = nextWaiterID.add(1, ordering: .relaxed).newValue
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                let ready: Result<ExitStatus, any Error>? = entries.withLock { entries in
                    guard entries[pid] != nil else {
                        return .failure(ForkError(.invalidState, "process \(pid) is not a child that ForkKit is tracking"))
                    }
                    if let outcome = entries[pid]!.outcome { return outcome.mapError { $0 } }
                    // Checked under the lock the cancellation handler takes: cancelled before this,
                    // the handler found no waiter to remove.
                    if Task.isCancelled { return .failure(CancellationError()) }
                    entries[pid]!.waiters.append((id, continuation))
                    return nil
                }
                if let ready { continuation.resume(with: ready) }
            }
        } onCancel: {
            let waiter = entries.withLock { entries -> CheckedContinuation<ExitStatus, any Error>? in
                guard let index = entries[pid]?.waiters.firstIndex(where: { $0.id == id }) else { return nil }
                return entries[pid]!.waiters.remove(at: index).continuation
            }
            waiter?.resume(throwing: CancellationError())
        }
    }

    static func forget(pid: Int32) {
        _ = entries.withLock { $0.removeValue(forKey: pid) }
    }

    /// Children filed now: those whose handle still exists (or whose fork is being answered).
    static var count: Int { entries.withLock { $0.count } }

    private static func settle(_ change: (inout [Int32: Entry]) -> [Int32]) {
        let resumptions = entries.withLock { entries in
            change(&entries).map { pid in
                defer { entries[pid]!.waiters = [] }
                return (entries[pid]!.outcome!, entries[pid]!.waiters)
            }
        }
        for (outcome, waiters) in resumptions {
            for waiter in waiters { waiter.continuation.resume(with: outcome) }
        }
    }
}
