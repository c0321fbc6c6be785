import SystemPackage

/// A named piece of code that a template can run: a *function* that a forked child runs with its
/// socket, or an *initializer* that runs inside the template itself so that every later child shares
/// what it loaded.
///
/// Register entry points when the program starts, with ``ForkTemplate/bootstrap(_:)``:
///
/// ```swift
/// ForkTemplate.bootstrap([
///     .function("greet") { child in
///         try child.socket.writeAll(Array("hello from \(child.pid)\n".utf8))
///     },
///     .initializer("load-table") { arguments in
///         table = try loadTable(path: String(decoding: arguments[0], as: UTF8.self))
///     },
/// ])
/// ```
public struct ForkEntryPoint: Sendable {
    /// What runs.
    enum Body: Sendable {
        case function(@Sendable (ChildContext) throws -> Void)
        case initializer(@Sendable (_ arguments: [[UInt8]]) throws -> Void)
    }

    /// The name the owner uses in `run` or `initialize`.
    public let name: String
    let body: Body

    /// A function that a forked child runs; when it returns the child exits with code 0, when it
    /// throws the child prints the error to standard error and exits with code 1. Either way stdio
    /// is flushed and the child leaves with `_exit`: handlers registered with `atexit` in the
    /// template are not run again in every child (call `exit` yourself if you need them).
    public static func function(_ name: String, _ body: @escaping @Sendable (ChildContext) throws -> Void) -> ForkEntryPoint {
        ForkEntryPoint(name: name, body: .function(body))
    }

    /// An initializer that runs inside the template (or a not-yet-running child) with the given
    /// arguments; what it loads is shared by every child forked afterwards. It must not leave threads
    /// running: the next fork would be refused.
    public static func initializer(_ name: String, _ body: @escaping @Sendable (_ arguments: [[UInt8]]) throws -> Void) -> ForkEntryPoint {
        ForkEntryPoint(name: name, body: .initializer(body))
    }
}

/// What a function run in a forked child receives.
public struct ChildContext: Sendable {
    /// Where the owner's messages arrive: the child's end of its socket, or, in a process started
    /// by a ``RemoteTemplate``, a copy of its standard input. It belongs to the function.
    public let input: FileDescriptor
    /// Where the function writes to the owner: the same socket as ``input``, or, in a process
    /// started by a ``RemoteTemplate``, a copy of its standard output (whose descriptor 1 then
    /// goes to standard error, so that `print` cannot corrupt the stream).
    public let output: FileDescriptor
    /// The argument byte strings sent to this process (and to the template before the fork), in order.
    public let arguments: [[UInt8]]
    /// The descriptors sent to this process (and to the template before the fork), in order.
    public let descriptors: [FileDescriptor]

    /// The child's end of its socket to the owner, for a function that uses one descriptor both ways.
    /// In a process started by a ``RemoteTemplate`` this is only ``input``: write to ``output``.
    public var socket: FileDescriptor { input }

    /// Whether descriptors can be passed to and from the owner: ``input`` and ``output`` are one
    /// socket (a local child), not a remote process's byte streams.
    public var canPassDescriptors: Bool { input == output }

    /// The child's process id.
    public var pid: Int32 { getpid() }

    /// Argument `index` as UTF-8 text (invalid sequences are repaired), or `nil` if there is no such argument.
    public func argument(_ index: Int) -> String? {
        arguments.indices.contains(index) ? String(decoding: arguments[index], as: UTF8.self) : nil
    }
}

#if canImport(Glibc)
import Glibc
#endif
