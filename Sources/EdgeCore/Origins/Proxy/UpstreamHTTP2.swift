import NIOCore
import NIOTLS
import NIOHTTP1
import NIOHTTP2
import NIOPosix

/// One HTTP/2 connection to an upstream server (`protocol = "h2"` over TLS with ALPN, or `"h2c"` with prior
/// knowledge), carrying many exchanges at once: each on its own stream channel, with NIO's HTTP/2-to-HTTP/1
/// client codec and ``UpstreamStreamHandler`` (the exchange logic of an HTTP/1.1 connection's handler) behind it, so that timeouts,
/// backpressure (`autoRead` off on the stream: NIOHTTP2 opens the flow-control window only as the client takes
/// the body) and trailers (gRPC's `grpc-status`) work the same. Used only on its channel's event loop, like
/// ``UpstreamConnection``.
final class UpstreamHTTP2Connection: @unchecked Sendable {
    let channel: any Channel
    let multiplexer: NIOHTTP2Handler.StreamMultiplexer
    let key: String
    let isTLS: Bool
    let idleTimeout: TimeAmount
    /// Streams opened so far, and those still open.
    var streamsStarted = 0
    var openStreams = 0
    /// No new stream goes on this connection (a stream failed as if the server had stopped taking them); it closes
    /// once its open streams end.
    var retired = false
    /// While no stream is open: when the connection is closed unless one starts.
    var idleUntil = NIODeadline.distantFuture

    init(channel: any Channel, multiplexer: NIOHTTP2Handler.StreamMultiplexer, key: String, isTLS: Bool, idleTimeout: TimeAmount) {
        self.channel = channel
        self.multiplexer = multiplexer
        self.key = key
        self.isTLS = isTLS
        self.idleTimeout = idleTimeout
    }

    var isUsable: Bool { channel.isActive && !retired }

    /// The server sent GOAWAY: it takes no new stream on this connection (those it still serves finish), so the
    /// next request opens another connection, and this one closes once its streams end. A server that shuts down
    /// gracefully may keep the connection open for a long time after; new streams sent there would wait in vain.
    func goAwayReceived() {
        retired = true
        if openStreams == 0 { channel.close(promise: nil) }
    }

    /// Opens a stream for one exchange.
    func openStream(on eventLoop: any EventLoop, closed: @escaping () -> Void) -> EventLoopFuture<UpstreamConnection> {
        streamsStarted += 1
        openStreams += 1
        idleUntil = .distantFuture
        let promise = eventLoop.makePromise(of: (any Channel).self)
        let scheme: HTTP2FramePayloadToHTTP1ClientCodec.HTTPProtocol = isTLS ? .https : .http
        multiplexer.createStreamChannel(promise: promise) { stream in
            stream.eventLoop.makeCompletedFuture {
                try stream.syncOptions?.setOption(ChannelOptions.autoRead, value: false)
                let sync = stream.pipeline.syncOperations
                try sync.addHandler(HTTP2FramePayloadToHTTP1ClientCodec(httpProtocol: scheme))
                try sync.addHandler(UpstreamStreamHandler())
            }
        }
        let key = self.key
        var opened = false
        return promise.futureResult.assumeIsolated().flatMapThrowing { stream in
            opened = true
            stream.closeFuture.assumeIsolated().whenComplete { _ in closed() }
            let handler = try stream.pipeline.syncOperations.handler(type: UpstreamStreamHandler.self)
            return UpstreamConnection(channel: stream, handler: handler, key: key, parent: self)
        }.flatMapErrorThrowing { _ in
            if !opened { closed() }  // the stream never opened, so it will not close either
            throw UpstreamFailure(cause: .closed)
        }.nonisolated()
    }

    /// Connects to `server` and starts HTTP/2 on the connection (the preface and SETTINGS go out at once; over TLS
    /// they wait in NIOSSL for the handshake, whose ALPN must pick `h2`).
    static func connect(
        _ server: UpstreamServer, group: UpstreamGroup, on eventLoop: any EventLoop
    ) -> EventLoopFuture<UpstreamHTTP2Connection> {
        let settings = group.configuration
        return OutboundConnection.connect(
            host: server.address.host, port: server.address.port, on: eventLoop, timeout: settings.connectTimeout, noDelay: true
        ) { channel in
            channel.eventLoop.makeCompletedFuture {
                let sync = channel.pipeline.syncOperations
                try group.addTLSHandler(for: server, to: sync)
                if server.tls { try sync.addHandler(ALPNRequirement(protocol: "h2")) }
            }
        }
            .flatMapThrowing { channel in
                var connection = NIOHTTP2Handler.ConnectionConfiguration()
                // Large windows, so that one stream can move a body at full speed; backpressure is per stream.
                connection.initialSettings = [
                    HTTP2Setting(parameter: .maxConcurrentStreams, value: 100),
                    HTTP2Setting(parameter: .initialWindowSize, value: 1 << 20),
                    HTTP2Setting(parameter: .maxHeaderListSize, value: 1 << 16),
                ]
                let multiplexer = try channel.pipeline.syncOperations.configureHTTP2Pipeline(
                    mode: .client, connectionConfiguration: connection, streamConfiguration: .init()
                ) { pushed in
                    pushed.close()  // no server push is asked for (SETTINGS_ENABLE_PUSH is 1 by default, but Edge never uses one)
                }
                let made = UpstreamHTTP2Connection(
                    channel: channel, multiplexer: multiplexer, key: server.key, isTLS: server.tls,
                    idleTimeout: settings.idleTimeout
                )
                try channel.pipeline.syncOperations.addHandler(GoAwayWatcher { [weak made] in made?.goAwayReceived() })
                return made
            }
            .flatMapErrorThrowing { error in
                if let failure = error as? UpstreamFailure { throw failure }
                throw UpstreamFailure(cause: .connect(UpstreamPool.describe(error)))
            }
    }
}

/// Tells the connection when the server's GOAWAY arrives (NIOHTTP2 passes the root stream's frames on).
private final class GoAwayWatcher: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTP2Frame
    let received: () -> Void

    init(_ received: @escaping () -> Void) {
        self.received = received
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .goAway = unwrapInboundIn(data).payload { received() }
        context.fireChannelRead(data)
    }
}

/// Closes a TLS connection whose handshake did not agree on `protocol` by ALPN (a server that does not speak
/// HTTP/2 would otherwise read the HTTP/2 preface as a malformed HTTP/1.1 request).
private final class ALPNRequirement: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    let required: String

    init(protocol required: String) {
        self.required = required
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case .handshakeCompleted(let negotiated)? = event as? TLSUserEvent {
            if negotiated == required {
                context.pipeline.syncOperations.removeHandler(self, promise: nil)
            } else {
                context.fireErrorCaught(UpstreamFailure(cause: .connect("the server did not agree to \(required) by ALPN")))
                context.close(promise: nil)
                return
            }
        }
        context.fireUserInboundEventTriggered(event)
    }
}
