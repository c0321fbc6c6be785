// The template that `forkkit-bench` forks from: only ForkKit, the Swift runtime linked in statically,
// so that its page tables stay small (DESIGN.md: fork cost is set by the template's mappings).
import ForkKit
import ForkRPC
import Tracing

#if canImport(Glibc)
import Glibc
#endif

/// Memory an initializer touched on the ordinary heap; kept so it stays mapped.
nonisolated(unsafe) var privateHeap: UnsafeMutableRawPointer?

ForkTemplate.bootstrap([
    .function("exit-now") { _ in },
    .rpcWorker("rpc-bench") { server in
        server.register(RPCFunction<Int, Int>("square")) { $0 * $0 }
        server.register(RPCFunction<[UInt8], [UInt8]>("echo-bytes")) { $0 }
        server.register(RPCFunction<Int, [UInt8]>("bytes")) { [UInt8](repeating: 0x5a, count: $0) }
        // The traced variant: one span in the worker (a no-op unless the call carries a context).
        server.register(RPCFunction<Int, Int>("square-traced")) { number in withSpan("square") { _ in number * number } }
    },
    // Reads the table that the "shared-region" initializer put in the template: one byte per page.
    .rpcWorker("table-reader") { server in
        server.register(RPCFunction<Int, Int>("read-table")) { _ in
            guard let region = SharedMemoryRegion.named("data") else { return -1 }
            var sum = 0
            for offset in stride(from: 0, to: region.size, by: 4096) { sum &+= Int(region.bytes[offset]) }
            return sum
        }
    },
    .rpcWorker("rpc-bench-spin", spinBeforeBlocking: .microseconds(100)) { server in
        server.register(RPCFunction<Int, Int>("square")) { $0 * $0 }
    },
    .initializer("shared-region") { arguments in
        let megabytes = Int(String(decoding: arguments[0], as: UTF8.self)) ?? 0
        let region = try SharedMemoryRegion.create(name: "data", size: megabytes << 20)
        memset(region.mutableBytes.baseAddress!, 1, region.size)
    },
    .initializer("private-heap") { arguments in
        let megabytes = Int(String(decoding: arguments[0], as: UTF8.self)) ?? 0
        privateHeap = malloc(megabytes << 20)
        memset(privateHeap!, 1, megabytes << 20)
    },
])
