#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import NIOCore
import NIOHTTP1

/// The HTTP/1.1 connection handler: answers simple `GET`/`HEAD` requests straight from bytes, with
/// pre-serialised cached responses, and hands the connection to NIO's full HTTP/1 pipeline (installed behind
/// it at that moment) at the first request it does not fully understand; ``HTTP1RequestLineCheck`` first answers
/// the well-formed request lines llhttp would call malformed (unknown methods, other versions of HTTP). It also
/// owns the connection's timers and backpressure, before and after a hand-over:
///
/// - keep-alive: an idle connection closes after `keepalive_seconds`;
/// - request head: once a request's first byte arrives, its whole head must arrive within
///   `request_head_seconds` (a client trickling bytes is cut off with 408 — slowloris);
/// - backpressure: while the socket is unwritable (the client is not reading) no further requests are read,
///   and a connection unwritable for `send_seconds` is closed, releasing its buffered responses;
/// - lingering close (plain TCP), as nginx's `lingering_close`: a connection closed while the client may
///   still be sending (an error answer, `Connection: close`, a pipelined request after one) first shuts down
///   only its sending side and reads and discards what still arrives, until the client's end of stream or
///   ``lingerTime``. Closing a socket with unread input makes the kernel reset the connection, and the reset
///   destroys the answer still on its way to the client. (Over TLS, NIOSSL's close_notify exchange does this.)
///
/// Profiling showed NIO's general HTTP/1 pipeline (llhttp, header strings, per-part handler hops) costing
/// several times the kernel's own work per cached response; here a cache hit is one scan, one dictionary
/// lookup and one buffer write. Bodies, `Expect`, chunked encoding, upgrades and malformed or unusual syntax
/// are parsed by llhttp exactly as without the fast path. Requests are answered in order: while a response
/// is pending (cache miss), further pipelined bytes stay buffered and socket reads pause.
final class HTTP1FastPathHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = IOData
    typealias OutboundOut = IOData

    /// Bodies from memory up to this size are copied into the head's buffer; larger ones are written as they are.
    private static let copiedBodyBytes = 16 * 1024
    /// Larger bodies are not kept in the loop's prepared responses (their copy would cost more memory than it
    /// saves time).
    private static let maxPreparedBodyBytes = 64 * 1024
    /// How long a lingering close waits for the client's end of stream (nginx's `lingering_timeout` is 5 s).
    private static let lingerTime = TimeAmount.seconds(5)

    private let services: EdgeServices
    private let dispatcher: RequestDispatcher
    private let loop: LoopState
    private let serverName: String
    private let limits: LimitsConfiguration
    private let timeouts: TimeoutsConfiguration
    private let client: ClientAddress
    /// Whether TLS sits below (then files are streamed in chunks; otherwise sent with sendfile).
    private let isTLS: Bool
    /// A streamed (proxied) response's body, while it is being written.
    private var responseBody: BodyPipe?
    /// The request being answered, for the metrics and the access log (one at a time: answers go in order).
    private var record: RequestRecord?
    /// The site of the answer being written, for the header fields it adds (``ResponseHeaders/perRequest(for:now:server:date:site:tls:_:)``).
    private var answeringSite: Site?
    /// The connection's TLS version (`.none` for plain TCP), for the access log.
    private let tls: TLSVersionLabel

    /// Bytes received and not yet answered; `nil` when empty, so NIO can reuse its receive buffer.
    private var buffered: ByteBuffer?
    private var handedOff = false
    /// A fast-path response is pending (before hand-over), or a request is in progress (after).
    private var requestInProgress = false
    /// The streamed (proxied) request whose answer is awaited: told when the client goes away first.
    private var pendingCancellation: RequestCancellation?
    private var closing = false
    private var quiescing = false
    /// At least one request has come in on this connection.
    private var servedAny = false
    private var needsFlush = false
    private var readPending = false
    private var isActive = true
    /// The client shut down its sending side: answer what it sent, then close.
    private var inputClosed = false
    /// Closing: the sending side is shut down and input is read and dropped until the client's end of stream.
    private var lingering = false

    private var lastRead = NIODeadline.now()
    private var idleTimer: Scheduled<Void>?
    private var headTimer: Scheduled<Void>?
    private var sendTimer: Scheduled<Void>?
    private var lingerTimer: Scheduled<Void>?

    /// `tls` is the connection's TLS version, `.none` for plain TCP.
    init(services: EdgeServices, loop: LoopState, client: ClientAddress, tls: TLSVersionLabel) {
        self.tls = tls
        self.isTLS = tls != .none
        self.services = services
        self.dispatcher = RequestDispatcher(services: services, loop: loop, isTLS: tls != .none)
        self.loop = loop
        self.serverName = services.configuration.serverName
        self.limits = services.configuration.limits
        self.timeouts = services.configuration.timeouts
        self.client = client
    }

    // MARK: lifecycle

    func handlerAdded(context: ChannelHandlerContext) {
        scheduleIdleCheck(in: timeouts.keepalive, context: context)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        cancelTimers()
    }

    func channelInactive(context: ChannelHandlerContext) {
        isActive = false
        finishRecord()
        cancelTimers()
        pendingCancellation?.cancel()
        pendingCancellation = nil
        if let body = responseBody {
            responseBody = nil
            body.cancel(BodyPipe.Broken(description: "the client went away"))
        }
        context.fireChannelInactive()
    }

    private func cancelTimers() {
        idleTimer?.cancel()
        headTimer?.cancel()
        sendTimer?.cancel()
        lingerTimer?.cancel()
        idleTimer = nil
        headTimer = nil
        sendTimer = nil
        lingerTimer = nil
    }

    // MARK: inbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !lingering else { return }
        // The one clock read of a request on the fast path: also the `now` of its cache lookup and `Age`.
        let now = NIODeadline.now()
        lastRead = now
        guard !handedOff else {
            if !requestInProgress { startHeadTimer(context: context) }
            context.fireChannelRead(data)
            return
        }
        guard !closing else { return }
        var incoming = unwrapInboundIn(data)
        if buffered == nil {
            buffered = incoming
        } else {
            buffered!.writeBuffer(&incoming)
        }
        processBuffered(now: now, context: context)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if lingering {
            context.read()  // keep draining: handlers behind may hold reads for a request they think in progress
            return
        }
        flushIfNeeded(context: context)
        // Before a hand-over nothing stands behind this handler but the pipeline's tail.
        if handedOff { context.fireChannelReadComplete() }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if lingering {
            if let event = event as? ChannelEvent, event == .inputClosed { context.close(promise: nil) }
            return
        }
        guard !handedOff else {
            // NIO's HTTP/1 server pipeline finishes the request in progress and closes on quiesce.
            context.fireUserInboundEventTriggered(event is RetireConnectionEvent ? ChannelShouldQuiesceEvent() : event)
            return
        }
        if event is RetireConnectionEvent {
            // A reload: an idle keep-alive connection closes now; otherwise the next response says
            // `Connection: close`. A connection that has not sent its first request yet keeps it.
            quiescing = true
            if servedAny, !requestInProgress, buffered == nil { context.close(promise: nil) }
            return
        }
        if event is ChannelShouldQuiesceEvent {
            quiescing = true
            if !requestInProgress { context.close(promise: nil) }
            return
        }
        if let event = event as? ChannelEvent, event == .inputClosed {
            inputClosed = true
            processBuffered(now: .now(), context: context)
            closeOnceAnswered(context: context)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            sendTimer?.cancel()
            sendTimer = nil
            if !handedOff { processBuffered(now: .now(), context: context) }
            flushIfNeeded(context: context)
            resumeReadingIfPossible(context: context)
            closeOnceAnswered(context: context)
        } else if sendTimer == nil {
            scheduleSendCheck(SendProgress(channel: context.channel), context: context)
        }
        context.fireChannelWritabilityChanged()
    }

    /// Closes the connection once it has been unwritable for `send_seconds` without the client taking a byte
    /// (``SendProgress``); a client that reads, however slowly, is given another `send_seconds`.
    private func scheduleSendCheck(_ progress: SendProgress, context: ChannelHandlerContext) {
        sendTimer = context.eventLoop.assumeIsolated().scheduleTask(in: timeouts.send) { [self] in
            sendTimer = nil
            guard !context.channel.isWritable else { return }
            if progress.advanced() {
                scheduleSendCheck(progress, context: context)
            } else {
                loop.observer.metrics.timedOut(.send)
                context.close(promise: nil)
            }
        }
    }

    // MARK: outbound

    /// Holds socket reads while the client is not reading its responses, or while a fast-path reply is pending
    /// and a head's worth of later requests is already buffered, so that neither pipelined requests nor their
    /// responses can pile up without bound. Reads go on while a reply is pending (an upstream's answer, a
    /// file): a client that waits sends nothing, and holding the read would cost two `epoll_ctl` calls per
    /// request (NIO drops the socket's read interest, then adds it back).
    func read(context: ChannelHandlerContext) {
        if lingering {
            context.read()
        } else if holdsReads || !context.channel.isWritable {
            readPending = true
        } else {
            context.read()
        }
    }

    /// Whether reads wait for the reply in progress (see ``read(context:)``).
    private var holdsReads: Bool {
        requestInProgress && !handedOff && (buffered?.readableBytes ?? 0) >= limits.maxHeaderBytes
    }

    func triggerUserOutboundEvent(context: ChannelHandlerContext, event: Any, promise: EventLoopPromise<Void>?) {
        guard let event = event as? HTTP1ConnectionEvent else {
            context.triggerUserOutboundEvent(event, promise: promise)
            return
        }
        switch event {
        case .headReceived:
            requestInProgress = true
            headTimer?.cancel()
            headTimer = nil
        case .responseFinished:
            requestInProgress = false
        case .finalResponse(let response):
            closeAfterWriting(response, context: context)
        }
        promise?.succeed()
    }

    // MARK: processing

    /// Answers the complete requests buffered, in order, while nothing is pending. `now` is the current time:
    /// the read's when called for a read, a fresh one when requests waited (behind a pending reply or an
    /// unwritable socket), so that no entry is served past its TTL and `Age` is never understated.
    private func processBuffered(now: NIODeadline, context: ChannelHandlerContext) {
        while !requestInProgress, !closing, !handedOff, context.channel.isWritable, let pending = buffered {
            switch HTTP1RequestScanner.scan(pending, limit: limits.maxHeaderBytes) {
            case .incomplete:
                if pending.readableBytes > limits.maxHeaderBytes {
                    handOff(context: context)
                } else {
                    startHeadTimer(context: context)
                }
                return
            case .fallback:
                switch HTTP1RequestLineCheck.check(pending, limit: limits.maxHeaderBytes) {
                case .incomplete:
                    startHeadTimer(context: context)
                case .parse:
                    handOff(context: context)
                case .downgradeMinorVersion(let offset):
                    // RFC 9112 §2.3: processed as HTTP/1.1, on the fast path if it is a simple request.
                    buffered!.setInteger(UInt8(ascii: "1"), at: pending.readerIndex + offset)
                    continue
                case .unknownMethod:
                    answerAndClose(.notImplemented, "request method not recognised\n", context: context)
                case .unsupportedVersion:
                    answerAndClose(.httpVersionNotSupported, "HTTP version not supported: use HTTP/1.1, or HTTP/2 over TLS\n", context: context)
                }
                return
            case .simple(let request, let headLength):
                guard request.target.utf8.count <= limits.maxURIBytes, request.fieldCount <= limits.maxHeaderFields else {
                    handOff(context: context)  // the full parser path answers 414 / 431
                    return
                }
                headTimer?.cancel()
                headTimer = nil
                // A hit in the loop's caches, a fixed response or `/healthz` needs no in-flight count and no policy.
                let atHead = dispatcher.answerAtHead(
                    method: request.method, target: request.target[...], host: request.host[...], conditional: request.conditional,
                    now: now
                )
                var immediate: Reply?
                var streams = false
                switch atHead {
                case .reply(let reply): immediate = reply
                case .streamed: streams = true
                case .other: break
                }
                // A proxied request (it has no body, or the scan would not have passed it) takes the whole head.
                var streamed = streams
                    ? StreamedRequest(
                        headers: HTTP1RequestScanner.headerFields(pending, headLength: headLength),
                        version: request.isHTTP10 ? .http1_0 : .http1_1, isTLS: isTLS, body: nil, bodyLength: nil
                    )
                    : nil
                var record = RequestRecord(
                    start: now, method: request.method, target: request.target[...], wire: request.isHTTP10 ? .http1_0 : .http1_1,
                    client: client, tls: tls
                )
                if loop.observer.logs || loop.observer.tracing != nil {
                    describe(&record, head: pending, headLength: headLength)
                    streamed?.trace = record.span?.context
                }
                if pending.readableBytes == headLength {
                    buffered = nil
                } else {
                    buffered!.moveReaderIndex(forwardBy: headLength)
                }
                servedAny = true
                if let immediate {
                    record.note(loop.observer.takeDispatch())
                    write(immediate, for: request, now: now, record: &record, context: context)
                } else {
                    serve(request, streamed: streamed, now: now, record: record, context: context)
                }
            }
        }
    }

    /// Dispatches a request ``RequestDispatcher/immediateReply(method:target:host:conditional:now:admitting:)``
    /// could not answer, and writes its reply now or when it is ready.
    private func serve(
        _ request: HTTP1RequestScanner.Request, streamed: StreamedRequest?, now: NIODeadline, record: RequestRecord,
        context: ChannelHandlerContext
    ) {
        let headers = RequestHeaderValues(
            host: request.host[...], authorization: request.authorization?[...], forwardedFor: request.forwardedFor?[...],
            conditional: request.conditional
        )
        let dispatch = dispatcher.dispatch(
            method: request.method, target: request.target[...], headers: headers, bodyBytes: 0, client: client,
            streamed: streamed, on: context.eventLoop
        )
        var record = record
        record.note(loop.observer.takeDispatch())
        switch dispatch {
        case .ready(let reply):
            write(reply, for: request, now: now, record: &record, context: context)
        case .pending(let future):
            requestInProgress = true
            pendingCancellation = streamed?.cancellation
            future.assumeIsolated().whenComplete { result in
                self.requestInProgress = false
                self.pendingCancellation = nil
                guard self.isActive else {
                    // The client left while the file was being opened or the upstream's answer awaited: nothing
                    // will send or close it. Counted as 499.
                    self.loop.observer.finished(record)
                    switch result {
                    case .success(.file(let file)): try? file.handle?.close()
                    case .success(.stream(let streamed)): streamed.body?.cancel(BodyPipe.Broken(description: "the client went away"))
                    default: break
                    }
                    return
                }
                let reply = (try? result.get()) ?? .response(.text(.badGateway, "backend failed\n"))
                var record = record
                self.write(reply, for: request, now: .now(), record: &record, context: context)
                self.continueAfterReply(context: context)
            }
        }
    }

    /// sendfile cannot finish a region past the end of a file that shrank while it was being sent, and NIO would
    /// wait for it forever; so while a region is in flight, the file's size is checked once a second (`fstat`,
    /// no disk access) and the connection is closed if the promised bytes no longer exist.
    private func watchForTruncation(_ handle: NIOFileHandle, needed: Int, until done: EventLoopFuture<Bool>, context: ChannelHandlerContext) {
        var finished = false
        done.assumeIsolated().whenComplete { _ in finished = true }
        func check() {
            guard !finished else { return }
            let size = try? handle.withUnsafeFileDescriptor { descriptor -> Int in
                var info = stat()
                return fstat(descriptor, &info) == 0 ? Int(info.st_size) : -1
            }
            if let size, size >= needed {
                context.eventLoop.assumeIsolated().scheduleTask(in: .seconds(1)) { check() }
            } else {
                context.close(promise: nil)
            }
        }
        context.eventLoop.assumeIsolated().scheduleTask(in: .seconds(1)) { check() }
    }

    /// Goes on with buffered requests once a pending reply has been written.
    private func continueAfterReply(context: ChannelHandlerContext) {
        guard !requestInProgress else { return }
        processBuffered(now: .now(), context: context)
        flushIfNeeded(context: context)
        resumeReadingIfPossible(context: context)
        closeOnceAnswered(context: context)
    }

    /// After the client's half-close, closes the connection once every complete request it sent has been
    /// answered and the answers are written; bytes of an unfinished request are dropped. Nothing happens while
    /// a reply is pending or the socket is unwritable (the check runs again when that ends).
    private func closeOnceAnswered(context: ChannelHandlerContext) {
        guard inputClosed, !handedOff, !requestInProgress, !closing, context.channel.isWritable else { return }
        closeAfterWriting(context.channel.allocator.buffer(capacity: 0), context: context)
    }

    /// Writes `reply` and counts `record` (once it is sent, for a file or a stream). `now` ends the request's
    /// duration for an answer from memory: it is the read's time for an answer given at once (it leaves in the same
    /// turn of the event loop), a fresh one after a wait.
    private func write(
        _ reply: Reply, for request: HTTP1RequestScanner.Request, now: NIODeadline, record: inout RequestRecord,
        context: ChannelHandlerContext
    ) {
        record.answered(with: reply, isHEAD: request.method == .HEAD)
        answeringSite = record.site
        let keepAlive = request.keepAlive && !quiescing
        let body: ByteBuffer
        var buffer: ByteBuffer
        switch reply {
        case .file(let file):
            self.record = record
            writeFile(file, for: request, keepAlive: keepAlive, context: context)
            if !requestInProgress { finishRecord() }
            return
        case .stream(let streamed):
            self.record = record
            writeStream(streamed, for: request, keepAlive: keepAlive, context: context)
            if !requestInProgress { finishRecord() }
            return
        case .upgrade:
            // Not reached: a request asking for an upgrade carries `Upgrade`, which sends it to the full pipeline
            // (HTTP1RequestScanner), and an origin switches protocols only for such a request.
            self.record = record
            answerAndClose(.internalServerError, "unexpected protocol switch\n", context: context)
            return
        case .cached(let entry, let cacheStatus):
            // A prepared answer is shared by the loop's plain and TLS connections: not for a site whose header
            // fields differ between the two (HSTS).
            if cacheStatus == "HIT", keepAlive, !request.isHTTP10, request.method == .GET,
                entry.body.readableBytes <= Self.maxPreparedBodyBytes, record.site?.tlsHeaders.isEmpty ?? true
            {
                let response = prepared(
                    for: entry, head: entry.http1Head, body: entry.body, age: entry.age(at: now), reply: reply,
                    request: request, now: now, context: context
                )
                send(response, keepAlive: true, context: context)
                loop.observer.finished(record, now: now)
                return
            }
            body = entry.body
            buffer = context.channel.allocator.buffer(capacity: entry.http1Head.readableBytes + 160 + body.readableBytes)
            buffer.writeImmutableBuffer(entry.http1Head)
        case .response(let response):
            body = response.body
            buffer = context.channel.allocator.buffer(capacity: 256 + body.readableBytes)
            buffer.writeImmutableBuffer(ResponseHeaders.serializeHead(status: response.status, headers: response.headers))
            if ResponseHeaders.hasContentLength(response.status) {
                buffer.writeStaticString("content-length: ")
                buffer.writeString(String(body.readableBytes))
                buffer.writeStaticString("\r\n")
            }
        }
        finishHead(&buffer, for: reply, request: request, keepAlive: keepAlive, now: now)
        if request.method != .HEAD { buffer.writeImmutableBuffer(body) }
        send(buffer, keepAlive: keepAlive, context: context)
        loop.observer.finished(record, now: now)
    }

    /// The complete keep-alive response to a `GET` — `head`, the per-request headers and `body` — from the
    /// loop's prepared responses while `age` and `Date` stay the same, else built and kept there. `head` and
    /// `body` are read only to build one.
    private func prepared(
        for source: AnyObject, head: @autoclosure () -> ByteBuffer, body: @autoclosure () -> ByteBuffer, age: Int64?,
        reply: Reply, request: HTTP1RequestScanner.Request, now: NIODeadline, context: ChannelHandlerContext
    ) -> ByteBuffer {
        loop.preparedResponses.response(for: source, age: age, date: loop.date.current) {
            let (head, body) = (head(), body())
            var whole = context.channel.allocator.buffer(capacity: head.readableBytes + 160 + body.readableBytes)
            whole.writeImmutableBuffer(head)
            finishHead(&whole, for: reply, request: request, keepAlive: true, now: now)
            whole.writeImmutableBuffer(body)
            return whole
        }
    }

    /// Adds the per-request headers (`X-Cache`, `Age`, `Server`, `Date`), the connection header HTTP/1.x needs,
    /// and the blank line that ends the head.
    private func finishHead(
        _ buffer: inout ByteBuffer, for reply: Reply, request: HTTP1RequestScanner.Request, keepAlive: Bool, now: NIODeadline
    ) {
        ResponseHeaders.perRequest(
            for: reply, now: now, server: serverName, date: loop.date.current, site: answeringSite, tls: isTLS
        ) { name, value in
            ResponseHeaders.writeField(name, value, to: &buffer)
        }
        if !keepAlive {
            buffer.writeStaticString("connection: close\r\n")
        } else if request.isHTTP10 {
            buffer.writeStaticString("connection: keep-alive\r\n")
        }
        buffer.writeStaticString("\r\n")
    }

    /// Queues a complete response (flushed at the end of the read batch), or sends it and closes.
    private func send(_ buffer: ByteBuffer, keepAlive: Bool, context: ChannelHandlerContext) {
        if keepAlive {
            context.write(wrapOutboundOut(.byteBuffer(buffer)), promise: nil)
            needsFlush = true
        } else {
            closeAfterWriting(buffer, context: context)
        }
    }

    /// Writes a file reply: the head, then the bytes with sendfile (plain TCP) or in chunks with backpressure
    /// (TLS). Further pipelined requests wait until the file is sent. A file that ends early (it shrank while
    /// being sent) closes the connection, since the promised `Content-Length` cannot be met.
    private func writeFile(_ file: FileReply, for request: HTTP1RequestScanner.Request, keepAlive: Bool, context: ChannelHandlerContext) {
        if let head = file.http1Head, let body = file.body, keepAlive, !request.isHTTP10,
            body.readableBytes <= Self.maxPreparedBodyBytes
        {
            let response = prepared(
                for: head, head: head.bytes, body: body, age: nil, reply: .file(file), request: request, now: .now(),
                context: context
            )
            send(response, keepAlive: true, context: context)
            return
        }
        // A body from memory is copied behind the head when small (one buffer, one write), else written as is.
        let body = request.method == .HEAD ? nil : file.body
        let copyBody = (body?.readableBytes ?? 0) <= Self.copiedBodyBytes
        var head = context.channel.allocator.buffer(capacity: 512 + (copyBody ? body?.readableBytes ?? 0 : 0))
        head.writeImmutableBuffer(file.http1Head?.bytes ?? ResponseHeaders.serializeHead(status: file.status, headers: file.headers))
        finishHead(&head, for: .file(file), request: request, keepAlive: keepAlive, now: .now())
        if let body {
            if copyBody {
                head.writeImmutableBuffer(body)
            } else {
                context.write(wrapOutboundOut(.byteBuffer(head)), promise: nil)
                head = body
            }
        }
        guard let handle = file.handle, request.method != .HEAD else {
            try? file.handle?.close()
            send(head, keepAlive: keepAlive, context: context)
            return
        }
        requestInProgress = true
        context.write(wrapOutboundOut(.byteBuffer(head)), promise: nil)
        let done: EventLoopFuture<Bool>
        if isTLS {
            context.flush()
            done = FileStreaming.stream(
                handle, range: file.range, allocator: context.channel.allocator, on: context.eventLoop,
                stallTimeout: timeouts.send, stalled: SendProgress.closingWhenStalled(context, metrics: loop.observer.metrics)
            ) { chunk in
                context.writeAndFlush(self.wrapOutboundOut(.byteBuffer(chunk)))
            }
        } else {
            let region = FileRegion(fileHandle: handle, readerIndex: file.range.lowerBound, endIndex: file.range.upperBound)
            done = context.writeAndFlush(wrapOutboundOut(.fileRegion(region))).map { true }
            watchForTruncation(handle, needed: file.range.upperBound, until: done, context: context)
        }
        done.assumeIsolated().whenComplete { result in
            try? handle.close()
            self.requestInProgress = false
            self.finishRecord()
            guard case .success(true) = result, self.isActive else {
                // Cut short: the promised length cannot be met, so nothing is gained by lingering.
                self.closing = true
                context.close(promise: nil)
                return
            }
            guard keepAlive, !self.quiescing else {
                // Sent whole and the connection ends: a lingering close, so that a request the client pipelined
                // behind this one cannot make the kernel reset the connection under the file's last bytes.
                self.close(context: context, mode: .all, promise: nil)
                return
            }
            self.continueAfterReply(context: context)
        }
    }

    /// Writes a streamed (proxied) response: the head, then each chunk as the origin passes it on — framed by the
    /// origin's `Content-Length`, else chunked (HTTP/1.1; trailers in the last chunk) or by closing the connection
    /// (HTTP/1.0) — flushed once per batch the origin has at hand (``BodyPipe/onBatchEnd``) rather than per chunk,
    /// so that a small answer leaves in one write. The next chunk is taken only while the socket is writable
    /// (backpressure reaches the upstream through the pipe), and further pipelined requests wait until the body
    /// ends. A body that breaks off closes the connection, so the client sees a broken response, never a short
    /// complete one.
    private func writeStream(
        _ streamed: StreamedResponse, for request: HTTP1RequestScanner.Request, keepAlive: Bool, context: ChannelHandlerContext
    ) {
        let sendsBody = request.method != .HEAD && ResponseHeaders.hasContentLength(streamed.status) && streamed.body != nil
        let framing: StreamFraming
        if !sendsBody {
            framing = .none
        } else if streamed.headers.contains(name: "content-length") {
            framing = .length
        } else {
            framing = request.isHTTP10 ? .close : .chunked
        }
        let keepAlive = keepAlive && framing != .close
        var head = context.channel.allocator.buffer(capacity: 512)
        ResponseHeaders.writeStatusLine(streamed.status, to: &head)
        head.writeImmutableBuffer(streamed.headers.bytes)
        if framing == .chunked { head.writeStaticString("transfer-encoding: chunked\r\n") }
        finishHead(&head, for: .stream(streamed), request: request, keepAlive: keepAlive, now: .now())
        guard sendsBody, let body = streamed.body else {
            streamed.body?.cancel(BodyPipe.Broken(description: "no body is sent"))
            send(head, keepAlive: keepAlive, context: context)
            return
        }
        // A small body that is all at hand (it came whole with its head) goes behind the head: one buffer, one write.
        if framing == .length, let whole = body.takeWhole(maxBytes: Self.copiedBodyBytes) {
            record?.bodyBytesOut += whole.readableBytes
            head.writeImmutableBuffer(whole)
            send(head, keepAlive: keepAlive, context: context)
            return
        }
        requestInProgress = true
        responseBody = body
        context.write(wrapOutboundOut(.byteBuffer(head)), promise: nil)
        needsFlush = true
        // A body that is all at hand (a small answer that came whole) ends below, and its end flushes.
        if !body.isFinished { body.onBatchEnd = { [self] in flushIfNeeded(context: context) } }
        pumpStream(body, framing: framing, keepAlive: keepAlive, context: context)
    }

    /// How a streamed body's end is told to the client.
    private enum StreamFraming { case none, length, chunked, close }

    private func pumpStream(_ body: BodyPipe, framing: StreamFraming, keepAlive: Bool, context: ChannelHandlerContext) {
        // What the origin has at hand is written at once, without a future per part; then the next part is awaited.
        while let ready = body.nextIfReady() {
            guard takeStreamPart(ready, of: body, framing: framing, keepAlive: keepAlive, context: context) else { return }
        }
        body.whenNext { result in
            if self.takeStreamPart(result, of: body, framing: framing, keepAlive: keepAlive, context: context) {
                self.pumpStream(body, framing: framing, keepAlive: keepAlive, context: context)
            }
        }
    }

    /// Writes one part of a streamed body; returns whether the next may be taken at once.
    private func takeStreamPart(
        _ result: Result<BodyPipe.Part, any Error>, of body: BodyPipe, framing: StreamFraming, keepAlive: Bool,
        context: ChannelHandlerContext
    ) -> Bool {
        guard isActive, responseBody === body else {
            body.cancel(BodyPipe.Broken(description: "the client went away"))
            return false
        }
        switch result {
        case .success(.chunk(let chunk)):
            guard chunk.readableBytes > 0 else { return true }
            record?.bodyBytesOut += chunk.readableBytes
            if framing == .chunked {
                var size = context.channel.allocator.buffer(capacity: 18)
                size.writeString(String(chunk.readableBytes, radix: 16))
                size.writeStaticString("\r\n")
                context.write(wrapOutboundOut(.byteBuffer(size)), promise: nil)
                context.write(wrapOutboundOut(.byteBuffer(chunk)), promise: nil)
                var crlf = context.channel.allocator.buffer(capacity: 2)
                crlf.writeStaticString("\r\n")
                context.write(wrapOutboundOut(.byteBuffer(crlf)), promise: nil)
            } else {
                context.write(wrapOutboundOut(.byteBuffer(chunk)), promise: nil)
            }
            needsFlush = true
            if context.channel.isWritable { return true }
            // The client is not keeping up: what is written leaves first, then the next chunk is taken.
            needsFlush = false
            context.writeAndFlush(wrapOutboundOut(.byteBuffer(context.channel.allocator.buffer(capacity: 0))))
                .assumeIsolated().whenComplete { outcome in
                    if case .failure = outcome {
                        body.cancel(BodyPipe.Broken(description: "the client went away"))
                    } else {
                        self.pumpStream(body, framing: framing, keepAlive: keepAlive, context: context)
                    }
                }
            return false
        case .success(.end(let trailers)):
            responseBody = nil
            if framing == .chunked {
                var last = context.channel.allocator.buffer(capacity: 64)
                last.writeStaticString("0\r\n")
                if let trailers { ResponseHeaders.writeFields(trailers, to: &last) }
                last.writeStaticString("\r\n")
                context.write(wrapOutboundOut(.byteBuffer(last)), promise: nil)
            }
            requestInProgress = false
            finishRecord()
            guard keepAlive else {
                needsFlush = false
                closing = true
                context.flush()
                close(context: context, mode: .all, promise: nil)
                return false
            }
            needsFlush = true
            continueAfterReply(context: context)
            return false
        case .failure:
            // Broken off: the client must not take what it got for the whole body.
            responseBody = nil
            requestInProgress = false
            finishRecord()
            closing = true
            needsFlush = false
            context.flush()
            context.close(promise: nil)
            return false
        }
    }

    /// Writes a final response and closes the connection once it is sent (lingering, on plain TCP).
    private func closeAfterWriting(_ buffer: ByteBuffer, context: ChannelHandlerContext) {
        closing = true
        needsFlush = false
        context.writeAndFlush(wrapOutboundOut(.byteBuffer(buffer))).assumeIsolated().whenComplete { _ in
            self.close(context: context, mode: .all, promise: nil)
        }
    }

    /// A full close from the handlers behind (NIO's HTTP/1 pipeline after a hand-over) or from this one becomes a
    /// lingering close on plain TCP while the client may still send; see the type's documentation. A further full
    /// close while lingering (the pipeline's error handling after its own close, say) joins the lingering one.
    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        if mode == .all { closing = true }  // no further request is answered
        guard mode == .all, !isTLS, isActive, !inputClosed else {
            context.close(mode: mode, promise: promise)
            return
        }
        if let promise { context.channel.closeFuture.cascade(to: promise) }
        guard !lingering else { return }
        lingering = true
        lingerTimer = context.eventLoop.assumeIsolated().scheduleTask(in: Self.lingerTime) {
            context.close(promise: nil)
        }
        // Shut down the sending side once everything queued is written; if that fails, close at once.
        context.close(mode: .output).assumeIsolated().whenFailure { _ in context.close(promise: nil) }
        context.read()
    }

    private func flushIfNeeded(context: ChannelHandlerContext) {
        if needsFlush {
            needsFlush = false
            context.flush()
        }
    }

    private func resumeReadingIfPossible(context: ChannelHandlerContext) {
        if readPending, !holdsReads, context.channel.isWritable {
            readPending = false
            context.read()
        }
    }

    /// Counts and logs the request being answered, once.
    private func finishRecord() {
        loop.observer.finish(&record)
    }

    /// Adds what only the access log needs (`User-Agent`, `Referer`, the client a trusted proxy names) and starts
    /// the request's span when tracing is on.
    private func describe(_ record: inout RequestRecord, head: ByteBuffer, headLength: Int) {
        let fields = HTTP1RequestScanner.headerFields(head, headLength: headLength)
        if loop.observer.logs {
            record.detailed.userAgent = fields.values(of: "user-agent").first
            record.detailed.referer = fields.values(of: "referer").first
            record.client = dispatcher.client(peer: client, forwardedFor: fields.values(of: "x-forwarded-for").last?[...])
        }
        loop.observer.startSpan(
            &record, traceparent: fields.values(of: "traceparent").first, tracestate: fields.values(of: "tracestate").first
        )
    }

    /// Installs NIO's HTTP/1 pipeline behind this handler and passes it the unparsed bytes and everything after.
    private func handOff(context: ChannelHandlerContext) {
        handedOff = true
        flushIfNeeded(context: context)
        do {
            try HTTPPipelines.addFullHTTP1(
                after: self, pipeline: context.pipeline.syncOperations, services: services, loop: loop, client: client,
                tls: tls
            )
        } catch {
            closing = true
            context.close(promise: nil)
            return
        }
        if let rest = buffered {
            buffered = nil
            context.fireChannelRead(wrapInboundOut(rest))
            context.fireChannelReadComplete()
        }
        if inputClosed {
            // The full pipeline finishes what it was given, then closes (HTTPServerPipelineHandler holds the
            // event behind the buffered requests).
            context.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        }
        resumeReadingIfPossible(context: context)
    }

    // MARK: timers

    /// Starts the request-head deadline unless it is already running.
    private func startHeadTimer(context: ChannelHandlerContext) {
        guard headTimer == nil, !closing else { return }
        headTimer = context.eventLoop.assumeIsolated().scheduleTask(in: timeouts.requestHead) {
            self.headTimer = nil
            self.requestHeadTimedOut(context: context)
        }
    }

    private func requestHeadTimedOut(context: ChannelHandlerContext) {
        guard isActive, !closing, !requestInProgress else { return }
        loop.observer.metrics.timedOut(.requestHead)
        answerAndClose(
            .requestTimeout, "request head not received within \(timeouts.requestHead.nanoseconds / 1_000_000_000) s\n",
            context: context
        )
    }

    /// Answers the request at the start of the buffer with `status` and `text`, then closes the connection
    /// (lingering, so that the rest of what the client sends cannot reset the answer).
    private func answerAndClose(_ status: HTTPResponseStatus, _ text: String, context: ChannelHandlerContext) {
        if record == nil {
            // A request the fast path could not read as one (a timeout, an unknown method): counted with no route.
            record = RequestRecord(
                start: lastRead, method: .RAW(value: "-"), target: "", wire: .http1_1, client: client, tls: tls
            )
        }
        record?.status = Int(status.code)
        record?.bodyBytesOut = text.utf8.count
        finishRecord()
        headTimer?.cancel()
        headTimer = nil
        buffered = nil
        var buffer = context.channel.allocator.buffer(capacity: 256)
        buffer.writeImmutableBuffer(ResponseHeaders.serializeHead(
            status: status,
            headers: ["content-type": "text/plain; charset=utf-8", "content-length": String(text.utf8.count),
                      "server": serverName, "date": loop.date.current, "connection": "close"]
        ))
        buffer.writeStaticString("\r\n")
        buffer.writeString(text)
        closeAfterWriting(buffer, context: context)
    }

    /// The keep-alive timer, kept here rather than in an `IdleStateHandler` so that reads and writes pass
    /// through one handler less. After a hand-over it raises `IdleStateEvent.read` for the full pipeline.
    private func scheduleIdleCheck(in delay: TimeAmount, context: ChannelHandlerContext) {
        idleTimer = context.eventLoop.assumeIsolated().scheduleTask(in: delay) {
            self.checkIdle(context: context)
        }
    }

    private func checkIdle(context: ChannelHandlerContext) {
        guard isActive else { return }
        let idle = NIODeadline.now() - lastRead
        guard idle >= timeouts.keepalive else {
            scheduleIdleCheck(in: timeouts.keepalive - idle, context: context)
            return
        }
        if handedOff {
            context.fireUserInboundEventTriggered(IdleStateHandler.IdleStateEvent.read)
        } else if !requestInProgress {
            context.close(promise: nil)
            return
        }
        scheduleIdleCheck(in: timeouts.keepalive, context: context)
    }
}
