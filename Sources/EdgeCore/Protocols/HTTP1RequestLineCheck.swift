import NIOCore

/// Looks at the request line of a request the fast path does not answer itself, before NIO's HTTP/1 parser
/// (llhttp) gets it, for the three well-formed request lines llhttp rejects as malformed with a 400:
///
/// - a major version other than 1 (`HTTP/2.0`, `HTTP/0.9`, and HTTP/2's preface `PRI * HTTP/2.0` sent to a
///   port that speaks HTTP/1): `505 HTTP Version Not Supported` (RFC 9110 §15.6.6), as nginx answers;
/// - `HTTP/1.2` to `HTTP/1.9`: RFC 9112 §2.3 asks a server to process it as the highest minor version it
///   implements, so the digit is rewritten to `1` in place and the request goes on as HTTP/1.1;
/// - a method that is a valid token but not one llhttp knows (`FOO`, `get`): `501 Not Implemented` (RFC 9110
///   §9.1), where llhttp would call it malformed.
///
/// Anything that does not follow `method SP request-target SP HTTP-version CRLF` exactly is left to llhttp,
/// which answers it as before. A request line still arriving is waited for while it could become one (under the
/// request-head deadline), so the answer does not depend on how the bytes were split.
enum HTTP1RequestLineCheck {
    /// What to do with the request at the start of the buffer.
    enum Outcome: Equatable {
        /// The request line is not complete and could still become a well-formed one: wait for more bytes.
        case incomplete
        /// Give the bytes to llhttp unchanged: a request line it parses, or one that is malformed.
        case parse
        /// `HTTP/1.x` with x above 1: the digit at this offset from the reader index is to become `1`.
        case downgradeMinorVersion(at: Int)
        /// A well-formed request line whose method llhttp does not recognise: answer 501.
        case unknownMethod
        /// A well-formed request line whose major version is not 1: answer 505.
        case unsupportedVersion
    }

    /// The methods llhttp parses in requests (`HTTP_METHOD_MAP` in SwiftNIO's `CNIOLLHTTP`). `PRI` is left out:
    /// llhttp takes it only as HTTP/2's preface, which ends up as 505 here.
    static let knownMethods: Set<String> = [
        "DELETE", "GET", "HEAD", "POST", "PUT", "CONNECT", "OPTIONS", "TRACE", "COPY", "LOCK", "MKCOL", "MOVE",
        "PROPFIND", "PROPPATCH", "SEARCH", "UNLOCK", "BIND", "REBIND", "UNBIND", "ACL", "REPORT", "MKACTIVITY",
        "CHECKOUT", "MERGE", "M-SEARCH", "NOTIFY", "SUBSCRIBE", "UNSUBSCRIBE", "PATCH", "PURGE", "MKCALENDAR", "LINK",
        "UNLINK", "SOURCE", "QUERY",
    ]

    /// `HTTP-version CRLF`, with `0` standing for any digit.
    private static let versionPattern = Array("HTTP/0.0\r\n".utf8)

    /// Checks the request line at the start of `buffer`, looking at no more than `limit` bytes.
    static func check(_ buffer: ByteBuffer, limit: Int) -> Outcome {
        buffer.withUnsafeReadableBytes { check($0, limit: limit) }
    }

    private static func check(_ bytes: UnsafeRawBufferPointer, limit: Int) -> Outcome {
        let end = min(bytes.count, limit)
        // A line that has not ended within the limit is llhttp's to refuse (414 or 431 come from there).
        func more() -> Outcome { bytes.count >= limit ? .parse : .incomplete }

        var index = 0
        while index < end, RequestTargetRules.isTokenByte(bytes[index]) { index += 1 }
        let methodEnd = index
        guard index < end else { return more() }
        guard methodEnd > 0, bytes[index] == UInt8(ascii: " ") else { return .parse }
        index += 1

        let targetStart = index
        while index < end, RequestTargetRules.isTargetByte(bytes[index]) { index += 1 }
        guard index < end else { return more() }
        guard index > targetStart, bytes[index] == UInt8(ascii: " ") else { return .parse }
        index += 1

        // HTTP-version CRLF: "HTTP/" DIGIT "." DIGIT CR LF, compared as far as it has arrived.
        let versionStart = index
        let pattern = versionPattern
        for offset in pattern.indices {
            guard index < end else { return more() }
            let byte = bytes[index]
            let fits = pattern[offset] == UInt8(ascii: "0") ? isDigit(byte) : byte == pattern[offset]
            guard fits else { return .parse }
            index += 1
        }
        let major = bytes[versionStart + 5]
        let minorOffset = versionStart + 7
        guard major == UInt8(ascii: "1") else { return .unsupportedVersion }
        if bytes[minorOffset] > UInt8(ascii: "1") { return .downgradeMinorVersion(at: minorOffset) }
        let method = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[0..<methodEnd]), as: UTF8.self)
        return knownMethods.contains(method) ? .parse : .unknownMethod
    }

    private static func isDigit(_ byte: UInt8) -> Bool {
        byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9")
    }
}
