import Glibc
import NIOCore
import NIOPosix

/// Binds a listener on the io_uring transport: what NIO's `ServerBootstrap` does for its sockets, with one
/// listening socket per loop (`SO_REUSEPORT`; thread per core).
enum URingListener {
    /// One ``URingServerChannel`` per loop of `group`, all on `address` (the first binds and, for port 0, picks the
    /// port the others take). `serverInitializer` runs on each server channel; each accepted connection gets
    /// `childOptions`, then `childInitializer`, and is registered and activated.
    static func bind(
        group: URingEventLoopGroup, address: SocketAddress, backlog: Int32,
        serverInitializer: @escaping @Sendable (any Channel) -> EventLoopFuture<Void>,
        childOptions: @escaping @Sendable (URingSocketChannel) throws -> Void,
        childInitializer: @escaping @Sendable (any Channel) -> EventLoopFuture<Void>
    ) async throws -> [any Channel] {
        var channels: [any Channel] = []
        var bound = address
        do {
            for loop in group.loops {
                let (descriptor, actual) = try URingServerChannel.listen(on: bound, backlog: backlog)
                bound = actual
                let channel = URingServerChannel(descriptor: descriptor, address: actual, loop: loop)
                channels.append(channel)
                try await loop.flatSubmit {
                    serverInitializer(channel).flatMapThrowing {
                        try channel.pipeline.syncOperations.addHandler(
                            Acceptor(childOptions: childOptions, childInitializer: childInitializer)
                        )
                        channel.registerAlreadyConfigured0(promise: nil)
                    }
                }.get()
            }
        } catch {
            for channel in channels { try? await channel.close() }
            throw error
        }
        return channels
    }

    /// The last handler of a listener: sets each accepted connection up and registers it.
    private final class Acceptor: ChannelInboundHandler {
        typealias InboundIn = any Channel

        private let childOptions: @Sendable (URingSocketChannel) throws -> Void
        private let childInitializer: @Sendable (any Channel) -> EventLoopFuture<Void>

        init(
            childOptions: @escaping @Sendable (URingSocketChannel) throws -> Void,
            childInitializer: @escaping @Sendable (any Channel) -> EventLoopFuture<Void>
        ) {
            self.childOptions = childOptions
            self.childInitializer = childInitializer
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            guard let child = unwrapInboundIn(data) as? URingSocketChannel else { return }
            do {
                try childOptions(child)
            } catch {
                child.close0(error: error, mode: .all, promise: nil)
                return
            }
            childInitializer(child).assumeIsolated().whenComplete { result in
                switch result {
                case .success: child.registerAlreadyConfigured0(promise: nil)
                case .failure(let error): child.close0(error: error, mode: .all, promise: nil)
                }
            }
        }
    }
}

/// Connects a ``URingSocketChannel`` on a ``URingEventLoop``: what NIO's `ClientBootstrap` does, for the proxy's
/// upstream connections from a connection on the io_uring transport (same loop, no hop).
struct URingConnector {
    var connectTimeout: TimeAmount = .seconds(10)
    var noDelay = false
    var autoRead = true

    /// Resolves `host` (an address literal at once; a name with `getaddrinfo` on NIO's thread pool), opens a
    /// socket, runs `initializer` on the channel, and connects. The future fails with an `IOError` (`connect`,
    /// ECONNREFUSED …) or `ChannelError.connectTimeout`.
    func connect(
        host: String, port: Int, on loop: URingEventLoop,
        initializer: @escaping @Sendable (any Channel) -> EventLoopFuture<Void>
    ) -> EventLoopFuture<any Channel> {
        if let address = try? SocketAddress(ipAddress: host, port: port) {
            return connect(to: address, on: loop, initializer: initializer)
        }
        let resolved = loop.makePromise(of: SocketAddress.self)
        NIOThreadPool.singleton.submit { state in
            guard state == .active else { return resolved.fail(ChannelError.ioOnClosedChannel) }
            do { resolved.succeed(try SocketAddress.makeAddressResolvingHost(host, port: port)) } catch { resolved.fail(error) }
        }
        return resolved.futureResult.flatMap { address in
            connect(to: address, on: loop, initializer: initializer)
        }
    }

    func connect(
        to address: SocketAddress, on loop: URingEventLoop,
        initializer: @escaping @Sendable (any Channel) -> EventLoopFuture<Void>
    ) -> EventLoopFuture<any Channel> {
        loop.flatSubmit {
            let family: Int32 = address.protocol == .inet6 ? AF_INET6 : AF_INET
            let fd = socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard fd >= 0 else { return loop.makeFailedFuture(IOError(errnoCode: errno, reason: "socket")) }
            let channel = URingSocketChannel(descriptor: fd, loop: loop, parent: nil)
            channel.connectTimeout = connectTimeout
            do {
                if noDelay { try channel.setOption0(.socketOption(.tcp_nodelay), value: 1) }
                try channel.setOption0(.autoRead, value: autoRead)
            } catch {
                channel.close0(error: error, mode: .all, promise: nil)
                return loop.makeFailedFuture(error)
            }
            return initializer(channel).flatMap {
                channel.register0(promise: nil)
                let connected = loop.makePromise(of: Void.self)
                channel.connect0(to: address, promise: connected)
                return connected.futureResult.map { channel as any Channel }
            }.flatMapErrorThrowing { error in
                channel.close0(error: error, mode: .all, promise: nil)
                throw error
            }
        }
    }
}
