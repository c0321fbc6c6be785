import CForkSupport
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

extension ForkTemplate {
    /// Registers the program's entry points and, when the program was started as a template, serves
    /// as one and never returns. Call it as the first line of `main`, before anything starts a thread.
    ///
    /// A template is marked by an environment variable that ForkKit reads and removes before `main`
    /// runs, not by an argument: a command-line parser never sees it, so a synchronous
    /// swift-argument-parser `ParsableCommand` can call `bootstrap` first thing in `run()` (the
    /// template is started with the program's own arguments, so that parsing them succeeds again).
    /// An `AsyncParsableCommand`'s `run()` runs on Swift's thread pool, where a template can no
    /// longer fork safely: it calls `bootstrap` in an overridden `static func main()` before parsing.
    ///
    /// A program started as a template that tries to start a template or a worker before calling
    /// `bootstrap` (it forgot to) ends at once, and its owner gets a ``ForkError`` of kind
    /// ``ForkError/Kind/notATemplate`` that names the fix: never a chain of processes.
    ///
    /// ```swift
    /// @main struct Tool {
    ///     static func main() async throws {
    ///         ForkTemplate.bootstrap([
    ///             .function("square") { child in ... },
    ///         ])
    ///         let template = try await ForkTemplate.shared   // this same binary, as a template
    ///         ...
    ///     }
    /// }
    /// ```
    ///
    /// Every entry point needs its own name: two with one name end the program at once (a template
    /// tells its owner why), since nobody could say which of the two a `run` meant.
    public static func bootstrap(_ entryPoints: [ForkEntryPoint]) {
        let taken = ForkRegistry.register(entryPoints)
        let startedAs = forkkit_started_as()
        if !taken.isEmpty {
            let reason = "was given two entry points named \(taken.map { "'\($0)'" }.joined(separator: ", ")); give each its own name"
            if startedAs != Int32(FORKKIT_STARTED_NORMALLY) { abandonTemplateStart(startedAs: startedAs, saying: "its ForkTemplate.bootstrap(...) \(reason)") }
            _ = try? FileDescriptor.standardError.writeAll(Array("ForkTemplate.bootstrap(...) \(reason)\n".utf8))
            exit(70)
        }
        forkkit_mark_bootstrapped()
        if startedAs == Int32(FORKKIT_STARTED_AS_REMOTE_TEMPLATE) { serveRemotely() }
        guard startedAs == Int32(FORKKIT_STARTED_AS_TEMPLATE) else { return }
        let threads = forkkit_thread_count()
        if threads > 1 {
            abandonTemplateStart(
                startedAs: startedAs,
                saying: "called ForkTemplate.bootstrap(...) when it already had \(threads) threads, so it cannot fork safely. "
                    + "Call it first thing in main(), before any Task or Dispatch work; in an AsyncParsableCommand, whose "
                    + "run() runs on Swift's thread pool, override `static func main() async` to call bootstrap and then "
                    + "`await main(nil)` (a synchronous ParsableCommand may call it first thing in run())")
        }
        if getenv(bindNowMarker) != nil {
            // The loader has done its work; programs that children exec should start as usual.
            unsetenv("LD_BIND_NOW")
            unsetenv(bindNowMarker)
        }
        // posix_spawn's dup2 cleared close-on-exec; a program that an initializer execs must not hold it.
        _ = fcntl(3, F_SETFD, FD_CLOEXEC)
        TemplateServer.serve(socket: 3)
    }

    /// Serves the control protocol on standard input and output, for a ``RemoteTemplate`` (started by
    /// `ssh host program --forkkit-remote`). The function's own descriptor 1 goes to standard error,
    /// so that what it prints travels back as the command's error output, not into the stream, a line
    /// at a time.
    private static func serveRemotely() -> Never {
        let input = fcntl(0, F_DUPFD_CLOEXEC, 3)
        let output = fcntl(1, F_DUPFD_CLOEXEC, 3)
        guard input >= 0, output >= 0 else {
            let report = "forkkit: cannot serve on standard input and output: \(String(cString: strerror(errno)))\n"
            _ = try? FileDescriptor.standardError.writeAll(Array(report.utf8))
            exit(70)
        }
        let empty = open("/dev/null", O_RDONLY)
        if empty >= 0 {
            dup2(empty, 0)
            Glibc.close(empty)
        }
        dup2(2, 1)
        // Lines then reach the owner (or its capture) when they are printed, not at exit.
        forkkit_line_buffer_standard_output()
        TemplateServer.serve(input: input, output: output, isRemote: true)
    }
}

extension ForkTemplate {
    /// Stops a program that was started as a template but is about to start `what` before it called
    /// ``bootstrap(_:)``: it tells its owner why on the control connection and ends, instead of
    /// running the owner's code again (which would start a template, which would start another...).
    static func refuseIfBootstrapWasForgotten(toStart what: String) {
        let startedAs = forkkit_started_as()
        guard startedAs != Int32(FORKKIT_STARTED_NORMALLY) else { return }
        abandonTemplateStart(
            startedAs: startedAs,
            saying: "tried to start \(what) before calling ForkTemplate.bootstrap(...). Call ForkTemplate.bootstrap([...]) "
                + "first thing in main() (in a synchronous ParsableCommand, first thing in run()), before anything else the program does")
    }

    /// Ends a process that was started as a template but cannot serve, telling its owner (which is
    /// waiting for `hello`) why.
    private static func abandonTemplateStart(startedAs: Int32, saying reason: String) -> Never {
        let program = (try? currentExecutable()) ?? CommandLine.arguments.first ?? "this program"
        let message = "\(program) (pid \(getpid())) was started as a ForkKit template, but it \(reason)"
        let descriptor = FileDescriptor(rawValue: startedAs == Int32(FORKKIT_STARTED_AS_TEMPLATE) ? 3 : 1)
        let report = ControlMessage.error(code: ForkError.Kind.notATemplate.rawValue, message: message).encoded
        // Only the owner reports it (once): this process shares its standard error.
        try? WireSocket(adopting: descriptor, blocking: true).sendAll(report)
        _exit(70)
    }
}
