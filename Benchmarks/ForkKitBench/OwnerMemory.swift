import ForkKit
import ForkRPC
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// The owner's memory as the kernel and as glibc's allocator see it, so that growth can be told
/// apart: a heap in use that grows is something kept (a leak, a table never pruned); resident memory
/// that grows while the heap in use stays flat is the allocator keeping freed memory (fragmentation
/// of its arenas), which `malloc_trim` gives back. With it, what ForkKit holds per worker, which must
/// not grow with the workers that came and went.
struct OwnerMemory: Sendable {
    /// Resident set size (`/proc/self/statm`), in MB.
    var residentMegabytes: Double
    /// Bytes that malloc has handed out and not had back, in every arena and in its own mappings,
    /// in MB; nil when glibc's `malloc_info` is not there.
    var heapInUseMegabytes: Double?
    /// Bytes that malloc holds free in its arenas, in MB.
    var heapFreeMegabytes: Double?
    /// malloc's arenas (the main one and one per thread that contended for it).
    var arenas: Int?
    /// Open descriptors.
    var descriptors: Int
    /// `RPCClient`s alive (each holds a worker's call table, buffers and process handle).
    var rpcClients = RPCClient.liveCount
    /// Children whose exit status is kept (ForkKit's book of children).
    var childrenTracked = ForkTemplate.trackedChildCount
    /// Descriptors the I/O thread watches (connections to templates and workers).
    var descriptorsWatched = DescriptorMonitor.shared.watchedCount

    /// A reading now.
    static func read() -> OwnerMemory {
        let statm = (try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8)) ?? ""
        let pages = statm.split(separator: " ").dropFirst().first.flatMap { Double($0) } ?? 0
        let descriptors = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? 0
        var reading = OwnerMemory(
            residentMegabytes: pages * Double(sysconf(Int32(_SC_PAGESIZE))) / 1_048_576, descriptors: descriptors)
        if let heap = Allocator.heap() {
            reading.heapInUseMegabytes = Double(heap.inUse) / 1_048_576
            reading.heapFreeMegabytes = Double(heap.free) / 1_048_576
            reading.arenas = heap.arenas
        }
        return reading
    }

    /// Asks malloc to give the free memory of every arena back to the system (`malloc_trim(0)`);
    /// false when glibc's function is not there.
    @discardableResult
    static func trim() -> Bool {
        guard let trim = Allocator.trim else { return false }
        _ = trim(0)
        return true
    }

    /// glibc's `malloc_info` and `malloc_trim`, looked up at run time: `malloc.h` is not part of
    /// Swift's Glibc module, and the benchmark must still run (without these figures) elsewhere.
    private enum Allocator {
        typealias Info = @convention(c) (Int32, UnsafeMutablePointer<FILE>?) -> Int32
        typealias Trim = @convention(c) (Int) -> Int32

        static let info: Info? = dlsym(dlopen(nil, RTLD_NOW), "malloc_info").map { unsafeBitCast($0, to: Info.self) }
        static let trim: Trim? = dlsym(dlopen(nil, RTLD_NOW), "malloc_trim").map { unsafeBitCast($0, to: Trim.self) }

        /// Bytes in use and free over every arena and mapping, from `malloc_info`'s XML: after the
        /// last `</heap>` come the totals; "fast" and "rest" are free chunks (the top chunk
        /// included), "mmap" the chunks that have mappings of their own, "current" what the arenas
        /// hold from the system.
        static func heap() -> (inUse: Int, free: Int, arenas: Int)? {
            guard let info else { return nil }
            var buffer: UnsafeMutablePointer<CChar>?
            var size = 0
            guard let stream = open_memstream(&buffer, &size) else { return nil }
            let result = info(0, stream)
            fclose(stream)
            defer { free(buffer) }
            guard result == 0, let buffer else { return nil }
            let xml = String(cString: buffer)
            let arenas = xml.components(separatedBy: "<heap nr=").count - 1
            guard let totals = xml.components(separatedBy: "</heap>").last else { return nil }
            func figure(_ prefix: String) -> Int? {
                guard let start = totals.range(of: prefix)?.upperBound else { return nil }
                let rest = totals[start...]
                guard let sizeStart = rest.range(of: "size=\"")?.upperBound else { return nil }
                return Int(rest[sizeStart...].prefix { $0.isNumber })
            }
            guard let fast = figure("<total type=\"fast\""), let other = figure("<total type=\"rest\""),
                  let mapped = figure("<total type=\"mmap\""), let current = figure("<system type=\"current\"") else { return nil }
            return (current - fast - other + mapped, fast + other, arenas)
        }
    }
}
