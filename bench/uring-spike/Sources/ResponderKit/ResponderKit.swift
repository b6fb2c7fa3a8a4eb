// What the three responders share, so that they do the same work per request: their options, the prepared
// response (with a Date rewritten once a second) and the count of request heads in what was read.
import Glibc

public struct ResponderOptions: Sendable {
    public var port: UInt16 = 8080
    public var body: [UInt8] = Array("hello\n".utf8)
    public var contentType = "text/plain"

    /// `--port P --body FILE --content-type TYPE`, from the command line.
    public static func parse() -> ResponderOptions {
        var options = ResponderOptions()
        var arguments = CommandLine.arguments.dropFirst().makeIterator()
        while let flag = arguments.next() {
            guard let value = arguments.next() else { fatalError("\(flag) needs a value") }
            switch flag {
            case "--port": options.port = UInt16(value)!
            case "--content-type": options.contentType = value
            case "--body": options.body = readFile(value)
            default: fatalError("unknown option \(flag)")
            }
        }
        return options
    }

    private static func readFile(_ path: String) -> [UInt8] {
        guard let file = fopen(path, "rb") else { fatalError("cannot open \(path)") }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = fread(&chunk, 1, chunk.count, file)
            if n <= 0 { return bytes }
            bytes += chunk[0..<n]
        }
    }
}

/// The response, `copies` times back to back so that pipelined requests are answered by one send, with its
/// `Date` rewritten in place when the second changes.
public struct PreparedResponse {
    /// The length of one response.
    public let one: Int
    public let bytes: UnsafeMutablePointer<UInt8>
    private let dateOffsets: [Int]
    private var second = 0

    public init(options: ResponderOptions, copies: Int) {
        let head = "HTTP/1.1 200 OK\r\nServer: spike\r\nDate: Thu, 01 Jan 1970 00:00:00 GMT\r\n"
            + "Content-Type: \(options.contentType)\r\nContent-Length: \(options.body.count)\r\n\r\n"
        let single = Array(head.utf8) + options.body
        one = single.count
        bytes = .allocate(capacity: one * copies)
        let dateAt = Array(head.utf8).firstRange(of: Array("Date: ".utf8))!.upperBound
        dateOffsets = (0..<copies).map { $0 * single.count + dateAt }
        for copy in 0..<copies { (bytes + copy * one).initialize(from: single, count: one) }
        refreshDate()
    }

    /// Rewrites the `Date` when the second has changed; returns whether it did.
    @discardableResult
    public mutating func refreshDate() -> Bool {
        let now = time(nil)
        guard now != second else { return false }
        second = now
        var t = now
        var parts = tm()
        gmtime_r(&t, &parts)
        var text = [CChar](repeating: 0, count: 64)
        strftime(&text, 64, "%a, %d %b %Y %H:%M:%S GMT", &parts)
        for offset in dateOffsets {
            for i in 0..<29 { bytes[offset + i] = UInt8(bitPattern: text[i]) }
        }
        return true
    }
}

/// Counts request heads (each ends with CRLF CRLF) across reads: no parsing, as a cache hit needs none.
public struct RequestHeadCounter {
    private var matched: UInt8 = 0  // how much of CRLF CRLF the bytes so far end with

    public init() {}

    public mutating func count(_ bytes: UnsafeRawBufferPointer) -> Int {
        var matched = self.matched
        var heads = 0
        for byte in bytes {
            switch matched {
            case 0, 2: matched = byte == 13 ? matched + 1 : 0
            case 1: matched = byte == 10 ? 2 : (byte == 13 ? 1 : 0)
            default:
                if byte == 10 { heads += 1; matched = 0 } else { matched = byte == 13 ? 1 : 0 }
            }
        }
        self.matched = matched
        return heads
    }
}
