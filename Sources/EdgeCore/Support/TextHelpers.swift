#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

extension StringProtocol {
    /// The text without leading and trailing bytes from `characters` (ASCII; by default spaces and tabs, the
    /// optional whitespace of HTTP fields). Bytes are compared, not `Character`s, so a combining mark after a
    /// space neither hides the space nor is trimmed with it.
    func trimming(_ characters: StaticString = " \t") -> SubSequence {
        let set = UnsafeBufferPointer(start: characters.utf8Start, count: characters.utf8CodeUnitCount)
        let bytes = utf8
        var start = bytes.startIndex
        while start < bytes.endIndex, set.contains(bytes[start]) { start = bytes.index(after: start) }
        var end = start, index = start
        while index < bytes.endIndex {
            let byte = bytes[index]
            index = bytes.index(after: index)
            if !set.contains(byte) { end = index }
        }
        return self[start..<end]
    }
}

extension BidirectionalCollection where Element == UInt8, SubSequence == Self {
    /// These bytes without leading and trailing bytes from `bytes` (ASCII; by default spaces and tabs, the optional
    /// whitespace of HTTP fields): ``StringProtocol/trimming(_:)`` for byte slices.
    func trimming(_ bytes: StaticString = " \t") -> SubSequence {
        let set = UnsafeBufferPointer(start: bytes.utf8Start, count: bytes.utf8CodeUnitCount)
        guard let first = firstIndex(where: { !set.contains($0) }), let last = lastIndex(where: { !set.contains($0) }) else {
            return self[endIndex...]
        }
        return self[first...last]
    }
}

extension StringProtocol {
    /// Whether this equals `lowercase` (an all-lowercase ASCII literal), ignoring ASCII case.
    func equalsIgnoringASCIICase(_ lowercase: StaticString) -> Bool {
        guard utf8.count == lowercase.utf8CodeUnitCount else { return false }
        let pointer = lowercase.utf8Start
        var index = 0
        for byte in utf8 {
            if byte.asciiLowercased != pointer[index] { return false }
            index += 1
        }
        return true
    }
}

extension String {
    /// Whether this equals `other` (any text), ignoring ASCII case (`Example.TEST` and `example.test`).
    func matchesIgnoringASCIICase(_ other: String) -> Bool {
        utf8.count == other.utf8.count && zip(utf8, other.utf8).allSatisfy { $0.asciiLowercased == $1.asciiLowercased }
    }
}

extension Substring {
    /// Whether the UTF-8 bytes of this text begin with those of `prefix`: a byte comparison, as request paths
    /// are compared by nginx, without the cost of comparing `Character`s.
    func hasBytePrefix(_ prefix: String) -> Bool {
        let fast = utf8.withContiguousStorageIfAvailable { bytes in
            prefix.utf8.withContiguousStorageIfAvailable { wanted in
                bytes.count >= wanted.count && (wanted.isEmpty || memcmp(bytes.baseAddress!, wanted.baseAddress!, wanted.count) == 0)
            }
        }
        return (fast ?? nil) ?? utf8.starts(with: prefix.utf8)
    }

    /// Whether the UTF-8 bytes of this text are those of `other`.
    func hasBytes(_ other: String) -> Bool {
        utf8.count == other.utf8.count && hasBytePrefix(other)
    }
}

/// The text of a system error number, in lower case as the rest of Edge's messages ("no such file or directory").
func systemErrorText(_ code: CInt) -> String {
    let text = String(cString: strerror(code))
    return text.prefix(1).lowercased() + text.dropFirst()
}

extension UInt8 {
    /// This byte with `A`–`Z` folded to `a`–`z`.
    var asciiLowercased: UInt8 {
        self >= UInt8(ascii: "A") && self <= UInt8(ascii: "Z") ? self | 0x20 : self
    }

    /// The value of this byte as an ASCII hex digit (`0`–`9`, `a`–`f`, `A`–`F`), or `nil`.
    var hexDigitValue: UInt8? {
        switch self {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return self - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return self - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return self - UInt8(ascii: "A") + 10
        default: return nil
        }
    }
}

/// The elements of comma-separated field values (RFC 9110 §5.6.1: `Connection`, `Upgrade`,
/// `Sec-WebSocket-Protocol` …), each trimmed, empty ones dropped.
func listElements(_ values: [String]) -> [Substring] {
    values.flatMap { $0.split(separator: ",") }.map { $0.trimming() }.filter { !$0.isEmpty }
}

/// JSON string literals, for the few answers Edge writes as JSON by hand.
enum JSONText {
    /// `text` as a JSON string literal: quotes, `"` and `\` escaped, control characters as `\u00XX`.
    static func quoted(_ text: String) -> String {
        "\"" + escaped(text) + "\""
    }

    /// `text` escaped for the inside of a JSON string literal.
    static func escaped(_ text: String) -> String {
        var out = ""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case _ where scalar.value < 0x20:
                let hex = String(scalar.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out
    }
}
