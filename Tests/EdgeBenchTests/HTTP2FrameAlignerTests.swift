import NIOCore
import NIOEmbedded
import Testing

@testable import EdgeBench

@Suite("HTTP/2 frame aligner: NIOHTTP2 gets buffers that end where frames end")
struct HTTP2FrameAlignerTests {
    /// One frame: 24-bit length, type, flags, stream identifier, payload.
    private static func frame(type: UInt8, stream: UInt32, payload: [UInt8]) -> [UInt8] {
        let length = payload.count
        var bytes: [UInt8] = [UInt8(length >> 16 & 0xFF), UInt8(length >> 8 & 0xFF), UInt8(length & 0xFF), type, 0]
        bytes += [UInt8(stream >> 24 & 0xFF), UInt8(stream >> 16 & 0xFF), UInt8(stream >> 8 & 0xFF), UInt8(stream & 0xFF)]
        return bytes + payload
    }

    /// A SETTINGS frame, then DATA frames of 16,384 bytes, 7 bytes and 0 bytes, as a server sends them.
    private static let wire: [UInt8] = {
        let big = (0..<16_384).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        return frame(type: 4, stream: 0, payload: [0, 3, 0, 0, 0, 100]) + frame(type: 0, stream: 1, payload: big)
            + frame(type: 0, stream: 1, payload: Array("payload".utf8)) + frame(type: 0, stream: 3, payload: [])
    }()
    private static let frameEnds: Set<Int> = [15, 15 + 16_393, 15 + 16_393 + 16, 15 + 16_393 + 16 + 9]

    /// Feeds `bytes` in pieces of `piece` bytes; returns the buffers passed on.
    private static func feed(_ bytes: [UInt8], piece: Int, close: Bool = false) throws -> [[UInt8]] {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(HTTP2FrameAligner()))
        var offset = 0
        while offset < bytes.count {
            let end = min(offset + piece, bytes.count)
            try channel.writeInbound(ByteBuffer(bytes: bytes[offset..<end]))
            offset = end
        }
        if close { channel.pipeline.fireChannelInactive() }
        var out: [[UInt8]] = []
        while let buffer = try channel.readInbound(as: ByteBuffer.self) {
            out.append(Array(buffer.readableBytesView))
        }
        _ = try? channel.finish()
        return out
    }

    @Test("every buffer passed on ends at a frame boundary, and together they are the bytes received", arguments: [1, 9, 10, 100, 4_096, 16_384, 16_385, 40_000])
    func alignsAtEveryPieceSize(piece: Int) throws {
        let out = try Self.feed(Self.wire, piece: piece)
        #expect(out.flatMap { $0 } == Self.wire)
        var position = 0
        for buffer in out {
            position += buffer.count
            #expect(Self.frameEnds.contains(position), "a buffer ended at \(position), inside a frame")
        }
    }

    @Test("a frame longer than the client accepts is passed on at once, for NIOHTTP2 to refuse")
    func oversizedFrame() throws {
        let oversized = Self.frame(type: 0, stream: 1, payload: [UInt8](repeating: 7, count: 20_000))
        let out = try Self.feed(Array(oversized.prefix(1_000)), piece: 1_000)
        #expect(out == [Array(oversized.prefix(1_000))])
    }

    @Test("a frame cut off by the end of the connection is still passed on")
    func truncatedAtClose() throws {
        let cut = Array(Self.wire.prefix(15 + 100))
        let out = try Self.feed(cut, piece: 50, close: true)
        #expect(out.flatMap { $0 } == cut)
    }
}
