import NIOCore
import NIOTLS

/// Waits for the TLS handshake, then installs the HTTP/1.1 or HTTP/2 handlers for the protocol ALPN chose.
///
/// Handshake failures arrive here too; they are reported to the delegate as a failed connection.
final class ProtocolSelectionHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer

    private let choice: ProtocolChoice
    private let delegate: any TransportDelegate
    private let install: (ChannelHandlerContext, HTTPVersion) throws -> Void
    private var failure: TransportFailure?
    private var handedOver = false

    /// A handler that installs the protocol with `install` once the handshake has picked one.
    init(choice: ProtocolChoice, delegate: any TransportDelegate, install: @escaping (ChannelHandlerContext, HTTPVersion) throws -> Void) {
        self.choice = choice
        self.delegate = delegate
        self.install = install
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard case TLSUserEvent.handshakeCompleted(let negotiated) = event else {
            context.fireUserInboundEventTriggered(event)
            return
        }
        let version: HTTPVersion = negotiated == "h2" ? .http2 : .http1
        if choice == .http2 && version != .http2 {
            failure = TransportFailure(kind: .tls, message: "the server did not agree to HTTP/2 over ALPN (it chose \(negotiated ?? "nothing"))")
            context.close(promise: nil)
            return
        }
        do {
            handedOver = true
            try install(context, version)
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        } catch {
            handedOver = false
            failure = TransportFailure(kind: .protocol, message: "could not set up \(version): \(error)")
            context.close(promise: nil)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if failure == nil { failure = FailureClassifier.classify(error, beforeReady: true) }
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        if !handedOver {
            delegate.transportClosed(outstanding: 0, failure: failure ?? TransportFailure(kind: .tls, message: "the server closed the connection during the TLS handshake"))
        }
        context.fireChannelInactive()
    }
}

/// The HTTP version spoken on one connection.
enum HTTPVersion: CustomStringConvertible {
    /// HTTP/1.1.
    case http1
    /// HTTP/2.
    case http2

    /// The ALPN name.
    var description: String {
        switch self {
        case .http1: "http/1.1"
        case .http2: "h2"
        }
    }
}
