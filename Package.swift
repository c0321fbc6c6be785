// swift-tools-version: 6.1
// ForkKit runs on Linux only, by design: it is built on epoll, memfd, pidfd, signalfd and prctl.
// On another platform the build stops at Sources/CMsgPack/shim.h, which every module imports first,
// with one sentence saying so (SwiftPM has no way to list Linux alone as a supported platform).
import CompilerPluginSupport
import PackageDescription

/// Small templates link the Swift runtime statically: a template with fewer mappings forks faster
/// (DESIGN.md, "Fork cost is set by the template's page tables").
let staticRuntime: [LinkerSetting] = [.unsafeFlags(["-static-stdlib"])]

let package = Package(
    name: "ForkKit",
    products: [
        .library(name: "MessagePack", targets: ["MessagePack"]),
        // `@MessagePackCodable`: its own product, so that only its users compile swift-syntax.
        .library(name: "MessagePackMacros", targets: ["MessagePackMacros"]),
        .library(name: "ForkKit", targets: ["ForkKit"]),
        .library(name: "ForkRPC", targets: ["ForkRPC"]),
        .library(name: "ForkPool", targets: ["ForkPool"]),
        .library(name: "ForkActors", targets: ["ForkActors"]),
        .library(name: "ForkKitTestPlugin", type: .dynamic, targets: ["ForkKitTestPlugin"]),
        .library(name: "ForkKitWordCountPlugin", type: .dynamic, targets: ["ForkKitWordCountPlugin"]),
        .executable(name: "forkkit-demo", targets: ["forkkit-demo"]),
        .executable(name: "forkkit-prefork-exec", targets: ["forkkit-prefork-exec"]),
        .executable(name: "forkkit-bench", targets: ["forkkit-bench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-system", from: "1.8.1"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-collections", from: "1.6.0"),
        // A pool runs as a `Service` in a `ServiceGroup` (graceful shutdown on SIGTERM).
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        // A call carries its caller's trace context to the worker, whose spans come back (ForkRPC).
        .package(url: "https://github.com/apple/swift-distributed-tracing", from: "1.7.3"),
        // `swift package generate-documentation` for the DocC catalogs (scripts/docs.sh).
        .package(url: "https://github.com/swiftlang/swift-docc-plugin", from: "1.5.0"),
        // Only for the `@MessagePackCodable` macro (MessagePackMacros): fetched by every user, built by its users only.
        .package(url: "https://github.com/swiftlang/swift-syntax", from: "603.0.0"),
    ],
    targets: [
        .systemLibrary(
            name: "CMsgPack",
            pkgConfig: "msgpack",
            providers: [.apt(["libmsgpack-dev"])]
        ),
        .target(name: "CForkSupport"),
        .target(name: "MessagePack", dependencies: ["CMsgPack"]),
        // The compiler plug-in that expands `@MessagePackCodable`, and the library that declares it.
        .macro(
            name: "MessagePackMacroPlugin",
            dependencies: [
                .product(name: "SwiftSyntax", package: "swift-syntax"),
                .product(name: "SwiftSyntaxMacros", package: "swift-syntax"),
                .product(name: "SwiftCompilerPlugin", package: "swift-syntax"),
            ]
        ),
        .target(name: "MessagePackMacros", dependencies: ["MessagePack", "MessagePackMacroPlugin"]),
        .target(
            name: "ForkKit",
            dependencies: [
                "MessagePack", "CForkSupport",
                .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .target(
            name: "ForkRPC",
            dependencies: [
                "ForkKit", "MessagePack",
                .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
            ]
        ),
        .target(
            name: "ForkPool",
            dependencies: [
                "ForkRPC", "ForkKit",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        // Distributed actors that live in worker processes, on ForkRPC's wire, placed by ForkPool.
        .target(name: "ForkActors", dependencies: ["ForkPool", "ForkRPC", "ForkKit", "MessagePack"]),

        // A plugin that tests load into a template with `dlopen`.
        .target(name: "ForkKitTestPlugin", dependencies: ["ForkKit"], path: "Tests/ForkKitTestPlugin"),
        // The program that tests start as a template.
        .executableTarget(
            name: "forkkit-test-worker",
            dependencies: [
                "ForkKit", "ForkRPC", "ForkPool", "MessagePack", "ForkKitTestSupport", "ForkKitTestActors",
                .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
            ],
            path: "Tests/ForkKitTestWorker"
        ),
        // swift-argument-parser commands: a synchronous one that calls bootstrap from run() (and forgets
        // it in one subcommand), an asynchronous one that calls it from main().
        .executableTarget(
            name: "forkkit-test-command",
            dependencies: ["ForkPool", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            path: "Tests/ForkKitTestCommand"
        ),
        .executableTarget(
            name: "forkkit-test-async-command",
            dependencies: ["ForkPool", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            path: "Tests/ForkKitTestAsyncCommand"
        ),
        // A pool as a swift-service-lifecycle Service, which the tests stop with SIGTERM.
        .executableTarget(
            name: "forkkit-test-service",
            dependencies: ["ForkPool", .product(name: "ServiceLifecycle", package: "swift-service-lifecycle")],
            path: "Tests/ForkKitTestService"
        ),

        // The CPU-bound work the demo, the examples and the pool benchmark share.
        .target(name: "DemoWorkloads", dependencies: ["ForkRPC"], path: "Examples/Workloads"),
        // The main demo: a parallel map on worker processes, on threads and on one thread.
        .executableTarget(
            name: "forkkit-demo",
            dependencies: [
                "ForkKit", "ForkRPC", "ForkPool", "DemoWorkloads",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Examples/Demo"
        ),
        // AnyEvent::Fork's classic examples: pre-forked servers on one socket, fork+exec.
        .executableTarget(
            name: "forkkit-prefork-exec",
            dependencies: [
                "ForkKit",
                .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Examples/PreforkAndExec"
        ),
        .executableTarget(
            name: "forkkit-quickstart",
            dependencies: ["ForkKit", .product(name: "SystemPackage", package: "swift-system")],
            path: "Examples/QuickStart"
        ),
        // Issue 7's examples, each run by CI with its output checked.
        .executableTarget(
            name: "forkkit-remote-functions",
            dependencies: ["ForkKit", "ForkRPC", .product(name: "Logging", package: "swift-log")],
            path: "Examples/RemoteFunctions"
        ),
        .executableTarget(name: "forkkit-async-countdown", dependencies: ["ForkKit", "ForkRPC"], path: "Examples/AsyncCountDown"),
        .executableTarget(name: "forkkit-remote-pool", dependencies: ["ForkKit", "ForkPool"], path: "Examples/RemotePool"),
        .executableTarget(name: "forkkit-work-queue", dependencies: ["ForkPool", "DemoWorkloads"], path: "Examples/WorkQueue"),
        .executableTarget(name: "forkkit-distributed-actors", dependencies: ["ForkActors"], path: "Examples/DistributedActors"),
        // Issue 17's example: a pool as a Service, workers' output in the Logger, progress as a stream.
        .executableTarget(
            name: "forkkit-pool-service",
            dependencies: ["ForkPool", "DemoWorkloads", .product(name: "ServiceLifecycle", package: "swift-service-lifecycle")],
            path: "Examples/PoolService"
        ),
        .executableTarget(name: "forkkit-shared-table", dependencies: ["ForkKit", "ForkRPC", "ForkPool"], path: "Examples/SharedTable"),
        .target(name: "ForkKitWordCountPlugin", dependencies: ["ForkKit", "ForkRPC"], path: "Examples/Plugin/Library"),
        .executableTarget(name: "forkkit-plugin-host", dependencies: ["ForkKit", "ForkRPC"], path: "Examples/Plugin/Host"),
        .executableTarget(
            name: "forkkit-bench",
            dependencies: [
                "ForkKit", "ForkRPC", "ForkPool", "ForkActors", "MessagePack", "MessagePackMacros", "CMsgPack", "DemoWorkloads", "LoopbackSSH",
                "AllocationCounter",
                .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
                .product(name: "InMemoryTracing", package: "swift-distributed-tracing"),
            ],
            path: "Benchmarks/ForkKitBench"
        ),
        // Counts the benchmark process's heap allocations (malloc defined in front of glibc's).
        .target(name: "AllocationCounter", path: "Benchmarks/AllocationCounter"),
        // The small template the benchmarks fork from: no Foundation, Swift runtime linked in.
        .executableTarget(
            name: "forkkit-bench-template",
            dependencies: ["ForkKit", "ForkRPC", .product(name: "Tracing", package: "swift-distributed-tracing")],
            path: "Benchmarks/BenchTemplate",
            linkerSettings: staticRuntime
        ),

        .testTarget(name: "MessagePackTests", dependencies: ["MessagePack"]),
        // The macro's conformances against plain Codable, and its expansions and diagnostics.
        .testTarget(
            name: "MessagePackMacroTests",
            dependencies: [
                "MessagePackMacros", "MessagePackMacroPlugin",
                .product(name: "SwiftSyntaxMacrosGenericTestSupport", package: "swift-syntax"),
            ]
        ),
        // The harness every decoder of untrusted bytes runs under, for the fuzzer (below) and for
        // the tests, which replay the corpus in Tests/FuzzCorpus.
        .target(name: "FuzzHarness", dependencies: ["ForkKit", "ForkRPC", "MessagePack"], path: "Tests/FuzzHarness"),
        // What the test targets share (paths of the built test programs, process and descriptor checks).
        .target(
            name: "ForkKitTestSupport",
            dependencies: [
                "ForkKit", .product(name: "SystemPackage", package: "swift-system"), .product(name: "Logging", package: "swift-log"),
            ],
            path: "Tests/ForkKitTestSupport"
        ),
        // Distributed actors that both the tests and the test worker know (one module, one name).
        .target(name: "ForkKitTestActors", dependencies: ["ForkActors", "ForkKitTestSupport"], path: "Tests/ForkKitTestActors"),
        .testTarget(
            name: "ForkActorsTests",
            dependencies: ["ForkActors", "ForkKitTestActors", "ForkKitTestSupport", "LoopbackSSH"]
        ),
        // A real sshd on 127.0.0.1 with keys in a temporary directory, for the remote-worker tests
        // and the remote benchmark.
        .target(name: "LoopbackSSH", path: "Tests/LoopbackSSH"),
        .testTarget(
            name: "ForkRPCTests",
            dependencies: [
                "ForkRPC", "ForkKit", "MessagePack", "ForkKitTestSupport", "FuzzHarness",
                .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "InMemoryTracing", package: "swift-distributed-tracing"),
            ]
        ),
        .testTarget(
            name: "ForkPoolTests",
            dependencies: [
                "ForkPool", "ForkRPC", "ForkKit", "ForkKitTestSupport", "LoopbackSSH",
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "MetricsTestKit", package: "swift-metrics"),
                .product(name: "InMemoryTracing", package: "swift-distributed-tracing"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .testTarget(
            name: "ForkKitTests",
            dependencies: [
                "ForkKit", "CForkSupport", "MessagePack", "ForkKitTestSupport",
                .product(name: "SystemPackage", package: "swift-system"),
            ]
        ),
    ]
)

// The libFuzzer target has no main of its own (libFuzzer's is linked in by --sanitize=fuzzer), so it
// exists only in the build that scripts/fuzz.sh makes.
if Context.environment["FORKKIT_FUZZ"] != nil {
    package.targets.append(.executableTarget(
        name: "forkkit-fuzz",
        dependencies: ["FuzzHarness"],
        path: "Tests/Fuzz",
        swiftSettings: [.unsafeFlags(["-parse-as-library"])]
    ))
}
