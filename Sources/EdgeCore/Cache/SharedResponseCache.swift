public import NIOCore
import Synchronization

/// The process-wide response cache: bounded in entries and bytes, with a TTL per entry, CLOCK (second-chance
/// LRU) eviction and request coalescing.
///
/// Event loops reach it only when their ``LoopLocalCache`` misses, so its mutex stays off the hot path.
/// Concurrent misses for one key are coalesced: the first caller gets ``Lookup/fetch`` and must call
/// ``finishFetch(_:result:)``; the others get a future that completes with that fetch's result.
public final class SharedResponseCache: Sendable {
    /// Outcome of ``lookup(_:now:eventLoop:)``.
    public enum Lookup: Sendable {
        /// A fresh entry.
        case hit(CachedResponse)
        /// Another request is fetching this key; the future completes with its result.
        case joined(EventLoopFuture<CachedResponse>)
        /// The caller fetches the key and must report the result with ``finishFetch(_:result:)``.
        case fetch
    }

    /// Entry and byte counts, for tests and metrics.
    public struct Statistics: Sendable, Equatable {
        /// Entries held.
        public var entries: Int
        /// Bytes charged.
        public var bytes: Int
        /// Keys being fetched.
        public var fetchesInFlight: Int
    }

    private let state: Mutex<Storage>

    /// Creates a cache with the configured bounds.
    public init(configuration: CacheConfiguration) {
        state = Mutex(Storage(configuration: configuration))
    }

    /// Looks up `key`; on a miss either joins the fetch in flight or asks the caller to fetch.
    public func lookup(_ key: CacheKey, now: NIODeadline, eventLoop: any EventLoop) -> Lookup {
        state.withLock { storage in
            if let entry = storage.fresh(key, now: now) { return .hit(entry) }
            if storage.pending[key] != nil {
                let promise = eventLoop.makePromise(of: CachedResponse.self)
                storage.pending[key]!.append(promise)
                return .joined(promise.futureResult)
            }
            storage.pending[key] = []
            return .fetch
        }
    }

    /// Returns a fresh entry for `key` without joining or starting a fetch.
    public func peek(_ key: CacheKey, now: NIODeadline) -> CachedResponse? {
        state.withLock { $0.fresh(key, now: now) }
    }

    /// Completes the fetch of `key`: stores a storable response and hands the result to every waiter.
    ///
    /// An entry that is not stored (zero TTL or over `max_entry_bytes`) is marked evicted so that local caches
    /// never keep it.
    public func finishFetch(_ key: CacheKey, result: Result<CachedResponse, any Error>) {
        let waiters = state.withLock { storage in
            let waiters = storage.pending.removeValue(forKey: key) ?? []
            if case .success(let entry) = result { storage.insert(key, entry) }
            return waiters
        }
        for waiter in waiters { waiter.completeWith(result) }
    }

    /// Current counts.
    public var statistics: Statistics {
        state.withLock { Statistics(entries: $0.index.count, bytes: $0.bytes, fetchesInFlight: $0.pending.count) }
    }
}

/// The mutable state behind ``SharedResponseCache``'s mutex: a dictionary, a recency list and the fetches in flight.
private struct Storage: ~Copyable {
    final class Node {
        let key: CacheKey
        let entry: CachedResponse
        var newer: Node?
        var older: Node?
        init(key: CacheKey, entry: CachedResponse) {
            self.key = key
            self.entry = entry
        }
    }

    let maxEntries: Int
    let maxBytes: Int
    let maxEntryBytes: Int
    var index: [CacheKey: Node] = [:]
    var newest: Node?
    var oldest: Node?
    var bytes = 0
    var pending: [CacheKey: [EventLoopPromise<CachedResponse>]] = [:]

    init(configuration: CacheConfiguration) {
        maxEntries = configuration.maxEntries
        maxBytes = configuration.maxBytes
        maxEntryBytes = configuration.maxEntryBytes
    }

    mutating func fresh(_ key: CacheKey, now: NIODeadline) -> CachedResponse? {
        guard let node = index[key] else { return nil }
        guard node.entry.isFresh(at: now) else {
            remove(node)
            return nil
        }
        unlink(node)
        pushNewest(node)
        return node.entry
    }

    mutating func insert(_ key: CacheKey, _ entry: CachedResponse) {
        if let old = index[key] { remove(old) }
        guard entry.expiresAt > entry.storedAt, entry.cost <= maxEntryBytes, entry.cost <= maxBytes, maxEntries > 0 else {
            entry.markEvicted()
            return
        }
        let node = Node(key: key, entry: entry)
        index[key] = node
        bytes += entry.cost
        pushNewest(node)
        evictWhileOverBudget()
    }

    /// CLOCK eviction: an entry served by a local cache since the last pass moves to the front once.
    mutating func evictWhileOverBudget() {
        var secondChances = index.count
        while index.count > maxEntries || bytes > maxBytes, let victim = oldest {
            if secondChances > 0, victim.entry.clearReferenced() {
                secondChances -= 1
                unlink(victim)
                pushNewest(victim)
            } else {
                remove(victim)
            }
        }
    }

    mutating func remove(_ node: Node) {
        unlink(node)
        index[node.key] = nil
        bytes -= node.entry.cost
        node.entry.markEvicted()
    }

    mutating func pushNewest(_ node: Node) {
        node.older = newest
        node.newer = nil
        newest?.newer = node
        newest = node
        if oldest == nil { oldest = node }
    }

    mutating func unlink(_ node: Node) {
        if let newer = node.newer { newer.older = node.older } else { newest = node.older }
        if let older = node.older { older.newer = node.newer } else { oldest = node.newer }
        node.newer = nil
        node.older = nil
    }
}
