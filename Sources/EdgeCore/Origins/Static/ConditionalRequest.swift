/// Evaluates `If-None-Match`, `If-Modified-Since` and `If-Range` for a file (RFC 9110 §13).
enum ConditionalRequest {
    /// Whether a GET/HEAD should get 304 Not Modified.
    static func notModified(ifNoneMatch: String?, ifModifiedSince: String?, etag: String, lastModified: Int) -> Bool {
        if let ifNoneMatch {
            // If-None-Match takes precedence; weak comparison.
            return ifNoneMatch.split(separator: ",").contains { candidate in
                let tag = candidate.trimming()
                return tag.utf8.elementsEqual("*".utf8) || weakTag(tag).utf8.elementsEqual(weakTag(etag[...]).utf8)
            }
        }
        if let ifModifiedSince, let since = HTTPDate.parse(ifModifiedSince) {
            return lastModified <= since
        }
        return false
    }

    /// Whether a `Range` may be honoured given `If-Range` (absent, or matching the strong ETag or the exact date).
    static func rangeApplies(ifRange: String?, etag: String, lastModified: Int) -> Bool {
        guard let ifRange else { return true }
        let value = ifRange.trimming()
        if value.utf8.first == UInt8(ascii: "\"") || value.utf8.starts(with: "W/".utf8) {
            return value.utf8.elementsEqual(etag.utf8)  // strong comparison: a weak tag never matches
        }
        return HTTPDate.parse(String(value)) == lastModified
    }

    /// The opaque tag without a `W/` (compared as bytes, as validators are: RFC 9110 §8.8.3.2).
    private static func weakTag(_ tag: Substring) -> Substring {
        tag.utf8.starts(with: "W/".utf8) ? tag[tag.utf8.index(tag.startIndex, offsetBy: 2)...] : tag
    }
}
