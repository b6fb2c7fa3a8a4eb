import NIOCore
import NIOHTTP1
import NIOHTTP2
import NIOSSL
import NIOTLS

/// Builds the channel pipelines of accepted connections: plain HTTP/1.1, and TLS with ALPN choosing
/// HTTP/2 (`h2`) or HTTP/1.1. Both protocols end in the same ``EdgeRequestHandler``.
enum HTTPPipelines {
    /// Configures a plain-TCP connection for HTTP/1.1. Must run on the channel's event loop.
    static func configurePlain(_ channel: any Channel, services: EdgeServices, client: ClientAddress? = nil) throws {
        let limits = services.configuration.limits
        let client = client ?? ClientAddress(channel.remoteAddress)
        try channel.pipeline.syncOperations.addHandler(
            ConnectionGuard(
                state: services.state, perClient: services.connectionsPerClient, maxConnections: limits.maxConnections,
                handshakeTimeout: nil, loop: services.loops.state(for: channel.eventLoop), generation: services.generation,
                client: client
            )
        )
        try configureHTTP1(channel, services: services, tls: .none, client: client)
    }

    /// Configures a TLS connection: handshake deadline, TLS, then ALPN. Must run on the channel's event loop.
    static func configureTLS(
        _ channel: any Channel, certificates: ListenerCertificates, services: EdgeServices, client: ClientAddress? = nil
    ) throws {
        let configuration = services.configuration
        let client = client ?? ClientAddress(channel.remoteAddress)
        let guardHandler = ConnectionGuard(
            state: services.state, perClient: services.connectionsPerClient,
            maxConnections: configuration.limits.maxConnections, handshakeTimeout: configuration.timeouts.tlsHandshake,
            loop: services.loops.state(for: channel.eventLoop), generation: services.generation, client: client
        )
        let boundGuard = NIOLoopBound(guardHandler, eventLoop: channel.eventLoop)
        let sync = channel.pipeline.syncOperations
        let handshake = TLSHandshakeObserver(metrics: services.loops.state(for: channel.eventLoop).observer.metrics)
        guardHandler.handshakeObserver = handshake
        try sync.addHandler(guardHandler)
        if certificates.isSingle {
            try sync.addHandler(NIOSSLServerHandler(context: certificates.fallback.context(acceptsECDSA: true)!))
        } else {
            // The certificate depends on the ClientHello (SNI, key types): NIOSSL's handler is put in place once it
            // has arrived, where the sniffer stands.
            try sync.addHandler(
                ClientHelloSniffer(certificates: certificates) { chosen, context in
                    try context.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: chosen), position: .after(context.handler))
                }
            )
        }
        try sync.addHandler(handshake)
        try sync.addHandler(
            ApplicationProtocolNegotiationHandler { result, channel in
                channel.eventLoop.makeCompletedFuture {
                    // The handshake is over: its version goes to the handlers, for the access log.
                    let version = TLSVersionLabel(try? channel.pipeline.syncOperations.handler(type: NIOSSLServerHandler.self).tlsVersion)
                    let kind: ConnectionProtocol
                    switch result {
                    case .negotiated("h2"):
                        try configureHTTP2(channel, services: services, client: client, tls: version)
                        kind = .http2
                    default:
                        try configureHTTP1(channel, services: services, tls: version, client: client)
                        kind = .http1
                    }
                    boundGuard.value.markProtocolReady(kind, tls: version)
                }
            }
        )
    }

    /// Adds the HTTP/1.1 fast path, which also keeps the keep-alive timer. NIO's HTTP/1.1 codec and the request
    /// handler are added behind it only when it hands the connection over (``addFullHTTP1(after:pipeline:services:loop:client:tls:)``),
    /// so a connection that only ever sees simple requests carries — and passes every read and flush through —
    /// two handlers instead of eight.
    /// `tls` is the connection's TLS version (`.none` for plain TCP).
    static func configureHTTP1(_ channel: any Channel, services: EdgeServices, tls: TLSVersionLabel, client: ClientAddress) throws {
        let loop = services.loops.state(for: channel.eventLoop)
        try channel.pipeline.syncOperations.addHandler(
            HTTP1FastPathHandler(services: services, loop: loop, client: client, tls: tls)
        )
    }

    /// Adds, behind the fast path, NIO's HTTP/1.1 codec with pipelining assistance, parse-error answers and the
    /// request handler: the pipeline for everything the fast path does not answer itself.
    static func addFullHTTP1(
        after fastPath: HTTP1FastPathHandler, pipeline: ChannelPipeline.SynchronousOperations, services: EdgeServices,
        loop: LoopState, client: ClientAddress, tls: TLSVersionLabel
    ) throws {
        let configuration = services.configuration
        var decoderLimits = NIOHTTPDecoderLimitConfiguration()
        decoderLimits.maxHeaderListSize = configuration.limits.maxHeaderBytes
        decoderLimits.maxHeaderFieldSize = configuration.limits.maxHeaderBytes
        try pipeline.configureHTTPServerPipeline(
            position: .after(fastPath),
            withPipeliningAssistance: true,
            withServerUpgrade: nil,
            withErrorHandling: false,
            withOutboundHeaderValidation: false,
            withEncoderConfiguration: .init(),
            withDecoderLimitConfiguration: decoderLimits
        )
        try pipeline.addHandler(
            HTTP1ProtocolErrorHandler(serverName: configuration.serverName, observer: loop.observer, client: client, tls: tls)
        )
        try pipeline.addHandler(EdgeRequestHandler(services: services, loop: loop, isHTTP2: false, client: client, tls: tls))
        try pipeline.addHandler(CloseOnErrorHandler())
    }

    /// Adds NIOHTTP2, the HTTP/2 fast path (which also checks every inbound header block and keeps the
    /// connection's lifecycle: idle timeout, graceful shutdown with GOAWAY, half-close) and, for every stream it
    /// does not answer, a stream channel with the HTTP/1-style codec and the request handler.
    static func configureHTTP2(
        _ channel: any Channel, services: EdgeServices, client: ClientAddress, tls: TLSVersionLabel = .other
    ) throws {
        let configuration = services.configuration
        var connection = NIOHTTP2Handler.ConnectionConfiguration()
        // Inbound header blocks are checked by the fast path (HTTP2HeaderBlockRules), every one of them; NIOHTTP2's
        // check would repeat that and also re-check every response block Edge sends.
        connection.headerBlockValidation = .disabled
        // NIOHTTP2 enforces its stream limit as a connection error; the fast path refuses the streams beyond the
        // advertised limit, so NIOHTTP2 is given room above it (see HTTP2StreamLimitAdvertiser).
        let streamLimit = configuration.limits.http2MaxConcurrentStreams
        connection.initialSettings = [
            HTTP2Setting(
                parameter: .maxConcurrentStreams, value: HTTP2FastPathHandler.enforcedStreamLimit(advertising: streamLimit)
            ),
            HTTP2Setting(parameter: .maxHeaderListSize, value: configuration.limits.maxHeaderBytes),
            HTTP2Setting(parameter: .headerTableSize, value: configuration.limits.http2HeaderTableSize),
        ]
        if services.router.hasUpgradeRoutes {
            // WebSocket over HTTP/2 (RFC 8441 §3): clients may open a stream with extended CONNECT.
            connection.initialSettings.append(HTTP2Setting(parameter: .enableConnectProtocol, value: 1))
        }
        let stream = NIOHTTP2Handler.StreamConfiguration()
        let sync = channel.pipeline.syncOperations
        let loop = services.loops.state(for: channel.eventLoop)
        try sync.addHandler(HTTP2GoAwayCloser())
        try sync.addHandler(WriteCoalescingHandler())
        // The connection layer fires frames and stream events down the pipeline. The fast path sees each new
        // stream's HEADERS first; NIOHTTP2's connection manager is not used (the fast path does its work: see
        // HTTP2ConnectionLifecycle).
        // The fast path is the connection layer's frame delegate: it sees each frame as it is encoded, to reset
        // responses that cannot move (flow control) for `send_seconds`.
        let fastPath = HTTP2FastPathHandler(services: services, loop: loop, client: client, tls: tls)
        switch configuration.http2Engine {
        case .nio:
            try sync.addHandler(HTTP2StreamLimitAdvertiser(advertised: streamLimit))
            try sync.addHandler(HTTP2StreamClosedRewriter())
            try sync.addHandler(
                NIOHTTP2Handler(mode: .server, frameDelegate: fastPath, connectionConfiguration: connection, streamConfiguration: stream)
            )
        case .edge:
            let settings = HTTP2ServerConnection.Settings(
                maxConcurrentStreams: streamLimit,
                enforcedStreamLimit: HTTP2FastPathHandler.enforcedStreamLimit(advertising: streamLimit),
                maxHeaderListSize: configuration.limits.maxHeaderBytes,
                headerTableSize: configuration.limits.http2HeaderTableSize,
                enableConnectProtocol: services.router.hasUpgradeRoutes
            )
            let connection = HTTP2ServerConnection(settings: settings, delegate: fastPath, allocator: channel.allocator)
            fastPath.connection = connection
            connection.fastPath = fastPath
            try sync.addHandler(connection)
        }
        try sync.addHandler(fastPath)
        try sync.addHandler(
            HTTP2StreamMultiplexer(
                mode: .server, channel: channel, targetWindowSize: 1 << 20,
                outboundBufferSizeHighWatermark: stream.outboundBufferSizeHighWatermark,
                outboundBufferSizeLowWatermark: stream.outboundBufferSizeLowWatermark
            ) { streamChannel in
                streamChannel.eventLoop.makeCompletedFuture {
                    let streamSync = streamChannel.pipeline.syncOperations
                    try streamSync.addHandler(HTTP2FramePayloadToHTTP1ServerCodec())
                    try streamSync.addHandler(
                        EdgeRequestHandler(
                            services: services, loop: services.loops.state(for: streamChannel.eventLoop), isHTTP2: true, client: client,
                            tls: tls
                        )
                    )
                }
            }
        )
    }
}
