// swift-tools-version:6.3
// The micro-benchmarks, in a package of their own so that building and testing Edge never builds the benchmark
// harness (as swift-nio keeps its `Benchmarks/`). Run: `cd bench/micro && swift package --disable-sandbox benchmark`.
import PackageDescription

let package = Package(
    name: "edge-benchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(path: "../.."),
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        .executableTarget(
            name: "Routing",
            dependencies: [
                .product(name: "EdgeCore", package: "main"),
                .product(name: "Benchmark", package: "benchmark"),
            ],
            path: "Benchmarks/Routing",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        )
    ]
)
