import EdgeCore
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

    @Test("the longest matching prefix wins", arguments: [
        ("/", "/"), ("/other", "/"), ("/api", "/api"), ("/api/v1/x", "/api"), ("/api/v2/x", "/api/v2"), ("/apix", "/api"),
    ])
    func longestPrefix(path: String, expected: String) {
        #expect(router.route(for: path[...])?.prefix == expected)
    }

    @Test("prefixes compare bytes, as nginx compares locations, not Unicode characters")
    func bytePrefixes() throws {
        let router = try Router(
            routes: [
                RouteConfiguration(path: "/caf", handler: .respond(.init(body: "ascii"))),
                RouteConfiguration(path: "/café", handler: .respond(.init(body: "composed"))),
            ],
            defaultTTL: .seconds(1)
        )
        #expect(router.route(for: "/café/menu")?.prefix == "/café")
        // "e" + U+0301 is the same Character as "é" but other bytes: only the ASCII prefix matches it.
        #expect(router.route(for: "/cafe\u{301}/menu")?.prefix == "/caf")
        // Part of a slice: only the slice's own bytes count.
        let target = "/café/menu?x=1"
        #expect(router.route(for: target[..<target.firstIndex(of: "?")!])?.prefix == "/café")
        #expect(router.route(for: "/ca") == nil)
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
        guard case .demo(_, let ttl) = routes.route(for: "/")?.action else { Issue.record("expected a demo route"); return }
        #expect(ttl == .zero)
    }
}
