public import NIOCore
public import NIOHTTP1
import NIOHPACK
import Synchronization

/// An immutable response stored in the cache, shared by every event loop that serves it.
///
/// Two flags are atomics so that event-loop-local caches can read and update them without a lock:
/// ``isReferenced`` gives the entry a second chance at eviction (CLOCK), ``isEvicted`` tells local caches
/// to drop their reference.
public final class CachedResponse: Sendable {
    /// Response status.
    public let status: HTTPResponseStatus
    /// Stored headers, including `Content-Length`; `Date`, `Server`, `X-Cache` and `Age` are added per response.
    public let headers: HTTPHeaders
    /// Response body.
    public let body: ByteBuffer
    /// When the response was fetched.
    public let storedAt: NIODeadline
    /// When the entry stops being fresh.
    public let expiresAt: NIODeadline
    /// Until when the shared cache keeps the entry: ``expiresAt`` for the demo backend's entries; later for an
    /// HTTP response that may be revalidated or served stale.
    let keepUntil: NIODeadline
    /// What the HTTP cache knows of a stored HTTP response (RFC 9111); `nil` for the demo backend's entries.
    let semantics: StoredSemantics?
    /// Bytes charged to the cache's budget for this entry (body, headers and key).
    public let cost: Int
    /// Status line and ``headers`` serialised for HTTP/1.1, so the fast path copies instead of formatting.
    let http1Head: ByteBuffer
    /// `:status` and ``headers`` as an HTTP/2 header block, so the HTTP/2 fast path only appends.
    let http2Headers: HPACKHeaders

    private let referenced = Atomic<Bool>(false)
    private let evicted = Atomic<Bool>(false)
    private let forcedStale = Atomic<Bool>(false)

    /// Creates an entry from a backend response; adds `Content-Length` for `body` (unless the status has none:
    /// ``ResponseHeaders/hasContentLength(_:)``).
    public convenience init(status: HTTPResponseStatus, headers: HTTPHeaders, body: ByteBuffer, storedAt: NIODeadline, ttl: TimeAmount, keyCost: Int) {
        self.init(status: status, headers: headers, body: body, storedAt: storedAt, ttl: ttl, keep: .zero, keyCost: keyCost, semantics: nil)
    }

    /// Creates an entry fresh for `ttl` and kept `keep` longer, with an HTTP response's `semantics`.
    init(
        status: HTTPResponseStatus, headers: HTTPHeaders, body: ByteBuffer, storedAt: NIODeadline, ttl: TimeAmount, keep: TimeAmount,
        keyCost: Int, semantics: StoredSemantics?
    ) {
        var headers = headers
        if ResponseHeaders.hasContentLength(status) {
            headers.replaceOrAdd(name: "content-length", value: String(body.readableBytes))
        }
        self.status = status
        self.headers = headers
        self.body = body
        self.storedAt = storedAt
        self.expiresAt = storedAt + ttl
        self.keepUntil = storedAt + max(ttl, .zero) + keep
        self.semantics = semantics
        self.http1Head = ResponseHeaders.serializeHead(status: status, headers: headers)
        self.http2Headers = ResponseHeaders.http2Block(status: status, headers: headers)
        self.cost = body.readableBytes + keyCost + 2 * http1Head.readableBytes + 64
    }

    /// Whether the entry is still fresh at `now`.
    public func isFresh(at now: NIODeadline) -> Bool { now < expiresAt && !isForcedStale }

    /// Age in whole seconds at `now`, for the `Age` header: the time since it was stored, plus for an HTTP response
    /// its corrected initial age (RFC 9111 §4.2.3).
    public func age(at now: NIODeadline) -> Int64 {
        max(0, (now - storedAt).nanoseconds / 1_000_000_000) + Int64(semantics?.correctedInitialAge ?? 0)
    }

    /// The `Cache-Status` (RFC 9211) of an answer from this stored HTTP response whose `X-Cache` is `xCache`;
    /// `nil` for the demo backend's entries, which keep to `X-Cache`.
    func cacheStatus(_ xCache: String, at now: NIODeadline) -> String? {
        guard semantics != nil else { return nil }
        return HTTPCache.cacheStatus(self, status: HTTPCache.AnswerStatus(rawValue: xCache) ?? .hit, now: now)
    }

    /// Set by a soft purge: the entry is stale from now on, and the next request revalidates it.
    var isForcedStale: Bool { forcedStale.load(ordering: .relaxed) }
    func markStale() { forcedStale.store(true, ordering: .relaxed) }

    /// Set when a local cache served the entry since the shared cache last looked; read by CLOCK eviction.
    var isReferenced: Bool { referenced.load(ordering: .relaxed) }

    /// Marks the entry as recently used. Writes only when the flag is clear, so hot entries stay read-only.
    func markReferenced() {
        if !referenced.load(ordering: .relaxed) { referenced.store(true, ordering: .relaxed) }
    }

    /// Clears the reference flag; returns whether it was set.
    func clearReferenced() -> Bool { referenced.exchange(false, ordering: .relaxed) }

    /// True once the shared cache no longer holds the entry (evicted, expired, replaced or never stored).
    var isEvicted: Bool { evicted.load(ordering: .relaxed) }

    /// Marks the entry as no longer held by the shared cache.
    func markEvicted() { evicted.store(true, ordering: .relaxed) }
}

/// What an HTTP cache keeps beside a stored response (RFC 9111): its directives, lifetime and initial age, its
/// validators, the request fields its `Vary` names, and its purge tags.
final class StoredSemantics: Sendable {
    /// The directives that rule it (``HTTPCachePolicy/responseDirectives(_:)``).
    let directives: CacheDirectives
    /// Freshness lifetime and corrected initial age, in seconds.
    let lifetime: Int
    let correctedInitialAge: Int
    let etag: String?
    let lastModified: String?
    /// `Vary`'s field names (lower case) and the request's normalised values of them when it was stored.
    let varyNames: [String]
    let varyValues: [String?]
    /// `Surrogate-Key` and `Cache-Tag` values, for purge by tag.
    let tags: [String]

    init(
        directives: CacheDirectives, lifetime: Int, correctedInitialAge: Int, etag: String?, lastModified: String?, varyNames: [String],
        varyValues: [String?], tags: [String]
    ) {
        self.directives = directives
        self.lifetime = lifetime
        self.correctedInitialAge = correctedInitialAge
        self.etag = etag
        self.lastModified = lastModified
        self.varyNames = varyNames
        self.varyValues = varyValues
        self.tags = tags
    }

    /// Whether it can be revalidated with a conditional request.
    var hasValidator: Bool { etag != nil || lastModified != nil }
}
