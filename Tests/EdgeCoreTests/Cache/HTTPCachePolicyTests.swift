#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import NIOCore
import NIOEmbedded
import Testing

@testable import EdgeCore

/// The HTTP cache's rules as pure functions, with the cases of the http-tests/cache-tests suite that CI cannot run
/// (cc-parse, age-parse, expires-parse, expires-freshness, cdn-cache-control, cc-request, stale).
@Suite("HTTP cache policy")
struct HTTPCachePolicyTests {
    let policy = HTTPCachePolicy()

    /// The lifetime of a response with these `Cache-Control` lines and `Expires` values, dated `date`.
    func lifetime(_ cacheControl: [String], expires: [String] = [], date: Int = 1_000_000, status: Int = 200, lastModified: String? = nil) -> Int {
        let (directives, targeted) = policy.responseDirectives { $0 == "cache-control" ? cacheControl : [] }
        return policy.freshnessLifetime(
            status: status, directives: directives, targeted: targeted, expires: expires, date: date, lastModified: lastModified
        )
    }

    @Test("Cache-Control max-age as the suite's cc-parse group writes it", arguments: [
        ("max-age=3600", 3600),
        ("max-age=003600", 3600),
        ("max-age=\"3600\"", 3600),
        ("MaX-aGe=3600", 3600),
        ("foobar, max-age=3600", 3600),
        ("max-age=1800, max-age=1", 1800),
        ("max-age=1, max-age=1800", 1800),
        ("max-age='3600'", 0),
        ("max-age=-3600", 0),
        ("max-age =3600", 0),
        ("max-age= 3600", 0),
        ("extension=\"max-age=3600\", max-age=1", 1),
        ("max-age=1, extension=\"max-age=3600\"", 1),
        ("max-age=2147483649", 2_147_483_648),
        ("max-age=99999999999", 2_147_483_648),
        ("max-age=3600, s-maxage=1", 1),
        ("s-maxage=1, max-age=3600", 1),
    ])
    func maxAge(field: String, expected: Int) {
        #expect(lifetime([field]) == expected, "\(field)")
    }

    @Test("s-maxage on a separate line still overrides max-age")
    func sMaxAgeLines() {
        #expect(lifetime(["max-age=3600", "s-maxage=1"]) == 1)
        #expect(lifetime(["max-age=1800", "max-age=1"]) == 1800)
    }

    @Test("Expires: strict HTTP dates only; anything else has expired (expires-parse)", arguments: [
        ("Thu, 18 Aug 2050 02:01:18 GMT", true),
        ("THU, 18 AUG 2050 02:01:18 gMT", true),
        ("Thursday, 18-Aug-50 02:01:18 GMT", true),
        ("Thu Aug 18 02:01:18 2050", true),
        ("Sun, 21 Nov 2286 04:46:39 GMT", true),
        ("Thu, 18 Aug 2050 02:01:18 UTC", false),
        ("Thu, 18 Aug 2050 02:01:18 AEST", false),
        ("Thu, 18 Aug 50 02:01:18 GMT", false),
        ("Thu 18 Aug 2050 02:01:18 GMT", false),
        ("Thu, 18  Aug  2050 02:01:18 GMT", false),
        ("Thu, 18-Aug-2050 02:01:18 GMT", false),
        ("Thu, 18 Aug 2050 02.01.18 GMT", false),
        ("Thu, 18 Aug 2050 2:01:18 GMT", false),
        ("0", false),
    ])
    func expires(value: String, valid: Bool) {
        #expect((HTTPDate.parseStrict(value) != nil) == valid, "\(value)")
        let now = 2_000_000_000  // 2033: every valid date above is later
        #expect((lifetime([], expires: [value], date: now) > 0) == valid, "\(value)")
    }

    @Test("several Expires lines are invalid; Expires before Date is stale")
    func expiresLines() {
        let date = 1_800_000_000
        let later = HTTPDateHeader.format(time_t(date + 100))
        #expect(lifetime([], expires: [later], date: date) == 100)
        #expect(lifetime([], expires: [later, later], date: date) == 0)
        #expect(lifetime([], expires: [HTTPDateHeader.format(time_t(date - 100))], date: date) == 0)
        #expect(lifetime(["max-age=0"], expires: [later], date: date) == 0)  // max-age wins over Expires
    }

    @Test("Age: the first member's delta-seconds, else ignored (age-parse)", arguments: [
        (["7200"], 7200), (["abc"], nil), (["-7200"], nil), (["7200.0"], nil), (["7200, 0"], 7200), (["0, 7200"], 0),
        (["7200", "0"], 7200), (["0", "7200"], 0), (["2147483649"], 2_147_483_648), (["7200;foo=bar"], 7200), ([], nil),
    ] as [([String], Int?)])
    func age(values: [String], expected: Int?) {
        #expect(HTTPCachePolicy.ageValue(values) == expected)
    }

    @Test("corrected initial age: the larger of the apparent age and Age plus the response delay (RFC 9111 §4.2.3)")
    func correctedAge() {
        #expect(HTTPCachePolicy.correctedInitialAge(age: nil, date: 100, requestTime: 100, responseTime: 100) == 0)
        #expect(HTTPCachePolicy.correctedInitialAge(age: nil, date: 50, requestTime: 100, responseTime: 100) == 50)
        #expect(HTTPCachePolicy.correctedInitialAge(age: 30, date: 100, requestTime: 95, responseTime: 100) == 35)
        #expect(HTTPCachePolicy.correctedInitialAge(age: nil, date: 200, requestTime: 100, responseTime: 100) == 0)  // clock skew
    }

    @Test("heuristic freshness: 10 % of the time since Last-Modified, capped, only for heuristically cacheable statuses")
    func heuristic() {
        let date = 1_800_000_000
        let modified = HTTPDateHeader.format(time_t(date - 10_000))
        #expect(lifetime([], date: date, lastModified: modified) == 1000)
        #expect(lifetime([], date: date, status: 404, lastModified: modified) == 1000)
        #expect(lifetime([], date: date, status: 503, lastModified: modified) == 0)
        #expect(lifetime(["public"], date: date, status: 503, lastModified: modified) == 1000)
        #expect(lifetime([], date: date, lastModified: HTTPDateHeader.format(time_t(date - 10_000_000))) == 86_400)
        var off = policy
        off.heuristicPercent = 0
        let (directives, targeted) = off.responseDirectives { _ in [] }
        #expect(off.freshnessLifetime(status: 200, directives: directives, targeted: targeted, expires: [], date: date, lastModified: modified) == 0)
    }

    /// Why a response is refused, for a request without directives.
    func refusal(
        _ cacheControl: [String], status: Int = 200, cdn: [String] = [], authorization: Bool = false, setCookie: Bool = false,
        vary: [String] = [], request: CacheDirectives = CacheDirectives(), hasExpires: Bool = false
    ) -> String? {
        let (directives, targeted) = policy.responseDirectives { name in
            name == "cache-control" ? cacheControl : name == "cdn-cache-control" ? cdn : []
        }
        return policy.refusal(
            status: status, directives: directives, targeted: targeted, hasExpires: hasExpires, request: request,
            hasAuthorization: authorization, hasSetCookie: setCookie, vary: HTTPCachePolicy.varyNames(vary)
        )
    }

    @Test("what a shared cache may store (RFC 9111 §3)")
    func storability() {
        #expect(refusal(["max-age=60"]) == nil)
        #expect(refusal(["No-StOrE"]) == "no-store")
        #expect(refusal(["private, max-age=60"]) == "private")
        #expect(refusal(["max-age=60"], authorization: true) == "authorization")
        #expect(refusal(["public, max-age=60"], authorization: true) == nil)
        #expect(refusal(["s-maxage=60"], authorization: true) == nil)
        #expect(refusal(["max-age=60, must-revalidate"], authorization: true) == nil)
        #expect(refusal(["max-age=60"], setCookie: true) == "set-cookie")
        #expect(refusal(["max-age=60"], vary: ["", "*"]) == "vary *")
        #expect(refusal(["max-age=60"], vary: ["Foo, *"]) == "vary *")
        #expect(refusal([], status: 201) == "status")
        #expect(refusal([], status: 599) == "status")
        #expect(refusal(["max-age=60"], status: 599) == nil)  // explicit freshness: any status
        #expect(refusal(["max-age=60"], status: 206) == "status")
        #expect(refusal(["max-age=3600, no-store, must-understand"], status: 599) == "must-understand")
        #expect(refusal(["max-age=3600, no-store, must-understand"], status: 200) == nil)
        var request = CacheDirectives()
        request.noStore = true
        #expect(refusal(["max-age=60"], request: request) == "request no-store")
    }

    @Test("CDN-Cache-Control rules when it parses as a structured dictionary (cdn-cache-control group)")
    func cdnCacheControl() {
        #expect(refusal(["no-store"], cdn: ["max-age=10000"]) == nil)
        #expect(refusal(["max-age=10000"], cdn: ["no-store"]) == "no-store")
        #expect(refusal(["max-age=10000"], cdn: ["private"]) == "private")
        #expect(refusal(["no-store"], cdn: ["max-age=10000, &&&&&"]) == "no-store")  // not a dictionary: ignored
        #expect(refusal(["no-store"], cdn: ["max-age=\"10000\""]) == "no-store")  // max-age must be an Integer
        let (directives, targeted) = policy.responseDirectives { $0 == "cdn-cache-control" ? ["foobar, max-age=3600"] : ["max-age=1"] }
        #expect(targeted && directives.maxAge == 3600)
        let expires = [HTTPDateHeader.format(time_t(1_800_010_000))]
        #expect(policy.freshnessLifetime(status: 200, directives: directives, targeted: true, expires: expires, date: 1_800_000_000, lastModified: nil) == 3600)
        #expect(CacheDirectives(structuredField: ["max-age =100"]) == nil)
        #expect(CacheDirectives(structuredField: ["MaX-aGe=100"]) == nil)
        #expect(CacheDirectives(structuredField: ["max-age=100,"]) == nil)
        #expect(CacheDirectives(structuredField: ["max-age=100;a=1, no-cache, x=(1 2)"])?.noCache == true)
    }

    @Test("a stored response's use for a request (RFC 9111 §4, RFC 5861)")
    func use() {
        func use(age: Int, lifetime: Int, _ stored: String, _ request: String = "", forced: Bool = false) -> HTTPCachePolicy.Use {
            HTTPCachePolicy.use(
                age: age, lifetime: lifetime, stored: CacheDirectives([stored]), request: CacheDirectives([request]), forcedStale: forced
            )
        }
        #expect(use(age: 10, lifetime: 60, "max-age=60") == .fresh)
        #expect(use(age: 60, lifetime: 60, "max-age=60") == .validate)
        #expect(use(age: 10, lifetime: 60, "max-age=60, no-cache") == .validate)
        #expect(use(age: 10, lifetime: 60, "max-age=60", "no-cache") == .validate)
        #expect(use(age: 0, lifetime: 60, "max-age=60", "max-age=0") == .validate)
        #expect(use(age: 10, lifetime: 60, "max-age=60", "max-age=5") == .validate)
        #expect(use(age: 10, lifetime: 60, "max-age=60", "min-fresh=55") == .validate)
        #expect(use(age: 70, lifetime: 60, "max-age=60", "max-stale=20") == .staleAccepted)
        #expect(use(age: 70, lifetime: 60, "max-age=60", "max-stale") == .staleAccepted)
        #expect(use(age: 70, lifetime: 60, "max-age=60, must-revalidate", "max-stale") == .validate)
        #expect(use(age: 70, lifetime: 60, "max-age=60, stale-while-revalidate=30") == .staleWhileRevalidate)
        #expect(use(age: 95, lifetime: 60, "max-age=60, stale-while-revalidate=30") == .validate)
        #expect(use(age: 10, lifetime: 60, "max-age=60", forced: true) == .validate)
        #expect(use(age: 10, lifetime: 60, "max-age=60", "nothing-to-see-here") == .fresh)
    }

    @Test("stale on error: stale-if-error and grace, never past must-revalidate, proxy-revalidate, no-cache or s-maxage")
    func staleOnError() {
        var graceless = policy
        graceless.graceSeconds = 0
        #expect(graceless.mayServeOnError(age: 70, lifetime: 60, stored: CacheDirectives(["max-age=60, stale-if-error=60"])))
        #expect(!graceless.mayServeOnError(age: 70, lifetime: 60, stored: CacheDirectives(["max-age=60"])))
        #expect(policy.mayServeOnError(age: 65, lifetime: 60, stored: CacheDirectives(["max-age=60"])))
        for forbidding in ["must-revalidate", "proxy-revalidate", "no-cache", "s-maxage=60"] {
            #expect(!policy.mayServeOnError(age: 61, lifetime: 60, stored: CacheDirectives(["max-age=60, \(forbidding), stale-if-error=60"])))
        }
    }

    @Test("request directives: Pragma only without Cache-Control")
    func pragma() {
        #expect(HTTPCachePolicy.requestDirectives(cacheControl: [], pragma: ["foo, no-cache"]).noCache)
        #expect(!HTTPCachePolicy.requestDirectives(cacheControl: ["nothing-to-see-here"], pragma: ["no-cache"]).noCache)
    }

    @Test("Vary values are compared after normalising list whitespace, and languages and codings case")
    func varyValues() {
        #expect(HTTPCachePolicy.normalizedVaryValue(name: "foo", values: ["1, 2"]) == HTTPCachePolicy.normalizedVaryValue(name: "foo", values: ["1", "2"]))
        #expect(HTTPCachePolicy.normalizedVaryValue(name: "foo", values: [" 1,2 "]) == "1,2")
        #expect(HTTPCachePolicy.normalizedVaryValue(name: "accept-language", values: ["eN, De"]) == "en,de")
        #expect(HTTPCachePolicy.normalizedVaryValue(name: "foo", values: []) == nil)
        #expect(HTTPCachePolicy.normalizedVaryValue(name: "foo", values: [""]) == "")
    }

    @Test("Location and Content-Location invalidate only on the same host")
    func sameOrigin() {
        #expect(HTTPCache.sameOriginTarget("/a/b", host: "h") == "/a/b")
        #expect(HTTPCache.sameOriginTarget("http://h/a", host: "h") == "/a")
        #expect(HTTPCache.sameOriginTarget("https://H/a?x", host: "h") == "/a?x")
        #expect(HTTPCache.sameOriginTarget("http://other/a", host: "h") == nil)
        #expect(HTTPCache.sameOriginTarget("//other/a", host: "h") == nil)
    }
}

@Suite("Shared cache: HTTP variants, tags, purge and hit-for-pass")
struct SharedHTTPCacheTests {
    let loop = EmbeddedEventLoop()

    func entry(tags: [String] = [], vary: [String] = [], values: [String?] = [], ttl: Int64 = 60) -> CachedResponse {
        CachedResponse(
            status: .ok, headers: ["date": "x"], body: ByteBuffer(string: "b"), storedAt: .now(), ttl: .seconds(ttl), keep: .seconds(60),
            keyCost: 64,
            semantics: StoredSemantics(
                directives: CacheDirectives(), lifetime: Int(ttl), correctedInitialAge: 0, etag: nil, lastModified: nil, varyNames: vary,
                varyValues: values, tags: tags
            )
        )
    }

    func fill(_ cache: SharedResponseCache, _ key: CacheKey, _ entry: CachedResponse, variant: String = "") {
        guard case .fetch = cache.lookupHTTP(key, variant: { _ in variant }, now: .now(), eventLoop: loop, usable: { _ in true }).lookup else {
            Issue.record("expected a fetch")
            return
        }
        cache.finishFetch(key, result: .success(entry), storeAs: key.variant(variant))
    }

    @Test("variants are found by the Vary names last stored, and purged together")
    func variants() {
        let cache = SharedResponseCache(configuration: CacheConfiguration())
        let primary = CacheKey(method: "GET", host: "h", target: "/v")
        fill(cache, primary, entry(vary: ["accept-language"], values: ["en"]), variant: "=en")
        var seen: [String] = []
        let (key, lookup) = cache.lookupHTTP(primary, variant: { names in seen = names; return "=en" }, now: .now(), eventLoop: loop) { _ in true }
        #expect(seen == ["accept-language"] && key.variant == "=en")
        guard case .found = lookup else { Issue.record("expected the variant"); return }
        let (_, other) = cache.lookupHTTP(primary, variant: { _ in "=de" }, now: .now(), eventLoop: loop) { _ in true }
        guard case .fetch(nil) = other else { Issue.record("expected a fetch for another variant"); return }
        cache.finishFetch(primary.variant("=de"), result: .success(entry(vary: ["accept-language"], values: ["de"])), storeAs: primary.variant("=de"))
        #expect(cache.invalidate(primary) == 2)
        #expect(cache.statistics.entries == 0)
        // With no variant left, the URL's Vary names are gone too (they would otherwise outlive every bound).
        var namesAfter: [String]?
        _ = cache.lookupHTTP(primary, variant: { names in namesAfter = names; return "" }, now: .now(), eventLoop: loop) { _ in true }
        #expect(namesAfter == [])
    }

    @Test("purge by tag goes through the tag index; soft purge marks stale and keeps the entry")
    func tags() {
        let cache = SharedResponseCache(configuration: CacheConfiguration())
        let red = entry(tags: ["red", "all"])
        fill(cache, CacheKey(method: "GET", host: "h", target: "/1"), red)
        fill(cache, CacheKey(method: "GET", host: "h", target: "/2"), entry(tags: ["blue", "all"]))
        #expect(cache.invalidate(tag: "red", soft: true) == 1)
        #expect(red.isForcedStale && !red.isFresh(at: .now()) && cache.statistics.entries == 2)
        #expect(cache.invalidate(tag: "all") == 2)
        #expect(cache.statistics.entries == 0)
        #expect(cache.invalidate(tag: "all") == 0)
    }

    @Test("a key whose answer could not be stored is passed straight on until its time is up")
    func hitForPass() {
        let cache = SharedResponseCache(configuration: CacheConfiguration())
        let key = CacheKey(method: "GET", host: "h", target: "/p")
        guard case .fetch = cache.lookupHTTP(key, variant: { _ in "" }, now: .now(), eventLoop: loop, usable: { _ in true }).lookup else { return }
        cache.finishFetch(key, result: .failure(HTTPCache.Uncacheable(reason: "no-store")), storeAs: nil, passFor: key, until: .now() + .seconds(60))
        guard case .pass = cache.lookupHTTP(key, variant: { _ in "" }, now: .now(), eventLoop: loop, usable: { _ in true }).lookup else {
            Issue.record("expected a pass")
            return
        }
        guard case .fetch = cache.lookupHTTP(key, variant: { _ in "" }, now: .now() + .seconds(61), eventLoop: loop, usable: { _ in true }).lookup else {
            Issue.record("expected a fetch once the pass is over")
            return
        }
    }

    @Test("hit-for-pass markers are bounded: a client making up URLs cannot grow them without end")
    func passMarkersBounded() {
        var configuration = CacheConfiguration()
        configuration.maxEntries = 100
        let cache = SharedResponseCache(configuration: configuration)
        for index in 0..<10_000 {
            let key = CacheKey(method: "GET", host: "h", target: "/p/\(index)?" + String(repeating: "q", count: 1000))
            _ = cache.lookupHTTP(key, variant: { _ in "" }, now: .now(), eventLoop: loop, usable: { _ in true })
            cache.finishFetch(key, result: .failure(HTTPCache.Uncacheable(reason: "private")), storeAs: nil, passFor: key, until: .now() + .seconds(120))
        }
        #expect(cache.statistics.passMarkers <= 100)
        #expect(cache.statistics.fetchesInFlight == 0)
    }

    @Test("a stale entry is kept for revalidation until its keep time, then dropped")
    func keep() {
        let cache = SharedResponseCache(configuration: CacheConfiguration())
        let key = CacheKey(method: "GET", host: "h", target: "/k")
        fill(cache, key, entry(ttl: 1))
        let later = NIODeadline.now() + .seconds(30)
        guard case .fetch(let stale?) = cache.lookupHTTP(key, variant: { _ in "" }, now: later, eventLoop: loop, usable: { $0.isFresh(at: later) }).lookup else {
            Issue.record("expected the stale entry offered for validation")
            return
        }
        #expect(!stale.isFresh(at: later))
        cache.finishFetch(key, result: .failure(HTTPCache.Uncacheable(reason: "test")), storeAs: nil)
        guard case .fetch(nil) = cache.lookupHTTP(key, variant: { _ in "" }, now: .now() + .seconds(62), eventLoop: loop, usable: { _ in true }).lookup else {
            Issue.record("expected the entry gone after its keep time")
            return
        }
    }
}
