import NIOCore
import NIOHPACK

/// State owned by one event loop and used by every connection on it without locks.
final class LoopState {
    /// Lock-free front of the shared response cache.
    let cache: LoopLocalCache
    /// Cached `Date` header value.
    let date = HTTPDateHeader()
    /// Small static files in memory.
    let staticFiles: StaticFileCache
    /// Complete HTTP/1.1 responses for hot cache hits and small files.
    let preparedResponses = PreparedResponses<ByteBuffer> { $0.readableBytes }
    /// Complete HTTP/2 response header blocks for hot cache hits.
    let preparedHTTP2Blocks = PreparedResponses<HPACKHeaders> { block in
        block.reduce(0) { $0 + $1.name.utf8.count + $1.value.utf8.count }
    }
    /// The services in force after a reload, put here on this loop by ``EdgeServer`` (`nil` until the first
    /// reload: connections use the services they were accepted under). Read once per request, without a lock.
    var current: EdgeServices?
    /// Keep-alive connections to upstream servers.
    let upstreamPool = UpstreamPool()
    /// Random numbers for request IDs, without a system call each.
    var random = LoopRandom()
    /// The loop's open client connections, so that a shutdown can close those left at its deadline while the
    /// loop still runs (closing them by stopping the loop makes their handlers schedule work on a dead loop).
    var connections: [ObjectIdentifier: OpenConnection] = [:]
    /// The loop's open WebSocket connections (on HTTP/1.1 connections and HTTP/2 streams alike), so that a
    /// shutdown or reload can close them with 1001.
    var webSockets: [ObjectIdentifier: any WebSocketConnection] = [:]
    /// The loop's metrics and access-log lines.
    let observer: LoopObserver

    /// `staticFileValidity` is how long a small file is trusted in memory (tests lengthen it, so that a loaded
    /// machine cannot expire an entry between two steps of a test).
    init(
        localCacheCapacity: Int, staticFileValidity: TimeAmount = StaticFileCache.defaultValidity,
        observer: LoopObserver = LoopObserver()
    ) {
        self.observer = observer
        cache = LoopLocalCache(capacity: localCacheCapacity)
        staticFiles = StaticFileCache(validity: staticFileValidity)
    }
}

/// One ``LoopState`` per event loop of the server's group, found by the loop's identity.
struct LoopStates: Sendable {
    private let states: [ObjectIdentifier: NIOLoopBoundBox<LoopState>]

    init(group: any EventLoopGroup, localCacheCapacity: Int, observability: Observability) {
        var states: [ObjectIdentifier: NIOLoopBoundBox<LoopState>] = [:]
        for loop in group.makeIterator() {
            states[ObjectIdentifier(loop)] = NIOLoopBoundBox.makeBoxSendingValue(
                LoopState(localCacheCapacity: localCacheCapacity, observer: LoopObserver(observability: observability, eventLoop: loop)),
                eventLoop: loop
            )
        }
        self.states = states
    }

    /// Runs `body` with each loop and its state, on that loop; the future completes when every loop's future has.
    func forEach(
        on group: any EventLoopGroup, _ body: @escaping @Sendable (any EventLoop, LoopState) -> EventLoopFuture<Void>
    ) -> EventLoopFuture<Void> {
        let futures = group.makeIterator().map { loop in loop.flatSubmit { body(loop, self.state(for: loop)) } }
        return EventLoopFuture.andAllComplete(futures, on: group.next())
    }

    /// Runs `body` with each loop's state, on that loop, and gathers what it returns.
    func collect<Value: Sendable>(
        on group: any EventLoopGroup, _ body: @escaping @Sendable (LoopState) -> Value
    ) -> EventLoopFuture<[Value]> {
        let futures = group.makeIterator().map { loop in loop.submit { body(self.state(for: loop)) } }
        return EventLoopFuture.whenAllSucceed(futures, on: group.next())
    }

    /// The state of `loop`; must be called on that loop.
    func state(for loop: any EventLoop) -> LoopState {
        guard let bound = states[ObjectIdentifier(loop)] else {
            preconditionFailure("event loop \(loop) does not belong to the server's group")
        }
        return bound.value
    }
}
