import NIOCore
import NIOHPACK
import NIOHTTP1

/// Small files kept in memory by one event loop, as nginx's `open_file_cache` keeps descriptors and
/// metadata: a hot small file costs no `stat`, no `open` and no thread-pool hop.
///
/// An entry is trusted for ``validity`` (1 s) after the file was last looked at; then the next request goes to
/// the file system again and refreshes it, so changes show within a second. Bounded in entries and bytes.
final class StaticFileCache {
    /// A file's response parts.
    struct Entry {
        /// Headers common to every response for the file (type, validators, coding).
        var headers: HTTPHeaders
        var etag: String
        var lastModified: Int
        var body: ByteBuffer
        var validUntil: NIODeadline
        /// ``headers`` plus `Content-Length` of the whole body: the headers of a plain `200`.
        let wholeHeaders: HTTPHeaders
        /// The status line and ``wholeHeaders`` serialised for HTTP/1.1, so that the common case (a `GET` with no
        /// validators and no `Range`) writes a prepared response, as the response cache does.
        let wholeHTTP1Head: PreparedHead
        /// `:status` 200 and ``wholeHeaders`` as an HTTP/2 header block, for the HTTP/2 fast path.
        let wholeHTTP2Block: HPACKHeaders

        /// An entry for `body` with the file's `headers` and validators.
        init(headers: HTTPHeaders, etag: String, lastModified: Int, body: ByteBuffer, validUntil: NIODeadline) {
            self.headers = headers
            self.etag = etag
            self.lastModified = lastModified
            self.body = body
            self.validUntil = validUntil
            var whole = headers
            whole.add(name: "content-length", value: String(body.readableBytes))
            self.wholeHeaders = whole
            self.wholeHTTP1Head = PreparedHead(status: .ok, headers: whole)
            self.wholeHTTP2Block = ResponseHeaders.http2Block(status: .ok, headers: whole)
        }
    }

    /// Largest file kept in memory.
    static let maxFileBytes = 64 * 1024
    /// How long an entry is trusted without looking at the file again, by default.
    static let defaultValidity = TimeAmount.seconds(1)
    /// How long an entry is trusted without looking at the file again.
    let validity: TimeAmount
    private static let maxEntries = 4096
    private static let maxTotalBytes = 32 * 1024 * 1024

    private var entries: [String: Entry] = [:]
    private var totalBytes = 0

    init(validity: TimeAmount = StaticFileCache.defaultValidity) {
        self.validity = validity
    }

    /// A still-valid entry for `key`.
    func get(_ key: String, now: NIODeadline) -> Entry? {
        guard let entry = entries[key] else { return nil }
        guard entry.validUntil > now else {
            remove(key)
            return nil
        }
        return entry
    }

    /// Stores `entry`, making room if needed.
    func put(_ key: String, _ entry: Entry) {
        remove(key)
        while !entries.isEmpty, entries.count >= Self.maxEntries || totalBytes + entry.body.readableBytes > Self.maxTotalBytes {
            remove(entries.keys[entries.startIndex])
        }
        entries[key] = entry
        totalBytes += entry.body.readableBytes
    }

    private func remove(_ key: String) {
        if let old = entries.removeValue(forKey: key) { totalBytes -= old.body.readableBytes }
    }
}
