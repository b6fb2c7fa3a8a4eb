@testable import EdgeCore
import NIOCore
import Testing

@Suite("Perfect hashing, the path tree and the host table")
struct SiteRoutingTests {
    @Test("Every key is found at its own value and nothing else is found", arguments: [1, 2, 3, 10, 1000, 20_000])
    func perfectHashFindsEveryKey(count: Int) {
        let keys = (0..<count).map { Array("/route/\($0)".utf8) }
        let table = PerfectHashTable(keys.enumerated().map { ($0.element, $0.offset) })
        #expect(table.count == count)
        for (index, key) in keys.enumerated() {
            #expect(table.value(for: key) == index)
        }
        #expect(table.value(for: Array("/route/\(count)".utf8)) == nil)
        #expect(table.value(for: Array("/route/".utf8)) == nil)
        #expect(table.value(for: [UInt8]()) == nil)
    }

    @Test("Case folding applies to ASCII letters only, and substrings are looked up without copying")
    func caseFolding() {
        let table = PerfectHashTable([(Array("example.com".utf8), 1), (Array("b\u{00C9}.test".utf8), 2)], foldsCase: true)
        #expect(table.value(for: "EXAMPLE.com"[...].utf8) == 1)
        #expect(table.value(for: "b\u{00C9}.TEST".utf8) == 2)
        #expect(table.value(for: "b\u{00E9}.test".utf8) == nil, "non-ASCII bytes are compared as they are")
        #expect(table.value(for: "example.co".utf8) == nil)
    }

    @Test("An empty table finds nothing; duplicate keys keep the first value")
    func emptyAndDuplicates() {
        #expect(PerfectHashTable<Int>([]).value(for: "x".utf8) == nil)
        let table = PerfectHashTable([(Array("a".utf8), 1), (Array("a".utf8), 2)])
        #expect(table.count == 1)
        #expect(table.value(for: "a".utf8) == 1)
    }

    private func route(_ path: String, exact: Bool = false) -> Route {
        Route(prefix: path, origin: FixedResponse(EdgeResponse(status: .ok)), rateLimiter: nil, authenticator: nil, isExact: exact)
    }

    @Test("The path tree finds the longest prefix at a segment boundary, as the linear scan did")
    func pathTreeMatchesTheLinearScan() {
        let routes = ["/", "/a", "/a/b", "/a/b/c/", "/files", "/x/y/z", "/\u{00E9}t\u{00E9}"].map { route($0) }
        let table = PathTable(routes: routes)
        let longestFirst = routes.sorted { $0.matchPrefix.utf8.count > $1.matchPrefix.utf8.count }
        let paths = ["/", "/a", "/a/", "/ab", "/a/b", "/a/bc", "/a/b/c", "/a/b/c/d", "/files", "/filesprivate/a", "/files/",
                     "/x/y", "/x/y/z/w", "/x", "/\u{00E9}t\u{00E9}/a", "/\u{00E9}t\u{00E9}x", "/zzz"]
        for path in paths {
            let linear = longestFirst.first { $0.matches(path[...]) }
            #expect(table.route(for: path[...]) === linear, "\(path)")
        }
    }

    @Test("An exact route answers its path alone and wins over a prefix")
    func exactRoutes() {
        let prefix = route("/x"), exact = route("/x", exact: true), root = route("/")
        let table = PathTable(routes: [root, prefix, exact])
        #expect(table.route(for: "/x") === exact)
        #expect(table.route(for: "/x/") === prefix)
        #expect(table.route(for: "/x/y") === prefix)
        #expect(table.route(for: "/y") === root)
        #expect(PathTable(routes: [route("/only", exact: true)]).route(for: "/only/more") == nil)
    }

    @Test("Hosts: exact names, then leading wildcards at any depth, then the fallback")
    func hostTable() {
        let a = Site(names: ["a.test", "www.a.test"], routes: [])
        let b = Site(names: ["*.b.test"], routes: [])
        let ip = Site(names: ["127.0.0.1", "[::1]"], routes: [])
        let fallback = Site(names: [], routes: [])
        let hosts = HostTable(sites: [a, b, ip], fallback: fallback)
        #expect(hosts.site(for: "a.test") === a)
        #expect(hosts.site(for: "A.TEST:443") === a)
        #expect(hosts.site(for: "www.a.test.") === a)
        #expect(hosts.site(for: "x.b.test") === b)
        #expect(hosts.site(for: "y.x.b.test:80") === b)
        #expect(hosts.site(for: "b.test") === fallback)
        #expect(hosts.site(for: "127.0.0.1:8080") === ip)
        #expect(hosts.site(for: "[::1]:8443") === ip)
        #expect(hosts.site(for: "") === fallback)
        #expect(hosts.site(for: ".") === fallback)
        #expect(hosts.site(for: "b.test.") === fallback)
        #expect(HostTable(sites: [a], fallback: nil).site(for: "other") == nil)
    }

    @Test("Site names: host names, wildcards and IP literals; nothing else")
    func siteNames() {
        for good in ["a.test", "*.a.test", "x-1.example.com", "127.0.0.1", "[::1]", "localhost"] {
            #expect(TOMLReader.isValidSiteName(good), "\(good)")
        }
        for bad in ["", "*.", "a..b", "a b", "a/b", "*a.test", "a.*.test", "\u{00E9}.test", String(repeating: "a", count: 64) + ".test"] {
            #expect(!TOMLReader.isValidSiteName(bad), "\(bad)")
        }
    }
}
