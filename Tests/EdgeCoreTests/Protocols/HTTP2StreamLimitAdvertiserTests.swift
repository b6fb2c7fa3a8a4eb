@testable import EdgeCore
import NIOCore
import NIOEmbedded
import NIOHTTP2
import Testing

@Suite("The stream limit advertised in the server's SETTINGS")
struct HTTP2StreamLimitAdvertiserTests {
    /// The settings of the SETTINGS frame at the start of `buffer`, by identifier.
    private func settings(in buffer: ByteBuffer) -> [UInt16: UInt32] {
        var buffer = buffer
        guard let header = buffer.readInteger(as: UInt32.self), header & 0xFF == 0x4,
            buffer.readInteger(as: UInt8.self) == 0, buffer.readInteger(as: UInt32.self) == 0
        else { return [:] }
        var result: [UInt16: UInt32] = [:]
        for _ in 0..<Int(header >> 8) / 6 {
            guard let id = buffer.readInteger(as: UInt16.self), let value = buffer.readInteger(as: UInt32.self) else { break }
            result[id] = value
        }
        return result
    }

    @Test("NIOHTTP2's preface leaves advertising the configured limit, its other settings unchanged, and the handler goes")
    func rewritesThePreface() throws {
        let channel = EmbeddedChannel()
        var configuration = NIOHTTP2Handler.ConnectionConfiguration()
        configuration.initialSettings = [
            HTTP2Setting(parameter: .headerTableSize, value: 1024),
            HTTP2Setting(parameter: .maxConcurrentStreams, value: 200),
            HTTP2Setting(parameter: .maxHeaderListSize, value: 8192),
        ]
        try channel.pipeline.syncOperations.addHandler(HTTP2StreamLimitAdvertiser(advertised: 100))
        try channel.pipeline.syncOperations.addHandler(
            NIOHTTP2Handler(mode: .server, connectionConfiguration: configuration, streamConfiguration: .init())
        )
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 443)).wait()

        let preface = try #require(try channel.readOutbound(as: IOData.self))
        guard case .byteBuffer(let buffer) = preface else {
            Issue.record("the preface is not a buffer")
            return
        }
        #expect(settings(in: buffer) == [0x1: 1024, 0x3: 100, 0x6: 8192])
        #expect(throws: (any Error).self) {
            try channel.pipeline.syncOperations.context(handlerType: HTTP2StreamLimitAdvertiser.self)
        }
        _ = try channel.finish(acceptAlreadyClosed: true)
    }

    @Test("bytes that are not a SETTINGS frame with the limit are left as they are")
    func leavesOtherBytes() {
        let ping: [UInt8] = [0, 0, 8, 0x6, 0, 0, 0, 0, 0] + Array(repeating: 3, count: 8)
        let ack: [UInt8] = [0, 0, 0, 0x4, 0x1, 0, 0, 0, 0]
        let noLimit: [UInt8] = [0, 0, 6, 0x4, 0, 0, 0, 0, 0, 0, 0x1, 0, 0, 0x10, 0]
        let truncated: [UInt8] = [0, 0, 12, 0x4, 0, 0, 0, 0, 0, 0, 0x3, 0, 0, 0, 200]
        for bytes in [ping, ack, noLimit, truncated] {
            var buffer = ByteBuffer(bytes: bytes)
            #expect(!HTTP2StreamLimitAdvertiser.rewrite(&buffer, advertising: 7))
            #expect(Array(buffer.readableBytesView) == bytes)
        }
    }
}
