import Dispatch
@testable import EdgeCore
import Foundation
import Glibc
import NIOConcurrencyHelpers
import NIOCore
import Testing

private let ioURingAvailable = (try? URing(entries: 2)) != nil

/// The io_uring transport's channels (``URingServerChannel``, ``URingSocketChannel``, ``URingConnector``) against
/// plain blocking sockets on the other side: bytes in order both ways, half-closure, backpressure, file regions,
/// closing with entries in flight, connecting.
@Suite(
    "io_uring channels: listeners, connections, connects",
    .enabled(if: ioURingAvailable, "this kernel or its seccomp filter refuses io_uring_setup")
)
struct URingChannelTests {
    private func withListener(
        loops: Int = 2, _ makeHandler: @escaping @Sendable () -> any ChannelHandler,
        _ body: (URingEventLoopGroup, Int) throws -> Void
    ) async throws {
        let group = try URingEventLoopGroup(threads: loops, name: "test-ch")
        let listeners = try await URingListener.bind(
            group: group, address: try SocketAddress(ipAddress: "127.0.0.1", port: 0), backlog: 64,
            serverInitializer: { $0.eventLoop.makeSucceededVoidFuture() },
            childOptions: { try $0.setOption0(.allowRemoteHalfClosure, value: true) },
            childInitializer: { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(makeHandler()) }
            }
        )
        #expect(listeners.count == loops)
        let port = listeners[0].localAddress!.port!
        #expect(listeners.allSatisfy { $0.localAddress?.port == port })
        try body(group, port)
        for listener in listeners { try await listener.close() }
        try await group.shutdownGracefully()
    }

    @Test func echoesBytesInOrderOverManyConnections() async throws {
        try await withListener({ Echo() }) { _, port in
            for round in 0..<8 {
                let client = try BlockingClient(port: port)
                defer { client.close() }
                let payload = (0..<(100_000 + round)).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ round) }
                // Sent from another thread: the echo comes back while the rest is still going out.
                let sender = Thread { client.send(payload) }
                sender.start()
                #expect(client.receive(count: payload.count) == payload)
            }
        }
    }

    @Test func aHalfClosedClientStillGetsItsAnswer() async throws {
        try await withListener({ AnswerAtEnd() }) { _, port in
            let client = try BlockingClient(port: port)
            defer { client.close() }
            client.send(Array("question".utf8))
            client.shutdownWrite()
            // The answer is written after the client's end (inputClosed), then the server closes: EOF.
            #expect(String(decoding: client.receiveAll(), as: UTF8.self) == "answer to 8 bytes")
        }
    }

    @Test func aClientThatDoesNotReadMakesTheChannelUnwritableAndLosesNothing() async throws {
        let events = NIOLockedValueBox<[Bool]>([])
        try await withListener({ Flood(bytes: 8 << 20, writability: events) }) { _, port in
            let client = try BlockingClient(port: port)
            defer { client.close() }
            client.send([1])
            Thread.sleep(forTimeInterval: 0.3)
            let bytes = client.receiveAll()
            #expect(bytes.count == 8 << 20)
            #expect(bytes.enumerated().allSatisfy { $0.element == UInt8(truncatingIfNeeded: $0.offset / 4096) })
        }
        // Writability went off while the client did not read, and came back as it did.
        let seen = events.withLockedValue { $0 }
        #expect(seen.first == false)
        #expect(seen.last == true)
    }

    @Test func fileRegionsGoOutWhole() async throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("uring-region-\(getpid())").path
        let content = (0..<(3 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        #expect(FileManager.default.createFile(atPath: path, contents: Data(content)))
        defer { unlink(path) }
        try await withListener({ SendFile(path: path, from: 1000) }) { _, port in
            let client = try BlockingClient(port: port)
            defer { client.close() }
            client.send([1])
            Thread.sleep(forTimeInterval: 0.2)  // the socket fills: the rest waits for room (poll)
            #expect(client.receiveAll() == Array(content[1000...]))
        }
    }

    @Test func closingWithAReceiveInFlightReleasesTheConnection() async throws {
        let closed = NIOLockedValueBox(0)
        try await withListener(loops: 1, { CloseAtOnce(closed: closed) }) { _, port in
            for _ in 0..<50 {
                let client = try BlockingClient(port: port)
                #expect(client.receiveAll().isEmpty)  // EOF: the server closed
                client.close()
            }
            let deadline = Date().addingTimeInterval(5)
            while closed.withLockedValue({ $0 }) < 50, Date() < deadline { Thread.sleep(forTimeInterval: 0.01) }
            #expect(closed.withLockedValue { $0 } == 50)
            // The listener still accepts and serves (no descriptor was closed twice or reused early).
            let client = try BlockingClient(port: port)
            #expect(client.receiveAll().isEmpty)
            client.close()
        }
    }

    @Test func bytesWrittenAndFlushedBeforeACloseAllArrive() async throws {
        // Written, flushed and closed in one go: the send is still in flight at the close, and must finish.
        try await withListener({ LastWords(bytes: 2 << 20) }) { _, port in
            for _ in 0..<3 {
                let client = try BlockingClient(port: port)
                defer { client.close() }
                client.send([1])
                let bytes = client.receiveAll()
                #expect(bytes.count == 2 << 20)
                #expect(bytes.allSatisfy { $0 == 7 })
            }
        }
    }

    @Test func aPeerThatLeavesIsNoticedWhileNothingReads() async throws {
        let events = NIOLockedValueBox<[String]>([])
        try await withListener(loops: 1, { NeverReads(events: events) }) { _, port in
            // An end (FIN): the input is read to its end and reported, though no read was asked for.
            let ending = try BlockingClient(port: port)
            Thread.sleep(forTimeInterval: 0.2)
            ending.shutdownWrite()
            // A reset (RST): the connection closes.
            let resetting = try BlockingClient(port: port)
            Thread.sleep(forTimeInterval: 0.2)
            resetting.reset()
            let deadline = Date().addingTimeInterval(5)
            while events.withLockedValue({ $0.count }) < 2, Date() < deadline { Thread.sleep(forTimeInterval: 0.01) }
            #expect(events.withLockedValue { $0 }.sorted() == ["closed", "inputClosed"])
            ending.close()
        }
    }

    @Test func connectsToAListenerAndReportsARefusal() async throws {
        try await withListener({ Echo() }) { group, port in
            let loop = group.loops[0]
            let channel = try URingConnector(connectTimeout: .seconds(2), noDelay: true).connect(
                host: "127.0.0.1", port: port, on: loop
            ) { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(Collect()) }
            }.wait()
            #expect(channel.isActive)
            #expect(channel.remoteAddress?.port == port)
            try channel.writeAndFlush(ByteBuffer(string: "ping")).wait()
            let collected = try channel.pipeline.handler(type: Collect.self).wait()
            let deadline = Date().addingTimeInterval(5)
            while try loop.submit({ collected.text }).wait() != "ping", Date() < deadline { Thread.sleep(forTimeInterval: 0.01) }
            #expect(try loop.submit { collected.text }.wait() == "ping")
            try channel.close().wait()

            // A port nobody listens on: the connect fails with ECONNREFUSED.
            let unused = try BlockingClient.unusedPort()
            #expect {
                _ = try URingConnector().connect(host: "127.0.0.1", port: unused, on: loop) { $0.eventLoop.makeSucceededVoidFuture() }.wait()
            } throws: { error in
                (error as? IOError)?.errnoCode == ECONNREFUSED
            }
        }
    }
}

// MARK: handlers

private final class Echo: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.write(data, promise: nil)
    }
    func channelReadComplete(context: ChannelHandlerContext) {
        context.flush()
    }
}

private final class AnswerAtEnd: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    private var count = 0
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        count += unwrapInboundIn(data).readableBytes
    }
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard case ChannelEvent.inputClosed? = event as? ChannelEvent else { return }
        context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: "answer to \(count) bytes"))).assumeIsolated().whenComplete { _ in
            context.close(promise: nil)
        }
    }
}

private final class Flood: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    let bytes: Int
    let writability: NIOLockedValueBox<[Bool]>
    init(bytes: Int, writability: NIOLockedValueBox<[Bool]>) {
        self.bytes = bytes
        self.writability = writability
    }
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var last: EventLoopFuture<Void>?
        for block in 0..<(bytes / 4096) {
            last = context.write(wrapOutboundOut(ByteBuffer(repeating: UInt8(truncatingIfNeeded: block), count: 4096)))
        }
        context.flush()
        last?.assumeIsolated().whenComplete { _ in context.close(promise: nil) }
    }
    func channelWritabilityChanged(context: ChannelHandlerContext) {
        let writable = context.channel.isWritable
        writability.withLockedValue { $0.append(writable) }
    }
}

private final class SendFile: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = IOData
    let path: String
    let from: Int
    init(path: String, from: Int) {
        self.path = path
        self.from = from
    }
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let handle = try! NIOFileHandle(_deprecatedPath: path)
        let size = try! handle.withUnsafeFileDescriptor { fd in Int(lseek(fd, 0, SEEK_END)) }
        let region = FileRegion(fileHandle: handle, readerIndex: from, endIndex: size)
        context.writeAndFlush(wrapOutboundOut(.fileRegion(region))).assumeIsolated().whenComplete { _ in
            try? handle.close()
            context.close(promise: nil)
        }
    }
}

private final class CloseAtOnce: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    let closed: NIOLockedValueBox<Int>
    init(closed: NIOLockedValueBox<Int>) { self.closed = closed }
    func channelActive(context: ChannelHandlerContext) {
        // Active means a receive is armed: closing now cancels it.
        context.channel.closeFuture.whenComplete { [closed] _ in closed.withLockedValue { $0 += 1 } }
        context.eventLoop.assumeIsolated().execute { context.close(promise: nil) }
    }
}

private final class LastWords: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    let bytes: Int
    init(bytes: Int) { self.bytes = bytes }
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.write(wrapOutboundOut(ByteBuffer(repeating: 7, count: bytes)), promise: nil)
        context.flush()
        context.close(promise: nil)
    }
}

private final class NeverReads: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    let events: NIOLockedValueBox<[String]>
    init(events: NIOLockedValueBox<[String]>) { self.events = events }
    func channelActive(context: ChannelHandlerContext) {
        try? context.channel.syncOptions?.setOption(.autoRead, value: false)
        context.channel.closeFuture.whenComplete { [events] _ in events.withLockedValue { $0.append("closed") } }
    }
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case ChannelEvent.inputClosed? = event as? ChannelEvent {
            events.withLockedValue { $0.append("inputClosed") }
        }
    }
    func errorCaught(context: ChannelHandlerContext, error: any Error) {}
}

private final class Collect: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    var text = ""
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        text += String(buffer: unwrapInboundIn(data))
    }
}

extension Collect: @unchecked Sendable {}

// MARK: the other side

/// A blocking IPv4 client with a 10 s receive timeout, so that a broken channel fails the test instead of
/// hanging it.
private struct BlockingClient: @unchecked Sendable {
    let fd: Int32

    init(port: Int) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard result == 0 else { throw IOError(errnoCode: errno, reason: "connect") }
    }

    static func unusedPort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { Glibc.close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        _ = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        return try URingSocketChannel.socketAddress(fd, peer: false).port!
    }

    func send(_ bytes: [UInt8]) {
        var offset = 0
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { return }
            offset += n
        }
    }

    func receive(count: Int) -> [UInt8] {
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while out.count < count {
            let n = chunk.withUnsafeMutableBytes { Glibc.recv(fd, $0.baseAddress, min($0.count, count - out.count), 0) }
            guard n > 0 else { break }
            out += chunk[0..<n]
        }
        return out
    }

    func receiveAll() -> [UInt8] {
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { Glibc.recv(fd, $0.baseAddress, $0.count, 0) }
            guard n > 0 else { break }
            out += chunk[0..<n]
        }
        return out
    }

    func shutdownWrite() { _ = Glibc.shutdown(fd, Int32(SHUT_WR)) }
    /// Closes with a reset (`SO_LINGER` 0).
    func reset() {
        var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
        Glibc.close(fd)
    }
    func close() { Glibc.close(fd) }
}
