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
            ("/%20%2f%3F%25", "/%20%2f%3F%25"), ("/.", "/"),
        ]
    )
    func normalised(path: String, expected: String) {
        #expect(RoutingPath.normalize(path[...]) == .success(expected[...]))
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
}
