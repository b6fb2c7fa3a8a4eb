@testable import EdgeCore
import NIOCore
import NIOEmbedded
import NIOHTTP1
import Testing

@Suite("HTTP/1 request-line check")
struct HTTP1RequestLineCheckTests {
    func check(_ text: String, limit: Int = 32_768) -> HTTP1RequestLineCheck.Outcome {
        HTTP1RequestLineCheck.check(ByteBuffer(string: text), limit: limit)
    }

    @Test("request lines llhttp parses go to it unchanged")
    func parsed() {
        #expect(check("POST /upload HTTP/1.1\r\nHost: x\r\n\r\n") == .parse)
        #expect(check("PROPFIND /dav HTTP/1.0\r\n") == .parse)
        #expect(check("M-SEARCH * HTTP/1.1\r\n") == .parse)
        #expect(check("GET http://example.test/ HTTP/1.1\r\n") == .parse)
    }

    @Test("a valid method token llhttp does not know is an unknown method; methods are case-sensitive")
    func unknownMethods() {
        #expect(check("FOO / HTTP/1.1\r\n") == .unknownMethod)
        #expect(check("get / HTTP/1.1\r\n") == .unknownMethod)
        #expect(check("PRI / HTTP/1.1\r\n") == .unknownMethod)
        #expect(check("X-CUSTOM_1! /a?b HTTP/1.0\r\n") == .unknownMethod)
    }

    @Test("a major version other than 1 is unsupported, whatever the method")
    func otherMajorVersions() {
        #expect(check("GET / HTTP/2.0\r\n") == .unsupportedVersion)
        #expect(check("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n") == .unsupportedVersion)
        #expect(check("FOO / HTTP/0.9\r\n") == .unsupportedVersion)
        #expect(check("GET / HTTP/3.1\r\n") == .unsupportedVersion)
    }

    @Test("HTTP/1.2 to HTTP/1.9 name the offset of the minor digit")
    func higherMinorVersions() {
        #expect(check("GET / HTTP/1.2\r\n") == .downgradeMinorVersion(at: 13))
        #expect(check("POST /abc HTTP/1.9\r\nHost: x\r\n\r\n") == .downgradeMinorVersion(at: 17))
    }

    @Test("anything off the grammar is llhttp's to refuse")
    func malformed() {
        for line in [
            "G@T / HTTP/1.1\r\n", " GET / HTTP/1.1\r\n", "\r\nGET / HTTP/1.1\r\n", "GET  / HTTP/1.1\r\n", "GET / HTTP/1.10\r\n",
            "GET / HTTP/11.1\r\n", "GET / http/1.1\r\n", "GET / HTTP/1.1\n", "GET / HTTP/1.1 \r\n", "GET /\u{7F} HTTP/1.1\r\n",
            "GET / HTTP/1.x\r\n", "FOO\r\n",
        ] {
            #expect(check(line) == .parse, "\(line.debugDescription)")
        }
    }

    @Test("a line still arriving is waited for while it could become a request line, up to the limit")
    func incomplete() {
        for prefix in ["", "F", "FOO", "FOO ", "FOO /a", "FOO /a ", "FOO /a HT", "FOO /a HTTP/1.", "FOO /a HTTP/1.1\r"] {
            #expect(check(prefix) == .incomplete, "\(prefix.debugDescription)")
        }
        #expect(check("FOO /a HTTP/1.1\r", limit: 16) == .parse)
        #expect(check(String(repeating: "A", count: 100), limit: 64) == .parse)
        #expect(check("FOO /a HTTX") == .parse)
    }

    @Test("knownMethods is what NIO's HTTP/1 parser accepts in a request")
    func knownMethodsMatchTheParser() throws {
        for method in HTTP1RequestLineCheck.knownMethods where method != "CONNECT" {
            #expect(try parses("\(method) / HTTP/1.1\r\nHost: x\r\n\r\n"), "\(method)")
        }
        #expect(try parses("CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n"))
        for method in ["FOO", "get", "BREW", "PRI", "PROPFINDX", "GETS"] {
            #expect(try !parses("\(method) / HTTP/1.1\r\nHost: x\r\n\r\n"), "\(method)")
        }
    }

    /// Whether NIO's HTTP/1 request decoder reads `request` as a request head without an error.
    private func parses(_ request: String) throws -> Bool {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(HTTPRequestDecoder()))
        defer { _ = try? channel.finish() }
        do {
            try channel.writeInbound(ByteBuffer(string: request))
        } catch {
            return false
        }
        guard case .head = try channel.readInbound(as: HTTPServerRequestPart.self) else { return false }
        return true
    }
}
