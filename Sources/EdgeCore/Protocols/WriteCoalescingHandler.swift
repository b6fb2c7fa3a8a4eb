import NIOCore

/// Joins the small buffers written between two flushes into one, so that TLS seals them in one record.
///
/// NIOHTTP2 writes every frame as its own buffer — a response is a HEADERS frame, a DATA frame header and
/// the DATA payload — and NIOSSL seals every buffer it is given as a separate TLS record, with its own
/// `SSL_write`, header and tag. Ten answered streams in one read batch became thirty records; joined, they
/// are one. Buffers of `passThroughBytes` or more (file chunks) and writes that carry a promise go through
/// unchanged, after whatever was joined before them, so the order of bytes never changes.
final class WriteCoalescingHandler: ChannelOutboundHandler {
    typealias OutboundIn = IOData
    typealias OutboundOut = IOData

    /// Buffers at least this large are written as they are.
    private static let passThroughBytes = 4096
    /// The joined buffer never holds more than this (the largest TLS record's payload).
    private static let recordBytes = 16 * 1024

    private var pending: ByteBuffer?

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        guard promise == nil, case .byteBuffer(var buffer) = unwrapOutboundIn(data),
            buffer.readableBytes < Self.passThroughBytes
        else {
            writePending(context: context)
            context.write(data, promise: promise)
            return
        }
        if let joined = pending, joined.readableBytes + buffer.readableBytes > Self.recordBytes {
            writePending(context: context)
        }
        if pending == nil {
            pending = context.channel.allocator.buffer(capacity: Self.recordBytes)
        }
        pending!.writeBuffer(&buffer)
    }

    func flush(context: ChannelHandlerContext) {
        writePending(context: context)
        context.flush()
    }

    private func writePending(context: ChannelHandlerContext) {
        if let buffer = pending {
            pending = nil
            context.write(wrapOutboundOut(.byteBuffer(buffer)), promise: nil)
        }
    }
}
