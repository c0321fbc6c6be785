// A real OpenSSH server on loopback, for the remote-worker tests and the remote benchmark.
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A real OpenSSH server on 127.0.0.1 (or in a ``NetworkNamespaceHost``), on a free port, with a host
/// key and a client key generated into a temporary directory: nothing is changed in the system's
/// configuration, nothing listens beyond loopback (or the namespace's link). It stops when the value
/// is released (``stop()``).
public final class SSHServer: @unchecked Sendable {  // stop() is meant for one owner
    /// The port it listens on.
    public let port: Int
    /// The address it listens on.
    public let address: String
    /// The directory that holds its keys, configuration and log.
    public let directory: String
    private let pid: pid_t
    private var stopped = false

    /// Why an sshd cannot run here, or `nil` when it can (`/usr/sbin/sshd` and `ssh-keygen` exist).
    public static var unavailableReason: String? {
        for program in ["/usr/sbin/sshd", "/usr/bin/ssh", "/usr/bin/ssh-keygen"] where !FileManager.default.isExecutableFile(atPath: program) {
            return "\(program) is not installed (Debian: apt-get install openssh-server openssh-client)"
        }
        return nil
    }

    /// Generates keys and starts sshd, on 127.0.0.1 or inside `host`; returns once it listens.
    public init(in host: NetworkNamespaceHost? = nil) throws {
        address = host?.address ?? "127.0.0.1"
        directory = NSTemporaryDirectory() + "forkkit-sshd-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        chmod(directory, 0o700)
        // sshd run as root wants its privilege-separation directory.
        try? FileManager.default.createDirectory(atPath: "/run/sshd", withIntermediateDirectories: true)
        for key in ["host_key", "client_key"] {
            let keygen = ["/usr/bin/ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", "\(directory)/\(key)"]
            if let failure = Self.run(keygen) { throw SSHServerError("\(keygen.joined(separator: " ")) failed (\(failure))") }
        }
        try FileManager.default.copyItem(atPath: "\(directory)/client_key.pub", toPath: "\(directory)/authorized_keys")
        port = try Self.freePort()
        let configuration = """
            ListenAddress \(address)
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
        // `ip netns exec` execs sshd in place, so `pid` is sshd's either way.
        let sshd = ["/usr/sbin/sshd", "-D", "-e", "-f", "\(directory)/sshd_config", "-E", "\(directory)/sshd.log"]
        let command = host?.command(sshd) ?? sshd
        pid = try Self.spawn(command[0], Array(command.dropFirst()))
        // sshd writes its pid file once it listens. (Connecting to find out would leave a session
        // process behind, orphaned when sshd stops.)
        let deadline = Date().addingTimeInterval(10)
        while !FileManager.default.fileExists(atPath: "\(directory)/sshd.pid"), Date() < deadline { usleep(20_000) }
        guard FileManager.default.fileExists(atPath: "\(directory)/sshd.pid") else {
            stop()
            let log = (try? String(contentsOfFile: "\(directory)/sshd.log", encoding: .utf8)) ?? ""
            throw SSHServerError("sshd did not start listening on \(address):\(port): \(log)")
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
        if !stopped {
            stopped = true
            // Sessions still ending would be orphaned, and left unreaped where init does not reap.
            let deadline = Date().addingTimeInterval(5)
            while Date() < deadline, !((try? String(contentsOfFile: "/proc/\(pid)/task/\(pid)/children", encoding: .utf8)) ?? "").isEmpty {
                usleep(20_000)
            }
            kill(pid, SIGTERM)
            var status: Int32 = 0
            while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        }
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// Starts sshd with posix_spawn, not Foundation's Process: sshd closes every descriptor it did
    /// not expect, among them the socket by which Foundation learns that a Process has exited.
    /// Foundation then waits for sshd, blocking, on the one thread that notices every Process's
    /// exit: every other Process of the test run would hang. The signal mask is reset too (a Swift
    /// concurrency thread blocks almost every signal, and sshd would never see SIGTERM).
    static func spawn(_ executable: String, _ arguments: [String]) throws -> pid_t {
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var none = sigset_t()
        sigemptyset(&none)
        posix_spawnattr_setsigmask(&attributes, &none)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK))
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var pid: pid_t = 0
        let result = posix_spawn(&pid, executable, nil, &attributes, argv, environ)
        guard result == 0 else { throw SSHServerError("cannot start \(executable): \(String(cString: strerror(result)))") }
        return pid
    }

    /// Runs `command` to its end; `nil` when it succeeded, else what went wrong.
    static func run(_ command: [String]) -> String? {
        let pid: pid_t
        do { pid = try spawn(command[0], Array(command.dropFirst())) } catch { return "\(error)" }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        return status == 0 ? nil : "wait status \(status)"
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
}

/// Why a test's sshd could not start.
public struct SSHServerError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}
