import Logging
import Tracing
import NIOCore
import NIOHTTP1

/// What a proxied request carries from the front end.
struct ProxyRequest {
    var method: HTTPMethod
    /// The request path in normal form (as routed), the part of it below the route's prefix
    /// (``Route/relativePath(of:)``, for `strip_prefix`), and the query, without its `?`.
    var path: Substring
    var relativePath: Substring
    var query: Substring?
    /// Every header field the client sent.
    var headers: FieldBlock
    /// `Host` or `:authority` (or an absolute-form target's authority).
    var host: Substring
    /// The TCP peer, and the client after trusted proxies (``ClientAddress/resolved(forwardedFor:trusted:)``).
    var peer: ClientAddress
    var client: ClientAddress
    /// Whether the client connection is TLS, and its HTTP version (`1.1`, `2`).
    var isTLS: Bool
    var version: HTTPVersion
    /// The body, when the request has one; its length when the client declared it.
    var body: BodyPipe?
    var bodyLength: Int?
    /// Fired when the client goes away before the answer has begun.
    var cancellation: RequestCancellation?
    /// The request's server span context when tracing is on.
    var trace: ServiceContext? = nil
}

/// A `proxy` route: sends requests to a server of its upstream group and streams the answer back.
///
/// The request sent upstream is rebuilt from parsed fields, never forwarded as raw bytes, so no framing
/// ambiguity reaches the upstream (RFC 9112 §6.3): hop-by-hop fields are dropped (RFC 9110 §7.6.1), the body is
/// framed by `Content-Length` when the client declared one and chunked otherwise, the path is the one Edge routed
/// (normal form), and `Via`, `X-Forwarded-For`/`-Proto`/`-Host`, `Forwarded` (RFC 7239) and `X-Request-Id` are set.
/// A failure before any response byte is retried on another server when that is safe (nothing of a
/// non-idempotent request was sent, the retry budget allows); otherwise the client gets 502, 503 or 504, and a
/// response that breaks off mid-body ends the client's response as broken, never as a short complete one.
public final class ProxyResponder: Sendable {
    let configuration: ProxyRouteConfiguration
    let group: UpstreamGroup
    /// The route's prefix as matched, for log lines.
    let prefix: String
    let serverName: String
    let trustedProxies: [AddressRange]
    private let logger: Logger

    init(
        configuration: ProxyRouteConfiguration, group: UpstreamGroup, prefix: String, serverName: String,
        trustedProxies: [AddressRange], logger: Logger
    ) {
        self.configuration = configuration
        self.group = group
        self.prefix = Route.matchForm(of: prefix)
        self.serverName = serverName
        self.trustedProxies = trustedProxies
        self.logger = logger
        ownVia = "1.1 \(serverName)"
    }

    /// The `Via` element Edge adds to responses.
    let ownVia: String

    /// Proxies `request`; the future completes with the response head (its body streams) or an error answer.
    func serve(_ request: ProxyRequest, loop: LoopState, on eventLoop: any EventLoop) -> EventLoopFuture<Reply> {
        group.countRequest(now: .now())
        let exchange = ProxyExchange(
            responder: self, request: request, head: upstreamRequest(for: request, random: &loop.random), pool: loop.upstreamPool,
            eventLoop: eventLoop, logs: loop.observer.logs, tracing: request.trace == nil ? nil : loop.observer.tracing
        )
        exchange.attempt()
        return exchange.promise.futureResult
    }

    /// Whether a method may be sent again after a failure (RFC 9110 §9.2.2).
    static func isIdempotent(_ method: HTTPMethod) -> Bool {
        switch method {
        case .GET, .HEAD, .OPTIONS, .TRACE, .PUT, .DELETE: return true
        default: return false
        }
    }

    /// The answer when no server is left to try: the last failure's (502 or 504), as nginx gives it, or 503 when
    /// none could be chosen at all.
    func noServerAnswer(lastFailure: UpstreamFailure?) -> Reply {
        if let lastFailure { return failureAnswer(lastFailure) }
        logger.warning("proxy: no server available", metadata: ["route": "\(prefix)", "upstream": "\(group.name)"])
        var unavailable = EdgeResponse.text(.serviceUnavailable, "no upstream server available\n")
        unavailable.headers.add(name: "retry-after", value: "1")
        return .response(unavailable)
    }

    /// The client's answer to a failure before any response byte: 502 or 504.
    func failureAnswer(_ failure: UpstreamFailure) -> Reply {
        .response(.text(failure.status, failure.status == .gatewayTimeout ? "upstream timed out\n" : "upstream failed\n"))
    }

    /// Accounting when an exchange with `server` is over: its load, and passive health (`counted: false` for an
    /// exchange that says nothing of the server's health).
    func finished(_ server: UpstreamServer, failure: UpstreamFailure?, counted: Bool = true) {
        server.active.subtract(1, ordering: .relaxed)
        server.statistics.finished(failure: failure)
        guard counted else { return }
        guard let failure else {
            if server.recordSuccess() {
                logger.notice("proxy: server recovered", metadata: ["upstream": "\(group.name)", "server": "\(server.key)"])
            }
            return
        }
        if failure.cause == .cancelled { return }
        logger.warning(
            "proxy: upstream failed",
            metadata: ["route": "\(prefix)", "upstream": "\(group.name)", "server": "\(server.key)", "cause": "\(failure)"]
        )
        if let cooldown = server.recordFailure(at: .now(), group: group.configuration) {
            logger.warning(
                "proxy: server ejected",
                metadata: ["upstream": "\(group.name)", "server": "\(server.key)", "cooldown_s": "\(cooldown.nanoseconds / 1_000_000_000)"]
            )
        }
    }

    // MARK: the request sent upstream

    /// The request sent upstream for `request`: the client's fields but hop-by-hop ones (RFC 9110 §7.6.1) and
    /// those Edge sets itself (`Host`, framing, `Via`, `X-Forwarded-*`, `Forwarded`, `X-Request-Id`), copied as
    /// bytes; then Edge's own; then the route's edits.
    func upstreamRequest(for request: ProxyRequest, random: inout LoopRandom) -> UpstreamRequest {
        var path = request.path
        if configuration.stripPrefix { path = request.relativePath.isEmpty ? "/" : request.relativePath }
        let target = request.query.map { "\(path)?\($0)" } ?? String(path)
        var fields = FieldBlock(capacity: request.headers.bytes.readableBytes + 320)
        let fromTrusted = !trustedProxies.isEmpty && trustedProxies.contains { $0.contains(request.peer) }
        var forwardedFor: [String] = [], forwarded: [String] = [], via: [String] = []
        var options: [[UInt8]] = []
        var requestID: String?
        var wantsTrailers = false
        var cookies: [[UInt8]] = []
        var cookieLine: [UInt8]?
        request.headers.forEachLine { name, value, line in
            switch Self.requestField(name) {
            case .forwardedFor: if fromTrusted { forwardedFor.append(String(decoding: value, as: UTF8.self)) }
            case .forwarded: if fromTrusted { forwarded.append(String(decoding: value, as: UTF8.self)) }
            case .via: via.append(String(decoding: value, as: UTF8.self))
            case .requestID:
                if requestID == nil, Self.isValidRequestID(value) { requestID = String(decoding: value, as: UTF8.self) }
            case .te:
                UpstreamResponseParser.forEachToken(value) { coding in
                    if FieldBlock.equalsLowercased(coding, "trailers") { wantsTrailers = true }
                }
            case .connection: options.append(contentsOf: UpstreamResponseParser.tokens(value))
            case .cookie:
                // HTTP/2 clients send one field per cookie; an HTTP/1.1 upstream gets them as one line joined by
                // "; " (RFC 9113 §8.2.3), which is also what a server reading only the first line needs.
                if cookies.isEmpty { cookieLine = Array(line) }
                cookies.append(Array(value))
            case .dropped: break
            case .passed: fields.append(line: line)
            }
        }
        if cookies.count == 1, let cookieLine {
            cookieLine.withUnsafeBytes { fields.append(line: $0) }
        } else if cookies.count > 1 {
            fields.add(name: "cookie", value: cookies.map { String(decoding: $0, as: UTF8.self) }.joined(separator: "; "))
        }
        fields.remove(names: options)  // the fields the client's Connection header names
        var host: String?
        switch configuration.host {
        case .pass, .upstream: host = String(request.host)  // .upstream: replaced per server
        case .fixed(let fixed): host = fixed
        }
        if wantsTrailers { fields.add(name: "te", value: "trailers") }
        var chunked = false
        if request.body != nil {
            if let length = request.bodyLength {
                fields.add(name: "content-length", value: String(length))
            } else {
                fields.add(name: "transfer-encoding", value: "chunked")
                chunked = true
            }
        } else if request.method == .POST || request.method == .PUT || request.method == .PATCH {
            fields.add(name: "content-length", value: "0")
        }
        // Edge's own fields, written in pieces: a client's earlier values (from a trusted proxy) first.
        let peer = request.peer
        let scheme: StaticString = request.isTLS ? "https" : "http"
        fields.add(name: "x-forwarded-for") { value in
            for earlier in forwardedFor {
                value.writeString(earlier)
                value.writeStaticString(", ")
            }
            peer.write(to: &value)
        }
        fields.add(name: "x-forwarded-proto") { $0.writeStaticString(scheme) }
        if !request.host.isEmpty { fields.add(name: "x-forwarded-host", value: request.host) }
        fields.add(name: "forwarded") { value in
            for earlier in forwarded {
                value.writeString(earlier)
                value.writeStaticString(", ")
            }
            value.writeStaticString("for=")
            if peer.isIPv4 {
                peer.write(to: &value)
            } else {
                value.writeStaticString("\"[")
                peer.write(to: &value)
                value.writeStaticString("]\"")
            }
            value.writeStaticString(";proto=")
            value.writeStaticString(scheme)
            if !request.host.isEmpty {
                value.writeStaticString(";host=\"")
                value.writeSubstring(request.host)
                value.writeStaticString("\"")
            }
        }
        fields.add(name: "via") { value in
            for earlier in via {
                value.writeString(earlier)
                value.writeStaticString(", ")
            }
            value.writeStaticString(request.version.major == 2 ? "2.0 " : "1.1 ")
            value.writeString(serverName)
        }
        if let requestID {
            fields.add(name: "x-request-id", value: requestID)
        } else {
            let (high, low) = (random.next(), random.next())
            fields.add(name: "x-request-id") { Self.writeRequestID(high, low, to: &$0) }
        }
        let edits = configuration.requestHeaders
        if !edits.remove.isEmpty || !edits.set.isEmpty || !edits.add.isEmpty {
            // The route's edits may name `Host` too: applied with it among the fields, then taken out again.
            if let current = host { fields.add(name: "host", value: current) }
            for name in edits.remove { fields.remove(name: name) }
            for (name, value) in edits.set { fields.replaceOrAdd(name: name, value: value) }
            for (name, value) in edits.add { fields.add(name: name, value: value) }
            host = fields.values(of: "host").first
            fields.remove(name: "host")
        }
        return UpstreamRequest(method: request.method, target: target, fields: fields, host: host, chunked: chunked, via: ownVia)
    }

    /// How ``upstreamRequest(for:random:)`` treats a client's field.
    private enum RequestField { case passed, dropped, forwardedFor, forwarded, via, requestID, te, connection, cookie }

    /// A client field's treatment by its name, compared as bytes: hop-by-hop fields (RFC 9110 §7.6.1) and those
    /// Edge sets itself are dropped.
    private static func requestField(_ name: UnsafeRawBufferPointer) -> RequestField {
        @inline(__always) func named(_ lower: StaticString) -> Bool { FieldBlock.equalsLowercased(name, lower) }
        switch name.count {
        case 2: return named("te") ? .te : .passed
        case 3: return named("via") ? .via : .passed
        case 4: return named("host") ? .dropped : .passed
        case 6: return named("expect") ? .dropped : named("cookie") ? .cookie : .passed
        case 7: return named("upgrade") ? .dropped : .passed
        case 9: return named("forwarded") ? .forwarded : .passed
        case 10:
            if named("connection") { return .connection }
            return named("keep-alive") ? .dropped : .passed
        case 12: return named("x-request-id") ? .requestID : .passed
        case 14: return named("content-length") || named("http2-settings") ? .dropped : .passed
        case 15: return named("x-forwarded-for") ? .forwardedFor : .passed
        case 16: return named("x-forwarded-host") ? .dropped : Self.proxyPrefixed(name)
        case 17: return named("transfer-encoding") || named("x-forwarded-proto") ? .dropped : Self.proxyPrefixed(name)
        default: return Self.proxyPrefixed(name)
        }
    }

    /// `Proxy-*` fields (Proxy-Authorization, Proxy-Connection …) are between the client and its proxy.
    private static func proxyPrefixed(_ name: UnsafeRawBufferPointer) -> RequestField {
        guard name.count > 6, FieldBlock.equalsLowercased(UnsafeRawBufferPointer(rebasing: name[0..<6]), "proxy-") else { return .passed }
        return .dropped
    }

    /// A client's `X-Request-Id` is passed on when it is 1 to 200 visible ASCII characters.
    private static func isValidRequestID(_ value: UnsafeRawBufferPointer) -> Bool {
        (1...200).contains(value.count) && value.allSatisfy { $0 > 0x20 && $0 < 0x7F }
    }

    /// A request ID: 32 hex digits of two random words.
    private static func writeRequestID(_ high: UInt64, _ low: UInt64, to buffer: inout ByteBuffer) {
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: 32) { bytes in
            let digits: StaticString = "0123456789abcdef"
            for index in 0..<32 {
                let value = index < 16 ? high : low
                let shift = UInt64(60 - 4 * (index % 16))
                bytes[index] = digits.utf8Start[Int((value >> shift) & 0xF)]
            }
            return 32
        }
    }

    /// What consistent hashing hashes for this request.
    func hashKey(for request: ProxyRequest) -> [UInt8]? {
        guard case .hash(let key) = group.configuration.balance else { return nil }
        switch key {
        case .clientAddress:
            return Array(request.client.description.utf8)
        case .uri:
            return Array(request.path.utf8) + (request.query.map { [UInt8(ascii: "?")] + Array($0.utf8) } ?? [])
        case .header(let name):
            return request.headers.values(of: name).first.map { Array($0.utf8) }
        case .cookie(let name):
            for value in request.headers.values(of: "cookie") {
                for pair in value.split(separator: ";") {
                    let pair = pair.trimming()
                    guard let equals = pair.utf8.firstIndex(of: UInt8(ascii: "=")) else { continue }
                    if pair[..<equals].utf8.elementsEqual(name.utf8) { return Array(pair[pair.utf8.index(after: equals)...].utf8) }
                }
            }
            return nil
        }
    }

    // MARK: the response sent back

    /// The upstream's response as the client gets it: its fields as the upstream exchange kept them (hop-by-hop
    /// fields, `Server` and `Date` dropped: Edge sets its own; `Via` added), the route's edits applied.
    func clientResponse(_ streamed: StreamedResponse) -> StreamedResponse {
        let edits = configuration.responseHeaders
        guard !edits.remove.isEmpty || !edits.set.isEmpty || !edits.add.isEmpty else { return streamed }
        var fields = streamed.headers
        for name in edits.remove { fields.remove(name: name) }
        for (name, value) in edits.set { fields.replaceOrAdd(name: name, value: value) }
        for (name, value) in edits.add { fields.add(name: name, value: value) }
        return StreamedResponse(status: streamed.status, headers: fields, body: streamed.body, date: streamed.date)
    }
}

extension ProxyResponder: Origin {
    /// The body streams to the upstream as it arrives; the route's `max_body_bytes` replaces the global limit.
    var requestBody: OriginRequestBody { .streamed(maxBytes: configuration.maxBodyBytes) }

    func serve(_ request: OriginRequest, context: OriginContext) -> Dispatch {
        guard let streamed = request.streamed else {
            // A front end that did not stream this request (it cannot happen: every front end asks
            // ``RequestDispatcher/answerAtHead(method:target:host:conditional:now:admitting:)`` at the head).
            return .ready(.response(.text(.internalServerError, "request was not streamed\n")))
        }
        let proxied = ProxyRequest(
            method: request.method, path: request.path, relativePath: request.relativePath, query: request.query,
            headers: streamed.headers, host: request.headers.host, peer: request.peer, client: request.client,
            isTLS: streamed.isTLS, version: streamed.version, body: streamed.body, bodyLength: streamed.bodyLength,
            cancellation: streamed.cancellation, trace: streamed.trace
        )
        return .pending(serve(proxied, loop: context.loop, on: context.eventLoop))
    }
}
