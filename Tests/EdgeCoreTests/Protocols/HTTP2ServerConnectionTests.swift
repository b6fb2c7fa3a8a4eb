@testable import EdgeCore
import NIOCore
import NIOEmbedded
import NIOHPACK
import NIOHTTP2
import Testing

/// Edge's HTTP/2 connection layer against NIOHTTP2's client as the reference peer: bytes are carried between
/// two embedded channels, one with `NIOHTTP2Handler(mode: .client)`, one with ``HTTP2ServerConnection``, so
/// every frame Edge writes is parsed, and checked, by the library it replaces.
@Suite("HTTP/2: Edge's connection layer against NIOHTTP2's client")
struct HTTP2ServerConnectionTests {
    /// Keeps what reaches the end of a pipeline.
    final class Collector: ChannelInboundHandler {
        typealias InboundIn = HTTP2Frame
        var frames: [HTTP2Frame] = []
        var events: [Any] = []

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            frames.append(unwrapInboundIn(data))
        }

        func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
            events.append(event)
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            events.append(error)
        }
    }

    final class Pair {
        let client = EmbeddedChannel()
        let server = EmbeddedChannel()
        let clientSeen = Collector()
        let serverSeen = Collector()
        let connection: HTTP2ServerConnection

        init(
            clientSettings: HTTP2Settings = [HTTP2Setting(parameter: .maxHeaderListSize, value: 1 << 20)],
            maxConcurrentStreams: Int = 100, maxHeaderListSize: Int = 16_384
        ) throws {
            connection = HTTP2ServerConnection(
                settings: .init(
                    maxConcurrentStreams: maxConcurrentStreams, enforcedStreamLimit: maxConcurrentStreams * 2,
                    maxHeaderListSize: maxHeaderListSize, headerTableSize: 4096, enableConnectProtocol: false
                ),
                delegate: nil, allocator: server.allocator
            )
            try server.pipeline.syncOperations.addHandlers([connection, serverSeen])
            var configuration = NIOHTTP2Handler.ConnectionConfiguration()
            configuration.initialSettings = clientSettings
            configuration.headerBlockValidation = .disabled
            configuration.contentLengthValidation = .disabled  // so that a client can break it
            try client.pipeline.syncOperations.addHandlers([
                NIOHTTP2Handler(mode: .client, connectionConfiguration: configuration, streamConfiguration: .init()), clientSeen,
            ])
            try server.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 443)).wait()
            try client.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 443)).wait()
            try exchange()
        }

        /// Carries bytes both ways until neither side has more to say.
        func exchange() throws {
            var moved = true
            while moved {
                moved = false
                while let bytes = try client.readOutbound(as: IOData.self) {
                    guard case .byteBuffer(let buffer) = bytes else { continue }
                    try server.writeInbound(buffer)
                    moved = true
                }
                if moved { server.pipeline.fireChannelReadComplete() }
                var toClient = false
                while let bytes = try server.readOutbound(as: IOData.self) {
                    guard case .byteBuffer(let buffer) = bytes else { continue }
                    try client.writeInbound(buffer)
                    toClient = true
                }
                if toClient {
                    client.pipeline.fireChannelReadComplete()
                    moved = true
                }
            }
        }

        /// Raw bytes from the client, bypassing its HTTP/2 handler; returns the server's answer parsed.
        func rawFromClient(_ bytes: [UInt8]) throws -> [UInt8] {
            try server.writeInbound(server.allocator.buffer(bytes: bytes))
            server.pipeline.fireChannelReadComplete()
            var answer: [UInt8] = []
            while let bytes = try server.readOutbound(as: IOData.self) {
                if case .byteBuffer(let buffer) = bytes { answer += buffer.readableBytesView }
            }
            return answer
        }

        func request(_ id: HTTP2StreamID, path: String = "/", extra: [(String, String)] = [], endStream: Bool = true) throws {
            var headers: HPACKHeaders = [":method": "GET", ":scheme": "https", ":authority": "localhost", ":path": path]
            headers.add(contentsOf: extra)
            client.write(HTTP2Frame(streamID: id, payload: .headers(.init(headers: headers, endStream: endStream))), promise: nil)
            client.flush()
            try exchange()
        }

        func respond(_ id: HTTP2StreamID, body: ByteBuffer, fields: [(String, String)] = [], trailers: HPACKHeaders? = nil) throws {
            var headers: HPACKHeaders = [":status": "200"]
            headers.add(contentsOf: fields)
            server.write(HTTP2Frame(streamID: id, payload: .headers(.init(headers: headers))), promise: nil)
            server.write(HTTP2Frame(streamID: id, payload: .data(.init(data: .byteBuffer(body), endStream: trailers == nil))), promise: nil)
            if let trailers {
                server.write(HTTP2Frame(streamID: id, payload: .headers(.init(headers: trailers, endStream: true))), promise: nil)
            }
            server.flush()
            try exchange()
        }

        /// The body bytes the client received on stream `id`, and whether the stream ended.
        func received(_ id: HTTP2StreamID) -> (body: [UInt8], ended: Bool, heads: [HPACKHeaders]) {
            var body: [UInt8] = []
            var ended = false
            var heads: [HPACKHeaders] = []
            for frame in clientSeen.frames where frame.streamID == id {
                switch frame.payload {
                case .data(let data):
                    if case .byteBuffer(let buffer) = data.data { body += buffer.readableBytesView }
                    ended = ended || data.endStream
                case .headers(let headers):
                    heads.append(headers.headers)
                    ended = ended || headers.endStream
                default: break
                }
            }
            return (body, ended, heads)
        }

        func goAwayCode() -> HTTP2ErrorCode? {
            for frame in clientSeen.frames {
                if case .goAway(_, let code, _) = frame.payload { return code }
            }
            return nil
        }
    }

    @Test("a request arrives as NIOHTTP2 would deliver it, and the response reaches the client whole")
    func roundTrip() throws {
        let pair = try Pair()
        try pair.request(1, path: "/hello", extra: [("user-agent", "test"), ("accept", "*/*")])
        guard case .headers(let head) = pair.serverSeen.frames.first(where: { $0.streamID == 1 })?.payload else {
            Issue.record("no HEADERS reached the server side: \(pair.serverSeen.frames)")
            return
        }
        #expect(head.headers.first(name: ":path") == "/hello")
        #expect(head.headers.first(name: "user-agent") == "test")
        #expect(head.endStream)
        #expect(pair.serverSeen.events.contains { ($0 as? NIOHTTP2StreamCreatedEvent)?.streamID == 1 })
        try pair.respond(1, body: ByteBuffer(string: "hello, world"), fields: [("content-type", "text/plain")])
        let got = pair.received(1)
        #expect(String(decoding: got.body, as: UTF8.self) == "hello, world")
        #expect(got.ended)
        #expect(got.heads.first?.first(name: "content-type") == "text/plain")
        #expect(pair.serverSeen.events.contains { ($0 as? StreamClosedEvent)?.streamID == 1 })
        #expect(pair.goAwayCode() == nil)
    }

    @Test("a body larger than the client's window waits for WINDOW_UPDATE, and trailers wait behind it")
    func flowControl() throws {
        let pair = try Pair(clientSettings: [HTTP2Setting(parameter: .initialWindowSize, value: 100)])
        try pair.request(1)
        let body = ByteBuffer(bytes: (0..<1000).map { UInt8(truncatingIfNeeded: $0) })
        try pair.respond(1, body: body, trailers: ["grpc-status": "0"])
        #expect(pair.received(1).body.count == 100)
        #expect(!pair.received(1).ended)
        for _ in 0..<9 {
            pair.client.write(HTTP2Frame(streamID: 1, payload: .windowUpdate(windowSizeIncrement: 100)), promise: nil)
            pair.client.flush()
            try pair.exchange()
        }
        let got = pair.received(1)
        #expect(got.body == Array(body.readableBytesView))
        #expect(got.ended)
        #expect(got.heads.last?.first(name: "grpc-status") == "0")
        #expect(pair.goAwayCode() == nil)
    }

    @Test("header blocks larger than a frame go out as HEADERS and CONTINUATION, and come in as them")
    func continuation() throws {
        let pair = try Pair(maxHeaderListSize: 65_536)
        let big = String(repeating: "v", count: 30_000)
        // NIOHTTP2 cannot send CONTINUATION frames, so the request's block is split here.
        let block = Array(
            literalBlock([":method": "GET", ":scheme": "https", ":authority": "localhost", ":path": "/", "x-big": big])
                .readableBytesView
        )
        let cut = block.count / 3
        let answer = try pair.rawFromClient(
            frame(type: 0x1, flags: 0x1, stream: 1, Array(block[..<cut]))
                + frame(type: 0x9, stream: 1, Array(block[cut..<(2 * cut)]))
                + frame(type: 0x9, flags: 0x4, stream: 1, Array(block[(2 * cut)...]))
        )
        #expect(goAway(in: answer) == nil)
        guard case .headers(let head) = pair.serverSeen.frames.first(where: { $0.streamID == 1 })?.payload else {
            Issue.record("the request did not arrive: \(pair.serverSeen.frames)")
            return
        }
        #expect(head.headers.first(name: "x-big") == big)
        #expect(head.endStream)

        try pair.request(3)
        try pair.respond(3, body: ByteBuffer(string: "ok"), fields: [("x-large", big), ("x-large-2", big)])
        #expect(pair.received(3).heads.first?.first(name: "x-large-2") == big)
        #expect(pair.received(3).ended)
        #expect(pair.goAwayCode() == nil)
    }

    @Test("a client's request body arrives, and a content-length it breaks resets the stream")
    func requestBodies() throws {
        let pair = try Pair()
        try pair.request(1, extra: [("content-length", "5")], endStream: false)
        pair.client.write(HTTP2Frame(streamID: 1, payload: .data(.init(data: .byteBuffer(ByteBuffer(string: "abcde")), endStream: true))), promise: nil)
        pair.client.flush()
        try pair.exchange()
        let data = pair.serverSeen.frames.compactMap { frame -> String? in
            if case .data(let data) = frame.payload, case .byteBuffer(let buffer) = data.data { return String(buffer: buffer) }
            return nil
        }
        #expect(data == ["abcde"])

        try pair.request(3, extra: [("content-length", "2")], endStream: false)
        pair.client.write(HTTP2Frame(streamID: 3, payload: .data(.init(data: .byteBuffer(ByteBuffer(string: "abcde")), endStream: true))), promise: nil)
        pair.client.flush()
        try pair.exchange()
        let reset = pair.clientSeen.frames.contains { frame in
            if case .rstStream(.protocolError) = frame.payload { return frame.streamID == 3 }
            return false
        }
        #expect(reset)
        #expect(pair.goAwayCode() == nil)
    }

    @Test("streams past twice the advertised limit are refused, and the connection serves on")
    func streamLimit() throws {
        let pair = try Pair(maxConcurrentStreams: 2)
        let block = literalBlock([":method": "GET", ":scheme": "https", ":authority": "localhost", ":path": "/"])
        var bytes: [UInt8] = []
        for id in stride(from: 1, through: 9, by: 2) {
            bytes += frame(type: 0x1, flags: 0x5, stream: UInt32(id), Array(block.readableBytesView))
        }
        let answer = try pair.rawFromClient(bytes)
        #expect(resets(in: answer).map(\.stream) == [9])
        #expect(resets(in: answer).map(\.code) == [0x7])
        #expect(goAway(in: answer) == nil)
        #expect(pair.serverSeen.events.compactMap { ($0 as? NIOHTTP2StreamCreatedEvent)?.streamID } == [1, 3, 5, 7])
    }

    @Test("a client's repeated RST_STREAM on a stream it reset counts once, while rapid resets are still cut off")
    func repeatedResets() throws {
        let block = literalBlock([":method": "GET", ":scheme": "https", ":authority": "localhost", ":path": "/"])
        let rst = { (id: UInt32, code: UInt8) in self.frame(type: 0x3, stream: id, [0, 0, 0, code]) }
        // python-h2 answers each DATA frame still in flight on a stream it reset with RST_STREAM(STREAM_CLOSED).
        let pair = try Pair()
        var bytes: [UInt8] = []
        for id in stride(from: UInt32(1), through: 9, by: 2) {
            bytes += frame(type: 0x1, flags: 0x5, stream: id, Array(block.readableBytesView)) + rst(id, 0x8)
            for _ in 0..<100 { bytes += rst(id, 0x5) }
        }
        let answer = try pair.rawFromClient(bytes)
        #expect(goAway(in: answer) == nil)
        // Opening and resetting streams is still a rapid reset past 200 of them.
        let attacked = try Pair()
        bytes = []
        for id in stride(from: UInt32(1), through: 2 * 210, by: 2) {
            bytes += frame(type: 0x1, flags: 0x5, stream: id, Array(block.readableBytesView)) + rst(id, 0x8)
        }
        #expect(goAway(in: try attacked.rawFromClient(bytes)) == 0xb)
    }

    /// The RST_STREAM frames in `bytes`.
    private func resets(in bytes: [UInt8]) -> [(stream: UInt32, code: UInt32)] {
        var buffer = ByteBuffer(bytes: bytes)
        var found: [(UInt32, UInt32)] = []
        while buffer.readableBytes >= 9 {
            let header = HTTP2Wire.FrameHeader(buffer, at: buffer.readerIndex)
            buffer.moveReaderIndex(forwardBy: 9)
            let payload = buffer.readSlice(length: header.length)!
            if header.type == HTTP2Wire.FrameType.rstStream {
                found.append((header.streamID, payload.getInteger(at: payload.readerIndex, as: UInt32.self)!))
            }
        }
        return found
    }

    /// A header block every field of which is a literal without indexing: it needs no HPACK state, so it can be
    /// sent beside the client's own.
    private func literalBlock(_ fields: HPACKHeaders) -> ByteBuffer {
        var encoder = HPACKEncoder(allocator: ByteBufferAllocator())
        try! encoder.beginEncoding(allocator: ByteBufferAllocator())
        for field in fields { try! encoder.appendNonIndexed(header: field.name, value: field.value) }
        return try! encoder.endEncoding()
    }

    /// Bytes of a frame: header and payload.
    private func frame(type: UInt8, flags: UInt8 = 0, stream: UInt32 = 0, _ payload: [UInt8] = []) -> [UInt8] {
        var buffer = ByteBuffer()
        buffer.writeHTTP2FrameHeader(length: payload.count, type: type, flags: flags, streamID: stream)
        buffer.writeBytes(payload)
        return Array(buffer.readableBytesView)
    }

    /// The error code of the GOAWAY in `bytes`, which hold whole frames.
    private func goAway(in bytes: [UInt8]) -> UInt32? {
        var buffer = ByteBuffer(bytes: bytes)
        while buffer.readableBytes >= 9 {
            let header = HTTP2Wire.FrameHeader(buffer, at: buffer.readerIndex)
            buffer.moveReaderIndex(forwardBy: 9)
            let payload = buffer.readSlice(length: header.length)!
            if header.type == HTTP2Wire.FrameType.goAway {
                return payload.getInteger(at: payload.readerIndex + 4, as: UInt32.self)
            }
        }
        return nil
    }

    @Test("connection errors are answered with GOAWAY and their code", arguments: [
        // (what, frame bytes, expected code)
        ("PING of 7 bytes", 0x6 as UInt8, 0 as UInt8, 0 as UInt32, [UInt8](repeating: 0, count: 7), 0x6 as UInt32),
        ("WINDOW_UPDATE of 0 on the connection", 0x8, 0, 0, [0, 0, 0, 0], 0x1),
        ("DATA on an idle stream", 0x0, 0x1, 5, [1, 2, 3], 0x1),
        ("PUSH_PROMISE from a client", 0x5, 0x4, 1, [0, 0, 0, 2], 0x1),
        ("CONTINUATION without HEADERS", 0x9, 0x4, 1, [0x82], 0x1),
        ("SETTINGS with a bad frame size", 0x4, 0, 0, [0, 5, 0, 0, 0, 1], 0x1),
        ("SETTINGS ACK with a payload", 0x4, 0x1, 0, [0, 0, 0, 0, 0, 0], 0x6),
        ("an even stream", 0x1, 0x5, 2, [0x82, 0x87, 0x84], 0x1),
        ("a header block HPACK cannot decode", 0x1, 0x5, 1, [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF], 0x9),
    ])
    func connectionErrors(what: String, type: UInt8, flags: UInt8, stream: UInt32, payload: [UInt8], code: UInt32) throws {
        let pair = try Pair()
        let answer = try pair.rawFromClient(frame(type: type, flags: flags, stream: stream, payload))
        #expect(goAway(in: answer) == code, "\(what)")
        // Nothing more is read after a connection error.
        let after = try pair.rawFromClient(frame(type: 0x6, [UInt8](repeating: 0, count: 8)))
        #expect(after.isEmpty, "\(what): answered after the GOAWAY")
    }

    @Test("a flood of PINGs is cut off with ENHANCE_YOUR_CALM after 200")
    func pingFlood() throws {
        let pair = try Pair()
        var bytes: [UInt8] = []
        for i in 0..<201 { bytes += frame(type: 0x6, [0, 0, 0, 0, 0, 0, 0, UInt8(truncatingIfNeeded: i)]) }
        let answer = try pair.rawFromClient(bytes)
        #expect(goAway(in: answer) == 0xB)
    }

    @Test("HPACK blocks that add to the dynamic table are told from those that do not")
    func blockScan() throws {
        var encoder = HPACKEncoder(allocator: ByteBufferAllocator())
        let fields: HPACKHeaders = [":status": "200", "server": "edge", "content-type": "text/plain", "x-long": String(repeating: "z", count: 300)]
        var first = ByteBuffer()
        try encoder.encode(headers: fields, to: &first)
        #expect(HPACKBlockScan.changesTable(first))  // new fields are added
        var second = ByteBuffer()
        try encoder.encode(headers: fields, to: &second)
        #expect(!HPACKBlockScan.changesTable(second))  // all indexed now
        #expect(second.readableBytes == 4)
        #expect(!HPACKBlockScan.changesTable(literalBlock(fields)))
        try encoder.setDynamicTableSize(100)
        var resized = ByteBuffer()
        try encoder.encode(headers: [":status": "200"], to: &resized)
        #expect(HPACKBlockScan.changesTable(resized))  // a size update
        #expect(!HPACKBlockScan.changesTable(ByteBuffer()))
        #expect(HPACKBlockScan.changesTable(ByteBuffer(bytes: [0x00, 0x85])))  // a string cut short
    }
}
