import NIOCore

/// Joins the small buffers written between two flushes into one, so that TLS seals them in one record; and
/// joins the flushes that other connections' events cause within one event-loop iteration into one.
///
/// NIOHTTP2 writes every frame as its own buffer — a response is a HEADERS frame, a DATA frame header and
/// the DATA payload — and NIOSSL seals every buffer it is given as a separate TLS record, with its own
/// `SSL_write`, header and tag. Ten answered streams in one read batch became thirty records; joined, they
/// are one. Buffers of `passThroughBytes` or more (file chunks) and writes that carry a promise go through
/// unchanged, after whatever was joined before them, so the order of bytes never changes.
///
/// A flush while the connection's own reads are being handled goes through at once (NIOHTTP2 flushes once at
/// the end of the read batch). A flush from elsewhere — a proxied stream's answer, which arrives on an
/// upstream connection's read — is put off to the end of the event loop's current iteration, so that the
/// answers of all the streams whose upstreams answered in that iteration leave in one TLS record and one
/// `write`, rather than a record and a system call per stream.
final class WriteCoalescingHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = IOData
    typealias OutboundOut = IOData

    /// Buffers at least this large are written as they are.
    private static let passThroughBytes = 4096
    /// The joined buffer never holds more than this (the largest TLS record's payload).
    private static let recordBytes = 16 * 1024

    private var pending: ByteBuffer?
    /// Between the connection's `channelRead` and the end of its `channelReadComplete`.
    private var reading = false
    private var flushScheduled = false
    private var removed = false

    func handlerRemoved(context: ChannelHandlerContext) {
        removed = true
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        reading = true
        context.fireChannelRead(data)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        reading = true
        context.fireChannelReadComplete()
        reading = false
    }

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
        if reading {
            writePending(context: context)
            context.flush()
            return
        }
        guard !flushScheduled else { return }
        flushScheduled = true
        context.eventLoop.assumeIsolated().execute { [self] in
            flushScheduled = false
            guard !removed else { return }
            writePending(context: context)
            context.flush()
        }
    }

    /// What was written goes out before the connection closes, even with a flush put off.
    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        if pending != nil || flushScheduled {
            writePending(context: context)
            context.flush()
        }
        context.close(mode: mode, promise: promise)
    }

    private func writePending(context: ChannelHandlerContext) {
        if let buffer = pending {
            pending = nil
            context.write(wrapOutboundOut(.byteBuffer(buffer)), promise: nil)
        }
    }
}
