import NIOCore
import NIOHTTP1
import Tracing

/// The protocol a request arrived over: a label of the request metrics and a field of the access log.
enum WireProtocol: Int, CaseIterable {
    case http1_0, http1_1, http2

    var label: String {
        switch self {
        case .http1_0: "HTTP/1.0"
        case .http1_1: "HTTP/1.1"
        case .http2: "HTTP/2"
        }
    }
}

/// What the cache did for a request, from the reply's `X-Cache` (the demo cache and the HTTP cache give the same
/// words): a label of the request metrics and a field of the access log.
enum CacheOutcome: Int, CaseIterable {
    /// The route has no cache, or the answer did not come from one (an error, a policy's refusal).
    case none, hit, miss, stale, revalidated, pass

    var label: String {
        switch self {
        case .none: ""
        case .hit: "HIT"
        case .miss: "MISS"
        case .stale: "STALE"
        case .revalidated: "REVALIDATED"
        case .pass: "PASS"
        }
    }

    /// The outcome an `X-Cache` value names. Runs for every cached answer, so it looks at the length and the first
    /// byte only: the values are Edge's own (``Reply/cached(_:cacheStatus:)``), one per length and initial.
    init(xCache value: String) {
        let utf8 = value.utf8
        switch (utf8.count, utf8.first) {
        case (3, UInt8(ascii: "H")): self = .hit
        case (4, UInt8(ascii: "M")): self = .miss
        case (5, UInt8(ascii: "S")): self = .stale
        case (11, UInt8(ascii: "R")): self = .revalidated
        case (4, UInt8(ascii: "P")): self = .pass
        default: self = .none
        }
    }
}

/// What one proxied request's upstream side was, for the access log: the server that answered and how long it
/// took to send its response head.
struct UpstreamOutcome {
    var server: String
    var headerTime: TimeAmount
    var requestID: String?
}

/// One request as the front end saw it, from its first byte to its answer's last: filled in by the front end as
/// it learns each part and handed to ``LoopObserver/finished(_:now:)`` once.
///
/// A small value on the front end's stack, copied without retaining more than its target: what only the access log
/// and tracing need lives in ``Details``, allocated only when one of them is on (or a proxy names its upstream).
struct RequestRecord {
    /// What the access log and tracing add to a record.
    final class Details {
        var userAgent: String?
        var referer: String?
        /// The `X-Request-Id` Edge sent upstream; other requests get one made up for the log line.
        var requestID: String?
        /// The request's server span, when tracing is on (``RequestTracing``).
        var span: (any Span)?
        var upstream: UpstreamOutcome?
    }

    var start: NIODeadline
    var method: HTTPMethod
    var target: Substring
    var wire: WireProtocol
    /// The route's metrics slot (``RouteLabels``); 0 for none (`/healthz`, 404, an answer before routing).
    var route: Int = 0
    /// The answer's status; 0 until its head is written (the client went away first: logged as 499, as nginx does).
    var status: Int = 0
    var cache: CacheOutcome = .none
    var bodyBytesIn = 0
    var bodyBytesOut = 0
    /// The client: the TCP peer's (or the PROXY protocol's) address, or the one a trusted proxy's
    /// `X-Forwarded-For` names (as the dispatcher resolved it).
    var client: ClientAddress
    var tls: TLSVersionLabel
    var details: Details?
    /// The site that answered, for the header fields it adds to the answer (``Site/headers``).
    var site: Site?

    /// The details, made on first use.
    var detailed: Details {
        mutating get {
            if let details { return details }
            let made = Details()
            details = made
            return made
        }
    }

    var span: (any Span)? { details?.span }

    init(start: NIODeadline, method: HTTPMethod, target: Substring, wire: WireProtocol, client: ClientAddress, tls: TLSVersionLabel) {
        self.start = start
        self.method = method
        self.target = target
        self.wire = wire
        self.client = client
        self.tls = tls
    }

    /// Takes the route and client the dispatcher worked out (``LoopObserver/lastDispatch``).
    mutating func note(_ dispatch: LoopObserver.DispatchNote) {
        route = dispatch.route
        site = dispatch.site
        if let resolved = dispatch.client { client = resolved }
    }

    /// Takes the status and cache outcome of a response head written as NIO's `HTTPHeaders`.
    mutating func answered(status: HTTPResponseStatus, headers: HTTPHeaders) {
        self.status = Int(status.code)
        if let value = headers.first(name: "x-cache") { cache = CacheOutcome(xCache: value) }
    }

    /// Takes the status, cache outcome and (for an answer from memory) body size of `reply`.
    mutating func answered(with reply: Reply, isHEAD: Bool) {
        switch reply {
        case .cached(let entry, let cacheStatus):
            status = Int(entry.status.code)
            cache = CacheOutcome(xCache: cacheStatus)
            if !isHEAD { bodyBytesOut = entry.body.readableBytes }
        case .response(let response):
            status = Int(response.status.code)
            if !isHEAD { bodyBytesOut = response.body.readableBytes }
        case .file(let file):
            status = Int(file.status.code)
            if !isHEAD { bodyBytesOut = file.body?.readableBytes ?? file.range.count }
        case .stream(let streamed):
            status = Int(streamed.status.code)
            cache = streamed.headers.cacheOutcome
            if let upstream = streamed.upstream {
                detailed.upstream = upstream
                detailed.requestID = upstream.requestID
            }
        case .upgrade:
            status = 101
        }
    }
}

extension FieldBlock {
    /// The cache outcome its `X-Cache` field names.
    var cacheOutcome: CacheOutcome {
        guard contains(name: "x-cache") else { return .none }
        return values(of: "x-cache").first.map { CacheOutcome(xCache: $0) } ?? .none
    }
}
