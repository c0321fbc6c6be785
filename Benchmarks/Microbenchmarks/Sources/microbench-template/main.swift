// The template the microbenchmarks fork from, like forkkit-bench's (Benchmarks/BenchTemplate): only
// ForkKit, the Swift runtime linked in statically, so that a fork copies few page tables. The
// benchmark executable cannot be its own template: the harness owns its `main`, and bootstrap must
// come first. It is built with the benchmark (the benchmark target depends on it), next to it.
import ForkKit
import ForkRPC

ForkTemplate.bootstrap([
    .function("exit-now") { _ in },
    .rpcWorker("square") { server in
        server.register(RPCFunction<Int, Int>("square")) { $0 * $0 }
    },
])
