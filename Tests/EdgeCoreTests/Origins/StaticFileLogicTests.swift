@testable import EdgeCore
import Testing

@Suite("Static files: paths, ranges, dates, conditions")
struct StaticFileLogicTests {
    @Test("safe paths resolve", arguments: [
        ("/", [String](), true), ("/a/b.txt", ["a", "b.txt"], false), ("/dir/", ["dir"], true),
        ("/a%20b", ["a b"], false), ("//a///b", ["a", "b"], false), ("/caf%C3%A9", ["café"], false),
    ])
    func resolves(path: String, segments: [String], trailingSlash: Bool) throws {
        let resolved = try #require(StaticPath.resolve(path[...]))
        #expect(resolved.segments == segments)
        #expect(resolved.trailingSlash == trailingSlash)
    }

    @Test("traversal and smuggled separators are refused", arguments: [
        "/../etc/passwd", "/a/../../b", "/%2e%2e/etc/passwd", "/%2E%2E%2Fetc", "/a%2fb", "/a%5cb", "/a\\b",
        "/a%00b", "/a%0ab", "/%c0%ae%c0%ae/etc", "/%e0%80%ae", "/a%zz", "/a%4", "/.", "/a/./b", "/%ed%a0%80",
    ])
    func refuses(path: String) {
        #expect(StaticPath.resolve(path[...]) == nil)
    }

    @Test("hidden segments are flagged")
    func hidden() {
        #expect(StaticPath.resolve("/.git/config")?.hasHiddenSegment == true)
        #expect(StaticPath.resolve("/a/.env")?.hasHiddenSegment == true)
        #expect(StaticPath.resolve("/a/b.env")?.hasHiddenSegment == false)
        // Segments are split on the byte "/": a mark that joins a "/" to a neighbour as one Character (U+0600
        // prepends, U+0301 and U+200D extend) does not hide a hidden or a dot segment.
        #expect(StaticPath.resolve("/%D8%80/.env")?.hasHiddenSegment == true)
        #expect(StaticPath.resolve("/%D8%80/../x") == nil)
        #expect(StaticPath.resolve("/a/%CC%81.env")?.segments == ["a", "\u{301}.env"])
        #expect(StaticPath.resolve("/a/%E2%80%8D/b")?.segments == ["a", "\u{200D}", "b"])
    }

    @Test("Range headers", arguments: [
        (nil, 100, ByteRangeRequest.whole), ("bytes=0-9", 100, .single(0..<10)), ("bytes=90-", 100, .single(90..<100)),
        ("bytes=-10", 100, .single(90..<100)),  // the LAST 10 bytes, not the first
        ("bytes=-500", 100, .single(0..<100)), ("bytes=50-500", 100, .single(50..<100)), ("bytes=100-", 100, .unsatisfiable),
        ("bytes=-0", 100, .unsatisfiable), ("bytes=0-0,5-9", 100, .multiple), ("bytes=0-0,200-300", 100, .single(0..<1)),
        ("bytes=9-3", 100, .whole), ("bytes=a-b", 100, .whole), ("items=0-1", 100, .whole), ("bytes=0-1", 0, .unsatisfiable),
        ("bytes= 1-2 ", 100, .single(1..<3)), ("bytes=+1-2", 100, .whole),
    ])
    func ranges(header: String?, size: Int, expected: ByteRangeRequest) {
        #expect(ByteRangeRequest.parse(header, size: size) == expected)
    }

    @Test("HTTP dates in all three forms", arguments: [
        "Sun, 06 Nov 1994 08:49:37 GMT", "Sunday, 06-Nov-94 08:49:37 GMT", "Sun Nov  6 08:49:37 1994",
    ])
    func dates(text: String) {
        #expect(HTTPDate.parse(text) == 784_111_777)
    }

    @Test("malformed dates are refused", arguments: [
        "", "yesterday", "Sun, 32 Nov 1994 08:49:37 GMT", "Sun, 06 Foo 1994 08:49:37 GMT",
        "Sun, 06 Nov 99999999999999999 08:49:37 GMT", "Sun Nov  6 08:49:37 -9223372036854775807", "Sun, 06 Nov 10000 08:49:37 GMT",
        "Sunday, 06-Nov-9223372036854775807 08:49:37 GMT", "Sun, 06 Jan -9223372036854775808 08:49:37 GMT",
    ])
    func badDates(text: String) {
        #expect(HTTPDate.parse(text) == nil)
    }

    @Test("the Date header formatter and parser agree")
    func roundTrip() {
        #expect(HTTPDate.parse(HTTPDateHeader.format(1_800_000_000)) == 1_800_000_000)
    }

    @Test("conditional GET")
    func conditional() {
        let etag = "\"abc\"", modified = 784_111_777
        #expect(ConditionalRequest.notModified(ifNoneMatch: "\"x\", \"abc\"", ifModifiedSince: nil, etag: etag, lastModified: modified))
        #expect(ConditionalRequest.notModified(ifNoneMatch: "W/\"abc\"", ifModifiedSince: nil, etag: etag, lastModified: modified))
        #expect(ConditionalRequest.notModified(ifNoneMatch: "*", ifModifiedSince: nil, etag: etag, lastModified: modified))
        #expect(!ConditionalRequest.notModified(ifNoneMatch: "\"x\"", ifModifiedSince: "Sun, 06 Nov 1994 08:49:37 GMT", etag: etag, lastModified: modified))
        #expect(ConditionalRequest.notModified(ifNoneMatch: nil, ifModifiedSince: "Sun, 06 Nov 1994 08:49:37 GMT", etag: etag, lastModified: modified))
        #expect(!ConditionalRequest.notModified(ifNoneMatch: nil, ifModifiedSince: "Sun, 06 Nov 1994 08:49:36 GMT", etag: etag, lastModified: modified))
        #expect(ConditionalRequest.rangeApplies(ifRange: nil, etag: etag, lastModified: modified))
        #expect(ConditionalRequest.rangeApplies(ifRange: "\"abc\"", etag: etag, lastModified: modified))
        #expect(!ConditionalRequest.rangeApplies(ifRange: "W/\"abc\"", etag: etag, lastModified: modified))
        #expect(ConditionalRequest.rangeApplies(ifRange: "Sun, 06 Nov 1994 08:49:37 GMT", etag: etag, lastModified: modified))
        #expect(!ConditionalRequest.rangeApplies(ifRange: "Sun, 06 Nov 1994 08:49:38 GMT", etag: etag, lastModified: modified))
    }

    @Test("media types by extension")
    func mediaTypes() {
        #expect(MediaTypes.contentType(forPath: "/a/index.HTML") == "text/html; charset=utf-8")
        #expect(MediaTypes.contentType(forPath: "/x.png") == "image/png")
        #expect(MediaTypes.contentType(forPath: "/noext") == "application/octet-stream")
        #expect(MediaTypes.contentType(forPath: "/dir.d/noext") == "application/octet-stream")
        // A combining mark after the dot is part of the extension, not a way past it.
        #expect(MediaTypes.contentType(forPath: "/x.\u{301}html") == "application/octet-stream")
        #expect(MediaTypes.contentType(forPath: "/x.html.\u{301}") == "application/octet-stream")
    }
}

@Suite("Accept-Encoding")
struct AcceptedEncodingsTests {
    @Test("codings and q-values", arguments: [
        (nil, AcceptedEncodings()), ("gzip", AcceptedEncodings(gzip: 1000)), ("br, gzip", AcceptedEncodings(brotli: 1000, gzip: 1000)),
        ("gzip;q=0, br", AcceptedEncodings(brotli: 1000)), ("gzip; q=0.5", AcceptedEncodings(gzip: 500)),
        ("*", AcceptedEncodings(brotli: 1000, zstd: 1000, gzip: 1000)), ("identity", AcceptedEncodings()), ("BR;Q=0.000", AcceptedEncodings()),
        ("zstd", AcceptedEncodings(zstd: 1000)), ("ZSTD;q=0.25, br;q=0.5", AcceptedEncodings(brotli: 500, zstd: 250)),
        // q=0 refuses a coding even where * accepts the rest (RFC 9110 §12.5.3).
        ("gzip;q=0, *", AcceptedEncodings(brotli: 1000, zstd: 1000)), ("*, gzip;q=0", AcceptedEncodings(brotli: 1000, zstd: 1000)),
        ("*;q=0.5, zstd", AcceptedEncodings(brotli: 500, zstd: 1000, gzip: 500)),
        ("br;q=0,gzip;q=0.001", AcceptedEncodings(gzip: 1)), ("x-gzip", AcceptedEncodings(gzip: 1000)),
        ("*;q=0", AcceptedEncodings(identity: false)), ("*;q=0, identity", AcceptedEncodings()),
        ("identity;q=0, gzip", AcceptedEncodings(gzip: 1000, identity: false)), ("identity;q=0.0", AcceptedEncodings(identity: false)),
        // Malformed q-values drop the item: q=2, q=1.5, q=0.0001, q=-0, q=, q=abc.
        ("gzip;q=2", AcceptedEncodings()), ("gzip;q=1.5", AcceptedEncodings()), ("gzip;q=0.0001", AcceptedEncodings()),
        ("gzip;q=-0", AcceptedEncodings()), ("gzip;q=", AcceptedEncodings()), ("gzip;q=abc, br", AcceptedEncodings(brotli: 1000)),
        ("gzip ; q=1.000 , br ; Q=0.9", AcceptedEncodings(brotli: 900, gzip: 1000)), ("gzip\u{301}", AcceptedEncodings()),
        ("", AcceptedEncodings()), (" , ,", AcceptedEncodings()),
    ])
    func parses(header: String?, expected: AcceptedEncodings) {
        #expect(AcceptedEncodings(header: header) == expected)
    }
}
