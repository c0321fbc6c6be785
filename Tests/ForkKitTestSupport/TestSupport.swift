// What the test targets share: where the built test programs are, and ways to look at processes
// and descriptors without hanging a test.
import ForkKit
import Foundation
import SystemPackage

#if canImport(Glibc)
import Glibc
#endif

/// Paths of what the package builds for the tests, next to the test bundle.
public enum Built {
    public static var directory: String {
        let executable = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? ""
        return (executable as NSString).deletingLastPathComponent
    }

    /// The test worker: a ForkKit program whose entry points the tests run.
    public static var worker: String { directory + "/forkkit-test-worker" }
    /// The plugin library.
    public static var plugin: String { directory + "/libForkKitTestPlugin.so" }
}

/// A test waited too long for something.
public struct TestTimeout: Error, CustomStringConvertible {
    public let description: String

    /// An error with `description` as its message.
    public init(description: String) {
        self.description = description
    }
}

/// Reads until end of stream, failing after `seconds` rather than hanging the suite.
public func readAll(_ descriptor: FileDescriptor, seconds: Double = 10) throws -> String {
    var output: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 4096)
    let deadline = Date().addingTimeInterval(seconds)
    while true {
        var watched = pollfd(fd: descriptor.rawValue, events: Int16(POLLIN), revents: 0)
        let remaining = Int32(max(0, deadline.timeIntervalSinceNow * 1000))
        guard poll(&watched, 1, remaining) > 0 else {
            throw TestTimeout(description: "no end of stream within \(seconds) s; read so far: \(String(decoding: output, as: UTF8.self))")
        }
        let count = read(descriptor.rawValue, &buffer, buffer.count)
        if count <= 0 { break }
        output += buffer.prefix(count)
    }
    return String(decoding: output, as: UTF8.self)
}

/// The descriptor numbers a process has open.
public func openDescriptors(of pid: Int32) throws -> [Int32] {
    try FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").compactMap { Int32($0) }.sorted()
}

/// Whether `pid` is gone or a zombie (dead, but not yet reaped by its parent).
public func isDead(_ pid: Int32) -> Bool {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8) else { return true }
    guard let close = stat.lastIndex(of: ")") else { return true }
    let state = stat[stat.index(close, offsetBy: 2)]
    return state == "Z" || state == "X"
}

/// Whether `pid` no longer exists at all (exited and reaped).
public func isReaped(_ pid: Int32) -> Bool {
    !FileManager.default.fileExists(atPath: "/proc/\(pid)")
}

/// Polls `condition` every 10 ms for up to `seconds`.
public func eventually(within seconds: Double, _ condition: () -> Bool) async -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if condition() { return true }
        try? await Task.sleep(for: .milliseconds(10))
    }
    return condition()
}

/// A template of the test worker.
public func workerTemplate() async throws -> ForkTemplate {
    try await ForkTemplate.spawn(executable: Built.worker)
}

/// Runs the test worker as a plain program with `arguments`, returning its process and stdout pipe.
public func startWorkerProgram(_ arguments: [String]) throws -> (Process, Pipe) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: Built.worker)
    process.arguments = arguments
    let output = Pipe()
    process.standardOutput = output
    try process.run()
    return (process, output)
}

/// A pipe as two descriptors.
public func makePipe() throws -> (read: FileDescriptor, write: FileDescriptor) {
    let pipe = try FileDescriptor.pipe()
    return (pipe.readEnd, pipe.writeEnd)
}

/// A real OpenSSH server on 127.0.0.1, on a free port, with a host key and a client key generated
/// into a temporary directory: nothing is changed in the system's configuration, nothing listens
/// beyond loopback. It stops when the value is released (``stop()``).
public final class SSHServer: @unchecked Sendable {
    /// The port it listens on.
    public let port: Int
    /// The directory that holds its keys, configuration and log.
    public let directory: String
    private let process: Process

    /// Why an sshd cannot run here, or `nil` when it can (`/usr/sbin/sshd` and `ssh-keygen` exist).
    public static var unavailableReason: String? {
        for program in ["/usr/sbin/sshd", "/usr/bin/ssh", "/usr/bin/ssh-keygen"] where !FileManager.default.isExecutableFile(atPath: program) {
            return "\(program) is not installed (Debian: apt-get install openssh-server openssh-client)"
        }
        return nil
    }

    /// Generates keys and starts sshd; returns once it accepts connections.
    public init() throws {
        directory = NSTemporaryDirectory() + "forkkit-sshd-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        chmod(directory, 0o700)
        // sshd run as root wants its privilege-separation directory.
        try? FileManager.default.createDirectory(atPath: "/run/sshd", withIntermediateDirectories: true)
        for key in ["host_key", "client_key"] {
            try Self.run("/usr/bin/ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", "\(directory)/\(key)"])
        }
        try FileManager.default.copyItem(atPath: "\(directory)/client_key.pub", toPath: "\(directory)/authorized_keys")
        port = try Self.freePort()
        let configuration = """
            ListenAddress 127.0.0.1
            Port \(port)
            HostKey \(directory)/host_key
            AuthorizedKeysFile \(directory)/authorized_keys
            PidFile \(directory)/sshd.pid
            StrictModes no
            UsePAM no
            PasswordAuthentication no
            KbdInteractiveAuthentication no
            PermitRootLogin prohibit-password
            LogLevel ERROR
            """
        try configuration.write(toFile: "\(directory)/sshd_config", atomically: true, encoding: .utf8)
        process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/sbin/sshd")
        process.arguments = ["-D", "-e", "-f", "\(directory)/sshd_config", "-E", "\(directory)/sshd.log"]
        try process.run()
        let deadline = Date().addingTimeInterval(10)
        while !Self.accepts(port: port), Date() < deadline { usleep(20_000) }
        guard Self.accepts(port: port) else {
            stop()
            let log = (try? String(contentsOfFile: "\(directory)/sshd.log", encoding: .utf8)) ?? ""
            throw SSHServerError("sshd did not start listening on 127.0.0.1:\(port): \(log)")
        }
    }

    deinit { stop() }

    /// The ssh options that reach this server with the generated client key.
    public var clientOptions: [String] {
        [
            "-p", "\(port)", "-i", "\(directory)/client_key", "-o", "IdentitiesOnly=yes",
            "-o", "UserKnownHostsFile=\(directory)/known_hosts", "-o", "StrictHostKeyChecking=no",
            "-o", "LogLevel=ERROR",
        ]
    }

    /// Stops sshd (its sessions' processes then see their connections end) and removes the directory.
    public func stop() {
        // SIGKILL: a Process started from a Swift concurrency thread inherits that thread's blocked
        // signals, and sshd waits with its inherited mask, so SIGTERM would never arrive.
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        try? FileManager.default.removeItem(atPath: directory)
    }

    private static func run(_ executable: String, _ arguments: [String]) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw SSHServerError("\(executable) \(arguments.joined(separator: " ")) failed with \(process.terminationStatus)")
        }
    }

    private static func freePort() throws -> Int {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(descriptor) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(descriptor, $0, length) == 0 && getsockname(descriptor, $0, &length) == 0 }
        }
        guard bound else { throw SSHServerError("cannot find a free port on 127.0.0.1: errno \(errno)") }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    private static func accepts(port: Int) -> Bool {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(descriptor) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = UInt16(port).bigEndian
        return withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
    }
}

/// Why a test's sshd could not start.
public struct SSHServerError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}
