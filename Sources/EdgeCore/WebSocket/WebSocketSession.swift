import NIOCore
import NIOWebSocket

/// A complete message: its frames joined, unmasked, and for text checked as UTF-8.
struct WebSocketMessage {
    var isText: Bool
    var data: ByteBuffer
}

/// What a WebSocket connection's messages go to: the echo endpoint, a pub/sub channel. Called on the
/// connection's event loop.
protocol WebSocketApplication: AnyObject {
    /// A message from the client.
    func received(_ message: WebSocketMessage, on session: WebSocketSession)
    /// The connection has ended (closed cleanly or not); nothing more will be sent on it.
    func ended(_ session: WebSocketSession)
    /// The connection is open (its handlers are in place) on `loop`.
    func started(_ session: WebSocketSession, on loop: any EventLoop)
    /// The client's socket can take more after it could not.
    func writable(_ session: WebSocketSession)
}

extension WebSocketApplication {
    func started(_ session: WebSocketSession, on loop: any EventLoop) {}
    func writable(_ session: WebSocketSession) {}
}

/// The limits and timers of one WebSocket connection.
struct WebSocketSessionSettings {
    var maxMessageBytes: Int
    /// Close (1001) after this long without a frame from the client; `nil` for never.
    var idleTimeout: TimeAmount?
    /// Ping after this long without a frame from the client; `nil` for never.
    var pingInterval: TimeAmount?
    /// How long a close frame waits for the client's before the connection is closed anyway.
    var closeTimeout: TimeAmount = .seconds(5)
    /// After a reload, how long a connection of the older configuration lives on before it is closed (1001).
    var reloadGrace: TimeAmount

    init(_ route: WebSocketRouteConfiguration) {
        maxMessageBytes = route.maxMessageBytes
        idleTimeout = route.idleSeconds > 0 ? .seconds(Int64(route.idleSeconds)) : nil
        pingInterval = route.pingSeconds > 0 ? .seconds(Int64(route.pingSeconds)) : nil
        reloadGrace = .seconds(Int64(route.reloadGraceSeconds))
    }
}

/// The WebSocket protocol (RFC 6455 §5–§7) above NIO's frame decoder and encoder, for one client connection
/// (an HTTP/1.1 connection, or an HTTP/2 stream behind ``HTTP2StreamBytesHandler``):
///
/// - client frames must be masked, carry no reserved bit (no extension is negotiated) and no reserved opcode;
///   continuation frames must continue a message, and a new message must not start inside one (1002);
/// - a message's frames are joined up to `max_message_bytes` (1009; NIO's decoder refuses a single frame over
///   `max_frame_bytes` the same way); text is checked as UTF-8 fragment by fragment (1007);
/// - pings are answered with pongs; control frames longer than 125 bytes or fragmented are refused (1002);
/// - the closing handshake: a client's close is answered with its code (checked: 1002 for codes no endpoint may
///   send, 1007 for a reason that is not UTF-8), then the connection closes; Edge's own close (idle, shutdown,
///   reload) waits up to `closeTimeout` for the client's;
/// - idle connections are pinged, and closed (1001) when nothing arrives for `idle_seconds`;
/// - reads stop while the socket cannot take more (an echo to a client that does not read holds its reads,
///   not memory).
///
/// Each session is listed in its loop's ``LoopState/webSockets``, so that a shutdown or reload can close it with
/// 1001 even when it lives on an HTTP/2 stream.
final class WebSocketSession: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = WebSocketFrame
    typealias OutboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    private let settings: WebSocketSessionSettings
    private let application: any WebSocketApplication
    private let loop: LoopState
    /// ``EdgeServices/generation`` of the configuration the connection was opened under.
    let generation: Int
    private var context: ChannelHandlerContext?

    /// The message being received: its bytes so far, and whether it is text.
    private var message: ByteBuffer?
    private var messageIsText = false
    private var utf8 = UTF8Validator()
    /// Edge has sent its close frame; only the client's close is awaited.
    private var closeSent = false
    private var ended = false
    private var lastReceived = NIODeadline.now()
    private var keepaliveTimer: Scheduled<Void>?
    private var closeTimer: Scheduled<Void>?
    private var goAwayTimer: Scheduled<Void>?
    private var readPending = false
    private var needsFlush = false

    /// permessage-deflate, when negotiated.
    private let deflate: PerMessageDeflate?
    /// Whether the message being received is compressed (RSV1 on its first frame).
    private var messageIsCompressed = false

    init(
        settings: WebSocketSessionSettings, application: any WebSocketApplication, loop: LoopState, generation: Int,
        deflate: PerMessageDeflate? = nil
    ) {
        self.settings = settings
        self.deflate = deflate
        self.application = application
        self.loop = loop
        self.generation = generation
    }

    // MARK: lifecycle

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        loop.webSockets[ObjectIdentifier(self)] = self
        lastReceived = .now()
        scheduleKeepalive()
        encoderContext = try? context.pipeline.syncOperations.context(handlerType: WebSocketFrameEncoder.self)
        application.started(self, on: context.eventLoop)
    }

    /// The frame encoder's context: bytes written there are already frames.
    private var encoderContext: ChannelHandlerContext?

    func handlerRemoved(context: ChannelHandlerContext) {
        end()
        self.context = nil
        encoderContext = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        end()
        context.fireChannelInactive()
    }

    private func end() {
        guard !ended else { return }
        ended = true
        loop.webSockets[ObjectIdentifier(self)] = nil
        keepaliveTimer?.cancel()
        closeTimer?.cancel()
        goAwayTimer?.cancel()
        message = nil
        application.ended(self)
    }

    // MARK: inbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        lastReceived = .now()
        guard frame.maskKey != nil else { return fail(.protocolError, "unmasked frame", context: context) }
        guard !frame.rsv2, !frame.rsv3 else { return fail(.protocolError, "reserved bit set", context: context) }
        // RSV1 marks the first frame of a compressed message, and only when permessage-deflate was negotiated.
        if frame.rsv1, deflate == nil || !(frame.opcode == .text || frame.opcode == .binary) {
            return fail(.protocolError, "reserved bit set", context: context)
        }
        switch frame.opcode {
        case .connectionClose:
            receiveClose(frame.unmaskedData, context: context)
        case .ping:
            guard !closeSent else { return }
            write(WebSocketFrame(fin: true, opcode: .pong, data: frame.unmaskedData), context: context)
        case .pong:
            break
        case .text, .binary:
            guard !closeSent else { return }
            guard message == nil else { return fail(.protocolError, "a new message inside a fragmented one", context: context) }
            messageIsText = frame.opcode == .text
            messageIsCompressed = frame.rsv1
            utf8 = UTF8Validator()
            receiveFragment(frame.unmaskedData, fin: frame.fin, first: true, context: context)
        case .continuation:
            guard !closeSent else { return }
            guard message != nil else { return fail(.protocolError, "continuation frame outside a message", context: context) }
            receiveFragment(frame.unmaskedData, fin: frame.fin, first: false, context: context)
        default:
            fail(.protocolError, "reserved opcode", context: context)
        }
    }

    private func receiveFragment(_ data: ByteBuffer, fin: Bool, first: Bool, context: ChannelHandlerContext) {
        let size = (message?.readableBytes ?? 0) + data.readableBytes
        guard size <= settings.maxMessageBytes else {
            message = nil
            return fail(.messageTooLarge, "message larger than \(settings.maxMessageBytes) bytes", context: context)
        }
        if messageIsText, !messageIsCompressed {
            let valid = data.withUnsafeReadableBytes { utf8.consume($0) }
            guard valid, !fin || utf8.isComplete else {
                message = nil
                return fail(.dataInconsistentWithMessage, "text that is not UTF-8", context: context)
            }
        }
        if first {
            message = data
        } else {
            message!.writeImmutableBuffer(data)
        }
        guard fin, var complete = message else { return }
        message = nil
        if messageIsCompressed, let deflate {
            do {
                complete = try deflate.decompress(complete, limit: settings.maxMessageBytes, allocator: context.channel.allocator)
            } catch is PerMessageDeflate.TooLarge {
                return fail(.messageTooLarge, "message larger than \(settings.maxMessageBytes) bytes", context: context)
            } catch {
                return fail(.dataInconsistentWithMessage, "compressed data that does not inflate", context: context)
            }
            if messageIsText, !complete.withUnsafeReadableBytes({ UTF8Validator.isValid($0) }) {
                return fail(.dataInconsistentWithMessage, "text that is not UTF-8", context: context)
            }
        }
        application.received(WebSocketMessage(isText: messageIsText, data: complete), on: self)
    }

    private func receiveClose(_ payload: ByteBuffer, context: ChannelHandlerContext) {
        if closeSent {
            // The answer to Edge's close: the handshake is complete.
            context.close(promise: nil)
            return
        }
        var payload = payload
        var reply = context.channel.allocator.buffer(capacity: 2)
        switch payload.readableBytes {
        case 0:
            break  // no code: answered without one (RFC 6455 §5.5.1)
        case 1:
            return fail(.protocolError, "close frame with a one-byte body", context: context)
        default:
            let code = payload.readInteger(as: UInt16.self)!
            guard Self.isValidReceivedCloseCode(code) else {
                return fail(.protocolError, "close code \(code) may not be sent", context: context)
            }
            guard payload.withUnsafeReadableBytes({ UTF8Validator.isValid($0) }) else {
                return fail(.dataInconsistentWithMessage, "close reason that is not UTF-8", context: context)
            }
            reply.writeInteger(code)
        }
        writeCloseFrame(reply, context: context).assumeIsolated().whenComplete { _ in context.close(promise: nil) }
    }

    /// Close codes a peer may send (RFC 6455 §7.4): the defined ones except those reserved for reporting
    /// (1004, 1005, 1006, 1015), the IANA-registered 1012–1014, and 3000–4999 for libraries and applications.
    static func isValidReceivedCloseCode(_ code: UInt16) -> Bool {
        switch code {
        case 1000...1003, 1007...1014, 3000...4999: true
        default: false
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if needsFlush {
            needsFlush = false
            context.flush()
        }
        context.fireChannelReadComplete()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        switch error as? NIOWebSocketError {
        case .invalidFrameLength?:
            fail(.messageTooLarge, "frame larger than the limit", context: context)
        case .fragmentedControlFrame?, .multiByteControlFrameLength?:
            fail(.protocolError, "malformed control frame", context: context)
        case nil:
            context.close(promise: nil)
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ChannelShouldQuiesceEvent || event is RetireConnectionEvent {
            goAway()
            return
        }
        if let event = event as? ChannelEvent, event == .inputClosed {
            // The client stopped sending without a close frame (RFC 6455's abnormal closure, 1006): nothing more
            // can arrive, so the connection ends.
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    // MARK: outbound

    /// Sends a message to the client (one frame). `flush` false leaves it for the end of the read batch (an echo);
    /// messages from elsewhere (a channel's publisher) are flushed at once.
    func send(_ message: WebSocketMessage, flush: Bool = false) {
        guard let context, !closeSent, !ended else { return }
        var frame = WebSocketFrame(fin: true, opcode: message.isText ? .text : .binary, data: message.data)
        if let deflate, let compressed = try? deflate.compress(message.data, allocator: context.channel.allocator) {
            frame = WebSocketFrame(fin: true, rsv1: true, opcode: frame.opcode, data: compressed)
        }
        if flush {
            context.writeAndFlush(wrapOutboundOut(frame), promise: nil)
        } else {
            write(frame, context: context)
        }
    }

    /// Sends a hub message: its frame as encoded once for every subscriber, written below the frame encoder, and
    /// flushed (compressed per connection instead when permessage-deflate is on).
    func send(_ message: HubMessage) {
        guard context != nil, !closeSent, !ended else { return }
        guard deflate == nil, let below = encoderContext else {
            return send(WebSocketMessage(isText: message.isText, data: message.data), flush: true)
        }
        below.writeAndFlush(NIOAny(message.frameBytes), promise: nil)
    }

    private func write(_ frame: WebSocketFrame, context: ChannelHandlerContext) {
        context.write(wrapOutboundOut(frame), promise: nil)
        needsFlush = true
    }

    /// Whether the client is keeping up: a publisher may drop or close a session whose socket is full.
    var isWritable: Bool { context?.channel.isWritable ?? false }

    /// Starts the closing handshake with `code` (1001 by default: the server is going away), then closes the
    /// connection when the client answers or after `closeTimeout`.
    func close(code: WebSocketErrorCode = .goingAway, reason: String = "") {
        guard let context, !closeSent, !ended else { return }
        _ = writeCloseFrame(Self.closePayload(code, reason, context: context), context: context)
        closeTimer = context.eventLoop.assumeIsolated().scheduleTask(in: settings.closeTimeout) {
            context.close(promise: nil)
        }
    }

    /// Shutdown: close now with 1001.
    func goAway() {
        close(code: .goingAway, reason: "server shutting down")
    }

    /// Reload: close with 1001 after the route's grace period.
    func retire() {
        guard let context, goAwayTimer == nil else { return }
        goAwayTimer = context.eventLoop.assumeIsolated().scheduleTask(in: settings.reloadGrace) {
            self.close(code: .goingAway, reason: "configuration reloaded")
        }
    }

    /// _Fail the WebSocket Connection_ (RFC 6455 §7.1.7): a close frame with `code`, then the connection closes
    /// without waiting for the client's.
    private func fail(_ code: WebSocketErrorCode, _ reason: String, context: ChannelHandlerContext) {
        guard !closeSent else {
            context.close(promise: nil)
            return
        }
        writeCloseFrame(Self.closePayload(code, reason, context: context), context: context)
            .assumeIsolated().whenComplete { _ in context.close(promise: nil) }
    }

    /// Writes Edge's close frame with `payload` (a code and reason, or nothing) and notes that it was sent: after
    /// it only the client's close is awaited.
    private func writeCloseFrame(_ payload: ByteBuffer, context: ChannelHandlerContext) -> EventLoopFuture<Void> {
        closeSent = true
        return context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .connectionClose, data: payload)))
    }

    /// A close frame's body: the code, then the reason.
    private static func closePayload(_ code: WebSocketErrorCode, _ reason: String, context: ChannelHandlerContext) -> ByteBuffer {
        var payload = context.channel.allocator.buffer(capacity: 2 + reason.utf8.count)
        payload.write(webSocketErrorCode: code)
        payload.writeString(reason)
        return payload
    }

    // MARK: backpressure

    func read(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            context.read()
        } else {
            readPending = true
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            application.writable(self)
            if readPending {
                readPending = false
                context.read()
            }
        }
        context.fireChannelWritabilityChanged()
    }

    // MARK: keepalive

    private func scheduleKeepalive() {
        guard let context, let interval = [settings.pingInterval, settings.idleTimeout].compactMap({ $0 }).min() else { return }
        keepaliveTimer = context.eventLoop.assumeIsolated().scheduleTask(in: interval) {
            self.keepaliveTimer = nil
            self.checkIdle()
        }
    }

    private func checkIdle() {
        guard let context, !ended else { return }
        let quiet = NIODeadline.now() - lastReceived
        if let idle = settings.idleTimeout, quiet >= idle {
            close(code: .goingAway, reason: "idle timeout")
            return
        }
        if let ping = settings.pingInterval, quiet >= ping, !closeSent {
            var payload = context.channel.allocator.buffer(capacity: 8)
            payload.writeInteger(UInt64(NIODeadline.now().uptimeNanoseconds))
            context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .ping, data: payload)), promise: nil)
        }
        scheduleKeepalive()
    }
}

/// The echo endpoint: every message goes back as it came, text as text, binary as binary.
final class WebSocketEcho: WebSocketApplication {
    func received(_ message: WebSocketMessage, on session: WebSocketSession) {
        session.send(message)
    }

    func ended(_ session: WebSocketSession) {}
}

/// A WebSocket connection as its loop's registry sees it (``LoopState/webSockets``).
protocol WebSocketConnection: AnyObject {
    /// ``EdgeServices/generation`` of the configuration it was opened under.
    var generation: Int { get }
    /// Shutdown: close now (1001).
    func goAway()
    /// Reload: close (1001) after the route's grace period.
    func retire()
    /// The hub it subscribes to, if any: a reload that keeps the hub keeps the connection.
    var hub: PubSubHub? { get }
}

extension WebSocketSession: WebSocketConnection {
    var hub: PubSubHub? { (application as? WebSocketHubSubscriber)?.hub }
}
