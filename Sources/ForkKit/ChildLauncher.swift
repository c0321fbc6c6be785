import SystemPackage

/// Something that starts children running a registered function: a ``ForkTemplate`` (a fork on
/// this machine) or a ``RemoteTemplate`` (a new process started by a command such as `ssh`).
///
/// RPC clients and pools take any launcher, so the same worker code runs locally or remotely:
///
/// ```swift
/// let local = try await RPCClient.start(try await ForkTemplate.shared, running: "math")
/// let remote = try await RPCClient.start(RemoteTemplate.ssh(host: "worker1", executable: "/opt/app/tool"), running: "math")
/// ```
public protocol ChildLauncher: Sendable {
    /// Starts a child that runs `function` at once, with `arguments` added to what the launcher
    /// already holds.
    func launch(running function: String, arguments: [[UInt8]]) async throws -> RunningChild

    /// How errors and statistics name where the children run (`local` or `ssh worker1`).
    var placeName: String { get }
}

extension ForkTemplate: ChildLauncher {
    /// Forks a child running `function` (``fork(running:arguments:descriptors:parentDeathSignal:)``).
    public func launch(running function: String, arguments: [[UInt8]]) async throws -> RunningChild {
        try await fork(running: function, arguments: arguments)
    }

    /// `local`.
    public var placeName: String { "local" }
}
