import NIOCore
import NIOHTTP1
import NIOHTTP2

/// The request handler on NIO's HTTP/1-style parts: one instance per HTTP/2 stream (behind
/// `HTTP2FramePayloadToHTTP1ServerCodec`) and per HTTP/1.1 connection that ``HTTP1FastPathHandler`` handed
/// over (behind `HTTPServerPipelineHandler`, so one request at a time, responses in order).
///
/// It enforces the head and body limits, answers `Expect: 100-continue`, and leaves routing, the cache and
/// the backend to ``RequestDispatcher``. Everything runs on the channel's event loop; a cache hit is answered
/// synchronously with no lock, misses complete on this loop.
final class EdgeRequestHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    private enum State {
        /// Waiting for a request head.
        case idle
        /// Reading the body of `head`.
        case receiving(HTTPRequestHead, bodyBytes: Int)
        /// The request is complete and its response is being produced.
        case responding
        /// A request to a streaming route (a proxy): dispatched at its head, its body passed on as it arrives
        /// (``requestBody``), up to `limit` bytes. The response may begin before the body ends.
        case streaming(HTTPRequestHead, bodyBytes: Int, limit: Int)
        /// HTTP/2, a streaming route, no `Content-Length`: dispatched at the first DATA (a body of unknown length)
        /// or at END_STREAM (no body), whichever comes first.
        case streamPending(HTTPRequestHead, limit: Int)
        /// An error response was sent; the connection or stream is closing.
        case closing
    }

    private let dispatcher: RequestDispatcher
    private let loop: LoopState
    private let limits: LimitsConfiguration
    private let timeouts: TimeoutsConfiguration
    private let serverName: String
    private let isHTTP2: Bool
    /// HTTP/2 on NIOHTTP2 (`http2_engine = "nio"`): a header block must fit one HEADERS frame, since NIOHTTP2
    /// sends no CONTINUATION frames. Edge's own connection layer splits a larger block into CONTINUATION frames.
    private let headerBlockMustFitOneFrame: Bool
    private let client: ClientAddress
    private var state: State = .idle
    private var isActive = true
    /// HTTP/1.1: the client shut down its sending side, so the response in progress is the last one.
    private var inputClosed = false
    /// The current request's end has been received (HTTP/2: the client's END_STREAM).
    private var requestEnded = false
    /// HTTP/1.1: the write that ended the previous response, so a half-closed connection closes only after it.
    private var lastResponseEnd: EventLoopFuture<Void>?
    /// Checks the request body's minimum rate while a body is being received.
    private var bodyRateTimer: Scheduled<Void>?
    private var bodyStarted = NIODeadline.now()
    /// Whether the connection is TLS (for `X-Forwarded-Proto`), and its version (for the access log).
    private let isTLS: Bool
    private let tls: TLSVersionLabel
    /// A streamed request's body, while it is being passed on.
    private var requestBody: BodyPipe?
    /// The streamed request whose answer is awaited: told when the client goes away first.
    private var pendingCancellation: RequestCancellation?
    /// A streamed response's body, while it is being written.
    private var responseBody: BodyPipe?
    /// HTTP/1.1: a protocol switch answered before the request's end was parsed, done at that end.
    private var pendingUpgrade: (ProtocolUpgrade, HTTPRequestHead)?
    /// HTTP/2: a streamed response's head, held until the origin's first body part or the end of its first read
    /// batch, so that a response that ends with its head (gRPC's trailers-only answers) leaves as one HEADERS frame
    /// with END_STREAM rather than HEADERS and an empty DATA (which gRPC clients take for a missing status).
    private var heldHead: (status: HTTPResponseStatus, headers: HTTPHeaders, request: HTTPRequestHead)?
    /// Whether the response to the current streamed request has begun (its head is written).
    private var responseStarted = false
    /// Reads held because the streamed request body waits for the origin (backpressure).
    private var readsPaused = false
    /// The request being answered, for the metrics and the access log.
    private var record: RequestRecord?
    private var readPending = false
    /// Body bytes before the body rate is measured from ``bodyStarted`` (reset when held reads resume).
    private var rateBaseline = 0

    /// Creates a handler for one connection (HTTP/1.1) or stream (HTTP/2).
    /// `tls` is the connection's TLS version (`.none` for plain TCP; HTTP/2 runs over TLS only).
    init(services: EdgeServices, loop: LoopState, isHTTP2: Bool, client: ClientAddress, tls: TLSVersionLabel = .other) {
        self.tls = tls
        self.isTLS = isHTTP2 || tls != .none
        self.dispatcher = RequestDispatcher(services: services, loop: loop, isTLS: isHTTP2 || tls != .none)
        self.loop = loop
        self.limits = services.configuration.limits
        self.timeouts = services.configuration.timeouts
        self.serverName = services.configuration.serverName
        self.isHTTP2 = isHTTP2
        self.headerBlockMustFitOneFrame = isHTTP2 && services.configuration.http2Engine == .nio
        self.client = client
    }

    func channelInactive(context: ChannelHandlerContext) {
        isActive = false
        finishRecord()
        stopBodyRateTimer()
        abandonStreams()
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        isActive = false
        stopBodyRateTimer()
        abandonStreams()
    }

    /// The client is gone: the origin stops producing the response and taking the request body.
    private func abandonStreams() {
        pendingUpgrade?.0.abandoned()
        pendingUpgrade = nil
        pendingCancellation?.cancel()
        pendingCancellation = nil
        let gone = BodyPipe.Broken(description: "the client went away")
        requestBody?.fail(gone)
        requestBody = nil
        responseBody?.cancel(gone)
        responseBody = nil
    }

    /// Holds reads while a streamed request body waits for its origin.
    func read(context: ChannelHandlerContext) {
        if readsPaused {
            readPending = true
        } else {
            context.read()
        }
    }

    private func resumeReads(context: ChannelHandlerContext) {
        readsPaused = false
        if readPending {
            readPending = false
            context.read()
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        // Keep-alive timeout (HTTP/1.1): close only between requests, never under a request in progress.
        if event is IdleStateHandler.IdleStateEvent {
            if case .idle = state { context.close(promise: nil) }
            return
        }
        if let event = event as? ChannelEvent, event == .inputClosed {
            // NIO's pipelining handler delivers this after every request the client sent.
            inputClosed = true
            switch state {
            case .idle:
                // Possibly delivered from inside the previous response's final write (the pipelining handler
                // releases buffered events then); on the next tick that write has been issued and recorded.
                context.eventLoop.assumeIsolated().execute { self.closeAfterLastResponse(context: context) }
            case .receiving, .streamPending:
                context.close(promise: nil)  // the body can never be completed
            case .streaming:
                if !requestEnded { context.close(promise: nil) }
            case .responding, .closing:
                break  // the response in progress ends the connection
            }
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    /// HTTP/2: an error in the stream's pipeline — NIO's codec refusing a header block it cannot turn into a
    /// request (a CONNECT without `:path`, say) — ends the stream (RST_STREAM) instead of leaving it open with
    /// no answer. HTTP/1.1 errors go on to the parse-error answer and ``CloseOnErrorHandler``.
    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if isHTTP2 {
            context.close(promise: nil)
        } else {
            context.fireErrorCaught(error)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            receiveHead(head, context: context)
        case .body(let chunk):
            if case .streamPending(let head, let limit) = state {
                beginStream(head, target: Self.originForm(head.uri), hasBody: true, length: nil, limit: limit, context: context)
            }
            if case .streaming(let head, let received, let limit) = state {
                receiveStreamedBody(chunk, head: head, received: received, limit: limit, context: context)
                return
            }
            guard case .receiving(let head, let received) = state else { return }
            if bodyRateTimer == nil, received == 0 { startBodyRateTimer(context: context) }
            let total = received + chunk.readableBytes
            if total > limits.maxBodyBytes {
                reject(head, .payloadTooLarge, "request body larger than \(limits.maxBodyBytes) bytes\n", context: context)
                return
            }
            state = .receiving(head, bodyBytes: total)
        case .end(let trailers):
            requestEnded = true
            if let (upgrade, head) = pendingUpgrade {
                pendingUpgrade = nil
                switchProtocols(upgrade, for: head, context: context)
                return
            }
            if case .streamPending(let head, let limit) = state {
                beginStream(head, target: Self.originForm(head.uri), hasBody: false, length: nil, limit: limit, context: context)
            }
            if case .streaming = state {
                stopBodyRateTimer()
                requestBody?.finish(trailers: trailers)
                requestBody = nil
                resumeReads(context: context)
                return
            }
            guard case .receiving(let head, let bodyBytes) = state else { return }
            stopBodyRateTimer()
            state = .responding
            serve(head, bodyBytes: bodyBytes, context: context)
        }
    }

    // MARK: request head checks

    private func receiveHead(_ head: HTTPRequestHead, context: ChannelHandlerContext) {
        guard case .idle = state else { return }
        requestEnded = false
        var record = RequestRecord(
            start: .now(), method: head.method, target: Self.originForm(head.uri),
            wire: isHTTP2 ? .http2 : head.version.minor == 0 ? .http1_0 : .http1_1, client: client, tls: tls
        )
        if loop.observer.logs {
            record.detailed.userAgent = head.headers.first(name: "user-agent")
            record.detailed.referer = head.headers.first(name: "referer")
        }
        loop.observer.startSpan(
            &record, traceparent: head.headers.first(name: "traceparent"), tracestate: head.headers.first(name: "tracestate")
        )
        self.record = record
        if !isHTTP2 { context.triggerUserOutboundEvent(HTTP1ConnectionEvent.headReceived, promise: nil) }
        if head.uri.utf8.count > limits.maxURIBytes {
            reject(head, .uriTooLong, "request target longer than \(limits.maxURIBytes) bytes\n", context: context)
            return
        }
        // Over HTTP/2 a CONNECT that reaches this handler has a `:path`: HTTP2HeaderBlockRules lets one through only
        // as extended CONNECT with `:protocol` `websocket` (RFC 8441), which a WebSocket route answers below.
        let isExtendedConnect = isHTTP2 && head.method == .CONNECT
        if head.method == .CONNECT, !(isExtendedConnect && dispatcher.acceptsUpgrade(target: Self.originForm(head.uri), host: Self.requestHost(head))) {
            // Edge is not a forward proxy. Over HTTP/1.1 the bytes after a CONNECT head belong to a tunnel, so the
            // connection closes after the answer.
            reject(
                head, .notImplemented,
                isExtendedConnect ? "no WebSocket route here\n" : "CONNECT is not supported: Edge is not a forward proxy\n",
                context: context
            )
            return
        }
        if !RequestTargetRules.isRoutableTarget(head.uri, isOPTIONS: head.method == .OPTIONS, allowsAbsoluteForm: !isHTTP2) {
            reject(head, .badRequest, "malformed request target\n", context: context)
            return
        }
        let hosts = head.headers["host"]
        if hosts.contains(where: { !RequestTargetRules.isValidHost($0.utf8) }) {
            reject(head, .badRequest, "invalid Host\n", context: context)
            return
        }
        if let authority = Self.absoluteFormAuthority(head.uri), authority.isEmpty || !RequestTargetRules.isValidHost(authority.utf8) {
            // An absolute-form target's host replaces Host (RFC 9112 §3.2.2), so it is held to Host's rules; an
            // empty one is invalid for http(s) URIs (RFC 9110 §4.2.1).
            reject(head, .badRequest, "invalid host in request target\n", context: context)
            return
        }
        if !isHTTP2 {
            // RFC 9112 §3.2: exactly one Host in HTTP/1.1 (at most one in HTTP/1.0), else 400.
            if hosts.count > 1 || (hosts.isEmpty && head.version.minor >= 1) {
                reject(head, .badRequest, "exactly one Host header is required\n", context: context)
                return
            }
            // Transfer-Encoding must end in chunked (else the body length is ambiguous: 400, as llhttp does for
            // CL+TE); a coding before it that Edge cannot decode is 501 (RFC 9112 §6.1).
            let codings = head.headers["transfer-encoding"]
                .flatMap { $0.split(separator: ",") }
                .map { $0.trimming().lowercased() }
            if let last = codings.last {
                guard last == "chunked" else {
                    reject(head, .badRequest, "Transfer-Encoding must end in chunked\n", context: context)
                    return
                }
                guard codings.count == 1 else {
                    reject(head, .notImplemented, "only Transfer-Encoding: chunked is supported\n", context: context)
                    return
                }
            }
        }
        if head.headers.count > limits.maxHeaderFields {
            reject(head, .requestHeaderFieldsTooLarge, "more than \(limits.maxHeaderFields) header fields\n", context: context)
            return
        }
        var headBytes = head.uri.utf8.count + head.method.rawValue.utf8.count + 12
        for header in head.headers { headBytes += header.name.utf8.count + header.value.utf8.count + 4 }
        if headBytes > limits.maxHeaderBytes {
            reject(head, .requestHeaderFieldsTooLarge, "request head larger than \(limits.maxHeaderBytes) bytes\n", context: context)
            return
        }
        let target = Self.originForm(head.uri)
        let streamedBodyLimit = dispatcher.streamedBodyLimit(target: target, host: Self.requestHost(head), default: limits.maxBodyBytes)
        let bodyLimit = streamedBodyLimit ?? limits.maxBodyBytes
        let declaredLength = head.headers.first(name: "content-length").flatMap { Int($0) }
        if let bytes = declaredLength, bytes > bodyLimit {
            reject(head, .payloadTooLarge, "request body larger than \(bodyLimit) bytes\n", context: context)
            return
        }
        // RFC 9110 §10.1.1: an expectation in an HTTP/1.0 request is ignored.
        if let expectation = head.headers.first(name: "expect"), head.version != .http1_0 {
            guard expectation.lowercased() == "100-continue" else {
                reject(head, .expectationFailed, "unsupported expectation\n", context: context)
                return
            }
            let interim = HTTPResponseHead(version: head.version, status: .continue)
            context.writeAndFlush(wrapOutboundOut(.head(interim)), promise: nil)
        }
        if streamedBodyLimit != nil {
            if isExtendedConnect {
                // The stream carries WebSocket frames once answered; nothing before that is a request body.
                beginStream(head, target: target, hasBody: false, length: nil, limit: 0, context: context)
            } else if let length = declaredLength {
                beginStream(head, target: target, hasBody: length > 0, length: length, limit: bodyLimit, context: context)
            } else if !isHTTP2 {
                beginStream(
                    head, target: target, hasBody: head.headers.contains(name: "transfer-encoding"), length: nil, limit: bodyLimit,
                    context: context
                )
            } else {
                state = .streamPending(head, limit: bodyLimit)
            }
            return
        }
        state = .receiving(head, bodyBytes: 0)
        if head.headers.contains(name: "content-length") || head.headers.contains(name: "transfer-encoding") {
            // An HTTP/2 request without Content-Length announces no body in its head; its timer starts with
            // the first body bytes instead (see channelRead), so body-less streams schedule nothing.
            startBodyRateTimer(context: context)
        }
    }

    /// After the grace period, a body arriving slower than `request_body_min_bytes_per_second` on average
    /// gets 408 and the connection (or stream) closes.
    private func startBodyRateTimer(context: ChannelHandlerContext) {
        guard timeouts.requestBodyMinRate > 0 else { return }
        bodyStarted = .now()
        rateBaseline = 0
        scheduleBodyRateCheck(in: timeouts.requestBodyGrace, context: context)
    }

    private func scheduleBodyRateCheck(in delay: TimeAmount, context: ChannelHandlerContext) {
        bodyRateTimer = context.eventLoop.assumeIsolated().scheduleTask(in: delay) {
            self.bodyRateTimer = nil
            let head: HTTPRequestHead, received: Int
            switch self.state {
            case .receiving(let h, let r), .streaming(let h, let r, _):
                (head, received) = (h, r)
            default:
                return
            }
            guard self.isActive else { return }
            if self.readsPaused {
                // The origin is not taking the body: the client is not the slow one.
                self.scheduleBodyRateCheck(in: .seconds(1), context: context)
                return
            }
            let elapsed = Double((NIODeadline.now() - self.bodyStarted).nanoseconds) / 1e9
            if Double(received - self.rateBaseline) < Double(self.timeouts.requestBodyMinRate) * elapsed {
                self.loop.observer.metrics.timedOut(.requestBody)
                self.reject(head, .requestTimeout, "request body too slow\n", context: context)
            } else {
                self.scheduleBodyRateCheck(in: .seconds(1), context: context)
            }
        }
    }

    private func stopBodyRateTimer() {
        bodyRateTimer?.cancel()
        bodyRateTimer = nil
    }

    // MARK: streaming routes

    /// Dispatches a request to a streaming route at its head; its body (if any) follows through a ``BodyPipe``.
    private func beginStream(
        _ head: HTTPRequestHead, target: Substring, hasBody: Bool, length: Int?, limit: Int, context: ChannelHandlerContext
    ) {
        state = .streaming(head, bodyBytes: 0, limit: limit)
        responseStarted = false
        var pipe: BodyPipe?
        if hasBody {
            let body = BodyPipe(eventLoop: context.eventLoop)
            body.onDemand = { [self] in
                guard readsPaused else { return }
                // The rate is measured again from here: the pause was the origin's.
                bodyStarted = .now()
                if case .streaming(_, let received, _) = state { rateBaseline = received }
                resumeReads(context: context)
            }
            body.onCancel = { [self] _ in
                // The origin stopped taking the body (it answered, or failed): the rest is read and dropped.
                requestBody = nil
                resumeReads(context: context)
            }
            pipe = body
            requestBody = body
            startBodyRateTimer(context: context)
        }
        var streamed = StreamedRequest(headers: FieldBlock(head.headers), version: head.version, isTLS: isTLS, body: pipe, bodyLength: length)
        streamed.trace = record?.span?.context
        var values = Self.headerValues(head.headers)
        if let authority = Self.absoluteFormAuthority(head.uri) { values.host = authority }
        let dispatch = dispatcher.dispatch(
            method: head.method, target: target, headers: values, bodyBytes: 0, client: client,
            streamed: streamed, on: context.eventLoop
        )
        record?.note(loop.observer.takeDispatch())
        switch dispatch {
        case .ready(let reply):
            send(reply, for: head, context: context)
        case .pending(let future):
            pendingCancellation = streamed.cancellation
            future.assumeIsolated().whenComplete { result in
                self.pendingCancellation = nil
                switch result {
                case .success(let reply):
                    self.send(reply, for: head, context: context)
                case .failure:
                    // The client went away or its body broke off: nothing to answer (unless Edge has answered
                    // already, as it does a body over the limit, and closes after that answer).
                    if case .closing = self.state { return }
                    if self.isActive { context.close(promise: nil) }
                }
            }
        }
    }

    private func receiveStreamedBody(_ chunk: ByteBuffer, head: HTTPRequestHead, received: Int, limit: Int, context: ChannelHandlerContext) {
        let total = received + chunk.readableBytes
        state = .streaming(head, bodyBytes: total, limit: limit)
        record?.bodyBytesIn = total
        if bodyRateTimer == nil, received == 0, requestBody != nil { startBodyRateTimer(context: context) }
        if total > limit {
            let body = requestBody
            requestBody = nil
            if responseStarted {
                body?.fail(BodyPipe.Broken(description: "request body over the limit"))
                context.close(promise: nil)
            } else {
                // Answered first, then the origin told: its failure (a proxy's exchange ends) must not close the
                // connection before the 413 is written.
                reject(head, .payloadTooLarge, "request body larger than \(limit) bytes\n", context: context)
                body?.fail(BodyPipe.Broken(description: "request body over the limit"))
            }
            return
        }
        guard let body = requestBody else { return }  // the origin no longer takes it: dropped
        if !body.write(chunk) { readsPaused = true }
    }

    /// Writes a streamed response: the head at once, then each chunk as the origin produces it, as fast as the
    /// client takes them (the next chunk is asked for once the socket can take more). A body that breaks off
    /// ends the response as broken: the HTTP/1.1 connection closes without the final chunk (or short of its
    /// `Content-Length`), an HTTP/2 stream is reset.
    private func sendStream(_ streamed: StreamedResponse, for request: HTTPRequestHead, context: ChannelHandlerContext) {
        guard isActive else {
            streamed.body?.cancel(BodyPipe.Broken(description: "the client went away"))
            return
        }
        if let upstream = streamed.upstream {
            record?.detailed.upstream = upstream
            record?.detailed.requestID = upstream.requestID
        }
        var headers = streamed.headers.headers
        ResponseHeaders.perRequest(for: .stream(streamed), now: .now(), server: serverName, date: loop.date.current, site: record?.site, tls: isTLS) { name, value in
            headers.add(name: name, value: value)
        }
        if headerBlockMustFitOneFrame, !ResponseHeaders.fitsOneHTTP2Frame(status: streamed.status, headers: headers) {
            // On NIOHTTP2, an origin's head too large for one HEADERS frame: a 502, as nginx answers an upstream
            // head larger than its buffer, rather than a frame NIOHTTP2 cannot encode.
            streamed.body?.cancel(BodyPipe.Broken(description: "response head too large for HTTP/2"))
            send(.response(.text(.badGateway, "upstream response head too large\n")), for: request, context: context)
            return
        }
        responseStarted = true
        if isHTTP2, let body = streamed.body, request.method != .HEAD {
            heldHead = (streamed.status, headers, request)
            responseBody = body
            body.onBatchEnd = { [self] in
                if writeHeldHead(context: context) { context.flush() }
            }
            pump(body, keepAlive: true, context: context)
            return
        }
        // An HTTP/1.1 response that begins before the request body has all arrived ends the connection: what is
        // left of the body would otherwise be read as the next request.
        // An HTTP/1.0 client cannot read chunked framing: a body of unknown length ends when the connection closes.
        let closeDelimited = !isHTTP2 && request.version.minor == 0 && streamed.body != nil && request.method != .HEAD
            && !headers.contains(name: "content-length")
        let keepAlive = writeHead(
            streamed.status, headers: headers, for: request, close: (!requestEnded && !isHTTP2) || closeDelimited,
            closeDelimited: closeDelimited, context: context
        )
        guard let body = streamed.body, request.method != .HEAD else {
            streamed.body?.cancel(BodyPipe.Broken(description: "no body is sent"))
            finishStreamed(keepAlive: keepAlive, trailers: nil, context: context)
            return
        }
        context.flush()
        responseBody = body
        pump(body, keepAlive: keepAlive, context: context)
    }

    private func pump(_ body: BodyPipe, keepAlive: Bool, context: ChannelHandlerContext) {
        // What the origin has at hand is written at once, without a future per part; then the next part is awaited.
        while let ready = body.nextIfReady() {
            guard take(ready, of: body, keepAlive: keepAlive, context: context) else { return }
        }
        body.whenNext { result in
            if self.take(result, of: body, keepAlive: keepAlive, context: context) {
                self.pump(body, keepAlive: keepAlive, context: context)
            }
        }
    }

    /// Writes one part of a streamed body; returns whether the next may be taken at once.
    private func take(
        _ result: Result<BodyPipe.Part, any Error>, of body: BodyPipe, keepAlive: Bool, context: ChannelHandlerContext
    ) -> Bool {
        guard isActive, responseBody === body else { return false }
        switch result {
        case .success(.chunk(let chunk)):
            writeHeldHead(context: context)
            record?.bodyBytesOut += chunk.readableBytes
            let written = context.writeAndFlush(wrapOutboundOut(.body(.byteBuffer(chunk))))
            if context.channel.isWritable { return true }
            written.assumeIsolated().whenComplete { outcome in
                if case .failure = outcome {
                    body.cancel(BodyPipe.Broken(description: "the client went away"))
                } else {
                    self.pump(body, keepAlive: keepAlive, context: context)
                }
            }
            return false
        case .success(.end(let trailers)):
            responseBody = nil
            if trailers == nil, let held = heldHead {
                heldHead = nil
                endWithHead(held.status, headers: held.headers, context: context)
                return false
            }
            if headerBlockMustFitOneFrame, let trailers, !ResponseHeaders.fitsOneHTTP2Frame(status: nil, headers: trailers) {
                // On NIOHTTP2, trailers too large for one HEADERS frame: the stream is reset, a broken response
                // rather than a complete one without its trailers (gRPC's status is in them).
                heldHead = nil
                context.close(promise: nil)
                return false
            }
            writeHeldHead(context: context)
            finishStreamed(keepAlive: keepAlive, trailers: trailers, context: context)
            return false
        case .failure:
            responseBody = nil
            heldHead = nil
            context.close(promise: nil)
            return false
        }
    }

    /// Writes the held HTTP/2 head, if any; returns whether it did.
    @discardableResult
    private func writeHeldHead(context: ChannelHandlerContext) -> Bool {
        guard let held = heldHead else { return false }
        heldHead = nil
        _ = writeHead(held.status, headers: held.headers, for: held.request, close: false, context: context)
        return true
    }

    /// HTTP/2: a streamed response whose body ended empty and without trailers, sent as one HEADERS frame with
    /// END_STREAM (below NIO's HTTP/1-style codec, which would add an empty DATA frame to end the stream).
    private func endWithHead(_ status: HTTPResponseStatus, headers: HTTPHeaders, context: ChannelHandlerContext) {
        guard let frames = try? context.pipeline.syncOperations.context(handlerType: HTTP2FramePayloadToHTTP1ServerCodec.self)
        else {
            context.close(promise: nil)
            return
        }
        let block = ResponseHeaders.http2Block(status: status, headers: headers)
        record?.answered(status: status, headers: headers)
        finishRecord()
        let written = frames.writeAndFlush(NIOAny(HTTP2Frame.FramePayload.headers(.init(headers: block, endStream: true))))
        guard requestEnded else {
            abandonRequestBody()
            resetIfRequestUnfinished(after: written, context: context)
            return
        }
        if case .streaming = state { state = .responding }
        if case .responding = state { state = .idle }
    }

    /// HTTP/2: the answer ends before the request body has: the origin gets no more of it, and the stream closes.
    private func abandonRequestBody() {
        requestBody?.fail(BodyPipe.Broken(description: "answered before the request body ended"))
        requestBody = nil
        state = .closing
    }

    private func finishStreamed(keepAlive: Bool, trailers: HTTPHeaders?, context: ChannelHandlerContext) {
        if isHTTP2, !requestEnded {
            abandonRequestBody()
            finishEarlyAnswer(context: context, trailers: trailers)
            return
        }
        if case .streaming = state { state = .responding }
        finish(keepAlive: keepAlive, trailers: trailers, context: context)
    }

    // MARK: serving

    private func serve(_ head: HTTPRequestHead, bodyBytes: Int, context: ChannelHandlerContext) {
        var values = Self.headerValues(head.headers)
        if let authority = Self.absoluteFormAuthority(head.uri) { values.host = authority }
        let dispatch = dispatcher.dispatch(
            method: head.method, target: Self.originForm(head.uri), headers: values, bodyBytes: bodyBytes, client: client,
            on: context.eventLoop
        )
        record?.note(loop.observer.takeDispatch())
        record?.bodyBytesIn = bodyBytes
        switch dispatch {
        case .ready(let reply):
            send(reply, for: head, context: context)
        case .pending(let future):
            future.assumeIsolated().whenComplete { result in
                self.send((try? result.get()) ?? .response(.text(.badGateway, "backend failed\n")), for: head, context: context)
            }
        }
    }

    // MARK: writing responses

    private func send(_ reply: Reply, for head: HTTPRequestHead, context: ChannelHandlerContext) {
        if case .file(let file) = reply {
            sendFile(file, for: head, context: context)
            return
        }
        if case .stream(let streamed) = reply {
            sendStream(streamed, for: head, context: context)
            return
        }
        if case .upgrade(let upgrade) = reply {
            switchProtocols(upgrade, for: head, context: context)
            return
        }
        if case .streaming = state {
            // An answer to a streamed request that did not come from the origin (401, 429, 502 …): the origin takes
            // no body, and an HTTP/1.1 connection ends after it unless the body has all arrived.
            responseStarted = true
            requestBody?.fail(BodyPipe.Broken(description: "answered without the origin"))
            requestBody = nil
            if !requestEnded, case .response(let response) = reply {
                reject(head, with: response, context: context)
                return
            }
            state = .responding
        }
        let now = NIODeadline.now()
        var headers: HTTPHeaders
        let status: HTTPResponseStatus
        let body: ByteBuffer
        switch reply {
        case .cached(let entry, _):
            (status, headers, body) = (entry.status, entry.headers, entry.body)
        case .response(let response):
            (status, headers, body) = (response.status, response.headers, response.body)
            if ResponseHeaders.hasContentLength(status) { headers.add(name: "content-length", value: String(body.readableBytes)) }
        case .file, .stream, .upgrade:
            return
        }
        ResponseHeaders.perRequest(for: reply, now: now, server: serverName, date: loop.date.current, site: record?.site, tls: isTLS) { name, value in
            headers.add(name: name, value: value)
        }
        write(status, headers: headers, body: body, for: head, context: context, close: false)
    }

    /// Answers with an error and closes the connection (HTTP/1.1) or stream (HTTP/2).
    ///
    /// The answer to an HTTP/1.1 `CONNECT` is encoded here and written below NIO's encoder, which would drop
    /// its body (see ``HTTP1ConnectionEvent/finalResponse(_:)``); the fast path writes it and closes.
    private func reject(_ head: HTTPRequestHead, _ status: HTTPResponseStatus, _ text: String, context: ChannelHandlerContext) {
        reject(head, with: EdgeResponse.text(status, text), context: context)
    }

    private func reject(_ head: HTTPRequestHead, with response: EdgeResponse, context: ChannelHandlerContext) {
        state = .closing
        stopBodyRateTimer()
        let status = response.status
        var headers = response.headers
        headers.add(name: "content-length", value: String(response.body.readableBytes))
        ResponseHeaders.perRequest(for: .response(response), now: .now(), server: serverName, date: loop.date.current, site: record?.site, tls: isTLS) { name, value in
            headers.add(name: name, value: value)
        }
        guard head.method == .CONNECT, !isHTTP2 else {
            write(status, headers: headers, body: response.body, for: head, context: context, close: true)
            return
        }
        headers.add(name: "connection", value: "close")
        var bytes = ResponseHeaders.serializeHead(status: status, headers: headers)
        bytes.writeStaticString("\r\n")
        bytes.writeImmutableBuffer(response.body)
        record?.status = Int(status.code)
        record?.bodyBytesOut = response.body.readableBytes
        finishRecord()
        context.triggerUserOutboundEvent(HTTP1ConnectionEvent.finalResponse(bytes), promise: nil)
    }

    private func write(
        _ status: HTTPResponseStatus, headers: HTTPHeaders, body: ByteBuffer, for request: HTTPRequestHead,
        context: ChannelHandlerContext, close forceClose: Bool
    ) {
        guard isActive else { return }
        let keepAlive = writeHead(status, headers: headers, for: request, close: forceClose, context: context)
        if request.method != .HEAD, body.readableBytes > 0 {
            record?.bodyBytesOut += body.readableBytes
            context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        }
        if isHTTP2, forceClose {
            finishEarlyAnswer(context: context)
        } else {
            finish(keepAlive: keepAlive, context: context)
        }
    }

    /// HTTP/2: ends an answer given before the request was complete (an error such as 413 or 408), then, if the
    /// client has still not ended its request, resets the stream with NO_ERROR (RFC 9113 §8.1) so that it
    /// stops sending the body and the stream closes.
    private func finishEarlyAnswer(context: ChannelHandlerContext, trailers: HTTPHeaders? = nil) {
        finishRecord()
        resetIfRequestUnfinished(after: context.writeAndFlush(wrapOutboundOut(.end(trailers))), context: context)
    }

    /// HTTP/2: once `written` (the answer's end) has gone out, resets the stream with NO_ERROR if the client has
    /// still not ended its request.
    private func resetIfRequestUnfinished(after written: EventLoopFuture<Void>, context: ChannelHandlerContext) {
        written.assumeIsolated().whenComplete { _ in
            guard !self.requestEnded,
                let frames = try? context.pipeline.syncOperations.context(handlerType: HTTP2FramePayloadToHTTP1ServerCodec.self)
            else { return }
            frames.writeAndFlush(NIOAny(HTTP2Frame.FramePayload.rstStream(.noError)), promise: nil)
        }
    }

    /// Writes the response head with the connection headers HTTP/1.1 needs; returns whether the connection
    /// stays open afterwards.
    /// `closeDelimited`: the body has no length and ends with the connection; NIO's encoder then adds no chunked
    /// framing, which it does for every HTTP/1.1 head without `Content-Length`.
    private func writeHead(
        _ status: HTTPResponseStatus, headers: HTTPHeaders, for request: HTTPRequestHead, close forceClose: Bool,
        closeDelimited: Bool = false, context: ChannelHandlerContext
    ) -> Bool {
        let keepAlive = isHTTP2 || (request.isKeepAlive && !forceClose && !inputClosed && !Self.asksUpgrade(request.headers))
        var headers = headers
        if !isHTTP2 {
            if !keepAlive {
                headers.add(name: "connection", value: "close")
            } else if request.version.minor == 0 {
                headers.add(name: "connection", value: "keep-alive")
            }
        }
        let version = isHTTP2 ? request.version : HTTPVersion(major: 1, minor: closeDelimited ? 0 : 1)
        record?.answered(status: status, headers: headers)
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: version, status: status, headers: headers))), promise: nil)
        return keepAlive
    }

    /// Ends the response; closes the connection (HTTP/1.1) or stream (HTTP/2) when it is not kept alive.
    private func finish(keepAlive: Bool, trailers: HTTPHeaders? = nil, context: ChannelHandlerContext) {
        finishRecord()
        if case .responding = state { state = .idle }
        if !isHTTP2 { context.triggerUserOutboundEvent(HTTP1ConnectionEvent.responseFinished, promise: nil) }
        if keepAlive {
            if isHTTP2 {
                context.writeAndFlush(wrapOutboundOut(.end(trailers)), promise: nil)
            } else {
                lastResponseEnd = context.writeAndFlush(wrapOutboundOut(.end(trailers)))
            }
        } else {
            context.writeAndFlush(wrapOutboundOut(.end(trailers))).assumeIsolated().whenComplete { _ in
                context.close(promise: nil)
            }
        }
    }

    /// Closes a half-closed HTTP/1.1 connection once the previous response has been written out.
    private func closeAfterLastResponse(context: ChannelHandlerContext) {
        guard let lastResponseEnd else {
            context.close(promise: nil)
            return
        }
        lastResponseEnd.assumeIsolated().whenComplete { _ in context.close(promise: nil) }
    }

    /// Streams a file in chunks, each written before the next is read (backpressure: a slow client holds one
    /// chunk, not the file). A file that ends early (it shrank) ends the connection, since the promised
    /// `Content-Length` cannot be met.
    private func sendFile(_ file: FileReply, for request: HTTPRequestHead, context: ChannelHandlerContext) {
        guard isActive else {
            try? file.handle?.close()
            return
        }
        var headers = file.headers
        ResponseHeaders.perRequest(for: .file(file), now: .now(), server: serverName, date: loop.date.current, site: record?.site, tls: isTLS) { name, value in
            headers.add(name: name, value: value)
        }
        let keepAlive = writeHead(file.status, headers: headers, for: request, close: false, context: context)
        if let body = file.body, request.method != .HEAD {
            record?.bodyBytesOut += body.readableBytes
            context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        }
        guard let handle = file.handle, request.method != .HEAD else {
            try? file.handle?.close()
            finish(keepAlive: keepAlive, context: context)
            return
        }
        context.flush()
        FileStreaming.stream(
            handle, range: file.range, allocator: context.channel.allocator, on: context.eventLoop,
            // HTTP/2: the connection's fast path resets a stream that sends no DATA for send_seconds (it sees every
            // frame); a stream whose chunk only waits for a slow reader's window goes on.
            stallTimeout: timeouts.send, stalled: isHTTP2 ? { false } : SendProgress.closingWhenStalled(context, metrics: loop.observer.metrics)
        ) { chunk in
            self.record?.bodyBytesOut += chunk.readableBytes
            return context.writeAndFlush(self.wrapOutboundOut(.body(.byteBuffer(chunk))))
        }.assumeIsolated().whenComplete { result in
            try? handle.close()
            self.finishRecord()
            if case .success(true) = result {
                self.finish(keepAlive: keepAlive, context: context)
            } else {
                context.close(promise: nil)
            }
        }
    }

    // MARK: protocol switch

    /// Answers a protocol switch (a WebSocket handshake): `101` on HTTP/1.1, `200` on an HTTP/2 stream; then takes
    /// the HTTP handlers out of the channel so that it carries the new protocol's bytes, and lets the origin add
    /// its handlers (``ProtocolUpgrade/start``).
    private func switchProtocols(_ upgrade: ProtocolUpgrade, for request: HTTPRequestHead, context: ChannelHandlerContext) {
        guard isActive else { return upgrade.abandoned() }
        if !isHTTP2, !requestEnded {
            // The origin answered at the head; NIO's parser has the request's end still to deliver, and only after
            // it may the codec leave the pipeline (NIO's own upgrade handler waits for it too).
            pendingUpgrade = (upgrade, request)
            return
        }
        stopBodyRateTimer()
        requestBody = nil
        pendingCancellation = nil
        responseStarted = true
        state = .closing
        var headers = upgrade.headers
        ResponseHeaders.perRequest(for: .upgrade(upgrade), now: .now(), server: serverName, date: loop.date.current, site: record?.site, tls: isTLS) { name, value in
            headers.add(name: name, value: value)
        }
        let status: HTTPResponseStatus = isHTTP2 ? .ok : .switchingProtocols
        let version = isHTTP2 ? request.version : .http1_1
        record?.status = Int(status.code)
        finishRecord()
        context.writeAndFlush(wrapOutboundOut(.head(HTTPResponseHead(version: version, status: status, headers: headers))), promise: nil)
        let channel = context.channel
        let pipeline = context.pipeline.syncOperations
        do {
            let position: ChannelPipeline.SynchronousOperations.Position
            if isHTTP2 {
                // NIOHTTP2's stream codec cannot be removed: the new handlers go in front of it (nearer the
                // stream), and nothing reaches it any more (they consume every read; writes start before it).
                let codec = try pipeline.handler(type: HTTP2FramePayloadToHTTP1ServerCodec.self)
                try pipeline.addHandler(HTTP2StreamBytesHandler(), position: .before(codec))
                position = .before(codec)
            } else {
                // Everything HTTP/1.1 put in the pipeline goes: the fast path (and its timers), NIO's codec (a
                // client's bytes after the handshake are its first frames, which RFC 6455 §4.1 lets it send only
                // after the answer), the pipelining and error handlers.
                for type in [
                    HTTP1FastPathHandler.self, HTTPResponseEncoder.self, ByteToMessageHandler<HTTPRequestDecoder>.self,
                    HTTPServerPipelineHandler.self, HTTP1ProtocolErrorHandler.self, CloseOnErrorHandler.self,
                ] as [any ChannelHandler.Type] {
                    if let other = try? pipeline.context(handlerType: type) { pipeline.removeHandler(context: other, promise: nil) }
                }
                position = .last
            }
            pipeline.removeHandler(context: context, promise: nil)
            try upgrade.start(channel, pipeline, position)
        } catch {
            upgrade.abandoned()
            channel.close(promise: nil)
            return
        }
        channel.read()
    }

    /// Counts and logs the request being answered, once.
    private func finishRecord() {
        loop.observer.finish(&record)
    }

    /// Whether an HTTP/1.1 request asks to switch protocols (`Upgrade` with `Connection: upgrade`). NIO's parser
    /// (llhttp) stops at the end of such a request, whatever the answer, so a connection whose request was not
    /// upgraded closes after its answer rather than wait for requests it can no longer read.
    static func asksUpgrade(_ headers: HTTPHeaders) -> Bool {
        guard headers.contains(name: "upgrade") else { return false }
        return listElements(headers["connection"]).contains { $0.equalsIgnoringASCIICase("upgrade") }
    }

    /// The host a request names: its absolute-form target's authority (RFC 9112 §3.2.2), else `Host` (over
    /// HTTP/2, NIO's stream codec turns `:authority` into `Host`).
    static func requestHost(_ head: HTTPRequestHead) -> Substring {
        if let authority = absoluteFormAuthority(head.uri) { return authority }
        return head.headers.first(name: "host").map { $0[...] } ?? ""
    }

    /// The header values the dispatcher needs, in one pass over the fields (repeated fields are joined).
    static func headerValues(_ fields: HTTPHeaders) -> RequestHeaderValues {
        var values = RequestHeaderValues()
        var forwardedFor: String?
        for (name, value) in fields where !values.conditional.record(name: name, value: value) {
            switch name.utf8.count {
            case 4 where name.equalsIgnoringASCIICase("host"):
                if values.host.isEmpty { values.host = value[...] }
            case 13 where name.equalsIgnoringASCIICase("authorization"):
                values.authorization = values.authorization ?? value[...]
            case 15 where name.equalsIgnoringASCIICase("x-forwarded-for"):
                forwardedFor = forwardedFor.map { $0 + "," + value } ?? value
            default:
                break
            }
        }
        values.forwardedFor = forwardedFor?[...]
        return values
    }

    /// The path-and-query part of a request target (absolute-form targets lose their scheme and authority;
    /// `http://host?q` becomes `/?q`).
    static func originForm(_ uri: String) -> Substring {
        guard let (_, pathAndQuery) = absoluteFormParts(uri) else { return uri[...] }
        return pathAndQuery.first == "/" ? pathAndQuery : Substring("/" + pathAndQuery)
    }

    /// The authority of an absolute-form request target (`http://a.example:8080/x` → `a.example:8080`), `nil`
    /// for the other forms. RFC 9112 §3.2.2: it, not `Host`, names the request's host — for routing and the
    /// cache key alike.
    static func absoluteFormAuthority(_ uri: String) -> Substring? {
        absoluteFormParts(uri)?.authority
    }

    /// An absolute-form target split after its scheme: the authority, and what follows it (from the `/` or `?`
    /// on; empty when nothing does).
    private static func absoluteFormParts(_ uri: String) -> (authority: Substring, pathAndQuery: Substring)? {
        // By bytes: the separators are ASCII, and no other character may join them.
        let bytes = uri.utf8
        guard bytes.first != UInt8(ascii: "/"), let start = RequestTargetRules.authorityStart(in: uri) else { return nil }
        let end = bytes[start...].firstIndex { $0 == UInt8(ascii: "/") || $0 == UInt8(ascii: "?") } ?? bytes.endIndex
        return (uri[start..<end], uri[end...])
    }
}
