import NIOCore
import NIOHTTP1

/// What ``UpstreamResponseParser`` found next in an upstream's bytes.
enum UpstreamResponseEvent {
    /// The final response head: its fields as the client may get them (hop-by-hop fields, `Server` and `Date`
    /// dropped, `Content-Length` kept only when it frames the body), whether a body follows, and whether the
    /// connection may carry another exchange after it.
    case head(status: HTTPResponseStatus, fields: FieldBlock, date: String?, hasBody: Bool)
    case body(ByteBuffer)
    /// The response is complete; trailers from a chunked body's last chunk, if it had any.
    case end(trailers: HTTPHeaders?)
}

/// An upstream response Edge will not pass on.
struct UpstreamParseError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// Parses HTTP/1.1 responses from an upstream server, in place in the bytes read (RFC 9112), one exchange at a
/// time. NIO's `HTTPResponseDecoder` did this before; this parser avoids what it cost per response (a pipeline
/// hop and an `NIOAny` per part, a `String` per header name and value, and the proxy's second pass over them to
/// drop hop-by-hop fields) and is stricter where a proxy must be: it refuses what could be read two ways.
///
/// - Status line `HTTP/1.x NNN reason`, the status 100–599; interim (1xx) heads are skipped, `101` refused (no
///   upgrade was asked for).
/// - Field names are tokens with no whitespace before the colon; values without CR, LF, NUL or other control
///   bytes (tab allowed); no line folding (RFC 9112 §5.2 lets a proxy refuse it). A line may end in a bare LF.
/// - Framing (RFC 9112 §6.3): a `HEAD` request, `204` or `304` has no body (and a `204` or `304` loses its
///   `Content-Length`); else `Transfer-Encoding` whose last
///   coding is `chunked` (then `Content-Length` is ignored and dropped, and the connection is not reused), any
///   other list of transfer codings refused (`gzip, chunked`, `chunked, chunked`, an empty one: as nginx refuses
///   them); else `Content-Length` (several values must agree);
///   else the body runs to the end of the connection.
/// - Limits: a head or trailer section of ``maxHeadBytes``, a chunk-size line of ``maxChunkLineBytes``.
struct UpstreamResponseParser {
    static let maxHeadBytes = 80 * 1024
    static let maxChunkLineBytes = 4096

    private enum State {
        case head
        case lengthBody(remaining: Int)
        case chunkSize
        case chunkData(remaining: Int)
        case chunkDataEnd
        case trailers
        case closeDelimited
        case endPending
        case done
    }

    private var state = State.done
    private var buffer: ByteBuffer?
    private var isHEAD = false
    private var trailerSection = FieldBlock(capacity: 0)
    /// Whether the connection may carry another exchange once this response is complete.
    private(set) var keepAlive = true

    /// Starts a new exchange; `isHEAD` when the request was a `HEAD` (its response has no body). `via`, when
    /// given, is added to the final head's fields as a `Via` element.
    mutating func begin(isHEAD: Bool, via: String? = nil) {
        state = .head
        self.isHEAD = isHEAD
        self.via = via
        keepAlive = true
    }

    private var via: String?

    /// Whether bytes are buffered that no event has taken: after a complete response, bytes nobody asked for.
    var hasUnreadBytes: Bool { (buffer?.readableBytes ?? 0) > 0 }

    /// Whether the response so far is complete.
    var isComplete: Bool {
        if case .done = state { return true }
        return false
    }

    mutating func feed(_ bytes: ByteBuffer) {
        if buffer == nil || buffer!.readableBytes == 0 {
            buffer = bytes
        } else {
            buffer!.writeImmutableBuffer(bytes)
        }
    }

    /// The end of the input: completes a body that runs to the end of the connection.
    mutating func inputClosed() -> UpstreamResponseEvent? {
        guard case .closeDelimited = state else { return nil }
        state = .done
        return .end(trailers: nil)
    }

    /// The next event, or `nil` when more bytes are needed.
    mutating func next() throws -> UpstreamResponseEvent? {
        while true {
            switch state {
            case .done:
                return nil
            case .endPending:
                state = .done
                return .end(trailers: nil)
            case .head:
                switch try parseHead() {
                case .needMore: return nil
                case .interim: continue  // skipped: the final head follows
                case .final(let event): return event
                }
            case .lengthBody(let remaining):
                guard let slice = take(upTo: remaining) else { return nil }
                state = remaining == slice.readableBytes ? .endPending : .lengthBody(remaining: remaining - slice.readableBytes)
                return .body(slice)
            case .closeDelimited:
                guard let slice = take(upTo: Int.max) else { return nil }
                return .body(slice)
            case .chunkData(let remaining):
                guard let slice = take(upTo: remaining) else { return nil }
                state = remaining == slice.readableBytes ? .chunkDataEnd : .chunkData(remaining: remaining - slice.readableBytes)
                return .body(slice)
            case .chunkDataEnd:
                guard let line = try takeLine(limit: 2) else { return nil }
                guard line.readableBytes == 0 else { throw UpstreamParseError("chunk data longer than its size") }
                state = .chunkSize
            case .chunkSize:
                guard let line = try takeLine(limit: Self.maxChunkLineBytes) else { return nil }
                let size = try line.withUnsafeReadableBytes { try Self.chunkSize($0) }
                if size == 0 {
                    trailerSection = FieldBlock(capacity: 0)
                    state = .trailers
                } else {
                    state = .chunkData(remaining: size)
                }
            case .trailers:
                guard let line = try takeLine(limit: Self.maxHeadBytes - trailerSection.bytes.readableBytes) else { return nil }
                if line.readableBytes == 0 {
                    state = .done
                    let trailers = trailerSection
                    trailerSection = FieldBlock(capacity: 0)
                    guard !trailers.isEmpty else { return .end(trailers: nil) }
                    var closes = false
                    trailers.forEachLine { name, value, _ in
                        guard FieldBlock.equalsLowercased(name, "connection") else { return }
                        Self.forEachToken(value) { token in
                            if FieldBlock.equalsLowercased(token, "close") { closes = true }
                        }
                    }
                    if closes { keepAlive = false }  // as in a head: the connection ends with this response
                    return .end(trailers: trailers.headers)
                }
                try line.withUnsafeReadableBytes { try Self.appendField($0, to: &trailerSection) }
            }
        }
    }

    // MARK: the head

    private enum HeadResult {
        case needMore
        case interim
        case final(UpstreamResponseEvent)
    }

    private mutating func parseHead() throws -> HeadResult {
        guard var input = buffer, input.readableBytes > 0 else { return .needMore }
        // Find the blank line that ends the head before parsing anything.
        let headEnd: Int? = input.withUnsafeReadableBytes { bytes in
            var index = 0
            let limit = min(bytes.count, Self.maxHeadBytes)
            while index < limit {
                guard let newline = UnsafeRawBufferPointer(rebasing: bytes[index..<limit]).firstIndex(of: UInt8(ascii: "\n")) else { return nil }
                let lineEnd = index + newline
                let lineLength = lineEnd - index - (lineEnd > index && bytes[lineEnd - 1] == UInt8(ascii: "\r") ? 1 : 0)
                if lineLength == 0, index > 0 { return lineEnd + 1 }
                index = lineEnd + 1
            }
            return nil
        }
        guard let headEnd else {
            if input.readableBytes >= Self.maxHeadBytes { throw UpstreamParseError("response head larger than \(Self.maxHeadBytes) bytes") }
            return .needMore
        }
        let head = input.readSlice(length: headEnd)!
        buffer = input.readableBytes > 0 ? input : nil

        var parsed = try Self.parse(head)
        if parsed.status.code < 200 {
            guard parsed.status.code != 101 else { throw UpstreamParseError("status 101 (no upgrade was asked for)") }
            return .interim
        }
        let hasBody = !isHEAD && parsed.status.code != 204 && parsed.status.code != 304
        if let via { parsed.fields.add(name: "via", value: via) }
        keepAlive = parsed.keepAlive
        if parsed.chunked {
            keepAlive = keepAlive && parsed.contentLength == nil  // both: a message some would read otherwise
            state = hasBody ? .chunkSize : .endPending
        } else if let length = parsed.contentLength {
            // Not on a 204 or 304 (RFC 9110 §8.6): a 304's length is its 200's, which HTTP/2 clients that hold a
            // stream to its content-length take for a body that never comes; Edge never sends one itself.
            if ResponseHeaders.hasContentLength(parsed.status) { parsed.fields.add(name: "content-length", value: String(length)) }
            state = hasBody && length > 0 ? .lengthBody(remaining: length) : .endPending
        } else {
            if hasBody { keepAlive = false }
            state = hasBody ? .closeDelimited : .endPending
        }
        return .final(.head(status: parsed.status, fields: parsed.fields, date: parsed.date, hasBody: hasBody))
    }

    private struct ParsedHead {
        var status: HTTPResponseStatus
        var fields: FieldBlock
        var keepAlive: Bool
        var chunked: Bool
        var contentLength: Int?
        /// The upstream's `Date` (first line), which the HTTP cache needs for a stored response's age.
        var date: String?
    }

    /// Fields the client never gets from an upstream's head: hop-by-hop ones (RFC 9110 §7.6.1), framing that Edge
    /// sets itself, and `Server` and `Date`, which Edge sets. (Fields the `Connection` header names are dropped
    /// too, once the whole head is read.)
    static func isDropped(_ name: UnsafeRawBufferPointer) -> Bool {
        switch name.count {
        case 2: return FieldBlock.equalsLowercased(name, "te")
        case 4: return FieldBlock.equalsLowercased(name, "date")
        case 6: return FieldBlock.equalsLowercased(name, "server")
        case 7: return FieldBlock.equalsLowercased(name, "upgrade")
        case 10: return FieldBlock.equalsLowercased(name, "connection") || FieldBlock.equalsLowercased(name, "keep-alive")
        case 14: return FieldBlock.equalsLowercased(name, "content-length")
        case 17: return FieldBlock.equalsLowercased(name, "transfer-encoding")
        default:
            // `Proxy-*` (Proxy-Connection, Proxy-Authenticate …) are between a client and its proxy.
            guard name.count > 6 else { return false }
            return FieldBlock.equalsLowercased(UnsafeRawBufferPointer(rebasing: name[0..<6]), "proxy-")
        }
    }

    private static func parse(_ head: ByteBuffer) throws -> ParsedHead {
        try head.withUnsafeReadableBytes { bytes in
            var lines = LineReader(bytes: bytes)
            guard let statusLine = lines.next() else { throw UpstreamParseError("empty response head") }
            let (status, minor) = try parseStatusLine(statusLine)
            var fields = FieldBlock(capacity: bytes.count + 64)
            var close = false, keepAliveToken = false, transferEncoding = false
            // Every coding over every Transfer-Encoding line: how many, and whether all were `chunked`.
            var codingCount = 0, onlyChunked = true
            var contentLength: Int?
            var options: [[UInt8]] = []
            var date: String?
            while let line = lines.next(), !line.isEmpty {
                guard line[0] != UInt8(ascii: " "), line[0] != UInt8(ascii: "\t") else {
                    throw UpstreamParseError("folded header line")
                }
                let (name, value) = try splitField(line)
                if FieldBlock.equalsLowercased(name, "content-length") {
                    var parts = 0
                    var bad = false, conflicting = false
                    forEachToken(value) { part in
                        parts += 1
                        guard let length = decimal(part) else { bad = true; return }
                        if let contentLength, contentLength != length { conflicting = true }
                        contentLength = length
                    }
                    guard parts > 0 else { throw UpstreamParseError("empty Content-Length") }
                    guard !bad else { throw UpstreamParseError("bad Content-Length") }
                    guard !conflicting else { throw UpstreamParseError("conflicting Content-Length values") }
                    continue
                }
                if FieldBlock.equalsLowercased(name, "transfer-encoding") {
                    transferEncoding = true
                    forEachToken(value) { coding in
                        codingCount += 1
                        onlyChunked = onlyChunked && FieldBlock.equalsLowercased(coding, "chunked")
                    }
                    continue
                }
                if FieldBlock.equalsLowercased(name, "connection") {
                    forEachToken(value) { token in
                        if FieldBlock.equalsLowercased(token, "close") {
                            close = true
                        } else if FieldBlock.equalsLowercased(token, "keep-alive") {
                            keepAliveToken = true
                        } else {
                            options.append(token.map(\.asciiLowercased))
                        }
                    }
                    continue
                }
                if name.count == 4, FieldBlock.equalsLowercased(name, "date") {
                    if date == nil { date = String(decoding: value, as: UTF8.self) }
                    continue
                }
                if isDropped(name) { continue }
                fields.appendField(name: name, value: value)
            }
            // Every coding, over every Transfer-Encoding line, must come to exactly `chunked`: Edge decodes no other
            // (a `gzip` under the chunks would reach the client still encoded, as if it were the content), chunked
            // may be applied only once (RFC 9112 §6.1), and an empty list says nothing a length could be read from.
            let chunked = transferEncoding
            if transferEncoding, codingCount != 1 || !onlyChunked {
                throw UpstreamParseError("transfer coding other than chunked")  // nginx: "unknown Transfer-Encoding"
            }
            fields.remove(names: options)  // the fields the Connection header names
            let keepAlive = minor == 1 ? !close : (keepAliveToken && !close)
            return ParsedHead(status: status, fields: fields, keepAlive: keepAlive, chunked: chunked, contentLength: contentLength, date: date)
        }
    }

    /// The lines of a head, without their CRLF or LF.
    private struct LineReader {
        let bytes: UnsafeRawBufferPointer
        var index = 0

        mutating func next() -> UnsafeRawBufferPointer? {
            guard index < bytes.count else { return nil }
            let start = index
            while index < bytes.count, bytes[index] != UInt8(ascii: "\n") { index += 1 }
            var end = index
            if end > start, bytes[end - 1] == UInt8(ascii: "\r") { end -= 1 }
            index += 1
            return UnsafeRawBufferPointer(rebasing: bytes[start..<end])
        }
    }

    /// `HTTP/1.0` or `HTTP/1.1`, three digits from 100 to 599, and an optional reason phrase.
    private static func parseStatusLine(_ line: UnsafeRawBufferPointer) throws -> (HTTPResponseStatus, Int) {
        guard line.count >= 12, line.starts(with: "HTTP/1.".utf8), line[8] == UInt8(ascii: " ") else {
            throw UpstreamParseError("not an HTTP/1.x status line")
        }
        let minor = line[7]
        guard minor == UInt8(ascii: "0") || minor == UInt8(ascii: "1") else { throw UpstreamParseError("HTTP version not 1.0 or 1.1") }
        var code = 0
        for index in 9..<12 {
            let digit = line[index]
            guard digit >= UInt8(ascii: "0"), digit <= UInt8(ascii: "9") else { throw UpstreamParseError("bad status code") }
            code = code * 10 + Int(digit - UInt8(ascii: "0"))
        }
        guard (100...599).contains(code) else { throw UpstreamParseError("status \(code) outside 100–599") }
        guard line.count == 12 || line[12] == UInt8(ascii: " ") else { throw UpstreamParseError("bad status line") }
        for byte in line.dropFirst(12) where byte < 0x20 && byte != UInt8(ascii: "\t") || byte == 0x7F {
            throw UpstreamParseError("control byte in the reason phrase")
        }
        return (HTTPResponseStatus(statusCode: code), Int(minor - UInt8(ascii: "0")))
    }

    /// A field line's name (a token) and value (without surrounding whitespace; no control bytes but tab).
    static func splitField(_ line: UnsafeRawBufferPointer) throws -> (UnsafeRawBufferPointer, UnsafeRawBufferPointer) {
        guard let colon = line.firstIndex(of: UInt8(ascii: ":")), colon > 0 else { throw UpstreamParseError("header line without a name") }
        for byte in line[..<colon] where !RequestTargetRules.isTokenByte(byte) {
            throw UpstreamParseError("invalid byte in a header name")
        }
        var start = colon + 1
        var end = line.count
        while start < end, line[start] == UInt8(ascii: " ") || line[start] == UInt8(ascii: "\t") { start += 1 }
        while end > start, line[end - 1] == UInt8(ascii: " ") || line[end - 1] == UInt8(ascii: "\t") { end -= 1 }
        for byte in line[start..<end] where (byte < 0x20 && byte != UInt8(ascii: "\t")) || byte == 0x7F {
            throw UpstreamParseError("control byte in a header value")
        }
        return (UnsafeRawBufferPointer(rebasing: line[..<colon]), UnsafeRawBufferPointer(rebasing: line[start..<end]))
    }

    /// Appends a trailer line to `fields`, checked as a head's.
    private static func appendField(_ line: UnsafeRawBufferPointer, to fields: inout FieldBlock) throws {
        guard line[0] != UInt8(ascii: " "), line[0] != UInt8(ascii: "\t") else { throw UpstreamParseError("folded trailer line") }
        let (name, value) = try splitField(line)
        fields.appendField(name: name, value: value)
    }

    /// The comma-separated elements of a list value, trimmed, lower-cased unless asked not to; empty ones left out.
    static func tokens(_ value: UnsafeRawBufferPointer, lowercased: Bool = true) -> [[UInt8]] {
        var result: [[UInt8]] = []
        forEachToken(value) { token in
            result.append(lowercased ? token.map(\.asciiLowercased) : Array(token))
        }
        return result
    }

    /// Calls `body` with each comma-separated element of a list value, trimmed, as it is (no case folding); empty
    /// ones left out. Nothing is copied: the per-response lists (`Connection`, `Content-Length`,
    /// `Transfer-Encoding`) are read without an array per element.
    static func forEachToken(_ value: UnsafeRawBufferPointer, _ body: (UnsafeRawBufferPointer) -> Void) {
        var index = 0
        let count = value.count
        while index < count {
            var end = index
            while end < count, value[end] != UInt8(ascii: ",") { end += 1 }
            var start = index, last = end
            while start < last, value[start] == UInt8(ascii: " ") || value[start] == UInt8(ascii: "\t") { start += 1 }
            while last > start, value[last - 1] == UInt8(ascii: " ") || value[last - 1] == UInt8(ascii: "\t") { last -= 1 }
            if start < last { body(UnsafeRawBufferPointer(rebasing: value[start..<last])) }
            index = end + 1
        }
    }

    /// A non-negative decimal of at most 18 digits.
    private static func decimal(_ digits: UnsafeRawBufferPointer) -> Int? {
        guard !digits.isEmpty, digits.count <= 18 else { return nil }
        var value = 0
        for digit in digits {
            guard digit >= UInt8(ascii: "0"), digit <= UInt8(ascii: "9") else { return nil }
            value = value * 10 + Int(digit - UInt8(ascii: "0"))
        }
        return value
    }

    /// A chunk-size line's size (hex, before any `;` extension).
    private static func chunkSize(_ line: UnsafeRawBufferPointer) throws -> Int {
        var size = 0
        var digits = 0
        var index = 0
        while index < line.count {
            let byte = line[index]
            let value: Int
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): value = Int(byte - UInt8(ascii: "0"))
            case UInt8(ascii: "a")...UInt8(ascii: "f"): value = Int(byte - UInt8(ascii: "a")) + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): value = Int(byte - UInt8(ascii: "A")) + 10
            default: value = -1
            }
            guard value >= 0 else { break }
            digits += 1
            guard digits <= 15 else { throw UpstreamParseError("chunk size too large") }
            size = size * 16 + value
            index += 1
        }
        guard digits > 0 else { throw UpstreamParseError("bad chunk size") }
        // What may follow: whitespace, then `;` extensions (ignored).
        while index < line.count, line[index] == UInt8(ascii: " ") || line[index] == UInt8(ascii: "\t") { index += 1 }
        guard index == line.count || line[index] == UInt8(ascii: ";") else { throw UpstreamParseError("bad chunk size") }
        for byte in line[index...] where (byte < 0x20 && byte != UInt8(ascii: "\t")) || byte == 0x7F {
            throw UpstreamParseError("control byte in a chunk extension")
        }
        return size
    }

    // MARK: reading the buffer

    /// Up to `limit` bytes from the buffer, or `nil` when it is empty.
    private mutating func take(upTo limit: Int) -> ByteBuffer? {
        guard var input = buffer, input.readableBytes > 0 else { return nil }
        buffer = nil  // so that the slice below shares the storage without a copy later
        if input.readableBytes <= limit { return input }
        let slice = input.readSlice(length: limit)!
        buffer = input
        return slice
    }

    /// The next line (without its CRLF or LF), or `nil` when no whole line is buffered. Throws when `limit` bytes
    /// pass without a line end.
    private mutating func takeLine(limit: Int) throws -> ByteBuffer? {
        guard var input = buffer, input.readableBytes > 0 else { return nil }
        let found: Int? = input.withUnsafeReadableBytes { $0.firstIndex(of: UInt8(ascii: "\n")) }
        guard let newline = found else {
            if input.readableBytes > limit { throw UpstreamParseError("line too long") }
            return nil
        }
        guard newline <= limit else { throw UpstreamParseError("line too long") }
        var line = input.readSlice(length: newline + 1)!
        buffer = input.readableBytes > 0 ? input : nil
        line.moveWriterIndex(to: line.writerIndex - 1)
        if line.readableBytes > 0, line.getInteger(at: line.writerIndex - 1, as: UInt8.self) == UInt8(ascii: "\r") {
            line.moveWriterIndex(to: line.writerIndex - 1)
        }
        return line
    }
}
