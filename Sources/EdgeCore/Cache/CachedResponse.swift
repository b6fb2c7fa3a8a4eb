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
    /// Bytes charged to the cache's budget for this entry (body, headers and key).
    public let cost: Int
    /// Status line and ``headers`` serialised for HTTP/1.1, so the fast path copies instead of formatting.
    let http1Head: ByteBuffer
    /// `:status` and ``headers`` as an HTTP/2 header block, so the HTTP/2 fast path only appends.
    let http2Headers: HPACKHeaders

    private let referenced = Atomic<Bool>(false)
    private let evicted = Atomic<Bool>(false)

    /// Creates an entry from a backend response; adds `Content-Length` for `body` (unless the status has none:
    /// ``ResponseHeaders/hasContentLength(_:)``).
    public init(status: HTTPResponseStatus, headers: HTTPHeaders, body: ByteBuffer, storedAt: NIODeadline, ttl: TimeAmount, keyCost: Int) {
        var headers = headers
        if ResponseHeaders.hasContentLength(status) {
            headers.replaceOrAdd(name: "content-length", value: String(body.readableBytes))
        }
        self.status = status
        self.headers = headers
        self.body = body
        self.storedAt = storedAt
        self.expiresAt = storedAt + ttl
        self.http1Head = ResponseHeaders.serializeHead(status: status, headers: headers)
        self.http2Headers = ResponseHeaders.http2Block(status: status, headers: headers)
        self.cost = body.readableBytes + keyCost + 2 * http1Head.readableBytes + 64
    }

    /// Whether the entry is still fresh at `now`.
    @inlinable
    public func isFresh(at now: NIODeadline) -> Bool { now < expiresAt }

    /// Age in whole seconds at `now`, for the `Age` header.
    public func age(at now: NIODeadline) -> Int64 { max(0, (now - storedAt).nanoseconds / 1_000_000_000) }

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
