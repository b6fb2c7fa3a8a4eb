#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import NIOCore

/// A `HOST:PORT` pair as written in config files and flags (`127.0.0.1:8080`, `[::1]:0`, `localhost:8443`).
public struct HostPort: Sendable, Equatable, CustomStringConvertible {
    /// Host name or IP address, without brackets.
    public var host: String
    /// TCP port; 0 asks the kernel for an ephemeral port.
    public var port: Int

    /// Creates a host and port.
    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// Parses `HOST:PORT`, `[IPv6]:PORT` or `:PORT` (all interfaces). Returns `nil` when malformed.
    public init?(parsing text: String) {
        let host: Substring
        let portText: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { return nil }
            host = text[text.index(after: text.startIndex)..<close]
            let rest = text[text.index(after: close)...]
            guard rest.hasPrefix(":") else { return nil }
            portText = rest.dropFirst()
        } else {
            guard let colon = text.lastIndex(of: ":") else { return nil }
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
            if host.contains(":") { return nil }  // IPv6 must be bracketed
        }
        guard let port = Int(portText), (0...65_535).contains(port) else { return nil }
        // What looks like an IP address must be one: "999.1.1.1" would otherwise go to DNS and fail at bind.
        if text.hasPrefix("[") {
            guard Self.isAddress(host, family: AF_INET6) else { return nil }
        } else if !host.isEmpty, host.allSatisfy({ $0 == "." || $0.isASCII && $0.isNumber }) {
            guard Self.isAddress(host, family: AF_INET) else { return nil }
        }
        self.host = host.isEmpty ? "0.0.0.0" : String(host)
        self.port = port
    }

    /// Whether two listeners on these addresses cannot both bind: the same port (not 0, which is ephemeral)
    /// on the same host, or on the wildcard address of the other's IP family (`0.0.0.0` takes every IPv4
    /// address, `::` every IPv6 one). Whether `::` also takes IPv4 depends on the system, so it is not assumed.
    /// A host name counts as the address it binds (`localhost` and `127.0.0.1` clash).
    public func conflicts(with other: HostPort) -> Bool {
        guard port != 0, port == other.port else { return false }
        if host.lowercased() == other.host.lowercased() { return true }
        let (mine, theirs) = (boundAddress, other.boundAddress)
        if mine == theirs { return true }
        for (wildcard, family) in [("0.0.0.0", AF_INET), ("::", AF_INET6)] {
            if mine == wildcard, Self.isAddress(Substring(theirs), family: family) { return true }
            if theirs == wildcard, Self.isAddress(Substring(mine), family: family) { return true }
        }
        return false
    }

    /// The IP address a listener on this host binds: the host itself when it is an address, else the first
    /// address the resolver gives, as NIO's `bind(host:port:)` takes it; the name itself when it does not
    /// resolve.
    public var boundAddress: String {
        if Self.isAddress(Substring(host), family: AF_INET) || Self.isAddress(Substring(host), family: AF_INET6) { return host }
        return (try? SocketAddress.makeAddressResolvingHost(host, port: 0))?.ipAddress ?? host
    }

    private static func isAddress(_ text: Substring, family: CInt) -> Bool {
        var buffer = [UInt8](repeating: 0, count: 16)
        return inet_pton(family, String(text), &buffer) == 1
    }

    /// `host:port`, with brackets around IPv6 addresses.
    public var description: String {
        host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
    }
}
