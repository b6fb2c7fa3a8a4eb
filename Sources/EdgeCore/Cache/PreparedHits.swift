import NIOCore

/// Complete HTTP/1.1 responses for cache hits, prepared once per event loop and reused while their
/// per-request fields (`Age`, `Date`) stay the same — at most a second. A keep-alive `GET` of a hot entry is
/// then one write of a shared buffer instead of a formatted head and a copied body.
///
/// Confined to one loop (it lives in ``LoopState``). Bounded in entries and bytes (4 MiB), small bodies only; a
/// prepared response keeps its ``CachedResponse`` alive until it is replaced or pushed out.
final class PreparedHits {
    private struct Prepared {
        var entry: CachedResponse
        var age: Int64
        var date: String
        var bytes: ByteBuffer
    }

    /// Bodies larger than this are not prepared (their copy would cost more memory than it saves time).
    static let maxBodyBytes = 16 * 1024
    private static let maxEntries = 1024
    private static let maxTotalBytes = 4 * 1024 * 1024

    private var prepared: [ObjectIdentifier: Prepared] = [:]
    private var totalBytes = 0

    /// The complete keep-alive response to a `GET` hit on `entry` with these per-request values, made by
    /// `build` when there is none yet for them.
    func response(for entry: CachedResponse, age: Int64, date: String, build: () -> ByteBuffer) -> ByteBuffer {
        let id = ObjectIdentifier(entry)
        if let hit = prepared[id], hit.entry === entry, hit.age == age, hit.date == date {
            return hit.bytes
        }
        let bytes = build()
        guard entry.body.readableBytes <= Self.maxBodyBytes, !entry.isEvicted else { return bytes }
        remove(id)
        while !prepared.isEmpty, prepared.count >= Self.maxEntries || totalBytes + bytes.readableBytes > Self.maxTotalBytes {
            remove(prepared.keys[prepared.startIndex])
        }
        prepared[id] = Prepared(entry: entry, age: age, date: date, bytes: bytes)
        totalBytes += bytes.readableBytes
        return bytes
    }

    private func remove(_ id: ObjectIdentifier) {
        if let old = prepared.removeValue(forKey: id) { totalBytes -= old.bytes.readableBytes }
    }
}
