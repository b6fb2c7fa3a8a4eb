import NIOCore
import NIOTLS

/// First handler of every accepted connection: enforces `max_connections`, the TLS handshake deadline, and
/// closes connections that are still negotiating when a graceful shutdown starts.
final class ConnectionGuard: ChannelInboundHandler {
    typealias InboundIn = NIOAny
    typealias InboundOut = NIOAny

    private let state: ServerState
    private let maxConnections: Int
    private let handshakeTimeout: TimeAmount?
    private var admitted = false
    private var handshakeTimer: Scheduled<Void>?
    /// Set once the HTTP handlers are in place; until then a quiesce request closes the connection.
    private var protocolReady: Bool

    /// - Parameters:
    ///   - handshakeTimeout: Deadline for the TLS handshake; `nil` for plain listeners.
    init(state: ServerState, maxConnections: Int, handshakeTimeout: TimeAmount?) {
        self.state = state
        self.maxConnections = maxConnections
        self.handshakeTimeout = handshakeTimeout
        self.protocolReady = handshakeTimeout == nil
    }

    func channelActive(context: ChannelHandlerContext) {
        guard state.admitConnection(limit: maxConnections) else {
            context.close(promise: nil)
            return
        }
        admitted = true
        if let handshakeTimeout {
            handshakeTimer = context.eventLoop.assumeIsolated().scheduleTask(in: handshakeTimeout) {
                context.close(promise: nil)
            }
        }
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        handshakeTimer?.cancel()
        if admitted {
            admitted = false
            state.connectionClosed()
        }
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        switch event {
        case let tlsEvent as TLSUserEvent:
            if case .handshakeCompleted = tlsEvent {
                handshakeTimer?.cancel()
                handshakeTimer = nil
            }
        case is ChannelShouldQuiesceEvent where !protocolReady:
            context.close(promise: nil)
            return
        default:
            break
        }
        context.fireUserInboundEventTriggered(event)
    }

    /// Called once ALPN has chosen a protocol and its handlers are installed.
    func markProtocolReady() {
        protocolReady = true
    }
}
