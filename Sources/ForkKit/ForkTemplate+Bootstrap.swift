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
        guard arguments.count > 1, arguments[1] == templateFlag else { return }
        if getenv(bindNowMarker) != nil {
            // The loader has done its work; programs that children exec should start as usual.
            unsetenv("LD_BIND_NOW")
            unsetenv(bindNowMarker)
        }
        TemplateServer.serve(socket: 3)
    }
}
