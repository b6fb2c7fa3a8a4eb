import NIOCore
import NIOHTTP1

/// The cache in front of an origin: `GET` and `HEAD` answered from the loop's cache front or the shared cache
/// while fresh, concurrent misses for one key coalesced into one call to the origin, the answer stored for
/// ``ttl``. `X-Cache` says `HIT`, `MISS` or `PASS` (other methods, or a zero TTL).
///
/// It knows origins and ``Reply`` values, never a wire format. An origin's answer is stored when it is complete
/// (``Reply/response(_:)``); a file or a streamed answer passes through unstored.
final class CachingOrigin: Origin {
    /// The origin behind the cache.
    let origin: any Origin
    /// How long an answer is served from the cache.
    let ttl: TimeAmount

    init(_ origin: any Origin, ttl: TimeAmount) {
        self.origin = origin
        self.ttl = ttl
    }

    var requestBody: OriginRequestBody { origin.requestBody }
    var answersTrace: Bool { origin.answersTrace }

    func immediateReply(to request: OriginRequest, loop: LoopState) -> Reply? {
        guard ttl > .zero else { return nil }
        return loop.cache.get(Self.key(request), now: request.now).map { .cached($0, cacheStatus: "HIT") }
    }

    /// A fresh entry another loop stored is in the shared cache only, until a request on this loop takes it; under
    /// load it is served from there too, so that a hit never waits for (or is refused) an in-flight slot. Loops are
    /// spread connections by the kernel on the io_uring transport (`SO_REUSEPORT`), so which one stored an entry
    /// is chance.
    func replyUnderLoad(to request: OriginRequest, loop: LoopState, sharedCache: SharedResponseCache) -> Reply? {
        if let reply = immediateReply(to: request, loop: loop) { return reply }
        guard ttl > .zero else { return nil }
        let key = Self.key(request)
        guard let entry = sharedCache.peek(key, now: request.now) else { return nil }
        loop.cache.put(key, entry)
        return .cached(entry, cacheStatus: "HIT")
    }

    func serve(_ request: OriginRequest, context: OriginContext) -> Dispatch {
        guard (request.method == .GET || request.method == .HEAD) && ttl > .zero else { return pass(request, context: context) }
        let key = Self.key(request)
        let local = context.loop.cache
        if let entry = local.get(key, now: request.now) {
            return .ready(.cached(entry, cacheStatus: "HIT"))
        }
        let shared = context.sharedCache
        switch shared.lookup(key, now: request.now, eventLoop: context.eventLoop) {
        case .hit(let entry):
            local.put(key, entry)
            return .ready(.cached(entry, cacheStatus: "HIT"))
        case .joined(let future):
            let origin = self.origin
            return .pending(
                future.assumeIsolated().map { entry in
                    local.put(key, entry)
                    return Reply.cached(entry, cacheStatus: "HIT")
                }.flatMapError { error in
                    // The fetch's answer could not be stored: this request asks the origin itself.
                    guard error is Uncacheable else {
                        return context.eventLoop.makeSucceededFuture(.response(.text(.badGateway, "backend failed\n")))
                    }
                    return origin.serve(request, context: context).future(on: context.eventLoop)
                }.nonisolated()
            )
        case .fetch:
            // A HEAD fills the entry a GET would: the origin is asked for the GET.
            var fetch = request
            fetch.method = .GET
            fetch.target = key.target[...]
            let ttl = self.ttl
            func store(_ reply: Reply) -> Reply {
                guard case .response(let response) = reply else {
                    shared.finishFetch(key, result: .failure(Uncacheable()))
                    return reply
                }
                let entry = CachedResponse(
                    status: response.status, headers: response.headers, body: response.body, storedAt: .now(), ttl: ttl,
                    keyCost: key.cost
                )
                shared.finishFetch(key, result: .success(entry))
                local.put(key, entry)
                return .cached(entry, cacheStatus: "MISS")
            }
            switch origin.serve(fetch, context: context) {
            case .ready(let reply):
                return .ready(store(reply))
            case .pending(let future):
                return .pending(
                    future.assumeIsolated().map(store).nonisolated().recover { error in
                        shared.finishFetch(key, result: .failure(error))
                        return .response(.text(.badGateway, "backend failed\n"))
                    }
                )
            }
        }
    }

    /// A request the cache does not answer: to the origin, its complete answers marked `X-Cache: PASS`.
    private func pass(_ request: OriginRequest, context: OriginContext) -> Dispatch {
        switch origin.serve(request, context: context) {
        case .ready(let reply):
            return .ready(Self.markedPass(reply))
        case .pending(let future):
            return .pending(future.map(Self.markedPass).recover { _ in .response(.text(.badGateway, "backend failed\n")) })
        }
    }

    @Sendable
    private static func markedPass(_ reply: Reply) -> Reply {
        guard case .response(var response) = reply else { return reply }
        response.headers.add(name: "x-cache", value: "PASS")
        return .response(response)
    }

    /// The cache key of a `GET` or `HEAD` (which share entries).
    static func key(_ request: OriginRequest) -> CacheKey {
        CacheKey(method: "GET", host: CacheKey.normalizedHost(request.headers.host), target: String(request.target))
    }

    /// An origin's answer that cannot be stored (a file or a stream): the requests that joined the fetch ask the
    /// origin themselves.
    private struct Uncacheable: Error {}
}
