public import NIOCore

/// A small cache confined to one event loop, in front of ``SharedResponseCache``: a hit takes no lock.
///
/// It holds references to entries the shared cache owns, so it adds no body bytes of its own while those
/// entries live there. An entry is dropped here as soon as it is stale or the shared cache has let go of it;
/// when full, an arbitrary entry makes room (the shared cache keeps the real recency order).
public final class LoopLocalCache {
    private var entries: [CacheKey: CachedResponse] = [:]
    private let capacity: Int

    /// Creates a local cache holding at most `capacity` entries.
    public init(capacity: Int) {
        self.capacity = capacity
        entries.reserveCapacity(min(capacity, 4096))
    }

    /// A fresh entry still held by the shared cache, or `nil`.
    public func get(_ key: CacheKey, now: NIODeadline) -> CachedResponse? {
        guard let entry = entries[key] else { return nil }
        guard entry.isFresh(at: now), !entry.isEvicted else {
            entries[key] = nil
            return nil
        }
        entry.markReferenced()
        return entry
    }

    /// Remembers `entry` unless the shared cache did not keep it.
    public func put(_ key: CacheKey, _ entry: CachedResponse) {
        guard capacity > 0, !entry.isEvicted else { return }
        if entries.count >= capacity, entries[key] == nil { entries.remove(at: entries.startIndex) }
        entries[key] = entry
    }

    /// Number of entries held.
    public var count: Int { entries.count }
}
