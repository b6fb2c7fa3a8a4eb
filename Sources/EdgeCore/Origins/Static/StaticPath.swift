/// Turns the part of a request path after a static route's prefix into a safe relative file path.
///
/// Refused (`nil`): `..` and `.` segments (also percent-encoded), encoded slashes or backslashes (`%2f`,
/// `%5c`), raw backslashes, NUL and other control bytes, malformed percent-escapes, and invalid or overlong
/// UTF-8. Hidden segments (a leading dot, e.g. `.git`, `.env`) are reported so the caller can refuse them.
enum StaticPath {
    /// A decoded relative path.
    struct Resolved: Equatable {
        /// Segments, each non-empty and free of `/`, `\` and NUL.
        var segments: [String]
        /// Whether the request path ended in `/`.
        var trailingSlash: Bool
        /// Whether some segment starts with `.`.
        var hasHiddenSegment: Bool

        /// The segments joined with `/`.
        var relativePath: String { segments.joined(separator: "/") }
    }

    /// Decodes `path` (no query), refusing anything that could leave the root.
    static func resolve(_ path: Substring) -> Resolved? {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(path.utf8.count)
        var iterator = path.utf8.makeIterator()
        while let byte = iterator.next() {
            if byte == UInt8(ascii: "%") {
                guard let high = iterator.next()?.hexDigitValue, let low = iterator.next()?.hexDigitValue else { return nil }
                let decoded = high << 4 | low
                // An encoded separator would split segments differently from what the client sees.
                if decoded == UInt8(ascii: "/") || decoded == UInt8(ascii: "\\") { return nil }
                bytes.append(decoded)
            } else {
                if byte == UInt8(ascii: "\\") { return nil }
                bytes.append(byte)
            }
        }
        // Control bytes, including NUL, never name a file we serve.
        if bytes.contains(where: { $0 < 0x20 || $0 == 0x7F }) { return nil }
        // Strict UTF-8: rejects overlong forms (e.g. C0 AE for '.') and surrogates.
        guard String(validating: bytes, as: UTF8.self) != nil else { return nil }
        // Segments are split on the byte `/` and compared as bytes: as `Character`s, a combining mark (U+0301) or
        // a prepended mark (U+0600) would join a `/` to its neighbour and hide a segment boundary or a dot.
        var segments: [String] = []
        var hidden = false
        for segment in bytes.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: true) {
            if segment.allSatisfy({ $0 == UInt8(ascii: ".") }) && segment.count <= 2 { return nil }
            if segment.first == UInt8(ascii: ".") { hidden = true }
            segments.append(String(decoding: segment, as: UTF8.self))
        }
        return Resolved(segments: segments, trailingSlash: bytes.last == UInt8(ascii: "/"), hasHiddenSegment: hidden)
    }
}
