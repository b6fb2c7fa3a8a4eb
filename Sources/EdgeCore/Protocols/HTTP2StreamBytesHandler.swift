import NIOCore
import NIOHTTP2

/// The bytes of an HTTP/2 stream whose request switched protocols (extended CONNECT, RFC 8441): DATA frames in
/// become `ByteBuffer`s, `ByteBuffer`s out become DATA frames, so that the protocol above it (WebSocket) reads and
/// writes a byte stream as it does on an HTTP/1.1 connection.
///
/// - The client's END_STREAM is the end of its input: `ChannelEvent.inputClosed`, as a TCP half-close would be.
///   Its trailers, if any, carry nothing a tunnel uses and end the input the same way.
/// - Closing the channel first ends Edge's side of the stream with an empty DATA frame with END_STREAM (the
///   orderly end of a tunnel, RFC 8441 §4), then waits up to ``lingerTime`` for the client to end its side before
///   the stream is reset.
final class HTTP2StreamBytesHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTP2Frame.FramePayload
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = HTTP2Frame.FramePayload

    /// How long a closing stream waits for the client's END_STREAM after its own.
    static let lingerTime: TimeAmount = .seconds(2)

    private var inputEnded = false
    private var outputEnded = false
    private var closePromise: EventLoopPromise<Void>?
    private var lingerTimer: Scheduled<Void>?

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .data(let frame):
            if case .byteBuffer(let bytes) = frame.data, bytes.readableBytes > 0 {
                context.fireChannelRead(wrapInboundOut(bytes))
            }
            if frame.endStream { endInput(context: context) }
        case .headers(let headers):
            if headers.endStream { endInput(context: context) }
        default:
            break
        }
    }

    private func endInput(context: ChannelHandlerContext) {
        guard !inputEnded else { return }
        inputEnded = true
        if outputEnded {
            finishClose(context: context)
        } else {
            context.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        }
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        guard !outputEnded else {
            promise?.fail(ChannelError.outputClosed)
            return
        }
        let bytes = unwrapOutboundIn(data)
        context.write(wrapOutboundOut(.data(.init(data: .byteBuffer(bytes)))), promise: promise)
    }

    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        guard mode == .all, !outputEnded, context.channel.isActive else {
            context.close(mode: mode, promise: promise)
            return
        }
        outputEnded = true
        closePromise = promise
        context.writeAndFlush(wrapOutboundOut(.data(.init(data: .byteBuffer(ByteBuffer()), endStream: true))), promise: nil)
        if inputEnded {
            finishClose(context: context)
        } else {
            lingerTimer = context.eventLoop.assumeIsolated().scheduleTask(in: Self.lingerTime) {
                self.lingerTimer = nil
                self.finishClose(context: context)
            }
        }
    }

    /// Both sides have ended (or the client did not end its side in time): the stream closes.
    private func finishClose(context: ChannelHandlerContext) {
        lingerTimer?.cancel()
        lingerTimer = nil
        let promise = closePromise
        closePromise = nil
        context.close(mode: .all, promise: promise)
    }

    func channelInactive(context: ChannelHandlerContext) {
        lingerTimer?.cancel()
        lingerTimer = nil
        if let promise = closePromise {
            closePromise = nil
            promise.succeed()
        }
        context.fireChannelInactive()
    }
}
