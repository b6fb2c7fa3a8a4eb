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
                let framing = try parseHead(buffer.readableBytesView.prefix(headLength))
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

    private mutating func parseHead(_ head: ByteBufferView) throws -> BodyFraming {
        let bytes = Array(head)
        guard bytes.count >= 12, bytes[0..<7].elementsEqual("HTTP/1.".utf8), bytes[8] == UInt8(ascii: " ") else {
            throw BenchProtocolError(description: "response does not start with an HTTP/1.x status line")
        }
        let isHTTP10 = bytes[7] == UInt8(ascii: "0")
        var status = 0
        for byte in bytes[9..<12] {
            guard byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") else {
                throw BenchProtocolError(description: "bad status code in the response status line")
            }
            status = status * 10 + Int(byte - UInt8(ascii: "0"))
        }
        guard (100...599).contains(status) else { throw BenchProtocolError(description: "status code \(status) out of range") }

        var keepAlive = !isHTTP10
        var contentLength: Int?
        var chunked = false
        var lineStart = bytes.firstIndex(of: UInt8(ascii: "\n")).map { $0 + 1 } ?? bytes.count
        while lineStart < bytes.count {
            var lineEnd = lineStart
            while lineEnd < bytes.count && bytes[lineEnd] != UInt8(ascii: "\n") { lineEnd += 1 }
            var valueEnd = lineEnd
            if valueEnd > lineStart && bytes[valueEnd - 1] == UInt8(ascii: "\r") { valueEnd -= 1 }
            if let colon = bytes[lineStart..<valueEnd].firstIndex(of: UInt8(ascii: ":")) {
                let name = bytes[lineStart..<colon]
                var valueStart = colon + 1
                while valueStart < valueEnd && (bytes[valueStart] == 0x20 || bytes[valueStart] == 0x09) { valueStart += 1 }
                var trimmedEnd = valueEnd
                while trimmedEnd > valueStart && (bytes[trimmedEnd - 1] == 0x20 || bytes[trimmedEnd - 1] == 0x09) { trimmedEnd -= 1 }
                let value = bytes[valueStart..<trimmedEnd]
                if Self.equalsLowercase(name, "content-length") {
                    guard let length = Self.parseDecimal(value), contentLength == nil || contentLength == length else {
                        throw BenchProtocolError(description: "bad Content-Length in the response")
                    }
                    contentLength = length
                } else if Self.equalsLowercase(name, "transfer-encoding") {
                    chunked = Self.lowercased(value).hasSuffix("chunked")
                } else if Self.equalsLowercase(name, "connection") {
                    let tokens = Self.lowercased(value).split(separator: ",").map { $0.trimmingSpaces }
                    if tokens.contains("close") { keepAlive = false }
                    if tokens.contains("keep-alive") && isHTTP10 { keepAlive = true }
                }
            }
            lineStart = lineEnd + 1
        }
        current = HTTP1ResponseSummary(status: status, keepAlive: keepAlive)
        if chunked { return .chunked }
        if let contentLength { return .length(contentLength) }
        return .close
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

    private static func equalsLowercase(_ bytes: ArraySlice<UInt8>, _ name: StaticString) -> Bool {
        guard bytes.count == name.utf8CodeUnitCount else { return false }
        return name.withUTF8Buffer { expected in
            zip(bytes, expected).allSatisfy { ($0 | 0x20) == $1 || ($0 == $1) }
        }
    }

    private static func parseDecimal(_ bytes: ArraySlice<UInt8>) -> Int? {
        guard !bytes.isEmpty, bytes.count <= 18 else { return nil }
        var value = 0
        for byte in bytes {
            guard byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") else { return nil }
            value = value * 10 + Int(byte - UInt8(ascii: "0"))
        }
        return value
    }

    private static func lowercased(_ bytes: ArraySlice<UInt8>) -> String {
        String(decoding: bytes, as: UTF8.self).lowercased()
    }
}

extension Substring {
    /// The text without leading and trailing spaces and tabs.
    fileprivate var trimmingSpaces: Substring {
        var text = self
        while text.first == " " || text.first == "\t" { text = text.dropFirst() }
        while text.last == " " || text.last == "\t" { text = text.dropLast() }
        return text
    }
}
