import CForkSupport

/// How a process ended.
public enum ExitStatus: Sendable, Hashable, CustomStringConvertible {
    /// It called `exit` (or returned from `main`) with this code.
    case exited(Int32)
    /// A signal ended it.
    case signaled(Int32)

    /// Decodes a `waitpid` status.
    init(waitStatus: Int32) {
        var code: Int32 = 0, signal: Int32 = 0
        forkkit_decode_wait_status(waitStatus, &code, &signal)
        self = signal != 0 ? .signaled(signal) : .exited(code)
    }

    /// True for exit code 0.
    public var isSuccess: Bool { self == .exited(0) }

    /// A sentence for people.
    public var description: String {
        switch self {
        case .exited(let code): "exit code \(code)"
        case .signaled(let signal): "signal \(signal) (\(Self.signalName(signal)))"
        }
    }

    /// The conventional name of a signal number, such as `SIGKILL`.
    public static func signalName(_ signal: Int32) -> String {
        let names = [1: "SIGHUP", 2: "SIGINT", 3: "SIGQUIT", 4: "SIGILL", 5: "SIGTRAP", 6: "SIGABRT",
                     7: "SIGBUS", 8: "SIGFPE", 9: "SIGKILL", 10: "SIGUSR1", 11: "SIGSEGV", 12: "SIGUSR2",
                     13: "SIGPIPE", 14: "SIGALRM", 15: "SIGTERM", 24: "SIGXCPU", 25: "SIGXFSZ"]
        return names[Int(signal)] ?? "signal \(signal)"
    }
}
