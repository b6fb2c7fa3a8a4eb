import Logging
import NIOCore
import NIOHTTP1
import NIOHTTP2
import NIOPosix

/// Active health checks: for every group with a `health_check`, a `GET` of its path on each server every
/// `interval_seconds`, in the protocol the group speaks to its servers (HTTP/1.1, or HTTP/2 over TLS or with prior
/// knowledge), on a connection of its own, closed after the answer. `fall` failures in a row take
/// a server out of rotation and `rise` successes bring it back; each change is logged. Runs at the edge of the
/// data plane (an async loop started with the server), never on a request's path.
enum UpstreamHealthChecker {
    /// Checks the groups `groups()` returns (read again every round, so a reload's groups are checked) until the
    /// task is cancelled.
    static func run(groups: @escaping @Sendable () -> [UpstreamGroup], on loops: any EventLoopGroup, logger: Logger) async {
        var lastRun: [ObjectIdentifier: NIODeadline] = [:]
        while !Task.isCancelled {
            let now = NIODeadline.now()
            for group in groups() {
                guard let health = group.configuration.health else { continue }
                let id = ObjectIdentifier(group)
                if let last = lastRun[id], now - last < health.interval { continue }
                lastRun[id] = now
                for server in group.servers {
                    let loop = loops.next()
                    let passed = (try? await check(server, group: group, health: health, on: loop).get()) ?? false
                    if let up = server.recordCheck(passed: passed, rise: health.rise, fall: health.fall) {
                        if up {
                            logger.notice("proxy: health check passed, server back", metadata: ["upstream": "\(group.name)", "server": "\(server.key)"])
                        } else {
                            logger.warning("proxy: health check failed, server out", metadata: ["upstream": "\(group.name)", "server": "\(server.key)"])
                        }
                    }
                }
            }
            try? await Task.sleep(nanoseconds: 250_000_000)
        }
    }

    /// One check: whether `server` answers `GET path` with an expected status within the timeout.
    static func check(
        _ server: UpstreamServer, group: UpstreamGroup, health: UpstreamGroupConfiguration.HealthCheck, on loop: any EventLoop
    ) -> EventLoopFuture<Bool> {
        let promise = loop.makePromise(of: Bool.self)
        let deadline = loop.scheduleTask(in: health.timeout) { promise.succeed(false) }
        var headers = HTTPHeaders()
        headers.add(name: "host", value: server.address.description)
        headers.add(name: "user-agent", value: "edge-health-check")
        switch group.configuration.wireProtocol {
        case .http1:
            headers.add(name: "connection", value: "close")
            let head = HTTPRequestHead(version: .http1_1, method: .GET, uri: health.path, headers: headers)
            checkHTTP1(server, group: group, head: head, expected: health.expectStatus, timeout: health.timeout, on: loop, promise: promise)
        case .h2, .h2c:
            // `Host` becomes `:authority` in NIO's HTTP/2 client codec.
            let head = HTTPRequestHead(version: .http1_1, method: .GET, uri: health.path, headers: headers)
            checkHTTP2(server, group: group, head: head, expected: health.expectStatus, on: loop, promise: promise)
        }
        return promise.futureResult.always { _ in deadline.cancel() }
    }

    private static func checkHTTP1(
        _ server: UpstreamServer, group: UpstreamGroup, head: HTTPRequestHead, expected: ClosedRange<Int>, timeout: TimeAmount,
        on loop: any EventLoop, promise: EventLoopPromise<Bool>
    ) {
        OutboundConnection.connect(host: server.address.host, port: server.address.port, on: loop, timeout: timeout) { channel in
            channel.eventLoop.makeCompletedFuture {
                let sync = channel.pipeline.syncOperations
                try group.addTLSHandler(for: server, to: sync)
                try sync.addHTTPClientHandlers()
                try sync.addHandler(StatusReader(expected: expected, promise: promise))
            }
        }
            .whenComplete { result in
                switch result {
                case .success(let channel):
                    channel.write(HTTPClientRequestPart.head(head), promise: nil)
                    channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
                    promise.futureResult.whenComplete { _ in channel.close(promise: nil) }
                case .failure:
                    promise.succeed(false)
                }
            }
    }

    /// The check on an HTTP/2 connection set up as the proxy's own (``UpstreamHTTP2Connection/connect(_:group:on:)``:
    /// ALPN must agree on `h2` over TLS), with the request on one stream.
    private static func checkHTTP2(
        _ server: UpstreamServer, group: UpstreamGroup, head: HTTPRequestHead, expected: ClosedRange<Int>,
        on loop: any EventLoop, promise: EventLoopPromise<Bool>
    ) {
        UpstreamHTTP2Connection.connect(server, group: group, on: loop).whenComplete { result in
            guard case .success(let connection) = result else {
                promise.succeed(false)
                return
            }
            promise.futureResult.whenComplete { _ in connection.channel.close(promise: nil) }
            let opened = loop.makePromise(of: (any Channel).self)
            let scheme: HTTP2FramePayloadToHTTP1ClientCodec.HTTPProtocol = server.tls ? .https : .http
            connection.multiplexer.createStreamChannel(promise: opened) { stream in
                stream.eventLoop.makeCompletedFuture {
                    let sync = stream.pipeline.syncOperations
                    try sync.addHandler(HTTP2FramePayloadToHTTP1ClientCodec(httpProtocol: scheme))
                    try sync.addHandler(StatusReader(expected: expected, promise: promise))
                }
            }
            opened.futureResult.whenComplete { result in
                switch result {
                case .success(let stream):
                    stream.write(HTTPClientRequestPart.head(head), promise: nil)
                    stream.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
                case .failure:
                    promise.succeed(false)
                }
            }
        }
    }

    /// Completes the check with whether the response status is one of `expected`.
    private final class StatusReader: ChannelInboundHandler {
        typealias InboundIn = HTTPClientResponsePart
        let expected: ClosedRange<Int>
        let promise: EventLoopPromise<Bool>

        init(expected: ClosedRange<Int>, promise: EventLoopPromise<Bool>) {
            self.expected = expected
            self.promise = promise
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            if case .head(let head) = unwrapInboundIn(data), head.status.code >= 200 {
                promise.succeed(expected.contains(Int(head.status.code)))
            }
        }

        func channelInactive(context: ChannelHandlerContext) {
            promise.succeed(false)
            context.fireChannelInactive()
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            promise.succeed(false)
            context.close(promise: nil)
        }
    }
}
