@testable import EdgeCore
import NIOCore
import Testing

@Suite("Router")
struct RouterTests {
    let router = try! Router(
        routes: [
            RouteConfiguration(path: "/", handler: .demo(.init())),
            RouteConfiguration(path: "/api", handler: .respond(.init(body: "api"))),
            RouteConfiguration(path: "/api/v2", handler: .respond(.init(body: "v2"))),
        ],
        defaultTTL: .seconds(60)
    )

    @Test("the longest prefix that ends at a segment boundary wins", arguments: [
        ("/", "/"), ("/other", "/"), ("/api", "/api"), ("/api/", "/api"), ("/api/v1/x", "/api"), ("/api/v2/x", "/api/v2"),
        ("/api/v2", "/api/v2"), ("/apix", "/"), ("/api/v2x", "/api"), ("/api/v22/x", "/api"),
    ])
    func longestPrefix(path: String, expected: String) {
        #expect(router.route(for: path[...])?.prefix == expected)
    }

    @Test("prefixes compare bytes, not Unicode characters, and end at a segment boundary")
    func bytePrefixes() throws {
        let router = try Router(
            routes: [
                RouteConfiguration(path: "/caf", handler: .respond(.init(body: "ascii"))),
                RouteConfiguration(path: "/café", handler: .respond(.init(body: "composed"))),
            ],
            defaultTTL: .seconds(1)
        )
        #expect(router.route(for: "/café/menu")?.prefix == "/café")
        // "e" + U+0301 is the same Character as "é" but other bytes, and "/caf" ends mid-segment there.
        #expect(router.route(for: "/cafe\u{301}/menu") == nil)
        #expect(router.route(for: "/caf/menu")?.prefix == "/caf")
        // Part of a slice: only the slice's own bytes count.
        let target = "/café/menu?x=1"
        #expect(router.route(for: target[..<target.firstIndex(of: "?")!])?.prefix == "/café")
        #expect(router.route(for: "/ca") == nil)
    }

    @Test("a trailing slash in a prefix makes no difference: /docs/ serves /docs, /docs/ and /docs/x, not /docsx")
    func trailingSlash() throws {
        let router = try Router(
            routes: [RouteConfiguration(path: "/", handler: .demo(.init())), RouteConfiguration(path: "/docs/", handler: .demo(.init()))],
            defaultTTL: .seconds(1)
        )
        for path in ["/docs", "/docs/", "/docs/x/y"] { #expect(router.route(for: path[...])?.prefix == "/docs/", "\(path)") }
        #expect(router.route(for: "/docsx")?.prefix == "/")
    }

    @Test("the path below a prefix is cut by bytes: a combining mark after the prefix stays in it", arguments: [
        ("/files", "/files/a.txt", "/a.txt"), ("/files", "/files", ""), ("/files/", "/files/", "/"), ("/", "/x/y", "/x/y"),
        ("/", "/\u{301}private/secret.txt", "/\u{301}private/secret.txt"),
        ("/docs/", "/docs/\u{301}private/secret.txt", "/\u{301}private/secret.txt"),
        ("/docs", "/docs/\u{200D}x", "/\u{200D}x"),
    ])
    func relativePath(prefix: String, path: String, expected: String) {
        let route = Route(prefix: prefix, origin: FixedResponse(EdgeResponse(status: .ok)), rateLimiter: nil, authenticator: nil)
        #expect(route.matches(path[...]))
        #expect(Array(route.relativePath(of: path[...]).utf8) == Array(expected.utf8))
    }

    @Test("no route matches a path outside every prefix")
    func noMatch() throws {
        let narrow = try Router(routes: [RouteConfiguration(path: "/only", handler: .demo(.init()))], defaultTTL: .seconds(1))
        #expect(narrow.route(for: "/elsewhere") == nil)
    }

    @Test("a missing htpasswd file names the route key")
    func missingHtpasswd() {
        #expect {
            _ = try Router(
                routes: [RouteConfiguration(path: "/", handler: .demo(.init()), basicAuth: .init(realm: "r", htpasswd: "/nonexistent/htpasswd"))],
                defaultTTL: .seconds(1)
            )
        } throws: { error in
            (error as? RouteSetupError)?.description.hasPrefix("route[0].basic_auth.htpasswd: /nonexistent/htpasswd") == true
        }
    }

    @Test("a route's own TTL overrides the cache default")
    func ttl() throws {
        let routes = try Router(routes: [RouteConfiguration(path: "/", handler: .demo(.init()), cacheTTL: .zero)], defaultTTL: .seconds(60))
        guard let ttl = (routes.route(for: "/")?.origin as? CachingOrigin)?.ttl else { Issue.record("expected a cached demo route"); return }
        #expect(ttl == .zero)
    }
}
