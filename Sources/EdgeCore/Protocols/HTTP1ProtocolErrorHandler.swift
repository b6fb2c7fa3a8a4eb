#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import NIOCore
import NIOHTTP1
import NIOSSL

/// Answers HTTP/1 parse errors: 431 for an oversized head, 400 for anything else, with `Connection: close`.
///
/// Like NIO's `HTTPServerProtocolErrorHandler`, but it distinguishes 431 and never traps; the decoder closes the
/// connection right after the error, and the error goes on down the pipeline.
final class HTTP1ProtocolErrorHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    private var hasUnterminatedResponse = false
    private let serverName: String

    init(serverName: String) {
        self.serverName = serverName
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard let parseError = error as? HTTPParserError else {
            context.fireErrorCaught(error)
            return
        }
        if !hasUnterminatedResponse {
            let (status, text): (HTTPResponseStatus, String) =
                parseError == .headerOverflow
                ? (.requestHeaderFieldsTooLarge, "request header fields too large\n")
                : (.badRequest, "bad request\n")
            let headers = HTTPHeaders([
                ("server", serverName), ("date", HTTPDateHeader.format(time(nil))), ("connection", "close"),
                ("content-type", "text/plain; charset=utf-8"), ("content-length", String(text.utf8.count)),
            ])
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
            context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: text)))), promise: nil)
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        }
        context.fireErrorCaught(error)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case .head(let head) where head.status.code >= 200: hasUnterminatedResponse = true
        case .end: hasUnterminatedResponse = false
        default: break
        }
        context.write(data, promise: promise)
    }
}

/// Closes a connection when an error reaches the end of its pipeline, so that no error leaves a socket open.
///
/// The exception is TLS's unclean shutdown (the client closed TCP without `close_notify`): the half-close event
/// that follows it lets the request in progress be answered first.
final class CloseOnErrorHandler: ChannelInboundHandler {
    typealias InboundIn = Any

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let tlsError = error as? NIOSSLError, case .uncleanShutdown = tlsError { return }
        context.close(promise: nil)
    }
}
