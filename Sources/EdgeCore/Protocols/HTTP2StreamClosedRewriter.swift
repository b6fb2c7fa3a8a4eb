import NIOCore

/// Works around NIOHTTP2 1.46 answering a HEADERS frame on a stream the client has already ended with
/// `RST_STREAM(PROTOCOL_ERROR)`, where RFC 9113 §5.1 asks for `STREAM_CLOSED`: "If an endpoint receives additional
/// frames, other than WINDOW_UPDATE, PRIORITY, or RST_STREAM, for a stream that is in [half-closed (remote)], it
/// MUST respond with a stream error of type STREAM_CLOSED" (h2spec http2/5.1/6). NIOHTTP2's stream state machine
/// raises a bad state transition of type PROTOCOL_ERROR there, writes the reset itself and never passes the
/// frame up, so nothing above it can answer differently; and it must still decode the block, or HPACK would fall
/// out of step.
///
/// So this handler, right below NIOHTTP2Handler, follows the client's frame headers (9 bytes a frame; payloads
/// are skipped, not read) and remembers the recent streams whose client side ended (`END_STREAM` on HEADERS or
/// DATA). When a HEADERS frame arrives on such a stream, it hands NIOHTTP2 everything before that frame, then the
/// header block alone, and while NIOHTTP2 processes that block rewrites the error code of the `RST_STREAM` it
/// writes for that stream, or of a `GOAWAY` (a frame after `END_STREAM` on a stream already closed is a
/// connection error of the same type), from PROTOCOL_ERROR to STREAM_CLOSED. Any other reset keeps its code.
/// NIOHTTP2 writes each frame in a buffer of its own, so a reset is one 13-byte write and a GOAWAY without debug
/// data one of 17.
final class HTTP2StreamClosedRewriter: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = IOData
    typealias OutboundOut = IOData

    /// Recent client streams whose side ended, by `(id >> 1) % slots`: an older stream in the same slot is
    /// forgotten (and keeps NIOHTTP2's code).
    private static let slots = 256
    private var ended = [UInt32](repeating: 0, count: slots)
    /// Bytes still to pass before the next frame header: the client preface (24 bytes) first, then each payload.
    private var skip = 24
    /// The start of a frame header split between two reads.
    private var partialHeader: [UInt8] = []
    /// The stream whose header block NIOHTTP2 is being handed, and whether the block still awaits END_HEADERS.
    private var marked: UInt32?
    private var markedBlockOpen = false

    private static let headersType: UInt8 = 0x1
    private static let dataType: UInt8 = 0x0
    private static let continuationType: UInt8 = 0x9
    private static let endStream: UInt8 = 0x1
    private static let endHeaders: UInt8 = 0x4
    private static let protocolError: UInt32 = 0x1
    private static let streamClosed: UInt32 = 0x5

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        let end = buffer.writerIndex
        var index = buffer.readerIndex
        var forwarded = buffer.readerIndex
        while index < end {
            if skip > 0 {
                let take = min(skip, end - index)
                skip -= take
                index += take
                if skip == 0 { releaseMarkedBlock(buffer, &forwarded, to: index, context) }
                continue
            }
            let frameStart: Int
            let word: UInt32, flags: UInt8, rawStream: UInt32
            if partialHeader.isEmpty, end - index >= 9 {
                // Read in place: no copy of the header.
                frameStart = index
                word = buffer.getInteger(at: index, as: UInt32.self)!
                flags = buffer.getInteger(at: index + 4, as: UInt8.self)!
                rawStream = buffer.getInteger(at: index + 5, as: UInt32.self)!
                index += 9
            } else {
                frameStart = buffer.readerIndex  // the header began in an earlier read, already handed on
                let take = min(9 - partialHeader.count, end - index)
                partialHeader += buffer.getBytes(at: index, length: take)!
                index += take
                guard partialHeader.count == 9 else { continue }
                let h = partialHeader
                word = UInt32(h[0]) << 24 | UInt32(h[1]) << 16 | UInt32(h[2]) << 8 | UInt32(h[3])
                flags = h[4]
                rawStream = UInt32(h[5]) << 24 | UInt32(h[6]) << 16 | UInt32(h[7]) << 8 | UInt32(h[8])
                partialHeader.removeAll(keepingCapacity: true)
            }
            skip = Int(word >> 8)
            let type = UInt8(truncatingIfNeeded: word)
            let stream = rawStream & 0x7FFF_FFFF
            if marked != nil {
                if type == Self.continuationType, flags & Self.endHeaders != 0 { markedBlockOpen = false }
            } else if stream & 1 == 1 {
                let slot = Int(stream >> 1) % Self.slots
                if type == Self.headersType, ended[slot] == stream {
                    forward(buffer, &forwarded, to: max(forwarded, frameStart), context)
                    marked = stream
                    markedBlockOpen = flags & Self.endHeaders == 0
                } else if type == Self.headersType || type == Self.dataType, flags & Self.endStream != 0 {
                    ended[slot] = stream
                }
            }
            if skip == 0 { releaseMarkedBlock(buffer, &forwarded, to: index, context) }
        }
        forward(buffer, &forwarded, to: end, context)
    }

    /// Once the marked header block is complete up to `index`, hands it to NIOHTTP2 (which answers it during this
    /// call) and ends the mark.
    private func releaseMarkedBlock(_ buffer: ByteBuffer, _ forwarded: inout Int, to index: Int, _ context: ChannelHandlerContext) {
        guard marked != nil, !markedBlockOpen else { return }
        forward(buffer, &forwarded, to: index, context)
        marked = nil
    }

    private func forward(_ buffer: ByteBuffer, _ forwarded: inout Int, to end: Int, _ context: ChannelHandlerContext) {
        guard end > forwarded else { return }
        if forwarded == buffer.readerIndex, end == buffer.writerIndex {
            context.fireChannelRead(wrapInboundOut(buffer))
        } else {
            context.fireChannelRead(wrapInboundOut(buffer.getSlice(at: forwarded, length: end - forwarded)!))
        }
        forwarded = end
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        guard let stream = marked, case .byteBuffer(var bytes) = unwrapOutboundIn(data) else {
            context.write(data, promise: promise)
            return
        }
        let start = bytes.readerIndex
        let codeAt: Int?
        switch (bytes.readableBytes, bytes.getInteger(at: start + 3, as: UInt8.self)) {
        case (13, 0x3) where bytes.getInteger(at: start + 5, as: UInt32.self).map({ $0 & 0x7FFF_FFFF }) == stream:
            codeAt = start + 9
        case (17, 0x7):
            codeAt = start + 13
        default:
            codeAt = nil
        }
        if let codeAt, bytes.getInteger(at: codeAt, as: UInt32.self) == Self.protocolError {
            bytes.setInteger(Self.streamClosed, at: codeAt)
            context.write(wrapOutboundOut(.byteBuffer(bytes)), promise: promise)
        } else {
            context.write(data, promise: promise)
        }
    }
}
