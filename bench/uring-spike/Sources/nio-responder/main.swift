// The io_uring responder's twin on SwiftNIO's epoll transport (NIOPosix), with the same work per request: count
// the request heads (CRLF CRLF) in what was read and write the same response once per head, flushed once per
// read batch — what Edge's HTTP/1.1 fast path does for a cache hit, without anything else.
//
//   nio-responder --port P --body FILE --content-type TYPE
import Glibc
import NIOCore
import NIOPosix

var port = 8080
var body: [UInt8] = Array("hello\n".utf8)
var contentType = "text/plain"
var arguments = CommandLine.arguments.dropFirst().makeIterator()
while let flag = arguments.next() {
    guard let value = arguments.next() else { fatalError("\(flag) needs a value") }
    switch flag {
    case "--port": port = Int(value)!
    case "--content-type": contentType = value
    case "--body":
        guard let file = fopen(value, "rb") else { fatalError("cannot open \(value)") }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = fread(&chunk, 1, chunk.count, file)
            if n <= 0 { break }
            bytes += chunk[0..<n]
        }
        fclose(file)
        body = bytes
    default: fatalError("unknown option \(flag)")
    }
}

/// The loop's response buffer, rebuilt when the second changes (as the io_uring responder rewrites its Date).
final class LoopResponse {
    let head: String
    let body: [UInt8]
    var second = 0
    var buffer = ByteBuffer()

    init(contentType: String, body: [UInt8]) {
        self.head = "HTTP/1.1 200 OK\r\nServer: spike\r\nDate: "
        self.body = Array("\r\nContent-Type: \(contentType)\r\nContent-Length: \(body.count)\r\n\r\n".utf8) + body
    }

    func current() -> ByteBuffer {
        let now = time(nil)
        if now != second {
            second = now
            var t = now
            var parts = tm()
            gmtime_r(&t, &parts)
            var text = [CChar](repeating: 0, count: 64)
            strftime(&text, 64, "%a, %d %b %Y %H:%M:%S GMT", &parts)
            var b = ByteBufferAllocator().buffer(capacity: head.utf8.count + 29 + body.count)
            b.writeString(head)
            b.writeBytes(text[0..<29].map { UInt8(bitPattern: $0) })
            b.writeBytes(body)
            buffer = b
        }
        return buffer
    }
}

final class Responder: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    let response: LoopResponse
    var matched: UInt8 = 0
    var wrote = false

    init(_ response: LoopResponse) { self.response = response }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let bytes = unwrapInboundIn(data)
        var matched = self.matched
        var requests = 0
        bytes.withUnsafeReadableBytes { raw in
            for byte in raw {
                switch matched {
                case 0, 2: matched = byte == 13 ? matched + 1 : 0
                case 1: matched = byte == 10 ? 2 : (byte == 13 ? 1 : 0)
                default:
                    if byte == 10 { requests += 1; matched = 0 } else { matched = byte == 13 ? 1 : 0 }
                }
            }
        }
        self.matched = matched
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
let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
let loop = group.next()
let (finalType, finalBody) = (contentType, body)
let shared = try loop.submit { NIOLoopBound(LoopResponse(contentType: finalType, body: finalBody), eventLoop: loop) }.wait()
let finalPort = port
let server = try ServerBootstrap(group: group)
    .serverChannelOption(.backlog, value: 4096)
    .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
    .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
    .childChannelInitializer { channel in
        channel.eventLoop.makeCompletedFuture {
            try channel.pipeline.syncOperations.addHandler(Responder(shared.value))
        }
    }
    .bind(host: "127.0.0.1", port: finalPort).wait()
try server.closeFuture.wait()
