// swift-tools-version: 6.1
// ForkKit's microbenchmarks, in ordo-one/benchmark: a package of its own, so that users of ForkKit
// never fetch the harness. Run them with scripts/microbench.sh (README, "Microbenchmarks").
import PackageDescription

let package = Package(
    name: "ForkKitMicrobenchmarks",
    dependencies: [
        .package(name: "ForkKit", path: "../.."),
        // 1.38.1 resolves here only with its traits named: the default set includes
        // RuntimeInterposer, whose package (swift-runtime-interposer) is not available. The ARC
        // metrics need it; the malloc counts and times measured here do not.
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        // The benchmark suite: the harness runs executable targets in a directory named Benchmarks.
        .executableTarget(
            name: "ForkKitMicro",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "ForkKit", package: "ForkKit"),
                .product(name: "ForkRPC", package: "ForkKit"),
                .product(name: "MessagePack", package: "ForkKit"),
                // Not linked in: a dependency only so that building the suite builds the template.
                "microbench-template",
            ],
            path: "Benchmarks/ForkKitMicro",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
        .executableTarget(
            name: "microbench-template",
            dependencies: [
                .product(name: "ForkKit", package: "ForkKit"),
                .product(name: "ForkRPC", package: "ForkKit"),
            ],
            path: "Sources/microbench-template",
            linkerSettings: [.unsafeFlags(["-static-stdlib"])]
        ),
    ]
)
