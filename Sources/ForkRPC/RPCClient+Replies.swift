import ForkKit
import Logging
import MessagePack
import Synchronization
import SystemPackage

#if canImport(Glibc)
import Glibc
#endif

/// What the worker sends, as the monitor thread hands it over, and the end of the connection.
extension RPCClient {
    // MARK: - Reading (on the monitor thread)

    func received(_ incoming: RPCConnection.Incoming) {
        switch incoming {
        case .ended(let violation):
            end(violation.map { RPCError(.protocolViolation, $0, pid: pid) })
        case .message(let message):
            do {
                try dispatch(message)
            } catch let error as RPCError {
                end(error)
            } catch {
                end(RPCError(.protocolViolation, "sent bytes that are not MessagePack-RPC (\(error)); the connection was closed", pid: pid))
            }
        }
    }

    /// Handles one message from the worker. A response goes, undecoded, to its caller; anything
    /// else is read into a value first.
    func dispatch(_ message: MessagePackMessage) throws {
        let responseID = message.withObject { message -> UInt32? in
            guard message.count == 4, message[0].integerValue == 1 else { return nil }
            return message[1].integerValue.flatMap(UInt32.init(exactly:))
        }
        guard let id = responseID else {
            defer { message.release() }
            return try dispatch(try RPCMessage(try message.withObject { try $0.value() }))
        }
        let outcome = state.withLock { state in
            // A traced call's spans came before its response; later ones bring their own carrier.
            if !state.traces.isEmpty { state.traces[id] = nil }
            return state.table.responseArrived(id, at: .now)
        }
        switch outcome {
        case .deliver(let call, let drained):
            call.caller.resume(returning: message)
            for watcher in drained { watcher.resume(returning: true) }
        case .late(let answered):
            message.release()
            for watcher in answered { watcher.resume(returning: true) }
        case .unexpected:
            message.release()
            throw RPCError(.protocolViolation, "answered msgid \(id), which no call is waiting for; the connection was closed", pid: pid)
        }
    }

    func dispatch(_ message: RPCMessage) throws {
        switch message {
        case .response(let id, _, _):
            throw RPCError(.protocolViolation, "sent a malformed response to msgid \(id); the connection was closed", pid: pid)
        case .notification(RPCMessage.workerMethod, let params):
            state.withLock { $0.announcedBackend = params.first?.stringValue }
            settleAnnouncement()
        case .notification(RPCMessage.cancelMethod, let params):
            if let id = params.first?.integerValue.flatMap(UInt32.init(exactly:)) { cancelServing(id) }
        case .notification(RPCMessage.spansMethod, let params):
            replaySpans(params)
        case .notification(let method, let params):
            if method == RPCLogHandler.method, let logger, RPCLogHandler.forward(params, to: logger, pid: pid) { return }
            eventSink.yield(RPCEvent(name: method, params: params))
        case .request(let id, let method, let params):
            serve(request: id, method: method, params: params)
        }
    }

    /// Replays the spans of `$spans` (`[msgid, [record, ...]]`, or with the call's carrier as a third
    /// element for spans that ended after the call's response) into the tracer of the call that made
    /// them. Malformed spans are dropped: they never end a connection.
    func replaySpans(_ params: [MessagePackValue]) {
        guard params.count >= 2, let id = params[0].integerValue.flatMap(UInt32.init(exactly:)),
              case .array(let values) = params[1] else { return }
        let carrier = params.count > 2 ? CallTrace.carrier(from: params[2]) : nil
        let known = state.withLock { $0.traces[id] }
        // A carrier that is not the known call's own: the msgid was used again since.
        guard let trace = carrier.map({ carrier in known.flatMap { $0.carrier == carrier ? $0 : nil } ?? .detached(carrier: carrier) }) ?? known
        else { return }
        trace.replay(values.compactMap(SpanRecord.init))
    }

    /// The connection is over: every call fails, with the worker's exit status when it has one.
    /// Runs once; `error` says how the worker broke the protocol, nil when it went away.
    func end(_ error: RPCError?) {
        let pid = self.pid
        // New calls fail at once from here on. Nothing more will answer an abandoned call.
        guard let watchers = state.withLock({ $0.table.end(error ?? RPCError(.workerDied, "the worker has gone", pid: pid), final: error != nil) })
        else { return }
        connection.stopReading(breaking: error != nil)
        cancelServingAll()
        // A handler that holds this client (it calls the worker back) would keep it alive for ever.
        state.withLock { state in
            state.handlers = RPCHandlers()
            state.traces = [:]
        }
        eventSink.finish()
        settleAnnouncement()
        for watcher in watchers { watcher.resume(returning: true) }
        // A broken protocol says what happened: the calls held fail now, whatever the worker does next.
        if let error { return failHeldCalls(with: error) }
        let worker = self.worker
        // The exit notice comes from the template on another connection, usually a moment later.
        // Meanwhile the calls held stay in the table, so that their timeouts and cancellation still
        // end them (a worker that closed its socket may never exit).
        Task {
            let status = try? await withThrowingTaskGroup(of: ExitStatus?.self) { group in
                group.addTask { try await worker?.exitStatus() }
                group.addTask { try await Task.sleep(for: .seconds(1)); return nil }
                defer { group.cancelAll() }  // exitStatus() ends when cancelled
                return try await group.next() ?? nil
            }
            var sentence = status.map { "died (\($0)) before answering" } ?? "closed its connection before answering"
            // Its crash report went to a file, not the owner's terminal (see CrashReports): its gist goes here.
            if case .signaled = status, let pid, let crash = CrashReports.summary(ofCrashOf: pid) {
                sentence += " (\(crash))"
            }
            // This client's own reason, unless the worker died of something else first (a crash says more).
            if let reason = self.state.withLock({ $0.killReason }), status == nil || status == .signaled(SIGKILL) {
                sentence = (status.map { "was killed (\($0)) before answering" } ?? "did not answer") + ": \(reason)"
            }
            if let place = worker?.remoteName {
                sentence += "; it ran remotely (\(place)), so the connection may have been lost: pid \(pid.map(String.init) ?? "?") is the local command's"
            }
            self.failHeldCalls(with: RPCError(.workerDied, sentence, pid: pid, exitStatus: status))
        }
    }

    /// Fails every call still held with `failure`, named after each call's function.
    func failHeldCalls(with failure: RPCError) {
        let (calls, drained) = state.withLock { $0.table.failHeldCalls(with: failure) }
        for (caller, error) in calls { caller.resume(throwing: error) }
        for watcher in drained { watcher.resume(returning: true) }
    }
}
