@testable import EdgeCore
import Testing

@Suite("Routing path: the normal form routes are matched against")
struct RoutingPathTests {
    @Test(
        "paths already in normal form come back as they are",
        arguments: ["/", "/a", "/a/b/", "/private/secret.txt", "/a.b/c..d/...", "/a%20b", "/a%2Fb", "/.well-known/x"]
    )
    func unchanged(path: String) {
        #expect(RoutingPath.normalize(path[...]) == .success(path[...]))
    }

    @Test(
        "other spellings of a path become it",
        arguments: [
            ("/%70rivate/s", "/private/s"), ("/%70%72%69%76%61%74%65", "/private"), ("/%7e%2D%2e%5F", "/~-._"),
            ("//private//s", "/private/s"), ("///", "/"), ("/./a/./b", "/a/b"), ("/a/b/..", "/a/"), ("/a/b/.", "/a/b/"),
            ("/a/../b", "/b"), ("/a/%2e%2e/b", "/b"), ("/a/%2E/b", "/a/b"), ("/a/..", "/"), ("/..%2F", "/..%2F"),
            ("/%20%2f%3f%25", "/%20%2F%3F%25"), ("/%c3%a9", "/%C3%A9"), ("/.", "/"),
        ]
    )
    func normalised(path: String, expected: String) {
        #expect(RoutingPath.normalize(path[...]) == .success(expected[...]))
    }

    @Test(
        "a route prefix is suggested in the form requests reach it",
        arguments: [("/café", "/caf%C3%A9"), ("/a b", "/a%20b"), ("//api/%761", "/api/v1"), ("/ok/", "/ok/")]
    )
    func suggestedPrefix(prefix: String, expected: String) {
        #expect(RoutingPath.suggestedPrefix(for: prefix) == .success(expected[...]))
    }

    @Test("an escape of a reserved or other byte stays one, so that it is decoded once, later, by the responder")
    func noSecondDecoding() {
        // `%25` is `%`: decoding it here would turn `%2570` into `%70`, which the static responder would decode again.
        #expect(RoutingPath.normalize("/%2570rivate"[...]) == .success("/%2570rivate"[...]))
    }

    @Test(
        "malformed escapes and climbs above the root have no normal form",
        arguments: [
            ("/%zz", RoutingPath.Invalid.malformedEscape), ("/%", .malformedEscape), ("/%7", .malformedEscape),
            ("/%%37%30rivate", .malformedEscape), ("/..", .aboveRoot), ("/a/../..", .aboveRoot), ("/%2e%2e/x", .aboveRoot),
        ]
    )
    func invalid(path: String, reason: RoutingPath.Invalid) {
        #expect(RoutingPath.normalize(path[...]) == .failure(reason))
    }

    @Test("on random paths the normal form is stable and has no merged-away or resolved-away parts left")
    func randomPaths() {
        var generator = SeededRandom(seed: 2026)
        let pieces = ["/", "/", ".", "..", "%2e", "%2E", "%2f", "%70", "%7E", "%41", "%25", "%c3%a9", "%", "a", "~", "-", "x.y", "%zz"]
        var checked = 0
        for _ in 0..<20_000 {
            let path = "/" + (0..<Int.random(in: 1...10, using: &generator)).map { _ in pieces.randomElement(using: &generator)! }.joined()
            guard case .success(let normal) = RoutingPath.normalize(path[...]) else { continue }
            checked += 1
            #expect(RoutingPath.normalize(normal) == .success(normal), "not stable: \(path) → \(normal)")
            let text = String(normal)
            #expect(text.hasPrefix("/") && !text.contains("//"), "\(path) → \(normal)")
            for segment in text.split(separator: "/") {
                #expect(segment != "." && segment != "..", "\(path) → \(normal)")
            }
            let bytes = Array(text.utf8)
            for (index, byte) in bytes.enumerated() where byte == UInt8(ascii: "%") {
                let digits = bytes[(index + 1)...].prefix(2)
                #expect(digits.count == 2 && digits.allSatisfy { $0.hexDigitValue != nil && !(UInt8(ascii: "a")...UInt8(ascii: "f")).contains($0) }, "\(path) → \(normal)")
            }
            for escape in ["%2e", "%2E", "%70", "%7E", "%41"] {
                #expect(!text.contains(escape), "\(path) → \(normal): \(escape) left encoded")
            }
        }
        #expect(checked > 5_000)
    }
}


@Suite("Routing path: raw bytes")
struct RoutingPathRawByteTests {
    @Test("a raw space, control byte or non-ASCII byte has no normal form (400 over HTTP/1.1 and HTTP/2 alike)", arguments: [
        "/\u{301}private/x", "/a b", "/a\u{7F}", "/caf\u{E9}", "/%2e%2e/\u{200D}", "/x\t",
    ])
    func refused(path: String) {
        #expect(RoutingPath.normalize(path[...]) == .failure(.invalidByte))
    }
}
