public import NIOCore

/// The complete, validated configuration of one Edge process.
///
/// Built by ``ConfigurationLoader`` from a TOML file (or ``EdgeConfiguration/embeddedDefault``),
/// then adjusted by ``EnvironmentOverrides`` and command-line flags.
public struct EdgeConfiguration: Sendable, Equatable {
    /// Number of event-loop threads; `nil` means one per core.
    public var threads: Int?
    /// Folder for generated state such as the self-signed certificate; `nil` means the platform default.
    public var stateDirectory: String?
    /// Minimum log level: trace, debug, info, notice, warning, error or critical.
    public var logLevel: String
    /// Value of the `Server` response header.
    public var serverName: String
    /// How long a graceful shutdown may take before remaining connections are closed.
    public var shutdownTimeout: TimeAmount
    /// Which HTTP/2 connection layer serves HTTP/2 clients (`http2_engine`): Edge's own by default.
    public var http2Engine: HTTP2Engine = .edge
    /// The transport under the connections (`io`): SwiftNIO's epoll loops (the default) or Edge's io_uring loops.
    public var io: IOTransport = .epoll
    /// How long `/healthz` answers 503 before listeners close, so load balancers stop sending traffic first.
    public var shutdownDelay: TimeAmount
    /// Sockets to listen on.
    public var listeners: [ListenerConfiguration]
    /// Connection, request and size limits.
    public var limits: LimitsConfiguration
    /// Connection timeouts.
    public var timeouts: TimeoutsConfiguration
    /// Response cache sizing.
    public var cache: CacheConfiguration
    /// Routes; the longest matching `path` prefix wins.
    public var routes: [RouteConfiguration]
    /// Proxies whose `X-Forwarded-For` names the client for per-client policies (rate limits).
    public var trustedProxies: [AddressRange] = []
    /// Upstream server groups that `proxy` routes send requests to.
    public var upstreams: [UpstreamGroupConfiguration] = []
    /// The admin listener (`[admin]`); `nil` for none.
    public var admin: AdminConfiguration?
    /// The access log (`[access_log]`); `nil` for none.
    public var accessLog: AccessLogConfiguration?
    /// Request tracing exported with OTLP (`[tracing]`); `nil` for none.
    public var tracing: TracingConfiguration?
    /// Virtual hosts (`[[site]]`), each with its names, certificates and routes. Top-level ``routes`` answer the
    /// hosts no site names.
    public var sites: [SiteConfiguration] = []
    /// What a request for a host no site names gets when there is no default site (`unknown_host`).
    public var unknownHost: UnknownHostPolicy = .defaultSite
    /// Protocol versions and cipher suites of every TLS listener (`[tls]`).
    public var tlsPolicy = TLSPolicyConfiguration()
    /// The ACME CA that sites with `tls = "acme"` get their certificates from (`[acme]`); `nil` for none.
    public var acme: ACMEConfiguration?

    /// What ACME obtains: one certificate per site with `tls = "acme"`, for all its names, known by its first name.
    public var acmeRequests: [ACMECertificateRequest] {
        sites.filter(\.acme).compactMap { site in site.names.first.map { ACMECertificateRequest(id: $0, names: site.names) } }
    }

    /// Every route with the config key it was read from (`route[0]`, `site[1].route[2]`).
    public var keyedRoutes: [(key: String, route: RouteConfiguration)] {
        routes.enumerated().map { ("route[\($0.offset)]", $0.element) }
            + sites.enumerated().flatMap { site in
                site.element.routes.enumerated().map { ("site[\(site.offset)].route[\($0.offset)]", $0.element) }
            }
    }

    /// Creates a configuration.
    public init(
        threads: Int? = nil,
        stateDirectory: String? = nil,
        logLevel: String = "info",
        serverName: String = "edge",
        shutdownTimeout: TimeAmount = .seconds(30),
        shutdownDelay: TimeAmount = .zero,
        listeners: [ListenerConfiguration] = [],
        limits: LimitsConfiguration = .init(),
        timeouts: TimeoutsConfiguration = .init(),
        cache: CacheConfiguration = .init(),
        routes: [RouteConfiguration] = []
    ) {
        self.threads = threads
        self.stateDirectory = stateDirectory
        self.logLevel = logLevel
        self.serverName = serverName
        self.shutdownTimeout = shutdownTimeout
        self.shutdownDelay = shutdownDelay
        self.listeners = listeners
        self.limits = limits
        self.timeouts = timeouts
        self.cache = cache
        self.routes = routes
    }

    /// What `edge` runs with no config file: HTTPS on 8443 with a self-signed certificate,
    /// plain HTTP on 8080, the demo backend behind the cache on `/`, and the admin listener (metrics, status
    /// page) on 127.0.0.1:9901.
    public static var embeddedDefault: EdgeConfiguration {
        var configuration = EdgeConfiguration(
            listeners: [
                ListenerConfiguration(address: .init(host: "0.0.0.0", port: 8443), tls: .selfSigned),
                ListenerConfiguration(address: .init(host: "0.0.0.0", port: 8080), tls: nil),
            ],
            routes: [
                RouteConfiguration(path: "/", handler: .demo(.init(delay: .milliseconds(2))))
            ]
        )
        configuration.admin = AdminConfiguration()
        return configuration
    }
}

/// One listening socket.
public struct ListenerConfiguration: Sendable, Equatable {
    /// Address and port to bind; port 0 picks an ephemeral port.
    public var address: HostPort
    /// TLS settings; `nil` for plain HTTP/1.1.
    public var tls: TLSSource?
    /// Whether each connection starts with a PROXY protocol header (v1 or v2) naming the client, accepted only
    /// from ``proxyProtocolFrom``.
    public var proxyProtocol = false
    /// The balancers that may send a PROXY header; connections from anywhere else are closed.
    public var proxyProtocolFrom: [AddressRange] = []

    /// Creates a listener configuration.
    public init(address: HostPort, tls: TLSSource?) {
        self.address = address
        self.tls = tls
    }
}

/// Where a TLS listener gets its certificate.
public enum TLSSource: Sendable, Equatable {
    /// A certificate generated at start (and kept in the state folder) for localhost, 127.0.0.1 and ::1.
    case selfSigned
    /// PEM files on disk: the certificate chain and its private key.
    case files(certificate: String, privateKey: String)
}

/// Server-wide limits. Defaults follow common practice for nginx-class servers.
public struct LimitsConfiguration: Sendable, Equatable {
    /// Open client connections above which new connections are closed at once.
    public var maxConnections: Int = 16_384
    /// Requests being processed at once above which Edge answers 503 with `Retry-After`.
    public var maxInFlight: Int = 25_000
    /// Requests from one client address waiting at once (for a backend, a file, a password check) above which
    /// that client gets 429 with `Retry-After`, so that one client cannot hold all of ``maxInFlight``; 0 means a
    /// quarter of ``maxInFlight`` (at least 1).
    public var maxInFlightPerClient: Int = 0
    /// Threads that check passwords (bcrypt), apart from the threads that open files.
    public var passwordCheckThreads: Int = 1
    /// Password checks waiting for a thread above which a request that needs one gets 503 with `Retry-After`.
    public var passwordCheckQueue: Int = 64
    /// Proxied responses compressed as they stream at once (each holds an encoder of up to about 1.4 MiB); beyond
    /// it, responses are sent uncompressed. 0: none are compressed.
    public var maxCompressingResponses: Int = 1024

    /// ``maxInFlightPerClient`` with its default resolved.
    public var effectiveMaxInFlightPerClient: Int {
        maxInFlightPerClient > 0 ? maxInFlightPerClient : max(1, maxInFlight / 4)
    }
    /// Largest request head (request line and header fields) in bytes; larger heads get 431.
    public var maxHeaderBytes: Int = 32_768
    /// Largest request body in bytes; larger bodies get 413.
    public var maxBodyBytes: Int = 1_048_576
    /// HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS` advertised to clients.
    public var http2MaxConcurrentStreams: Int = 100
    /// HTTP/2 `SETTINGS_HEADER_TABLE_SIZE`: the HPACK dynamic table a client may make Edge keep, in bytes.
    public var http2HeaderTableSize: Int = 4096
    /// Open connections from one client address above which new ones are closed at once; 0 disables.
    public var maxConnectionsPerIP: Int = 512
    /// Most header fields in a request; more get 431.
    public var maxHeaderFields: Int = 100
    /// Longest request target (path and query) in bytes; longer gets 414.
    public var maxURIBytes: Int = 8192

    /// Creates limits with the defaults.
    public init() {}
}

/// Connection timeouts.
public struct TimeoutsConfiguration: Sendable, Equatable {
    /// Time allowed for a TLS handshake to complete.
    public var tlsHandshake: TimeAmount = .seconds(10)
    /// Time an idle keep-alive connection (HTTP/1.1) or an HTTP/2 connection without streams stays open.
    public var keepalive: TimeAmount = .seconds(75)
    /// Time within which a whole request head must arrive once its first byte has (HTTP/1.1); then 408.
    public var requestHead: TimeAmount = .seconds(10)
    /// Grace period before the request body minimum rate applies.
    public var requestBodyGrace: TimeAmount = .seconds(10)
    /// Minimum average request body rate in bytes per second after the grace period; slower gets 408.
    public var requestBodyMinRate: Int = 1024
    /// Time a connection may stay unwritable (the client stopped reading) before it is closed.
    public var send: TimeAmount = .seconds(60)

    /// Creates timeouts with the defaults.
    public init() {}
}

/// Sizing of the in-memory response cache.
public struct CacheConfiguration: Sendable, Equatable {
    /// Most entries the cache holds.
    public var maxEntries: Int = 10_000
    /// Most bytes (bodies, headers and keys) the cache holds.
    public var maxBytes: Int = 64 * 1024 * 1024
    /// Largest single response that is stored.
    public var maxEntryBytes: Int = 1024 * 1024
    /// Default time to live of an entry.
    public var ttl: TimeAmount = .seconds(60)
    /// Whether a new entry must be asked for at least as often as the one it would evict (TinyLFU admission);
    /// `false` stores every response, as plain LRU.
    public var admission: Bool = true

    /// Creates a cache configuration with the defaults.
    public init() {}
}

/// One `[[route]]` table: a path prefix and what answers it.
public struct RouteConfiguration: Sendable, Equatable {
    /// Path prefix this route matches.
    public var path: String
    /// What produces the response.
    public var handler: RouteHandlerConfiguration
    /// Time to live of cached responses from this route; `nil` uses the cache default, zero disables caching.
    public var cacheTTL: TimeAmount?
    /// Per-client request rate limit; `nil` for none.
    public var rateLimit: RateLimitConfiguration?
    /// Basic authentication; `nil` for none.
    public var basicAuth: BasicAuthConfiguration?
    /// Whether ``path`` matches only itself (`match = "exact"`) rather than itself and everything below it.
    public var exact = false
    /// Client address ranges let in (`allow`); empty lets every client in. Checked before the rate limit and
    /// authentication, after the client address is resolved through trusted proxies.
    public var allow: [AddressRange] = []
    /// Client address ranges refused with 403 (`deny`), whatever ``allow`` says.
    public var deny: [AddressRange] = []

    /// Creates a route.
    public init(
        path: String, handler: RouteHandlerConfiguration, cacheTTL: TimeAmount? = nil,
        rateLimit: RateLimitConfiguration? = nil, basicAuth: BasicAuthConfiguration? = nil
    ) {
        self.path = path
        self.handler = handler
        self.cacheTTL = cacheTTL
        self.rateLimit = rateLimit
        self.basicAuth = basicAuth
    }
}

/// `rate_limit = { per_second = 5, burst = 10 }`: requests per client address.
public struct RateLimitConfiguration: Sendable, Equatable {
    /// Sustained requests per second.
    public var perSecond: Double
    /// Requests allowed at once.
    public var burst: Int

    /// Creates a rate limit.
    public init(perSecond: Double, burst: Int) {
        self.perSecond = perSecond
        self.burst = burst
    }
}

/// `basic_auth = { realm = "edge", htpasswd = "/etc/edge/htpasswd" }`.
public struct BasicAuthConfiguration: Sendable, Equatable {
    /// Realm named in `WWW-Authenticate`.
    public var realm: String
    /// Path of an htpasswd file with bcrypt hashes.
    public var htpasswd: String

    /// Creates a Basic auth configuration.
    public init(realm: String, htpasswd: String) {
        self.realm = realm
        self.htpasswd = htpasswd
    }
}

/// The handler key of a route.
public enum RouteHandlerConfiguration: Sendable, Equatable {
    /// The built-in demo backend, answered through the cache.
    case demo(DemoBackendConfiguration)
    /// A fixed response.
    case respond(FixedResponseConfiguration)
    /// Files under a directory.
    case `static`(StaticConfiguration)
    /// A reverse proxy to an upstream group.
    case proxy(ProxyRouteConfiguration)
    /// WebSocket: an echo endpoint or a proxy to WebSocket upstream servers.
    case websocket(WebSocketRouteConfiguration)
}

/// `static = "/srv/www"` or `static = { root = "/srv/www", index = ["index.html"], listing = false, … }`.
public struct StaticConfiguration: Sendable, Equatable {
    /// The directory served.
    public var root: String
    /// Files tried, in order, for a directory request.
    public var index: [String]
    /// Whether a directory without an index file gets an HTML listing (else 403).
    public var listing: Bool
    /// Whether names starting with `.` (`.git`, `.env`) are served.
    public var hidden: Bool
    /// Whether symbolic links may lead outside the root.
    public var followSymlinks: Bool

    /// Creates static settings with nginx-like defaults.
    public init(root: String, index: [String] = ["index.html"], listing: Bool = false, hidden: Bool = false, followSymlinks: Bool = false) {
        self.root = root
        self.index = index
        self.listing = listing
        self.hidden = hidden
        self.followSymlinks = followSymlinks
    }
}

/// Settings of the demo backend.
public struct DemoBackendConfiguration: Sendable, Equatable {
    /// Simulated backend latency.
    public var delay: TimeAmount
    /// Upper bound for the `delay_ms` query parameter.
    public var maxDelay: TimeAmount

    /// Creates demo backend settings.
    public init(delay: TimeAmount = .milliseconds(2), maxDelay: TimeAmount = .seconds(10)) {
        self.delay = delay
        self.maxDelay = maxDelay
    }
}

/// Settings of a fixed response.
public struct FixedResponseConfiguration: Sendable, Equatable {
    /// HTTP status code.
    public var status: Int
    /// Response body.
    public var body: String
    /// `Content-Type` of the body.
    public var contentType: String

    /// Creates a fixed response.
    public init(status: Int = 200, body: String = "", contentType: String = "text/plain; charset=utf-8") {
        self.status = status
        self.body = body
        self.contentType = contentType
    }

    /// Statuses whose responses never have content (RFC 9110 §15.3.5, §15.3.6, §15.4.5), so a fixed response
    /// with one of them must have an empty body.
    public static let statusesWithoutContent: Set<Int> = [204, 205, 304]
}

/// The transport the listeners and upstream connections run on (`io`, `EDGE_IO`, `--io`). `io_uring` is Edge's own
/// thread-per-core transport (``URingEventLoopGroup``); where the kernel refuses io_uring, Edge logs why and uses
/// epoll.
public enum IOTransport: String, Sendable, CaseIterable {
    case epoll
    case ioUring = "io_uring"

    static let expected = "expected \"epoll\" or \"io_uring\""
}

/// The HTTP/2 connection layer: Edge's own ``HTTP2ServerConnection`` (the default), or NIOHTTP2's
/// `NIOHTTP2Handler`, which stays selectable as the reference the tests run against too.
public enum HTTP2Engine: String, Sendable, CaseIterable {
    case nio
    case edge
}
