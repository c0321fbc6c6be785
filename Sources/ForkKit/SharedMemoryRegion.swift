import CForkSupport
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Memory that an initializer fills once in the template and every child forked afterwards reads
/// without copying, at no cost to fork.
///
/// Linux copies the page tables of private memory at every fork, so a template holding 1000 MB of
/// ordinary heap forks about 55 times slower than an empty one (34 forks/s against 1,894/s in the
/// benchmark report, docs/benchmarks.md). A region is a `memfd` mapped `MAP_SHARED`, whose page
/// tables fork does not copy: with 1000 MB in one, the template forked at 0.96x an empty one's rate.
///
/// ```swift
/// .initializer("load-table") { _ in
///     let region = try SharedMemoryRegion.create(name: "table", size: 1 << 30)
///     fill(region.mutableBytes)
/// },
/// .function("lookup") { child in
///     let table = SharedMemoryRegion.named("table")!   // read-only in the child
///     ...
/// }
/// ```
public final class SharedMemoryRegion: @unchecked Sendable {
    // @unchecked: the mapping's address and size never change, and its contents are the caller's business.

    /// The region's name, unique within the process.
    public let name: String
    /// The region's size in bytes.
    public let size: Int
    private let base: UnsafeMutableRawPointer

    private static let regions = Mutex<[String: SharedMemoryRegion]>([:])

    private init(name: String, size: Int, base: UnsafeMutableRawPointer) {
        self.name = name
        self.size = size
        self.base = base
    }

    /// The region's bytes, for reading.
    public var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: size) }

    /// The region's bytes, for writing: in the process that created it, or in a child when the region
    /// was created `writableInChildren`, where every child sees every other's writes.
    public var mutableBytes: UnsafeMutableRawBufferPointer { UnsafeMutableRawBufferPointer(start: base, count: size) }

    /// Creates a zero-filled region of `size` bytes, writable here, and registers it under `name`.
    ///
    /// - Parameters:
    ///   - name: what children look it up by (``named(_:)``).
    ///   - size: its size in bytes, above 0.
    ///   - writableInChildren: whether children may write to it; by default a child that
    ///     writes to it is killed with SIGSEGV, so that shared data cannot be corrupted by accident.
    public static func create(name: String, size: Int, writableInChildren: Bool = false) throws -> SharedMemoryRegion {
        guard size > 0 else { throw ForkError(.invalidState, "a shared region needs a size above 0, got \(size)") }
        guard named(name) == nil else {
            throw ForkError(.invalidState, "a shared region named '\(name)' already exists in process \(getpid())")
        }
        let descriptor = forkkit_memfd_create("forkkit:\(name)")
        guard descriptor >= 0 else { throw ForkError.systemCall("memfd_create", errno: errno) }
        defer { close(descriptor) }  // The mapping keeps the memory; no descriptor needs to stay open.
        guard ftruncate(descriptor, off_t(size)) == 0 else { throw ForkError.systemCall("ftruncate", errno: errno) }
        let address = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_SHARED, descriptor, 0)
        guard let address, address != MAP_FAILED else { throw ForkError.systemCall("mmap of \(size) bytes", errno: errno) }
        let region = SharedMemoryRegion(name: name, size: size, base: address)
        regions.withLock { $0[name] = region }
        if !writableInChildren {
            readOnlyInChildren.withLock { $0.append(region) }
            readOnlyCount.add(1, ordering: .relaxed)
        }
        return region
    }

    /// The region registered under `name` in this process (or inherited from the template), if any.
    public static func named(_ name: String) -> SharedMemoryRegion? {
        regions.withLock { $0[name] }
    }

    private static let readOnlyInChildren = Mutex<[SharedMemoryRegion]>([])
    /// How many regions must become read-only in children. Read without taking the lock: a child
    /// that writes to no shared page forks faster (every page written after fork is copied).
    private static let readOnlyCount = Atomic<Int>(0)

    /// Called in a child before it runs a function: regions not meant for writing become read-only.
    static func protectForChild() {
        guard readOnlyCount.load(ordering: .relaxed) > 0 else { return }
        for region in readOnlyInChildren.withLock({ $0 }) {
            mprotect(region.base, region.size, PROT_READ)
        }
    }
}
