public import NIOCore

/// One `[[upstream]]` table: a named group of servers that proxy routes send requests to.
public struct UpstreamGroupConfiguration: Sendable, Equatable {
    /// How a server is chosen for a request.
    public enum Balance: Sendable, Equatable {
        /// Smooth weighted round robin (nginx's `upstream` default).
        case roundRobin
        /// The server with the fewest requests in progress (relative to its weight).
        case leastConnections
        /// The less loaded of two servers picked at random ("power of two random choices").
        case randomTwo
        /// Consistent hashing of a key with bounded load: one key stays on one server, and adding or removing a
        /// server moves about 1/N of the keys.
        case hash(HashKey)
    }

    /// The protocol spoken to the group's servers.
    public enum WireProtocol: String, Sendable, Equatable {
        /// HTTP/1.1 with keep-alive, one exchange per connection at a time.
        case http1 = "http1.1"
        /// HTTP/2 over TLS, agreed by ALPN (`https://` servers).
        case h2
        /// HTTP/2 over plain TCP with prior knowledge (RFC 9113 §3.3), as gRPC servers speak it.
        case h2c
    }

    /// What consistent hashing hashes.
    public enum HashKey: Sendable, Equatable {
        case clientAddress
        case header(String)
        case cookie(String)
        case uri
    }

    /// One server of a group.
    public struct Server: Sendable, Equatable {
        /// `host:port`.
        public var address: HostPort
        /// Relative share of the requests, 1 to 1000.
        public var weight: Int
        /// Whether the connection is TLS (`https://host:port`).
        public var tls: Bool

        public init(address: HostPort, weight: Int = 1, tls: Bool = false) {
            self.address = address
            self.weight = weight
            self.tls = tls
        }
    }

    /// Active health checks: an HTTP/1.1 `GET` of `path` on each server every `interval`.
    public struct HealthCheck: Sendable, Equatable {
        public var path: String = "/"
        public var interval: TimeAmount = .seconds(5)
        public var timeout: TimeAmount = .seconds(2)
        /// Statuses that count as healthy.
        public var expectStatus: ClosedRange<Int> = 200...399
        /// Consecutive successes that bring an unhealthy server back.
        public var rise: Int = 2
        /// Consecutive failures that take a healthy server out.
        public var fall: Int = 3

        public init() {}
    }

    /// TLS towards `https://` servers.
    public struct TLS: Sendable, Equatable {
        /// PEM file of the CAs that verify the servers' certificates; `nil` for the system's.
        public var caFile: String?
        /// Whether certificates are verified at all (only ever off for tests and labs).
        public var verify: Bool = true
        /// Server name sent (SNI) and verified; `nil` for each server's host.
        public var serverName: String?
        /// Client certificate and key (PEM), for upstreams that ask for one.
        public var certificate: String?
        public var privateKey: String?

        public init() {}
    }

    public var name: String
    public var servers: [Server]
    public var balance: Balance = .roundRobin
    /// `protocol`: HTTP/1.1 (the default), or HTTP/2 (one multiplexed connection per server and event loop).
    public var wireProtocol: WireProtocol = .http1
    /// Idle keep-alive connections kept per server and event loop.
    public var keepalive: Int = 32
    /// How long an idle pooled connection is kept.
    public var idleTimeout: TimeAmount = .seconds(60)
    public var connectTimeout: TimeAmount = .seconds(5)
    /// Time from the request sent to the response head received.
    public var firstByteTimeout: TimeAmount = .seconds(60)
    /// Longest pause between two reads of the response body.
    public var betweenBytesTimeout: TimeAmount = .seconds(60)
    /// Longest time for the whole exchange; zero for none.
    public var totalTimeout: TimeAmount = .zero
    /// Further servers tried after a failure that allows it.
    public var retries: Int = 1
    /// Retries allowed as a share of requests (the retry budget), in percent, beyond a floor of 10 per second.
    public var retryBudgetPercent: Int = 20
    /// Passive health: failures within `failureWindow` that eject a server for `cooldown` (doubling while it
    /// keeps failing, up to 16 times).
    public var maxFailures: Int = 3
    public var failureWindow: TimeAmount = .seconds(10)
    public var cooldown: TimeAmount = .seconds(10)
    public var health: HealthCheck?
    public var tls: TLS = TLS()

    public init(name: String, servers: [Server]) {
        self.name = name
        self.servers = servers
    }
}

/// `proxy = { upstream = "app", … }` on a route.
public struct ProxyRouteConfiguration: Sendable, Equatable {
    /// How the `Host` sent upstream is chosen.
    public enum HostHeader: Sendable, Equatable {
        /// The client's (nginx's `proxy_set_header Host $host`).
        case pass
        /// The server's `host:port` (nginx's default, `$proxy_host`).
        case upstream
        /// A fixed value.
        case fixed(String)
    }

    /// Header edits, applied in the order remove, set, add.
    public struct HeaderEdits: Sendable, Equatable {
        public var remove: [String] = []
        public var set: [(String, String)] = []
        public var add: [(String, String)] = []

        public init() {}

        public static func == (a: HeaderEdits, b: HeaderEdits) -> Bool {
            a.remove == b.remove && a.set.elementsEqual(b.set, by: ==) && a.add.elementsEqual(b.add, by: ==)
        }
    }

    public var upstream: String
    /// Whether the route's prefix is removed from the path sent upstream (`/api/users` → `/users`).
    public var stripPrefix: Bool = false
    public var host: HostHeader = .pass
    public var requestHeaders = HeaderEdits()
    public var responseHeaders = HeaderEdits()
    /// The largest request body this route takes; `nil` for `limits.max_body_bytes`.
    public var maxBodyBytes: Int?
    /// An HTTP cache (RFC 9111) in front of the upstream (`cache = true` or a table); `nil` for none.
    public var cache: HTTPCacheConfiguration?
    /// The content codings responses that arrive uncompressed are compressed with, in order of preference
    /// (`compress = true`: zstd, br, gzip; or a list); empty for none.
    public var compress: [String] = []

    public init(upstream: String) {
        self.upstream = upstream
    }

    /// What `compress = true` means: zstd (fastest for the ratio), then brotli, then gzip, which every client has.
    public static let defaultCompression = ["zstd", "br", "gzip"]
}

/// `cache = true` or `cache = { … }` in a proxy route: the HTTP cache's rules where RFC 9111 leaves a choice.
public struct HTTPCacheConfiguration: Sendable, Equatable {
    /// Heuristic freshness for responses with `Last-Modified` only: this percentage of their age, capped; `0` off.
    public var heuristicPercent = 10
    public var heuristicMaxSeconds = 86_400
    /// How long past its lifetime a stored response answers when the upstream fails (Varnish's grace; its default).
    public var graceSeconds = 10
    /// How long a stale response with a validator is kept to be revalidated.
    public var keepSeconds = 3600
    /// Whether responses with `Set-Cookie` are stored and shared.
    public var storeSetCookie = false
    /// A targeted field obeyed before `CDN-Cache-Control` and `Cache-Control` (RFC 9213), lower case.
    public var targetedField: String?
    /// How long a URL whose response could not be stored skips the wait for other requests' fetches.
    public var hitForPassSeconds = 120
    /// Who may `PURGE`: clients in these ranges, or requests with this token.
    public var purgeFrom: [AddressRange] = []
    public var purgeToken: String?
    /// The key: the query as received, sorted or ignored (`"as-is"`, `"sorted"`, `"ignore"`); only the parameters
    /// in `keyQueryInclude` (when set), without those in `keyQueryExclude` (names; `*` at the end for a prefix);
    /// the values of these request fields and cookies.
    public var keyQuery = "as-is"
    public var keyQueryInclude: [String] = []
    public var keyQueryExclude: [String] = []
    public var keyFields: [String] = []
    public var keyCookies: [String] = []

    public init() {}
}
