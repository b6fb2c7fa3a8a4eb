import NIOCore

/// Counts the bytes arriving on a connection (after TLS decryption) for the report's transfer figures.
final class ByteCountingHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private let delegate: any TransportDelegate

    /// A handler reporting to `delegate`.
    init(delegate: any TransportDelegate) {
        self.delegate = delegate
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        delegate.transportReceived(bytes: unwrapInboundIn(data).readableBytes)
        context.fireChannelRead(data)
    }
}
