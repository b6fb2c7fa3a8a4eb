import NIOCore
import NIOHPACK
import NIOHTTP1
import NIOHTTP2

/// The HTTP/2 counterpart of ``HTTP1FastPathHandler``. It sits right behind NIOHTTP2's connection handler (ahead
/// of the stream multiplexer) and answers a new stream at the frame level when the request is a body-less `GET`
/// or `HEAD` that ``RequestDispatcher/immediateReply(method:target:host:conditional:now:)`` can answer at once
/// (a hit in the loop's cache or small-file cache, a fixed response, `/healthz`): one HEADERS and one DATA
/// frame, with no stream channel.
/// On Edge's own connection layer it also takes a body-less `GET` or `HEAD` to a streaming route (a proxy): the
/// request is dispatched at its head, where the dispatcher applies the route's policies, and the origin's answer
/// is written as frames (``HTTP2StreamedAnswer``).
/// Every other stream — bodies, other methods, cache misses, files, routes with policies, anything over a
/// limit — goes on to the multiplexer unchanged, where NIO's HTTP/1-style codec and ``EdgeRequestHandler``
/// serve it exactly as before.
///
/// A profile of cached HTTP/2 responses spent about a third of the CPU creating, activating and closing the
/// per-stream channel and its two handlers; for a cache hit that machinery does nothing the connection
/// handler has not already done (HPACK, stream state, flow control, DoS limits all stay in NIOHTTP2Handler).
///
/// It is also where every inbound header block is checked against RFC 9113's rules (``HTTP2HeaderBlockRules``;
/// NIOHTTP2's own check is off): a malformed request head or trailer block ends its stream with
/// `RST_STREAM(PROTOCOL_ERROR)` and goes no further.
///
/// It also owns the connection's backpressure. Responses written in one read batch are flushed every
/// 64 KiB; once the socket is unwritable (the client is not reading) the rest of the batch's frames wait
/// here, in order, and no more are read until it drains — so a client asking for large responses on many
/// tiny streams cannot make the server buffer them without bound. A connection unwritable for
/// `send_seconds` is closed.
///
/// And it watches that responses move. A client can hold a stream, and so its connection, forever by granting
/// no flow-control window (`SETTINGS_INITIAL_WINDOW_SIZE = 0` and no `WINDOW_UPDATE`): the socket stays
/// writable and NIOHTTP2 keeps the DATA queued. As NIOHTTP2's frame delegate, this handler sees every frame
/// NIOHTTP2 actually encodes — its own answers and the multiplexer's streams alike — and a response that has
/// sent no DATA for `send_seconds` after its HEADERS is reset (`RST_STREAM(CANCEL)`); if nothing at all was
/// sent on the connection in that time, it also gets a GOAWAY and closes once its streams are done.
final class HTTP2FastPathHandler: ChannelDuplexHandler, NIOHTTP2FrameDelegate {
    typealias InboundIn = HTTP2Frame
    typealias InboundOut = HTTP2Frame
    typealias OutboundIn = HTTP2Frame
    typealias OutboundOut = HTTP2Frame

    /// Response bytes written without a flush after which the handler flushes and checks writability.
    private static let flushThreshold = 64 * 1024

    let dispatcher: RequestDispatcher
    let loop: LoopState
    let serverName: String
    private let limits: LimitsConfiguration
    private let sendTimeout: TimeAmount

    /// The highest stream a client has opened: a HEADERS frame above it opens a stream; at or below it, the
    /// frame is a trailer block of a stream the multiplexer already owns.
    private var lastStreamID = HTTP2StreamID.rootStream
    /// What arrived while the connection could not take more responses, in arrival order.
    private var held = CircularBuffer<HeldInput>()
    /// Response bytes written since the last flush (an estimate for the head); zero when nothing is unflushed.
    private var unflushedBytes = 0
    private var readPending = false
    private var sendTimer: Scheduled<Void>?
    /// Open streams, idleness, and how the connection ends.
    private var lifecycle = HTTP2ConnectionLifecycle(now: .now())
    /// Streams whose HEADERS went on to the multiplexer: only their close events go on too.
    private var multiplexerStreams = Set<HTTP2StreamID>()
    private var idleTimer: Scheduled<Void>?
    private var closeDeadline: Scheduled<Void>?
    private let idleTimeout: TimeAmount
    private let shutdownTimeout: TimeAmount
    /// Malformed header blocks this connection has sent (each answered with RST_STREAM).
    private var malformedBlocks = 0
    /// The connection's context while the handler is in the pipeline, for the stall timer started from
    /// ``wroteFrame(_:)`` (which has none).
    private(set) var context: ChannelHandlerContext?
    /// Responses whose HEADERS went out and whose last DATA has not: the stall tick of their last frame. The
    /// newest one is kept apart (``newestUnfinished``), so that a response whose HEADERS and DATA are written
    /// together — nearly every one — costs no dictionary insert.
    private var unfinished: [HTTP2StreamID: UInt32] = [:]
    private var newestUnfinished: (id: HTTP2StreamID, tick: UInt32)?
    /// Counts stall checks (every quarter of `send_seconds`); `dataTick` is the tick of the last DATA written.
    private var stallTick: UInt32 = 0
    private var dataTick: UInt32 = 0
    private var stallTimer: Scheduled<Void>?
    /// Whether a response was reset unfinished (by this handler, or by a stream whose own send timer ran out)
    /// since the last DATA: with no DATA for `send_seconds` as well, nothing moves on the connection.
    private var resetSinceData = false
    /// Stall checks within `send_seconds`: a response is reset between 1 and 1.25 times that after its last byte.
    private static let stallSteps: UInt32 = 4
    /// Whether the client has acknowledged Edge's SETTINGS; until then NIOHTTP2 enforces its default stream limit.
    private var settingsAcknowledged = false
    /// NIOHTTP2's limit on a client's open streams until the client acknowledges Edge's SETTINGS (its default;
    /// the stream that would exceed it is a connection error).
    static let defaultStreamLimit = 100
    /// The stream limit NIOHTTP2 is given once acknowledged, for `configured` advertised streams: room above
    /// the advertised limit, within which the streams beyond it are refused here.
    static func enforcedStreamLimit(advertising configured: Int) -> Int { configured * 2 }
    /// Malformed header blocks after which the connection is closed: NIOHTTP2's own limit on stream errors
    /// (200 per connection, and per 30 s), which no longer sees these since Edge checks the blocks itself.
    static let malformedBlockLimit = 200

    /// Creates the handler of one HTTP/2 connection.
    init(services: EdgeServices, loop: LoopState, client: ClientAddress = .unknown, tls: TLSVersionLabel = .other) {
        self.client = client
        self.tls = tls
        self.dispatcher = RequestDispatcher(services: services, loop: loop, isTLS: true)
        self.loop = loop
        self.serverName = services.configuration.serverName
        self.limits = services.configuration.limits
        self.sendTimeout = services.configuration.timeouts.send
        self.shutdownTimeout = services.configuration.shutdownTimeout
        self.idleTimeout = services.configuration.timeouts.keepalive
        self.extendedConnect = services.router.hasUpgradeRoutes
    }

    /// Whether the connection offers extended CONNECT (RFC 8441, for WebSocket routes): its SETTINGS said so
    /// (``HTTPPipelines/configureHTTP2(_:services:client:)``), so a `:protocol` field is taken.
    private let extendedConnect: Bool
    /// The client, for the access log.
    let client: ClientAddress
    /// The connection's TLS version, for the access log.
    private let tls: TLSVersionLabel

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        scheduleIdleCheck(in: idleTimeout, context: context)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        stop()
        self.context = nil
        connection = nil
    }

    /// Edge's own connection layer, when it serves this connection (`http2_engine = "edge"`): answers are handed
    /// to it directly. Cleared when the handler leaves the pipeline (the connection holds this handler as its
    /// frame delegate).
    var connection: HTTP2ServerConnection?

    func channelInactive(context: ChannelHandlerContext) {
        stop()
        context.fireChannelInactive()
    }

    private func stop() {
        sendTimer?.cancel()
        sendTimer = nil
        idleTimer?.cancel()
        idleTimer = nil
        closeDeadline?.cancel()
        closeDeadline = nil
        stallTimer?.cancel()
        stallTimer = nil
        unfinished.removeAll()
        newestUnfinished = nil
        held.removeAll()
        if !streamedAnswers.isEmpty {
            let answers = streamedAnswers.values
            streamedAnswers.removeAll()
            for answer in answers { answer.streamClosed() }
        }
    }

    /// Proxied answers in progress on Edge's connection layer, by stream (``HTTP2StreamedAnswer``).
    var streamedAnswers: [HTTP2StreamID: HTTP2StreamedAnswer] = [:]

    // MARK: inbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if !held.isEmpty || !canAnswer(context: context) {
            held.append(.frame(data))
        } else {
            receive(data, context: context)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        _ = releaseHeld(context: context)
        flushIfNeeded(context: context)
        context.fireChannelReadComplete()
    }

    /// Stream events feed the connection's lifecycle. They are compared by type first: a failed `as?` from
    /// `Any` is a slow runtime search, and two stream events pass here for every request.
    ///
    /// NIOHTTP2 reports a new stream after delivering its HEADERS frame. Its stream events go on to the
    /// multiplexer only for the streams it serves (it activates their channels on the first, and closes them
    /// on the second); a stream answered here, or refused as malformed, never reaches it. While frames are
    /// held, the stream events that follow them are held too, so that each is judged after the frame it
    /// follows: a stream's HEADERS decides whether the multiplexer serves it.
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        let type = ObjectIdentifier(Swift.type(of: event))
        if type == ObjectIdentifier(NIOHTTP2StreamCreatedEvent.self) || type == ObjectIdentifier(StreamClosedEvent.self) {
            if held.isEmpty {
                receiveStreamEvent(event, created: type == ObjectIdentifier(NIOHTTP2StreamCreatedEvent.self), context: context)
            } else {
                held.append(.streamEvent(event))
            }
            return
        }
        if type == ObjectIdentifier(ChannelShouldQuiesceEvent.self) || type == ObjectIdentifier(RetireConnectionEvent.self) {
            idleTimer?.cancel()
            idleTimer = nil
            perform(lifecycle.quiesce(), context: context)
        } else if type == ObjectIdentifier(ChannelEvent.self), event as? ChannelEvent == .inputClosed {
            // The client can open no more streams nor grant window: its streams are finished (within
            // `shutdown_timeout_seconds`, since flow control may stall them) after a GOAWAY naming the last.
            perform(lifecycle.inputClosed(), context: context)
        }
        context.fireUserInboundEventTriggered(event)
    }

    /// Counts a stream opened or closed, and passes the event on if the multiplexer serves the stream.
    private func receiveStreamEvent(_ event: Any, created: Bool, context: ChannelHandlerContext) {
        if created {
            let streamID = (event as! NIOHTTP2StreamCreatedEvent).streamID
            lifecycle.streamOpened(streamID)
            if !multiplexerStreams.isEmpty, multiplexerStreams.contains(streamID) {
                context.fireUserInboundEventTriggered(event)
            }
        } else {
            let streamID = (event as! StreamClosedEvent).streamID
            finished(streamID)
            if !streamedAnswers.isEmpty, let answer = streamedAnswers.removeValue(forKey: streamID) {
                answer.streamClosed()
            }
            perform(lifecycle.streamClosed(now: .now()), context: context)
            if !multiplexerStreams.isEmpty, multiplexerStreams.remove(streamID) != nil {
                context.fireUserInboundEventTriggered(event)
            }
        }
    }

    /// Carries out what the lifecycle decided.
    private func perform(_ action: HTTP2ConnectionLifecycle.Action, context: ChannelHandlerContext) {
        switch action {
        case .none:
            return
        case .closeWhenWritten:
            closeAfterWrites(context: context)
        case .goAway(let lastStreamID, let ping, let thenClose):
            let goAway = HTTP2Frame(streamID: .rootStream, payload: .goAway(lastStreamID: lastStreamID, errorCode: .noError, opaqueData: nil))
            context.write(wrapOutboundOut(goAway), promise: nil)
            if let ping {
                context.write(wrapOutboundOut(HTTP2Frame(streamID: .rootStream, payload: .ping(ping, ack: false))), promise: nil)
            }
            unflushedBytes = 0
            context.flush()
            if thenClose {
                closeAfterWrites(context: context)
            } else if lifecycle.phase == .finishing, closeDeadline == nil {
                closeDeadline = context.eventLoop.assumeIsolated().scheduleTask(in: shutdownTimeout) {
                    context.close(promise: nil)
                }
            }
        }
    }

    /// Closes the connection once it has been idle for the keep-alive timeout, with one timer per connection
    /// that is re-armed for the time left rather than on every stream.
    private func scheduleIdleCheck(in delay: TimeAmount, context: ChannelHandlerContext) {
        idleTimer = context.eventLoop.assumeIsolated().scheduleTask(in: delay) { [self] in
            idleTimer = nil
            switch lifecycle.idleCheck(now: .now(), timeout: idleTimeout) {
            case .close(let action): perform(action, context: context)
            case .checkAgain(let delay): scheduleIdleCheck(in: delay, context: context)
            case .stop: break
            }
        }
    }

    /// Closes once the frames written so far are on the wire. Deferred by one loop tick because a stream
    /// closes when its last frame is written, before that frame is flushed.
    private func closeAfterWrites(context: ChannelHandlerContext) {
        context.eventLoop.assumeIsolated().execute {
            context.flush()
            context.triggerUserOutboundEvent(HTTP2GoAwayCloser.CloseAfterWrites(), promise: nil)
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            sendTimer?.cancel()
            sendTimer = nil
            if releaseHeld(context: context) {
                context.fireChannelReadComplete()
            }
            flushIfNeeded(context: context)
            if !streamedAnswers.isEmpty { resumeStreamedAnswers() }
            if readPending, held.isEmpty {
                readPending = false
                context.read()
            }
        } else if sendTimer == nil {
            sendTimer = context.eventLoop.assumeIsolated().scheduleTask(in: sendTimeout) {
                context.close(promise: nil)
            }
        }
        context.fireChannelWritabilityChanged()
    }

    /// Answers a new stream's request here when it can, and passes every other frame on.
    private func receive(_ data: NIOAny, context: ChannelHandlerContext) {
        let frame = unwrapInboundIn(data)
        switch frame.payload {
        case .headers(let headers):
            if frame.streamID > lastStreamID {
                lastStreamID = frame.streamID
                if lifecycle.openStreams >= streamLimit {
                    refuse(frame.streamID, context: context)
                    return
                }
                if let (id, fields) = inspected, id == frame.streamID {
                    // ``answerInline(_:headers:)`` found a well-formed request the fast path cannot answer.
                    inspected = nil
                    passOn(frame, headers, fields, context: context)
                    return
                }
                guard let fields = HTTP2HeaderBlockRules.requestFields(headers.headers, extendedConnect: extendedConnect) else {
                    refuseMalformedBlock(on: frame.streamID, context: context)
                    return
                }
                if headers.endStream, answer(frame.streamID, fields, headers.headers, context: context) != .notAnswered {
                    return
                }
                passOn(frame, headers, fields, context: context)
                return
            } else if !HTTP2HeaderBlockRules.isValidTrailerBlock(headers.headers) {
                refuseMalformedBlock(on: frame.streamID, context: context)
                return
            }
        case .settings(.ack):
            settingsAcknowledged = true
        case .ping(let data, ack: true):
            perform(lifecycle.pingAcknowledged(data), context: context)
        default:
            break
        }
        context.fireChannelRead(data)
    }

    /// What ``answer(_:_:_:context:)`` did with a request.
    enum InlineAnswer {
        case notAnswered
        /// Answered, and the response is all written: the stream is over.
        case complete
        /// Answered, and part of the response waits for flow-control window.
        case pending
    }

    /// The stream whose head ``answerInline(_:headers:)`` found well-formed but could not answer, with its
    /// fields: ``receive(_:context:)`` passes it on without looking again.
    private var inspected: (HTTP2StreamID, HTTP2HeaderBlockRules.RequestFields)?

    /// Called by ``HTTP2ServerConnection`` with a new stream's complete request head (`END_STREAM` set), before
    /// it passes the frame on: answers it here when it can, without the frame, its stream events or the
    /// pipeline. Anything else — a full connection, a stream past the limit, a malformed block, a request the
    /// fast path cannot answer — is left to the frame's usual way through ``receive(_:context:)``.
    func answerInline(_ streamID: HTTP2StreamID, headers: HPACKHeaders) -> InlineAnswer {
        guard let context, held.isEmpty, canAnswer(context: context), lifecycle.openStreams < streamLimit,
            let fields = HTTP2HeaderBlockRules.requestFields(headers, extendedConnect: extendedConnect)
        else { return .notAnswered }
        let result = answer(streamID, fields, headers, context: context)
        switch result {
        case .notAnswered:
            inspected = (streamID, fields)
            return result
        case .complete:
            // The stream opened and closed within this call: the lifecycle counts it as its events would.
            lifecycle.streamOpened(streamID)
            perform(lifecycle.streamClosed(now: .now()), context: context)
        case .pending:
            break  // its events follow from the connection
        }
        lastStreamID = streamID
        return result
    }

    /// Answers a body-less request from the dispatcher's immediate replies, if it is one.
    private func answer(
        _ streamID: HTTP2StreamID, _ fields: HTTP2HeaderBlockRules.RequestFields, _ headers: HPACKHeaders,
        context: ChannelHandlerContext
    ) -> InlineAnswer {
        guard let request = Self.simpleRequest(fields, limits: limits) else { return .notAnswered }
        let reply: Reply
        switch dispatcher.answerAtHead(method: request.method, target: request.target, host: request.host, conditional: fields.conditional) {
        case .reply(let immediate):
            reply = immediate
        case .streamed:
            // A proxied request is answered here too, on Edge's own connection layer.
            guard let connection else { return .notAnswered }
            return answerStreamed(streamID, request, fields, headers, connection: connection, context: context)
        case .other:
            return .notAnswered
        }
        guard let parts = Self.frameParts(of: reply) else { return .notAnswered }
        let now = NIODeadline.now()
        var record = newRecord(request, headers, start: now)
        record.note(loop.observer.takeDispatch())
        record.answered(with: reply, isHEAD: request.method == .HEAD)
        let result = write(reply, parts, isHEAD: request.method == .HEAD, on: streamID, now: now, site: record.site, context: context)
        // Answered in this turn of the event loop: the read's time ends it too (a span is timed exactly).
        loop.observer.finished(record, now: record.details == nil ? now : .now())
        return result
    }

    /// The access log's and tracing's record of a request answered here.
    func newRecord(_ request: SimpleRequest, _ headers: HPACKHeaders, start: NIODeadline) -> RequestRecord {
        var record = RequestRecord(
            start: start, method: request.method, target: request.target, wire: .http2, client: client, tls: tls
        )
        if loop.observer.logs {
            record.detailed.userAgent = headers.first(name: "user-agent")
            record.detailed.referer = headers.first(name: "referer")
            let forwardedFor = headers[canonicalForm: "x-forwarded-for"].joined(separator: ",")
            record.client = dispatcher.client(peer: client, forwardedFor: forwardedFor.isEmpty ? nil : forwardedFor[...])
        }
        loop.observer.startSpan(
            &record, traceparent: headers.first(name: "traceparent"), tracestate: headers.first(name: "tracestate")
        )
        return record
    }

    /// Hands a new stream's head to the multiplexer, which serves the stream from here on.
    private func passOn(
        _ frame: HTTP2Frame, _ headers: HTTP2Frame.FramePayload.Headers, _ fields: HTTP2HeaderBlockRules.RequestFields,
        context: ChannelHandlerContext
    ) {
        multiplexerStreams.insert(frame.streamID)
        if fields.authority == nil, let host = fields.host {
            // RFC 9113 §8.3.1 lets `host` stand in for `:authority`; NIOHTTP2's HTTP/1 codec requires the
            // pseudo-header, so it is added from `host` (which the codec keeps as the request's Host).
            var withAuthority = HPACKHeaders([(":authority", host)])
            withAuthority.add(contentsOf: headers.headers)
            var rewritten = headers
            rewritten.headers = withAuthority
            context.fireChannelRead(wrapInboundOut(HTTP2Frame(streamID: frame.streamID, payload: .headers(rewritten))))
        } else {
            context.fireChannelRead(wrapInboundOut(frame))
        }
    }

    /// How many streams the client may have open: the configured limit, advertised in Edge's SETTINGS. On
    /// NIOHTTP2, until the client acknowledges them, one less than NIOHTTP2's default if that is lower, so that a
    /// stream is refused here before NIOHTTP2 would see one too many; Edge's own layer has no such default, so a
    /// client that opens the advertised number at once (`h2load -m100`) is refused none.
    private var streamLimit: Int {
        let configured = limits.http2MaxConcurrentStreams
        return settingsAcknowledged || connection != nil ? configured : min(configured, Self.defaultStreamLimit - 1)
    }

    /// Refuses a new stream beyond the stream limit with `RST_STREAM(REFUSED_STREAM)` (RFC 9113 §5.1.2): nothing
    /// of it was processed, so the client may retry it, and the connection serves on.
    private func refuse(_ streamID: HTTP2StreamID, context: ChannelHandlerContext) {
        context.write(wrapOutboundOut(HTTP2Frame(streamID: streamID, payload: .rstStream(.refusedStream))), promise: nil)
        unflushedBytes += 13
    }

    /// Answers a malformed header block as NIOHTTP2 would: `RST_STREAM(PROTOCOL_ERROR)` for the stream, and,
    /// once a connection has sent ``malformedBlockLimit`` of them, `GOAWAY(ENHANCE_YOUR_CALM)` — after which
    /// ``HTTP2GoAwayCloser`` closes the connection.
    private func refuseMalformedBlock(on streamID: HTTP2StreamID, context: ChannelHandlerContext) {
        malformedBlocks += 1
        let frame: HTTP2Frame
        if malformedBlocks > Self.malformedBlockLimit {
            frame = HTTP2Frame(
                streamID: .rootStream,
                payload: .goAway(lastStreamID: lifecycle.newestStreamID, errorCode: .enhanceYourCalm, opaqueData: nil)
            )
        } else {
            frame = HTTP2Frame(streamID: streamID, payload: .rstStream(.protocolError))
        }
        context.write(wrapOutboundOut(frame), promise: nil)
        unflushedBytes += 17
    }

    /// Whether more responses may be written now: the batch's unflushed bytes are under the threshold (else
    /// they are flushed first) and the socket is writable.
    private func canAnswer(context: ChannelHandlerContext) -> Bool {
        if unflushedBytes >= Self.flushThreshold { flushIfNeeded(context: context) }
        return unflushedBytes < Self.flushThreshold && context.channel.isWritable
    }

    /// Passes on held frames and events, in order, while the connection can take more; returns whether any
    /// were. `canAnswer` comes first: the flush it may do can close the connection, which empties `held`.
    private func releaseHeld(context: ChannelHandlerContext) -> Bool {
        var released = false
        while canAnswer(context: context), let next = held.popFirst() {
            switch next {
            case .frame(let data):
                receive(data, context: context)
            case .streamEvent(let event):
                let created = ObjectIdentifier(type(of: event)) == ObjectIdentifier(NIOHTTP2StreamCreatedEvent.self)
                receiveStreamEvent(event, created: created, context: context)
            }
            released = true
        }
        return released
    }

    /// A frame, or a stream event NIOHTTP2 raised after it, kept while the connection cannot take more.
    private enum HeldInput {
        case frame(NIOAny)
        case streamEvent(Any)
    }

    // MARK: outbound

    /// Holds socket reads while frames wait here or the client is not reading its responses.
    func read(context: ChannelHandlerContext) {
        if held.isEmpty, context.channel.isWritable {
            context.read()
        } else {
            readPending = true
        }
    }

    // MARK: answering

    /// What the fast path needs from a request's header block.
    struct SimpleRequest {
        var method: HTTPMethod
        var target: Substring
        var host: Substring
    }

    /// The method, target and authority of a `GET` or `HEAD` within the limits ``EdgeRequestHandler`` checks,
    /// or `nil` for anything the full path must see (other methods, `Expect`, a declared body, long targets,
    /// too many or too large fields — the full path answers those with their 4xx).
    private static func simpleRequest(_ fields: HTTP2HeaderBlockRules.RequestFields, limits: LimitsConfiguration) -> SimpleRequest? {
        let method: HTTPMethod
        switch fields.method {
        case "GET": method = .GET
        case "HEAD": method = .HEAD
        default: return nil
        }
        let path = fields.path
        guard !fields.hasContentLength, !fields.hasExpect, path.utf8.first == UInt8(ascii: "/"),
            path.utf8.count <= limits.maxURIBytes, fields.regularFields < limits.maxHeaderFields,
            12 + fields.headBytes <= limits.maxHeaderBytes
        else { return nil }
        let effectiveHost = fields.authority ?? fields.host ?? ""
        guard RequestTargetRules.isValidHost(effectiveHost.utf8) else { return nil }  // the full path answers 400
        return SimpleRequest(method: method, target: path[...], host: effectiveHost[...])
    }

    /// A reply's header block (without the per-request fields) and body; `nil` for a file that must be read
    /// from disk (it streams through the multiplexer).
    static func frameParts(of reply: Reply) -> (block: HPACKHeaders, body: ByteBuffer)? {
        switch reply {
        case .cached(let entry, _):
            return (entry.http2Headers, entry.body)
        case .response(let response):
            var headers = response.headers
            if ResponseHeaders.hasContentLength(response.status) {
                headers.add(name: "content-length", value: String(response.body.readableBytes))
            }
            return (ResponseHeaders.http2Block(status: response.status, headers: headers), response.body)
        case .stream, .upgrade:
            return nil
        case .file(let file):
            guard file.handle == nil else { return nil }
            let block = file.http2Block ?? ResponseHeaders.http2Block(status: file.status, headers: file.headers)
            return (block, file.body ?? ByteBuffer())
        }
    }

    /// Writes the response as HEADERS (with the per-request fields) and DATA, ending the stream; flushed at
    /// the end of the read batch.
    func write(
        _ reply: Reply, _ parts: (block: HPACKHeaders, body: ByteBuffer), isHEAD: Bool, on streamID: HTTP2StreamID,
        now: NIODeadline, site: Site?, context: ChannelHandlerContext
    ) -> InlineAnswer {
        let date = loop.date.current
        let build = { [serverName] () -> HPACKHeaders in
            var block = parts.block
            ResponseHeaders.perRequest(for: reply, now: now, server: serverName, date: date, site: site, tls: true) { name, value in
                block.add(name: name, value: value)
            }
            return block
        }
        let bodyless = isHEAD || parts.body.readableBytes == 0
        if let connection {
            // Edge's own connection layer takes the response directly. A hit's or a whole small file's block is
            // the same for a second: the connection copies it while its HPACK table has not changed.
            let key: HTTP2ServerConnection.BlockKey?
            switch reply {
            case .cached(let entry, "HIT"):
                key = .init(source: entry, age: entry.age(at: now), date: date)
            case .file(let file) where file.http2Block != nil && file.http1Head != nil:
                key = .init(source: file.http1Head!, age: nil, date: date)
            default:
                key = nil
            }
            unflushedBytes += (bodyless ? 0 : parts.body.readableBytes) + 128
            switch connection.writeResponse(streamID, reuseAs: key, fields: build, body: bodyless ? nil : parts.body) {
            case .complete:
                dataTick = stallTick
                resetSinceData = false
                return .complete
            case .pending:
                headWritten(streamID, endStream: false)
                return .pending
            case .failed:
                return .complete  // the stream or the connection is gone: nothing more to do for it
            }
        }
        let block: HPACKHeaders
        if case .cached(let entry, "HIT") = reply {
            block = loop.preparedHTTP2Blocks.response(for: entry, age: entry.age(at: now), date: date, build: build)
        } else {
            block = build()
        }
        let headers = HTTP2Frame.FramePayload.Headers(headers: block, endStream: bodyless)
        context.write(wrapOutboundOut(HTTP2Frame(streamID: streamID, payload: .headers(headers))), promise: nil)
        if !bodyless {
            let data = HTTP2Frame.FramePayload.Data(data: .byteBuffer(parts.body), endStream: true)
            context.write(wrapOutboundOut(HTTP2Frame(streamID: streamID, payload: .data(data))), promise: nil)
        }
        unflushedBytes += (bodyless ? 0 : parts.body.readableBytes) + 128
        return .complete
    }

    // MARK: responses that cannot move

    /// NIOHTTP2 encoded `frame` (for this handler's answers and the multiplexer's streams alike): DATA is encoded
    /// only when flow control lets it go. Bookkeeping only; nothing is written from here.
    func wroteFrame(_ frame: HTTP2Frame) {
        switch frame.payload {
        case .data(let data):
            dataTick = stallTick
            resetSinceData = false
            if data.endStream {
                finished(frame.streamID)
            } else if let newest = newestUnfinished, newest.id == frame.streamID {
                newestUnfinished = (newest.id, stallTick)
            } else if let index = unfinished.index(forKey: frame.streamID) {
                unfinished.values[index] = stallTick
            }
        case .headers(let headers):
            if headers.endStream || !Self.isInterim(headers.headers) {
                headWritten(frame.streamID, endStream: headers.endStream)
            }
        case .rstStream:
            if finished(frame.streamID) {
                resetSinceData = true
                if stallTimer == nil, let context { scheduleStallCheck(context: context) }
            }
        default:
            break
        }
    }

    /// A response's final header block was written: the response is complete, or unfinished until its last DATA.
    private func headWritten(_ streamID: HTTP2StreamID, endStream: Bool) {
        if endStream {
            finished(streamID)
        } else {
            if let newest = newestUnfinished { unfinished[newest.id] = newest.tick }
            newestUnfinished = (streamID, stallTick)
            if stallTimer == nil, let context { scheduleStallCheck(context: context) }
        }
    }

    /// Whether a response header block is a 1xx (`100 Continue`), after which the response is yet to start.
    private static func isInterim(_ block: HPACKHeaders) -> Bool {
        guard let first = block.first, first.name == ":status" else { return false }
        return first.value.utf8.first == UInt8(ascii: "1")
    }

    /// Stream `id`'s response is complete or gone; returns whether it was unfinished.
    @discardableResult
    private func finished(_ id: HTTP2StreamID) -> Bool {
        if let newest = newestUnfinished, newest.id == id {
            newestUnfinished = nil
            return true
        }
        return !unfinished.isEmpty && unfinished.removeValue(forKey: id) != nil
    }

    /// Every quarter of `send_seconds` while a response is unfinished: resets each that has sent nothing for
    /// `send_seconds`, and ends the connection if nothing at all was sent on it in that time.
    private func scheduleStallCheck(context: ChannelHandlerContext) {
        let step = TimeAmount.nanoseconds(max(1_000_000, sendTimeout.nanoseconds / Int64(Self.stallSteps)))
        stallTimer = context.eventLoop.assumeIsolated().scheduleTask(in: step) { [self] in
            stallTimer = nil
            stallTick &+= 1
            if let newest = newestUnfinished {
                unfinished[newest.id] = newest.tick
                newestUnfinished = nil
            }
            let stalled = unfinished.compactMap { stallTick &- $0.value > Self.stallSteps ? $0.key : nil }
            if !stalled.isEmpty {
                for id in stalled {
                    // Collected first: each reset closes its stream at once, which re-enters this handler.
                    unfinished.removeValue(forKey: id)
                    loop.observer.metrics.timedOut(.send)
                    context.write(wrapOutboundOut(HTTP2Frame(streamID: id, payload: .rstStream(.cancel))), promise: nil)
                }
                unflushedBytes = 0
                context.flush()
                resetSinceData = true
            }
            let quietFor = stallTick &- dataTick
            if resetSinceData, quietFor > Self.stallSteps {
                resetSinceData = false
                perform(lifecycle.stalled(), context: context)
            }
            if !unfinished.isEmpty || (resetSinceData && quietFor <= Self.stallSteps), self.context != nil {
                scheduleStallCheck(context: context)
            }
        }
    }

    /// Flushes what was written since the last flush, if anything was.
    private func flushIfNeeded(context: ChannelHandlerContext) {
        if unflushedBytes > 0 {
            unflushedBytes = 0
            context.flush()
        }
    }
}
