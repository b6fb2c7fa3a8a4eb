import NIOCore
import NIOSSL
import NIOTLS

extension TLSVersionLabel {
    init(_ version: TLSVersion?) {
        switch version {
        case .tlsv12: self = .tls12
        case .tlsv13: self = .tls13
        case nil: self = .none
        default: self = .other
        }
    }

}

/// Sits behind the TLS handler of a connection during its handshake: counts the handshake, or its failure by
/// reason (``TLSFailureReason``), in the loop's metrics, then leaves the pipeline.
final class TLSHandshakeObserver: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny

    private let metrics: LoopMetrics
    /// The failure's reason, once an error has named it (a handshake that fails also closes).
    var failure: TLSFailureReason?
    private(set) var completed = false

    init(metrics: LoopMetrics) {
        self.metrics = metrics
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case TLSUserEvent.handshakeCompleted = event, !completed {
            completed = true
            let version = (try? context.pipeline.syncOperations.handler(type: NIOSSLServerHandler.self))?.tlsVersion
            metrics.tlsHandshakeCompleted(TLSVersionLabel(version))
            context.fireUserInboundEventTriggered(event)
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if !completed, failure == nil { failure = Self.reason(of: error) }
        context.fireErrorCaught(error)
    }

    /// Counts a handshake that never completed: `timedOut` when the handshake deadline closed it.
    func connectionClosed(timedOut: Bool) {
        guard !completed else { return }
        completed = true
        metrics.tlsHandshakeFailed(timedOut ? .timeout : failure ?? .closed)
    }

    static func reason(of error: any Error) -> TLSFailureReason {
        let text = String(describing: error).uppercased()
        if text.contains("HTTP_REQUEST") { return .plainHTTP }
        if text.contains("NO_SHARED_CIPHER") { return .noSharedCipher }
        if text.contains("UNSUPPORTED_PROTOCOL") || text.contains("WRONG_VERSION") || text.contains("PROTOCOL_VERSION") {
            return .protocolVersion
        }
        if text.contains("CERTIFICATE") || text.contains("UNKNOWN_CA") { return .certificateRejected }
        if let ssl = error as? NIOSSLError, case .uncleanShutdown = ssl { return .closed }
        return .other
    }
}
