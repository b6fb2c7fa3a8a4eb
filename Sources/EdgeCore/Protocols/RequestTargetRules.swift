/// Syntax checks on request heads that both HTTP/1.1 paths and HTTP/2 apply before routing.
enum RequestTargetRules {
    /// RFC 9110 `tchar`: the bytes of a method or a field name.
    @inline(__always)
    static func isTokenByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            return true
        case UInt8(ascii: "!"), UInt8(ascii: "#"), UInt8(ascii: "$"), UInt8(ascii: "%"), UInt8(ascii: "&"), UInt8(ascii: "'"),
            UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "^"), UInt8(ascii: "_"),
            UInt8(ascii: "`"), UInt8(ascii: "|"), UInt8(ascii: "~"):
            return true
        default:
            return false
        }
    }

    /// A byte the fast paths take in an HTTP/1 request target: visible ASCII (RFC 5234 `VCHAR`), no space, no
    /// control byte, nothing above 127 (such targets go to, or are refused by, NIO's full parser).
    @inline(__always)
    static func isTargetByte(_ byte: UInt8) -> Bool {
        byte > 0x20 && byte < 0x7F
    }

    /// Whether `value` is a valid `Host` (or `:authority`): `uri-host [ ":" port ]` (RFC 9112 §3.2, RFC 3986
    /// §3.2.2) — registered-name, IPv4 or bracketed IP-literal characters only. An invalid value is answered with
    /// 400, as RFC 9112 requires; spaces, `/`, `@`, `?`, `#` and control bytes are the usual attacks on
    /// virtual-host routing and on logs. An empty value is valid.
    static func isValidHost<Bytes: Sequence<UInt8>>(_ value: Bytes) -> Bool {
        for byte in value where !isHostByte(byte) { return false }
        return true
    }

    /// Whether `byte` may appear in a `Host` value: ALPHA, DIGIT, `-._~%!$&'()*+,;=:[]`. One bit per byte
    /// below 128 (bytes 0–63 in the first word, 64–127 in the second); every byte of every request's `Host`
    /// passes here.
    @inline(__always)
    static func isHostByte(_ byte: UInt8) -> Bool {
        let word: UInt64
        switch byte >> 6 {
        case 0: word = 0x2fff_7ff2_0000_0000
        case 1: word = 0x47ff_fffe_afff_fffe
        default: return false
        }
        return word & (1 << UInt64(byte & 63)) != 0
    }

    /// Whether `target` is a request target Edge can route: origin-form (`/…`), absolute-form (HTTP/1.1
    /// only, `scheme://authority/…`), or `*` for `OPTIONS` (RFC 9112 §3.2, RFC 9113 §8.3.1). Anything else — a
    /// relative path, an HTTP/2 `:path` without its slash — is a malformed request (400), not a missing page.
    static func isRoutableTarget(_ target: String, isOPTIONS: Bool, allowsAbsoluteForm: Bool) -> Bool {
        if target.utf8.first == UInt8(ascii: "/") { return true }
        if isOPTIONS, target == "*" { return true }
        return allowsAbsoluteForm && authorityStart(in: target) != nil
    }

    /// Where the authority of an absolute-form target begins: just after its first `://`, found by bytes; `nil`
    /// when there is none.
    static func authorityStart(in target: String) -> String.Index? {
        let bytes = target.utf8
        var index = bytes.startIndex
        while index < bytes.endIndex {
            if bytes[index] == UInt8(ascii: ":"), bytes[index...].starts(with: "://".utf8) { return bytes.index(index, offsetBy: 3) }
            index = bytes.index(after: index)
        }
        return nil
    }
}
