import CForkSupport
import ForkKit
import ForkKitTestSupport
import Foundation
import MessagePack
import SystemPackage
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Speaks the control protocol by hand to a freshly spawned template, to send what a well-behaved
/// owner never would.
private struct RawTemplate {
    let pid: pid_t
    let socket: Int32

    init() throws {
        var pair: [Int32] = [-1, -1]
        try #require(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &pair) == 0)
        var pid: pid_t = 0
        let argv: [UnsafeMutablePointer<CChar>?] = [strdup(Built.worker), nil]
        // The mark of a template start (protocol/README.md): the owner's pid in FORKKIT_TEMPLATE.
        let environment: [UnsafeMutablePointer<CChar>?] = [strdup("\(FORKKIT_TEMPLATE_VARIABLE)=\(getpid())"), nil]
        defer { (argv + environment).forEach { free($0) } }
        try #require(forkkit_spawn_template(Built.worker, argv, environment, pair[1], &pid) == 0)
        close(pair[1])
        self.pid = pid
        self.socket = pair[0]
        let hello = try next()
        #expect(hello?.arrayValue?.first == "hello")
    }

    func send(_ bytes: [UInt8], descriptors: [Int32] = []) {
        _ = forkkit_send_with_descriptors(socket, bytes, bytes.count, descriptors, Int32(descriptors.count), 0)
    }

    func send(_ value: MessagePackValue, descriptors: [Int32] = []) {
        send(value.encoded(), descriptors: descriptors)
    }

    /// The next message, or nil at end of stream.
    func next() throws -> MessagePackValue? {
        var reader = MessagePackFrameReader()
        var buffer = [UInt8](repeating: 0, count: 1)
        while true {
            if let message = try reader.next() { return message }
            var watched = pollfd(fd: socket, events: Int16(POLLIN), revents: 0)
            guard poll(&watched, 1, 10_000) > 0 else { throw TestTimeout(description: "no reply within 10 s") }
            guard read(socket, &buffer, 1) == 1 else { return nil }
            reader.append(buffer)
        }
    }

    /// Waits for the template to exit and returns its status.
    func exitStatus() -> Int32 {
        var status: Int32 = 0
        waitpid(pid, &status, 0)
        close(socket)
        return status
    }
}

@Suite("Control protocol: bad input is answered, never crashes or hangs", .noZombieChildren)
struct ControlProtocolTests {
    /// Sends `bytes`, expects an error reply of `code` containing `phrase`, then end of stream and a clean exit.
    private func expectRefusal(_ bytes: [UInt8], descriptors: [Int32] = [], code: String, mentioning phrase: String) throws {
        let template = try RawTemplate()
        template.send(bytes, descriptors: descriptors)
        let reply = try #require(try template.next())
        let fields = try #require(reply.arrayValue)
        #expect(fields.first == "error")
        #expect(fields.dropFirst().first?.stringValue == code)
        let message = fields.last?.stringValue ?? ""
        #expect(message.contains(phrase), "message was: \(message)")
        #expect(try template.next() == nil, "the connection should be closed after bad input")
        #expect(template.exitStatus() == 0, "the template should exit cleanly, not crash")
    }

    @Test("garbage bytes")
    func garbage() throws {
        try expectRefusal([0xc1, 0xc1, 0xc1], code: "protocol", mentioning: "malformed")
    }

    @Test("a message that is not an array with a command name")
    func notACommand() throws {
        try expectRefusal(MessagePackValue.uint(7).encoded(), code: "protocol", mentioning: "command name")
    }

    @Test("an unknown command")
    func unknownCommand() throws {
        try expectRefusal((["frobnicate", 1] as MessagePackValue).encoded(), code: "protocol", mentioning: "unknown command 'frobnicate'")
    }

    @Test("wrong operand types")
    func wrongOperands() throws {
        try expectRefusal((["run", 42] as MessagePackValue).encoded(), code: "protocol", mentioning: "must be a string")
        try expectRefusal((["arguments", [["nested"]]] as MessagePackValue).encoded(), code: "protocol", mentioning: "binary or string")
    }

    @Test("descriptors announced but not attached")
    func descriptorsMissing() throws {
        try expectRefusal((["descriptors", 2] as MessagePackValue).encoded(), code: "protocol", mentioning: "announces 2 descriptor(s) but 0 arrived")
        try expectRefusal((["fork", 9] as MessagePackValue).encoded(), code: "protocol", mentioning: "'fork' announces 1")
    }

    @Test("an unknown initializer or function name is an error reply; the template stays usable")
    func unknownNames() throws {
        let template = try RawTemplate()
        template.send(["initialize", "nope", []])
        let reply = try #require(try template.next()?.arrayValue)
        #expect(reply.dropFirst().first == "unknown-function")
        #expect(reply.last?.stringValue?.contains("no initializer named 'nope'") == true)
        template.send(["arguments", []])
        #expect(try template.next() == ["ok"])
        shutdown(template.socket, Int32(SHUT_WR))
        #expect(try template.next() == nil)
        #expect(template.exitStatus() == 0)
    }

    @Test("fork-run capturing output without its two pipes, and with a capture operand other than true")
    func forkRunCaptureRefused() throws {
        try expectRefusal((["fork-run", 9, "exit-now", [], 0, true] as MessagePackValue).encoded(), code: "protocol", mentioning: "'fork-run' announces 3")
        try expectRefusal((["fork-run", 9, "exit-now", [], 0, false] as MessagePackValue).encoded(), code: "protocol", mentioning: "must be true or absent")
    }

    @Test("fork-run with fewer descriptors than announced")
    func forkRunDescriptorsMissing() throws {
        try expectRefusal((["fork-run", 9, "exit-now", [], 2] as MessagePackValue).encoded(), code: "protocol", mentioning: "'fork-run' announces 3")
    }

    @Test("a truncated message followed by end of stream: the template exits cleanly")
    func truncated() throws {
        let template = try RawTemplate()
        template.send([0x92, 0xa4, 0x6c])
        shutdown(template.socket, Int32(SHUT_WR))
        #expect(try template.next() == nil)
        #expect(template.exitStatus() == 0)
    }

    @Test("descriptors that arrive with a refused message are closed, not leaked")
    func refusedDescriptorsClosed() throws {
        let template = try RawTemplate()
        let pipe = try FileDescriptor.pipe()
        // The template holds the write end until it refuses the message; then the read end sees end of stream.
        template.send((["descriptors", 1, "extra operand"] as MessagePackValue).encoded(), descriptors: [pipe.writeEnd.rawValue])
        try pipe.writeEnd.close()
        _ = try template.next()
        #expect(try readAll(pipe.readEnd, seconds: 5) == "")
        try pipe.readEnd.close()
        #expect(template.exitStatus() == 0)
    }

    @Test("a well-formed exchange by hand: arguments, then ok")
    func wellFormed() throws {
        let template = try RawTemplate()
        template.send(["arguments", [.binary([1, 2]), "text"]])
        #expect(try template.next() == ["ok"])
        shutdown(template.socket, Int32(SHUT_WR))
        #expect(try template.next() == nil)
        #expect(template.exitStatus() == 0)
    }
}
