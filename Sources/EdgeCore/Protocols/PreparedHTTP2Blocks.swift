import NIOHPACK

/// The complete response header blocks of hot HTTP/2 cache hits — stored fields plus `x-cache`, `age`,
/// `server` and `date` — made once per event loop and reused while `age` and `date` stay the same: at most a
/// second. The HTTP/2 counterpart of ``PreparedHTTP1Responses``: a hit then hands NIOHTTP2 a block it
/// already has, instead of copying the entry's fields and appending four more for every request.
///
/// Confined to one loop (it lives in ``LoopState``). Each block is found by the ``CachedResponse`` it was
/// made from, which it keeps alive until it is replaced or pushed out; bounded in entries.
final class PreparedHTTP2Blocks {
    private struct Prepared {
        var source: CachedResponse
        var cacheStatus: String
        var age: Int64
        var date: String
        var block: HPACKHeaders
    }

    private static let maxEntries = 1024
    private var prepared: [ObjectIdentifier: Prepared] = [:]

    /// The header block for `entry` answered with `cacheStatus` at `age` and `date`, made by `build` when there
    /// is none yet for these values.
    func block(
        for entry: CachedResponse, cacheStatus: String, age: Int64, date: String, build: () -> HPACKHeaders
    ) -> HPACKHeaders {
        let id = ObjectIdentifier(entry)
        if let hit = prepared[id], hit.source === entry, hit.age == age, hit.date == date, hit.cacheStatus == cacheStatus {
            return hit.block
        }
        let block = build()
        if prepared[id] == nil, prepared.count >= Self.maxEntries {
            prepared.remove(at: prepared.startIndex)
        }
        prepared[id] = Prepared(source: entry, cacheStatus: cacheStatus, age: age, date: date, block: block)
        return block
    }
}
