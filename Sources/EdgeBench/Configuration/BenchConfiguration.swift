import NIOCore

/// Everything one `edge-bench` run needs: what to send, to whom, how hard and for how long.
public struct BenchConfiguration: Sendable {
    /// The URL every request goes to.
    public var target: TargetURL
    /// The request method (`GET` by default).
    public var method: String = "GET"
    /// Extra request header fields, in order. A `Host` field replaces the one taken from the URL.
    public var headers: [(name: String, value: String)] = []
    /// The request body, sent with every request (`nil`: no body).
    public var body: [UInt8]?
    /// Connections kept open for the whole run.
    public var connections: Int = 50
    /// Event loop threads (one per core by default).
    public var threads: Int = System.coreCount
    /// How long to run; `nil` when only ``requestLimit`` ends the run.
    public var duration: Duration? = .seconds(10)
    /// Stop after this many requests (answered or failed), like h2load's `-n`.
    public var requestLimit: Int?
    /// Open loop: the total request rate across all connections, requests per second. `nil`: closed loop.
    public var rate: Double?
    /// Which HTTP version to speak.
    public var protocolChoice: ProtocolChoice = .negotiate
    /// HTTP/1.1 requests in flight per connection (1: no pipelining).
    public var pipelineDepth: Int = 1
    /// HTTP/2 streams in flight per connection.
    public var streamsPerConnection: Int = 10
    /// Skip certificate and host name verification (self-signed servers).
    public var insecure: Bool = false
    /// Restrict TLS to one version (`nil`: 1.2 or 1.3, whichever the server picks).
    public var tlsVersion: TLSVersionChoice?
    /// A request not answered within this time counts as a timeout and its connection is replaced.
    /// The same limit applies to connecting and to the TLS handshake.
    public var timeout: Duration = .seconds(10)
    /// Idle mode: each connection sends one request, then stays open and quiet until the run ends.
    /// For measuring a server's memory per idle connection.
    public var idle: Bool = false

    /// A configuration with defaults for everything but the target.
    public init(target: TargetURL) {
        self.target = target
    }

    /// Whether the run is open loop (a fixed request rate with coordinated-omission correction).
    public var isOpenLoop: Bool { rate != nil }

    /// Checks the combination of settings; the message names the flag at fault.
    public func validate() throws(BenchError) {
        guard connections >= 1 else { throw .invalidOption("--connections must be at least 1") }
        guard threads >= 1 else { throw .invalidOption("--threads must be at least 1") }
        guard pipelineDepth >= 1 else { throw .invalidOption("--pipeline must be at least 1") }
        guard streamsPerConnection >= 1 else { throw .invalidOption("--streams must be at least 1") }
        if let rate, !(rate > 0 && rate.isFinite) { throw .invalidOption("--rate must be a positive number of requests per second") }
        if let requestLimit, requestLimit < 1 { throw .invalidOption("--requests must be at least 1") }
        if duration == nil && requestLimit == nil { throw .invalidOption("give --duration, --requests or both") }
        if let duration, duration <= .zero { throw .invalidOption("--duration must be positive") }
        guard timeout > .zero else { throw .invalidOption("--timeout must be positive") }
        if idle && duration == nil { throw .invalidOption("--idle needs --duration (how long to hold the connections)") }
        if idle && rate != nil { throw .invalidOption("--idle and --rate cannot be combined") }
        if protocolChoice == .http2 && pipelineDepth > 1 { throw .invalidOption("--pipeline is for HTTP/1.1; HTTP/2 uses --streams") }
        if tlsVersion != nil && !target.isTLS { throw .invalidOption("--tls-version needs an https:// URL") }
    }
}

/// The HTTP version a run speaks.
public enum ProtocolChoice: String, Sendable, CaseIterable {
    /// HTTPS: offer `h2` and `http/1.1` over ALPN and speak what the server picks. Plain HTTP: HTTP/1.1.
    case negotiate
    /// HTTP/1.1 only (ALPN offers only `http/1.1`).
    case http1
    /// HTTP/2 only: ALPN `h2` over TLS, prior knowledge (h2c) over plain TCP.
    case http2
}

/// A TLS version to insist on.
public enum TLSVersionChoice: String, Sendable, CaseIterable {
    /// TLS 1.2 only.
    case tls12 = "1.2"
    /// TLS 1.3 only.
    case tls13 = "1.3"
}
