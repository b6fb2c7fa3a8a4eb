import NIOCore

/// Responses for hot cache hits and small files, made once per event loop and reused while their per-request
/// fields (`Age`, `Date`) stay the same: at most a second. HTTP/1.1 keeps complete responses here (head,
/// per-request fields and body in one buffer), so that a keep-alive `GET` is one write of a shared buffer;
/// HTTP/2 keeps complete header blocks, so that NIOHTTP2 is handed a block it already has instead of a copy
/// of the entry's fields with the per-request ones appended.
///
/// Confined to one loop (it lives in ``LoopState``). Each response is found by the object it was made from
/// (a ``CachedResponse``, a file's ``PreparedHead``), which it keeps alive until it is replaced or pushed out.
/// Bounded in entries and in bytes (as `size` counts them).
final class PreparedResponses<Response> {
    /// A class, so that a lookup retains one reference instead of copying every field.
    private final class Prepared {
        let source: AnyObject
        let age: Int64?
        let date: String
        let response: Response
        let size: Int

        init(source: AnyObject, age: Int64?, date: String, response: Response, size: Int) {
            self.source = source
            self.age = age
            self.date = date
            self.response = response
            self.size = size
        }
    }

    private let maxEntries: Int
    private let maxTotalBytes: Int
    private let size: (Response) -> Int
    private var prepared: [ObjectIdentifier: Prepared] = [:]
    private var totalBytes = 0

    /// - Parameters:
    ///   - size: The bytes a response holds, for the `maxTotalBytes` bound.
    init(maxEntries: Int = 1024, maxTotalBytes: Int = 8 * 1024 * 1024, size: @escaping (Response) -> Int) {
        self.maxEntries = maxEntries
        self.maxTotalBytes = maxTotalBytes
        self.size = size
    }

    /// The response made from `source` for these per-request values (`age` is `nil` for responses without
    /// one), made by `build` when there is none yet for them.
    func response(for source: AnyObject, age: Int64?, date: String, build: () -> Response) -> Response {
        let id = ObjectIdentifier(source)
        if let hit = prepared[id], hit.source === source, hit.age == age, hit.date == date {
            return hit.response
        }
        let response = build()
        let bytes = size(response)
        remove(id)
        while !prepared.isEmpty, prepared.count >= maxEntries || totalBytes + bytes > maxTotalBytes {
            remove(prepared.keys[prepared.startIndex])
        }
        prepared[id] = Prepared(source: source, age: age, date: date, response: response, size: bytes)
        totalBytes += bytes
        return response
    }

    private func remove(_ id: ObjectIdentifier) {
        if let old = prepared.removeValue(forKey: id) { totalBytes -= old.size }
    }
}
