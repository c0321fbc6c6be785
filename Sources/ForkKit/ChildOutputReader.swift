import CForkSupport
import SystemPackage

#if canImport(Glibc)
import Glibc
#endif

/// Reads one captured output stream of a child (the read end of a pipe) on ForkKit's I/O thread and
/// hands it on line by line (through ``ChildOutputDelivery``), until the child and everything that
/// inherited the pipe have closed it.
final class ChildOutputReader: @unchecked Sendable {
    // Touched only on the monitor thread, in `drain`, once reading has started.
    private var pending: [UInt8] = []
    private var buffer = [UInt8](repeating: 0, count: ChildOutput.maximumLineLength)
    private let descriptor: Int32
    private let pid: Int32
    private let place: String
    private let stream: ChildOutput.Stream
    private let output: ChildOutput
    private let monitor = DescriptorMonitor.shared

    /// `count` new pipes (both ends close-on-exec): a child gets the write ends, readers the read ends.
    static func makePipes(count: Int = 2) throws(ForkError) -> [(read: Int32, write: Int32)] {
        var pipes: [(read: Int32, write: Int32)] = []
        for _ in 0..<count {
            var ends: [Int32] = [-1, -1]
            guard forkkit_pipe_cloexec(&ends) == 0 else {
                let error = ForkError.systemCall("pipe2 (for a child's output)", errno: errno)
                pipes.forEach { close($0.read); close($0.write) }
                throw error
            }
            pipes.append((ends[0], ends[1]))
        }
        return pipes
    }

    /// Reads `descriptor` (the read end of a pipe, owned from now on) until end of stream, handing
    /// each line of child `pid` to `output`.
    static func start(reading descriptor: Int32, pid: Int32, place: String, stream: ChildOutput.Stream, into output: ChildOutput) {
        ChildOutputReader(descriptor: descriptor, pid: pid, place: place, stream: stream, output: output).start()
    }

    private init(descriptor: Int32, pid: Int32, place: String, stream: ChildOutput.Stream, output: ChildOutput) {
        self.descriptor = descriptor
        self.pid = pid
        self.place = place
        self.stream = stream
        self.output = output
    }

    private func start() {
        _ = fcntl(descriptor, F_SETFL, fcntl(descriptor, F_GETFL) | O_NONBLOCK)
        // The handler holds the reader until end of stream.
        monitor.watch(descriptor) { [self] in drain() }
    }

    private func drain() {
        let count = buffer.withUnsafeMutableBytes { Glibc.read(descriptor, $0.baseAddress, $0.count) }
        if count < 0, errno == EAGAIN || errno == EINTR { return }
        guard count > 0 else {
            // End of stream (or an error, which ends it too): what is left is the last line.
            if !pending.isEmpty { deliver(pending[...]) }
            pending = []
            monitor.unwatch(descriptor)
            close(descriptor)
            return
        }
        pending += buffer[..<count]
        var start = pending.startIndex
        while let newline = pending[start...].firstIndex(of: UInt8(ascii: "\n")) {
            deliver(pending[start..<newline])
            start = newline + 1
        }
        pending.removeSubrange(..<start)
        while pending.count >= ChildOutput.maximumLineLength {
            deliver(pending[..<ChildOutput.maximumLineLength])
            pending.removeFirst(ChildOutput.maximumLineLength)
        }
    }

    private func deliver(_ bytes: ArraySlice<UInt8>) {
        var line = bytes
        if line.last == UInt8(ascii: "\r") { line = line.dropLast() }
        ChildOutputDelivery.shared.deliver(
            ChildOutput.Line(pid: pid, place: place, stream: stream, text: String(decoding: line, as: UTF8.self)), to: output)
    }
}
