import NIOCore
import NIOHTTP1
import NIOPosix

/// An open connection to an upstream server, with its exchange handler. Used only on its channel's event loop
/// (the loop of the client connection that opened it, whose pool keeps it), which makes `@unchecked Sendable`
/// sound: it crosses no thread, only the futures of that loop.
final class UpstreamConnection: @unchecked Sendable {
    let channel: any Channel
    let handler: UpstreamExchangeHandler
    let key: String
    /// Exchanges started on the connection: after the first, the server may have closed it while it was idle.
    var exchanges = 0
    /// While the connection waits in its pool: when it is closed unless taken.
    fileprivate var idleUntil = NIODeadline.distantFuture
    /// For a stream of an HTTP/2 connection: that connection (the stream itself is never pooled).
    let parent: UpstreamHTTP2Connection?

    init(channel: any Channel, handler: UpstreamExchangeHandler, key: String, parent: UpstreamHTTP2Connection? = nil) {
        self.channel = channel
        self.handler = handler
        self.key = key
        self.parent = parent
    }
}

/// Keep-alive connections to upstream servers, one pool per event loop: a request takes an idle connection of
/// its loop without a lock, and puts it back when its exchange leaves it clean. Up to `keepalive` idle
/// connections per server are kept for `idle_timeout_seconds`; more (a burst had more in use) are kept only for
/// ``surplusTime``, as HAProxy purges its idle surplus gradually, so that a burst that returns them all at once
/// does not close connections the next burst must open again (under 100 clients and `keepalive = 64`, closing
/// the surplus at once made one proxied request in seven open a new connection). Pools are keyed by the server's
/// address, so they outlive a reload that keeps the server.
///
/// Idle connections are closed by one sweep per pool, scheduled for the earliest expiry, rather than by a timer
/// per release: a busy pool takes and returns a connection at every request, and a timer each time (scheduled,
/// then cancelled) cost more than the exchange's own bookkeeping.
final class UpstreamPool {
    private var idle: [String: [UpstreamConnection]] = [:]
    /// HTTP/2 servers: one connection each, and the connects under way (which requests meanwhile wait for).
    private var http2: [String: UpstreamHTTP2Connection] = [:]
    private var http2Connecting: [String: EventLoopFuture<UpstreamHTTP2Connection>] = [:]
    private var sweep: Scheduled<Void>?
    private var sweepAt = NIODeadline.distantFuture
    /// How long an idle connection beyond `keepalive` is kept.
    static let surplusTime = TimeAmount.seconds(2)

    /// HTTP/1.1: a new connection to `server` (an idle one is taken first, without a future, with
    /// ``idleConnection(to:group:)``). HTTP/2: a stream on the server's connection, made first if need be (always
    /// on a new connection, when `fresh`).
    func acquire(
        _ server: UpstreamServer, group: UpstreamGroup, fresh: Bool = false, on eventLoop: any EventLoop
    ) -> EventLoopFuture<UpstreamConnection> {
        if group.configuration.wireProtocol != .http1 {
            return acquireStream(server, group: group, fresh: fresh, on: eventLoop)
        }
        return connect(server, group: group, on: eventLoop)
    }

    /// An idle HTTP/1.1 connection to `server` from the pool, taken at once (no future), or `nil`: then
    /// ``acquire(_:group:fresh:on:)`` connects. Always `nil` for an HTTP/2 group.
    func idleConnection(to server: UpstreamServer, group: UpstreamGroup) -> UpstreamConnection? {
        guard group.configuration.wireProtocol == .http1 else { return nil }
        // Taken in place (`idle[key]?.popLast()`), so that the array is not copied at every request; a list this
        // empties stays, with its capacity, until a sweep finds it empty.
        while let connection = idle[server.key]?.popLast() {
            if connection.handler.isIdle { return connection }
            connection.channel.close(promise: nil)
        }
        return nil
    }

    /// Takes `connection` back after a clean exchange: for `idleTimeout` while fewer than `keepalive` wait, else
    /// for ``surplusTime``.
    func release(_ connection: UpstreamConnection, keepalive: Int, idleTimeout: TimeAmount, on eventLoop: any EventLoop) {
        guard keepalive > 0, connection.handler.isIdle else {
            connection.channel.close(promise: nil)
            return
        }
        let waiting = idle[connection.key]?.count ?? 0
        connection.idleUntil = .now() + (waiting < keepalive ? idleTimeout : Self.surplusTime)
        idle[connection.key, default: []].append(connection)
        scheduleSweep(at: connection.idleUntil, on: eventLoop)
    }

    /// Makes sure a sweep runs by `deadline`.
    private func scheduleSweep(at deadline: NIODeadline, on eventLoop: any EventLoop) {
        guard deadline < sweepAt else { return }
        sweep?.cancel()
        sweepAt = deadline
        sweep = eventLoop.assumeIsolated().scheduleTask(deadline: deadline) { [self] in
            sweep = nil
            sweepAt = .distantFuture
            closeExpired(on: eventLoop)
        }
    }

    /// Closes the idle connections whose time is up (and those the upstream closed), and schedules the next sweep
    /// for the earliest of the rest.
    private func closeExpired(on eventLoop: any EventLoop) {
        let now = NIODeadline.now()
        var next = NIODeadline.distantFuture
        for (key, connections) in idle {
            var kept: [UpstreamConnection] = []
            for connection in connections {
                if connection.idleUntil <= now || !connection.handler.isIdle {
                    connection.channel.close(promise: nil)
                } else {
                    kept.append(connection)
                    next = min(next, connection.idleUntil)
                }
            }
            idle[key] = kept.isEmpty ? nil : kept
        }
        for (key, connection) in http2 where connection.openStreams == 0 {
            if connection.idleUntil <= now || !connection.channel.isActive {
                http2[key] = nil
                connection.channel.close(promise: nil)
            } else {
                next = min(next, connection.idleUntil)
            }
        }
        if next != .distantFuture { scheduleSweep(at: next, on: eventLoop) }
    }

    /// A new stream on the server's HTTP/2 connection, connecting first when there is none (or `fresh`: the last
    /// one failed a stream as if the server had stopped taking them).
    private func acquireStream(
        _ server: UpstreamServer, group: UpstreamGroup, fresh: Bool, on eventLoop: any EventLoop
    ) -> EventLoopFuture<UpstreamConnection> {
        let key = server.key
        let connection: EventLoopFuture<UpstreamHTTP2Connection>
        if !fresh, let open = http2[key], open.isUsable {
            connection = eventLoop.makeSucceededFuture(open)
        } else if !fresh, let pending = http2Connecting[key] {
            connection = pending
        } else {
            if let old = http2.removeValue(forKey: key) { retire(old) }
            let connecting = UpstreamHTTP2Connection.connect(server, group: group, on: eventLoop)
            http2Connecting[key] = connecting
            connecting.assumeIsolated().whenComplete { [self] result in
                if http2Connecting[key] === connecting { http2Connecting[key] = nil }
                guard case .success(let made) = result else { return }
                if let old = http2.updateValue(made, forKey: key), old !== made { retire(old) }
                made.channel.closeFuture.assumeIsolated().whenComplete { [self] _ in
                    if http2[key] === made { http2[key] = nil }
                }
            }
            connection = connecting
        }
        return connection.assumeIsolated().flatMap { [self] made in
            made.openStream(on: eventLoop) { [self] in
                made.openStreams -= 1
                guard made.openStreams == 0 else { return }
                if made.retired {
                    made.channel.close(promise: nil)
                } else {
                    made.idleUntil = .now() + made.idleTimeout
                    scheduleSweep(at: made.idleUntil, on: eventLoop)
                }
            }
        }.nonisolated()
    }

    /// No new stream goes on `connection`; it closes once its open streams end.
    func retire(_ connection: UpstreamHTTP2Connection) {
        connection.retired = true
        if http2[connection.key] === connection { http2[connection.key] = nil }
        if connection.openStreams == 0 { connection.channel.close(promise: nil) }
    }

    /// Idle connections kept now, for tests and status.
    var idleCount: Int { idle.values.reduce(0) { $0 + $1.count } }

    /// Idle kept-alive connections by server key (``UpstreamServer/key``), for the metrics.
    var idleByServer: [String: Int] { idle.mapValues(\.count) }

    /// Connects to `server` on `eventLoop` (the group's connect timeout, no Nagle, reads only when asked, TLS for an
    /// `https://` server); `handler` is added behind TLS. A failure is an ``UpstreamFailure`` naming its cause.
    static func connect(
        _ server: UpstreamServer, group: UpstreamGroup, on eventLoop: any EventLoop,
        handler: @escaping @Sendable () -> any ChannelHandler
    ) -> EventLoopFuture<any Channel> {
        OutboundConnection.connect(
            host: server.address.host, port: server.address.port, on: eventLoop, timeout: group.configuration.connectTimeout,
            noDelay: true, autoRead: false
        ) { channel in
            channel.eventLoop.makeCompletedFuture {
                let sync = channel.pipeline.syncOperations
                try group.addTLSHandler(for: server, to: sync)
                try sync.addHandler(handler())
            }
        }
            .flatMapErrorThrowing { error in
                throw UpstreamFailure(cause: .connect(Self.describe(error)))
            }
    }

    private func connect(_ server: UpstreamServer, group: UpstreamGroup, on eventLoop: any EventLoop) -> EventLoopFuture<UpstreamConnection> {
        let key = server.key
        return Self.connect(server, group: group, on: eventLoop) { UpstreamHTTP1Handler() }
            .flatMapThrowing { channel in
                let handler = try channel.pipeline.syncOperations.handler(type: UpstreamHTTP1Handler.self)
                return UpstreamConnection(channel: channel, handler: handler, key: key)
            }
    }

    /// A short reason for a failed connect: "connection refused", "timed out" …, not NIO's whole error.
    static func describe(_ error: any Error) -> String {
        if let failures = error as? NIOConnectionError, let first = failures.connectionErrors.first {
            if let io = first.error as? IOError { return systemErrorText(io.errnoCode) }
            return "\(first.error)"
        }
        if case ChannelError.connectTimeout? = error as? ChannelError { return "connect timed out" }
        if let io = error as? IOError { return systemErrorText(io.errnoCode) }
        return "\(error)"
    }
}
