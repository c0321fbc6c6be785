import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

extension ForkTemplate {
    /// Registers the program's entry points and, when the program was started as a template, serves
    /// as one and never returns. Call it as the first line of `main`, before anything starts a thread.
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
    public static func bootstrap(_ entryPoints: [ForkEntryPoint]) {
        ForkRegistry.register(entryPoints)
        let arguments = CommandLine.arguments
        if arguments.count > 1, arguments[1] == RemoteTemplate.remoteFlag { serveRemotely() }
        guard arguments.count > 1, arguments[1] == templateFlag else { return }
        if getenv(bindNowMarker) != nil {
            // The loader has done its work; programs that children exec should start as usual.
            unsetenv("LD_BIND_NOW")
            unsetenv(bindNowMarker)
        }
        TemplateServer.serve(socket: 3)
    }

    /// Serves the control protocol on standard input and output, for a ``RemoteTemplate`` (started by
    /// `ssh host program --forkkit-remote`). The function's own descriptor 1 goes to standard error,
    /// so that what it prints travels back as the command's error output, not into the stream.
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
            close(empty)
        }
        dup2(2, 1)
        TemplateServer.serve(input: input, output: output, isRemote: true)
    }
}
