import NIOCore
import NIOHTTP1

/// A strict scanner for the common case of HTTP/1.1: a `GET` or `HEAD` request in origin form without a body.
///
/// It accepts only heads it understands completely and answers ``Outcome/fallback`` for everything else
/// (bodies, `Transfer-Encoding`, `Expect`, `Upgrade`, obs-fold, bare LF, non-ASCII, missing or duplicate
/// `Host`, …), which
/// then go to NIO's full HTTP/1 parser (llhttp). It never rejects a request by itself, so it cannot be
/// stricter or laxer than the full parser in what the server accepts: it only decides who parses.
enum HTTP1RequestScanner {
    /// A request the fast path can answer.
    struct Request {
        /// `GET` or `HEAD`.
        var method: HTTPMethod
        /// Path and query.
        var target: String
        /// `Host`, empty when absent.
        var host: String
        /// `Authorization`, if present.
        var authorization: String?
        /// `X-Forwarded-For`, if present.
        var forwardedFor: String?
        /// `Range`, `If-Range`, `If-None-Match`, `If-Modified-Since`, for static files.
        var conditional: StaticRequestHeaders
        /// Whether the connection stays open after the response.
        var keepAlive: Bool
        /// `HTTP/1.0` request (keep-alive must then be confirmed in the response).
        var isHTTP10: Bool
        /// Number of header fields.
        var fieldCount: Int
    }

    /// What the scanner found at the start of the buffer.
    enum Outcome {
        /// The head is not complete yet.
        case incomplete
        /// Not a simple request: hand the bytes to the full parser.
        case fallback
        /// A simple request whose head is `headLength` bytes long.
        case simple(Request, headLength: Int)
    }

    /// Most header fields the fast path takes; more go to the full parser.
    static let maxHeaderFields = 64

    /// Scans the head at the start of `buffer`, looking at no more than `limit` bytes.
    static func scan(_ buffer: ByteBuffer, limit: Int) -> Outcome {
        buffer.withUnsafeReadableBytes { bytes in
            scan(bytes, limit: limit)
        }
    }

    private static func scan(_ bytes: UnsafeRawBufferPointer, limit: Int) -> Outcome {
        let end = min(bytes.count, limit)
        var index = 0

        // Request line: GET|HEAD SP origin-form SP HTTP/1.x CRLF
        let method: HTTPMethod
        if matches(bytes, at: 0, "GET ") {
            method = .GET
            index = 4
        } else if matches(bytes, at: 0, "HEAD ") {
            method = .HEAD
            index = 5
        } else {
            return bytes.count < 5 && isPrefixOfMethod(bytes) ? .incomplete : .fallback
        }
        let targetStart = index
        guard index < end else { return bytes.count >= limit ? .fallback : .incomplete }
        guard bytes[index] == UInt8(ascii: "/") else { return .fallback }
        while index < end, bytes[index] != UInt8(ascii: " ") {
            guard RequestTargetRules.isTargetByte(bytes[index]) else { return .fallback }
            index += 1
        }
        guard index < end else { return bytes.count >= limit ? .fallback : .incomplete }
        let targetEnd = index
        index += 1
        guard index + 10 <= end else { return bytes.count >= limit ? .fallback : .incomplete }
        let isHTTP10: Bool
        if matches(bytes, at: index, "HTTP/1.1\r\n") {
            isHTTP10 = false
        } else if matches(bytes, at: index, "HTTP/1.0\r\n") {
            isHTTP10 = true
        } else {
            return .fallback
        }
        index += 10

        // Header fields: token ":" OWS visible-or-space* OWS CRLF, up to an empty line.
        var hostRange: Range<Int>?
        var authorizationRange: Range<Int>?
        var forwardedForRange: Range<Int>?
        var rangeRange: Range<Int>?
        var ifRangeRange: Range<Int>?
        var ifNoneMatchRange: Range<Int>?
        var ifModifiedSinceRange: Range<Int>?
        var acceptEncodingRange: Range<Int>?
        var cacheControlRange: Range<Int>?
        var pragmaRange: Range<Int>?
        var keepAlive = !isHTTP10
        var fields = 0
        while true {
            guard index + 1 < end else { return bytes.count >= limit ? .fallback : .incomplete }
            if bytes[index] == UInt8(ascii: "\r") {
                guard bytes[index + 1] == UInt8(ascii: "\n") else { return .fallback }
                index += 2
                break
            }
            fields += 1
            guard fields <= maxHeaderFields else { return .fallback }
            let nameStart = index
            while index < end, bytes[index] != UInt8(ascii: ":") {
                guard RequestTargetRules.isTokenByte(bytes[index]) else { return .fallback }
                index += 1
            }
            guard index < end else { return bytes.count >= limit ? .fallback : .incomplete }
            let nameEnd = index
            guard nameEnd > nameStart else { return .fallback }
            index += 1
            while index < end, bytes[index] == UInt8(ascii: " ") || bytes[index] == UInt8(ascii: "\t") { index += 1 }
            let valueStart = index
            while index < end, bytes[index] != UInt8(ascii: "\r") {
                let byte = bytes[index]
                guard (byte >= 0x20 && byte < 0x7F) || byte == UInt8(ascii: "\t") else { return .fallback }
                index += 1
            }
            guard index + 1 < end else { return bytes.count >= limit ? .fallback : .incomplete }
            guard bytes[index + 1] == UInt8(ascii: "\n") else { return .fallback }
            var valueEnd = index
            while valueEnd > valueStart, bytes[valueEnd - 1] == UInt8(ascii: " ") || bytes[valueEnd - 1] == UInt8(ascii: "\t") { valueEnd -= 1 }
            index += 2

            switch nameEnd - nameStart {
            case 4 where equalsLowercase(bytes, nameStart, "host"):
                guard hostRange == nil else { return .fallback }
                hostRange = valueStart..<valueEnd
            case 13 where equalsLowercase(bytes, nameStart, "authorization"):
                guard authorizationRange == nil else { return .fallback }
                authorizationRange = valueStart..<valueEnd
            case 15 where equalsLowercase(bytes, nameStart, "accept-encoding"):
                guard acceptEncodingRange == nil else { return .fallback }
                acceptEncodingRange = valueStart..<valueEnd
            case 15 where equalsLowercase(bytes, nameStart, "x-forwarded-for"):
                guard forwardedForRange == nil else { return .fallback }
                forwardedForRange = valueStart..<valueEnd
            case 5 where equalsLowercase(bytes, nameStart, "range"):
                guard rangeRange == nil else { return .fallback }
                rangeRange = valueStart..<valueEnd
            case 8 where equalsLowercase(bytes, nameStart, "if-range"):
                guard ifRangeRange == nil else { return .fallback }
                ifRangeRange = valueStart..<valueEnd
            case 13 where equalsLowercase(bytes, nameStart, "cache-control"):
                guard cacheControlRange == nil else { return .fallback }
                cacheControlRange = valueStart..<valueEnd
            case 6 where equalsLowercase(bytes, nameStart, "pragma"):
                guard pragmaRange == nil else { return .fallback }
                pragmaRange = valueStart..<valueEnd
            case 13 where equalsLowercase(bytes, nameStart, "if-none-match"):
                guard ifNoneMatchRange == nil else { return .fallback }
                ifNoneMatchRange = valueStart..<valueEnd
            case 17 where equalsLowercase(bytes, nameStart, "if-modified-since"):
                guard ifModifiedSinceRange == nil else { return .fallback }
                ifModifiedSinceRange = valueStart..<valueEnd
            case 10 where equalsLowercase(bytes, nameStart, "connection"):
                for token in connectionTokens(bytes, valueStart..<valueEnd) {
                    switch token {
                    case .close: keepAlive = false
                    case .keepAlive: if isHTTP10 { keepAlive = true }
                    case .other: return .fallback  // upgrade and friends
                    }
                }
            case 14 where equalsLowercase(bytes, nameStart, "content-length"):
                guard valueEnd - valueStart == 1, bytes[valueStart] == UInt8(ascii: "0") else { return .fallback }
            case 17 where equalsLowercase(bytes, nameStart, "transfer-encoding"):
                return .fallback
            case 6 where equalsLowercase(bytes, nameStart, "expect"):
                return .fallback
            case 7 where equalsLowercase(bytes, nameStart, "upgrade"):
                return .fallback
            default:
                break
            }
        }
        // HTTP/1.1 without Host must be refused (400); the full parser path does that.
        if !isHTTP10 && hostRange == nil { return .fallback }
        // An invalid Host gets its 400 there too.
        if let hostRange, !RequestTargetRules.isValidHost(bytes[hostRange]) { return .fallback }
        func string(_ range: Range<Int>) -> String {
            // Small strings (up to 15 bytes, e.g. "/" or "127.0.0.1:8080") are stored inline: no allocation.
            String(decoding: UnsafeRawBufferPointer(rebasing: bytes[range]), as: UTF8.self)
        }
        return .simple(
            Request(
                method: method,
                target: string(targetStart..<targetEnd),
                host: hostRange.map(string) ?? "",
                authorization: authorizationRange.map(string),
                forwardedFor: forwardedForRange.map(string),
                conditional: StaticRequestHeaders(
                    range: rangeRange.map(string), ifRange: ifRangeRange.map(string),
                    ifNoneMatch: ifNoneMatchRange.map(string), ifModifiedSince: ifModifiedSinceRange.map(string),
                    acceptEncoding: acceptEncodingRange.map(string), cacheControl: cacheControlRange.map(string),
                    pragma: pragmaRange.map(string)
                ),
                keepAlive: keepAlive,
                isHTTP10: isHTTP10,
                fieldCount: fields
            ),
            headLength: index
        )
    }

    /// Every header field of a head that ``scan(_:limit:)`` found simple (`headLength` bytes at the start of
    /// `buffer`), in order, for a route that passes the whole head on (a proxy). The scan has checked the
    /// syntax, so this only cuts lines: a name up to its `:`, a value without the whitespace around it.
    static func headerFields(_ buffer: ByteBuffer, headLength: Int) -> FieldBlock {
        buffer.withUnsafeReadableBytes { bytes in
            let end = min(headLength, bytes.count)
            var fields = FieldBlock(capacity: end)
            func part(_ range: Range<Int>) -> UnsafeRawBufferPointer { UnsafeRawBufferPointer(rebasing: bytes[range]) }
            var index = 0
            while index + 1 < end, bytes[index] != UInt8(ascii: "\n") { index += 1 }
            index += 1  // past the request line
            while index + 1 < end, bytes[index] != UInt8(ascii: "\r") {
                let (name, value, next) = FieldBlock.cutLine(bytes, at: index, end: end)
                fields.appendField(name: part(name), value: part(value))
                index = next
            }
            return fields
        }
    }

    private enum ConnectionToken { case close, keepAlive, other }

    private static func connectionTokens(_ bytes: UnsafeRawBufferPointer, _ range: Range<Int>) -> [ConnectionToken] {
        var tokens: [ConnectionToken] = []
        var start = range.lowerBound
        while start < range.upperBound {
            var end = start
            while end < range.upperBound, bytes[end] != UInt8(ascii: ",") { end += 1 }
            var low = start, high = end
            while low < high, bytes[low] == UInt8(ascii: " ") || bytes[low] == UInt8(ascii: "\t") { low += 1 }
            while high > low, bytes[high - 1] == UInt8(ascii: " ") || bytes[high - 1] == UInt8(ascii: "\t") { high -= 1 }
            if high - low == 5, equalsLowercase(bytes, low, "close") {
                tokens.append(.close)
            } else if high - low == 10, equalsLowercase(bytes, low, "keep-alive") {
                tokens.append(.keepAlive)
            } else if high > low {
                tokens.append(.other)
            }
            start = end + 1
        }
        return tokens
    }

    @inline(__always)
    private static func matches(_ bytes: UnsafeRawBufferPointer, at offset: Int, _ literal: StaticString) -> Bool {
        let count = literal.utf8CodeUnitCount
        guard offset + count <= bytes.count else { return false }
        let pointer = literal.utf8Start
        for i in 0..<count where bytes[offset + i] != pointer[i] { return false }
        return true
    }

    private static func isPrefixOfMethod(_ bytes: UnsafeRawBufferPointer) -> Bool {
        let prefix = Array(bytes)
        return Array("GET ".utf8).starts(with: prefix) || Array("HEAD ".utf8).starts(with: prefix)
    }

    @inline(__always)
    private static func equalsLowercase(_ bytes: UnsafeRawBufferPointer, _ offset: Int, _ literal: StaticString) -> Bool {
        let pointer = literal.utf8Start
        for i in 0..<literal.utf8CodeUnitCount {
            var byte = bytes[offset + i]
            if byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z") { byte |= 0x20 }
            if byte != pointer[i] { return false }
        }
        return true
    }
}
