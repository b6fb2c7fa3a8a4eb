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
        /// URLs marked hit-for-pass.
        public var passMarkers: Int = 0
        /// Entries evicted to stay within the bounds, since the start.
        public var evictions: Int = 0
        /// Requests that waited for another's fetch of the same key instead of asking the origin, since the start.
        public var coalesced: Int = 0
    }

    private let state: Mutex<Storage>

    /// Creates a cache with the configured bounds.
    public init(configuration: CacheConfiguration) {
        state = Mutex(Storage(configuration: configuration))
    }

    /// Looks up `key`; on a miss either joins the fetch in flight or asks the caller to fetch.
    public func lookup(_ key: CacheKey, now: NIODeadline, eventLoop: any EventLoop) -> Lookup {
        state.withLock { storage in
            storage.recordLookup(key)
            if let entry = storage.fresh(key, now: now) { return .hit(entry) }
            if storage.pending[key] != nil {
                let promise = eventLoop.makePromise(of: CachedResponse.self)
                storage.pending[key]!.append(promise)
                storage.coalesced += 1
                return .joined(promise.futureResult)
            }
            storage.pending[key] = []
            return .fetch
        }
    }

    /// What the HTTP cache finds for a request (``lookupHTTP(_:variant:now:eventLoop:usable:)``).
    enum HTTPLookup {
        /// A stored response the caller judged usable (fresh, or stale and acceptable); `refreshing` says a fetch
        /// of the key is in flight.
        case found(CachedResponse, refreshing: Bool)
        /// Another request is fetching this key; the future completes with its result.
        case joined(EventLoopFuture<CachedResponse>)
        /// The caller fetches (validating `stale` when it has a validator) and must call
        /// ``finishFetch(_:result:storeAs:passFor:until:)``.
        case fetch(stale: CachedResponse?)
        /// The key's last response could not be stored: go to the upstream without waiting (hit-for-pass).
        case pass
    }

    /// Looks up a request's variant of `primary`: `variant` computes the secondary key from the `Vary` names last
    /// stored for it (none when nothing varies); a stored response (fresh or kept stale) is offered to `usable`.
    func lookupHTTP(
        _ primary: CacheKey, variant: ([String]) -> String, now: NIODeadline, eventLoop: any EventLoop, usable: (CachedResponse) -> Bool
    ) -> (key: CacheKey, lookup: HTTPLookup) {
        state.withLock { storage in
            let names = storage.varyNames[primary]
            let key = primary.variant(variant(names ?? []))
            storage.recordLookup(key)
            let entry = storage.kept(key, now: now)
            if let entry, usable(entry) { return (key, .found(entry, refreshing: storage.pending[key] != nil)) }
            if let until = storage.passUntil[primary] {
                if now < until { return (key, .pass) }
                storage.clearPass(primary)
            }
            if storage.pending[key] != nil {
                let promise = eventLoop.makePromise(of: CachedResponse.self)
                storage.pending[key]!.append(promise)
                storage.coalesced += 1
                return (key, .joined(promise.futureResult))
            }
            storage.pending[key] = []
            return (key, .fetch(stale: entry))
        }
    }

    /// Starts a background refresh of `key` unless a fetch of it is in flight; `true`: the caller refreshes and
    /// must call ``finishFetch(_:result:storeAs:passFor:until:)``.
    func beginRefresh(_ key: CacheKey) -> Bool {
        state.withLock { storage in
            guard storage.pending[key] == nil else { return false }
            storage.pending[key] = []
            return true
        }
    }

    /// Completes the HTTP fetch of `key`: a stored response goes in under `storeAs` (its own variant's key) and to
    /// every waiter; on failure the waiters get the error and, with `passFor`, that primary key is passed
    /// straight to the upstream `until` then.
    func finishFetch(
        _ key: CacheKey, result: Result<CachedResponse, any Error>, storeAs: CacheKey?, passFor: CacheKey? = nil, until: NIODeadline? = nil
    ) {
        let waiters = state.withLock { storage in
            let waiters = storage.pending.removeValue(forKey: key) ?? []
            if case .success(let entry) = result, let storeAs {
                let primary = storeAs.primary
                let names = entry.semantics?.varyNames ?? []
                storage.varyNames[primary] = names.isEmpty ? nil : names
                storage.clearPass(primary)
                storage.insert(storeAs, entry)
            } else if let passFor, let until {
                storage.markPass(passFor, until: until)
            }
            return waiters
        }
        for waiter in waiters { waiter.completeWith(result) }
    }

    /// Removes (or, `soft`, marks stale) every variant of `primary`; returns how many entries it touched.
    @discardableResult
    func invalidate(_ primary: CacheKey, soft: Bool = false) -> Int {
        state.withLock { storage in
            storage.clearPass(primary)
            let keys = storage.variants[primary] ?? []
            for key in keys { storage.purge(key, soft: soft) }
            return keys.count
        }
    }

    /// Removes (or marks stale) every entry whose host is `host` and target starts with `prefix`: a scan.
    func invalidate(host: String, prefix: String, soft: Bool = false) -> Int {
        state.withLock { storage in
            let keys = storage.index.keys.filter { $0.host == host && $0.target.utf8.starts(with: prefix.utf8) }
            for key in keys { storage.purge(key, soft: soft) }
            return keys.count
        }
    }

    /// Removes (or marks stale) every entry tagged `tag` (``StoredSemantics/tags``), through the tag index.
    func invalidate(tag: String, soft: Bool = false) -> Int {
        state.withLock { storage in
            let keys = soft ? storage.tagged[tag] ?? [] : storage.tagged.removeValue(forKey: tag) ?? []
            for key in keys { storage.purge(key, soft: soft) }
            return keys.count
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
        state.withLock {
            Statistics(
                entries: $0.index.count, bytes: $0.bytes, fetchesInFlight: $0.pending.count, passMarkers: $0.passUntil.count,
                evictions: $0.evictions, coalesced: $0.coalesced
            )
        }
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
    /// HTTP cache: the `Vary` names last stored for a primary key, the variants stored under it, the keys of each
    /// purge tag, and the primary keys passed to the upstream until a time (hit-for-pass).
    var varyNames: [CacheKey: [String]] = [:]
    var variants: [CacheKey: Set<CacheKey>] = [:]
    var tagged: [String: Set<CacheKey>] = [:]
    var passUntil: [CacheKey: NIODeadline] = [:]
    var passBytes = 0
    var evictions = 0
    var coalesced = 0
    /// Lookup frequencies, for admission (``CacheConfiguration/admission``); `nil` when every response is stored.
    var sketch: FrequencySketch?

    init(configuration: CacheConfiguration) {
        maxEntries = configuration.maxEntries
        maxBytes = configuration.maxBytes
        maxEntryBytes = configuration.maxEntryBytes
        sketch = configuration.admission ? FrequencySketch(capacity: configuration.maxEntries) : nil
    }

    /// Marks `key` hit-for-pass until `until`. The markers are bounded like the entries (a marker per URL a
    /// client can make up would otherwise grow without end): past `maxEntries` markers or a quarter of `maxBytes`
    /// of their keys, the expired ones go, and if that is not enough, all of them (they only save waiting).
    mutating func markPass(_ key: CacheKey, until: NIODeadline) {
        if passUntil[key] == nil {
            if passUntil.count >= max(maxEntries, 64) || passBytes + key.cost > maxBytes / 4 {
                let now = NIODeadline.now()
                passUntil = passUntil.filter { $0.value > now }
                passBytes = passUntil.keys.reduce(0) { $0 + $1.cost }
                if passUntil.count >= max(maxEntries, 64) / 2 || passBytes + key.cost > maxBytes / 8 {
                    passUntil.removeAll()
                    passBytes = 0
                }
            }
            passBytes += key.cost
        }
        passUntil[key] = until
    }

    mutating func clearPass(_ key: CacheKey) {
        if passUntil.removeValue(forKey: key) != nil { passBytes -= key.cost }
    }

    mutating func recordLookup(_ key: CacheKey) {
        sketch?.increment(key.hashValue)
    }

    mutating func fresh(_ key: CacheKey, now: NIODeadline) -> CachedResponse? {
        guard let entry = kept(key, now: now), entry.isFresh(at: now) else { return nil }
        return entry
    }

    /// The entry of `key` while it is kept (fresh, or stale and kept to be revalidated), marked recently used.
    mutating func kept(_ key: CacheKey, now: NIODeadline) -> CachedResponse? {
        guard let node = index[key] else { return nil }
        guard now < node.entry.keepUntil else {
            remove(node)
            return nil
        }
        unlink(node)
        pushNewest(node)
        return node.entry
    }

    /// Removes the entry of `key`, or with `soft` marks it stale.
    mutating func purge(_ key: CacheKey, soft: Bool) {
        guard let node = index[key] else { return }
        if soft { node.entry.markStale() } else { remove(node) }
    }

    mutating func insert(_ key: CacheKey, _ entry: CachedResponse) {
        if let old = index[key] { remove(old) }
        guard entry.keepUntil > entry.storedAt, entry.cost <= maxEntryBytes, entry.cost <= maxBytes, maxEntries > 0 else {
            entry.markEvicted()
            return
        }
        // Admission: a response that would push an entry out is stored only if its key is asked for at least as
        // often as the key of the entry that would go, so that one-off URLs cannot flush what is in demand.
        if let sketch, index.count + 1 > maxEntries || bytes + entry.cost > maxBytes, let victim = oldest,
            sketch.estimate(key.hashValue) < sketch.estimate(victim.key.hashValue)
        {
            entry.markEvicted()
            return
        }
        let node = Node(key: key, entry: entry)
        index[key] = node
        bytes += entry.cost
        if let semantics = entry.semantics {
            variants[key.primary, default: []].insert(key)
            for tag in semantics.tags { tagged[tag, default: []].insert(key) }
        }
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
                evictions += 1
            }
        }
    }

    mutating func remove(_ node: Node) {
        unlink(node)
        index[node.key] = nil
        bytes -= node.entry.cost
        node.entry.markEvicted()
        if let semantics = node.entry.semantics {
            let primary = node.key.primary
            variants[primary]?.remove(node.key)
            if variants[primary]?.isEmpty == true {
                // Nothing stored under the URL any more: its Vary names go too, or they would pile up, one per URL
                // ever stored with a Vary, past every bound on the entries.
                variants[primary] = nil
                varyNames[primary] = nil
            }
            for tag in semantics.tags {
                tagged[tag]?.remove(node.key)
                if tagged[tag]?.isEmpty == true { tagged[tag] = nil }
            }
        }
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
