#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import NIOCore
import NIOPosix

/// Measurements of the shared cache alone, for `bench/cache-sim` (no network, no clock but the trace's):
/// hit ratios with and without admission on a Zipf trace with one-off URLs mixed in, and the time a purge by tag
/// takes among many entries.
public enum CacheSimulation {
    /// The hit ratio of a cache of `capacity` entries over `requests` lookups: a share `oneOff` of them for URLs
    /// asked for once (a crawler's scan), the rest drawn from `keys` URLs by a Zipf law of exponent `exponent`.
    public static func hitRatio(
        admission: Bool, capacity: Int, keys: Int, requests: Int, oneOff: Double, exponent: Double, seed: UInt64 = 42
    ) -> Double {
        var configuration = CacheConfiguration()
        configuration.maxEntries = capacity
        configuration.maxBytes = 1 << 40
        configuration.admission = admission
        let cache = SharedResponseCache(configuration: configuration)
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        // Zipf by inverse transform over the cumulative weights.
        var cumulative = [Double](repeating: 0, count: keys)
        var total = 0.0
        for rank in 0..<keys {
            total += 1 / pow(Double(rank + 1), exponent)
            cumulative[rank] = total
        }
        var random = SeededRandom(seed: seed)
        var hits = 0
        var scan = 0
        let now = NIODeadline.now()
        let body = ByteBuffer(string: "x")
        for _ in 0..<requests {
            let target: String
            if random.unit() < oneOff {
                scan += 1
                target = "/once/\(scan)"
            } else {
                let point = random.unit() * total
                var low = 0, high = keys - 1
                while low < high {
                    let middle = (low + high) / 2
                    if cumulative[middle] < point { low = middle + 1 } else { high = middle }
                }
                target = "/hot/\(low)"
            }
            let key = CacheKey(method: "GET", host: "sim", target: target)
            switch cache.lookup(key, now: now, eventLoop: loop) {
            case .hit: hits += 1
            case .joined: break
            case .fetch:
                let entry = CachedResponse(status: .ok, headers: [:], body: body, storedAt: now, ttl: .hours(1), keyCost: key.cost)
                cache.finishFetch(key, result: .success(entry))
            }
        }
        return Double(hits) / Double(requests)
    }

    /// Seconds a purge of one tag takes in a cache of `objects` entries spread over `tags` tags (so each tag has
    /// `objects / tags` entries), and how many entries it removed.
    public static func purgeByTag(objects: Int, tags: Int) -> (seconds: Double, purged: Int, filled: Int, scanSeconds: Double) {
        var configuration = CacheConfiguration()
        configuration.maxEntries = objects
        configuration.maxBytes = 1 << 40
        configuration.maxEntryBytes = 1 << 20
        configuration.admission = false
        let cache = SharedResponseCache(configuration: configuration)
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let now = NIODeadline.now()
        let body = ByteBuffer(string: "x")
        for index in 0..<objects {
            let key = CacheKey(method: "GET", host: "sim", target: "/o/\(index)")
            guard case .fetch = cache.lookupHTTP(key, variant: { _ in "" }, now: now, eventLoop: loop, usable: { _ in true }).lookup else {
                continue
            }
            let semantics = StoredSemantics(
                directives: CacheDirectives(), lifetime: 3600, correctedInitialAge: 0, etag: nil, lastModified: nil, varyNames: [],
                varyValues: [], tags: ["tag-\(index % tags)", "all-\(index % 7)"]
            )
            let entry = CachedResponse(
                status: .ok, headers: [:], body: body, storedAt: now, ttl: .hours(1), keep: .zero, keyCost: key.cost, semantics: semantics
            )
            cache.finishFetch(key, result: .success(entry), storeAs: key)
        }
        let filled = cache.statistics.entries
        let start = NIODeadline.now()
        let purged = cache.invalidate(tag: "tag-7")
        let seconds = Double((NIODeadline.now() - start).nanoseconds) / 1e9
        // For comparison, a purge by prefix, which looks at every key.
        let scanStart = NIODeadline.now()
        _ = cache.invalidate(host: "sim", prefix: "/o/12345")
        let scanSeconds = Double((NIODeadline.now() - scanStart).nanoseconds) / 1e9
        return (seconds, purged, filled, scanSeconds)
    }
}
