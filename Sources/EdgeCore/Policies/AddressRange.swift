#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// An IP address range in CIDR notation (`10.0.0.0/8`, `::1`, `2001:db8::/32`); a bare address is a range
/// of one.
public struct AddressRange: Sendable, Equatable, CustomStringConvertible {
    /// The first address of the range.
    public let base: ClientAddress
    /// Prefix length in bits of the IPv6 (or IPv4-mapped) form: 0 to 128.
    public let prefixLength: Int
    /// The text it was parsed from.
    public let description: String

    /// Parses `ADDRESS[/PREFIX]`; `nil` when malformed.
    public init?(parsing text: String) {
        let parts = text.split(separator: "/", maxSplits: 1).map(String.init)
        guard let first = parts.first, let address = ClientAddress(parsing: first) else { return nil }
        let isV4 = !first.contains(":")
        let maximum = isV4 ? 32 : 128
        let length: Int
        if parts.count == 2 {
            guard let value = Int(parts[1]), (0...maximum).contains(value) else { return nil }
            length = value
        } else {
            length = maximum
        }
        self.prefixLength = isV4 ? 96 + length : length
        self.base = address.masked(to: prefixLength)
        self.description = text
    }

    /// Whether `address` lies in the range.
    public func contains(_ address: ClientAddress) -> Bool {
        address.masked(to: prefixLength) == base
    }
}

extension ClientAddress {
    /// Parses an IPv4 or IPv6 address in text form (no port, no brackets).
    public init?(parsing text: String) {
        var bytes = [UInt8](repeating: 0, count: 16)
        if text.contains(":") {
            var address = in6_addr()
            guard inet_pton(AF_INET6, text, &address) == 1 else { return nil }
            withUnsafeBytes(of: address) { raw in for index in 0..<16 { bytes[index] = raw[index] } }
        } else {
            var address = in_addr()
            guard inet_pton(AF_INET, text, &address) == 1 else { return nil }
            bytes[10] = 0xFF
            bytes[11] = 0xFF
            withUnsafeBytes(of: address) { raw in for index in 0..<4 { bytes[12 + index] = raw[index] } }
        }
        self.init(
            high: bytes[0..<8].reduce(0) { $0 << 8 | UInt64($1) },
            low: bytes[8..<16].reduce(0) { $0 << 8 | UInt64($1) }
        )
    }

    /// The address with every bit after the first `bits` cleared.
    func masked(to bits: Int) -> ClientAddress {
        func mask(_ value: UInt64, keeping kept: Int) -> UInt64 {
            kept <= 0 ? 0 : kept >= 64 ? value : value & ~(UInt64.max >> UInt64(kept))
        }
        return ClientAddress(high: mask(high, keeping: bits), low: mask(low, keeping: bits - 64))
    }

    /// The client behind trusted proxies: when this (the TCP peer) is a trusted proxy, the rightmost address
    /// of `X-Forwarded-For` that is not itself trusted; otherwise this address. Malformed entries stop the walk.
    func resolved(forwardedFor header: Substring?, trusted: [AddressRange]) -> ClientAddress {
        guard !trusted.isEmpty, let header, trusted.contains(where: { $0.contains(self) }) else { return self }
        var client = self
        for entry in header.split(separator: ",").reversed() {
            let text = String(entry.trimming())
            guard let address = ClientAddress(parsing: text) else { break }
            client = address
            if !trusted.contains(where: { $0.contains(address) }) { break }
        }
        return client
    }
}
