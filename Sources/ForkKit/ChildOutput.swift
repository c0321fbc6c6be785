import Logging

/// Where the standard output and standard error of children go when they are captured: line by
/// line to a handler, each line tagged with the child's pid and place, instead of straight to the
/// owner's terminal, where a worker's `print` and a crash's backtrace would interleave with the
/// owner's own output.
///
/// Capture is off unless asked for (a pool's `Configuration.childOutput`, `RPCClient.start(...,
/// output:)`, or `ForkTemplate.fork(running:..., output:)`):
///
/// ```swift
/// var configuration = WorkerPool.Configuration()
/// configuration.childOutput = .logging(to: Logger(label: "workers"))
/// // A worker's print("parsed 3 files") becomes:
/// // info workers: parsed 3 files [pid=4711 place=local stream=stdout]
/// ```
///
/// A local child's descriptors 1 and 2 become two pipes that this process reads on ForkKit's I/O
/// thread and hands on to the handler from a task of their own; its standard output is made line-buffered, so that each `print` arrives when it is
/// printed rather than when a 4 KiB buffer fills. A remote child's standard error (its standard
/// output joins it there, see ``RemoteTemplate``) is the pipe of the command (`ssh`) that runs it.
/// What it costs: two pipes per child (the fork-run-exit rate of tiny children drops by about a
/// fifth, see the benchmark report), one wake-up of the I/O thread per burst of output, a hop to
/// the handler's task, and one `write` per line in the child; nothing per call. Lines longer than ``maximumLineLength`` bytes are cut into pieces.
public struct ChildOutput: Sendable {
    /// Which of a child's two output streams a line came from.
    public enum Stream: String, Sendable, Hashable {
        /// Descriptor 1 (`print`).
        case standardOutput = "stdout"
        /// Descriptor 2 (errors, crash reports and backtraces).
        case standardError = "stderr"
    }

    /// One line a child wrote, without its line feed.
    public struct Line: Sendable, Hashable {
        /// The child's pid (for a remote child, that of the local command that runs it, as
        /// `RunningChild.pid`).
        public let pid: Int32
        /// Where the child runs: `local`, or a remote template's place name (`ssh worker1`).
        public let place: String
        /// The stream it was written to.
        public let stream: Stream
        /// The line's text (invalid UTF-8 is repaired).
        public let text: String

        /// A line with these values.
        public init(pid: Int32, place: String, stream: Stream, text: String) {
            self.pid = pid
            self.place = place
            self.stream = stream
            self.text = text
        }
    }

    /// Longer lines are delivered in pieces of this many bytes.
    public static let maximumLineLength = 16 << 10

    /// Called for every line, one at a time and in order per stream, on a task of ForkKit's (not on
    /// its I/O thread, so a slow handler holds up no connection). Lines wait for a slow handler in
    /// a queue of up to 65,536; beyond that they are dropped, and a line that says how many comes
    /// next.
    public let handler: @Sendable (Line) -> Void

    /// Captures into `handler` (see ``handler``).
    public init(_ handler: @escaping @Sendable (Line) -> Void) {
        self.handler = handler
    }

    /// Captures into `logger`: each line is one message with the metadata `pid`, `place` and
    /// `stream`; standard output at `level`, standard error at `errorLevel`. Empty lines are left
    /// out (a crash report's blank lines, say): in a log they say nothing.
    public static func logging(to logger: Logger, level: Logger.Level = .info, errorLevel: Logger.Level = .warning) -> ChildOutput {
        ChildOutput { line in
            guard !line.text.allSatisfy(\.isWhitespace) else { return }
            logger.log(
                level: line.stream == .standardOutput ? level : errorLevel, "\(line.text)",
                metadata: ["pid": "\(line.pid)", "place": "\(line.place)", "stream": "\(line.stream.rawValue)"])
        }
    }
}
