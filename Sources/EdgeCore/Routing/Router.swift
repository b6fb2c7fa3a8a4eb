import Logging
import NIOCore

/// A route ready to serve: its prefix, policies and origin.
///
/// A class, so that handing the matched route along the request path is one reference, not a copy of
/// every field.
public final class Route: Sendable {
    /// Path prefix, as configured.
    public let prefix: String
    /// The prefix requests are matched against: ``prefix`` without a trailing `/` (`/docs/` and `/docs` are
    /// one route), except for the root `/`.
    let matchPrefix: String
    /// Where matching requests are answered (``Origin``).
    let origin: any Origin
    /// Per-client rate limit, checked first.
    public let rateLimiter: RateLimiter?
    /// The route's slot in the metrics (``RouteLabels``).
    let metricsSlot: Int
    /// Basic authentication, checked after the rate limit.
    public let authenticator: BasicAuthenticator?
    /// Whether the route answers its path alone (`match = "exact"`).
    let isExact: Bool
    /// Client address rules (`allow`, `deny`), checked first; `nil` lets every client in.
    let access: AccessRules?

    /// Creates a route.
    init(
        prefix: String, origin: any Origin, rateLimiter: RateLimiter?, authenticator: BasicAuthenticator?, metricsSlot: Int = 0,
        isExact: Bool = false, access: AccessRules? = nil
    ) {
        self.isExact = isExact
        self.access = access
        self.prefix = prefix
        self.metricsSlot = metricsSlot
        self.matchPrefix = Self.matchForm(of: prefix)
        self.origin = origin
        self.rateLimiter = rateLimiter
        self.authenticator = authenticator
    }

    /// `prefix` without its trailing slashes, but never empty: `/docs/` → `/docs`, `/` → `/`.
    static func matchForm(of prefix: String) -> String {
        var bytes = Array(prefix.utf8)
        while bytes.count > 1, bytes.last == UInt8(ascii: "/") { bytes.removeLast() }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Whether this route serves `path` (in normal form): the path is the prefix, or goes on from it with `/`.
    /// `/files` serves `/files`, `/files/` and `/files/a`, never `/filesprivate/a` (which belongs to another
    /// route or none). Bytes are compared, never `Character`s: a combining mark after a `/` must not join it.
    func matches(_ path: Substring) -> Bool {
        let prefixBytes = matchPrefix.utf8
        guard path.hasBytePrefix(matchPrefix) else { return false }
        if prefixBytes.count == 1 { return true }  // the root `/`: every path starts with it
        let utf8 = path.utf8
        let boundary = utf8.index(utf8.startIndex, offsetBy: prefixBytes.count)
        return boundary == utf8.endIndex || utf8[boundary] == UInt8(ascii: "/")
    }

    /// `path` (which this route ``matches(_:)``) below the prefix: `/assets/a.css` under `/assets` is `/a.css`,
    /// `/assets/` is `/`, `/assets` itself is empty (a static route redirects it to `/assets/`, as nginx does for
    /// a directory), and under `/` the path is its own. Cut by UTF-8 bytes, so nothing after the prefix is lost or
    /// joined to it, and nothing is inserted.
    func relativePath(of path: Substring) -> Substring {
        if isExact { return path }
        let count = matchPrefix.utf8.count
        guard count > 1 else { return path }
        let utf8 = path.utf8
        return path[utf8.index(utf8.startIndex, offsetBy: count)...]
    }
}

/// A route whose policies could not be set up (e.g. an unreadable htpasswd file).
public struct RouteSetupError: Error, CustomStringConvertible {
    /// What went wrong, naming the config key.
    public var description: String
}

/// Client address rules of a route: `deny` refuses, and a non-empty `allow` lets in only what it names.
struct AccessRules: Sendable {
    let allow: [AddressRange]
    let deny: [AddressRange]

    init?(allow: [AddressRange], deny: [AddressRange]) {
        guard !allow.isEmpty || !deny.isEmpty else { return nil }
        self.allow = allow
        self.deny = deny
    }

    func admits(_ client: ClientAddress) -> Bool {
        if deny.contains(where: { $0.contains(client) }) { return false }
        return allow.isEmpty || allow.contains { $0.contains(client) }
    }
}

/// Routing over the configured sites and routes: the site by the request's host (``HostTable``), then the route
/// by its path (``PathTable``: an exact route, else the longest prefix, as nginx's `location`s) — each in time
/// that does not grow with the number of sites or routes. A class: the front ends reach it on every request, and
/// a struct of this many references would be copied (retained field by field) where a reference is not.
public final class Router: Sendable {
    /// Every route of every site.
    private let routes: [Route]
    let hosts: HostTable
    /// What a request for a host no site answers gets.
    let unknownHost: UnknownHostPolicy
    /// The upstream groups, by name.
    let upstreamGroups: [String: UpstreamGroup]
    /// Whether any route streams its requests (a proxy): when none does, the front ends never ask.
    let hasStreamingRoutes: Bool
    /// Whether any route may switch protocols (WebSocket): HTTP/2 connections then offer extended CONNECT.
    let hasUpgradeRoutes: Bool
    /// The pub/sub hubs, by route label (site and path): a reload that keeps a hub route with the same settings
    /// keeps its hub, so its subscribers and kept messages live on.
    let hubs: [String: PubSubHub]

    /// Builds the routes of a configuration; `defaultTTL` applies to cached routes without their own TTL.
    /// - Throws: ``RouteSetupError`` when a route's htpasswd file or static root is missing or invalid.
    init(
        routes configurations: [RouteConfiguration], sites: [SiteConfiguration] = [], unknownHost: UnknownHostPolicy = .defaultSite,
        defaultTTL: TimeAmount, passwordChecks: PasswordCheckPool = .standalone,
        upstreams: [UpstreamGroupConfiguration] = [], serverName: String = "edge", trustedProxies: [AddressRange] = [],
        maxEntryBytes: Int = CacheConfiguration().maxEntryBytes, generation: Int = 0, previousHubs: [String: PubSubHub] = [:],
        compressionBudget: CompressionBudget = CompressionBudget(limit: LimitsConfiguration().maxCompressingResponses),
        routeLabels: RouteLabels = RouteLabels()
    ) throws(RouteSetupError) {
        var groups: [String: UpstreamGroup] = [:]
        for (index, upstream) in upstreams.enumerated() {
            do {
                groups[upstream.name] = try UpstreamGroup(configuration: upstream)
            } catch {
                throw RouteSetupError(description: "upstream[\(index)].tls: \(error)")
            }
        }
        self.upstreamGroups = groups
        var context = RouteBuilder(
            groups: groups, defaultTTL: defaultTTL, passwordChecks: passwordChecks, serverName: serverName,
            trustedProxies: trustedProxies, maxEntryBytes: maxEntryBytes, compressionBudget: compressionBudget, generation: generation,
            previousHubs: previousHubs,
            routeLabels: routeLabels
        )
        var all: [Route] = []
        let topLevel = try context.build(configurations, key: "route", label: "")
        all += topLevel
        var built: [Site] = []
        var defaultSite: Site?
        for (index, site) in sites.enumerated() {
            let routes = try context.build(site.routes, key: "site[\(index)].route", label: site.names.first ?? "")
            all += routes
            var headers: [(name: String, value: String)] = []
            if site.securityHeaders {
                headers = [
                    ("x-content-type-options", "nosniff"), ("x-frame-options", "SAMEORIGIN"),
                    ("referrer-policy", "strict-origin-when-cross-origin"),
                ]
            }
            let made = Site(
                names: site.names, routes: routes, httpsRedirect: site.redirectHTTPS.map { Site.HTTPSRedirect(port: $0.port) },
                headers: headers, tlsHeaders: site.hsts.map { [("strict-transport-security", $0)] } ?? []
            )
            built.append(made)
            if site.isDefault { defaultSite = made }
        }
        if defaultSite == nil, unknownHost == .defaultSite, sites.isEmpty || !configurations.isEmpty {
            defaultSite = Site(names: [], routes: topLevel)
        }
        hosts = HostTable(sites: built, fallback: defaultSite)
        self.unknownHost = unknownHost
        self.routes = all
        hubs = context.hubs
        hasStreamingRoutes = all.contains { $0.origin.requestBody.isStreamed }
        hasUpgradeRoutes = all.contains {
            if case .upgrade = $0.origin.requestBody { return true }
            return false
        }
    }

    /// Every route's authenticator, for reloading their files.
    public var authenticators: [BasicAuthenticator] { routes.compactMap(\.authenticator) }

    /// The route of the fallback site (the top-level routes) for `path`: an exact route, else the longest prefix
    /// of `path` that ends at a segment boundary (``Route/matches(_:)``), or `nil`. Bytes are compared, never
    /// `Character`s.
    public func route(for path: Substring) -> Route? {
        hosts.fallback?.route(for: path)
    }

    /// The site that answers `host`, or `nil` when none does (``unknownHost`` then decides).
    @inline(__always)
    func site(for host: Substring) -> Site? {
        hosts.site(for: host)
    }
}

/// Builds ``Route``s from their configuration, for ``Router``: the origin of each handler kind, wrapped in the
/// cache where the route caches, and the route's policies. The one place a new route kind is added.
private struct RouteBuilder {
    let groups: [String: UpstreamGroup]
    let defaultTTL: TimeAmount
    let passwordChecks: PasswordCheckPool
    let serverName: String
    let trustedProxies: [AddressRange]
    let maxEntryBytes: Int
    let compressionBudget: CompressionBudget
    let generation: Int
    let previousHubs: [String: PubSubHub]
    let routeLabels: RouteLabels
    var hubs: [String: PubSubHub] = [:]

    mutating func build(_ configurations: [RouteConfiguration], key: String, label: String) throws(RouteSetupError) -> [Route] {
        var built: [Route] = []
        for (index, configuration) in configurations.enumerated() {
            let routeKey = "\(key)[\(index)]"
            let routeLabel = label + configuration.path
            let origin: any Origin
            switch configuration.handler {
            case .demo(let demo):
                origin = CachingOrigin(DemoBackend(configuration: demo), ttl: configuration.cacheTTL ?? defaultTTL)
            case .respond(let fixed):
                var response = EdgeResponse.text(.init(statusCode: fixed.status), fixed.body)
                response.headers.replaceOrAdd(name: "content-type", value: fixed.contentType)
                origin = FixedResponse(response)
            case .static(let settings):
                do {
                    origin = try StaticFiles(configuration: settings)
                } catch {
                    throw RouteSetupError(description: "\(routeKey).static: \(error.description)")
                }
            case .proxy(let settings):
                guard let group = groups[settings.upstream] else {
                    throw RouteSetupError(description: "\(routeKey).proxy: no upstream named \"\(settings.upstream)\"")
                }
                let proxy = ProxyResponder(
                    configuration: settings, group: group, prefix: configuration.path, serverName: serverName,
                    trustedProxies: trustedProxies, logger: Logger(label: "edge.proxy")
                )
                // Compression under the cache: the cache keeps each compressed variant.
                let compressing: any Origin = settings.compress.isEmpty
                    ? proxy
                    : CompressingOrigin(proxy, codings: settings.compress.compactMap(ContentCoding.init(configurationName:)), budget: compressionBudget)
                origin = settings.cache.map { HTTPCache(compressing, configuration: $0, maxEntryBytes: maxEntryBytes) } ?? compressing
            case .websocket(let settings):
                var relay: WebSocketRelay?
                if case .upstream(let name) = settings.target {
                    guard let group = groups[name] else {
                        throw RouteSetupError(description: "\(routeKey).websocket.upstream: no upstream named \"\(name)\"")
                    }
                    guard group.configuration.wireProtocol == .http1 else {
                        throw RouteSetupError(
                            description: "\(routeKey).websocket.upstream: upstream \"\(name)\" speaks HTTP/2; WebSocket upstreams are reached over HTTP/1.1"
                        )
                    }
                    var proxySettings = ProxyRouteConfiguration(upstream: name)
                    proxySettings.stripPrefix = settings.stripPrefix
                    proxySettings.host = settings.host
                    let proxy = ProxyResponder(
                        configuration: proxySettings, group: group, prefix: configuration.path, serverName: serverName,
                        trustedProxies: trustedProxies, logger: Logger(label: "edge.websocket")
                    )
                    relay = WebSocketRelay(proxy: proxy, group: group, settings: settings, generation: generation)
                }
                var hub: PubSubHub?
                if case .hub(let hubSettings) = settings.target {
                    let kept = previousHubs[routeLabel].flatMap { $0.settings == hubSettings ? $0 : nil }
                    hub = kept ?? PubSubHub(settings: hubSettings)
                    hubs[routeLabel] = hub
                }
                origin = WebSocketRoute(configuration: settings, relay: relay, hub: hub, generation: generation)
            }
            let limiter = configuration.rateLimit.map { RateLimiter(perSecond: $0.perSecond, burst: $0.burst) }
            var authenticator: BasicAuthenticator?
            if let auth = configuration.basicAuth {
                do {
                    authenticator = try BasicAuthenticator(realm: auth.realm, path: auth.htpasswd, checks: passwordChecks)
                } catch {
                    throw RouteSetupError(description: "\(routeKey).basic_auth.htpasswd: \(error)")
                }
            }
            built.append(
                Route(
                    prefix: configuration.path, origin: origin, rateLimiter: limiter, authenticator: authenticator,
                    metricsSlot: routeLabels.slot(for: routeLabel), isExact: configuration.exact,
                    access: AccessRules(allow: configuration.allow, deny: configuration.deny)
                )
            )
        }
        return built
    }
}
