import NIOCore

/// Makes the server's first SETTINGS frame advertise `advertised` as `SETTINGS_MAX_CONCURRENT_STREAMS`, while
/// NIOHTTP2 itself is configured with a higher limit.
///
/// RFC 9113 §5.1.2 asks a server to answer a stream beyond its advertised limit with a stream error
/// (`REFUSED_STREAM`, which a client may retry, as nginx sends). NIOHTTP2 treats it as a connection error and
/// closes the connection with `GOAWAY(PROTOCOL_ERROR)` — every stream in flight is lost. So Edge gives NIOHTTP2
/// a higher limit, advertises the configured one, and ``HTTP2FastPathHandler`` refuses the streams beyond it.
///
/// A server's connection preface is its SETTINGS frame, and NIOHTTP2 writes it as the first buffer of the
/// connection; this handler rewrites the limit's value in that buffer (four bytes; the frame's length is
/// unchanged) and removes itself. A first write that is not such a frame passes unchanged.
final class HTTP2StreamLimitAdvertiser: ChannelOutboundHandler, RemovableChannelHandler {
    typealias OutboundIn = IOData
    typealias OutboundOut = IOData

    /// The frame type of SETTINGS and the identifier of `SETTINGS_MAX_CONCURRENT_STREAMS` (RFC 9113 §6.5).
    private static let settingsType: UInt8 = 0x4
    private static let maxConcurrentStreams: UInt16 = 0x3

    private let advertised: UInt32

    /// Creates the handler for a connection whose clients are told they may open `advertised` streams.
    init(advertised: Int) {
        self.advertised = UInt32(advertised)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .byteBuffer(var buffer) = unwrapOutboundIn(data) {
            Self.rewrite(&buffer, advertising: advertised)
            context.write(wrapOutboundOut(.byteBuffer(buffer)), promise: promise)
        } else {
            context.write(data, promise: promise)
        }
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }

    /// Sets the value of every `SETTINGS_MAX_CONCURRENT_STREAMS` entry of the SETTINGS frame at the start of
    /// `buffer` to `value`; returns whether the buffer began with a SETTINGS frame that had one.
    @discardableResult
    static func rewrite(_ buffer: inout ByteBuffer, advertising value: UInt32) -> Bool {
        let start = buffer.readerIndex
        guard let length = buffer.getInteger(at: start, as: UInt32.self).map({ Int($0 >> 8) }),
            buffer.getInteger(at: start + 3, as: UInt8.self) == settingsType,
            buffer.getInteger(at: start + 4, as: UInt8.self) == 0,  // not an ACK
            buffer.getInteger(at: start + 5, as: UInt32.self) == 0,  // stream 0
            length % 6 == 0, buffer.readableBytes >= 9 + length
        else { return false }
        var rewrote = false
        for entry in stride(from: start + 9, to: start + 9 + length, by: 6)
        where buffer.getInteger(at: entry, as: UInt16.self) == maxConcurrentStreams {
            buffer.setInteger(value, at: entry + 2)
            rewrote = true
        }
        return rewrote
    }
}
