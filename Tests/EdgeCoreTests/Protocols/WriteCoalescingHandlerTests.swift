@testable import EdgeCore
import NIOCore
import NIOEmbedded
import Testing

@Suite("Write coalescing below HTTP/2")
struct WriteCoalescingHandlerTests {
    private func channel() throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(WriteCoalescingHandler())
        return channel
    }

    /// Every buffer that reached the "socket", in order.
    private func written(_ channel: EmbeddedChannel) throws -> [String] {
        var out: [String] = []
        while let data = try channel.readOutbound(as: IOData.self) {
            guard case .byteBuffer(let buffer) = data else {
                Issue.record("unexpected file region")
                continue
            }
            out.append(String(buffer: buffer))
        }
        return out
    }

    @Test("small writes between flushes leave as one buffer, at the flush")
    func joinsSmallWrites() throws {
        let channel = try channel()
        for part in ["HEADERS", "DATA-HEADER", "payload"] {
            channel.write(IOData.byteBuffer(ByteBuffer(string: part)), promise: nil)
        }
        #expect(try written(channel).isEmpty)
        channel.flush()
        channel.embeddedEventLoop.run()
        #expect(try written(channel) == ["HEADERSDATA-HEADERpayload"])
        #expect(try channel.finish().isClean)
    }

    @Test("a large buffer and a write with a promise pass through after what was joined, in order")
    func keepsOrder() throws {
        let channel = try channel()
        let large = String(repeating: "L", count: 8192)
        channel.write(IOData.byteBuffer(ByteBuffer(string: "a")), promise: nil)
        channel.write(IOData.byteBuffer(ByteBuffer(string: large)), promise: nil)
        channel.write(IOData.byteBuffer(ByteBuffer(string: "b")), promise: nil)
        let promise = channel.eventLoop.makePromise(of: Void.self)
        channel.write(IOData.byteBuffer(ByteBuffer(string: "c")), promise: promise)
        channel.write(IOData.byteBuffer(ByteBuffer(string: "d")), promise: nil)
        channel.flush()
        channel.embeddedEventLoop.run()
        #expect(try written(channel) == ["a", large, "b", "c", "d"])
        try promise.futureResult.wait()
        #expect(try channel.finish().isClean)
    }

    @Test("joined bytes are written once they fill a TLS record, without waiting for the flush")
    func boundedBuffer() throws {
        let channel = try channel()
        let chunk = String(repeating: "x", count: 4000)
        for _ in 0..<5 {
            channel.write(IOData.byteBuffer(ByteBuffer(string: chunk)), promise: nil)
        }
        channel.flush()
        channel.embeddedEventLoop.run()
        let out = try written(channel)
        #expect(out.map(\.utf8.count) == [16_000, 4000])
        #expect(out.joined() == String(repeating: chunk, count: 5))
        #expect(try channel.finish().isClean)
    }

    /// Flushes the connection's own read batch asks for, as NIOHTTP2 does at its end.
    private final class FlushOnReadComplete: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = IOData

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            context.write(wrapOutboundOut(.byteBuffer(unwrapInboundIn(data))), promise: nil)
        }

        func channelReadComplete(context: ChannelHandlerContext) {
            context.flush()
        }
    }

    @Test("a flush in the connection's read batch goes out at once; flushes from elsewhere join until the loop's iteration ends")
    func defersOutsideFlushes() throws {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandlers([WriteCoalescingHandler(), FlushOnReadComplete()])
        try channel.writeInbound(ByteBuffer(string: "echo"))
        channel.pipeline.fireChannelReadComplete()
        #expect(try written(channel) == ["echo"])

        // Three streams answered by their upstreams in one iteration: one buffer, written when the loop's tasks run.
        for answer in ["one", "two", "three"] {
            channel.write(IOData.byteBuffer(ByteBuffer(string: answer)), promise: nil)
            channel.flush()
        }
        #expect(try written(channel).isEmpty)
        channel.embeddedEventLoop.run()
        #expect(try written(channel) == ["onetwothree"])
    }

    @Test("a close writes what a put-off flush holds first")
    func closeFlushesFirst() throws {
        let channel = try channel()
        channel.write(IOData.byteBuffer(ByteBuffer(string: "last answer")), promise: nil)
        channel.flush()
        let closed = channel.close()
        #expect(try written(channel) == ["last answer"])
        channel.embeddedEventLoop.run()
        try closed.wait()
    }
}
