@testable import ForkRPC
import Testing

/// The call table on its own: events in, actions out, no process and no socket. Callers and
/// watchers are plain strings here, so every test reads which one would be resumed.
@Suite("CallTable: the call table as a state machine")
struct CallTableTests {
    typealias Table = CallTable<String, String>
    let start = ContinuousClock.now

    func delivered(_ outcome: Table.ResponseOutcome) -> (caller: String, function: String, drained: [String])? {
        guard case .deliver(let call, let drained) = outcome else { return nil }
        return (call.caller, call.function, drained)
    }

    @Test("pipelining: calls held side by side are answered in any order, each to its own caller")
    func pipelining() {
        var table = Table()
        for id in UInt32(0)..<3 {
            let refusal = table.admit(id, function: "f\(id)", caller: "caller \(id)")
            #expect(refusal == nil)
        }
        #expect(table.heldCount == 3)
        let second = table.responseArrived(2, at: start), first = table.responseArrived(0, at: start)
        let third = table.responseArrived(1, at: start)
        #expect(delivered(second)?.caller == "caller 2")
        #expect(delivered(first)?.function == "f0")
        #expect(delivered(third)?.caller == "caller 1")
        #expect(table.heldCount == 0)
        #expect(table.lastAnswer == start)
    }

    @Test("after the worker went away, new calls wait for the error that says how it ended, then get it at once")
    func callsWaitForTheFinalFailure() {
        var table = Table()
        _ = table.end(RPCError(.workerDied, "the worker has gone"), final: false)
        guard case .heldUntilEnd = table.admit(1, function: "f", caller: "late") else { Issue.record("the call was not held"); return }
        #expect(table.heldCount == 1)
        let (failed, _) = table.failHeldCalls(with: RPCError(.workerDied, "died (SIGKILL) before answering"))
        #expect(failed.map(\.0) == ["late"])
        #expect(failed.first?.1.message.contains("SIGKILL") == true)
        guard case .ended(let failure) = table.admit(2, function: "f", caller: "later") else { Issue.record("not refused"); return }
        #expect(failure.message.contains("SIGKILL"))
        // A protocol violation is the last word at once.
        var broken = Table()
        _ = broken.end(RPCError(.protocolViolation, "garbage"))
        guard case .ended = broken.admit(1, function: "f", caller: "c") else { Issue.record("not refused"); return }
    }

    @Test("a response to a msgid no call holds is the peer's protocol violation")
    func unknownMessageID() {
        var table = Table()
        _ = table.admit(1, function: "f", caller: "a")
        guard case .unexpected = table.responseArrived(7, at: start) else { Issue.record("msgid 7 was not refused"); return }
        // The held call is untouched.
        let answer = table.responseArrived(1, at: start)
        #expect(delivered(answer)?.caller == "a")
        // A second answer to the same call is unknown too.
        guard case .unexpected = table.responseArrived(1, at: start) else { Issue.record("a second answer was accepted"); return }
    }

    @Test("timeout or cancellation: the call is given up on, the worker told, and its late answer dropped")
    func abandonAndLateAnswer() {
        var table = Table()
        _ = table.admit(4, function: "slow", caller: "a")
        let abandonment = table.abandon(4)
        #expect(abandonment?.call.caller == "a")
        #expect(abandonment?.tellWorker == true)
        let again = table.abandon(4)
        #expect(again == nil, "a call is given up on once")
        #expect(table.awaitsAbandonedAnswers)
        guard case .late(let answered) = table.responseArrived(4, at: start) else { Issue.record("the late answer was not expected"); return }
        #expect(answered.isEmpty)
        #expect(!table.awaitsAbandonedAnswers)
    }

    @Test("a watcher of abandoned calls is given back when the last of them is answered, or when its time runs out")
    func watchingAbandonedCalls() {
        var table = Table()
        let nothing = table.watchAbandonedCalls("nothing to wait for")
        #expect(nothing == nil)
        for id in UInt32(0)..<2 {
            _ = table.admit(id, function: "f", caller: "c\(id)")
            _ = table.abandon(id)
        }
        let key = table.watchAbandonedCalls("watcher")
        #expect(key != nil)
        guard case .late(let first) = table.responseArrived(0, at: start), case .late(let second) = table.responseArrived(1, at: start) else {
            Issue.record("late answers were not expected"); return
        }
        #expect(first.isEmpty && second == ["watcher"])
        let stopped = table.stopWatching(key!)
        #expect(stopped == nil, "a watcher given back is not given back twice")

        _ = table.admit(5, function: "f", caller: "c5")
        _ = table.abandon(5)
        let timedOut = table.watchAbandonedCalls("impatient")!
        let impatient = table.stopWatching(timedOut)
        #expect(impatient == "impatient")
    }

    @Test("refusals: a closing table, an ended one (with its failure), a cancelled caller")
    func refusals() {
        var table = Table()
        guard case .cancelled = table.admit(0, function: "f", caller: "a", cancelled: true) else { Issue.record("a cancelled caller was held"); return }
        #expect(table.heldCount == 0)
        _ = table.end(RPCError(.workerDied, "the worker has gone"))
        guard case .ended(let failure) = table.admit(1, function: "f", caller: "b") else { Issue.record("an ended table held a call"); return }
        #expect(failure.kind == .workerDied)

        var closing = Table()
        let idle = closing.beginClosing("closer")
        #expect(idle)
        guard case .closing = closing.admit(0, function: "f", caller: "a") else { Issue.record("a closing table held a call"); return }
    }

    @Test("close waits for the calls in flight: its watcher comes back with the last answer, withdrawal or abandonment")
    func drainingOnClose() {
        var table = Table()
        _ = table.admit(0, function: "f", caller: "a")
        _ = table.admit(1, function: "g", caller: "b")
        _ = table.admit(2, function: "h", caller: "c")
        let idle = table.beginClosing("closer")
        #expect(!idle)
        let answer = table.responseArrived(0, at: start)
        #expect(delivered(answer)?.drained == [])
        let withdrawn = table.withdraw(1)
        #expect(withdrawn.drained == [])
        let abandoned = table.abandon(2)
        #expect(abandoned?.drained == ["closer"])
    }

    @Test("death with calls held: they stay held (their timeouts still end them) until failed with the exit status, named each")
    func deathWithCallsHeld() {
        var table = Table()
        _ = table.admit(0, function: "square", caller: "a")
        _ = table.admit(1, function: "cube", caller: "b")
        _ = table.admit(2, function: "slow", caller: "c")
        _ = table.abandon(2)
        let watcher = table.watchAbandonedCalls("watcher")
        #expect(watcher != nil)
        let ended = table.end(RPCError(.workerDied, "the worker has gone"))
        #expect(ended == ["watcher"], "nothing will answer an abandoned call now")
        let again = table.end(RPCError(.workerDied, "again"))
        #expect(again == nil, "the end comes once")
        #expect(table.heldCount == 2)
        // A held call's timeout still ends it, and the worker is not told (it cannot be).
        let timedOut = table.abandon(1)
        #expect(timedOut?.tellWorker == false)
        let (failed, _) = table.failHeldCalls(with: RPCError(.workerDied, "died (signal 9) before answering"))
        #expect(failed.map(\.0) == ["a"])
        #expect(failed.first?.1.function == "square")
        #expect(failed.first?.1.message == "died (signal 9) before answering")
        guard case .ended(let failure) = table.admit(3, function: "f", caller: "d") else { Issue.record("held a call after the end"); return }
        #expect(failure.message == "died (signal 9) before answering", "new calls fail with what is known last")
    }

    @Test("a call whose send failed is taken back; one given up on while its send waited no longer awaits an answer")
    func withdraw() {
        var table = Table()
        _ = table.admit(1, function: "f", caller: "a")
        let first = table.withdraw(1)
        #expect(first.call?.caller == "a" && first.answered.isEmpty)
        #expect(table.heldCount == 0)

        _ = table.admit(2, function: "f", caller: "b")
        _ = table.abandon(2)  // its timeout passed while the send waited for room
        let watcher = table.watchAbandonedCalls("watcher")
        #expect(watcher != nil)
        let second = table.withdraw(2)  // then the send gave up with nothing sent
        #expect(second.call == nil && second.answered == ["watcher"])
        #expect(!table.awaitsAbandonedAnswers, "the worker never had the request: nothing to wait for")
    }
}
