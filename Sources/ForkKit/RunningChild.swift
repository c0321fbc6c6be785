import SystemPackage
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A child that is running a function: its pid, its socket, and how it ended.
///
/// For a child started by a ``RemoteTemplate``, `pid` is the local command's (`ssh`) and the socket
/// is that command's standard input and output; its exit status is the command's.
///
/// ```swift
/// let child = try await template.fork().run("echo")
/// try child.socket.writeAll(Array("ping".utf8))
/// let status = try await child.exitStatus()   // .exited(0)
/// ```
///
/// The socket is closed when the handle goes away (or by ``closeSocket()``); a child that waits for
/// input then sees end of stream.
public final class RunningChild: Sendable {
    /// The child's process id.
    public let pid: Int32
    /// The owner's end of the child's socket.
    public let socket: FileDescriptor
    /// Where the child runs: `nil` for a child forked on this machine, the ``RemoteTemplate``'s
    /// name (such as `ssh worker1`) for a remote one.
    public let remoteName: String?
    /// Whether descriptors can be passed to the child over ``socket`` (not to a remote child: the
    /// command's stream carries bytes only).
    public var canPassDescriptors: Bool { remoteName == nil }
    private let socketOpen = Mutex(true)
    /// Keeps the template (and any not-yet-running ancestors) alive: the child dies with them.
    private let lineage: any AnyObject & Sendable

    init(pid: Int32, socket: FileDescriptor, keeping lineage: any AnyObject & Sendable, remoteName: String? = nil) {
        self.pid = pid
        self.socket = socket
        self.lineage = lineage
        self.remoteName = remoteName
    }

    deinit {
        closeSocket()
        ChildExitBook.forget(pid: pid)
    }

    /// Waits until the child has exited and its template has reaped it, and tells how it ended.
    ///
    /// Throws ``ForkError/Kind/processGone`` if the template went away first (its children then die
    /// too, but nobody can report how), and `CancellationError` if the waiting task is cancelled.
    public func exitStatus() async throws -> ExitStatus {
        try await ChildExitBook.wait(for: pid)
    }

    /// How the child ended, if it has and its template has said so.
    public var exitStatusIfKnown: ExitStatus? {
        ChildExitBook.status(of: pid)
    }

    /// Sends `signal` to the child, unless it is already known to have ended (its pid may be reused).
    public func send(signal: Int32) {
        guard exitStatusIfKnown == nil else { return }
        kill(pid, signal)
    }

    /// Takes the owner's end of the socket away from this handle (which then no longer closes it),
    /// for a connection that owns it from now on; nil when it was already closed or taken.
    package func takeSocket() -> FileDescriptor? {
        let wasOpen = socketOpen.withLock { open in
            defer { open = false }
            return open
        }
        return wasOpen ? socket : nil
    }

    /// Closes the owner's end of the socket.
    public func closeSocket() {
        let wasOpen = socketOpen.withLock { open in
            defer { open = false }
            return open
        }
        if wasOpen { try? socket.close() }
    }
}
