import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix

/// A `websocket = { upstream = "name" }` route's proxy: the handshake goes to a server of the upstream group as an
/// HTTP/1.1 `Upgrade` (RFC 9110 §7.8, RFC 6455 §4.1) — whether the client came over HTTP/1.1 or HTTP/2 (RFC 8441) —
/// and once the server has switched, the two connections are joined and their bytes relayed both ways with
/// backpressure (``WebSocketRelayHandler``). WebSocket frames are the same bytes on both sides, so nothing is
/// re-framed; extensions the client and server agree on (permessage-deflate) work end to end.
///
/// The request sent upstream is the proxy's (``ProxyResponder/upstreamRequest(for:random:)``: hop-by-hop fields
/// dropped, `X-Forwarded-*`, `Forwarded`, `Via`, `X-Request-Id`, the route's `host` and `strip_prefix`), plus the
/// handshake's fields. An upstream that does not switch gets its status passed on (a 403 stays a 403) with a short
/// text; an unreachable one a 502, a silent one a 504.
final class WebSocketRelay: Sendable {
    /// The upstream side of an accepted relay, before it is joined to the client.
    struct Upstream {
        let channel: any Channel
        /// The server's negotiated `Sec-WebSocket-Protocol` and `Sec-WebSocket-Extensions`, passed to the client.
        let negotiated: [(String, String)]
        /// Bytes that followed the server's answer (its first frames).
        let leftover: ByteBuffer?
        let relay: WebSocketRelay
        /// The client connection's event loop state (the same loop as the upstream connection's).
        let loop: LoopState

        /// Joins the client's byte channel to the upstream's: each side's reads become the other's writes.
        func join(
            client: any Channel, pipeline: ChannelPipeline.SynchronousOperations, position: ChannelPipeline.SynchronousOperations.Position
        ) throws {
            let state = WebSocketRelayState(relay: relay, loop: loop)
            let clientSide = WebSocketRelayHandler(state: state, isClient: true)
            let upstreamSide = WebSocketRelayHandler(state: state, isClient: false)
            clientSide.partner = upstreamSide
            upstreamSide.partner = clientSide
            try pipeline.addHandler(clientSide, position: position)
            try channel.pipeline.syncOperations.addHandler(upstreamSide)
            if let leftover, leftover.readableBytes > 0 {
                clientSide.write(leftover)
                clientSide.flushPartnerWrites()
            }
            // Reads are held by the handlers while the other side is full; otherwise they go on by themselves.
            try channel.syncOptions?.setOption(.autoRead, value: true)
            channel.read()
        }
    }

    let proxy: ProxyResponder
    let group: UpstreamGroup
    let settings: WebSocketRouteConfiguration
    let generation: Int
    /// The largest answer head accepted from the upstream.
    static let maxHeadBytes = 16_384

    init(proxy: ProxyResponder, group: UpstreamGroup, settings: WebSocketRouteConfiguration, generation: Int) {
        self.proxy = proxy
        self.group = group
        self.settings = settings
        self.generation = generation
    }

    /// Opens the upstream side of a handshake; `accepted` makes the client's answer once the server switched.
    func open(
        _ request: OriginRequest, streamed: StreamedRequest, key: String?, isHTTP2: Bool, context: OriginContext,
        accepted: @escaping (Upstream) -> Reply
    ) -> Dispatch {
        let now = NIODeadline.now()
        guard let server = group.choose(key: nil, excluded: [], now: now) else {
            return .ready(.response(.text(.serviceUnavailable, "no upstream server is available\n")))
        }
        let proxied = ProxyRequest(
            method: .GET, path: request.path, relativePath: request.relativePath, query: request.query,
            headers: streamed.headers, host: request.headers.host, peer: request.peer, client: request.client,
            isTLS: streamed.isTLS, version: streamed.version, body: nil, bodyLength: nil, cancellation: nil
        )
        var upstreamRequest = proxy.upstreamRequest(for: proxied, random: &context.loop.random)
        upstreamRequest.fields.remove(names: [Array("sec-websocket-key".utf8), Array("sec-websocket-version".utf8)])
        // The client's key when it sent one (HTTP/1.1); an HTTP/2 client has none, so Edge makes one.
        let upstreamKey = key ?? Self.makeKey(&context.loop.random)
        var head = ByteBuffer()
        head.reserveCapacity(upstreamRequest.fields.bytes.readableBytes + 256)
        head.writeString("GET \(upstreamRequest.target) HTTP/1.1\r\n")
        if let host = upstreamRequest.host {
            head.writeString("host: \(settings.host == .upstream ? server.address.description : host)\r\n")
        }
        head.writeImmutableBuffer(upstreamRequest.fields.bytes)
        head.writeString("upgrade: websocket\r\nconnection: upgrade\r\nsec-websocket-version: 13\r\nsec-websocket-key: \(upstreamKey)\r\n\r\n")

        server.active.wrappingAdd(1, ordering: .relaxed)
        let eventLoop = context.eventLoop
        let promise = eventLoop.makePromise(of: Reply.self)
        let handshake = WebSocketUpstreamHandshake(request: head, key: upstreamKey, timeout: group.configuration.firstByteTimeout)
        let cancellation = WebSocketRelayCancellation()
        streamed.cancellation.target = cancellation
        let group = self.group
        let boundHandshake = NIOLoopBound(handshake, eventLoop: eventLoop)
        UpstreamPool.connect(server, group: group, on: eventLoop) { boundHandshake.value }
            .assumeIsolated()
            .flatMap { channel in
                cancellation.channel = channel
                return handshake.answer.futureResult.assumeIsolated().map { ($0, channel) }.nonisolated()
            }
            .whenComplete { result in
                server.active.wrappingAdd(-1, ordering: .relaxed)
                switch result {
                case .success((let answer, let channel)):
                    guard !cancellation.isCancelled else {
                        channel.close(promise: nil)
                        return promise.fail(UpstreamFailure(cause: .connect("the client went away")))
                    }
                    switch answer {
                    case .switched(let negotiated, let leftover):
                        _ = server.recordSuccess()
                        var reply = accepted(
                            Upstream(channel: channel, negotiated: negotiated, leftover: leftover, relay: self, loop: context.loop)
                        )
                        if case .upgrade(var upgrade) = reply {
                            upgrade.abandoned = { channel.close(promise: nil) }
                            reply = .upgrade(upgrade)
                        }
                        promise.succeed(reply)
                    case .refused(let status):
                        channel.close(promise: nil)
                        promise.succeed(.response(.text(status, "the upstream server did not accept the WebSocket handshake\n")))
                    }
                case .failure(let error):
                    _ = server.recordFailure(at: .now(), group: group.configuration)
                    if let channel = cancellation.channel { channel.close(promise: nil) }
                    if cancellation.isCancelled { return promise.fail(error) }
                    let failure = error as? UpstreamFailure
                    let timedOut = failure.map { "\($0)".contains("timed out") } ?? false
                    promise.succeed(.response(.text(
                        timedOut ? .gatewayTimeout : .badGateway,
                        "upstream WebSocket handshake failed: \(failure.map { "\($0)" } ?? "\(error)")\n"
                    )))
                }
            }
        return .pending(promise.futureResult)
    }

    /// A `Sec-WebSocket-Key`: 16 random bytes, base64.
    static func makeKey(_ random: inout LoopRandom) -> String {
        var bytes: [UInt8] = []
        for _ in 0..<2 { withUnsafeBytes(of: random.next()) { bytes.append(contentsOf: $0) } }
        return Data(bytes).base64EncodedString()
    }
}

/// Closes a relay's upstream connection when the client goes away during the handshake.
final class WebSocketRelayCancellation: RequestCancellationTarget {
    var channel: (any Channel)?
    private(set) var isCancelled = false

    func cancelRequest() {
        isCancelled = true
        channel?.close(promise: nil)
    }
}

/// Writes the handshake to the upstream server and reads its answer head: `101` with the right
/// `Sec-WebSocket-Accept` switches; any other status is the server's refusal. Removes itself after a switch.
final class WebSocketUpstreamHandshake: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer

    enum Answer {
        case switched(negotiated: [(String, String)], leftover: ByteBuffer?)
        case refused(HTTPResponseStatus)
    }

    private let request: ByteBuffer
    private let expectedAccept: String
    private let timeout: TimeAmount
    private var received = ByteBuffer()
    private var timer: Scheduled<Void>?
    private var done = false
    /// Set when the handler is added (on the connection's loop).
    private var promise: EventLoopPromise<Answer>?
    var answer: EventLoopPromise<Answer> { promise! }

    init(request: ByteBuffer, key: String, timeout: TimeAmount) {
        self.request = request
        self.expectedAccept = WebSocketHandshake.acceptValue(for: key)
        self.timeout = timeout
    }

    func handlerAdded(context: ChannelHandlerContext) {
        promise = context.eventLoop.makePromise()
        if context.channel.isActive { begin(context: context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        begin(context: context)
        context.fireChannelActive()
    }

    private var begun = false
    private func begin(context: ChannelHandlerContext) {
        guard !begun else { return }
        begun = true
        context.writeAndFlush(NIOAny(request), promise: nil)
        context.read()
        timer = context.eventLoop.assumeIsolated().scheduleTask(in: timeout) {
            self.finish(.failure(UpstreamFailure(cause: .connect("the upstream server's answer timed out"))), context: context)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !done else { return }
        var chunk = unwrapInboundIn(data)
        received.writeBuffer(&chunk)
        let view = received.readableBytesView
        guard let end = Self.headEnd(view) else {
            if received.readableBytes > WebSocketRelay.maxHeadBytes {
                finish(.failure(UpstreamFailure(cause: .connect("the upstream server's answer head is too large"))), context: context)
            }
            return
        }
        let headText = String(decoding: view[view.startIndex..<end], as: UTF8.self)
        received.moveReaderIndex(forwardBy: end + 4 - view.startIndex)
        let lines = headText.split(separator: "\r\n", omittingEmptySubsequences: false)
        let statusParts = lines.first?.split(separator: " ", maxSplits: 2) ?? []
        guard statusParts.count >= 2, statusParts[0].hasPrefix("HTTP/1."), let code = Int(statusParts[1]), (100...599).contains(code) else {
            finish(.failure(UpstreamFailure(cause: .connect("the upstream server's answer is not HTTP/1.1"))), context: context)
            return
        }
        var fields: [(String, String)] = []
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            fields.append((line[..<colon].lowercased(), String(line[line.index(after: colon)...].trimming())))
        }
        guard code == 101 else {
            finish(.success(.refused(HTTPResponseStatus(statusCode: code >= 200 ? code : 502))), context: context)
            return
        }
        guard fields.contains(where: { $0.0 == "sec-websocket-accept" && $0.1 == expectedAccept }) else {
            finish(.failure(UpstreamFailure(cause: .connect("the upstream server answered 101 without the right Sec-WebSocket-Accept"))), context: context)
            return
        }
        let negotiated = fields.filter { $0.0 == "sec-websocket-protocol" || $0.0 == "sec-websocket-extensions" }
        let leftover = received.readableBytes > 0 ? received : nil
        finish(.success(.switched(negotiated: negotiated, leftover: leftover)), context: context)
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if !done { context.read() }
    }

    func channelInactive(context: ChannelHandlerContext) {
        finish(.failure(UpstreamFailure(cause: .connect("the upstream server closed the connection"))), context: context)
        context.fireChannelInactive()
    }

    /// A connection that never came up (refused, timed out) removes its handlers without going inactive: the
    /// answer is failed here, never left pending.
    func handlerRemoved(context: ChannelHandlerContext) {
        finish(.failure(UpstreamFailure(cause: .connect("the connection to the upstream server ended"))), context: context)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        finish(.failure(UpstreamFailure(cause: .connect("\(error)"))), context: context)
        context.close(promise: nil)
    }

    private func finish(_ result: Result<Answer, any Error>, context: ChannelHandlerContext) {
        guard !done else { return }
        done = true
        timer?.cancel()
        timer = nil
        promise?.completeWith(result)
    }

    /// The index of the `\r\n\r\n` that ends a head, if it has arrived.
    static func headEnd(_ bytes: ByteBufferView) -> Int? {
        guard bytes.count >= 4 else { return nil }
        var index = bytes.startIndex
        while index + 3 < bytes.endIndex {
            if bytes[index] == 13, bytes[index + 1] == 10, bytes[index + 2] == 13, bytes[index + 3] == 10 { return index }
            index += 1
        }
        return nil
    }
}

/// What the two sides of a relay share: the route's settings, the registry entry for shutdown and reload, and
/// the last time a byte moved (for `idle_seconds`).
final class WebSocketRelayState {
    let relay: WebSocketRelay
    let loop: LoopState
    var lastActivity = NIODeadline.now()
    init(relay: WebSocketRelay, loop: LoopState) {
        self.relay = relay
        self.loop = loop
    }
}

/// One side of a relay: what this channel reads, its partner writes; reads stop while the partner's socket is
/// full (backpressure both ways). Either side closing closes the other once what it wrote has gone out.
final class WebSocketRelayHandler: ChannelDuplexHandler, WebSocketConnection {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    let state: WebSocketRelayState
    let isClient: Bool
    var partner: WebSocketRelayHandler?
    private var context: ChannelHandlerContext?
    private var pendingRead = false
    private var pendingFlush = false
    private var closed = false
    private var idleTimer: Scheduled<Void>?
    private var retireTimer: Scheduled<Void>?

    var generation: Int { state.relay.generation }
    var hub: PubSubHub? { nil }

    init(state: WebSocketRelayState, isClient: Bool) {
        self.state = state
        self.isClient = isClient
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        if isClient {
            state.loop.webSockets[ObjectIdentifier(self)] = self
            scheduleIdleCheck()
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        stop(context: context)
        self.context = nil
    }

    private func stop(context: ChannelHandlerContext) {
        idleTimer?.cancel()
        retireTimer?.cancel()
        if isClient { state.loop.webSockets[ObjectIdentifier(self)] = nil }
    }

    /// Called by the partner: writes its bytes here.
    func write(_ bytes: ByteBuffer) {
        guard let context, !closed else { return }
        context.write(wrapOutboundOut(bytes), promise: nil)
        pendingFlush = true
    }

    func flushPartnerWrites() {
        guard let context, pendingFlush else { return }
        pendingFlush = false
        context.flush()
    }

    var isWritable: Bool { context?.channel.isWritable ?? false }

    /// Where the frames this side reads begin and end (so that a close frame can go between two of them).
    private var frames = WebSocketFrameBoundaries()
    /// Shutdown or reload: once what this side reads is at a frame boundary, a close frame (1001) goes to the
    /// partner instead of anything more.
    private var closeAtBoundary = false
    private var closeSentToPartner = false

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        state.lastActivity = .now()
        var bytes = unwrapInboundIn(data)
        if closeSentToPartner { return }  // after the close frame nothing more may follow
        guard closeAtBoundary else {
            frames.advance(over: bytes.readableBytesView)
            partner?.write(bytes)
            return
        }
        // Pass on the rest of the frame in progress, then the close frame.
        let end = frames.firstBoundary(in: bytes.readableBytesView)
        if let end, let head = bytes.readSlice(length: end) {
            partner?.write(head)
            sendCloseToPartner()
        } else {
            partner?.write(bytes)
        }
    }

    /// A close frame with 1001 to the partner: unmasked to the client, masked (as a client's must be) upstream.
    private func sendCloseToPartner() {
        guard !closeSentToPartner, let partner else { return }
        closeSentToPartner = true
        var frame = ByteBuffer()
        if partner.isClient {
            frame.writeBytes([0x88, 0x02, 0x03, 0xE9])
        } else {
            let mask: [UInt8] = [0x5A, 0x3C, 0x96, 0x0F]
            frame.writeBytes([0x88, 0x82] + mask + [0x03 ^ mask[0], 0xE9 ^ mask[1]])
        }
        partner.write(frame)
        partner.flushPartnerWrites()
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        partner?.flushPartnerWrites()
        context.fireChannelReadComplete()
    }

    func read(context: ChannelHandlerContext) {
        requestRead(context: context)
    }

    private func requestRead(context: ChannelHandlerContext) {
        if partner?.isWritable ?? false {
            context.read()
        } else {
            pendingRead = true
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { partner?.partnerBecameWritable() }
        context.fireChannelWritabilityChanged()
    }

    /// The partner can take more: a read held for it goes ahead.
    func partnerBecameWritable() {
        guard let context, pendingRead else { return }
        pendingRead = false
        context.read()
    }

    func channelInactive(context: ChannelHandlerContext) {
        closed = true
        stop(context: context)
        partner?.closeAfterWrites()
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, event == .inputClosed {
            // A half-close (or an HTTP/2 client's END_STREAM): the relay ends; what was read has been passed on.
            context.close(promise: nil)
            return
        }
        if event is ChannelShouldQuiesceEvent || event is RetireConnectionEvent {
            goAway()
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    /// Closes this side once what was written to it has gone out.
    func closeAfterWrites() {
        guard let context, !closed else { return }
        closed = true
        context.writeAndFlush(wrapOutboundOut(ByteBuffer())).assumeIsolated().whenComplete { _ in
            context.close(promise: nil)
        }
    }

    /// Shutdown: the relay tracks where frames begin (their headers, not their payloads), so a close frame with
    /// 1001 goes to each side between two frames — at once when no frame is half relayed — and nothing follows it;
    /// both connections close a moment later (``WebSocketSessionSettings/closeTimeout``), or when either ends.
    func goAway() {
        guard let context, let partner, !closeAtBoundary else { return }
        for side in [self, partner] {
            side.closeAtBoundary = true
            // What one side reads goes to its partner: the close frame to the partner waits for that stream's
            // frame boundary.
            if side.frames.isAtBoundary { side.sendCloseToPartner() }
        }
        let sides = [self, partner]
        idleTimer?.cancel()
        idleTimer = context.eventLoop.assumeIsolated().scheduleTask(in: .seconds(2)) {
            for side in sides { side.context?.close(promise: nil) }
        }
    }

    func retire() {
        guard let context, retireTimer == nil else { return }
        let grace = TimeAmount.seconds(Int64(state.relay.settings.reloadGraceSeconds))
        retireTimer = context.eventLoop.assumeIsolated().scheduleTask(in: grace) { self.goAway() }
    }

    private func scheduleIdleCheck() {
        guard let context, state.relay.settings.idleSeconds > 0 else { return }
        let idle = TimeAmount.seconds(Int64(state.relay.settings.idleSeconds))
        let wait = max(.seconds(1), idle - (NIODeadline.now() - state.lastActivity))
        idleTimer = context.eventLoop.assumeIsolated().scheduleTask(in: wait) {
            if NIODeadline.now() - self.state.lastActivity >= idle {
                self.goAway()
            } else {
                self.scheduleIdleCheck()
            }
        }
    }
}

/// Follows a stream of WebSocket frames by their headers alone (RFC 6455 §5.2): where each frame ends, without
/// reading payloads, so that a relay can put a frame of its own between two of the frames it passes on.
struct WebSocketFrameBoundaries {
    /// Payload bytes left in the current frame.
    private var remaining = 0
    /// A header that has not all arrived.
    private var header: [UInt8] = []

    var isAtBoundary: Bool { remaining == 0 && header.isEmpty }

    /// Follows `bytes`.
    mutating func advance(over bytes: ByteBufferView) {
        _ = scan(bytes, stopAtFirstEnd: false)
    }

    /// The offset in `bytes` just after the frame in progress (or the first frame) ends — `0` when at a boundary
    /// already — following the stream up to there; `nil` when no frame ends in `bytes` (all of it followed).
    mutating func firstBoundary(in bytes: ByteBufferView) -> Int? {
        if isAtBoundary { return 0 }
        return scan(bytes, stopAtFirstEnd: true)
    }

    private mutating func scan(_ bytes: ByteBufferView, stopAtFirstEnd: Bool) -> Int? {
        var index = bytes.startIndex
        while index < bytes.endIndex {
            if remaining > 0 {
                let take = min(remaining, bytes.endIndex - index)
                remaining -= take
                index += take
                if remaining == 0, stopAtFirstEnd { return index - bytes.startIndex }
                continue
            }
            header.append(bytes[index])
            index += 1
            guard let (size, length) = Self.parse(header) else { continue }
            guard header.count == size else { continue }
            header.removeAll(keepingCapacity: true)
            remaining = length
            if remaining == 0, stopAtFirstEnd { return index - bytes.startIndex }
        }
        return nil
    }

    /// A header's full size and its payload length, once enough of it is known to tell.
    private static func parse(_ header: [UInt8]) -> (size: Int, length: Int)? {
        guard header.count >= 2 else { return nil }
        let masked = header[1] & 0x80 != 0
        let code = Int(header[1] & 0x7F)
        let lengthBytes = code == 126 ? 2 : code == 127 ? 8 : 0
        let size = 2 + lengthBytes + (masked ? 4 : 0)
        guard header.count >= 2 + lengthBytes else { return nil }
        var length = code
        if lengthBytes > 0 {
            length = 0
            for byte in header[2..<(2 + lengthBytes)] { length = length << 8 | Int(byte) }
            if length < 0 { length = Int.max }  // a length over 2^63: invalid, followed as a frame that never ends
        }
        return (size, length)
    }
}
