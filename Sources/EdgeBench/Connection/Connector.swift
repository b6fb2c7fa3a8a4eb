import NIOCore
import NIOHTTP2
import NIOPosix
import NIOSSL

/// Opens load connections: TCP, then TLS with ALPN when the URL is https, then the HTTP/1.1 or
/// HTTP/2 handlers, all reporting to the connection's ``TransportDelegate``.
struct Connector: Sendable {
    /// The resolved server address.
    let address: SocketAddress
    /// The TLS context, for https URLs.
    let tls: NIOSSLContext?
    /// The SNI and certificate host name (`nil` for IP literals).
    let serverHostname: String?
    /// The HTTP version to speak.
    let choice: ProtocolChoice
    /// The request every connection sends.
    let template: RequestTemplate
    /// HTTP/1.1 pipelining depth.
    let pipelineDepth: Int
    /// HTTP/2 concurrent streams.
    let streams: Int
    /// The TCP connect timeout.
    let connectTimeout: TimeAmount

    /// Starts one connection on `eventLoop`; its events go to `delegate`. The future fails only when the TCP connect does.
    func connect(on eventLoop: any EventLoop, delegate: NIOLoopBound<any TransportDelegate>) -> EventLoopFuture<any Channel> {
        let connector = self
        return ClientBootstrap(group: eventLoop)
            .connectTimeout(connectTimeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try connector.configure(channel.pipeline.syncOperations, delegate: delegate.value)
                }
            }
            .connect(to: address)
    }

    private func configure(_ pipeline: ChannelPipeline.SynchronousOperations, delegate: any TransportDelegate) throws {
        guard let tls else {
            try install(choice == .http2 ? .http2 : .http1, into: pipeline, position: .last, delegate: delegate)
            return
        }
        try pipeline.addHandler(NIOSSLClientHandler(context: tls, serverHostname: serverHostname))
        let connector = self
        try pipeline.addHandler(ProtocolSelectionHandler(choice: choice, delegate: delegate) { context, version in
            // The selection handler is last in the pipeline, so the protocol handlers go after it.
            try connector.install(version, into: context.pipeline.syncOperations, position: .last, delegate: delegate)
        })
    }

    private func install(_ version: HTTPVersion, into pipeline: ChannelPipeline.SynchronousOperations, position: ChannelPipeline.SynchronousOperations.Position, delegate: any TransportDelegate) throws {
        switch version {
        case .http1:
            try pipeline.addHandler(HTTP1LoadHandler(template: template, depth: pipelineDepth, delegate: delegate), position: position)
        case .http2:
            let handlers: [any ChannelHandler] = [
                ByteCountingHandler(delegate: delegate),
                ByteToMessageHandler(HTTP2FrameAligner()),
                // Header-block and content-length validation are for servers guarding themselves; a load generator
                // skips them (they were a fifth of its HTTP/2 cost) and still counts malformed framing as errors.
                NIOHTTP2Handler(
                    mode: .client, initialSettings: HTTP2LoadHandler.initialSettings,
                    headerBlockValidation: .disabled, contentLengthValidation: .disabled
                ),
                HTTP2LoadHandler(template: template, depth: streams, delegate: delegate),
            ]
            try pipeline.addHandlers(handlers, position: position)
        }
    }
}
