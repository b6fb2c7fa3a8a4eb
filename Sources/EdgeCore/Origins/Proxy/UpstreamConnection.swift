import NIOCore
import NIOHTTP1

/// Why an exchange with an upstream server failed, and what may be done about it.
struct UpstreamFailure: Error, CustomStringConvertible {
    enum Cause: Equatable {
        /// The connection could not be made (refused, unreachable, TLS handshake, connect timeout).
        case connect(String)
        /// The connection closed or was reset before the response was complete.
        case closed
        /// No response head within `first_byte_timeout_seconds`.
        case firstByteTimeout
        /// No body bytes within `between_bytes_timeout_seconds`, or the whole exchange over `total_timeout_seconds`.
        case stalled
        /// The response could not be parsed (not HTTP, bad framing, an unexpected 101).
        case malformed(String)
        /// The client went away.
        case cancelled
    }

    var cause: Cause
    /// Whether the upstream sent a response head (the answer has begun: nothing may be retried).
    var responseStarted = false
    /// Whether any byte of the request body went upstream (a non-idempotent request may not be sent again).
    var bodySent = false

    /// Whether another server may be tried: nothing of a response arrived, and for a refused connection nothing
    /// at all was sent.
    var isRetryable: Bool {
        guard !responseStarted else { return false }
        switch cause {
        case .connect, .closed: return true
        default: return false
        }
    }

    /// The status a client gets when the response has not begun.
    var status: HTTPResponseStatus {
        switch cause {
        case .firstByteTimeout, .stalled: return .gatewayTimeout
        default: return .badGateway
        }
    }

    var description: String {
        switch cause {
        case .connect(let why): return "connect failed: \(why)"
        case .closed: return responseStarted ? "connection closed mid-response" : "connection closed before a response"
        case .firstByteTimeout: return "no response within first_byte_timeout_seconds"
        case .stalled: return "response stalled (between_bytes or total timeout)"
        case .malformed(let why): return "malformed response: \(why)"
        case .cancelled: return "client went away"
        }
    }
}

/// A request as it goes to an upstream server: rebuilt by ``ProxyResponder`` from parsed fields.
struct UpstreamRequest {
    var method: HTTPMethod
    /// The target in origin form.
    var target: String
    /// Every field but `Host`, framing (`Content-Length` or `Transfer-Encoding: chunked`) included.
    var fields: FieldBlock
    /// `nil` when the route's edits removed it.
    var host: String?
    /// Whether the body (if any) is sent chunked: it has no declared length.
    var chunked: Bool
    /// The `Via` element added to the response's fields.
    var via: String
}

/// Who is told how an upstream exchange went (``UpstreamExchangeHandler/start(_:body:timeouts:delegate:)``).
protocol UpstreamExchangeDelegate: AnyObject {
    /// The exchange is over: `nil` when the response was complete (the connection is then reusable if the
    /// handler says so), else the failure. Called once; for a failure before the response head, before
    /// ``upstreamResponded(_:)``, so that the attempt is accounted for before another may begin.
    func upstreamFinished(_ failure: UpstreamFailure?)
    /// The response head (its body follows through the ``StreamedResponse``'s pipe), or the failure that came
    /// before it. Called once.
    func upstreamResponded(_ result: Result<StreamedResponse, UpstreamFailure>)
}

/// One exchange at a time with an upstream server, over an HTTP/1.1 connection (``UpstreamHTTP1Handler``) or an
/// HTTP/2 stream (``UpstreamStreamHandler``): it writes the request (the body from a ``BodyPipe``, as fast as the
/// upstream takes it), and hands the response head to the caller and the body to a ``BodyPipe``, reading the
/// upstream only as fast as the client takes the body (`autoRead` is off on upstream channels). A connection goes
/// back to its pool only after a complete exchange whose response allowed keep-alive; after an error, an unread
/// body or `Connection: close` it is closed.
///
/// This class holds what both have in common (timeouts, backpressure, failures); the subclasses write and read
/// their wire format.
class UpstreamExchangeHandler {
    /// The timeouts of an exchange.
    struct Timeouts {
        var firstByte: TimeAmount
        var betweenBytes: TimeAmount
        var total: TimeAmount
    }

    final class Exchange {
        let request: UpstreamRequest
        let body: BodyPipe?
        /// Told of the response head and of the end; `nil` once told of both.
        var delegate: (any UpstreamExchangeDelegate)?
        let timeouts: Timeouts
        var responseBody: BodyPipe?
        /// Body parts of the current read batch not yet passed on, small ones merged (``coalescedBytes``).
        var pendingBody: ByteBuffer?
        var headReceived = false
        var requestSent = false
        var bodySent = false
        var responseEnded = false
        var keepAlive = true
        /// When the exchange fails unless the upstream sends something: the first-byte deadline while the
        /// response head is awaited, the between-bytes one while a read is outstanding; `nil` while nothing is
        /// awaited (the request is still being sent, or the client has not taken the body).
        var deadline: NIODeadline?
        var totalTimer: Scheduled<Void>?
        /// A read is wanted but paused because the client has not taken the body.
        var paused = false
        /// The response head, received but not yet handed to the delegate: it waits for the end of the read batch
        /// (or of the response, or a failure), so that a response that arrives whole in one read reaches the
        /// client with its body already in the pipe — one write, and no callback waiting for each part.
        var unannounced: StreamedResponse?

        init(request: UpstreamRequest, body: BodyPipe?, delegate: any UpstreamExchangeDelegate, timeouts: Timeouts) {
            self.request = request
            self.body = body
            self.delegate = delegate
            self.timeouts = timeouts
        }

        func cancelTimers() {
            deadline = nil
            totalTimer?.cancel()
            totalTimer = nil
        }
    }

    fileprivate var context: ChannelHandlerContext?
    fileprivate var exchange: Exchange?
    /// One timer per connection for the exchanges' deadlines (``Exchange/deadline``), re-armed when it fires
    /// early rather than scheduled and cancelled at every exchange and read.
    private var watchdog: Scheduled<Void>?
    private var watchdogAt = NIODeadline.distantFuture
    /// Whether the connection can carry another exchange.
    fileprivate(set) var isReusable = true

    // MARK: what the subclasses provide

    /// Writes the request head (and, for a body-less request, its end).
    fileprivate func writeHead(_ request: UpstreamRequest, hasBody: Bool, context: ChannelHandlerContext) {}
    /// Writes and flushes one part of the request body.
    fileprivate func writeBody(_ chunk: ByteBuffer, chunked: Bool, context: ChannelHandlerContext) -> EventLoopFuture<Void> {
        context.eventLoop.makeSucceededFuture(())
    }
    /// Writes and flushes the end of the request body.
    fileprivate func writeEnd(_ trailers: HTTPHeaders?, chunked: Bool, context: ChannelHandlerContext) {}
    /// Starts reading a new response, whose fields get `via` added.
    fileprivate func beginResponse(isHEAD: Bool, via: String) {}

    // MARK: the exchange

    fileprivate func added(context: ChannelHandlerContext) {
        self.context = context
    }

    fileprivate func removed() {
        context = nil
        watchdog?.cancel()
        watchdog = nil
    }

    /// Sets the exchange's deadline and makes sure the watchdog fires by then.
    private func watch(_ exchange: Exchange, for timeout: TimeAmount, context: ChannelHandlerContext) {
        let deadline = NIODeadline.now() + timeout
        exchange.deadline = deadline
        guard deadline < watchdogAt else { return }
        watchdog?.cancel()
        watchdogAt = deadline
        watchdog = context.eventLoop.assumeIsolated().scheduleTask(deadline: deadline) { [self] in
            watchdog = nil
            watchdogAt = .distantFuture
            guard let exchange = self.exchange, let deadline = exchange.deadline else { return }
            guard NIODeadline.now() >= deadline else {
                watch(exchange, for: deadline - .now(), context: context)
                return
            }
            if exchange.headReceived {
                fail(UpstreamFailure(cause: .stalled, responseStarted: true), context: context)
            } else {
                fail(UpstreamFailure(cause: .firstByteTimeout, bodySent: exchange.bodySent), context: context)
            }
        }
    }

    /// Whether the connection is open and idle.
    var isIdle: Bool { exchange == nil && isReusable && context?.channel.isActive == true }

    /// Sends `request` (and `body`) and tells `delegate` of the response head and of the end — a delegate rather
    /// than a future or closures, which would cost allocations per exchange.
    func start(_ request: UpstreamRequest, body: BodyPipe?, timeouts: Timeouts, delegate: any UpstreamExchangeDelegate) {
        guard let context, isIdle else {
            delegate.upstreamFinished(UpstreamFailure(cause: .closed))
            delegate.upstreamResponded(.failure(UpstreamFailure(cause: .closed)))
            return
        }
        let exchange = Exchange(request: request, body: body, delegate: delegate, timeouts: timeouts)
        self.exchange = exchange
        beginResponse(isHEAD: request.method == .HEAD, via: request.via)
        if timeouts.total > .zero {
            exchange.totalTimer = context.eventLoop.assumeIsolated().scheduleTask(in: timeouts.total) { [self] in
                fail(UpstreamFailure(cause: .stalled), context: context)
            }
        }
        writeHead(request, hasBody: body != nil, context: context)
        if let body {
            body.onCancel = { [self] _ in
                // The client's body broke off (it left, or went over a limit): the exchange cannot complete.
                fail(UpstreamFailure(cause: .cancelled, bodySent: true), context: context)
            }
            pumpRequestBody(body, exchange: exchange, context: context)
        } else {
            requestSent(exchange, context: context)
        }
    }

    /// The client went away before the response head arrived: the exchange ends now and the connection closes
    /// (the upstream may be partway through the request).
    func cancel() {
        guard let context, let exchange, !exchange.headReceived else { return }
        fail(UpstreamFailure(cause: .cancelled, bodySent: exchange.bodySent), context: context)
    }

    private func pumpRequestBody(_ body: BodyPipe, exchange: Exchange, context: ChannelHandlerContext) {
        body.next().assumeIsolated().whenComplete { [self] result in
            guard self.exchange === exchange else { return }
            switch result {
            case .success(.chunk(let chunk)):
                exchange.bodySent = true
                // An upstream that takes none of the body and answers nothing must not hold the exchange for ever:
                // while a write waits, first_byte_timeout_seconds runs (the answer has not begun).
                if !exchange.headReceived { watch(exchange, for: exchange.timeouts.firstByte, context: context) }
                writeBody(chunk, chunked: exchange.request.chunked, context: context).assumeIsolated().whenComplete { written in
                    guard self.exchange === exchange else { return }
                    if !exchange.headReceived { exchange.deadline = nil }
                    if case .failure = written {
                        self.fail(UpstreamFailure(cause: .closed, bodySent: true), context: context)
                    } else {
                        self.pumpRequestBody(body, exchange: exchange, context: context)
                    }
                }
            case .success(.end(let trailers)):
                writeEnd(trailers, chunked: exchange.request.chunked, context: context)
                requestSent(exchange, context: context)
            case .failure:
                // The client's body broke off: the upstream must not take a truncated body as complete.
                fail(UpstreamFailure(cause: .cancelled, bodySent: exchange.bodySent), context: context)
            }
        }
    }

    private func requestSent(_ exchange: Exchange, context: ChannelHandlerContext) {
        exchange.requestSent = true
        guard !exchange.headReceived else { return }
        watch(exchange, for: exchange.timeouts.firstByte, context: context)
        requestRead(context: context)
    }

    /// Asks the socket for more, with the between-bytes timer running while the read is outstanding.
    private func requestRead(context: ChannelHandlerContext) {
        guard let exchange else { return }
        if exchange.responseBody != nil, exchange.deadline == nil {
            watch(exchange, for: exchange.timeouts.betweenBytes, context: context)
        }
        context.read()
    }

    /// Bytes or a part from an idle connection: it cannot be trusted for another exchange.
    fileprivate func unexpectedInput(context: ChannelHandlerContext) {
        isReusable = false
        context.close(promise: nil)
    }

    /// The response's final head: kept until ``announce(_:context:)`` hands it on.
    fileprivate func receivedHead(
        status: HTTPResponseStatus, fields: FieldBlock, date: String? = nil, hasBody: Bool, context: ChannelHandlerContext
    ) {
        guard let exchange else { return }
        exchange.deadline = nil
        let pipe = hasBody ? BodyPipe(eventLoop: context.eventLoop) : nil
        exchange.responseBody = pipe
        exchange.headReceived = true
        exchange.unannounced = StreamedResponse(status: status, headers: fields, body: pipe, date: date)
    }

    /// Hands the delegate the response head ``receivedHead(status:fields:date:hasBody:context:)`` kept, with
    /// whatever of the body the read batch brought already in its pipe. A body still to come gets the pipe's
    /// producer side now: demand resumes reading, a consumer that gives up ends the exchange.
    private func announce(_ exchange: Exchange, context: ChannelHandlerContext) {
        guard let response = exchange.unannounced else { return }
        exchange.unannounced = nil
        if let body = response.body, !body.isFinished {
            body.onDemand = { [self] in
                guard self.exchange === exchange, exchange.paused else { return }
                exchange.paused = false
                requestRead(context: context)
            }
            body.onCancel = { [self] _ in
                fail(UpstreamFailure(cause: .cancelled, responseStarted: true), context: context)
            }
        }
        exchange.delegate?.upstreamResponded(.success(response))
    }

    fileprivate func receivedBody(_ chunk: ByteBuffer) {
        guard let exchange else { return }
        exchange.deadline = nil
        guard exchange.responseBody != nil else { return }
        // Parts are passed on at the end of the read batch, small ones merged: an upstream that sends a body in
        // tiny chunks (one byte each, say) must not cost a write, a flush or an HTTP/2 frame per chunk towards the
        // client.
        if var pending = exchange.pendingBody, pending.readableBytes + chunk.readableBytes <= Self.coalescedBytes {
            exchange.pendingBody = nil  // so that the write below does not copy the buffer
            pending.writeImmutableBuffer(chunk)
            exchange.pendingBody = pending
        } else {
            passOnPendingBody(exchange)
            exchange.pendingBody = chunk
        }
    }

    /// The response is complete. `keepAlive`: whether the response lets the connection carry another exchange.
    fileprivate func receivedEnd(trailers: HTTPHeaders?, keepAlive: Bool, context: ChannelHandlerContext) {
        guard let exchange else { return }
        exchange.responseEnded = true
        exchange.deadline = nil
        exchange.keepAlive = keepAlive
        passOnPendingBody(exchange)
        exchange.responseBody?.finish(trailers: trailers.map(Self.forwardable))
        announce(exchange, context: context)
        complete(exchange, context: context)
    }

    /// Fields a trailer section must not carry towards the client (RFC 9110 §6.5.1, §7.6.1): hop-by-hop fields,
    /// framing, routing, authentication and fields about the content or its handling, which a client must not take
    /// from a trailer.
    private static let notInTrailers: Set<String> = [
        "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te", "trailer", "host",
        "content-length", "content-encoding", "content-type", "content-range", "authorization", "proxy-authenticate",
        "proxy-authorization", "www-authenticate", "set-cookie", "cookie", "cache-control", "expires", "age", "date",
        "location", "retry-after", "vary", "expect", "max-forwards", "range", "if-match", "if-none-match",
        "if-modified-since", "if-unmodified-since", "if-range",
    ]

    /// `trailers` without the fields ``notInTrailers`` names.
    static func forwardable(_ trailers: HTTPHeaders) -> HTTPHeaders {
        guard trailers.contains(where: { notInTrailers.contains($0.name.lowercased()) }) else { return trailers }
        var kept = HTTPHeaders()
        for (name, value) in trailers where !notInTrailers.contains(name.lowercased()) { kept.add(name: name, value: value) }
        return kept
    }

    /// Up to this many bytes of a read batch's body parts are merged into one.
    static let coalescedBytes = 16 * 1024

    /// Writes the read batch's pending body bytes to the response body pipe.
    private func passOnPendingBody(_ exchange: Exchange) {
        guard let pending = exchange.pendingBody else { return }
        exchange.pendingBody = nil
        if let pipe = exchange.responseBody, !pipe.write(pending) { exchange.paused = true }
    }

    fileprivate func readBatchEnded(context: ChannelHandlerContext) {
        guard let exchange, !exchange.responseEnded else { return }
        passOnPendingBody(exchange)
        announce(exchange, context: context)
        guard self.exchange === exchange else { return }  // the client gave up at once
        exchange.responseBody?.batchEnded()
        // Read on while the response head is awaited or the client takes the body.
        if !exchange.paused { requestRead(context: context) }
    }

    /// The response is complete; the connection is reused if the exchange left it clean.
    private func complete(_ exchange: Exchange, context: ChannelHandlerContext) {
        exchange.cancelTimers()
        guard exchange.requestSent else {
            // The upstream answered before taking the whole body: the connection holds an unsent tail.
            isReusable = false
            self.exchange = nil
            exchange.body?.cancel(UpstreamFailure(cause: .cancelled))
            context.close(promise: nil)
            finish(exchange, nil)
            return
        }
        self.exchange = nil
        if !exchange.keepAlive || !isReusable {
            isReusable = false
            context.close(promise: nil)
        } else {
            // Reading on while idle keeps the socket's read interest, which otherwise NIO drops now and the next
            // exchange adds back (an epoll_ctl each); it also notices at once an upstream that closes or sends
            // bytes nobody asked for.
            context.read()
        }
        finish(exchange, nil)
    }

    /// Tells the delegate the exchange is over, and lets it go.
    private func finish(_ exchange: Exchange, _ failure: UpstreamFailure?) {
        let delegate = exchange.delegate
        exchange.delegate = nil
        delegate?.upstreamFinished(failure)
    }

    fileprivate func fail(_ failure: UpstreamFailure, context: ChannelHandlerContext) {
        guard let exchange else { return }
        self.exchange = nil
        isReusable = false
        exchange.cancelTimers()
        var failure = failure
        failure.bodySent = failure.bodySent || exchange.bodySent
        if failure.cause != .cancelled { exchange.body?.cancel(failure) }
        context.close(promise: nil)
        if exchange.headReceived {
            passOnPendingBody(exchange)  // what arrived is the client's, ahead of the break
            announce(exchange, context: context)
        }
        let delegate = exchange.delegate
        exchange.delegate = nil
        if exchange.headReceived {
            failure.responseStarted = true
            exchange.responseBody?.fail(failure)
            delegate?.upstreamFinished(failure)
        } else {
            // Accounted for first, then answered (or retried on another connection).
            delegate?.upstreamFinished(failure)
            delegate?.upstreamResponded(.failure(failure))
        }
    }

    fileprivate func inactive(context: ChannelHandlerContext) {
        isReusable = false
        fail(UpstreamFailure(cause: .closed), context: context)
    }

    fileprivate func caught(_ error: any Error, context: ChannelHandlerContext) {
        isReusable = false
        if error is HTTPParserError || error is UpstreamParseError {
            fail(UpstreamFailure(cause: .malformed("\(error)")), context: context)
        } else {
            fail(UpstreamFailure(cause: .closed), context: context)
        }
        context.close(promise: nil)
    }
}

/// An exchange over an HTTP/1.1 connection, on bytes: the request head written from the ``UpstreamRequest``'s
/// field block, the response parsed in place by ``UpstreamResponseParser`` — no HTTP codec handlers in the
/// upstream channel's pipeline.
final class UpstreamHTTP1Handler: UpstreamExchangeHandler, ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private var parser = UpstreamResponseParser()

    func handlerAdded(context: ChannelHandlerContext) { added(context: context) }
    func handlerRemoved(context: ChannelHandlerContext) { removed() }

    override fileprivate func beginResponse(isHEAD: Bool, via: String) {
        parser.begin(isHEAD: isHEAD, via: via)
    }

    override fileprivate func writeHead(_ request: UpstreamRequest, hasBody: Bool, context: ChannelHandlerContext) {
        var head = context.channel.allocator.buffer(
            capacity: request.target.utf8.count + (request.host?.utf8.count ?? 0) + request.fields.bytes.readableBytes + 40
        )
        head.writeString(request.method.wireName)
        head.writeStaticString(" ")
        head.writeString(request.target)
        head.writeStaticString(" HTTP/1.1\r\n")
        if let host = request.host {
            head.writeStaticString("host: ")
            head.writeString(host)
            head.writeStaticString("\r\n")
        }
        head.writeImmutableBuffer(request.fields.bytes)
        head.writeStaticString("\r\n")
        context.writeAndFlush(wrapOutboundOut(head), promise: nil)
    }

    override fileprivate func writeBody(_ chunk: ByteBuffer, chunked: Bool, context: ChannelHandlerContext) -> EventLoopFuture<Void> {
        guard chunked else { return context.writeAndFlush(wrapOutboundOut(chunk)) }
        var framed = context.channel.allocator.buffer(capacity: chunk.readableBytes + 20)
        framed.writeString(String(chunk.readableBytes, radix: 16))
        framed.writeStaticString("\r\n")
        framed.writeImmutableBuffer(chunk)
        framed.writeStaticString("\r\n")
        return context.writeAndFlush(wrapOutboundOut(framed))
    }

    override fileprivate func writeEnd(_ trailers: HTTPHeaders?, chunked: Bool, context: ChannelHandlerContext) {
        guard chunked else { return }
        var last = context.channel.allocator.buffer(capacity: 64)
        last.writeStaticString("0\r\n")
        if let trailers { ResponseHeaders.writeFields(trailers, to: &last) }
        last.writeStaticString("\r\n")
        context.writeAndFlush(wrapOutboundOut(last), promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard exchange != nil, !parser.isComplete else {
            unexpectedInput(context: context)
            return
        }
        parser.feed(unwrapInboundIn(data))
        do {
            while exchange != nil, let event = try parser.next() {
                switch event {
                case .head(let status, let fields, let date, let hasBody):
                    receivedHead(status: status, fields: fields, date: date, hasBody: hasBody, context: context)
                case .body(let chunk):
                    receivedBody(chunk)
                case .end(let trailers):
                    // Bytes after a complete response were not asked for: the connection cannot be trusted again.
                    if parser.hasUnreadBytes { isReusable = false }
                    receivedEnd(trailers: trailers, keepAlive: parser.keepAlive, context: context)
                }
            }
        } catch {
            caught(error, context: context)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        readBatchEnded(context: context)
    }

    func channelInactive(context: ChannelHandlerContext) {
        if exchange != nil, case .end(let trailers)? = parser.inputClosed() {
            // A body delimited by the end of the connection is complete.
            receivedEnd(trailers: trailers, keepAlive: false, context: context)
        }
        inactive(context: context)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        caught(error, context: context)
    }
}

/// An exchange over a stream of an HTTP/2 upstream connection, through NIO's
/// `HTTP2FramePayloadToHTTP1ClientCodec`.
final class UpstreamStreamHandler: UpstreamExchangeHandler, ChannelDuplexHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundIn = HTTPClientRequestPart
    typealias OutboundOut = HTTPClientRequestPart

    private var isHEAD = false
    private var via = ""

    func handlerAdded(context: ChannelHandlerContext) { added(context: context) }
    func handlerRemoved(context: ChannelHandlerContext) { removed() }

    override fileprivate func beginResponse(isHEAD: Bool, via: String) {
        self.isHEAD = isHEAD
        self.via = via
    }

    override fileprivate func writeHead(_ request: UpstreamRequest, hasBody: Bool, context: ChannelHandlerContext) {
        var headers = HTTPHeaders()
        if let host = request.host { headers.add(name: "host", value: host) }
        headers.add(contentsOf: request.fields.headers)
        let head = HTTPRequestHead(version: .http1_1, method: .RAW(value: request.method.wireName), uri: request.target, headers: headers)
        if hasBody {
            context.writeAndFlush(wrapOutboundOut(.head(head)), promise: nil)
        } else {
            context.write(wrapOutboundOut(.head(head)), promise: nil)
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        }
    }

    override fileprivate func writeBody(_ chunk: ByteBuffer, chunked: Bool, context: ChannelHandlerContext) -> EventLoopFuture<Void> {
        context.writeAndFlush(wrapOutboundOut(.body(.byteBuffer(chunk))))
    }

    override fileprivate func writeEnd(_ trailers: HTTPHeaders?, chunked: Bool, context: ChannelHandlerContext) {
        context.writeAndFlush(wrapOutboundOut(.end(trailers)), promise: nil)
    }

    private var keepAlive = true

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard exchange != nil else {
            unexpectedInput(context: context)
            return
        }
        switch unwrapInboundIn(data) {
        case .head(let head):
            guard head.status.code >= 200 || head.status == .continue || head.status.code == 103 || head.status == .processing else {
                fail(UpstreamFailure(cause: .malformed("status \(head.status.code) is not allowed here")), context: context)
                return
            }
            if head.status.code < 200 { return }  // interim: the final head follows
            keepAlive = head.isKeepAlive
            let hasBody = !isHEAD && head.status != .noContent && head.status != .notModified
            var fields = Self.clientFields(head.headers, status: head.status)
            fields.add(name: "via", value: via)
            receivedHead(status: head.status, fields: fields, date: head.headers.first(name: "date"), hasBody: hasBody, context: context)
        case .body(let chunk):
            receivedBody(chunk)
        case .end(let trailers):
            receivedEnd(trailers: trailers, keepAlive: keepAlive, context: context)
        }
    }

    /// An HTTP/2 upstream's fields as the client may get them: what ``UpstreamResponseParser`` keeps of an
    /// HTTP/1.1 head, by the same rule.
    private static func clientFields(_ headers: HTTPHeaders, status: HTTPResponseStatus) -> FieldBlock {
        var options: [[UInt8]] = []
        var fields = FieldBlock(capacity: 64 * max(1, headers.count))
        for (name, value) in headers {
            var name = name, value = value
            if name.withUTF8({ FieldBlock.equalsLowercased(UnsafeRawBufferPointer($0), "connection") }) {
                options += value.withUTF8 { UpstreamResponseParser.tokens(UnsafeRawBufferPointer($0)) }
            }
            if name.withUTF8({ UpstreamResponseParser.isDropped(UnsafeRawBufferPointer($0)) }) { continue }
            fields.add(name: name, value: value)
        }
        fields.remove(names: options)
        if ResponseHeaders.hasContentLength(status), let length = headers.first(name: "content-length") {
            fields.add(name: "content-length", value: length)
        }
        return fields
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        readBatchEnded(context: context)
    }

    func channelInactive(context: ChannelHandlerContext) {
        inactive(context: context)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        caught(error, context: context)
    }
}

extension HTTPMethod {
    /// The method as it goes on the wire. NIO spells `M-SEARCH` (which its parser reads) as `MSEARCH` in
    /// `rawValue`, a method no server knows: an upstream answered it 400.
    var wireName: String {
        self == .MSEARCH ? "M-SEARCH" : rawValue
    }
}
