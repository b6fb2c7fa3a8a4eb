@testable import EdgeCore
import Testing

@Suite("Request head syntax rules")
struct RequestTargetRulesTests {
    /// RFC 3986 §3.2.2 `reg-name` / `IPv4address` / `IP-literal` characters, and `:` before the port.
    static let hostBytes = Set(
        Array(UInt8(ascii: "a")...UInt8(ascii: "z")) + Array(UInt8(ascii: "A")...UInt8(ascii: "Z"))
            + Array(UInt8(ascii: "0")...UInt8(ascii: "9")) + Array("-._~%!$&'()*+,;=:[]".utf8)
    )

    @Test("the Host byte table admits exactly the RFC's characters, for each of the 256 byte values")
    func hostByteTable() {
        for byte in UInt8.min...UInt8.max {
            #expect(RequestTargetRules.isHostByte(byte) == Self.hostBytes.contains(byte), "byte \(byte)")
        }
    }

    @Test("Host values: names, addresses and ports pass; spaces, slashes, userinfo and controls do not")
    func hostValues() {
        for valid in ["", "localhost", "Example.COM:8443", "127.0.0.1:80", "[::1]:8443", "xn--bcher-kva.example"] {
            #expect(RequestTargetRules.isValidHost(valid.utf8), "\(valid)")
        }
        for invalid in ["a b", "a/b", "user@host", "host?x", "host#x", "a\tb", "h\u{7F}", "h\u{0}", "hé"] {
            #expect(!RequestTargetRules.isValidHost(invalid.utf8), "\(invalid)")
        }
    }
}
