import NIOCore
import NIOTLS

/// First handler of every accepted connection: enforces `max_connections` and `max_connections_per_ip`, the
/// TLS handshake deadline, and
/// closes connections that are still negotiating when a graceful shutdown starts.
///
/// Once the connection speaks HTTP (at once for plain listeners, after ALPN for TLS) it removes itself, so
/// it costs nothing per request; the connection count is released by the channel's close future.
final class ConnectionGuard: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny
    typealias InboundOut = NIOAny

    private let state: ServerState
    private let perClient: PerClientConnectionLimit
    private let maxConnections: Int
    private let handshakeTimeout: TimeAmount?
    private var handshakeTimer: Scheduled<Void>?
    private var context: ChannelHandlerContext?

    /// - Parameters:
    ///   - handshakeTimeout: Deadline for the TLS handshake; `nil` for plain listeners.
    init(state: ServerState, perClient: PerClientConnectionLimit, maxConnections: Int, handshakeTimeout: TimeAmount?) {
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
        let client = ClientAddress(context.channel.remoteAddress)
        guard perClient.admit(client) else {
            state.connectionClosed()
            context.close(promise: nil)
            return
        }
        let state = self.state
        let perClient = self.perClient
        context.channel.closeFuture.whenComplete { _ in
            state.connectionClosed()
            perClient.release(client)
        }
        if let handshakeTimeout {
            handshakeTimer = context.eventLoop.assumeIsolated().scheduleTask(in: handshakeTimeout) {
                context.close(promise: nil)
            }
            context.fireChannelActive()
        } else {
            context.fireChannelActive()
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ChannelShouldQuiesceEvent {
            // Still negotiating TLS or ALPN: nothing in flight that could finish, so close now.
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    /// Called once ALPN has chosen a protocol and its handlers are installed: the handshake deadline no
    /// longer applies and the guard leaves the pipeline.
    func markProtocolReady() {
        guard let context else { return }
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }
}
