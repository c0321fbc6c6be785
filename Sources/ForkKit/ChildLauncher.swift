import SystemPackage

/// Something that starts children running a registered function: a ``ForkTemplate`` (a fork on
/// this machine) or a ``RemoteTemplate`` (a new process started by a command such as `ssh`).
///
/// RPC clients take any launcher (a pool takes a ``ForkTemplate`` and, for other machines,
/// ``RemoteTemplate``s), so the same worker code runs locally or remotely:
///
/// ```swift
/// let local = try await RPCClient.start(try await ForkTemplate.shared, running: "math")
/// let remote = try await RPCClient.start(RemoteTemplate.ssh(host: "worker1", executable: "/opt/app/tool"), running: "math")
/// ```
public protocol ChildLauncher: Sendable {
    /// Starts a child that runs `function` at once, with `arguments` added to what the launcher
    /// already holds.
    func launch(running function: String, arguments: [[UInt8]]) async throws -> RunningChild

    /// Starts a child as ``launch(running:arguments:)`` does, with its standard output and error
    /// captured into `output` when it is not nil (see ``ChildOutput``).
    func launch(running function: String, arguments: [[UInt8]], output: ChildOutput?) async throws -> RunningChild

    /// How errors and statistics name where the children run (`local` or `ssh worker1`).
    var placeName: String { get }
}

extension ChildLauncher {
    /// A launcher of its own that cannot capture output starts the child as usual when `output` is
    /// nil, and refuses otherwise.
    public func launch(running function: String, arguments: [[UInt8]], output: ChildOutput?) async throws -> RunningChild {
        guard output == nil else {
            throw ForkError(.invalidState, "\(Self.self) cannot capture its children's output; leave the output setting nil, or use a ForkTemplate or RemoteTemplate")
        }
        return try await launch(running: function, arguments: arguments)
    }
}

extension ForkTemplate: ChildLauncher {
    /// Forks a child running `function` (``fork(running:arguments:descriptors:parentDeathSignal:output:)``).
    public func launch(running function: String, arguments: [[UInt8]]) async throws -> RunningChild {
        try await fork(running: function, arguments: arguments)
    }

    /// Forks a child running `function`, capturing its output
    /// (``fork(running:arguments:descriptors:parentDeathSignal:output:)``).
    public func launch(running function: String, arguments: [[UInt8]], output: ChildOutput?) async throws -> RunningChild {
        try await fork(running: function, arguments: arguments, output: output)
    }

    /// `local`.
    public var placeName: String { "local" }
}
