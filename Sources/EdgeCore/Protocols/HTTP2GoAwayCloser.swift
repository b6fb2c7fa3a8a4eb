import NIOCore

/// Closes an HTTP/2 connection once NIOHTTP2 has written a GOAWAY carrying an error code.
///
/// NIOHTTP2 detects abuse (rapid reset, CONTINUATION and control-frame floods, flow-control violations, …),
/// answers with GOAWAY and reports the error, but leaves closing the connection to the application — and it
/// reports stream errors through the same path with the same error types, so the error alone cannot say
/// whether the connection is finished. The frame on the wire can: this handler sits below NIOHTTP2Handler,
/// follows the frame boundaries of the bytes it writes, and closes the connection after a GOAWAY whose error
/// code is not `NO_ERROR`. A graceful GOAWAY (shutdown, idle) is left to ``HTTP2FastPathHandler``, which closes
/// the connection itself once its streams are done.
///
/// The close after such a GOAWAY lingers, as nginx's `lingering_close`: the GOAWAY is flushed, the sending side
/// is shut (TLS `close_notify`, then TCP FIN), and what the client goes on sending is read and dropped until it
/// closes too or ``lingerTimeout`` passes. Closing at once with the client's frames unread makes the kernel answer
/// with a reset, and a reset can destroy the GOAWAY before the client has read it: the client then never learns
/// why (seen with 250 malformed heads sent back to back, about one run in two).
///
/// Being next to the socket, it also closes the connection on request once every byte written before the
/// request is on the wire (``CloseAfterWrites``), which a plain `close` does not wait for.
final class HTTP2GoAwayCloser: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = IOData
    typealias OutboundOut = IOData

    /// How long a connection closed after an error GOAWAY reads and drops what the client still sends.
    static let lingerTimeout = TimeAmount.seconds(1)
    private var lingering = false
    private var lingerTimer: Scheduled<Void>?

    /// A user outbound event: close the connection once everything written (and flushed) before it is sent.
    struct CloseAfterWrites {}

    /// A frame header being collected (it may be split across writes).
    private var header: [UInt8] = []
    /// Payload bytes of the current frame still to come.
    private var payloadRemaining = 0
    /// The first 8 payload bytes of a GOAWAY (last stream ID, error code) while they are being collected.
    private var goAwayPrefix: [UInt8]?
    private var closeAfterWrite = false

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .byteBuffer(let buffer) = unwrapOutboundIn(data) {
            scan(buffer)
        }
        guard closeAfterWrite else {
            context.write(data, promise: promise)
            return
        }
        closeAfterWrite = false
        let written = promise ?? context.eventLoop.makePromise()
        written.futureResult.assumeIsolated().whenComplete { result in
            if case .success = result { self.linger(context: context) } else { context.close(promise: nil) }
        }
        context.writeAndFlush(data, promise: written)
    }

    /// Shuts the sending side and drops input until the client closes or ``lingerTimeout`` passes, then closes.
    private func linger(context: ChannelHandlerContext) {
        guard !lingering else { return }
        lingering = true
        lingerTimer = context.eventLoop.assumeIsolated().scheduleTask(in: Self.lingerTimeout) {
            context.close(promise: nil)
        }
        context.close(mode: .output, promise: nil)
        context.read()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !lingering else { return }
        context.fireChannelRead(data)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        guard !lingering else {
            context.read()
            return
        }
        context.fireChannelReadComplete()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if lingering, case ChannelEvent.inputClosed = event {
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // The client's reset or the TLS layer's complaint about bytes after close_notify ends the lingering.
        if lingering {
            context.close(promise: nil)
            return
        }
        context.fireErrorCaught(error)
    }

    func channelInactive(context: ChannelHandlerContext) {
        lingerTimer?.cancel()
        lingerTimer = nil
        context.fireChannelInactive()
    }

    func triggerUserOutboundEvent(context: ChannelHandlerContext, event: Any, promise: EventLoopPromise<Void>?) {
        guard event is CloseAfterWrites else {
            context.triggerUserOutboundEvent(event, promise: promise)
            return
        }
        // Writes complete in order, so this empty write completes after everything before it.
        context.writeAndFlush(wrapOutboundOut(.byteBuffer(ByteBuffer()))).assumeIsolated().whenComplete { _ in
            context.close(promise: nil)
        }
        promise?.succeed()
    }

    /// Follows frame boundaries (9-byte header: 24-bit length, type, flags, stream ID) through `buffer`.
    ///
    /// A response batch is many frames in one buffer, so a header that lies whole in the buffer is read in
    /// place; only a header split across writes is collected byte by byte.
    private func scan(_ buffer: ByteBuffer) {
        var payloadRemaining = self.payloadRemaining
        buffer.withUnsafeReadableBytes { bytes in
            var index = 0
            while index < bytes.count {
                if payloadRemaining > 0 {
                    let take = min(payloadRemaining, bytes.count - index)
                    if goAwayPrefix != nil { collectGoAwayPrefix(bytes[index..<(index + take)]) }
                    payloadRemaining -= take
                    index += take
                    if payloadRemaining == 0 { goAwayPrefix = nil }
                } else if header.isEmpty, bytes.count - index >= 9 {
                    payloadRemaining = startFrame(length: bytes[index..<(index + 3)], type: bytes[index + 3])
                    index += 9
                } else {
                    header.append(bytes[index])
                    index += 1
                    if header.count == 9 {
                        payloadRemaining = startFrame(length: header[0..<3], type: header[3])
                        header.removeAll(keepingCapacity: true)
                    }
                }
            }
        }
        self.payloadRemaining = payloadRemaining
    }

    /// Notes a frame's start; returns its payload length.
    private func startFrame<Bytes: Collection<UInt8>>(length: Bytes, type: UInt8) -> Int {
        let length = length.reduce(0) { $0 << 8 | Int($1) }
        goAwayPrefix = type == 0x7 && length >= 8 ? [] : nil
        return length
    }

    /// Adds the start of a GOAWAY payload to ``goAwayPrefix``; once it has the error code, decides whether
    /// to close.
    private func collectGoAwayPrefix(_ bytes: Slice<UnsafeRawBufferPointer>) {
        guard var prefix = goAwayPrefix, prefix.count < 8 else { return }
        prefix.append(contentsOf: bytes.prefix(8 - prefix.count))
        goAwayPrefix = prefix
        if prefix.count == 8, !prefix[4..<8].allSatisfy({ $0 == 0 }) { closeAfterWrite = true }
    }
}
