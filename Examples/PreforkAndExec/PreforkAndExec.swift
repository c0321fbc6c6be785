// forkkit-prefork-exec: AnyEvent::Fork's two classic examples, done for real with ForkKit.
//
// 1. A pool of server processes accepting on the same listening socket, sent once to a template.
// 2. A faster fork+exec: /bin/echo run from a small template with its output redirected to a file
//    and its standard error sent back over the socket, then timed against Foundation's Process.
import ArgumentParser
import ForkKit
import Foundation
import SystemPackage

@main
struct PreforkAndExec: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "forkkit-prefork-exec",
        abstract: "Pre-forked servers on one listening socket, and fork+exec through a template."
    )

    @Option(help: "Server processes accepting on the shared socket.")
    var servers = 4

    @Option(help: "Client connections to make.")
    var connections = 12

    @Option(help: "Programs to start in each fork+exec timing.")
    var execRuns = 200

    @Option(help: "Memory this process touches before the timing, as a large application would hold.")
    var parentMegabytes = 400

    static func main() async {
        // First line of main: when this binary is started as a template it serves here, forever.
        ForkTemplate.bootstrap([
            .function("serve", DemoFunctions.serve),
            .function("exec", DemoFunctions.exec),
        ])
        await main(nil)
    }

    func run() async throws {
        let template = try await ForkTemplate.shared
        print("template: pid \(template.pid), started from this program's own binary\n")
        try await preforkedServers(template)
        try await forkAndExec(template)
    }

    /// Example 1: the listening socket goes to a template once; every child forked from it accepts on it.
    func preforkedServers(_ template: ForkTemplate) async throws {
        print("== 1. \(servers) server processes accepting on one listening socket ==")
        let (listener, port) = try DemoSockets.listen()
        defer { try? listener.close() }
        // A not-yet-running child serves as the template for the servers, so the shared template
        // does not keep the listening socket.
        let serverTemplate = try await template.fork()
        try await serverTemplate.send(descriptors: [listener])
        var children: [RunningChild] = []
        for _ in 0..<servers {
            children.append(try await serverTemplate.fork(running: "serve"))
        }
        print("servers: \(children.map { String($0.pid) }.joined(separator: ", ")) on 127.0.0.1:\(port)")

        var servedBy: [String: Int] = [:]
        for number in 1...connections {
            let reply = try DemoSockets.request("request \(number)", port: port)
            print("  \(reply)")
            servedBy[String(reply.split(separator: " ")[3].dropLast()), default: 0] += 1
        }
        print("connections per server: " + servedBy.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" }.joined(separator: ", "))
        for child in children { child.closeSocket() }  // end of stream: each server exits
        for child in children {
            print("server \(child.pid) ended with \(try await child.exitStatus())")
        }
        print()
    }

    /// Example 2: exec from the small template instead of from this big, multi-threaded process.
    func forkAndExec(_ template: ForkTemplate) async throws {
        print("== 2. fork+exec of /bin/echo with standard output in a file ==")
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("forkkit-demo-echo-\(getpid()).txt").path
        defer { unlink(path) }
        let file = try FileDescriptor.open(path, .writeOnly, options: [.create, .truncate], permissions: .ownerReadWrite)
        let echo = try await template.fork(running: "exec", arguments: ["/bin/echo", "hi"].map { Array($0.utf8) }, descriptors: [file])
        try file.close()
        let echoErrors = try DemoSockets.readToEnd(echo.socket)
        print("/bin/echo hi (pid \(echo.pid)) ended with \(try await echo.exitStatus()); standard error: \(echoErrors.isEmpty ? "(empty)" : echoErrors)")
        print("\(path) now holds: \(try String(contentsOfFile: path, encoding: .utf8).debugDescription)")

        let failing = try await template.fork(
            running: "exec", arguments: ["/bin/ls", "/nonexistent"].map { Array($0.utf8) },
            descriptors: [FileDescriptor(rawValue: 1)])
        let errors = try DemoSockets.readToEnd(failing.socket).trimmingCharacters(in: .whitespacesAndNewlines)
        print("/bin/ls /nonexistent ended with \(try await failing.exitStatus()); its standard error came back over the socket: \(errors.debugDescription)")

        let ballast = Ballast(megabytes: parentMegabytes)
        defer { ballast.release() }
        print("\ntiming \(execRuns) runs of /bin/true, one at a time, with this process holding \(parentMegabytes) MB:")
        let viaTemplate = try await Self.rate(execRuns) {
            let child = try await template.fork(running: "exec", arguments: [Array("/bin/true".utf8)], descriptors: [FileDescriptor(rawValue: 1)])
            _ = try await child.exitStatus()
        }
        let viaProcess = try await Self.rate(execRuns) {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/bin/true")
            try process.run()
            process.waitUntilExit()
        }
        // Built before forking: a fork of a multi-threaded process may only make async-signal-safe calls.
        let truePath = strdup("/bin/true")
        var argv: [UnsafeMutablePointer<CChar>?] = [truePath, nil]
        defer { free(truePath) }
        let viaFork = try await Self.rate(execRuns) {
            // What a template replaces: fork() of this whole process, then exec.
            let pid = fork()
            if pid == 0 {
                execv(truePath!, &argv)
                _exit(127)
            }
            var status: Int32 = 0
            waitpid(pid, &status, 0)
        }
        print(String(format: "  fork of the template + exec:        %7.0f programs/s", viaTemplate))
        print(String(format: "  fork of this process + exec:        %7.0f programs/s (template: %.2fx this rate)", viaFork, viaTemplate / viaFork))
        print(String(format: "  Foundation.Process (posix_spawn):   %7.0f programs/s (template: %.2fx this rate)", viaProcess, viaTemplate / viaProcess))
        print("  The template's rate does not depend on this process's size; a fork of this process slows with")
        print("  every megabyte it holds. posix_spawn shares memory instead of copying page tables, so it wins")
        print("  when nothing needs setting up between fork and exec; the template lets the child run code first.")
    }

    /// Memory written once and held, as a large application's data would be.
    final class Ballast {
        private let bytes: UnsafeMutableRawBufferPointer

        init(megabytes: Int) {
            bytes = .allocate(byteCount: megabytes << 20, alignment: 4096)
            // One distinct value per page, read back below, so the writes cannot be optimized away.
            for page in stride(from: 0, to: bytes.count, by: 4096) { bytes[page] = UInt8(truncatingIfNeeded: page >> 12) }
            precondition(bytes[4096] == 1)
        }

        func release() { bytes.deallocate() }
    }

    static func rate(_ count: Int, _ body: () async throws -> Void) async throws -> Double {
        let clock = ContinuousClock()
        let start = clock.now
        for _ in 0..<count { try await body() }
        let elapsed = clock.now - start
        return Double(count) / (Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18)
    }
}
