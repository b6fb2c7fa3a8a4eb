public import NIOCore

/// A client's IP address as a small hashable value: the key of per-client limits.
///
/// IPv4 addresses are stored IPv4-mapped (`::ffff:a.b.c.d`) so both families share one key space.
public struct ClientAddress: Hashable, Sendable, CustomStringConvertible {
    /// Upper 64 bits of the IPv6 (or IPv4-mapped) address.
    public let high: UInt64
    /// Lower 64 bits.
    public let low: UInt64

    /// The key used when the peer address is unknown (e.g. Unix sockets); all such clients share it.
    public static let unknown = ClientAddress(high: 0, low: 0)

    /// Creates an address from its two halves.
    public init(high: UInt64, low: UInt64) {
        self.high = high
        self.low = low
    }

    /// The IP address of `address`, or ``unknown``.
    public init(_ address: SocketAddress?) {
        var bytes = [UInt8](repeating: 0, count: 16)
        switch address {
        case .v4(let v4)?:
            bytes[10] = 0xFF
            bytes[11] = 0xFF
            withUnsafeBytes(of: v4.address.sin_addr) { raw in
                for index in 0..<4 { bytes[12 + index] = raw[index] }
            }
        case .v6(let v6)?:
            withUnsafeBytes(of: v6.address.sin6_addr) { raw in
                for index in 0..<16 { bytes[index] = raw[index] }
            }
        default:
            self = .unknown
            return
        }
        self.high = bytes[0..<8].reduce(0) { $0 << 8 | UInt64($1) }
        self.low = bytes[8..<16].reduce(0) { $0 << 8 | UInt64($1) }
    }

    /// Whether the address is an IPv4 one (stored IPv4-mapped).
    var isIPv4: Bool { high == 0 && low >> 32 == 0xFFFF }

    /// Writes ``description`` to `buffer`; an IPv4 address without making a `String` (the proxy writes the client's
    /// address into two fields of every request it sends).
    func write(to buffer: inout ByteBuffer) {
        guard isIPv4 else {
            buffer.writeString(description)
            return
        }
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: 15) { writeDottedQuad(into: $0) }
    }

    /// Dotted IPv4 or full hexadecimal IPv6 text, for logs.
    public var description: String {
        if isIPv4 {
            return String(unsafeUninitializedCapacity: 15) { writeDottedQuad(into: UnsafeMutableRawBufferPointer($0)) }
        }
        let groups = (0..<8).map { index -> String in
            let half = index < 4 ? high : low
            return String(UInt16(truncatingIfNeeded: half >> (48 - 16 * UInt64(index % 4))), radix: 16)
        }
        return groups.joined(separator: ":")
    }

    /// Writes an IPv4 address's dotted quad (at most 15 bytes) to `bytes`; returns how many bytes it wrote.
    private func writeDottedQuad(into bytes: UnsafeMutableRawBufferPointer) -> Int {
        let v4 = UInt32(truncatingIfNeeded: low)
        var index = 0
        for position in 0..<4 {
            let octet = Int(v4 >> UInt32(24 - 8 * position) & 0xFF)
            if index > 0 {
                bytes[index] = UInt8(ascii: ".")
                index += 1
            }
            if octet >= 100 {
                bytes[index] = UInt8(ascii: "0") + UInt8(octet / 100)
                index += 1
            }
            if octet >= 10 {
                bytes[index] = UInt8(ascii: "0") + UInt8(octet / 10 % 10)
                index += 1
            }
            bytes[index] = UInt8(ascii: "0") + UInt8(octet % 10)
            index += 1
        }
        return index
    }
}
