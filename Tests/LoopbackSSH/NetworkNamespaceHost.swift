import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A second "host" on this machine: a network namespace joined to this one by a veth pair, each end
/// with its own address, as two machines on one link. Programs started in it (``command(_:)``) see
/// only its network, the same files. Removed again by ``remove()`` (or when released).
public final class NetworkNamespaceHost: @unchecked Sendable {  // remove() is meant for one owner
    /// The namespace's name (`ip netns`).
    public let name: String
    /// This side's address on the link.
    public let localAddress: String
    /// The namespace's address on the link: the "remote host".
    public let address: String
    private var removed = false

    /// Why a namespace cannot be made here (no `ip`, or not allowed), or `nil` when it can.
    public static let unavailableReason: String? = {
        guard FileManager.default.isExecutableFile(atPath: ip) else { return "\(ip) is not installed (Debian: iproute2)" }
        let probe = "fk-probe-\(getpid())"
        guard let failure = SSHServer.run([ip, "netns", "add", probe]) else {
            _ = SSHServer.run([ip, "netns", "del", probe])
            return nil
        }
        return "cannot create a network namespace: \(failure)"
    }()

    /// Creates the namespace and the link; throws what `ip` said when it cannot.
    public init() throws {
        let tag = Int(getpid() % 200) + Int.random(in: 0..<50)
        name = "fk-host-\(getpid())-\(UInt16.random(in: 0...UInt16.max))"
        let outside = "fka\(getpid() % 100_000)", inside = "fkb\(getpid() % 100_000)"
        localAddress = "10.231.\(tag).1"
        address = "10.231.\(tag).2"
        let steps: [[String]] = [
            ["netns", "add", name],
            ["link", "add", outside, "type", "veth", "peer", "name", inside],
            ["link", "set", inside, "netns", name],
            ["addr", "add", "\(localAddress)/30", "dev", outside],
            ["link", "set", outside, "up"],
            ["netns", "exec", name, Self.ip, "addr", "add", "\(address)/30", "dev", inside],
            ["netns", "exec", name, Self.ip, "link", "set", inside, "up"],
            ["netns", "exec", name, Self.ip, "link", "set", "lo", "up"],
        ]
        for step in steps {
            if let failure = SSHServer.run([Self.ip] + step) {
                _ = SSHServer.run([Self.ip, "link", "del", outside])
                _ = SSHServer.run([Self.ip, "netns", "del", name])
                throw SSHServerError("ip \(step.joined(separator: " ")) failed: \(failure)")
            }
        }
    }

    deinit { remove() }

    /// `command` run inside the namespace.
    public func command(_ command: [String]) -> [String] {
        [Self.ip, "netns", "exec", name] + command
    }

    /// Deletes the namespace; its end of the link goes with it, and so does ours.
    public func remove() {
        guard !removed else { return }
        removed = true
        _ = SSHServer.run([Self.ip, "netns", "del", name])
    }

    private static let ip = "/usr/sbin/ip"
}
