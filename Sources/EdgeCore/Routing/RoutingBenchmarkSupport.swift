import NIOCore

/// Tables of made-up sites and routes for the routing micro-benchmark (`Benchmarks/`): the same ``HostTable`` and
/// ``PathTable`` a configuration builds, at sizes no test configuration reaches.
@_spi(Benchmarks)
public struct RoutingBenchmarkTables: Sendable {
    private let hosts: HostTable
    private let site: Site

    /// `hosts` sites named `site<i>.example.com` (and one wildcard per ten), and one site with `routes` prefix routes
    /// `/section<i>/items` beside exact routes `/page<i>`.
    public init(hosts: Int, routes: Int) {
        let origin = FixedResponse(EdgeResponse(status: .ok))
        var made: [Route] = []
        for index in 0..<max(1, routes / 2) {
            made.append(Route(prefix: "/section\(index)/items", origin: origin, rateLimiter: nil, authenticator: nil))
            made.append(Route(prefix: "/page\(index)", origin: origin, rateLimiter: nil, authenticator: nil, isExact: true))
        }
        site = Site(names: ["www.example.com"], routes: made)
        var sites = [site]
        for index in 0..<hosts {
            sites.append(Site(names: index % 10 == 0 ? ["*.w\(index).example.com"] : ["site\(index).example.com"], routes: []))
        }
        self.hosts = HostTable(sites: sites, fallback: nil)
    }

    /// Finds the site for `host`; `true` when one answers.
    @inline(never)
    public func site(for host: Substring) -> Bool {
        hosts.site(for: host) != nil
    }

    /// Finds the route of the routes' site for `path`; `true` when one answers.
    @inline(never)
    public func route(for path: Substring) -> Bool {
        site.route(for: path) != nil
    }
}
