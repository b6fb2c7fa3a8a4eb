@testable import EdgeCore
import NIOCore
import Testing

@Suite("PROXY protocol header")
struct ProxyProtocolHeaderTests {
    func parse(_ bytes: [UInt8]) -> ProxyProtocolHeader.Outcome {
        ProxyProtocolHeader.parse(ByteBuffer(bytes: bytes))
    }

    @Test("v1 TCP4 and TCP6 name the client; the header's length excludes what follows")
    func v1() throws {
        let line = Array("PROXY TCP4 203.0.113.7 192.0.2.1 51000 80\r\nGET / HTTP/1.1\r\n".utf8)
        guard case .header(.client(let address), let length) = parse(line) else { Issue.record("\(parse(line))"); return }
        #expect(address.ipAddress == "203.0.113.7" && address.port == 51000)
        #expect(length == 43)  // the line and its CRLF, not the request after it
        let six = Array("PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n".utf8)
        guard case .header(.client(let address6), _) = parse(six) else { Issue.record("\(parse(six))"); return }
        #expect(address6.protocol == .inet6)
    }

    @Test("a header still arriving is incomplete, byte by byte", arguments: [
        Array("PROXY TCP4 203.0.113.7 192.0.2.1 51000 80\r\n".utf8),
        ProxyProtocolHeader.signature + [0x21, 0x11, 0x00, 0x0C, 1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2],
    ])
    func incomplete(header: [UInt8]) {
        for cut in 1..<header.count { #expect(parse(Array(header[..<cut])) == .incomplete, "cut at \(cut)") }
        if case .header = parse(header) {} else { Issue.record("the whole header did not parse") }
    }

    @Test("malformed headers are invalid", arguments: [
        "GET / HTTP/1.1\r\n", "PROXY TCP4 1.2.3.4\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 70000 1\r\n", "PROXY TCP4 ::1 ::2 1 2\r\n",
        "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "PROXY " + String(repeating: "x", count: 120),
    ])
    func invalid(text: String) {
        if case .invalid = parse(Array(text.utf8)) {} else { Issue.record("\(text.debugDescription) → \(parse(Array(text.utf8)))") }
    }

    @Test("v2: LOCAL, UDP and unspecified families keep the peer; a wrong version is invalid")
    func v2Kinds() {
        #expect(parse(ProxyProtocolHeader.signature + [0x20, 0x00, 0x00, 0x00]) == .header(.local, length: 16))
        #expect(parse(ProxyProtocolHeader.signature + [0x21, 0x12, 0x00, 0x0C] + [UInt8](repeating: 1, count: 12)) == .header(.local, length: 28))
        if case .invalid = parse(ProxyProtocolHeader.signature + [0x31, 0x11, 0x00, 0x00]) {} else { Issue.record("version 3 accepted") }
    }
}
