import NIOCore
import NIOTLS

/// First handler of every accepted connection: enforces `max_connections` and `max_connections_per_ip`, the
/// TLS handshake deadline, and
/// closes connections that are still negotiating when a graceful shutdown starts.
///
/// Once the connection speaks HTTP (at once for plain listeners, after ALPN for TLS) it removes itself, so
/// it costs nothing per request; the connection count is released by the channel's close future.
final class ConnectionGuard: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private let state: ServerState
    private let perClient: PerClientLimit
    private let maxConnections: Int
    private let handshakeTimeout: TimeAmount?
    private let loop: LoopState
    private var handshakeTimer: Scheduled<Void>?
    private var context: ChannelHandlerContext?
    private var sawFirstRead = false
    private let generation: Int
    /// A reload retired the connection while it was still negotiating: the event goes to the protocol's
    /// handlers once they are installed.
    private var retirePending = false
    /// Counts the TLS handshake (TLS listeners): told when the connection closes before it completed.
    var handshakeObserver: TLSHandshakeObserver?
    private var handshakeTimedOut = false
    /// The protocol and TLS version the connection was counted under in the open connections, once it speaks HTTP.
    private var counted: (ConnectionProtocol, TLSVersionLabel)?

    /// - Parameters:
    ///   - handshakeTimeout: Deadline for the TLS handshake; `nil` for plain listeners.
    ///   - loop: The state of the connection's event loop, where the open connection is registered.
    ///   - generation: The configuration generation the connection is accepted under.
    /// The client's address: the TCP peer's, or the one a PROXY protocol header named.
    private let client: ClientAddress?

    init(
        state: ServerState, perClient: PerClientLimit, maxConnections: Int, handshakeTimeout: TimeAmount?,
        loop: LoopState, generation: Int, client: ClientAddress? = nil
    ) {
        self.client = client
        self.loop = loop
        self.generation = generation
        self.state = state
        self.perClient = perClient
        self.maxConnections = maxConnections
        self.handshakeTimeout = handshakeTimeout
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        handshakeTimer?.cancel()
        handshakeTimer = nil
        self.context = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        guard state.admitConnection(limit: maxConnections) else {
            context.close(promise: nil)
            return
        }
        let client = self.client ?? ClientAddress(context.channel.remoteAddress)
        guard perClient.admit(client) else {
            state.connectionClosed()
            context.close(promise: nil)
            return
        }
        let state = self.state
        let perClient = self.perClient
        let channel = context.channel
        let loop = self.loop
        loop.connections[ObjectIdentifier(channel)] = OpenConnection(channel: channel, generation: generation)
        channel.closeFuture.assumeIsolated().whenComplete { _ in
            state.connectionClosed()
            perClient.release(client)
            loop.connections[ObjectIdentifier(channel)] = nil
            if let (kind, tls) = self.counted {
                loop.observer.metrics.connectionClosed(kind, tls: tls)
            } else {
                self.handshakeObserver?.connectionClosed(timedOut: self.handshakeTimedOut)
            }
        }
        if let handshakeTimeout {
            handshakeTimer = context.eventLoop.assumeIsolated().scheduleTask(in: handshakeTimeout) {
                self.handshakeTimedOut = true
                loop.observer.metrics.timedOut(.tlsHandshake)
                context.close(promise: nil)
            }
            context.fireChannelActive()
        } else {
            counted = (.http1, TLSVersionLabel.none)
            loop.observer.metrics.connectionOpened(.http1, tls: .none)
            context.fireChannelActive()
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        }
    }

    /// On a TLS listener, a first read that starts like an HTTP request line instead of a TLS record (`0x16`)
    /// is plain HTTP sent to the HTTPS port: it gets a readable 400, as nginx gives, instead of a silent close
    /// by the TLS handshake. Later reads pass untouched (the guard leaves once ALPN has chosen).
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard handshakeTimeout != nil, !sawFirstRead else {
            context.fireChannelRead(data)
            return
        }
        sawFirstRead = true
        let buffer = unwrapInboundIn(data)
        guard let first = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self),
            first >= UInt8(ascii: "A"), first <= UInt8(ascii: "Z")
        else {
            context.fireChannelRead(data)
            return
        }
        handshakeObserver?.failure = .plainHTTP
        let text = "This port speaks HTTPS: the plain HTTP request was sent to the HTTPS port.\n"
        var answer = ResponseHeaders.serializeHead(
            status: .badRequest,
            headers: ["content-type": "text/plain; charset=utf-8", "content-length": String(text.utf8.count), "connection": "close"]
        )
        answer.writeStaticString("\r\n")
        answer.writeString(text)
        context.writeAndFlush(NIOAny(answer)).assumeIsolated().whenComplete { _ in context.close(promise: nil) }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ChannelShouldQuiesceEvent {
            // Still negotiating TLS or ALPN: nothing in flight that could finish, so close now.
            context.close(promise: nil)
            return
        }
        if event is RetireConnectionEvent {
            retirePending = true
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    /// Called once ALPN has chosen a protocol and its handlers are installed: the handshake deadline no
    /// longer applies and the guard leaves the pipeline.
    func markProtocolReady(_ kind: ConnectionProtocol, tls: TLSVersionLabel) {
        guard let context else { return }
        counted = (kind, tls)
        loop.observer.metrics.connectionOpened(kind, tls: tls)
        let pipeline = context.pipeline
        pipeline.syncOperations.removeHandler(context: context, promise: nil)
        if retirePending { pipeline.fireUserInboundEventTriggered(RetireConnectionEvent()) }
    }
}
