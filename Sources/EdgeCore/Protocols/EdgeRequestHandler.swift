import NIOCore
import NIOHTTP1

/// Serves requests: limits, routing, the cache and the responders. One instance per HTTP/1.1 connection
/// (behind `HTTPServerPipelineHandler`, so one request at a time, responses in order) or per HTTP/2 stream
/// (behind `HTTP2FramePayloadToHTTP1ServerCodec`).
///
/// Everything runs on the channel's event loop. A cache hit is answered synchronously from the loop's
/// ``LoopLocalCache`` with no lock; misses go to the ``SharedResponseCache`` and the backend, whose futures
/// complete on this loop.
final class EdgeRequestHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private enum State {
        /// Waiting for a request head.
        case idle
        /// Reading the body of `head`.
        case receiving(HTTPRequestHead, bodyBytes: Int)
        /// The request is complete and its response is being produced.
        case responding
        /// An error response was sent; the connection or stream is closing.
        case closing
    }

    private let services: EdgeServices
    private let loop: LoopState
    private let limits: LimitsConfiguration
    private let serverName: String
    private let isHTTP2: Bool
    private var state: State = .idle
    private var isActive = true

    /// Creates a handler for one connection (HTTP/1.1) or stream (HTTP/2).
    init(services: EdgeServices, loop: LoopState, isHTTP2: Bool) {
        self.services = services
        self.loop = loop
        self.limits = services.configuration.limits
        self.serverName = services.configuration.serverName
        self.isHTTP2 = isHTTP2
    }

    func channelInactive(context: ChannelHandlerContext) {
        isActive = false
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        isActive = false
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        // Keep-alive timeout (HTTP/1.1): close only between requests, never under a request in progress.
        if event is IdleStateHandler.IdleStateEvent {
            if case .idle = state { context.close(promise: nil) }
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            receiveHead(head, context: context)
        case .body(let chunk):
            guard case .receiving(let head, let received) = state else { return }
            let total = received + chunk.readableBytes
            if total > limits.maxBodyBytes {
                reject(head, .payloadTooLarge, "request body larger than \(limits.maxBodyBytes) bytes\n", context: context)
                return
            }
            state = .receiving(head, bodyBytes: total)
        case .end:
            guard case .receiving(let head, let bodyBytes) = state else { return }
            state = .responding
            serve(head, bodyBytes: bodyBytes, context: context)
        }
    }

    // MARK: request head checks

    private func receiveHead(_ head: HTTPRequestHead, context: ChannelHandlerContext) {
        guard case .idle = state else { return }
        var headBytes = head.uri.utf8.count + head.method.rawValue.utf8.count + 12
        for header in head.headers { headBytes += header.name.utf8.count + header.value.utf8.count + 4 }
        if headBytes > limits.maxHeaderBytes {
            reject(head, .requestHeaderFieldsTooLarge, "request head larger than \(limits.maxHeaderBytes) bytes\n", context: context)
            return
        }
        if let length = head.headers.first(name: "content-length"), let bytes = Int(length), bytes > limits.maxBodyBytes {
            reject(head, .payloadTooLarge, "request body larger than \(limits.maxBodyBytes) bytes\n", context: context)
            return
        }
        if let expectation = head.headers.first(name: "expect") {
            guard expectation.lowercased() == "100-continue" else {
                reject(head, .expectationFailed, "unsupported expectation\n", context: context)
                return
            }
            let interim = HTTPResponseHead(version: head.version, status: .continue)
            context.writeAndFlush(wrapOutboundOut(.head(interim)), promise: nil)
        }
        state = .receiving(head, bodyBytes: 0)
    }

    // MARK: serving

    private func serve(_ head: HTTPRequestHead, bodyBytes: Int, context: ChannelHandlerContext) {
        guard services.state.admitRequest(limit: limits.maxInFlight) else {
            var busy = EdgeResponse.text(.serviceUnavailable, "server busy, retry shortly\n")
            busy.headers.add(name: "retry-after", value: "1")
            send(busy, for: head, context: context, holdsSlot: false)
            return
        }
        let target = Self.originForm(head.uri)
        let path: Substring
        let query: Substring?
        if let mark = target.firstIndex(of: "?") {
            path = target[..<mark]
            query = target[target.index(after: mark)...]
        } else {
            path = target
            query = nil
        }
        if path == "/healthz" {
            let draining = services.state.isDraining
            var health = EdgeResponse.text(draining ? .serviceUnavailable : .ok, draining ? "draining\n" : "ok\n")
            health.headers.add(name: "cache-control", value: "no-store")
            send(health, for: head, context: context)
            return
        }
        guard let route = services.router.route(for: path) else {
            send(.text(.notFound, "not found\n"), for: head, context: context)
            return
        }
        switch route.action {
        case .respond(let response):
            send(response, for: head, context: context)
        case .demo(let backend, let ttl):
            let cacheable = (head.method == .GET || head.method == .HEAD) && ttl > .zero
            if cacheable {
                serveCached(head, target: target, query: query, backend: backend, ttl: ttl, context: context)
            } else {
                let fetched = backend.fetch(
                    method: head.method.rawValue, target: String(target), query: query, bodyBytes: bodyBytes, on: context.eventLoop
                )
                fetched.assumeIsolated().whenComplete { result in
                    switch result {
                    case .success(var response):
                        response.headers.add(name: "x-cache", value: "PASS")
                        self.send(response, for: head, context: context)
                    case .failure:
                        self.send(.text(.badGateway, "backend failed\n"), for: head, context: context)
                    }
                }
            }
        }
    }

    private func serveCached(
        _ head: HTTPRequestHead, target: Substring, query: Substring?, backend: DemoBackend, ttl: TimeAmount,
        context: ChannelHandlerContext
    ) {
        let key = CacheKey(method: "GET", host: head.headers.first(name: "host")?.lowercased() ?? "", target: String(target))
        let now = NIODeadline.now()
        if let entry = loop.cache.get(key, now: now) {
            send(entry, cacheStatus: "HIT", now: now, for: head, context: context)
            return
        }
        switch services.cache.lookup(key, now: now, eventLoop: context.eventLoop) {
        case .hit(let entry):
            loop.cache.put(key, entry)
            send(entry, cacheStatus: "HIT", now: now, for: head, context: context)
        case .joined(let future):
            future.assumeIsolated().whenComplete { result in
                switch result {
                case .success(let entry):
                    self.loop.cache.put(key, entry)
                    self.send(entry, cacheStatus: "HIT", now: .now(), for: head, context: context)
                case .failure:
                    self.send(.text(.badGateway, "backend failed\n"), for: head, context: context)
                }
            }
        case .fetch:
            let cache = services.cache
            let fetched = backend.fetch(method: "GET", target: key.target, query: query, bodyBytes: 0, on: context.eventLoop)
            fetched.assumeIsolated().whenComplete { result in
                switch result {
                case .success(let response):
                    let entry = CachedResponse(
                        status: response.status, headers: response.headers, body: response.body,
                        storedAt: .now(), ttl: ttl, keyCost: key.cost
                    )
                    cache.finishFetch(key, result: .success(entry))
                    self.loop.cache.put(key, entry)
                    self.send(entry, cacheStatus: "MISS", now: entry.storedAt, for: head, context: context)
                case .failure(let error):
                    cache.finishFetch(key, result: .failure(error))
                    self.send(.text(.badGateway, "backend failed\n"), for: head, context: context)
                }
            }
        }
    }

    // MARK: writing responses

    private func send(_ entry: CachedResponse, cacheStatus: String, now: NIODeadline, for head: HTTPRequestHead, context: ChannelHandlerContext) {
        var headers = entry.headers
        headers.add(name: "x-cache", value: cacheStatus)
        if cacheStatus == "HIT" { headers.add(name: "age", value: String(entry.age(at: now))) }
        write(entry.status, headers: headers, body: entry.body, for: head, context: context, holdsSlot: true, close: false)
    }

    private func send(_ response: EdgeResponse, for head: HTTPRequestHead, context: ChannelHandlerContext, holdsSlot: Bool = true) {
        var headers = response.headers
        headers.add(name: "content-length", value: String(response.body.readableBytes))
        write(response.status, headers: headers, body: response.body, for: head, context: context, holdsSlot: holdsSlot, close: false)
    }

    /// Answers with an error and closes the connection (HTTP/1.1) or stream (HTTP/2).
    private func reject(_ head: HTTPRequestHead, _ status: HTTPResponseStatus, _ text: String, context: ChannelHandlerContext) {
        state = .closing
        let response = EdgeResponse.text(status, text)
        var headers = response.headers
        headers.add(name: "content-length", value: String(response.body.readableBytes))
        write(status, headers: headers, body: response.body, for: head, context: context, holdsSlot: false, close: true)
    }

    private func write(
        _ status: HTTPResponseStatus, headers: HTTPHeaders, body: ByteBuffer, for request: HTTPRequestHead,
        context: ChannelHandlerContext, holdsSlot: Bool, close forceClose: Bool
    ) {
        if holdsSlot { services.state.requestFinished() }
        guard isActive else { return }
        let keepAlive = isHTTP2 || (request.isKeepAlive && !forceClose)
        var headers = headers
        headers.add(name: "server", value: serverName)
        headers.add(name: "date", value: loop.date.current)
        if !isHTTP2 {
            if !keepAlive {
                headers.add(name: "connection", value: "close")
            } else if request.version.minor == 0 {
                headers.add(name: "connection", value: "keep-alive")
            }
        }
        let version = isHTTP2 ? request.version : HTTPVersion(major: 1, minor: 1)
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: version, status: status, headers: headers))), promise: nil)
        if request.method != .HEAD, body.readableBytes > 0 {
            context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        }
        if case .responding = state { state = .idle }
        if keepAlive && !forceClose {
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        } else {
            context.writeAndFlush(wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in
                context.close(promise: nil)
            }
        }
    }

    /// The path-and-query part of a request target (absolute-form targets lose their scheme and authority).
    static func originForm(_ uri: String) -> Substring {
        if uri.hasPrefix("/") { return uri[...] }
        guard let scheme = uri.range(of: "://") else { return uri[...] }
        let rest = uri[scheme.upperBound...]
        guard let slash = rest.firstIndex(of: "/") else { return "/" }
        return rest[slash...]
    }
}
