@testable import EdgeCore
import NIOHPACK
import Testing

@Suite("HTTP/2 header block rules")
struct HTTP2HeaderBlockRulesTests {
    static let base = [(":method", "GET"), (":scheme", "https"), (":authority", "example.test"), (":path", "/a?b")]

    func fields(_ pairs: [(String, String)]) -> HTTP2HeaderBlockRules.RequestFields? {
        HTTP2HeaderBlockRules.requestFields(HPACKHeaders(pairs))
    }

    @Test("a well-formed head yields its method, path, authority, host and field counts")
    func wellFormed() throws {
        let head = Self.base + [("host", "Example.TEST"), ("host", "example.test"), ("expect", "100-continue"), ("content-length", "3")]
        let result = try #require(fields(head))
        #expect(result.method == "GET")
        #expect(result.path == "/a?b")
        #expect(result.authority == "example.test")
        #expect(result.host == "Example.TEST")
        #expect(result.hasExpect && result.hasContentLength)
        #expect(result.regularFields == 4)
        #expect(result.headBytes == head.reduce(0) { $0 + $1.0.utf8.count + $1.1.utf8.count + 4 })
    }

    @Test(
        "values and names on the edge of the rules are accepted",
        arguments: [
            [("te", "trailers")], [("x-a", "café")], [("x-a", " a b\tc ")], [("x-a!#$%&'*+.^_`|~09", "")],
            [("connection-x", "1")], [("upgrade-insecure-requests", "1")],
        ]
    )
    func accepted(extra: [(String, String)]) {
        #expect(fields(Self.base + extra) != nil)
    }

    @Test(
        "malformed heads are refused",
        arguments: [
            ("upper-case name", base + [("X-A", "1")]),
            ("empty name", base + [("", "1")]),
            ("space in name", base + [("x a", "1")]),
            ("colon in name", base + [("x:a", "1")]),
            ("connection", base + [("connection", "close")]),
            ("keep-alive", base + [("keep-alive", "5")]),
            ("proxy-connection", base + [("proxy-connection", "x")]),
            ("transfer-encoding", base + [("transfer-encoding", "chunked")]),
            ("upgrade", base + [("upgrade", "h2c")]),
            ("te gzip", base + [("te", "gzip")]),
            ("te trailers, gzip", base + [("te", "trailers, gzip")]),
            ("NUL", base + [("x-a", "a\u{0}")]),
            ("CR", base + [("x-a", "a\rb")]),
            ("LF", base + [("x-a", "a\nb")]),
            ("pseudo after regular", [(":method", "GET"), (":scheme", "https"), ("x-a", "1"), (":path", "/")]),
            ("duplicate :method", base + [(":method", "GET")]),
            ("unknown pseudo", [(":foo", "1")] + base),
            (":status", [(":status", "200")] + base),
            (":protocol", base + [(":protocol", "websocket")]),
            ("bare colon", [(":", "1")] + base),
            ("no :method", Array(base.dropFirst())),
            ("no :scheme", base.filter { $0.0 != ":scheme" }),
            ("no :path", base.filter { $0.0 != ":path" }),
            ("empty :path", base.filter { $0.0 != ":path" } + [(":path", "")]),
            ("space in :path", base.filter { $0.0 != ":path" } + [(":path", "/a b")]),
            ("DEL in :method", [(":method", "G\u{7F}T")] + base.dropFirst()),
            ("CONNECT with :path", [(":method", "CONNECT"), (":authority", "h:443"), (":path", "/")]),
            ("CONNECT without :authority", [(":method", "CONNECT")]),
            ("host other than :authority", base + [("host", "other.test")]),
            ("host with another port", base + [("host", "example.test:8443")]),
            ("second host differing", base.filter { $0.0 != ":authority" } + [("host", "a.test"), ("host", "b.test")]),
            ("https without :authority or host", base.filter { $0.0 != ":authority" }),
            ("http without :authority or host", [(":method", "GET"), (":scheme", "HTTP"), (":path", "/")]),
            ("another scheme without :authority or host", [(":method", "GET"), (":scheme", "urn"), (":path", "/x")]),
        ] as [(String, [(String, String)])]
    )
    func refused(_ name: String, head: [(String, String)]) {
        #expect(fields(head) == nil, "\(name) should be refused")
    }

    @Test("host may stand in for :authority")
    func hostWithoutAuthority() throws {
        let result = try #require(fields(Self.base.filter { $0.0 != ":authority" } + [("host", "example.test")]))
        #expect(result.authority == nil && result.host == "example.test")
    }

    @Test("CONNECT carries :method and :authority only")
    func connect() throws {
        let result = try #require(fields([(":method", "CONNECT"), (":authority", "h:443")]))
        #expect(result.method == "CONNECT" && result.path.isEmpty && result.authority == "h:443")
    }

    @Test("trailers: regular fields under the same rules, and no pseudo-header fields")
    func trailers() {
        #expect(HTTP2HeaderBlockRules.isValidTrailerBlock(HPACKHeaders([("x-checksum", "abc"), ("te", "gzip")])))
        #expect(HTTP2HeaderBlockRules.isValidTrailerBlock(HPACKHeaders()))
        for bad in [[(":path", "/")], [("X-A", "1")], [("connection", "close")], [("x-a", "a\nb")], [("", "x")]] {
            #expect(!HTTP2HeaderBlockRules.isValidTrailerBlock(HPACKHeaders(bad)), "\(bad) should be refused")
        }
    }
}
