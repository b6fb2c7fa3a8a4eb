import NIOCore
import NIOPosix

/// Opens a TCP connection on the event loop of the connection that needs it, whichever transport that loop runs:
/// NIO's `ClientBootstrap` on epoll loops, ``URingConnector`` on io_uring loops. The proxy's pools, HTTP/2
/// upstreams and health checks connect through here, so that they run on both transports unchanged.
enum OutboundConnection {
    static func connect(
        host: String, port: Int, on eventLoop: any EventLoop, timeout: TimeAmount, noDelay: Bool = false,
        autoRead: Bool = true, initializer: @escaping @Sendable (any Channel) -> EventLoopFuture<Void>
    ) -> EventLoopFuture<any Channel> {
        if let loop = eventLoop as? URingEventLoop {
            let connector = URingConnector(connectTimeout: timeout, noDelay: noDelay, autoRead: autoRead)
            return connector.connect(host: host, port: port, on: loop, initializer: initializer)
        }
        var bootstrap = ClientBootstrap(group: eventLoop).connectTimeout(timeout).channelInitializer(initializer)
        if noDelay { bootstrap = bootstrap.channelOption(.socketOption(.tcp_nodelay), value: 1) }
        if !autoRead { bootstrap = bootstrap.channelOption(.autoRead, value: false) }
        return bootstrap.connect(host: host, port: port)
    }
}
