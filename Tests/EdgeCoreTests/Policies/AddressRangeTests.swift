@testable import EdgeCore
import NIOCore
import Testing

@Suite("Client addresses and trusted proxies")
struct AddressRangeTests {
    @Test("CIDR ranges contain what they should", arguments: [
        ("10.0.0.0/8", "10.255.1.2", true), ("10.0.0.0/8", "11.0.0.1", false), ("127.0.0.1", "127.0.0.1", true),
        ("127.0.0.1", "127.0.0.2", false), ("::1", "::1", true), ("2001:db8::/32", "2001:db8:ffff::1", true),
        ("2001:db8::/32", "2001:db9::1", false), ("0.0.0.0/0", "8.8.8.8", true), ("0.0.0.0/0", "::1", false),
    ])
    func contains(range: String, address: String, expected: Bool) throws {
        let parsed = try #require(AddressRange(parsing: range))
        #expect(parsed.contains(try #require(ClientAddress(parsing: address))) == expected)
    }

    @Test("malformed ranges are refused", arguments: ["10.0.0.0/33", "::1/129", "localhost", "1.2.3", "10.0.0.0/x"])
    func malformed(text: String) {
        #expect(AddressRange(parsing: text) == nil)
    }

    @Test("X-Forwarded-For is believed only from a trusted peer, walking right to left past trusted hops")
    func forwardedFor() throws {
        let trusted = [try #require(AddressRange(parsing: "127.0.0.1")), try #require(AddressRange(parsing: "10.0.0.0/8"))]
        let proxy = try #require(ClientAddress(parsing: "127.0.0.1"))
        let stranger = try #require(ClientAddress(parsing: "198.51.100.7"))
        #expect(proxy.resolved(forwardedFor: "203.0.113.5", trusted: trusted).description == "203.0.113.5")
        #expect(proxy.resolved(forwardedFor: "1.1.1.1, 203.0.113.5, 10.1.2.3", trusted: trusted).description == "203.0.113.5")
        #expect(stranger.resolved(forwardedFor: "203.0.113.5", trusted: trusted) == stranger)
        #expect(proxy.resolved(forwardedFor: "garbage", trusted: trusted) == proxy)
        #expect(proxy.resolved(forwardedFor: nil, trusted: trusted) == proxy)
        #expect(proxy.resolved(forwardedFor: "203.0.113.5", trusted: []) == proxy)
    }

    @Test("an address written as bytes reads as its description", arguments: [
        "0.0.0.0", "1.2.3.4", "9.10.99.100", "127.0.0.1", "198.51.100.7", "255.255.255.255", "::1", "2001:db8::1",
    ])
    func written(text: String) throws {
        let address = try #require(ClientAddress(parsing: text))
        var buffer = ByteBuffer(string: "x=")
        address.write(to: &buffer)
        #expect(String(buffer: buffer) == "x=" + address.description)
        #expect(address.isIPv4 == !text.contains(":"))
    }
}
