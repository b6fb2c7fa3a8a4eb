import NIOCore

/// One complete HTTP/1.x response, reduced to what a load generator needs.
struct HTTP1ResponseSummary: Equatable {
    /// The status code.
    var status: Int
    /// Whether the connection may carry another request after this response.
    var keepAlive: Bool
}

/// An incremental HTTP/1.x response parser that counts responses and skips their bodies without copying them.
///
/// It understands what a server may send: `Content-Length`, `chunked` (with extensions and trailers),
/// bodies delimited by the connection closing, interim 1xx responses, and the no-body cases (HEAD, 204, 304).
/// A load generator has to parse faster than the server answers, so this does only that; it is not a
/// general HTTP parser (it never exposes header fields).
struct HTTP1ResponseDecoder: NIOSingleStepByteToMessageDecoder {
    typealias InboundOut = HTTP1ResponseSummary

    /// The longest response head accepted.
    static let maximumHeadBytes = 64 * 1024

    private enum State {
        case head
        case fixedBody(remaining: Int)
        case chunkSize
        case chunkData(remaining: Int)
        case chunkDataEnd
        case trailers
        case untilClose
    }

    private var state = State.head
    private var current = HTTP1ResponseSummary(status: 0, keepAlive: true)
    /// Bytes of the head already searched for its end, so a head arriving in pieces is scanned once.
    private var headScanned = 0
    private let requestIsHEAD: Bool

    /// A decoder for responses to requests with the given method kind.
    init(requestIsHEAD: Bool) {
        self.requestIsHEAD = requestIsHEAD
    }

    mutating func decode(buffer: inout ByteBuffer) throws -> HTTP1ResponseSummary? {
        while true {
            switch state {
            case .head:
                guard let headLength = findHeadEnd(in: buffer) else {
                    if buffer.readableBytes > Self.maximumHeadBytes {
                        throw BenchProtocolError(description: "response head longer than \(Self.maximumHeadBytes) bytes")
                    }
                    return nil
                }
                headScanned = 0
                let framing = try parseHead(buffer, length: headLength)
                buffer.moveReaderIndex(forwardBy: headLength)
                if (100..<200).contains(current.status) && current.status != 101 { continue }
                if requestIsHEAD || current.status == 204 || current.status == 304 || current.status == 101 {
                    return finishResponse()
                }
                switch framing {
                case .chunked: state = .chunkSize
                case .length(0): return finishResponse()
                case .length(let length): state = .fixedBody(remaining: length)
                case .close:
                    current.keepAlive = false
                    state = .untilClose
                }
            case .fixedBody(let remaining):
                let count = min(remaining, buffer.readableBytes)
                buffer.moveReaderIndex(forwardBy: count)
                if count == remaining { return finishResponse() }
                state = .fixedBody(remaining: remaining - count)
                return nil
            case .chunkSize:
                guard let line = readLine(&buffer) else { return nil }
                let size = try parseChunkSize(line)
                state = size == 0 ? .trailers : .chunkData(remaining: size)
            case .chunkData(let remaining):
                let count = min(remaining, buffer.readableBytes)
                buffer.moveReaderIndex(forwardBy: count)
                if count < remaining {
                    state = .chunkData(remaining: remaining - count)
                    return nil
                }
                state = .chunkDataEnd
            case .chunkDataEnd:
                guard buffer.readableBytes >= 2 else { return nil }
                guard buffer.readInteger(as: UInt16.self) == 0x0D0A else {
                    throw BenchProtocolError(description: "chunk data not followed by CRLF")
                }
                state = .chunkSize
            case .trailers:
                guard let line = readLine(&buffer) else { return nil }
                if line.isEmpty { return finishResponse() }
            case .untilClose:
                buffer.moveReaderIndex(forwardBy: buffer.readableBytes)
                return nil
            }
        }
    }

    mutating func decodeLast(buffer: inout ByteBuffer, seenEOF: Bool) throws -> HTTP1ResponseSummary? {
        if let response = try decode(buffer: &buffer) { return response }
        if seenEOF, case .untilClose = state { return finishResponse() }
        return nil
    }

    private mutating func finishResponse() -> HTTP1ResponseSummary {
        state = .head
        return current
    }

    // MARK: - Head

    private enum BodyFraming {
        case length(Int)
        case chunked
        case close
    }

    /// The length of the head including its blank line, or `nil` if it has not all arrived.
    private mutating func findHeadEnd(in buffer: ByteBuffer) -> Int? {
        let found: Int? = buffer.withUnsafeReadableBytes { bytes in
            var index = max(headScanned, 3)
            while index < bytes.count {
                if bytes[index] == UInt8(ascii: "\n") {
                    if bytes[index - 1] == UInt8(ascii: "\r") && bytes[index - 2] == UInt8(ascii: "\n") && bytes[index - 3] == UInt8(ascii: "\r") {
                        return index + 1
                    }
                    if bytes[index - 1] == UInt8(ascii: "\n") { return index + 1 }  // bare-LF heads, as lenient clients accept
                }
                index += 1
            }
            return nil
        }
        if found == nil { headScanned = max(buffer.readableBytes, 3) }
        return found
    }

    private mutating func parseHead(_ buffer: ByteBuffer, length: Int) throws -> BodyFraming {
        // Works on the bytes in place: no copy, no String, since this runs once per response.
        let parsed: (status: Int, keepAlive: Bool, framing: BodyFraming)? = try buffer.withUnsafeReadableBytes { all in
            let bytes = UnsafeRawBufferPointer(rebasing: all[0..<length])
            guard bytes.count >= 12, Self.matches(bytes, at: 0, "HTTP/1."), bytes[8] == UInt8(ascii: " ") else { return nil }
            let isHTTP10 = bytes[7] == UInt8(ascii: "0")
            var status = 0
            for index in 9..<12 {
                let byte = bytes[index]
                guard byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") else {
                    throw BenchProtocolError(description: "bad status code in the response status line")
                }
                status = status * 10 + Int(byte - UInt8(ascii: "0"))
            }
            guard (100...599).contains(status) else { throw BenchProtocolError(description: "status code \(status) out of range") }

            var keepAlive = !isHTTP10
            var contentLength: Int?
            var chunked = false
            var lineStart = 0
            while lineStart < bytes.count && bytes[lineStart] != UInt8(ascii: "\n") { lineStart += 1 }
            lineStart += 1
            while lineStart < bytes.count {
                var lineEnd = lineStart
                while lineEnd < bytes.count && bytes[lineEnd] != UInt8(ascii: "\n") { lineEnd += 1 }
                var valueEnd = lineEnd
                if valueEnd > lineStart && bytes[valueEnd - 1] == UInt8(ascii: "\r") { valueEnd -= 1 }
                var colon = lineStart
                while colon < valueEnd && bytes[colon] != UInt8(ascii: ":") { colon += 1 }
                if colon < valueEnd {
                    var valueStart = colon + 1
                    while valueStart < valueEnd && (bytes[valueStart] == 0x20 || bytes[valueStart] == 0x09) { valueStart += 1 }
                    while valueEnd > valueStart && (bytes[valueEnd - 1] == 0x20 || bytes[valueEnd - 1] == 0x09) { valueEnd -= 1 }
                    let nameLength = colon - lineStart
                    if nameLength == 14 && Self.matchesIgnoringCase(bytes, at: lineStart, "content-length") {
                        var length = 0
                        var digits = 0
                        for index in valueStart..<valueEnd {
                            let byte = bytes[index]
                            guard byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9"), digits < 18 else {
                                throw BenchProtocolError(description: "bad Content-Length in the response")
                            }
                            length = length * 10 + Int(byte - UInt8(ascii: "0"))
                            digits += 1
                        }
                        guard digits > 0, contentLength == nil || contentLength == length else {
                            throw BenchProtocolError(description: "bad Content-Length in the response")
                        }
                        contentLength = length
                    } else if nameLength == 17 && Self.matchesIgnoringCase(bytes, at: lineStart, "transfer-encoding") {
                        chunked = valueEnd - valueStart >= 7 && Self.matchesIgnoringCase(bytes, at: valueEnd - 7, "chunked")
                    } else if nameLength == 10 && Self.matchesIgnoringCase(bytes, at: lineStart, "connection") {
                        if Self.containsToken(bytes, from: valueStart, to: valueEnd, "close") { keepAlive = false }
                        if isHTTP10 && Self.containsToken(bytes, from: valueStart, to: valueEnd, "keep-alive") { keepAlive = true }
                    }
                }
                lineStart = lineEnd + 1
            }
            let framing: BodyFraming = chunked ? .chunked : (contentLength.map { .length($0) } ?? .close)
            return (status, keepAlive, framing)
        }
        guard let parsed else { throw BenchProtocolError(description: "response does not start with an HTTP/1.x status line") }
        current = HTTP1ResponseSummary(status: parsed.status, keepAlive: parsed.keepAlive)
        return parsed.framing
    }

    private static func matches(_ bytes: UnsafeRawBufferPointer, at offset: Int, _ text: StaticString) -> Bool {
        let count = text.utf8CodeUnitCount
        guard offset + count <= bytes.count else { return false }
        let expected = text.utf8Start
        for index in 0..<count where bytes[offset + index] != expected[index] { return false }
        return true
    }

    /// Compares with a lowercase ASCII `text`.
    private static func matchesIgnoringCase(_ bytes: UnsafeRawBufferPointer, at offset: Int, _ text: StaticString) -> Bool {
        let count = text.utf8CodeUnitCount
        guard offset >= 0, offset + count <= bytes.count else { return false }
        let expected = text.utf8Start
        for index in 0..<count {
            var byte = bytes[offset + index]
            if byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z") { byte |= 0x20 }
            if byte != expected[index] { return false }
        }
        return true
    }

    /// Whether the comma-separated list in `bytes[from..<to]` has the lowercase token `token`.
    private static func containsToken(_ bytes: UnsafeRawBufferPointer, from: Int, to: Int, _ token: StaticString) -> Bool {
        var start = from
        while start < to {
            var end = start
            while end < to && bytes[end] != UInt8(ascii: ",") { end += 1 }
            var tokenStart = start
            var tokenEnd = end
            while tokenStart < tokenEnd && (bytes[tokenStart] == 0x20 || bytes[tokenStart] == 0x09) { tokenStart += 1 }
            while tokenEnd > tokenStart && (bytes[tokenEnd - 1] == 0x20 || bytes[tokenEnd - 1] == 0x09) { tokenEnd -= 1 }
            if tokenEnd - tokenStart == token.utf8CodeUnitCount && matchesIgnoringCase(bytes, at: tokenStart, token) { return true }
            start = end + 1
        }
        return false
    }

    /// Reads one CRLF- (or LF-) terminated line without its terminator, or returns `nil` if it has not all arrived.
    private func readLine(_ buffer: inout ByteBuffer) -> [UInt8]? {
        guard let newline = buffer.readableBytesView.firstIndex(of: UInt8(ascii: "\n")) else { return nil }
        let length = newline - buffer.readerIndex + 1
        guard var line = buffer.readBytes(length: length) else { return nil }
        line.removeLast()
        if line.last == UInt8(ascii: "\r") { line.removeLast() }
        return line
    }

    private func parseChunkSize(_ line: [UInt8]) throws -> Int {
        var size = 0
        var digits = 0
        for byte in line {
            let value: Int
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): value = Int(byte - UInt8(ascii: "0"))
            case UInt8(ascii: "a")...UInt8(ascii: "f"): value = Int(byte - UInt8(ascii: "a")) + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): value = Int(byte - UInt8(ascii: "A")) + 10
            case UInt8(ascii: ";"), UInt8(ascii: " "), UInt8(ascii: "\t"):
                guard digits > 0 else { throw BenchProtocolError(description: "empty chunk size") }
                return size
            default: throw BenchProtocolError(description: "bad chunk size line")
            }
            digits += 1
            guard digits <= 15 else { throw BenchProtocolError(description: "chunk size too large") }
            size = size * 16 + value
        }
        guard digits > 0 else { throw BenchProtocolError(description: "empty chunk size") }
        return size
    }
}
