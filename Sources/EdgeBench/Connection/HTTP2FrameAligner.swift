import NIOCore

/// Passes received HTTP/2 bytes on in buffers that end at a frame boundary.
///
/// NIOHTTP2's frame parser keeps the unparsed tail of one read and appends the next read to it; the buffer is
/// only emptied when a read happens to end exactly where a frame ends. 16 KiB DATA frames (16,393 bytes with
/// their header) sent in 16 KiB TLS records almost never do, so during a large download that buffer grew by
/// every byte received and was reallocated again and again: against a 50 MB HTTP/2 download from Edge, 60 % of
/// edge-bench's CPU went to page faults on those reallocations and it held gigabytes, measuring its own
/// parser instead of the server. `ByteToMessageDecoder` reclaims consumed bytes, and NIOHTTP2 always finds
/// whole frames, so its buffer is empty after every read.
struct HTTP2FrameAligner: ByteToMessageDecoder {
    typealias InboundOut = ByteBuffer

    /// Bytes of a frame header: 24-bit length, type, flags, stream identifier.
    static let headerBytes = 9
    /// The largest frame this client accepts (the default SETTINGS_MAX_FRAME_SIZE it announces). A larger one
    /// is a protocol error NIOHTTP2 reports; its bytes are passed on rather than gathered here.
    static let maxFrameBytes = 16_384

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        var end = buffer.readerIndex
        while end + Self.headerBytes <= buffer.writerIndex,
            let high = buffer.getInteger(at: end, as: UInt8.self),
            let low = buffer.getInteger(at: end + 1, as: UInt16.self)
        {
            let length = Int(high) << 16 | Int(low)
            guard length <= Self.maxFrameBytes else {
                end = buffer.writerIndex  // not a frame this client accepts: let NIOHTTP2 say so
                break
            }
            let frameEnd = end + Self.headerBytes + length
            guard frameEnd <= buffer.writerIndex else { break }
            end = frameEnd
        }
        guard end > buffer.readerIndex, let frames = buffer.readSlice(length: end - buffer.readerIndex) else {
            return .needMoreData
        }
        context.fireChannelRead(wrapInboundOut(frames))
        return .needMoreData
    }

    mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState {
        _ = try decode(context: context, buffer: &buffer)
        if buffer.readableBytes > 0, let rest = buffer.readSlice(length: buffer.readableBytes) {
            context.fireChannelRead(wrapInboundOut(rest))  // a truncated frame: NIOHTTP2 sees it as the server sent it
        }
        return .needMoreData
    }
}
