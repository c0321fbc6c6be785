#if canImport(Glibc)
import Glibc
#endif

/// Limits a process puts on itself (and passes to every child it forks): `setrlimit` and `nice`.
///
/// Sent to a template or a not-yet-running child with ``ForkTemplate/apply(_:)``; a fork of that
/// process is then a worker that cannot take the machine down with it.
///
/// ```swift
/// let limited = try await template.fork()
/// try await limited.apply(ResourceLimits(addressSpaceBytes: 1 << 30, cpuSeconds: 60, openFiles: 256, niceness: 10))
/// let worker = try await limited.fork(running: "convert")
/// ```
public struct ResourceLimits: Sendable, Hashable {
    /// The largest address space, in bytes (`RLIMIT_AS`): allocations beyond it fail.
    public var addressSpaceBytes: Int?
    /// CPU seconds the process may use (`RLIMIT_CPU`, soft and hard limit alike): then the kernel
    /// kills it with `SIGKILL`.
    public var cpuSeconds: Int?
    /// The highest descriptor number plus one (`RLIMIT_NOFILE`).
    public var openFiles: Int?
    /// The nice value (`setpriority`), -20 (favoured) to 19 (yielding). Lowering it needs privilege.
    public var niceness: Int?

    /// Limits; `nil` leaves that one as it is.
    public init(addressSpaceBytes: Int? = nil, cpuSeconds: Int? = nil, openFiles: Int? = nil, niceness: Int? = nil) {
        self.addressSpaceBytes = addressSpaceBytes
        self.cpuSeconds = cpuSeconds
        self.openFiles = openFiles
        self.niceness = niceness
    }

    /// Applies the limits to the calling process; throws, naming the limit, what the system refused.
    func applyToCurrentProcess() throws(ForkError) {
        func limit(_ resource: __rlimit_resource, _ value: Int?, _ name: String) throws(ForkError) {
            guard let value else { return }
            var limit = rlimit(rlim_cur: rlim_t(value), rlim_max: rlim_t(value))
            guard setrlimit(Int32(resource.rawValue), &limit) == 0 else {
                throw ForkError(.systemCall, "cannot set \(name) to \(value) in process \(getpid()): \(String(cString: strerror(errno)))")
            }
        }
        try limit(RLIMIT_AS, addressSpaceBytes, "RLIMIT_AS")
        try limit(RLIMIT_CPU, cpuSeconds, "RLIMIT_CPU")
        try limit(RLIMIT_NOFILE, openFiles, "RLIMIT_NOFILE")
        if let niceness, setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, Int32(niceness)) != 0 {
            throw ForkError(.systemCall, "cannot set the nice value to \(niceness) in process \(getpid()): \(String(cString: strerror(errno)))")
        }
    }
}
