/// Evaluates `If-None-Match`, `If-Modified-Since` and `If-Range` for a file (RFC 9110 §13).
enum ConditionalRequest {
    /// Whether a GET/HEAD should get 304 Not Modified.
    static func notModified(ifNoneMatch: String?, ifModifiedSince: String?, etag: String, lastModified: Int) -> Bool {
        if let ifNoneMatch {
            // If-None-Match takes precedence; weak comparison.
            return ifNoneMatch.split(separator: ",").contains { candidate in
                let tag = candidate.trimming()
                return tag == "*" || weakTag(tag) == weakTag(Substring(etag))
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
        if value.hasPrefix("\"") || value.hasPrefix("W/") {
            return value == etag  // strong comparison: a weak tag never matches
        }
        return HTTPDate.parse(String(value)) == lastModified
    }

    private static func weakTag(_ tag: Substring) -> Substring {
        tag.hasPrefix("W/") ? tag.dropFirst(2) : tag
    }
}
