import NIOCore
import NIOHTTP1

/// Complete HTTP/1.1 responses — head, per-request fields and body in one buffer — for hot cache hits and
/// small files, made once per event loop and reused while their per-request fields (`Age`, `Date`) stay the
/// same: at most a second. A keep-alive `GET` is then one write of a shared buffer instead of a formatted
/// head and a copied body.
///
/// Confined to one loop (it lives in ``LoopState``). Each response is found by the object it was made from
/// (a ``CachedResponse``, a file's ``PreparedHead``), which it keeps alive until it is replaced or pushed out.
/// Bounded in entries and bytes; callers prepare only bodies up to ``maxBodyBytes``.
final class PreparedHTTP1Responses {
    private struct Prepared {
        var source: AnyObject
        var age: Int64?
        var date: String
        var bytes: ByteBuffer
    }

    /// Larger bodies are not prepared (their copy would cost more memory than it saves time).
    static let maxBodyBytes = 64 * 1024
    private static let maxEntries = 1024
    private static let maxTotalBytes = 8 * 1024 * 1024

    private var prepared: [ObjectIdentifier: Prepared] = [:]
    private var totalBytes = 0

    /// The complete response made from `source` for these per-request values (`age` is `nil` for responses
    /// without one), made by `build` when there is none yet for them.
    func response(for source: AnyObject, age: Int64?, date: String, build: () -> ByteBuffer) -> ByteBuffer {
        let id = ObjectIdentifier(source)
        if let hit = prepared[id], hit.source === source, hit.age == age, hit.date == date {
            return hit.bytes
        }
        let bytes = build()
        remove(id)
        while !prepared.isEmpty, prepared.count >= Self.maxEntries || totalBytes + bytes.readableBytes > Self.maxTotalBytes {
            remove(prepared.keys[prepared.startIndex])
        }
        prepared[id] = Prepared(source: source, age: age, date: date, bytes: bytes)
        totalBytes += bytes.readableBytes
        return bytes
    }

    private func remove(_ id: ObjectIdentifier) {
        if let old = prepared.removeValue(forKey: id) { totalBytes -= old.bytes.readableBytes }
    }
}

/// A status line and stored headers serialised for HTTP/1.1 once, ahead of time (no per-request fields, no
/// blank line). A class, so that the complete responses built from it can be found again.
final class PreparedHead: Sendable {
    /// The serialised head.
    let bytes: ByteBuffer

    /// Serialises `status` and `headers`.
    init(status: HTTPResponseStatus, headers: HTTPHeaders) {
        self.bytes = ResponseHeaders.serializeHead(status: status, headers: headers)
    }
}
