/// The rules of an HTTP cache (RFC 9111, RFC 5861, RFC 9213) as values and pure functions: whether a response
/// may be stored, how long it is fresh, how old it is, and whether a stored response may answer a request.
///
/// It sees header values as strings and numbers, never a wire format, and reads no clock: every time is passed in
/// (seconds since 1970 for dates, as HTTP dates have no finer grain). Its settings, and their defaults, are the
/// route's ``HTTPCacheConfiguration``.
struct HTTPCachePolicy: Sendable, Equatable {
    /// Heuristic freshness (RFC 9111 §4.2.2) for responses with `Last-Modified` and no explicit lifetime: this
    /// share of the time since the last modification, up to ``heuristicMaxSeconds``; `0` turns it off.
    var heuristicPercent: Int
    var heuristicMaxSeconds: Int
    /// How long past its lifetime a stored response may still answer when every upstream fails (Varnish's grace,
    /// nginx's `proxy_cache_use_stale error timeout`), on top of what `stale-if-error` allows.
    var graceSeconds: Int
    /// How long a stale response with a validator is kept to be revalidated (Varnish's `keep`).
    var keepSeconds: Int
    /// Whether responses with `Set-Cookie` are stored (and so shared); off by default, as Varnish.
    var storeSetCookie: Bool
    /// A targeted field Edge obeys before `CDN-Cache-Control` and `Cache-Control` (RFC 9213), e.g.
    /// `edge-cache-control`; lower case.
    var targetedField: String?
    /// How long a key whose response could not be stored is passed straight to the upstream, without waiting for
    /// another request's fetch (Varnish's hit-for-pass).
    var hitForPassSeconds: Int

    init(configuration: HTTPCacheConfiguration = HTTPCacheConfiguration()) {
        heuristicPercent = configuration.heuristicPercent
        heuristicMaxSeconds = configuration.heuristicMaxSeconds
        graceSeconds = configuration.graceSeconds
        keepSeconds = configuration.keepSeconds
        storeSetCookie = configuration.storeSetCookie
        targetedField = configuration.targetedField
        hitForPassSeconds = configuration.hitForPassSeconds
    }

    /// Status codes a response may be stored with on heuristic freshness alone (RFC 9110 §15.1).
    static func isHeuristicallyCacheable(_ code: Int) -> Bool {
        switch code {
        case 200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501: return true
        default: return false
        }
    }

    /// Status codes Edge understands well enough to store (`must-understand`, RFC 9111 §5.2.2.3).
    static func isUnderstood(_ code: Int) -> Bool {
        switch code {
        case 200, 203, 204, 300, 301, 302, 303, 307, 308, 404, 405, 410, 414, 451, 501: return true
        default: return false
        }
    }

    /// The directives that rule this cache's handling of a response: the first valid targeted field with a
    /// directive (Edge's own, then `CDN-Cache-Control`), else `Cache-Control` (with `Pragma: no-cache` when it is
    /// absent). `targeted` says a targeted field ruled: `Expires` is then ignored (RFC 9213 §2.2).
    func responseDirectives(_ field: (String) -> [String]) -> (directives: CacheDirectives, targeted: Bool) {
        for name in [targetedField, "cdn-cache-control"].compactMap({ $0 }) {
            let values = field(name)
            guard !values.isEmpty, let directives = CacheDirectives(structuredField: values), !directives.isEmpty else { continue }
            return (directives, true)
        }
        return (CacheDirectives(field("cache-control")), false)
    }

    /// A request's directives: `Cache-Control`, or `Pragma: no-cache` when there is no `Cache-Control`
    /// (RFC 9111 §5.4).
    static func requestDirectives(cacheControl: [String], pragma: [String]) -> CacheDirectives {
        if !cacheControl.isEmpty { return CacheDirectives(cacheControl) }
        var directives = CacheDirectives()
        if pragma.contains(where: { value in CacheDirectives.fieldNames(value).contains("no-cache") }) {
            directives.noCache = true
            directives.isEmpty = false
        }
        return directives
    }

    /// Why a response is not stored, or `nil` when it may be (RFC 9111 §3, for a shared cache).
    func refusal(
        status: Int, directives: CacheDirectives, targeted: Bool, hasExpires: Bool, request: CacheDirectives, hasAuthorization: Bool,
        hasSetCookie: Bool, vary: [String]
    ) -> String? {
        if directives.mustUnderstand {
            guard Self.isUnderstood(status) else { return "must-understand" }
        } else if directives.noStore {
            return "no-store"
        }
        if request.noStore { return "request no-store" }
        if directives.isPrivate { return "private" }
        if status == 206 || status == 304 || status < 200 { return "status" }
        if hasAuthorization && !(directives.isPublic || directives.sMaxAge != nil || directives.mustRevalidate) {
            return "authorization"
        }
        if hasSetCookie && !storeSetCookie { return "set-cookie" }
        if vary.contains("*") { return "vary *" }
        let explicit = directives.maxAge != nil || directives.sMaxAge != nil || directives.invalidMaxAge || (hasExpires && !targeted)
        guard explicit || directives.isPublic || Self.isHeuristicallyCacheable(status) || (targeted && !directives.isEmpty) else {
            return "status"
        }
        return nil
    }

    /// The freshness lifetime in seconds (RFC 9111 §4.2.1, §4.2.2): `s-maxage`, `max-age`, `Expires` − `Date`, or
    /// a share of `Date` − `Last-Modified`; `0` for an invalid `max-age` or `Expires` (stale at once).
    func freshnessLifetime(
        status: Int, directives: CacheDirectives, targeted: Bool, expires: [String], date: Int, lastModified: String?
    ) -> Int {
        if let sMaxAge = directives.sMaxAge { return sMaxAge }
        if let maxAge = directives.maxAge { return maxAge }
        if directives.invalidMaxAge { return 0 }
        if !targeted, let first = expires.first {
            guard expires.count == 1, let expiry = HTTPDate.parseStrict(first) else { return 0 }
            return max(0, expiry - date)
        }
        guard heuristicPercent > 0, directives.isPublic || Self.isHeuristicallyCacheable(status), let lastModified,
            let modified = HTTPDate.parse(lastModified), modified <= date
        else { return 0 }
        return min((date - modified) * heuristicPercent / 100, heuristicMaxSeconds)
    }

    /// An `Age` value (RFC 9111 §5.1): the first list member's delta-seconds (before any `;` parameter); `nil` (no
    /// age) when it is not one (`7200.0`, `-1`, `abc`).
    static func ageValue(_ values: [String]) -> Int? {
        guard let line = values.first, let first = line.split(separator: ",", omittingEmptySubsequences: false).first,
            let value = first.split(separator: ";", omittingEmptySubsequences: false).first
        else { return nil }
        return CacheDirectives.deltaSeconds(String(value.trimming()))
    }

    /// The corrected initial age (RFC 9111 §4.2.3) of a response received at `responseTime` for a request sent at
    /// `requestTime`, with `date` its `Date` (or the time received) and `age` its `Age`.
    static func correctedInitialAge(age: Int?, date: Int, requestTime: Int, responseTime: Int) -> Int {
        let apparentAge = max(0, responseTime - date)
        let correctedAgeValue = (age ?? 0) + max(0, responseTime - requestTime)
        return min(max(apparentAge, correctedAgeValue), CacheDirectives.deltaSecondsCap)
    }

    /// How a stored response may answer a request (RFC 9111 §4, RFC 5861).
    enum Use: Equatable {
        /// Fresh enough for the request.
        case fresh
        /// Stale, and the request accepts it (`max-stale`).
        case staleAccepted
        /// Stale within `stale-while-revalidate`: answer it, and refresh it in the background.
        case staleWhileRevalidate
        /// Must be validated (or fetched again) before it answers.
        case validate
    }

    /// Whether a response `age` seconds old with `lifetime` and its `stored` directives may answer a request
    /// with `request` directives.
    static func use(age: Int, lifetime: Int, stored: CacheDirectives, request: CacheDirectives, forcedStale: Bool) -> Use {
        if stored.noCache || request.noCache { return .validate }
        let lifetime = forcedStale ? 0 : lifetime
        // `max-age=0` (a browser's reload) asks for validation even of a response less than a second old.
        if let maxAge = request.maxAge, maxAge == 0 || age > maxAge { return .validate }
        if !forcedStale, age < lifetime {
            if let minFresh = request.minFresh, lifetime - age < minFresh { return .validate }
            return .fresh
        }
        let staleness = age - lifetime
        // must-revalidate, proxy-revalidate and s-maxage (for a shared cache) forbid serving stale (§4.2.4, §5.2.2).
        if stored.mustRevalidate || stored.proxyRevalidate || stored.sMaxAge != nil { return .validate }
        if let maxStale = request.maxStale, staleness <= maxStale { return .staleAccepted }
        if let window = stored.staleWhileRevalidate, staleness < window { return .staleWhileRevalidate }
        return .validate
    }

    /// Whether a stale response may answer when the upstream failed (or answered 5xx): `stale-if-error` or the
    /// operator's grace.
    func mayServeOnError(age: Int, lifetime: Int, stored: CacheDirectives) -> Bool {
        if stored.mustRevalidate || stored.proxyRevalidate || stored.sMaxAge != nil || stored.noCache { return false }
        let staleness = age - lifetime
        return staleness <= max(graceSeconds, stored.staleIfError ?? 0)
    }

    /// The field names of `Vary` lines, lower-cased; `*` kept as is.
    static func varyNames(_ values: [String]) -> [String] {
        values.flatMap { CacheDirectives.fieldNames($0) }
    }

    /// A request field's value as a secondary key compares it (RFC 9111 §4.1): the lines joined with `,`,
    /// whitespace around list elements removed; `Accept-Encoding` and `Accept-Language` also lower-cased. An
    /// absent field is `nil`, unlike an empty one.
    static func normalizedVaryValue(name: String, values: [String]) -> String? {
        guard !values.isEmpty else { return nil }
        let elements = values.flatMap { $0.split(separator: ",", omittingEmptySubsequences: false) }.map { element in
            element.split(separator: ";").map { $0.trimming() }.joined(separator: ";")
        }
        var joined = elements.joined(separator: ",")
        if name == "accept-encoding" || name == "accept-language" { joined = joined.lowercased() }
        return joined
    }
}
