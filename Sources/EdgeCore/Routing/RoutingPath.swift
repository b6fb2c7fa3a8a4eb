/// The form of a request path that routes are matched against, as nginx matches `location`s against its
/// normalised `$uri` rather than the bytes the client sent.
///
/// Matching raw bytes let a client reach a path through another route than its own, past that route's
/// policies: with `/private` behind Basic auth and `/` serving the same folder, `/%70rivate/secret` and
/// `//private/secret` were served by `/` without a password. The normal form makes such spellings one path:
///
/// - percent-encoded unreserved characters (`ALPHA DIGIT - . _ ~`) are decoded, as RFC 3986 §6.2.2.2 makes them
///   equivalent; other escapes stay encoded, with upper-case hex digits (§6.2.2.1), so the static-file responder
///   still decodes each byte exactly once;
/// - runs of `/` become one `/`;
/// - `.` and `..` segments are removed (RFC 3986 §5.2.4).
///
/// A `%` not followed by two hex digits, and a `..` that would climb above the root, make the path invalid: a
/// lenient reading of either would let a second decoding or a later resolution see another path.
enum RoutingPath {
    /// Why a path has no normal form.
    enum Invalid: Error, Equatable {
        /// A `%` without two hex digits after it.
        case malformedEscape
        /// A `..` segment above the root.
        case aboveRoot
        /// A byte a request target never carries raw (RFC 9110 §4.1, RFC 3986): space, a control byte, or
        /// anything above 127. HTTP/1.1's parser refuses such a target; an HTTP/2 `:path` is held to the same
        /// rule, so that both protocols answer 400 and no raw non-ASCII byte reaches routing.
        case invalidByte
    }

    /// `path` (without its query) in normal form. A path already in it — no `%`, no `//`, no segment starting
    /// with `.`: nearly every request — is returned as it is, without a copy.
    ///
    /// Route prefixes are held to the same form when the configuration is read (``suggestedPrefix(for:)``), so
    /// that a prefix and the requests meant for it compare byte for byte.
    static func normalize(_ path: Substring) -> Result<Substring, Invalid> {
        var previous: UInt8 = 0
        for byte in path.utf8 {
            guard RequestTargetRules.isTargetByte(byte) else { return .failure(.invalidByte) }
            if byte == UInt8(ascii: "%") || (previous == UInt8(ascii: "/") && (byte == UInt8(ascii: "/") || byte == UInt8(ascii: "."))) {
                return rebuild(path)
            }
            previous = byte
        }
        return .success(path)
    }

    private static func rebuild(_ path: Substring) -> Result<Substring, Invalid> {
        guard path.utf8.allSatisfy(RequestTargetRules.isTargetByte) else { return .failure(.invalidByte) }
        // 1. Decode the escapes of unreserved characters; keep the others as they are.
        var bytes: [UInt8] = []
        bytes.reserveCapacity(path.utf8.count)
        var iterator = path.utf8.makeIterator()
        while let byte = iterator.next() {
            guard byte == UInt8(ascii: "%") else {
                bytes.append(byte)
                continue
            }
            guard let high = iterator.next(), let low = iterator.next(), let h = high.hexDigitValue, let l = low.hexDigitValue else {
                return .failure(.malformedEscape)
            }
            let decoded = h << 4 | l
            if PercentEncoding.isUnreserved(decoded) {
                bytes.append(decoded)
            } else {
                bytes.append(contentsOf: [UInt8(ascii: "%"), uppercased(high), uppercased(low)])
            }
        }
        // 2. Merge slashes and resolve dot segments.
        var segments: [ArraySlice<UInt8>] = []
        var endsInSlash = false
        for segment in bytes.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false).dropFirst(bytes.first == UInt8(ascii: "/") ? 1 : 0) {
            switch segment.count {
            case 0:
                endsInSlash = true
                continue
            case 1 where segment.first == UInt8(ascii: "."):
                endsInSlash = true
                continue
            case 2 where segment.elementsEqual([UInt8(ascii: "."), UInt8(ascii: ".")]):
                guard segments.popLast() != nil else { return .failure(.aboveRoot) }
                endsInSlash = true
                continue
            default:
                segments.append(segment)
                endsInSlash = false
            }
        }
        var normal: [UInt8] = []
        normal.reserveCapacity(bytes.count)
        for segment in segments {
            normal.append(UInt8(ascii: "/"))
            normal.append(contentsOf: segment)
        }
        if endsInSlash || segments.isEmpty { normal.append(UInt8(ascii: "/")) }
        return .success(Substring(decoding: normal, as: UTF8.self))
    }

    /// A hex digit in upper case (`a`–`f` become `A`–`F`).
    private static func uppercased(_ digit: UInt8) -> UInt8 {
        digit >= UInt8(ascii: "a") && digit <= UInt8(ascii: "f") ? digit - 0x20 : digit
    }

    /// How a configured route prefix must be written for requests to match it: its bytes that a request path
    /// carries percent-encoded (space, non-ASCII, control bytes) escaped, then in normal form; or why it has
    /// no normal form.
    static func suggestedPrefix(for prefix: String) -> Result<Substring, Invalid> {
        var encoded = ""
        for byte in prefix.utf8 {
            if RequestTargetRules.isTargetByte(byte) {
                encoded.unicodeScalars.append(Unicode.Scalar(byte))
            } else {
                encoded += PercentEncoding.escape(byte)
            }
        }
        return normalize(encoded[...])
    }
}
