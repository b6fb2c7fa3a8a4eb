import NIOCore
import NIOHTTP1

/// The HTTP/1.1 fast path: answers simple `GET`/`HEAD` requests straight from bytes, with pre-serialised
/// cached responses, and hands the connection to NIO's full HTTP/1 pipeline (installed behind it) at the
/// first request it does not fully understand.
///
/// Profiling showed NIO's general HTTP/1 pipeline (llhttp, header strings, per-part handler hops) costing
/// several times the kernel's own work per cached response; this handler makes a cache hit one scan, one
/// dictionary lookup and one buffer write. Everything else — bodies, `Expect`, chunked encoding, upgrades,
/// malformed or unusual syntax — is parsed by llhttp exactly as without the fast path.
///
/// Requests are answered in order: while a response is pending (cache miss), further pipelined bytes stay
/// buffered and socket reads are paused.
final class HTTP1FastPathHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let dispatcher: RequestDispatcher
    private let loop: LoopState
    private let serverName: String
    private let maxHeaderBytes: Int
    private let keepaliveTimeout: TimeAmount
    private var lastRead = NIODeadline.now()
    private var idleTimer: Scheduled<Void>?
    /// Bytes received and not yet answered; `nil` when empty, so NIO can reuse its receive buffer.
    private var buffered: ByteBuffer?
    private var handedOff = false
    private var awaitingReply = false
    private var closing = false
    private var quiescing = false
    private var needsFlush = false
    private var readPending = false
    private var isActive = true

    init(services: EdgeServices, loop: LoopState) {
        self.dispatcher = RequestDispatcher(services: services, loop: loop)
        self.loop = loop
        self.serverName = services.configuration.serverName
        self.maxHeaderBytes = services.configuration.limits.maxHeaderBytes
        self.keepaliveTimeout = services.configuration.timeouts.keepalive
    }

    func handlerAdded(context: ChannelHandlerContext) {
        scheduleIdleCheck(in: keepaliveTimeout, context: context)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        idleTimer?.cancel()
        idleTimer = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !handedOff else {
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
        processBuffered(context: context)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        lastRead = .now()
        flushIfNeeded(context: context)
        context.fireChannelReadComplete()
    }

    func channelInactive(context: ChannelHandlerContext) {
        isActive = false
        idleTimer?.cancel()
        idleTimer = nil
        context.fireChannelInactive()
    }

    // MARK: keep-alive timeout

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
        guard idle >= keepaliveTimeout else {
            scheduleIdleCheck(in: keepaliveTimeout - idle, context: context)
            return
        }
        if handedOff {
            context.fireUserInboundEventTriggered(IdleStateHandler.IdleStateEvent.read)
        } else if !awaitingReply {
            context.close(promise: nil)
            return
        }
        scheduleIdleCheck(in: keepaliveTimeout, context: context)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard !handedOff else {
            context.fireUserInboundEventTriggered(event)
            return
        }
        switch event {
        case is ChannelShouldQuiesceEvent:
            quiescing = true
            if !awaitingReply { context.close(promise: nil) }
        default:
            context.fireUserInboundEventTriggered(event)
        }
    }

    /// Holds socket reads while a reply is pending, so pipelined requests cannot pile up without bound.
    func read(context: ChannelHandlerContext) {
        if awaitingReply && !handedOff {
            readPending = true
        } else {
            context.read()
        }
    }

    // MARK: processing

    private func processBuffered(context: ChannelHandlerContext) {
        while !awaitingReply, !closing, !handedOff, let pending = buffered {
            switch HTTP1RequestScanner.scan(pending, limit: maxHeaderBytes) {
            case .incomplete:
                if pending.readableBytes > maxHeaderBytes { handOff(context: context) }
                return
            case .fallback:
                handOff(context: context)
                return
            case .simple(let request, let headLength):
                if pending.readableBytes == headLength {
                    buffered = nil
                } else {
                    buffered!.moveReaderIndex(forwardBy: headLength)
                }
                serve(request, context: context)
            }
        }
    }

    private func serve(_ request: HTTP1RequestScanner.Request, context: ChannelHandlerContext) {
        let dispatch = dispatcher.dispatch(
            method: request.method, target: request.target[...], host: request.host[...], bodyBytes: 0, on: context.eventLoop
        )
        switch dispatch {
        case .ready(let reply):
            write(reply, for: request, context: context)
        case .pending(let future):
            awaitingReply = true
            future.assumeIsolated().whenComplete { result in
                self.awaitingReply = false
                guard self.isActive else { return }
                let reply = (try? result.get()) ?? .response(.text(.badGateway, "backend failed\n"))
                self.write(reply, for: request, context: context)
                self.processBuffered(context: context)
                self.flushIfNeeded(context: context)
                if self.readPending, !self.awaitingReply {
                    self.readPending = false
                    context.read()
                }
            }
        }
    }

    private func write(_ reply: Reply, for request: HTTP1RequestScanner.Request, context: ChannelHandlerContext) {
        let keepAlive = request.keepAlive && !quiescing
        let now = NIODeadline.now()
        let body: ByteBuffer
        var buffer: ByteBuffer
        switch reply {
        case .cached(let entry, _):
            body = entry.body
            buffer = context.channel.allocator.buffer(capacity: entry.http1Head.readableBytes + 160 + body.readableBytes)
            buffer.writeImmutableBuffer(entry.http1Head)
        case .response(let response):
            body = response.body
            buffer = context.channel.allocator.buffer(capacity: 256 + body.readableBytes)
            buffer.writeImmutableBuffer(ResponseHeaders.serializeHead(status: response.status, headers: response.headers))
            buffer.writeStaticString("content-length: ")
            buffer.writeString(String(body.readableBytes))
            buffer.writeStaticString("\r\n")
        }
        ResponseHeaders.perRequest(for: reply, now: now, server: serverName, date: loop.date.current) { name, value in
            buffer.writeString(name)
            buffer.writeStaticString(": ")
            buffer.writeString(value)
            buffer.writeStaticString("\r\n")
        }
        if !keepAlive {
            buffer.writeStaticString("connection: close\r\n")
        } else if request.isHTTP10 {
            buffer.writeStaticString("connection: keep-alive\r\n")
        }
        buffer.writeStaticString("\r\n")
        if request.method != .HEAD { buffer.writeImmutableBuffer(body) }
        if keepAlive {
            context.write(wrapOutboundOut(buffer), promise: nil)
            needsFlush = true
        } else {
            closing = true
            needsFlush = false
            context.writeAndFlush(wrapOutboundOut(buffer)).assumeIsolated().whenComplete { _ in
                context.close(promise: nil)
            }
        }
    }

    private func flushIfNeeded(context: ChannelHandlerContext) {
        if needsFlush {
            needsFlush = false
            context.flush()
        }
    }

    /// Passes the unparsed bytes, and everything after them, to NIO's HTTP/1 pipeline behind this handler.
    private func handOff(context: ChannelHandlerContext) {
        handedOff = true
        flushIfNeeded(context: context)
        if let rest = buffered {
            buffered = nil
            context.fireChannelRead(wrapInboundOut(rest))
            context.fireChannelReadComplete()
        }
        if readPending {
            readPending = false
            context.read()
        }
    }
}
