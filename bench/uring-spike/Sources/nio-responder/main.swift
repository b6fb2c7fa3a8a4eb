// The io_uring responder's twin on SwiftNIO's epoll transport (NIOPosix), with the same work per request: count
// the request heads (CRLF CRLF) in what was read and write the same response once per head, flushed once per
// read batch — what Edge's HTTP/1.1 fast path does for a cache hit, without anything else.
//
//   nio-responder --port P --body FILE --content-type TYPE
import Glibc
import NIOCore
import NIOPosix
import ResponderKit

/// The loop's response as a buffer, rebuilt when the second changes.
final class LoopResponse {
    private var prepared: PreparedResponse
    private var buffer: ByteBuffer

    init(options: ResponderOptions) {
        prepared = PreparedResponse(options: options, copies: 1)
        buffer = ByteBuffer(bytes: UnsafeBufferPointer(start: prepared.bytes, count: prepared.one))
    }

    func current() -> ByteBuffer {
        if prepared.refreshDate() {
            buffer = ByteBuffer(bytes: UnsafeBufferPointer(start: prepared.bytes, count: prepared.one))
        }
        return buffer
    }
}

final class Responder: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    let response: LoopResponse
    var heads = RequestHeadCounter()
    var wrote = false

    init(_ response: LoopResponse) { self.response = response }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let bytes = unwrapInboundIn(data)
        let requests = bytes.withUnsafeReadableBytes { heads.count($0) }
        for _ in 0..<requests {
            context.write(wrapOutboundOut(response.current()), promise: nil)
            wrote = true
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if wrote { wrote = false; context.flush() }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) { context.close(promise: nil) }
}

signal(SIGPIPE, SIG_IGN)
let options = ResponderOptions.parse()
let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
let loop = group.next()
let shared = try loop.submit { NIOLoopBound(LoopResponse(options: options), eventLoop: loop) }.wait()
let server = try ServerBootstrap(group: group)
    .serverChannelOption(.backlog, value: 4096)
    .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
    .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
    .childChannelInitializer { channel in
        channel.eventLoop.makeCompletedFuture {
            try channel.pipeline.syncOperations.addHandler(Responder(shared.value))
        }
    }
    .bind(host: "127.0.0.1", port: Int(options.port)).wait()
try server.closeFuture.wait()
