import Benchmark
@_spi(Benchmarks) import EdgeCore

/// The cost of finding a request's site and route as the configuration grows from 10 to 100,000 hosts and routes:
/// flat, because both are perfect-hash look-ups (and, for prefixes, one walk down a segment tree).
///
/// Each iteration looks up the next of 48 keys (exact names, wildcard children and unknown names; exact paths,
/// paths below prefixes and unknown paths), so that the optimiser cannot hoist a look-up out of the loop.
let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.cpuTotal, .wallClock, .mallocCountTotal],
        warmupIterations: 10,
        scalingFactor: .kilo,
        maxDuration: .seconds(2),
        maxIterations: 1_000
    )
    for size in [10, 100, 1_000, 10_000, 100_000] {
        let tables = RoutingBenchmarkTables(hosts: size, routes: size)
        var hosts: [Substring] = []
        var paths: [Substring] = []
        for index in 0..<16 {
            let spread = (index * 7919) % max(1, size / 2)
            // Every tenth made-up site is a wildcard (`*.w<i>.example.com`); the others are exact names.
            let exact = spread % 10 == 0 ? spread + 1 : spread
            hosts += ["site\(exact).example.com:443", "a.w\((spread / 10) * 10).example.com", "nobody\(index).example.org"]
            paths += ["/page\(spread)", "/section\(spread)/items/\(index)/detail", "/nothing/\(index)/here"]
        }
        let count = hosts.count
        Benchmark("site by host, \(size) hosts") { benchmark in
            var next = 0
            for _ in benchmark.scaledIterations {
                blackHole(tables.site(for: hosts[next]))
                next = next + 1 == count ? 0 : next + 1
            }
        }
        Benchmark("route by path, \(size) routes") { benchmark in
            var next = 0
            for _ in benchmark.scaledIterations {
                blackHole(tables.route(for: paths[next]))
                next = next + 1 == count ? 0 : next + 1
            }
        }
    }
}
