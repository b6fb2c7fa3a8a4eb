import NIOCore
import NIOHTTP1

/// One virtual host (`[[site]]`): the names it answers, its routes, and what it adds to every answer.
public final class Site: Sendable {
    /// The names as configured (exact names and `*.` wildcards); empty for the fallback site of top-level routes.
    public let names: [String]
    /// The label metrics and logs use for it: its first name, or `*` for the fallback.
    public let label: String
    let paths: PathTable
    /// Every route, in configuration order.
    let routes: [Route]
    /// Where a plain-HTTP request is sent instead (`redirect_https`), with the port to name (`nil`: 443, unnamed).
    let httpsRedirect: HTTPSRedirect?
    /// Header fields added to every answer of this site (`security_headers`); HSTS only over TLS (RFC 6797 §7.2).
    let headers: [(name: String, value: String)]
    let tlsHeaders: [(name: String, value: String)]

    struct HTTPSRedirect: Sendable {
        var port: Int?
    }

    init(
        names: [String], routes: [Route], httpsRedirect: HTTPSRedirect? = nil,
        headers: [(name: String, value: String)] = [], tlsHeaders: [(name: String, value: String)] = []
    ) {
        self.names = names
        self.label = names.first ?? "*"
        self.routes = routes
        self.paths = PathTable(routes: routes)
        self.httpsRedirect = httpsRedirect
        self.headers = headers
        self.tlsHeaders = tlsHeaders
    }

    /// Whether this site adds header fields to its answers over a connection that is (or is not) TLS.
    @inline(__always)
    func addsHeaders(tls: Bool) -> Bool { !headers.isEmpty || (tls && !tlsHeaders.isEmpty) }

    /// The route for `path` (normal form).
    @inline(__always)
    func route(for path: Substring) -> Route? { paths.route(for: path) }

    /// The 308 that sends a plain-HTTP request for `target` to HTTPS on `host` (its port dropped).
    func redirect(host: Substring, target: Substring) -> EdgeResponse? {
        guard let httpsRedirect else { return nil }
        let name = HostTable.hostName(host)
        guard !name.isEmpty else { return nil }
        var location = "https://"
        location += String(decoding: name, as: UTF8.self)
        if let port = httpsRedirect.port, port != 443 { location += ":\(port)" }
        location += target.isEmpty ? "/" : String(target)
        var response = EdgeResponse.text(.permanentRedirect, "moved to \(location)\n")
        response.headers.add(name: "location", value: location)
        return response
    }
}

/// What a request for a host that no site names gets, when no site is the default (`unknown_host`).
public enum UnknownHostPolicy: String, Sendable, Equatable {
    /// The default site answers it (a site with `default = true`, or the top-level routes).
    case defaultSite = "default"
    /// 421 Misdirected Request (RFC 9110 §15.5.20): this server is not authoritative for the name.
    case misdirected = "421"
    /// 404 Not Found.
    case notFound = "404"
}

/// The sites, found by the request's host in time that does not grow with the number of sites: exact names in a
/// ``PerfectHashTable``, then wildcards (`*.example.com` answers `a.example.com` and `a.b.example.com`, as nginx's
/// leading wildcard) by looking up each parent name of the host, longest first — as many look-ups as the host has
/// dots, whatever the number of names — then the default.
struct HostTable: Sendable {
    private let exact: PerfectHashTable<Site>
    private let wildcards: PerfectHashTable<Site>
    /// The site for hosts no name matches (`nil`: ``unknownHost`` decides).
    let fallback: Site?
    /// Every site.
    let sites: [Site]

    /// `sites` with distinct names (the loader refuses duplicates); `fallback` answers the rest.
    init(sites: [Site], fallback: Site?) {
        var exactEntries: [(key: [UInt8], value: Site)] = []
        var wildcardEntries: [(key: [UInt8], value: Site)] = []
        for site in sites {
            for name in site.names {
                if name.hasPrefix("*.") {
                    wildcardEntries.append((Array(name.utf8.dropFirst(2)), site))
                } else {
                    exactEntries.append((Array(name.utf8), site))
                }
            }
        }
        exact = PerfectHashTable(exactEntries, foldsCase: true)
        wildcards = PerfectHashTable(wildcardEntries, foldsCase: true)
        self.fallback = fallback
        var all = sites
        if let fallback, !all.contains(where: { $0 === fallback }) { all.append(fallback) }
        self.sites = all
    }

    /// Whether there is more than one site to choose from (else every request goes to ``fallback`` at once).
    var isSingle: Bool { exact.count == 0 && wildcards.count == 0 }

    /// The site for `host` (a `Host` or `:authority` value, with or without a port), or `nil` when none answers it.
    @inline(__always)
    func site(for host: Substring) -> Site? {
        if isSingle { return fallback }
        let name = Self.hostName(host)
        if let site = exact.value(for: name) { return site }
        if wildcards.count > 0 {
            var rest = name[...]
            while let dot = rest.firstIndex(of: UInt8(ascii: ".")) {
                rest = rest[rest.index(after: dot)...]
                if rest.isEmpty { break }
                if let site = wildcards.value(for: rest) { return site }
            }
        }
        return fallback
    }

    /// The name part of a host value: without the port, the brackets of an IPv6 literal kept, and without one
    /// trailing dot (`Example.COM.:8443` → `Example.COM`; case is folded by the look-up).
    @inline(__always)
    static func hostName(_ host: Substring) -> Substring.UTF8View {
        var utf8 = host.utf8
        if utf8.first == UInt8(ascii: "[") {
            if let close = utf8.firstIndex(of: UInt8(ascii: "]")) { utf8 = utf8[...close] }
        } else if let colon = utf8.firstIndex(of: UInt8(ascii: ":")) {
            utf8 = utf8[..<colon]
        }
        if utf8.last == UInt8(ascii: "."), utf8.count > 1 { utf8 = utf8.dropLast() }
        return utf8
    }
}
