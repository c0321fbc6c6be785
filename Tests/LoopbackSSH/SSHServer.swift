// A real OpenSSH server on loopback, for the remote-worker tests and the remote benchmark.
import Foundation

#if canImport(Glibc)
import Glibc
#endif

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
