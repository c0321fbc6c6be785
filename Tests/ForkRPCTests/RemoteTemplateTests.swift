import ForkKit
import ForkKitTestSupport
import ForkRPC
import Foundation
import SystemPackage
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A RemoteTemplate whose command is the test worker itself, started without ssh: the same stdin and
/// stdout protocol a remote host gets, on this machine. (Over a real sshd: ForkPoolTests' RemoteWorkerTests.)
func directRemote() -> RemoteTemplate {
    RemoteTemplate(command: [Built.worker, RemoteTemplate.remoteFlag], name: "direct test worker", startTimeout: .seconds(20))
}

@Suite("RemoteTemplate: a template over a command's stdin and stdout", .noZombieChildren)
struct RemoteTemplateTests {
    @Test("an RPC worker started by a command answers typed calls, events and errors")
    func rpcOverCommand() async throws {
        let client = try await RPCClient.start(directRemote(), running: "rpc-math")
        #expect(client.worker?.remoteName == "direct test worker")
        #expect(try await client.call(square, 12345) == 152_399_025)
        await #expect(throws: RPCError.self) { try await client.call(divide, Division(dividend: 1, divisor: 0)) }
        async let result = client.call(countDown, 3)
        var ticks: [Int] = []
        for await event in client.events {
            ticks.append(try event.value(as: Int.self))
            if ticks.count == 3 { break }
        }
        #expect(try await result == 0)
        #expect(ticks == [3, 2, 1])
        #expect(try await client.close() == .exited(0))
    }

    @Test("recorded steps are replayed to every new process: arguments and initializers")
    func replay() async throws {
        let remote = directRemote()
        remote.initialize("remember", arguments: ["from the template"])
        remote.send(arguments: ["first"])
        for _ in 0..<2 {
            let child = try await remote.fork(running: "echo-arguments", arguments: [Array("second".utf8)])
            #expect(try readAll(child.socket) == "first\nsecond")
            #expect(try await child.exitStatus() == .exited(0))
        }
        let remembering = try await remote.fork(running: "report-remembered")
        #expect(try readAll(remembering.socket) == "from the template")
        _ = try await remembering.exitStatus()

        // A forked template starts from what was sent so far; what follows is its own.
        let branch = remote.fork()
        branch.send(arguments: ["branch"])
        remote.send(arguments: ["trunk"])
        let fromBranch = try await branch.fork(running: "echo-arguments")
        let fromTrunk = try await remote.fork(running: "echo-arguments")
        #expect(try readAll(fromBranch.socket) == "first\nbranch")
        #expect(try readAll(fromTrunk.socket) == "first\ntrunk")
        _ = try await (fromBranch.exitStatus(), fromTrunk.exitStatus())
    }

    @Test("what a remote function prints goes to standard error, not into the protocol stream")
    func printDoesNotCorrupt() async throws {
        let client = try await RPCClient.start(directRemote(), running: "rpc-printing")
        #expect(try await client.call(square, 7) == 49)
        #expect(try await client.close() == .exited(0))
    }

    @Test("descriptors are refused with a reason, by the template and by the RPC client")
    func descriptorsRefused() async throws {
        let remote = directRemote()
        #expect { try remote.send(descriptors: [.standardOutput]) } throws: { error in
            "\(error)".contains("cannot be passed") && "\(error)".contains("direct test worker")
        }
        let client = try await RPCClient.start(remote, running: "rpc-math")
        let writePidTo = RPCFunction<PassedDescriptor, Int32>("write-pid-to")
        await #expect { try await client.call(writePidTo, PassedDescriptor(.standardError)) } throws: { error in
            "\(error)".contains("remote worker")
        }
        #expect(try await client.call(square, 3) == 9)
        _ = try await client.close()
    }

    @Test("a command that is not a ForkKit program, a missing program, an unknown function or initializer: each a clear error")
    func failures() async throws {
        let notForkKit = RemoteTemplate(command: ["/bin/cat"], startTimeout: .seconds(2))
        await #expect { try await notForkKit.fork(running: "rpc-math") } throws: { error in
            (error as? ForkError)?.kind == .notATemplate && "\(error)".contains("/bin/cat")
        }
        let missing = RemoteTemplate(command: ["/nonexistent/forkkit-program"])
        await #expect { try await missing.fork(running: "rpc-math") } throws: { error in
            (error as? ForkError)?.kind == .spawnFailed && "\(error)".contains("/nonexistent/forkkit-program")
        }
        let unknown = directRemote()
        await #expect { try await unknown.fork(running: "no-such-function") } throws: { error in
            (error as? ForkError)?.kind == .unknownFunction
        }
        let badInitializer = directRemote()
        badInitializer.initialize("no-such-initializer")
        await #expect { try await badInitializer.check() } throws: { error in
            (error as? ForkError)?.kind == .unknownFunction && "\(error)".contains("no-such-initializer")
        }
        try await directRemote().check()

        // A login shell that prints to standard output (a chatty .bashrc) breaks the stream: said so.
        let chatty = RemoteTemplate(command: ["/bin/sh", "-c", "echo Welcome; exec \(Built.worker) \(RemoteTemplate.remoteFlag)"])
        await #expect { try await chatty.fork(running: "rpc-math") } throws: { error in
            (error as? ForkError)?.kind == .notATemplate && "\(error)".contains("before its hello, starting with \"Welcome")
                && "\(error)".contains("login script")
        }
    }

    @Test("killing the command mid-call fails the call with workerDied naming the remote place")
    func killedConnection() async throws {
        let client = try await RPCClient.start(directRemote(), running: "rpc-math")
        let slow = Task { try await client.call(sleepMilliseconds, 5000) }
        try await Task.sleep(for: .milliseconds(200))
        client.worker?.send(signal: SIGKILL)
        await #expect { try await slow.value } throws: { error in
            (error as? RPCError)?.kind == .workerDied && "\(error)".contains("direct test worker")
        }
        _ = try? await client.close()
    }

    @Test("ssh commands quote the remote program for the remote shell")
    func quoting() {
        let remote = RemoteTemplate.ssh(host: "example", executable: "/opt/it's here/tool", options: ["-p", "2222"])
        #expect(remote.command == ["ssh", "-T", "-o", "BatchMode=yes", "-p", "2222", "example", "'/opt/it'\\''s here/tool' '--forkkit-remote'"])
        #expect(remote.placeName == "ssh example")
    }
}
