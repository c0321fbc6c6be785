import Synchronization

/// Hands captured lines to their handlers off ForkKit's I/O thread, one at a time and in the order
/// they were read, so that a slow handler (a logger writing to a full pipe) holds up no connection.
///
/// Lines wait in a queue of at most ``capacity``; beyond it they are dropped, and the next line
/// delivered is preceded by one that says how many were lost.
final class ChildOutputDelivery: Sendable {
    static let shared = ChildOutputDelivery()

    /// Lines that may wait for a slow handler.
    static let capacity = 65_536

    private let queue: AsyncStream<(ChildOutput, ChildOutput.Line)>.Continuation
    private let dropped = Atomic<Int>(0)

    private init() {
        let (lines, queue) = AsyncStream.makeStream(
            of: (ChildOutput, ChildOutput.Line).self, bufferingPolicy: .bufferingOldest(Self.capacity))
        self.queue = queue
        Task.detached { [self] in
            for await (output, line) in lines {
                let lost = self.dropped.exchange(0, ordering: .relaxed)
                if lost > 0 {
                    output.handler(ChildOutput.Line(
                        pid: line.pid, place: line.place, stream: .standardError,
                        text: "forkkit: \(lost) lines of children's output were dropped: the output handler was slower than the children wrote"))
                }
                output.handler(line)
            }
        }
    }

    /// Queues `line` for `output`'s handler.
    func deliver(_ line: ChildOutput.Line, to output: ChildOutput) {
        if case .dropped = queue.yield((output, line)) { dropped.add(1, ordering: .relaxed) }
    }
}
