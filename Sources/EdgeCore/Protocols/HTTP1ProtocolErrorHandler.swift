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
///
/// A parse error after a response that said `Connection: close` (RFC 9112 §9.6: the server processes no further
/// request), or in bytes the client sent after its own `Connection: close` request (llhttp reports those as
/// `HTTPParserError.closedConnection`), is neither answered nor passed on: the connection ends once that
/// response is written.
final class HTTP1ProtocolErrorHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    private var hasUnterminatedResponse = false
    /// A response said `Connection: close`: it is the connection's last.
    private var closeAnnounced = false
    private let serverName: String
    /// Counts and logs the refused request (no route: it could not be read).
    private let observer: LoopObserver?
    private let client: ClientAddress
    private let tls: TLSVersionLabel

    init(serverName: String, observer: LoopObserver? = nil, client: ClientAddress = .unknown, tls: TLSVersionLabel = .none) {
        self.serverName = serverName
        self.observer = observer
        self.client = client
        self.tls = tls
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard let parseError = error as? HTTPParserError else {
            context.fireErrorCaught(error)
            return
        }
        if closeAnnounced || parseError == .closedConnection {
            // The request handler closes the connection once the response that said close is written; an
            // answer here would break RFC 9112 §9.6, and a close here could cut that response short.
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
            if let observer {
                var record = RequestRecord(start: .now(), method: .RAW(value: "-"), target: "", wire: .http1_1, client: client, tls: tls)
                record.status = Int(status.code)
                record.bodyBytesOut = text.utf8.count
                observer.finished(record)
            }
        }
        context.fireErrorCaught(error)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case .head(let head) where head.status.code >= 200:
            hasUnterminatedResponse = true
            if !head.isKeepAlive { closeAnnounced = true }
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
final class CloseOnErrorHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = Any

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let tlsError = error as? NIOSSLError, case .uncleanShutdown = tlsError { return }
        context.close(promise: nil)
    }
}
