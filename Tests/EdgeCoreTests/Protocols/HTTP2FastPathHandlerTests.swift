@testable import EdgeCore
import NIOCore
import NIOEmbedded
import NIOHPACK
import NIOHTTP2
import Testing

@Suite("HTTP/2 fast path: frames held while the client is not reading")
struct HTTP2FastPathHandlerTests {
    /// Records, in order, the frames and stream events that pass the fast path towards the multiplexer.
    private final class Recorder: ChannelInboundHandler {
        typealias InboundIn = HTTP2Frame
        var seen: [String] = []

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            seen.append("frame \(Int(unwrapInboundIn(data).streamID))")
        }

        func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
            if let created = event as? NIOHTTP2StreamCreatedEvent {
                seen.append("created \(Int(created.streamID))")
            } else if let closed = event as? StreamClosedEvent {
                seen.append("closed \(Int(closed.streamID))")
            }
        }
    }

    /// A POST head without END_STREAM: a stream only the multiplexer serves.
    private func postHead(_ streamID: HTTP2StreamID) -> HTTP2Frame {
        let headers: HPACKHeaders = [":method": "POST", ":scheme": "https", ":authority": "localhost", ":path": "/upload"]
        return HTTP2Frame(streamID: streamID, payload: .headers(.init(headers: headers, endStream: false)))
    }

    private func created(_ streamID: HTTP2StreamID) -> NIOHTTP2StreamCreatedEvent {
        NIOHTTP2StreamCreatedEvent(streamID: streamID, localInitialWindowSize: 65535, remoteInitialWindowSize: 65535)
    }

    @Test("stream events raised after a held HEADERS frame reach the multiplexer after it, once the socket drains")
    func heldStreamEventsFollowTheirFrames() throws {
        let channel = EmbeddedChannel()
        let services = try EdgeServices(configuration: .embeddedDefault, group: channel.embeddedEventLoop, state: ServerState())
        let recorder = Recorder()
        try channel.pipeline.syncOperations.addHandlers([
            HTTP2FastPathHandler(services: services, loop: LoopState(localCacheCapacity: 16)), recorder,
        ])
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 443)).wait()

        // A stream served while the socket is writable: its frame and events pass straight on.
        try channel.writeInbound(postHead(1))
        channel.pipeline.fireUserInboundEventTriggered(created(1))
        #expect(recorder.seen == ["frame 1", "created 1"])

        // The client stops reading: what follows is held, events included, and nothing is dropped.
        channel.isWritable = false
        channel.pipeline.fireChannelWritabilityChanged()
        try channel.writeInbound(postHead(3))
        channel.pipeline.fireUserInboundEventTriggered(created(3))
        try channel.writeInbound(HTTP2Frame(streamID: 3, payload: .rstStream(.cancel)))
        channel.pipeline.fireUserInboundEventTriggered(StreamClosedEvent(streamID: 3, reason: .cancel))
        let whileHeld = recorder.seen
        #expect(whileHeld == ["frame 1", "created 1"])

        channel.isWritable = true
        channel.pipeline.fireChannelWritabilityChanged()
        let afterDrain = recorder.seen
        #expect(afterDrain == ["frame 1", "created 1", "frame 3", "created 3", "frame 3", "closed 3"])
        _ = try channel.finish(acceptAlreadyClosed: true)
    }

    @Test("a stream beyond the limit is refused with REFUSED_STREAM, from NIOHTTP2's 100th until SETTINGS are acknowledged")
    func refusesStreamsBeyondTheLimit() throws {
        let channel = EmbeddedChannel()
        var configuration = EdgeConfiguration.embeddedDefault
        configuration.limits.http2MaxConcurrentStreams = 101
        let services = try EdgeServices(configuration: configuration, group: channel.embeddedEventLoop, state: ServerState())
        let recorder = Recorder()
        try channel.pipeline.syncOperations.addHandlers([
            HTTP2FastPathHandler(services: services, loop: LoopState(localCacheCapacity: 16)), recorder,
        ])
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 443)).wait()
        var stream = 1
        func open() throws {
            try channel.writeInbound(postHead(HTTP2StreamID(stream)))
            channel.pipeline.fireUserInboundEventTriggered(created(HTTP2StreamID(stream)))
            stream += 2
        }
        func refusals() throws -> [Int] {
            var refused: [Int] = []
            while let frame = try channel.readOutbound(as: HTTP2Frame.self) {
                if case .rstStream(.refusedStream) = frame.payload { refused.append(Int(frame.streamID)) }
            }
            return refused
        }

        for _ in 0..<99 { try open() }
        #expect(try refusals().isEmpty)
        try open()  // the 100th, before the acknowledgement
        #expect(try refusals() == [199])
        #expect(!recorder.seen.contains("frame 199"))
        #expect(!recorder.seen.contains("created 199"))

        try channel.writeInbound(HTTP2Frame(streamID: .rootStream, payload: .settings(.ack)))
        channel.pipeline.fireUserInboundEventTriggered(StreamClosedEvent(streamID: 199, reason: .refusedStream))
        try open()
        try open()  // the 100th and 101st open streams: within the configured limit
        #expect(try refusals().isEmpty)
        #expect(recorder.seen.suffix(4) == ["frame 201", "created 201", "frame 203", "created 203"])
        try open()
        #expect(try refusals() == [205])
        _ = try channel.finish(acceptAlreadyClosed: true)
    }
}
