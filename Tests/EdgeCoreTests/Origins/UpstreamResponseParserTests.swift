@testable import EdgeCore
import NIOCore
import NIOEmbedded
import NIOHTTP1
import Testing

/// The proxy's HTTP/1.1 response parser, against NIO's `HTTPResponseDecoder` (the decoder it replaced, kept as the
/// reference): the same status, fields, body and trailers for what both accept, fed whole and a byte at a time;
/// and a 502 for what a proxy must not pass on.
@Suite("Upstream HTTP/1.1 response parser")
struct UpstreamResponseParserTests {
    struct Parsed: Equatable {
        var status: Int?
        var fields: [String] = []
        var hasBody = false
        var body: [UInt8] = []
        var trailers: [String]?
        var ended = false
        var keepAlive = true
        /// The upstream's `Date`, kept apart from the fields (the reference keeps it among them).
        var date: String?
    }

    /// Feeds `response` in pieces of `piece` bytes (and the end of input when `closeAtEnd`).
    private func parse(_ response: String, isHEAD: Bool = false, piece: Int = .max, closeAtEnd: Bool = false) throws -> Parsed {
        var parser = UpstreamResponseParser()
        parser.begin(isHEAD: isHEAD)
        var parsed = Parsed()
        let bytes = Array(response.utf8)
        var offset = 0
        func take(_ event: UpstreamResponseEvent) {
            switch event {
            case .head(let status, let fields, let date, let hasBody):
                parsed.status = Int(status.code)
                parsed.date = date
                parsed.fields = fields.headers.map { "\($0.name.lowercased()): \($0.value)" }
                parsed.hasBody = hasBody
            case .body(let chunk):
                parsed.body += chunk.readableBytesView
            case .end(let trailers):
                parsed.trailers = trailers.map { $0.map { "\($0.name.lowercased()): \($0.value)" } }
                parsed.ended = true
            }
        }
        repeat {
            let end = min(bytes.count, offset + max(1, min(piece, bytes.count)))
            parser.feed(ByteBuffer(bytes: bytes[offset..<end]))
            offset = end
            while let event = try parser.next() { take(event) }
        } while offset < bytes.count
        if closeAtEnd, let event = parser.inputClosed() { take(event) }
        parsed.keepAlive = parser.keepAlive
        return parsed
    }

    /// What NIO's decoder makes of `response`, as the proxy would pass it on (the same fields dropped).
    private func reference(_ response: String, isHEAD: Bool = false, closeAtEnd: Bool = false) throws -> Parsed {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHTTPClientHandlers()
        try channel.writeOutbound(HTTPClientRequestPart.head(HTTPRequestHead(version: .http1_1, method: isHEAD ? .HEAD : .GET, uri: "/")))
        try channel.writeOutbound(HTTPClientRequestPart.end(nil))
        try channel.writeInbound(ByteBuffer(string: response))
        if closeAtEnd { channel.pipeline.fireChannelInactive() }
        var parsed = Parsed()
        let dropped: Set<String> = ["connection", "keep-alive", "transfer-encoding", "te", "upgrade", "server", "date", "content-length"]
        while let part = try channel.readInbound(as: HTTPClientResponsePart.self) {
            switch part {
            case .head(let head):
                guard head.status.code >= 200 else { continue }
                parsed.status = Int(head.status.code)
                parsed.fields = head.headers.filter { !dropped.contains($0.name.lowercased()) }.map { "\($0.name.lowercased()): \($0.value)" }
                if let length = head.headers.first(name: "content-length"), !head.headers.contains(name: "transfer-encoding"),
                    head.status.code != 204, head.status.code != 304
                {
                    parsed.fields.append("content-length: \(length)")
                }
                parsed.hasBody = !isHEAD && head.status.code != 204 && head.status.code != 304
                parsed.keepAlive = head.isKeepAlive
            case .body(let chunk):
                parsed.body += chunk.readableBytesView
            case .end(let trailers):
                parsed.trailers = trailers.map { $0.map { "\($0.name.lowercased()): \($0.value)" } }
                parsed.ended = true
            }
        }
        _ = try? channel.finish()
        return parsed
    }

    static let accepted: [(name: String, response: String, isHEAD: Bool, closeAtEnd: Bool)] = [
        ("content-length", "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nServer: x\r\n\r\nhello", false, false),
        ("empty body", "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", false, false),
        (
            "chunked with extensions and trailers",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n3;ext=1\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nX-Trailer: t\r\n\r\n",
            false, false
        ),
        ("chunked, no trailers", "HTTP/1.1 201 Created\r\ntransfer-encoding: CHUNKED\r\n\r\n1\r\nx\r\n0\r\n\r\n", false, false),
        ("close-delimited", "HTTP/1.1 200 OK\r\nX-B: 2\r\n\r\nuntil the end", false, true),
        ("HEAD keeps the length", "HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n", true, false),
        ("204", "HTTP/1.1 204 No Content\r\nX-C: 3\r\n\r\n", false, false),
        ("304 with a length", "HTTP/1.1 304 Not Modified\r\nETag: \"a\"\r\nContent-Length: 99\r\n\r\n", false, false),
        ("interim heads", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false, false),
        ("HTTP/1.0 keep-alive", "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok", false, false),
        ("HTTP/1.0 default close", "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", false, false),
        ("Connection: close", "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", false, false),
        ("whitespace and empty value", "HTTP/1.1 404 Not Found\r\nX-D:\t padded\r\nX-E:\r\nContent-Length: 0\r\n\r\n", false, false),
        ("no reason phrase", "HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", false, false),
    ]

    @Test("parses as NIO's decoder does", arguments: 0..<accepted.count)
    func matchesReference(index: Int) throws {
        let vector = Self.accepted[index]
        let expected = try reference(vector.response, isHEAD: vector.isHEAD, closeAtEnd: vector.closeAtEnd)
        #expect(expected.ended, "reference did not complete: \(vector.name)")
        for piece in [Int.max, 1, 7] {
            let parsed = try parse(vector.response, isHEAD: vector.isHEAD, piece: piece, closeAtEnd: vector.closeAtEnd)
            var comparable = parsed
            comparable.date = nil
            if vector.closeAtEnd { comparable.keepAlive = expected.keepAlive }  // NIO says keep-alive; the body ends with the connection
            #expect(comparable == expected, "\(vector.name), pieces of \(piece)")
        }
    }

    @Test("keeps the upstream's Date apart from the fields, for the HTTP cache (the first of two)")
    func keepsDateApart() throws {
        let parsed = try parse("HTTP/1.1 200 OK\r\nDate: Sun, 06 Dec 2026 10:00:00 GMT\r\nDate: later\r\nX-A: 1\r\nContent-Length: 0\r\n\r\n")
        #expect(parsed.date == "Sun, 06 Dec 2026 10:00:00 GMT")
        #expect(parsed.fields.contains("x-a: 1") && !parsed.fields.contains { $0.hasPrefix("date") })
    }

    @Test("takes what NIO's decoder refuses but RFC 9112 allows: equal Content-Length values, bare LF, trailing tabs")
    func lenient() throws {
        let equal = try parse("HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\n\r\nabc")
        #expect(equal.fields == ["content-length: 3"] && equal.body == Array("abc".utf8) && equal.ended)
        let bareLF = try parse("HTTP/1.1 200 OK\nContent-Length: 2\nX-F: f \t\n\nok", piece: 3)
        #expect(bareLF.fields == ["x-f: f", "content-length: 2"] && bareLF.body == Array("ok".utf8) && bareLF.ended)
        let chunkedLF = try parse("HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n2\nok\n0\n\n", piece: 1)
        #expect(chunkedLF.body == Array("ok".utf8) && chunkedLF.ended)
    }

    @Test("drops the fields Connection names, and not keeping a close-delimited connection")
    func connectionOptions() throws {
        let parsed = try parse("HTTP/1.1 200 OK\r\nConnection: x-hop, close\r\nX-Hop: 1\r\nX-Kept: 2\r\nContent-Length: 0\r\n\r\n")
        #expect(parsed.fields == ["x-kept: 2", "content-length: 0"])
        #expect(!parsed.keepAlive)
        // Options in any case, keep-alive among them, over two lines.
        let folded = try parse("HTTP/1.0 200 OK\r\nConnection: X-HOP , Keep-Alive\r\nConnection: x-other\r\nx-hop: 1\r\nX-Other: 2\r\nX-Kept: 3\r\nContent-Length: 0\r\n\r\n")
        #expect(folded.fields == ["x-kept: 3", "content-length: 0"])
        #expect(folded.keepAlive)
        let delimited = try parse("HTTP/1.1 200 OK\r\n\r\nbody", closeAtEnd: true)
        #expect(delimited.ended && delimited.body == Array("body".utf8) && !delimited.keepAlive)
    }

    @Test("Transfer-Encoding with Content-Length: chunked framing, the length dropped, the connection not reused")
    func chunkedOverLength() throws {
        let parsed = try parse("HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n")
        #expect(parsed.fields.isEmpty)
        #expect(parsed.body == Array("ab".utf8) && parsed.ended)
        #expect(!parsed.keepAlive)
    }

    @Test("Connection: close in trailers ends the connection")
    func trailerClose() throws {
        let parsed = try parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nConnection: close\r\n\r\n")
        #expect(parsed.ended && !parsed.keepAlive)
    }

    static let refused: [(name: String, response: String)] = [
        ("conflicting lengths", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"),
        ("negative length", "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n"),
        ("length with a sign", "HTTP/1.1 200 OK\r\nContent-Length: +3\r\n\r\nabc"),
        ("unknown transfer coding", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nxx"),
        ("chunked not last", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n"),
        ("a coding under chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
        ("a coding under chunked, on two lines", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        ("chunked twice", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n"),
        ("chunked twice, on two lines", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        ("empty transfer coding", "HTTP/1.1 200 OK\r\nTransfer-Encoding: \r\nContent-Length: 5\r\n\r\nhello"),
        ("empty length", "HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\nhello"),
        ("101 not asked for", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"),
        ("status above 599", "HTTP/1.1 600 Odd\r\nContent-Length: 0\r\n\r\n"),
        ("status below 100", "HTTP/1.1 099 Odd\r\nContent-Length: 0\r\n\r\n"),
        ("two-digit status", "HTTP/1.1 20 OK\r\n\r\n"),
        ("HTTP/2 status line", "HTTP/2 200 OK\r\n\r\n"),
        ("not HTTP", "SSH-2.0-OpenSSH\r\n\r\n"),
        ("folded line", "HTTP/1.1 200 OK\r\nX-A: 1\r\n continued\r\nContent-Length: 0\r\n\r\n"),
        ("space before colon", "HTTP/1.1 200 OK\r\nContent-Length : 0\r\n\r\n"),
        ("NUL in a value", "HTTP/1.1 200 OK\r\nX-A: a\u{0}b\r\nContent-Length: 0\r\n\r\n"),
        ("bare CR in a value", "HTTP/1.1 200 OK\r\nX-A: a\rb\r\nContent-Length: 0\r\n\r\n"),
        ("empty name", "HTTP/1.1 200 OK\r\n: v\r\nContent-Length: 0\r\n\r\n"),
        ("bad chunk size", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"),
        ("chunk size overflow", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n"),
        ("chunk longer than its size", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n"),
        ("control byte in a reason", "HTTP/1.1 200 O\u{1}K\r\n\r\n"),
    ]

    @Test("refuses what a proxy must not pass on", arguments: 0..<refused.count)
    func refuses(index: Int) {
        let vector = Self.refused[index]
        #expect(throws: UpstreamParseError.self, "\(vector.name)") { _ = try parse(vector.response) }
    }

    @Test("a head over the limit is refused, one under it is not")
    func headLimit() throws {
        let big = String(repeating: "a", count: UpstreamResponseParser.maxHeadBytes)
        #expect(throws: UpstreamParseError.self) { _ = try parse("HTTP/1.1 200 OK\r\nX-Big: \(big)\r\n\r\n", piece: 4096) }
        let fits = String(repeating: "a", count: 30_000)
        let parsed = try parse("HTTP/1.1 200 OK\r\nX-Big: \(fits)\r\nContent-Length: 0\r\n\r\n", piece: 4096)
        #expect(parsed.ended && parsed.fields.first == "x-big: \(fits)")
    }

    @Test("the field block answers the lookups the proxy makes")
    func fieldBlock() {
        var block = FieldBlock()
        block.add(name: "Set-Cookie", value: "a=1")
        block.add(name: "X-Other", value: "b")
        block.add(name: "set-cookie", value: "c=2")
        #expect(block.values(of: "SET-COOKIE") == ["a=1", "c=2"])
        #expect(block.contains(name: "x-other"))
        #expect(!block.contains(name: "x-othe"))
        block.replaceOrAdd(name: "x-other", value: "z")
        #expect(block.headers.map { "\($0.name): \($0.value)" } == ["Set-Cookie: a=1", "set-cookie: c=2", "x-other: z"])
        block.remove(name: "Set-Cookie")
        #expect(String(buffer: block.bytes) == "x-other: z\r\n")
    }
}
