#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import NIOCore
import NIOHTTP1

/// An HTTP cache (RFC 9111) in front of an origin that answers with HTTP responses (a proxy): the upstream's
/// `Cache-Control`, `Expires`, `Vary` and validators decide what is stored and for how long.
///
/// - `GET` answers are stored as they stream to the first client (``CacheFill``), and answer later requests while
///   fresh — from the loop's cache without a lock on the fast paths. `HEAD` is answered from a stored `GET`.
/// - A stale answer with a validator is revalidated with a conditional request; a `304` refreshes it. A client's
///   own conditional request is answered `304` from a fresh answer.
/// - `stale-while-revalidate` serves the stored answer while one request refreshes it; `stale-if-error` and the
///   route's grace serve it when the upstream fails.
/// - Concurrent misses wait for one upstream request; a key whose answer could not be stored is passed straight
///   to the upstream for a while (hit-for-pass), so uncacheable URLs are never serialised.
/// - Unsafe methods that succeed invalidate the URI and their `Location`/`Content-Location` (§4.4); `PURGE`
///   removes a URL, a prefix or a tag, or marks them stale.
///
/// It knows ``Reply`` values and header fields, never a wire format. `X-Cache` says `HIT`, `MISS`, `STALE`,
/// `REVALIDATED` or `PASS`; `Cache-Status` (RFC 9211) says the same in its own terms.
final class HTTPCache: Origin {
    let origin: any Origin
    let policy: HTTPCachePolicy
    let purging: PurgeSettings
    /// Largest body stored; a larger one passes through.
    let maxEntryBytes: Int
    /// What of a request makes its key.
    let keyRules: CacheKeyRules

    /// Who may `PURGE`: clients in `from`, or requests carrying `token` (`Purge-Token` or `Authorization: Bearer`).
    struct PurgeSettings: Sendable {
        var from: [AddressRange] = []
        var token: String?
    }

    /// The cache a proxy route's `cache` configures, in front of `origin`.
    init(_ origin: any Origin, configuration: HTTPCacheConfiguration, maxEntryBytes: Int) {
        self.origin = origin
        self.policy = HTTPCachePolicy(configuration: configuration)
        self.purging = PurgeSettings(from: configuration.purgeFrom, token: configuration.purgeToken)
        self.keyRules = CacheKeyRules(configuration: configuration)
        self.maxEntryBytes = maxEntryBytes
    }

    var requestBody: OriginRequestBody { origin.requestBody }
    var answersTrace: Bool { origin.answersTrace }

    /// The cache's name in `Cache-Status`.
    static let cacheName = "edge"

    // MARK: fast path

    func immediateReply(to request: OriginRequest, loop: LoopState) -> Reply? {
        let conditional = request.headers.conditional
        // Requests with directives, validators or ranges of their own take the full path.
        guard conditional.cacheControl == nil, conditional.pragma == nil, conditional.ifNoneMatch == nil,
            conditional.ifModifiedSince == nil, conditional.range == nil, !keyRules.needsFields, let entry = loop.cache.get(key(request), now: request.now),
            entry.semantics != nil
        else { return nil }
        return .cached(entry, cacheStatus: "HIT")
    }

    // MARK: the full path

    func serve(_ request: OriginRequest, context: OriginContext) -> Dispatch {
        guard let streamed = request.streamed else { return origin.serve(request, context: context) }
        let fields = streamed.headers
        if request.method == .PURGE { return .ready(purge(request, fields: fields, context: context)) }
        guard request.method == .GET || request.method == .HEAD else { return forwardUnsafe(request, context: context) }
        let directives = HTTPCachePolicy.requestDirectives(
            cacheControl: fields.values(of: "cache-control"), pragma: fields.values(of: "pragma")
        )
        // `no-store` in a request: nothing of this exchange is stored, and it is not answered from the store either.
        if directives.noStore { return .pending(pass(request, context: context)) }
        let primary = key(request)
        let now = request.now
        // A configured key cookie given twice cannot be keyed as every upstream would read it: not cached.
        guard let extras = keyRules.extras(fields) else { return .pending(pass(request, context: context)) }
        var use = HTTPCachePolicy.Use.validate  // the verdict on the stored response the look-up offers, if any
        let (key, lookup) = context.sharedCache.lookupHTTP(
            primary, variant: { Self.variant(names: $0, fields: fields) + extras }, now: now, eventLoop: context.eventLoop
        ) { entry in
            use = Self.use(entry, fields: fields, request: directives, now: now)
            return use != .validate
        }
        switch lookup {
        case .found(let entry, let refreshing):
            if use == .staleWhileRevalidate, !refreshing, context.sharedCache.beginRefresh(key) {
                refreshInBackground(request, key: key, extras: extras, stale: entry, context: context)
            }
            if use == .fresh, let semantics = entry.semantics, semantics.varyNames.isEmpty, extras.isEmpty, !semantics.directives.noCache {
                context.loop.cache.put(primary, entry)
            }
            return .ready(answer(entry, fields: fields, status: use == .fresh ? .hit : .stale))
        case .joined(let future):
            if directives.onlyIfCached { return .ready(Self.onlyIfCachedMiss()) }
            return .pending(
                future.assumeIsolated().flatMap { entry in
                    if Self.matches(entry, fields: fields) {
                        return context.eventLoop.makeSucceededFuture(self.answer(entry, fields: fields, status: .hit))
                    }
                    return self.pass(request, context: context)
                }.flatMapError { _ in
                    // The fetch's answer was not stored: this request asks the upstream itself.
                    self.pass(request, context: context)
                }.nonisolated()
            )
        case .pass:
            return .pending(pass(request, context: context))
        case .fetch(let stale):
            if directives.onlyIfCached {
                context.sharedCache.finishFetch(key, result: .failure(Uncacheable(reason: "only-if-cached")), storeAs: nil)
                return .ready(Self.onlyIfCachedMiss())
            }
            if request.method == .HEAD {
                // A HEAD stores nothing: it goes upstream as it is, and whoever waited goes too.
                context.sharedCache.finishFetch(key, result: .failure(Uncacheable(reason: "head")), storeAs: nil)
                return .pending(pass(request, context: context))
            }
            return .pending(fetch(request, key: key, extras: extras, stale: stale, requestDirectives: directives, context: context))
        }
    }

    /// How a stored `entry` may answer a request with these `fields` and `request` directives.
    private static func use(_ entry: CachedResponse, fields: FieldBlock, request: CacheDirectives, now: NIODeadline) -> HTTPCachePolicy.Use {
        guard let semantics = entry.semantics, matches(entry, fields: fields) else { return .validate }
        return HTTPCachePolicy.use(
            age: Int(entry.age(at: now)), lifetime: semantics.lifetime, stored: semantics.directives, request: request,
            forcedStale: entry.isForcedStale
        )
    }

    /// `504` for `only-if-cached` with nothing usable stored (RFC 9111 §5.2.1.7).
    private static func onlyIfCachedMiss() -> Reply {
        var response = EdgeResponse.text(.gatewayTimeout, "not in the cache (only-if-cached)\n")
        response.headers.add(name: "cache-status", value: "\(cacheName); fwd=miss")
        return .response(response)
    }

    // MARK: answers from the store

    enum AnswerStatus: String {
        case hit = "HIT", stale = "STALE", revalidated = "REVALIDATED", miss = "MISS"
    }

    /// A stored response as the answer to a request: `304` when the client's own validators match it, else the
    /// response itself (its body omitted for `HEAD` by the front end).
    private func answer(_ entry: CachedResponse, fields: FieldBlock, status: AnswerStatus) -> Reply {
        if let range = fields.values(of: "range").first, entry.status == .ok, let partial = Self.partial(entry, range: range, fields: fields, status: status) {
            return partial
        }
        if let semantics = entry.semantics, Self.clientValidatorsMatch(semantics, fields: fields) {
            var headers = HTTPHeaders()
            for name in ["cache-control", "content-location", "etag", "expires", "vary", "last-modified"] {
                for value in entry.headers[name] { headers.add(name: name, value: value) }
            }
            let now = NIODeadline.now()
            headers.add(name: "age", value: String(entry.age(at: now)))
            headers.add(name: "x-cache", value: status.rawValue)
            headers.add(name: "cache-status", value: Self.cacheStatus(entry, status: status, now: now))
            return .response(EdgeResponse(status: .notModified, headers: headers))
        }
        return .cached(entry, cacheStatus: status.rawValue)
    }

    /// A `Range` request answered from a stored complete response (RFC 9110 §14): `206` with the one range asked
    /// for, `416` when none is satisfiable; `nil` (the whole response) for several ranges, one that does not
    /// parse, or an `If-Range` that does not match.
    private static func partial(_ entry: CachedResponse, range: String, fields: FieldBlock, status: AnswerStatus) -> Reply? {
        if let ifRange = fields.values(of: "if-range").first {
            let lastModified = entry.semantics?.lastModified.flatMap(HTTPDate.parse) ?? -1
            guard ConditionalRequest.rangeApplies(ifRange: ifRange, etag: entry.semantics?.etag ?? "\u{0}", lastModified: lastModified) else {
                return nil
            }
        }
        let size = entry.body.readableBytes
        var headers = entry.headers
        headers.remove(name: "content-length")
        headers.remove(name: "date")  // the front end writes one for every answer Edge makes
        let now = NIODeadline.now()
        headers.add(name: "age", value: String(entry.age(at: now)))
        headers.add(name: "x-cache", value: status.rawValue)
        headers.add(name: "cache-status", value: cacheStatus(entry, status: status, now: now))
        switch ByteRangeRequest.parse(range, size: size) {
        case .single(let bytes):
            headers.add(name: "content-range", value: "bytes \(bytes.lowerBound)-\(bytes.upperBound - 1)/\(size)")
            return .response(
                EdgeResponse(status: .partialContent, headers: headers, body: entry.body.getSlice(at: entry.body.readerIndex + bytes.lowerBound, length: bytes.count)!)
            )
        case .unsatisfiable:
            var refused = EdgeResponse.text(.rangeNotSatisfiable, "range not satisfiable\n")
            refused.headers.add(name: "content-range", value: "bytes */\(size)")
            return .response(refused)
        case .whole, .multiple:
            return nil
        }
    }

    /// `Cache-Status` (RFC 9211) for an answer from the store.
    static func cacheStatus(_ entry: CachedResponse, status: AnswerStatus, now: NIODeadline) -> String {
        let ttl = (entry.semantics?.lifetime ?? 0) - Int(entry.age(at: now))
        switch status {
        case .hit: return "\(cacheName); hit; ttl=\(ttl)"
        case .stale: return "\(cacheName); hit; ttl=\(ttl); detail=stale"
        case .revalidated: return "\(cacheName); fwd=stale; fwd-status=304; ttl=\(ttl)"
        case .miss: return "\(cacheName); fwd=uri-miss; stored; ttl=\(ttl)"
        }
    }

    /// Whether the client's `If-None-Match` (or, without it, `If-Modified-Since`) matches the stored response
    /// (RFC 9110 §13.1.2, §13.1.3; weak comparison).
    private static func clientValidatorsMatch(_ semantics: StoredSemantics, fields: FieldBlock) -> Bool {
        let ifNoneMatch = fields.values(of: "if-none-match")
        if !ifNoneMatch.isEmpty {
            guard let etag = semantics.etag else { return false }
            return ConditionalRequest.notModified(
                ifNoneMatch: ifNoneMatch.joined(separator: ", "), ifModifiedSince: nil, etag: etag, lastModified: 0
            )
        }
        guard let since = fields.values(of: "if-modified-since").first, let lastModified = semantics.lastModified,
            let modified = HTTPDate.parse(lastModified)
        else { return false }
        return ConditionalRequest.notModified(ifNoneMatch: nil, ifModifiedSince: since, etag: "", lastModified: modified)
    }

    // MARK: keys and variants

    /// The primary key of a request: `GET`, the host, and the path in normal form — the one the upstream gets, so
    /// that `/a/./b`, `/a//b` and `/a/%62` are one entry, purged and invalidated as one — with the query as the
    /// route's key rules say.
    func key(_ request: OriginRequest) -> CacheKey {
        CacheKey(method: "GET", host: CacheKey.normalizedHost(request.headers.host), target: keyRules.target(path: request.path, query: request.query))
    }

    /// A `Location` or `Content-Location` target as a key's target: its path in normal form.
    func keyTarget(_ target: String) -> String? {
        let mark = target.utf8.firstIndex(of: UInt8(ascii: "?"))
        guard case .success(let normal) = RoutingPath.normalize(target[..<(mark ?? target.endIndex)]) else { return nil }
        return keyRules.target(path: normal, query: mark.map { target[target.index(after: $0)...] })
    }

    /// The secondary key of a request for responses that vary on `names`.
    static func variant(names: [String], fields: FieldBlock) -> String {
        variant(values: names.map { HTTPCachePolicy.normalizedVaryValue(name: $0, values: fields.values(of: $0)) })
    }

    static func variant(values: [String?]) -> String {
        values.map { $0.map { "=" + $0 } ?? "-" }.joined(separator: "\u{1}")
    }

    /// The key a response stored for `key` goes under: its own `Vary` values (which the look-up may not have
    /// known) and the request's key fields and cookies.
    static func storageKey(_ key: CacheKey, _ semantics: StoredSemantics, extras: String) -> CacheKey {
        key.primary.variant(variant(values: semantics.varyValues) + extras)
    }

    /// Whether a stored response's `Vary` fields have the values this request has (RFC 9111 §4.1).
    static func matches(_ entry: CachedResponse, fields: FieldBlock) -> Bool {
        guard let semantics = entry.semantics else { return false }
        for (name, stored) in zip(semantics.varyNames, semantics.varyValues) {
            if HTTPCachePolicy.normalizedVaryValue(name: name, values: fields.values(of: name)) != stored { return false }
        }
        return true
    }

    // MARK: going upstream

    /// Why a fetch's answer was not stored.
    struct Uncacheable: Error {
        var reason: String
    }

    /// A request the cache does not answer and whose answer it does not store.
    private func pass(_ request: OriginRequest, context: OriginContext) -> EventLoopFuture<Reply> {
        origin.serve(request, context: context).future(on: context.eventLoop).map { reply in
            Self.marked(reply, xCache: "PASS", cacheStatus: "\(Self.cacheName); fwd=bypass")
        }
    }

    /// `reply` with `X-Cache` and `Cache-Status` added (a stored response gets them from the front end).
    static func marked(_ reply: Reply, xCache: String, cacheStatus: String) -> Reply {
        switch reply {
        case .response(var response):
            response.headers.add(name: "x-cache", value: xCache)
            response.headers.add(name: "cache-status", value: cacheStatus)
            return .response(response)
        case .stream(var streamed):
            streamed.headers.add(name: "x-cache", value: xCache)
            streamed.headers.add(name: "cache-status", value: cacheStatus)
            return .stream(streamed)
        case .cached, .file, .upgrade:
            return reply
        }
    }

    /// Fetches `key` (validating `stale` when it has a validator), stores what may be stored, and hands the result
    /// to the requests that waited.
    /// `extras` is the request's part of the secondary key from the route's key fields and cookies.
    private func fetch(
        _ request: OriginRequest, key: CacheKey, extras: String, stale: CachedResponse?, requestDirectives: CacheDirectives,
        context: OriginContext, background: Bool = false
    ) -> EventLoopFuture<Reply> {
        var upstream = request
        let validating = stale?.semantics?.hasValidator == true ? stale : nil
        if let semantics = validating?.semantics {
            var headers = request.streamed!.headers
            headers.remove(names: Self.conditionalFieldNames)
            if let etag = semantics.etag { headers.add(name: "if-none-match", value: etag) }
            if let lastModified = semantics.lastModified { headers.add(name: "if-modified-since", value: lastModified) }
            upstream.streamed!.headers = headers
        }
        let fields = request.streamed!.headers
        let requestTime = Int(time(nil))
        let shared = context.sharedCache
        let policy = self.policy
        let eventLoop = context.eventLoop
        return origin.serve(upstream, context: context).future(on: eventLoop).assumeIsolated().flatMapThrowing { reply -> Reply in
            let responseTime = Int(time(nil))
            let (status, responseFields, date, body): (HTTPResponseStatus, FieldBlock, String?, BodyPipe?)
            switch reply {
            case .stream(let streamed): (status, responseFields, date, body) = (streamed.status, streamed.headers, streamed.date, streamed.body)
            case .response:
                // An answer Edge made (502, 503, 504): the upstream failed.
                shared.finishFetch(key, result: .failure(Uncacheable(reason: "upstream failed")), storeAs: nil)
                if let stale, policy.mayServeOnError(stale) { return self.answer(stale, fields: fields, status: .stale) }
                return Self.marked(reply, xCache: "MISS", cacheStatus: "\(Self.cacheName); fwd=uri-miss; detail=upstream-failed")
            case .cached, .file, .upgrade:
                shared.finishFetch(key, result: .failure(Uncacheable(reason: "not an HTTP response")), storeAs: nil)
                return reply
            }
            // A 304 to the cache's own validation refreshes the stored response (RFC 9111 §4.3.4).
            if status == .notModified, let validating, let semantics = validating.semantics {
                body?.cancel(BodyPipe.Broken(description: "not read"))
                // A 304 whose strong validator is not the stored one does not stand for it (§4.3.4): the stored
                // response goes, and the request is fetched again without validators.
                if let stored = semantics.etag, let sent = responseFields.values(of: "etag").first, sent != stored,
                    !stored.hasPrefix("W/"), !sent.hasPrefix("W/")
                {
                    shared.invalidate(key.primary)
                    throw RefetchUnconditionally()
                }
                let refreshed = self.refreshed(
                    validating, semantics: semantics, with: responseFields, date: date, requestTime: requestTime, responseTime: responseTime,
                    fields: fields
                )
                let storeAs = Self.storageKey(key, refreshed.semantics, extras: extras)
                let updated = refreshed.entry(body: validating.body, key: storeAs)
                shared.finishFetch(key, result: .success(updated), storeAs: storeAs)
                return self.answer(updated, fields: fields, status: .revalidated)
            }
            if status.code >= 500, let stale, policy.mayServeOnError(stale) {
                body?.cancel(BodyPipe.Broken(description: "not read"))
                shared.finishFetch(key, result: .failure(Uncacheable(reason: "upstream error")), storeAs: nil)
                return self.answer(stale, fields: fields, status: .stale)
            }
            let response = StreamedResponse(status: status, headers: responseFields, body: body, date: date)
            switch self.storable(response, requestFields: fields, requestDirectives: requestDirectives, requestTime: requestTime, responseTime: responseTime) {
            case .failure(let refusal):
                // Only a refusal the response itself is the cause of marks the URL hit-for-pass: not this request's
                // no-store or Authorization, nor the 304 or 206 its own validators or Range asked for.
                let byResponse = !requestDirectives.noStore && refusal.reason != "authorization" && status != .notModified
                    && status != .partialContent
                shared.finishFetch(
                    key, result: .failure(refusal), storeAs: nil, passFor: byResponse ? key.primary : nil,
                    until: .now() + .seconds(Int64(policy.hitForPassSeconds))
                )
                return Self.marked(.stream(response), xCache: "MISS", cacheStatus: "\(Self.cacheName); fwd=uri-miss; detail=\(refusal.reason.replacingOccurrences(of: " ", with: "-"))")
            case .success(let stored):
                let storeAs = Self.storageKey(key, stored.semantics, extras: extras)
                let cacheStatus = "\(Self.cacheName); fwd=uri-miss; stored"
                guard let body else {
                    let entry = stored.entry(body: ByteBuffer(), key: storeAs)
                    shared.finishFetch(key, result: .success(entry), storeAs: storeAs)
                    return background ? .cached(entry, cacheStatus: "MISS") : self.answer(entry, fields: fields, status: .miss)
                }
                // Stored as it streams to this client; the waiters get it when it is complete.
                let client = CacheFill.start(source: body, limit: self.maxEntryBytes, eventLoop: eventLoop) { result in
                    switch result {
                    case .success(let bytes): shared.finishFetch(key, result: .success(stored.entry(body: bytes, key: storeAs)), storeAs: storeAs)
                    case .failure(let error): shared.finishFetch(key, result: .failure(error), storeAs: nil)
                    }
                }
                var headers = responseFields
                // Time spent getting it counts (RFC 9111 §4.2.3): the first client is told its age too.
                if stored.semantics.correctedInitialAge > 0, !headers.contains(name: "age") {
                    headers.add(name: "age", value: String(stored.semantics.correctedInitialAge))
                }
                headers.add(name: "x-cache", value: "MISS")
                headers.add(name: "cache-status", value: cacheStatus)
                return .stream(StreamedResponse(status: status, headers: headers, body: client, date: date))
            }
        }.flatMapError { error -> EventLoopFuture<Reply> in
            guard error is RefetchUnconditionally else { return eventLoop.makeFailedFuture(error) }
            return self.fetch(
                request, key: key, extras: extras, stale: nil, requestDirectives: requestDirectives, context: context, background: background
            )
        }.flatMapErrorThrowing { error in
            shared.finishFetch(key, result: .failure(error), storeAs: nil)
            if let stale, policy.mayServeOnError(stale) { return self.answer(stale, fields: fields, status: .stale) }
            throw error
        }.nonisolated()
    }

    /// A validation's 304 named another strong validator than the stored one.
    private struct RefetchUnconditionally: Error {}

    /// Refreshes a stale answer for later requests while this one is answered from the store
    /// (`stale-while-revalidate`): the refresh's body is read to the end by nobody but the cache.
    private func refreshInBackground(_ request: OriginRequest, key: CacheKey, extras: String, stale: CachedResponse, context: OriginContext) {
        var refresh = request
        refresh.method = .GET
        // Nothing of the client's request beyond its fields: its cancellation must not stop the refresh.
        refresh.streamed?.cancellation = RequestCancellation()
        fetch(refresh, key: key, extras: extras, stale: stale, requestDirectives: CacheDirectives(), context: context, background: true)
            .whenSuccess { reply in
                // Nobody writes this answer: read its body so that it is stored.
                if case .stream(let streamed) = reply, let body = streamed.body { CacheFill.drain(body) }
            }
    }

    /// Validators and caching fields a client's request may carry that the cache replaces with its own when it
    /// validates a stored response.
    private static let conditionalFieldNames: [[UInt8]] = [
        "if-none-match", "if-modified-since", "if-match", "if-unmodified-since", "if-range", "range",
    ].map { Array($0.utf8) }

    // MARK: storing

    /// What is needed to store a response once its body is complete.
    struct Storable {
        var status: HTTPResponseStatus
        var headers: HTTPHeaders
        var semantics: StoredSemantics
        var ttl: TimeAmount
        var keep: TimeAmount

        /// The entry, its bytes charged with those of the `key` it is stored under.
        func entry(body: ByteBuffer, key: CacheKey) -> CachedResponse {
            CachedResponse(
                status: status, headers: headers, body: body, storedAt: .now(), ttl: ttl, keep: keep, keyCost: key.cost,
                semantics: semantics
            )
        }
    }

    /// Whether `response` may be stored for a request with `requestFields`; if so, what to store.
    private func storable(
        _ response: StreamedResponse, requestFields: FieldBlock, requestDirectives: CacheDirectives, requestTime: Int, responseTime: Int
    ) -> Result<Storable, Uncacheable> {
        let fields = response.headers
        let (directives, targeted) = policy.responseDirectives { fields.values(of: $0) }
        let expires = fields.values(of: "expires")
        let vary = HTTPCachePolicy.varyNames(fields.values(of: "vary"))
        if let refusal = policy.refusal(
            status: Int(response.status.code), directives: directives, targeted: targeted, hasExpires: !expires.isEmpty,
            request: requestDirectives, hasAuthorization: !requestFields.values(of: "authorization").isEmpty,
            hasSetCookie: fields.contains(name: "set-cookie"), vary: vary
        ) {
            return .failure(Uncacheable(reason: refusal))
        }
        return .success(
            makeStorable(
                status: response.status, fields: fields, date: response.date, directives: directives, targeted: targeted, expires: expires,
                vary: vary, requestFields: requestFields, requestTime: requestTime, responseTime: responseTime
            )
        )
    }

    private func makeStorable(
        status: HTTPResponseStatus, fields: FieldBlock, date: String?, directives: CacheDirectives, targeted: Bool, expires: [String],
        vary: [String], requestFields: FieldBlock, requestTime: Int, responseTime: Int
    ) -> Storable {
        let parsedDate = date.flatMap(HTTPDate.parseStrict)
        let dateValue = parsedDate ?? responseTime
        let lastModified = fields.values(of: "last-modified").first
        let lifetime = policy.freshnessLifetime(
            status: Int(status.code), directives: directives, targeted: targeted, expires: expires, date: dateValue,
            lastModified: lastModified
        )
        let age = HTTPCachePolicy.correctedInitialAge(
            age: HTTPCachePolicy.ageValue(fields.values(of: "age")), date: dateValue, requestTime: requestTime, responseTime: responseTime
        )
        let tags = Self.surrogateKeys(fields) + fields.values(of: "cache-tag").flatMap { $0.split(separator: ",").map { String($0.trimming()) } }
        let semantics = StoredSemantics(
            directives: directives, lifetime: lifetime, correctedInitialAge: age, etag: fields.values(of: "etag").first,
            lastModified: lastModified, varyNames: vary,
            varyValues: vary.map { HTTPCachePolicy.normalizedVaryValue(name: $0, values: requestFields.values(of: $0)) },
            tags: tags.filter { !$0.isEmpty }
        )
        var headers = fields
        headers.remove(names: Self.unstoredFieldNames)
        // `no-cache="a, b"`: those fields may not answer without revalidation, so they are not stored (§5.2.2.4).
        headers.remove(names: directives.noCacheFields.map { Array($0.utf8) })
        var stored = headers.headers
        stored.add(name: "date", value: parsedDate != nil ? date! : HTTPDateHeader.format(time_t(responseTime)))
        let ttlSeconds = lifetime - age
        var keepSeconds = max(policy.graceSeconds, directives.staleWhileRevalidate ?? 0, directives.staleIfError ?? 0)
        if semantics.hasValidator { keepSeconds = max(keepSeconds, policy.keepSeconds) }
        return Storable(
            status: status, headers: stored, semantics: semantics, ttl: .seconds(Int64(ttlSeconds)), keep: .seconds(Int64(keepSeconds))
        )
    }

    /// Fields of an upstream's answer that are not stored: `Age` (the cache works it out), and what Edge adds per
    /// answer.
    private static let unstoredFieldNames: [[UInt8]] = ["age", "x-cache", "cache-status"].map { Array($0.utf8) }

    /// Fields a `304` must not change in a stored response: its framing (a `304`'s `Content-Length` is that of a
    /// body it does not carry). Every other field the `304` carries replaces the stored one (RFC 9111 §3.2).
    private static let keptOn304: Set<String> = ["content-length", "transfer-encoding"]

    /// What to store for `stale` with the fields of the `304` that validated it (RFC 9111 §4.3.4), fresh again from
    /// `responseTime`; its body is the stored one.
    private func refreshed(
        _ stale: CachedResponse, semantics: StoredSemantics, with notModified: FieldBlock, date: String?, requestTime: Int,
        responseTime: Int, fields: FieldBlock
    ) -> Storable {
        var merged = FieldBlock(stale.headers)
        let updates = notModified.headers
        var replaced = Set<String>()
        for (name, _) in updates {
            let lower = name.lowercased()
            guard !Self.keptOn304.contains(lower), !["age", "x-cache", "cache-status", "via"].contains(lower), replaced.insert(lower).inserted else {
                continue
            }
            merged.remove(name: lower)
            for value in updates[lower] { merged.add(name: lower, value: value) }
        }
        merged.remove(name: "date")
        let (directives, targeted) = policy.responseDirectives { merged.values(of: $0) }
        let storedDate = date ?? stale.headers.first(name: "date")
        return makeStorable(
            status: stale.status, fields: merged, date: storedDate, directives: directives, targeted: targeted,
            expires: merged.values(of: "expires"), vary: semantics.varyNames, requestFields: fields, requestTime: requestTime,
            responseTime: responseTime
        )
    }

    // MARK: invalidation and purge

    /// An unsafe method: forwarded; when it succeeds the stored answers for its URI and for the URIs its answer's
    /// `Location` and `Content-Location` name on the same host are invalidated (RFC 9111 §4.4).
    private func forwardUnsafe(_ request: OriginRequest, context: OriginContext) -> Dispatch {
        let safe = request.method == .OPTIONS || request.method == .TRACE
        let primary = key(request)
        let shared = context.sharedCache
        return .pending(
            origin.serve(request, context: context).future(on: context.eventLoop).map { reply in
                guard !safe else { return Self.marked(reply, xCache: "PASS", cacheStatus: "\(Self.cacheName); fwd=method") }
                let (status, locations): (Int, [String])
                switch reply {
                case .stream(let streamed):
                    status = Int(streamed.status.code)
                    locations = streamed.headers.values(of: "location") + streamed.headers.values(of: "content-location")
                case .response(let response):
                    status = Int(response.status.code)
                    locations = response.headers["location"] + response.headers["content-location"]
                case .cached, .file, .upgrade:
                    return reply
                }
                if (200..<400).contains(status) {
                    shared.invalidate(primary)
                    for location in locations {
                        if let target = Self.sameOriginTarget(location, host: primary.host), let normal = self.keyTarget(target) {
                            shared.invalidate(CacheKey(method: "GET", host: primary.host, target: normal))
                        }
                    }
                }
                return Self.marked(reply, xCache: "PASS", cacheStatus: "\(Self.cacheName); fwd=method")
            }
        )
    }

    /// The target of a `Location` or `Content-Location` on `host`: a path, or an absolute URI naming `host`.
    static func sameOriginTarget(_ location: String, host: String) -> String? {
        let value = location.trimming()
        if value.hasPrefix("/") && !value.hasPrefix("//") { return String(value) }
        for scheme in ["http://", "https://"] where value.lowercased().hasPrefix(scheme) {
            let rest = value.dropFirst(scheme.count)
            let slash = rest.firstIndex(of: "/") ?? rest.endIndex
            guard rest[..<slash].lowercased() == host else { return nil }
            return slash == rest.endIndex ? "/" : String(rest[slash...])
        }
        return nil
    }

    /// `PURGE`: the URL (every variant), the URLs under it when the target ends in `*`, or the tags a
    /// `Surrogate-Key` request field names; `Soft-Purge: 1` marks them stale instead of removing them.
    private func purge(_ request: OriginRequest, fields: FieldBlock, context: OriginContext) -> Reply {
        guard !purging.from.isEmpty || purging.token != nil else {
            var response = EdgeResponse.text(.methodNotAllowed, "PURGE is not enabled on this route\n")
            response.headers.add(name: "allow", value: "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS")
            return .response(response)
        }
        guard purgeAllowed(request, fields: fields) else { return .response(.text(.forbidden, "PURGE is not allowed from here\n")) }
        let soft = fields.values(of: "soft-purge").contains { $0.trimming() == "1" }
        let shared = context.sharedCache
        let primary = key(request)
        let count: Int
        let tags = Self.surrogateKeys(fields)
        if !tags.isEmpty {
            count = tags.reduce(0) { $0 + shared.invalidate(tag: $1, soft: soft) }
        } else if primary.target.hasSuffix("*") {
            count = shared.invalidate(host: primary.host, prefix: String(primary.target.dropLast()), soft: soft)
        } else {
            count = shared.invalidate(primary, soft: soft)
        }
        var response = EdgeResponse(status: .ok, headers: ["content-type": "application/json"])
        response.body = ByteBuffer(string: "{\"purged\":\(count),\"soft\":\(soft)}\n")
        return .response(response)
    }

    /// The tags a `Surrogate-Key` field names (space-separated, as Fastly's), in a response or a `PURGE`.
    private static func surrogateKeys(_ fields: FieldBlock) -> [String] {
        fields.values(of: "surrogate-key").flatMap { $0.split(separator: " ").map(String.init) }
    }

    private func purgeAllowed(_ request: OriginRequest, fields: FieldBlock) -> Bool {
        if purging.from.contains(where: { $0.contains(request.client) }) { return true }
        guard let token = purging.token else { return false }
        let offered = fields.values(of: "purge-token").first.map { String($0.trimming()) }
            ?? fields.values(of: "authorization").first.flatMap { value -> String? in
                let parts = value.split(separator: " ", maxSplits: 1)
                guard parts.count == 2, parts[0].lowercased() == "bearer" else { return nil }
                return String(parts[1].trimming())
            }
        guard let offered else { return false }
        // Compared in constant time, so a wrong token's timing says nothing of the right one.
        let (a, b) = (Array(offered.utf8), Array(token.utf8))
        guard a.count == b.count else { return false }
        return zip(a, b).reduce(UInt8(0)) { $0 | ($1.0 ^ $1.1) } == 0
    }
}

extension HTTPCachePolicy {
    /// Whether a stale `entry` may answer when the upstream failed.
    func mayServeOnError(_ entry: CachedResponse) -> Bool {
        guard let semantics = entry.semantics else { return false }
        return mayServeOnError(age: Int(entry.age(at: .now())), lifetime: semantics.lifetime, stored: semantics.directives)
    }
}
