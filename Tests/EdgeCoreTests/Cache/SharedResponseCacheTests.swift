@testable import EdgeCore
import NIOCore
import NIOEmbedded
import NIOHTTP1
import Testing

/// Builds an entry with `bodySize` bytes stored at `now`.
func makeEntry(_ body: String = "hello", at now: NIODeadline = .now(), ttl: TimeAmount = .seconds(60)) -> CachedResponse {
    CachedResponse(status: .ok, headers: ["content-type": "text/plain"], body: ByteBuffer(string: body), storedAt: now, ttl: ttl, keyCost: 0)
}

func key(_ path: String) -> CacheKey { CacheKey(method: "GET", host: "example.test", target: path) }

@Suite("Shared response cache")
struct SharedResponseCacheTests {
    let loop = EmbeddedEventLoop()

    func store(_ cache: SharedResponseCache, _ k: CacheKey, _ entry: CachedResponse) {
        guard case .fetch = cache.lookup(k, now: entry.storedAt, eventLoop: loop) else {
            Issue.record("expected to be asked to fetch \(k)")
            return
        }
        cache.finishFetch(k, result: .success(entry))
    }

    @Test("a stored response is a hit until its TTL passes")
    func ttl() {
        let cache = SharedResponseCache(configuration: .init())
        let now = NIODeadline.now()
        store(cache, key("/a"), makeEntry(at: now, ttl: .seconds(10)))
        #expect(cache.peek(key("/a"), now: now + .seconds(9)) != nil)
        #expect(cache.peek(key("/a"), now: now + .seconds(10)) == nil)
        #expect(cache.statistics.entries == 0)
    }

    @Test("concurrent misses share one fetch; waiters get its response")
    func coalescing() throws {
        let cache = SharedResponseCache(configuration: .init())
        let k = key("/slow")
        guard case .fetch = cache.lookup(k, now: .now(), eventLoop: loop) else { Issue.record("first lookup must fetch"); return }
        var waiters: [EventLoopFuture<CachedResponse>] = []
        for _ in 0..<5 {
            guard case .joined(let future) = cache.lookup(k, now: .now(), eventLoop: loop) else {
                Issue.record("later lookups must join")
                return
            }
            waiters.append(future)
        }
        #expect(cache.statistics.fetchesInFlight == 1)
        let entry = makeEntry("one fetch")
        cache.finishFetch(k, result: .success(entry))
        for waiter in waiters { #expect(try waiter.wait() === entry) }
        guard case .hit(let hit) = cache.lookup(k, now: .now(), eventLoop: loop) else { Issue.record("expected a hit"); return }
        #expect(hit === entry)
        #expect(cache.statistics.fetchesInFlight == 0)
    }

    @Test("a failed fetch fails every waiter and the next lookup fetches again")
    func failedFetch() {
        struct BackendDown: Error {}
        let cache = SharedResponseCache(configuration: .init())
        let k = key("/down")
        _ = cache.lookup(k, now: .now(), eventLoop: loop)
        guard case .joined(let waiter) = cache.lookup(k, now: .now(), eventLoop: loop) else { Issue.record("must join"); return }
        cache.finishFetch(k, result: .failure(BackendDown()))
        #expect(throws: BackendDown.self) { try waiter.wait() }
        guard case .fetch = cache.lookup(k, now: .now(), eventLoop: loop) else { Issue.record("must fetch again"); return }
    }

    @Test("the oldest entry is evicted beyond max_entries, and marked evicted")
    func evictsByCount() {
        var configuration = CacheConfiguration()
        configuration.maxEntries = 2
        let cache = SharedResponseCache(configuration: configuration)
        let first = makeEntry()
        store(cache, key("/1"), first)
        store(cache, key("/2"), makeEntry())
        store(cache, key("/3"), makeEntry())
        #expect(cache.statistics.entries == 2)
        #expect(cache.peek(key("/1"), now: .now()) == nil)
        #expect(first.isEvicted)
    }

    @Test("eviction keeps the byte budget")
    func evictsByBytes() {
        var configuration = CacheConfiguration()
        configuration.maxBytes = 3 * makeEntry(String(repeating: "x", count: 1000)).cost
        let cache = SharedResponseCache(configuration: configuration)
        for index in 0..<10 { store(cache, key("/\(index)"), makeEntry(String(repeating: "x", count: 1000))) }
        #expect(cache.statistics.entries == 3)
        #expect(cache.statistics.bytes <= configuration.maxBytes)
    }

    @Test("a recently used entry survives eviction (LRU order)")
    func lruOrder() {
        var configuration = CacheConfiguration()
        configuration.maxEntries = 2
        let cache = SharedResponseCache(configuration: configuration)
        store(cache, key("/1"), makeEntry())
        store(cache, key("/2"), makeEntry())
        #expect(cache.peek(key("/1"), now: .now()) != nil)  // /1 becomes the newest
        store(cache, key("/3"), makeEntry())
        #expect(cache.peek(key("/1"), now: .now()) != nil)
        #expect(cache.peek(key("/2"), now: .now()) == nil)
    }

    @Test("an entry served from a loop-local cache gets a second chance")
    func secondChance() {
        var configuration = CacheConfiguration()
        configuration.maxEntries = 2
        let cache = SharedResponseCache(configuration: configuration)
        let local = LoopLocalCache(capacity: 16)
        let hot = makeEntry()
        store(cache, key("/hot"), hot)
        store(cache, key("/2"), makeEntry())
        local.put(key("/hot"), hot)
        #expect(local.get(key("/hot"), now: .now()) === hot)  // marks /hot referenced without touching the shared cache
        store(cache, key("/3"), makeEntry())
        #expect(cache.peek(key("/hot"), now: .now()) != nil)
        #expect(cache.peek(key("/2"), now: .now()) == nil)
    }

    @Test("responses over max_entry_bytes are handed to waiters but not stored")
    func oversizedNotStored() throws {
        var configuration = CacheConfiguration()
        configuration.maxEntryBytes = 100
        let cache = SharedResponseCache(configuration: configuration)
        let k = key("/big")
        _ = cache.lookup(k, now: .now(), eventLoop: loop)
        guard case .joined(let waiter) = cache.lookup(k, now: .now(), eventLoop: loop) else { Issue.record("must join"); return }
        let big = makeEntry(String(repeating: "x", count: 500))
        cache.finishFetch(k, result: .success(big))
        #expect(try waiter.wait() === big)
        #expect(big.isEvicted)
        #expect(cache.statistics.entries == 0)
    }
}

@Suite("Loop-local cache")
struct LoopLocalCacheTests {
    @Test("drops entries the shared cache evicted, and stale ones")
    func dropsEvictedAndStale() {
        let local = LoopLocalCache(capacity: 4)
        let now = NIODeadline.now()
        let evicted = makeEntry(at: now)
        local.put(key("/e"), evicted)
        evicted.markEvicted()
        #expect(local.get(key("/e"), now: now) == nil)
        local.put(key("/s"), makeEntry(at: now, ttl: .seconds(1)))
        #expect(local.get(key("/s"), now: now + .seconds(2)) == nil)
        #expect(local.count == 0)
    }

    @Test("never grows past its capacity")
    func bounded() {
        let local = LoopLocalCache(capacity: 3)
        for index in 0..<10 { local.put(key("/\(index)"), makeEntry()) }
        #expect(local.count == 3)
    }
}
