import NIOCore
import Tracing
import NIOHTTP1

/// What a request gets: a stored response (with its cache status) or a response made for it.
enum Reply {
    /// A response from the cache; `cacheStatus` is `HIT` or `MISS`.
    case cached(CachedResponse, cacheStatus: String)
    /// Any other response; `Content-Length` is added when it is written (not for 1xx, 204 and 304:
    /// ``ResponseHeaders/hasContentLength(_:)``).
    case response(EdgeResponse)
    /// A file, streamed by the front end (headers complete, `Content-Length` included).
    case file(FileReply)
    /// A response whose body arrives over time (a proxied response), written as it comes.
    case stream(StreamedResponse)
    /// A switch to another protocol (a WebSocket handshake accepted): the connection or stream leaves HTTP.
    case upgrade(ProtocolUpgrade)
}

/// The request header values that policies and responders look at, extracted once by each front end.
struct RequestHeaderValues {
    /// `Host` or `:authority`.
    var host: Substring = ""
    /// `Authorization`, for Basic auth.
    var authorization: Substring?
    /// `X-Forwarded-For`, used only from trusted proxies.
    var forwardedFor: Substring?
    /// Conditional and range headers, for static files.
    var conditional = StaticRequestHeaders()
}

/// What a streaming route (a proxy) needs beyond ``RequestHeaderValues``: the whole head, and the body as it
/// arrives (``BodyPipe``), which the front end fills with backpressure.
struct StreamedRequest {
    var headers: FieldBlock
    var version: HTTPVersion
    var isTLS: Bool
    /// `nil` when the request has no body.
    var body: BodyPipe?
    /// The declared length (`Content-Length`), when there is one.
    var bodyLength: Int?
    /// Fired by the front end when the client goes away before the answer has begun, so that the origin stops
    /// working for nobody (a proxy closes its upstream exchange rather than hold it until a timeout).
    var cancellation = RequestCancellation()
    /// The request's server span context when tracing is on: upstream attempts are its children.
    var trace: ServiceContext? = nil
}

/// A one-shot signal from a front end to an origin: the client has gone. Used on the connection's event loop only.
final class RequestCancellation: @unchecked Sendable {
    private(set) var isCancelled = false
    /// Told once, at ``cancel()``; set by the origin while there is something to stop (and cleared by it after).
    var target: (any RequestCancellationTarget)?

    func cancel() {
        guard !isCancelled else { return }
        isCancelled = true
        let target = self.target
        self.target = nil
        target?.cancelRequest()
    }
}

/// What an origin gives a ``RequestCancellation`` to stop when the client goes away.
protocol RequestCancellationTarget: AnyObject {
    func cancelRequest()
}

/// A reply available now, or later on the connection's event loop.
enum Dispatch {
    /// Answer at once (cache hit, fixed response, health, errors).
    case ready(Reply)
    /// Answer when the future completes (cache miss, coalesced wait, uncached backend call).
    case pending(EventLoopFuture<Reply>)

    /// The reply as a future on `eventLoop` (completed at once when it is ready), for a caller that goes on
    /// from a future of its own.
    func future(on eventLoop: any EventLoop) -> EventLoopFuture<Reply> {
        switch self {
        case .ready(let reply): return eventLoop.makeSucceededFuture(reply)
        case .pending(let future): return future
        }
    }
}

/// Protocol-independent request handling shared by every front end (HTTP/1.1 fast path, NIO's HTTP/1.1
/// codec, HTTP/2 streams): the in-flight limit, `/healthz`, routing, the two cache tiers and the backend.
///
/// Runs on the connection's event loop; a loop-local cache hit takes no lock and allocates no future.
///
/// Each request reads the configuration in force from its loop (``LoopState/current``), so that a reload
/// (SIGHUP) reaches the next request of every open connection, as Envoy applies route updates, without
/// retiring the connection: routes, policies, upstreams and the in-flight limits are the reloaded ones; what
/// is set per connection (timeouts, head limits, `Server`) stays as it was when the connection was accepted.
struct RequestDispatcher {
    /// The services the connection was accepted under; used until the first reload.
    private let accepted: EdgeServices
    private let loop: LoopState
    /// Whether the connection is TLS: a plain-HTTP request to a site with `redirect_https` is redirected, and
    /// HSTS is sent over TLS only.
    private let isTLS: Bool

    init(services: EdgeServices, loop: LoopState, isTLS: Bool = false) {
        self.accepted = services
        self.loop = loop
        self.isTLS = isTLS
    }

    /// The services in force: the loop's, once a reload has put new ones there.
    private var services: EdgeServices { loop.current ?? accepted }
    private var maxInFlight: Int { services.configuration.limits.maxInFlight }
    private var trustedProxies: [AddressRange] { services.configuration.trustedProxies }

    /// The client of a request from `peer` carrying `forwardedFor`, by the trusted proxies in force (for the access
    /// log of answers that never reach ``dispatch(method:target:headers:bodyBytes:client:streamed:on:)``).
    func client(peer: ClientAddress, forwardedFor: Substring?) -> ClientAddress {
        let trusted = trustedProxies
        return trusted.isEmpty ? peer : peer.resolved(forwardedFor: forwardedFor, trusted: trusted)
    }

    /// Handles one complete request.
    /// - Parameters:
    ///   - target: The request target in origin form (path and optional query).
    ///   - headers: The header values policies and responders need.
    ///   - bodyBytes: Size of the request body received.
    ///   - client: The TCP peer's address, for per-client policies.
    func dispatch(
        method: HTTPMethod, target: Substring, headers: RequestHeaderValues, bodyBytes: Int, client peer: ClientAddress,
        streamed: StreamedRequest? = nil, on eventLoop: any EventLoop
    ) -> Dispatch {
        loop.observer.lastDispatch = LoopObserver.DispatchNote()
        // `OPTIONS *` (the only asterisk-form request the front ends let through) asks about the server as a whole,
        // not a route: 200 with an empty body, as Go's net/http (and so Caddy) answers it.
        if target.hasBytes("*") { return .ready(.response(EdgeResponse(status: .ok))) }
        let (rawPath, query) = Self.split(target)
        let path: Substring
        switch RoutingPath.normalize(rawPath) {
        case .success(let normal): path = normal
        case .failure(.malformedEscape): return .ready(.response(.text(.badRequest, "malformed percent-escape in the request path\n")))
        case .failure(.aboveRoot): return .ready(.response(.text(.badRequest, "request path climbs above the root\n")))
        case .failure(.invalidByte): return .ready(.response(.text(.badRequest, "invalid byte in the request target\n")))
        }
        if let query, !Self.isValidQuery(query) {
            return .ready(.response(.text(.badRequest, "invalid byte in the request target\n")))
        }
        // The health check answers whatever the load: a 503 there would make a load balancer pull a node that is
        // only busy. It waits for nothing, so it holds no in-flight slot.
        if Self.isHealthCheck(path) { return .ready(.response(health())) }
        let services = self.services
        if let challenges = services.acmeChallenges, path.hasBytePrefix(Self.acmeChallengePrefix),
            let answer = challenges.http01KeyAuthorization(
                token: path[path.utf8.index(path.utf8.startIndex, offsetBy: Self.acmeChallengePrefix.utf8.count)...]
            )
        {
            var response = EdgeResponse.text(.ok, answer)
            response.headers.replaceOrAdd(name: "content-type", value: "application/octet-stream")
            return .ready(.response(response))
        }
        guard let site = services.router.site(for: headers.host) else {
            return .ready(.response(unknownHost(headers.host, policy: services.router.unknownHost)))
        }
        loop.observer.lastDispatch.site = site
        // The ACME HTTP-01 challenge path is answered over plain HTTP: the CA asks there (RFC 8555 §8.3).
        if !isTLS, site.httpsRedirect != nil, !path.hasBytePrefix(Self.acmeChallengePrefix),
            let redirect = site.redirect(host: headers.host, target: target)
        {
            return .ready(.response(redirect))
        }
        let state = services.state
        let trustedProxies = services.configuration.trustedProxies
        let client = trustedProxies.isEmpty ? peer : peer.resolved(forwardedFor: headers.forwardedFor, trusted: trustedProxies)
        if !trustedProxies.isEmpty { loop.observer.lastDispatch.client = client }
        let perClient = services.inFlightPerClient
        if !state.inFlightBelow(perClient.maximum) {
            // Under load, what can be answered at once (a cache hit, a fixed response, a small file in this loop's
            // cache) still is: it holds no slot, and refusing it would turn a busy backend into an outage.
            if let reply = immediateReply(
                method: method, target: target, host: headers.host, conditional: headers.conditional, admitting: false
            ) {
                return .ready(reply)
            }
        }
        guard state.admitRequest(limit: services.configuration.limits.maxInFlight) else {
            loop.observer.metrics.refused(.serverBusy)
            var busy = EdgeResponse.text(.serviceUnavailable, "server busy, retry shortly\n")
            busy.headers.add(name: "retry-after", value: "1")
            return .ready(.response(busy))
        }
        // One client may hold only its share of the in-flight requests. Only requests that wait are counted per
        // client, and the count is only looked at once as many requests as a share are in flight at all, so that a
        // cache hit takes no lock.
        if !state.inFlightBelow(perClient.maximum + 1), perClient.isAtLimit(client) {
            state.requestFinished()
            loop.observer.metrics.refused(.clientBusy)
            var tooMany = EdgeResponse.text(.tooManyRequests, "too many requests in flight from this address, retry shortly\n")
            tooMany.headers.add(name: "retry-after", value: "1")
            return .ready(.response(tooMany))
        }
        let request = OriginRequest(
            method: method, target: target, path: path, relativePath: path, query: query, headers: headers,
            bodyBytes: bodyBytes, peer: peer, client: client, streamed: streamed, now: .now()
        )
        let dispatch = route(request, site: site, on: eventLoop)
        switch dispatch {
        case .ready:
            state.requestFinished()
        case .pending(let future):
            perClient.add(client)
            future.whenComplete { _ in
                perClient.release(client)
                state.requestFinished()
            }
        }
        return dispatch
    }

    /// The reply to a body-less `GET` or `HEAD` when it needs no waiting, no policy and no per-request state:
    /// `/healthz`, a fixed response, a fresh entry in this loop's cache, or a file in this loop's small-file
    /// cache (`conditional` carries the request's validators, `Range` and `Accept-Encoding` for it). `nil`
    /// means the request takes the full path (``dispatch(method:target:headers:bodyBytes:client:on:)``),
    /// which answers it the same way or better; nothing has been counted or started for it. The fast paths ask
    /// it through ``answerAtHead(method:target:host:conditional:now:admitting:)``, the full path under load.
    /// `now` is the time the request arrived, for the cache entry's freshness.
    func immediateReply(
        method: HTTPMethod, target: Substring, host: Substring, conditional: StaticRequestHeaders = StaticRequestHeaders(),
        now: NIODeadline = .now(), admitting: Bool = true
    ) -> Reply? {
        guard case .reply(let reply) = answerAtHead(
            method: method, target: target, host: host, conditional: conditional, now: now, admitting: admitting
        ) else { return nil }
        return reply
    }

    /// A request target's path and query (without the `?`).
    private static func split(_ target: Substring) -> (path: Substring, query: Substring?) {
        guard let mark = target.utf8.firstIndex(of: UInt8(ascii: "?")) else { return (target, nil) }
        return (target[..<mark], target[target.utf8.index(after: mark)...])
    }

    /// What a fast path does with a body-less request when its head arrives
    /// (``answerAtHead(method:target:host:conditional:now:admitting:)``).
    enum HeadAnswer {
        /// Answer now: ``immediateReply(method:target:host:conditional:now:admitting:)`` had the reply.
        case reply(Reply)
        /// Dispatch it with a ``StreamedRequest``: its route takes the body as a stream (a proxy).
        case streamed
        /// Neither: the fast path dispatches it as usual, or hands it on.
        case other
    }

    /// The immediate reply (``immediateReply(method:target:host:conditional:now:admitting:)``), and else whether the
    /// route streams, in one: the path normalised and the site and route looked up once, not once for each question
    /// (a proxied request asks both).
    func answerAtHead(
        method: HTTPMethod, target: Substring, host: Substring, conditional: StaticRequestHeaders = StaticRequestHeaders(),
        now: NIODeadline = .now(), admitting: Bool = true
    ) -> HeadAnswer {
        let (rawPath, query) = Self.split(target)
        guard case .success(let path) = RoutingPath.normalize(rawPath) else { return .other }
        var mayAnswer = (method == .GET || method == .HEAD) && (query.map(Self.isValidQuery) ?? true)
        if Self.isHealthCheck(path) { return mayAnswer ? .reply(.response(health())) : .other }
        let services = self.services
        let router = services.router
        // An ACME HTTP-01 token is answered by ``dispatch`` before routing: a route must not answer it here first.
        if mayAnswer, services.acmeChallenges != nil, path.hasBytePrefix(Self.acmeChallengePrefix) { mayAnswer = false }
        // The fast paths send a request the full path would refuse at the in-flight limit there, so that it gets
        // the same answer; the full path itself asks with `admitting: false`, for what it serves whatever the load.
        if mayAnswer, admitting, !services.state.inFlightBelow(maxInFlight) { mayAnswer = false }
        guard mayAnswer || router.hasStreamingRoutes, let site = router.site(for: host), isTLS || site.httpsRedirect == nil,
            let route = site.route(for: path)
        else { return .other }
        if mayAnswer, route.rateLimiter == nil, route.authenticator == nil, route.access == nil {
            let request = OriginRequest(
                method: method, target: target, path: path, relativePath: route.relativePath(of: path), query: query,
                headers: RequestHeaderValues(host: host, conditional: conditional), now: now
            )
            let reply = admitting
                ? route.origin.immediateReply(to: request, loop: loop)
                : route.origin.replyUnderLoad(to: request, loop: loop, sharedCache: services.cache)
            if let reply {
                loop.observer.lastDispatch.route = route.metricsSlot
                loop.observer.lastDispatch.site = site
                return .reply(reply)
            }
        }
        return router.hasStreamingRoutes && route.origin.requestBody.isStreamed ? .streamed : .other
    }

    /// The route of `target` when it takes its body as a stream from the head on (a proxy), so that the front end
    /// must dispatch the request with a ``StreamedRequest`` when the head arrives; `nil` otherwise — at once, with no
    /// look-up, when no route streams — and for a path with no normal form (the ordinary path answers it 400).
    private func streamingRoute(for target: Substring, host: Substring) -> Route? {
        let router = services.router
        guard router.hasStreamingRoutes, case .success(let path) = RoutingPath.normalize(Self.split(target).path),
            !Self.isHealthCheck(path), let site = router.site(for: host), isTLS || site.httpsRedirect == nil,
            let route = site.route(for: path), route.origin.requestBody.isStreamed
        else { return nil }
        return route
    }

    /// For a request to a streaming route, the largest body it takes (the route's own `max_body_bytes`, else
    /// `limit`); `nil` when the route does not stream.
    func streamedBodyLimit(target: Substring, host: Substring, default limit: Int) -> Int? {
        guard let route = streamingRoute(for: target, host: host) else { return nil }
        switch route.origin.requestBody {
        case .streamed(let maxBytes): return maxBytes ?? limit
        case .upgrade(let maxBytes): return maxBytes
        case .discarded: return nil
        }
    }

    /// Whether `target`'s route may switch protocols (a WebSocket route): HTTP/2's extended CONNECT is served
    /// there and refused everywhere else.
    func acceptsUpgrade(target: Substring, host: Substring) -> Bool {
        guard let route = streamingRoute(for: target, host: host), case .upgrade = route.origin.requestBody else { return false }
        return true
    }

    /// Whether every byte of a query is one a request target may carry raw (see ``RoutingPath/Invalid/invalidByte``).
    private static func isValidQuery(_ query: Substring) -> Bool {
        query.utf8.allSatisfy(RequestTargetRules.isTargetByte)
    }

    /// Where an ACME CA looks for HTTP-01 key authorizations (RFC 8555 §8.3): the challenge store's own path.
    static let acmeChallengePrefix = ACMEChallengeStore.http01PathPrefix

    /// Whether `path` is the built-in health check, `/healthz`.
    private static func isHealthCheck(_ path: Substring) -> Bool {
        path.hasBytes("/healthz")
    }

    /// The `/healthz` answer: 200 while serving, 503 while draining.
    private func health() -> EdgeResponse {
        let draining = services.state.isDraining
        var health = EdgeResponse.text(draining ? .serviceUnavailable : .ok, draining ? "draining\n" : "ok\n")
        health.headers.add(name: "cache-control", value: "no-store")
        return health
    }

    /// The answer to a request for a host no site names (`unknown_host`).
    private func unknownHost(_ host: Substring, policy: UnknownHostPolicy) -> EdgeResponse {
        switch policy {
        case .misdirected:
            return .text(.misdirectedRequest, "this server does not serve that host\n")
        case .defaultSite, .notFound:
            return .text(.notFound, "no site here answers that host\n")
        }
    }

    private func route(_ request: OriginRequest, site: Site, on eventLoop: any EventLoop) -> Dispatch {
        let (headers, client) = (request.headers, request.client)
        guard let route = site.route(for: request.path) else {
            return .ready(.response(.text(.notFound, "not found\n")))
        }
        let metrics = loop.observer.metrics
        loop.observer.lastDispatch.route = route.metricsSlot
        if let access = route.access, !access.admits(client) {
            metrics.refused(.accessDenied)
            return .ready(.response(.text(.forbidden, "access denied\n")))
        }
        if let limiter = route.rateLimiter, case .reject(let retryAfter) = limiter.check(client, now: .now()) {
            metrics.refused(.rateLimited)
            var tooMany = EdgeResponse.text(.tooManyRequests, "too many requests, retry later\n")
            tooMany.headers.add(name: "retry-after", value: String(retryAfter))
            return .ready(.response(tooMany))
        }
        guard let authenticator = route.authenticator else {
            return act(route, request, on: eventLoop)
        }
        switch authenticator.authenticate(headers.authorization, on: eventLoop) {
        case .allowed:
            return act(route, request, on: eventLoop)
        case .denied:
            metrics.refused(.authFailed)
            return .ready(.response(Self.unauthorized(authenticator)))
        case .busy:
            var busy = EdgeResponse.text(.serviceUnavailable, "too many password checks waiting, retry shortly\n")
            busy.headers.add(name: "retry-after", value: "1")
            return .ready(.response(busy))
        case .pending(let verdict):
            return .pending(
                verdict.assumeIsolated().flatMap { valid in
                    guard valid else {
                        metrics.refused(.authFailed)
                        return eventLoop.makeSucceededFuture(.response(Self.unauthorized(authenticator)))
                    }
                    return self.act(route, request, on: eventLoop).future(on: eventLoop)
                }.nonisolated()
            )
        }
    }

    /// The answer to `TRACE` on a route whose origin does not answer it (``Origin/answersTrace``), as nginx gives
    /// it on every route: 405. TRACE echoes the request back, and with it any credentials and cookies that reached
    /// the edge (cross-site tracing); nothing behind Edge needs it. `Allow` names the methods those routes serve
    /// (RFC 9110 §15.5.6). Static routes refuse it themselves, with every method but GET and HEAD.
    private static func traceNotAllowed() -> EdgeResponse {
        var response = EdgeResponse.text(.methodNotAllowed, "TRACE is not allowed\n")
        response.headers.add(name: "allow", value: "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS")
        return response
    }

    private static func unauthorized(_ authenticator: BasicAuthenticator) -> EdgeResponse {
        var response = EdgeResponse.text(.unauthorized, "authentication required\n")
        response.headers.add(name: "www-authenticate", value: authenticator.challenge)
        return response
    }

    /// Asks the route's origin, once the route's policies have let the request through.
    private func act(_ route: Route, _ request: OriginRequest, on eventLoop: any EventLoop) -> Dispatch {
        let origin = route.origin
        if request.method == .TRACE && !origin.answersTrace {
            return .ready(.response(Self.traceNotAllowed()))
        }
        var request = request
        request.relativePath = route.relativePath(of: request.path)
        return origin.serve(request, context: OriginContext(eventLoop: eventLoop, loop: loop, sharedCache: services.cache))
    }
}
