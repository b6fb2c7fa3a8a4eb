@testable import EdgeCore
import NIOCore
import NIOEmbedded
import Testing

@Suite("Closing HTTP/2 connections after an error GOAWAY")
struct HTTP2GoAwayCloserTests {
    /// A frame: 24-bit length, type, flags, stream ID, payload.
    private func frame(type: UInt8, stream: UInt32 = 0, payload: [UInt8]) -> [UInt8] {
        let length = payload.count
        return [UInt8(length >> 16 & 0xff), UInt8(length >> 8 & 0xff), UInt8(length & 0xff), type, 0]
            + withUnsafeBytes(of: stream.bigEndian, Array.init) + payload
    }

    /// GOAWAY with a last stream ID of 7, `errorCode` and some debug data.
    private func goAway(errorCode: UInt32) -> [UInt8] {
        frame(type: 0x7, payload: [0, 0, 0, 7] + withUnsafeBytes(of: errorCode.bigEndian, Array.init) + Array("debug".utf8))
    }

    /// Ordinary traffic before the GOAWAY: HEADERS, DATA, SETTINGS ack.
    private var traffic: [UInt8] {
        frame(type: 0x1, stream: 1, payload: Array(repeating: 0x88, count: 12))
            + frame(type: 0x0, stream: 1, payload: Array(repeating: 0x61, count: 300)) + frame(type: 0x4, payload: [])
    }

    // Expectations test a Bool taken from the channel, not the channel: on failure the testing library
    // describes every value in the expression, and describing an EmbeddedChannel's pipeline traps in NIO.

    /// Writes `bytes` to a fresh channel in pieces cut at `cuts`, flushing after each; returns the channel.
    private func write(_ bytes: [UInt8], cutAt cuts: [Int]) throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(HTTP2GoAwayCloser())
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 443)).wait()
        var start = 0
        for end in cuts + [bytes.count] where end > start {
            channel.writeAndFlush(IOData.byteBuffer(ByteBuffer(bytes: bytes[start..<end])), promise: nil)
            start = end
            channel.embeddedEventLoop.run()
        }
        return channel
    }

    @Test("a GOAWAY with an error code closes the connection, however the bytes are split", arguments: [
        [Int](),  // one buffer holding every frame
        [5],  // inside the first frame header
        [335, 343],  // inside the SETTINGS header, then inside the GOAWAY header (frames start at 0, 21, 330, 339)
        [350, 354],  // inside the GOAWAY's last stream ID, then inside its error code
        Array(1..<361),  // byte by byte
    ])
    func errorGoAwayCloses(cuts: [Int]) throws {
        let isOpen = try write(traffic + goAway(errorCode: 0x1), cutAt: cuts).isActive
        #expect(!isOpen)
    }

    @Test("a graceful GOAWAY (NO_ERROR) and ordinary frames leave the connection open", arguments: [[Int](), [345, 353], Array(1..<700)])
    func gracefulGoAwayStaysOpen(cuts: [Int]) throws {
        let channel = try write(traffic + goAway(errorCode: 0) + traffic, cutAt: cuts)
        let isOpen = channel.isActive
        #expect(isOpen)
        _ = try channel.finish(acceptAlreadyClosed: true)
    }

    @Test("a DATA payload that happens to look like a GOAWAY does not close the connection")
    func payloadIsNotParsed() throws {
        let lookalike = goAway(errorCode: 0x1)
        let channel = try write(frame(type: 0x0, stream: 1, payload: lookalike) + traffic, cutAt: [4, 20])
        let isOpen = channel.isActive
        #expect(isOpen)
        _ = try channel.finish(acceptAlreadyClosed: true)
    }
}
