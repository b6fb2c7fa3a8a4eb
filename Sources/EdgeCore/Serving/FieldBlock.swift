import NIOCore
import NIOHTTP1

/// A list of header fields kept as bytes in one buffer, a `name: value` CRLF line per field, in order: how a
/// streamed (proxied) exchange carries a head between front ends and origins without a `String` per field.
///
/// The HTTP/1.1 writers copy the lines as they are; the others (NIO's codec path, HTTP/2 streams, HTTP/2
/// upstreams) convert with ``headers`` when they need an `HTTPHeaders`. Every line is well formed: a token name,
/// no CR, LF or NUL in a value (whoever builds a block checks what it copies in).
struct FieldBlock {
    /// The lines, each ending in CRLF; no blank line at the end.
    private(set) var bytes: ByteBuffer

    init(capacity: Int = 256) {
        bytes = ByteBuffer()
        bytes.reserveCapacity(capacity)
    }

    init(_ headers: HTTPHeaders) {
        self.init(capacity: 64 * max(1, headers.count))
        for (name, value) in headers { add(name: name, value: value) }
    }

    var isEmpty: Bool { bytes.readableBytes == 0 }

    mutating func add(name: String, value: String) {
        bytes.writeString(name)
        bytes.writeStaticString(": ")
        bytes.writeString(value)
        bytes.writeStaticString("\r\n")
    }

    mutating func add(name: StaticString, value: String) {
        bytes.writeStaticString(name)
        bytes.writeStaticString(": ")
        bytes.writeString(value)
        bytes.writeStaticString("\r\n")
    }

    mutating func add(name: StaticString, value: Substring) {
        bytes.writeStaticString(name)
        bytes.writeStaticString(": ")
        bytes.writeSubstring(value)
        bytes.writeStaticString("\r\n")
    }

    /// Appends `name: ` and the value `writeValue` writes (which must not write CR, LF or NUL), then CRLF: a value
    /// made of pieces, without a `String` to hold it.
    mutating func add(name: StaticString, _ writeValue: (inout ByteBuffer) -> Void) {
        bytes.writeStaticString(name)
        bytes.writeStaticString(": ")
        writeValue(&bytes)
        bytes.writeStaticString("\r\n")
    }

    /// Appends `name: value` from bytes already checked (a token name, a value without CR, LF or NUL).
    mutating func appendField(name: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer) {
        bytes.writeBytes(name)
        bytes.writeStaticString(": ")
        bytes.writeBytes(value)
        bytes.writeStaticString("\r\n")
    }

    /// Appends a line copied from another block (``forEachLine(_:)``).
    mutating func append(line: UnsafeRawBufferPointer) {
        bytes.writeBytes(line)
    }

    /// Calls `body` with each field's name and value (without the surrounding whitespace) and its whole line
    /// (CRLF included), in order.
    func forEachLine(_ body: (_ name: UnsafeRawBufferPointer, _ value: UnsafeRawBufferPointer, _ line: UnsafeRawBufferPointer) -> Void) {
        bytes.withUnsafeReadableBytes { all in
            var index = 0
            while index < all.count {
                let (name, value, next) = Self.cutLine(all, at: index, end: all.count)
                body(
                    UnsafeRawBufferPointer(rebasing: all[name]), UnsafeRawBufferPointer(rebasing: all[value]),
                    UnsafeRawBufferPointer(rebasing: all[index..<next])
                )
                index = next
            }
        }
    }

    /// Cuts the field line that starts at `start` in a head whose syntax has been checked: the name up to its `:`,
    /// the value without the whitespace around it, and where the next line starts (past the CRLF).
    @inline(__always)
    static func cutLine(_ bytes: UnsafeRawBufferPointer, at start: Int, end: Int) -> (name: Range<Int>, value: Range<Int>, next: Int) {
        var index = start
        while index < end, bytes[index] != UInt8(ascii: ":") { index += 1 }
        let nameEnd = index
        index = min(end, index + 1)
        while index < end, bytes[index] == UInt8(ascii: " ") || bytes[index] == UInt8(ascii: "\t") { index += 1 }
        let valueStart = index
        while index < end, bytes[index] != UInt8(ascii: "\r") { index += 1 }
        var valueEnd = index
        while valueEnd > valueStart, bytes[valueEnd - 1] == UInt8(ascii: " ") || bytes[valueEnd - 1] == UInt8(ascii: "\t") {
            valueEnd -= 1
        }
        return (start..<nameEnd, valueStart..<valueEnd, min(end, index + 2))
    }

    /// The fields as `HTTPHeaders`, for the writers that need them.
    var headers: HTTPHeaders {
        var headers = HTTPHeaders()
        forEachLine { name, value, _ in
            headers.add(name: String(decoding: name, as: UTF8.self), value: String(decoding: value, as: UTF8.self))
        }
        return headers
    }

    /// Whether a field named `name` (lower case) is present.
    func contains(name: StaticString) -> Bool {
        var found = false
        forEachLine { fieldName, _, _ in
            if !found, Self.equalsLowercased(fieldName, name) { found = true }
        }
        return found
    }

    /// The values of the fields named `name` (given in lower case), in order.
    func values(of name: String) -> [String] {
        var values: [String] = []
        var lower = name.lowercased()
        lower.withUTF8 { wanted in
            forEachLine { fieldName, value, _ in
                if Self.equalsLowercased(fieldName, UnsafeRawBufferPointer(wanted)) {
                    values.append(String(decoding: value, as: UTF8.self))
                }
            }
        }
        return values
    }

    /// Without the fields named `name`.
    mutating func remove(name: String) {
        remove(names: [Array(name.lowercased().utf8)])
    }

    /// Without the fields named in `names` (in lower case): a route's edits, or the fields a `Connection` header
    /// names, which are hop-by-hop too (RFC 9110 §7.6.1).
    ///
    /// Linear in the fields and the names: a head may carry thousands of each (an upstream's `Connection: a,a,a…`
    /// over thousands of lines), and comparing every field with every name stalled the event loop for seconds.
    mutating func remove(names: [[UInt8]]) {
        guard !names.isEmpty else { return }
        var kept = FieldBlock(capacity: bytes.readableBytes)
        if names.count <= Self.namesComparedInTurn {
            forEachLine { name, _, line in
                if !names.contains(where: { wanted in wanted.withUnsafeBytes { Self.equalsLowercased(name, $0) } }) {
                    kept.append(line: line)
                }
            }
        } else {
            let wanted = Set(names)
            forEachLine { name, _, line in
                let lower = name.map(\.asciiLowercased)
                if !wanted.contains(lower) { kept.append(line: line) }
            }
        }
        self = kept
    }

    /// Up to this many names, ``remove(names:)`` compares each field with each name (no set to build).
    static let namesComparedInTurn = 8

    /// Without the fields named `name`, then one `name: value`.
    mutating func replaceOrAdd(name: String, value: String) {
        remove(name: name)
        add(name: name, value: value)
    }

    /// Whether `bytes` spells `lower` (ASCII lower case) in any case.
    @inline(__always)
    static func equalsLowercased(_ bytes: UnsafeRawBufferPointer, _ lower: UnsafeRawBufferPointer) -> Bool {
        guard bytes.count == lower.count else { return false }
        for index in 0..<bytes.count {
            let byte = bytes[index]
            if byte == lower[index] { continue }
            // An upper-case letter matches its lower case; nothing else folds.
            guard byte >= UInt8(ascii: "A"), byte <= UInt8(ascii: "Z"), byte | 0x20 == lower[index] else { return false }
        }
        return true
    }

    @inline(__always)
    static func equalsLowercased(_ bytes: UnsafeRawBufferPointer, _ lower: StaticString) -> Bool {
        equalsLowercased(bytes, UnsafeRawBufferPointer(start: lower.utf8Start, count: lower.utf8CodeUnitCount))
    }
}
