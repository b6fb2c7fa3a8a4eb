@testable import EdgeCore
import NIOCore
import NIOEmbedded
import NIOHPACK
import NIOHTTP1
import Testing

@Suite("UTF-8 validation, fragment by fragment")
struct UTF8ValidatorTests {
    func valid(_ bytes: [UInt8]) -> Bool {
        bytes.withUnsafeBytes { UTF8Validator.isValid($0) }
    }

    @Test("valid text, including 4-byte code points and the edges of each range")
    func validText() {
        #expect(valid(Array("héllo κόσμε 𝄞 €".utf8)))
        #expect(valid([0x7F, 0xC2, 0x80, 0xDF, 0xBF, 0xE0, 0xA0, 0x80, 0xED, 0x9F, 0xBF, 0xEE, 0x80, 0x80, 0xF0, 0x90, 0x80, 0x80, 0xF4, 0x8F, 0xBF, 0xBF]))
    }

    @Test(
        "overlong forms, surrogates, code points above U+10FFFF and stray bytes are refused",
        arguments: [[0xC0, 0xAF], [0xC1, 0xBF], [0xE0, 0x80, 0xAF], [0xED, 0xA0, 0x80], [0xF4, 0x90, 0x80, 0x80], [0xF5], [0x80], [0xFF]] as [[UInt8]]
    )
    func invalid(_ bytes: [UInt8]) {
        #expect(!valid(bytes))
    }

    @Test("a code point split across fragments is valid; one cut short at the end is not")
    func acrossFragments() {
        var validator = UTF8Validator()
        let euro: [UInt8] = [0xE2, 0x82, 0xAC]
        #expect(euro[..<1].withUnsafeBytes { validator.consume($0) })
        #expect(!validator.isComplete)
        #expect(euro[1...].withUnsafeBytes { validator.consume($0) })
        #expect(validator.isComplete)
        #expect(!valid([0xE2, 0x82]))
    }

    @Test("an invalid byte is refused in the fragment that holds it, before the message ends")
    func failFast() {
        var validator = UTF8Validator()
        #expect(Array("κόσμε".utf8).withUnsafeBytes { validator.consume($0) })
        #expect([UInt8]([0xCE, 0xBA, 0xE1, 0xBD]).withUnsafeBytes { validator.consume($0) })  // valid so far
        #expect(![UInt8]([0xED, 0xA0]).withUnsafeBytes { validator.consume($0) })  // not a continuation byte
    }
}

@Suite("WebSocket opening handshake")
struct WebSocketHandshakeTests {
    static let good: [String: [String]] = [
        "upgrade": ["websocket"], "connection": ["keep-alive, Upgrade"], "sec-websocket-version": ["13"],
        "sec-websocket-key": ["dGhlIHNhbXBsZSBub25jZQ=="], "sec-websocket-protocol": ["chat, superchat"],
    ]

    func check(_ fields: [String: [String]], method: HTTPMethod = .GET, http2: Bool = false) -> WebSocketHandshake.Outcome {
        WebSocketHandshake.check(
            method: method, isHTTP2: http2, httpVersion: http2 ? HTTPVersion(major: 2, minor: 0) : .http1_1,
            values: { fields[$0] ?? [] }
        )
    }

    @Test("RFC 6455's example key gives its Sec-WebSocket-Accept")
    func acceptValue() {
        #expect(WebSocketHandshake.acceptValue(for: "dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    }

    @Test("a valid handshake is accepted with its key and protocols")
    func accepted() {
        #expect(check(Self.good) == .accept(key: "dGhlIHNhbXBsZSBub25jZQ==", protocols: ["chat", "superchat"], extensions: []))
    }

    @Test("refusals: no Upgrade 426, POST 405, no Connection: upgrade 400, a bad key 400, another version 426")
    func refusals() {
        func status(_ outcome: WebSocketHandshake.Outcome) -> UInt? {
            if case .refuse(let status, _, _) = outcome { return status.code }
            return nil
        }
        var fields = Self.good
        fields["upgrade"] = nil
        #expect(status(check(fields)) == 426)
        #expect(status(check(Self.good, method: .POST)) == 405)
        fields = Self.good
        fields["connection"] = ["keep-alive"]
        #expect(status(check(fields)) == 400)
        fields = Self.good
        fields["sec-websocket-key"] = ["c2hvcnQ="]
        #expect(status(check(fields)) == 400)
        fields["sec-websocket-key"] = ["dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZSBub25jZQ=="]
        #expect(status(check(fields)) == 400)
        fields = Self.good
        fields["sec-websocket-version"] = ["8"]
        #expect(status(check(fields)) == 426)
    }

    @Test("HTTP/2: extended CONNECT needs only the version; a GET is refused")
    func http2() {
        #expect(check(["sec-websocket-version": ["13"]], method: .CONNECT, http2: true) == .accept(key: nil, protocols: [], extensions: []))
        if case .refuse(let status, _, _) = check(["sec-websocket-version": ["13"]], method: .GET, http2: true) {
            #expect(status == .badRequest)
        } else {
            Issue.record("a GET over HTTP/2 was accepted")
        }
    }

    @Test("close codes a peer may send", arguments: [(1000, true), (1003, true), (1004, false), (1005, false), (1006, false), (1007, true), (1014, true), (1015, false), (1016, false), (2999, false), (3000, true), (4999, true), (5000, false), (999, false)])
    func closeCodes(code: Int, valid: Bool) {
        #expect(WebSocketSession.isValidReceivedCloseCode(UInt16(code)) == valid)
    }
}

@Suite("HTTP/2 extended CONNECT header blocks")
struct ExtendedConnectRulesTests {
    let connect = [(":method", "CONNECT"), (":protocol", "websocket"), (":scheme", "https"), (":path", "/chat"), (":authority", "a.test")]

    @Test("taken only when offered, only for websocket, only with CONNECT and every pseudo-header")
    func rules() {
        #expect(HTTP2HeaderBlockRules.requestFields(HPACKHeaders(connect), extendedConnect: true)?.path == "/chat")
        #expect(HTTP2HeaderBlockRules.requestFields(HPACKHeaders(connect), extendedConnect: false) == nil)
        var other = connect
        other[1] = (":protocol", "webtransport")
        #expect(HTTP2HeaderBlockRules.requestFields(HPACKHeaders(other), extendedConnect: true) == nil)
        var get = connect
        get[0] = (":method", "GET")
        #expect(HTTP2HeaderBlockRules.requestFields(HPACKHeaders(get), extendedConnect: true) == nil)
        #expect(HTTP2HeaderBlockRules.requestFields(HPACKHeaders(connect.filter { $0.0 != ":path" }), extendedConnect: true) == nil)
    }
}

@Suite("permessage-deflate")
struct PerMessageDeflateTests {
    @Test("offers: the first acceptable one is taken; 8-bit server windows, unknown and repeated parameters are declined")
    func negotiation() throws {
        let plain = try #require(PerMessageDeflateOffer.negotiate(["permessage-deflate; client_max_window_bits"]))
        #expect(plain.responseValue == "permessage-deflate; client_max_window_bits=15")
        let second = try #require(PerMessageDeflateOffer.negotiate([
            "permessage-deflate; server_max_window_bits=8, permessage-deflate; server_max_window_bits=10; server_no_context_takeover",
        ]))
        #expect(second.serverMaxWindowBits == 10 && second.serverNoContextTakeover)
        #expect(second.responseValue == "permessage-deflate; server_no_context_takeover; server_max_window_bits=10")
        #expect(PerMessageDeflateOffer.negotiate(["permessage-deflate; foo=1"]) == nil)
        #expect(PerMessageDeflateOffer.negotiate(["permessage-deflate; client_no_context_takeover; client_no_context_takeover"]) == nil)
        #expect(PerMessageDeflateOffer.negotiate(["x-webkit-deflate-frame"]) == nil)
    }

    @Test("RFC 7692's example: \"Hello\" inflates from f2 48 cd c9 c9 07 00, and a round trip keeps the context")
    func roundTrip() throws {
        let deflate = PerMessageDeflate(settings: PerMessageDeflateOffer())
        let allocator = ByteBufferAllocator()
        let hello = try deflate.decompress(ByteBuffer(bytes: [0xF2, 0x48, 0xCD, 0xC9, 0xC9, 0x07, 0x00]), limit: 100, allocator: allocator)
        #expect(String(buffer: hello) == "Hello")
        let sender = PerMessageDeflate(settings: PerMessageDeflateOffer())
        let text = String(repeating: "the same words again ", count: 200)
        let first = try sender.compress(ByteBuffer(string: text), allocator: allocator)
        let second = try sender.compress(ByteBuffer(string: text), allocator: allocator)
        #expect(second.readableBytes < first.readableBytes)  // context takeover: the second refers to the first
        let receiver = PerMessageDeflate(settings: PerMessageDeflateOffer())
        #expect(String(buffer: try receiver.decompress(first, limit: 1 << 20, allocator: allocator)) == text)
        #expect(String(buffer: try receiver.decompress(second, limit: 1 << 20, allocator: allocator)) == text)
    }

    @Test("a message that inflates beyond the limit is refused (a zip bomb)")
    func limit() throws {
        let allocator = ByteBufferAllocator()
        let bomb = try PerMessageDeflate(settings: PerMessageDeflateOffer())
            .compress(ByteBuffer(repeating: 0, count: 1 << 20), allocator: allocator)
        #expect(bomb.readableBytes < 5000)
        #expect(throws: PerMessageDeflate.TooLarge.self) {
            try PerMessageDeflate(settings: PerMessageDeflateOffer()).decompress(bomb, limit: 65536, allocator: allocator)
        }
    }
}

@Suite("pub/sub hub")
struct PubSubHubTests {
    @Test("a message becomes one event: an id line and a data line per line of it")
    func eventStream() {
        var buffer = ByteBuffer()
        PubSubHub.writeEventData(ByteBuffer(string: "a\nb\r\nc\rd"), to: &buffer)
        #expect(String(buffer: buffer) == "data: a\ndata: b\ndata: c\ndata: d\n\n")
        buffer.clear()
        PubSubHub.writeEventData(ByteBuffer(), to: &buffer)
        #expect(String(buffer: buffer) == "data: \n\n")
    }

    @Test("messages are numbered per channel and the last N kept for replay")
    func replay() throws {
        var settings = WebSocketRouteConfiguration.HubConfiguration()
        settings.replay = 2
        let hub = PubSubHub(settings: settings)
        for text in ["1", "2", "3"] { _ = hub.publish(ByteBuffer(string: text), isText: true, to: "/a") }
        #expect(hub.publish(ByteBuffer(string: "x"), isText: true, to: "/b").id == 1)
        final class Sink: HubSubscriber { func deliver(_ message: HubMessage) {} }
        let loop = EmbeddedEventLoop()
        let sink = Sink()
        let replayed = hub.subscribe(sink, to: "/a", on: loop, after: 1).map { String(buffer: $0.data) }
        #expect(replayed == ["2", "3"])
        #expect(hub.publish(ByteBuffer(string: "4"), isText: true, to: "/a").subscribers == 1)
        hub.unsubscribe(sink, from: "/a", on: loop)
        #expect(hub.publish(ByteBuffer(string: "5"), isText: true, to: "/a").subscribers == 0)
    }
}

@Suite("relay frame boundaries")
struct WebSocketFrameBoundariesTests {
    func view(_ bytes: [UInt8]) -> ByteBufferView { ByteBuffer(bytes: bytes).readableBytesView }

    @Test("frames split anywhere are followed by their headers: 7-bit, 16-bit and 64-bit lengths, masked or not")
    func following() {
        var frames = WebSocketFrameBoundaries()
        let small: [UInt8] = [0x81, 0x03, 0x61, 0x62, 0x63]
        let medium: [UInt8] = [0x82, 0xFE, 0x01, 0x00, 1, 2, 3, 4] + [UInt8](repeating: 7, count: 256)
        let large: [UInt8] = [0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0] + [UInt8](repeating: 9, count: 65536)
        let masked: [UInt8] = [0x81, 0x82, 1, 2, 3, 4, 0x10, 0x20]
        let stream = small + medium + large + masked
        let ends = [small.count, small.count + medium.count, small.count + medium.count + large.count, stream.count]
        var offset = 0
        for size in [1, 3, 7, 300, 20_000, 45_990, 1, 100_000] {
            let end = min(stream.count, offset + size)
            frames.advance(over: view(Array(stream[offset..<end])))
            offset = end
            #expect(frames.isAtBoundary == ends.contains(offset))
        }
        #expect(frames.isAtBoundary)
    }

    @Test("the first boundary in a chunk is where the frame in progress ends")
    func firstBoundary() {
        var frames = WebSocketFrameBoundaries()
        frames.advance(over: view([0x81, 0x05, 0x61, 0x62]))  // three payload bytes still to come
        #expect(!frames.isAtBoundary)
        #expect(frames.firstBoundary(in: view([0x63, 0x64, 0x65, 0x81, 0x00])) == 3)
        #expect(frames.isAtBoundary)
        #expect(frames.firstBoundary(in: view([0x81])) == 0)
    }
}
