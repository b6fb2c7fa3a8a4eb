/// Percent-encoding (RFC 3986 §2.1, §2.3): the bytes a URI may carry as they are, and the escape of any other.
enum PercentEncoding {
    /// `ALPHA / DIGIT / "-" / "." / "_" / "~"`: the unreserved characters, which never need escaping and whose
    /// escapes are equivalent to them (§6.2.2.2).
    static func isUnreserved(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
            UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"):
            return true
        default:
            return false
        }
    }

    /// `%` and two upper-case hex digits (§6.2.2.1): `0x20` → `%20`.
    static func escape(_ byte: UInt8) -> String {
        "%" + (byte < 16 ? "0" : "") + String(byte, radix: 16, uppercase: true)
    }
}
