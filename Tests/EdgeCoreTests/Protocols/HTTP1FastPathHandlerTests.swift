@testable import EdgeCore
import NIOCore
import NIOEmbedded
import Testing

@Suite("HTTP/1.1 fast path: lingering close")
struct HTTP1FastPathHandlerTests {
    /// Sits between the socket and the fast path and records the closes that reach the socket. A half close is
    /// only recorded (EmbeddedChannel has none); a full close goes on and closes the channel.
    private final class CloseRecorder: ChannelOutboundHandler {
        typealias OutboundIn = Any
        var closes: [String] = []

        func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
            switch mode {
            case .output:
                closes.append("output")
                promise?.succeed()
            case .all:
                closes.append("all")
                context.close(mode: mode, promise: promise)
            case .input:
                closes.append("input")
                promise?.succeed()
            }
        }
    }

    private func makeChannel(isTLS: Bool) throws -> (EmbeddedChannel, CloseRecorder) {
        let channel = EmbeddedChannel()
        let services = try EdgeServices(configuration: .embeddedDefault, group: channel.embeddedEventLoop, state: ServerState())
        let recorder = CloseRecorder()
        try channel.pipeline.syncOperations.addHandlers([
            recorder,
            HTTP1FastPathHandler(services: services, loop: LoopState(localCacheCapacity: 16), client: .unknown, tls: isTLS ? .tls13 : .none),
        ])
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 80)).wait()
        return (channel, recorder)
    }

    @Test("a full close from behind shuts down only the sending side; later closes join it; the client's end closes")
    func fullCloseLingersUntilTheClientsEnd() throws {
        let (channel, recorder) = try makeChannel(isTLS: false)
        channel.close(promise: nil)
        #expect(recorder.closes == ["output"])

        // A second full close while lingering (from another handler behind) must not turn into a reset.
        channel.close(promise: nil)
        #expect(recorder.closes == ["output"])

        // What the client still sends is read and dropped, never answered.
        try channel.writeInbound(ByteBuffer(string: "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"))
        #expect(try channel.readOutbound(as: IOData.self) == nil)
        #expect(channel.isActive)

        channel.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        #expect(recorder.closes == ["output", "all"])
        #expect(!channel.isActive)
    }

    @Test("the lingering ends after 5 s without the client's end of stream")
    func lingeringIsBounded() throws {
        let (channel, recorder) = try makeChannel(isTLS: false)
        channel.close(promise: nil)
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(4_900))
        #expect(recorder.closes == ["output"])
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(200))
        #expect(recorder.closes == ["output", "all"])
        #expect(!channel.isActive)
    }

    @Test("over TLS a full close passes unchanged (NIOSSL's close_notify exchange lingers)")
    func tlsClosePassesThrough() throws {
        let (channel, recorder) = try makeChannel(isTLS: true)
        channel.close(promise: nil)
        #expect(recorder.closes == ["all"])
    }

    @Test("after the client's half-close a full close passes unchanged: there is no more input to wait for")
    func closeAfterInputClosedIsImmediate() throws {
        let (channel, recorder) = try makeChannel(isTLS: false)
        channel.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        #expect(recorder.closes == ["all"])
    }
}
