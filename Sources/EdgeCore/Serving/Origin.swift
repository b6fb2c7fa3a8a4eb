import NIOCore
import NIOHTTP1

/// Where a route's responses come from: the one seam every route kind sits behind.
///
/// The front ends (the HTTP/1.1 fast path and its hand-over to NIO's codec, HTTP/2 streams and the HTTP/2 fast
/// path) parse a request and give it to ``RequestDispatcher``, which applies the admission limits and the route's
/// policies and then asks the route's origin. An origin never sees a wire format: it gets an ``OriginRequest``
/// (the head's parsed values and, if it asks for one, the body as a ``BodyPipe`` with backpressure) and answers
/// with a ``Reply`` — a complete response, a stored (cached) one, a file region, or a head whose body streams
/// from a ``BodyPipe`` with optional trailers — which each front end's writer serialises.
///
/// The origins: ``DemoBackend`` (behind a ``CachingOrigin``), ``FixedResponse`` (`respond`), ``StaticFiles`` and
/// ``ProxyResponder``. A new route kind is a new type conforming here, plus its configuration section
/// (``RouteHandlerConfiguration``) and the line in ``Router`` that builds it.
///
/// Every call is made on the connection's event loop.
protocol Origin: AnyObject, Sendable {
    /// How the front ends pass the request body: as a stream from the head on, or counted and dropped before
    /// ``serve(_:context:)`` is called (the default).
    var requestBody: OriginRequestBody { get }

    /// Whether the origin answers `TRACE` itself. Edge refuses it (405) for origins that do not (the default), as
    /// nginx does: TRACE would echo credentials and cookies back (cross-site tracing).
    var answersTrace: Bool { get }

    /// The reply to a body-less `GET` or `HEAD` when it needs no waiting and starts nothing (a fixed answer, a
    /// fresh cache entry in this loop, a small file in this loop's memory), or `nil` (the default): the request
    /// then takes ``serve(_:context:)``, which must answer it the same way. The fast paths use this to answer
    /// without per-request state; the request has no policies in its way (no rate limit, no Basic auth).
    func immediateReply(to request: OriginRequest, loop: LoopState) -> Reply?

    /// The reply that holds no in-flight slot when the server or the client is at its limit: what
    /// ``immediateReply(to:loop:)`` gives, or more, looked up with a lock since this is not the hot path (the
    /// demo cache's shared entries, which another loop stored). The default is ``immediateReply(to:loop:)``.
    func replyUnderLoad(to request: OriginRequest, loop: LoopState, sharedCache: SharedResponseCache) -> Reply?

    /// Answers a request its route's policies let through, now or later on `context.eventLoop`.
    func serve(_ request: OriginRequest, context: OriginContext) -> Dispatch
}

extension Origin {
    var requestBody: OriginRequestBody { .discarded }
    var answersTrace: Bool { false }
    func immediateReply(to request: OriginRequest, loop: LoopState) -> Reply? { nil }
    func replyUnderLoad(to request: OriginRequest, loop: LoopState, sharedCache: SharedResponseCache) -> Reply? {
        immediateReply(to: request, loop: loop)
    }
}

/// How an origin takes a request body.
enum OriginRequestBody {
    /// The front end reads the body (up to `limits.max_body_bytes`), counts it, drops it, and calls the origin
    /// when it has ended (``OriginRequest/bodyBytes``), as nginx's static and `return` locations do.
    case discarded
    /// The origin is called at the head, with the body in ``OriginRequest/streamed``; the client is read no faster
    /// than the origin takes it. `maxBytes` replaces `limits.max_body_bytes` when set (a proxy route raising it for
    /// uploads).
    case streamed(maxBytes: Int?)
    /// The origin may switch the request's connection (HTTP/1.1) or stream (HTTP/2 extended CONNECT) to another
    /// protocol (``Reply/upgrade(_:)``): it is called at the head, with the head's every field in
    /// ``OriginRequest/streamed``. A handshake has no body; other requests to the route (a hub's publishers) may
    /// have one of up to `maxBodyBytes`, streamed as for ``streamed(maxBytes:)``.
    case upgrade(maxBodyBytes: Int)

    var isStreamed: Bool {
        switch self {
        case .streamed, .upgrade: true
        case .discarded: false
        }
    }
}

/// A request as an origin sees it: the values the front end parsed, the route's view of the path, and the
/// client as the policies resolved it.
struct OriginRequest {
    var method: HTTPMethod
    /// The request target in origin form, as received (path and optional query).
    var target: Substring
    /// The path in normal form (as routed), the part of it below the route's prefix (``Route/relativePath(of:)``),
    /// and the query, without its `?`.
    var path: Substring
    var relativePath: Substring
    var query: Substring?
    /// The header values policies and origins look at.
    var headers: RequestHeaderValues
    /// For a ``OriginRequestBody/discarded`` body: how many bytes it had.
    var bodyBytes: Int = 0
    /// The TCP peer, and the client after trusted proxies (``ClientAddress/resolved(forwardedFor:trusted:)``).
    var peer: ClientAddress = .unknown
    var client: ClientAddress = .unknown
    /// For a ``OriginRequestBody/streamed`` body: the whole head and the body as it arrives.
    var streamed: StreamedRequest?
    /// When the request arrived, for freshness.
    var now: NIODeadline
}

/// What an origin may use beside the request: the event loop it runs on, that loop's state (its cache front,
/// small-file cache, upstream pool), and the server's shared response cache.
struct OriginContext {
    let eventLoop: any EventLoop
    let loop: LoopState
    let sharedCache: SharedResponseCache
}
