import NIOCore
import Testing

@testable import EdgeBench

/// Feeds `wire` to a fresh decoder in pieces of `piece` bytes and returns every response it produced.
private func decodeAll(_ wire: String, piece: Int, head: Bool = false, eof: Bool = false) throws -> [HTTP1ResponseSummary] {
    let processor = NIOSingleStepByteToMessageProcessor(HTTP1ResponseDecoder(requestIsHEAD: head))
    var out: [HTTP1ResponseSummary] = []
    let bytes = Array(wire.utf8)
    var offset = 0
    while offset < bytes.count {
        let end = min(bytes.count, offset + piece)
        try processor.process(buffer: ByteBuffer(bytes: bytes[offset..<end])) { out.append($0) }
        offset = end
    }
    if eof { try processor.finishProcessing(seenEOF: true) { out.append($0) } }
    return out
}

@Suite("HTTP/1 response decoder")
struct HTTP1ResponseDecoderTests {
    static let mixed =
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
        + "HTTP/1.1 100 Continue\r\n\r\n"
        + "HTTP/1.1 201 Created\r\ntransfer-encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\nA\r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\n"
        + "HTTP/1.1 204 No Content\r\nContent-Length: 99\r\n\r\n"
        + "HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n"
        + "HTTP/1.1 503 Service Unavailable\r\nCONTENT-LENGTH: 4\r\nConnection: close\r\n\r\ndown"

    @Test("every framing, split at every piece size", arguments: [1, 2, 3, 7, 64, 4096])
    func framings(piece: Int) throws {
        let responses = try decodeAll(Self.mixed, piece: piece)
        #expect(responses.map(\.status) == [200, 201, 204, 304, 503])
        #expect(responses.map(\.keepAlive) == [true, true, true, true, false])
    }

    @Test("HEAD responses have no body whatever Content-Length says")
    func head() throws {
        let wire = "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"
        #expect(try decodeAll(wire, piece: 5, head: true).count == 2)
    }

    @Test("a body delimited by the connection closing ends at EOF")
    func untilClose() throws {
        let wire = "HTTP/1.0 200 OK\r\n\r\nsome body bytes"
        #expect(try decodeAll(wire, piece: 4).isEmpty)
        #expect(try decodeAll(wire, piece: 4, eof: true) == [HTTP1ResponseSummary(status: 200, keepAlive: false)])
    }

    @Test("HTTP/1.0 keep-alive is honoured")
    func http10KeepAlive() throws {
        let wire = "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n"
        #expect(try decodeAll(wire, piece: 100) == [HTTP1ResponseSummary(status: 200, keepAlive: true)])
    }

    @Test("garbage is a protocol error", arguments: [
        "HTTP/2 200\r\n\r\n", "HTTP/1.1 2x0 OK\r\n\r\n", "SSH-2.0-OpenSSH\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXY",
    ])
    func garbage(wire: String) {
        #expect(throws: BenchProtocolError.self) { try decodeAll(wire, piece: 3) }
    }

    @Test("an endless head is refused")
    func endlessHead() {
        let wire = "HTTP/1.1 200 OK\r\n" + String(repeating: "X-Filler: aaaaaaaaaaaaaaaa\r\n", count: 4000)
        #expect(throws: BenchProtocolError.self) { try decodeAll(wire, piece: 8192) }
    }
}
