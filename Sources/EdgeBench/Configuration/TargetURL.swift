/// An `http://` or `https://` URL split into the parts a load generator needs.
public struct TargetURL: Sendable, Equatable, CustomStringConvertible {
    /// Whether the scheme is `https`.
    public let isTLS: Bool
    /// The host as written, without IPv6 brackets.
    public let host: String
    /// The port, explicit or the scheme's default.
    public let port: Int
    /// Path and query, starting with `/`.
    public let pathAndQuery: String

    /// Parses `text`; the error says what is wrong with it.
    public init(_ text: String) throws(BenchError) {
        let schemeEnd: String.Index
        if let range = text.range(of: "://") {
            schemeEnd = range.upperBound
            switch text[..<range.lowerBound].lowercased() {
            case "http": isTLS = false
            case "https": isTLS = true
            default: throw .invalidURL("unsupported URL scheme in \(text) (use http:// or https://)")
            }
        } else {
            throw .invalidURL("not a URL: \(text) (expected http://HOST[:PORT]/PATH or https://…)")
        }
        let rest = text[schemeEnd...]
        let authorityEnd = rest.firstIndex(where: { $0 == "/" || $0 == "?" || $0 == "#" }) ?? rest.endIndex
        let authority = rest[..<authorityEnd]
        var path = String(rest[authorityEnd...])
        if let hash = path.firstIndex(of: "#") { path = String(path[..<hash]) }
        if path.isEmpty || path.first == "?" { path = "/" + path }
        guard !authority.contains("@") else { throw .invalidURL("credentials in the URL are not supported: \(text) (use --header 'Authorization: …')") }

        let hostPart: Substring
        var portPart: Substring?
        if authority.first == "[" {
            guard let close = authority.firstIndex(of: "]") else { throw .invalidURL("unclosed [ in the host of \(text)") }
            hostPart = authority[authority.index(after: authority.startIndex)..<close]
            let after = authority[authority.index(after: close)...]
            if !after.isEmpty {
                guard after.first == ":" else { throw .invalidURL("unexpected text after ] in \(text)") }
                portPart = after.dropFirst()
            }
        } else if let colon = authority.lastIndex(of: ":") {
            hostPart = authority[..<colon]
            portPart = authority[authority.index(after: colon)...]
        } else {
            hostPart = authority
        }
        guard !hostPart.isEmpty else { throw .invalidURL("no host in \(text)") }
        host = String(hostPart)
        if let portPart {
            guard let value = Int(portPart), (1...65535).contains(value) else {
                throw .invalidURL("bad port '\(portPart)' in \(text) (1-65535)")
            }
            port = value
        } else {
            port = isTLS ? 443 : 80
        }
        pathAndQuery = path
    }

    /// The value for the `Host` header and `:authority`: the port only when it is not the default.
    public var authority: String {
        let bracketed = host.contains(":") ? "[\(host)]" : host
        let defaultPort = isTLS ? 443 : 80
        return port == defaultPort ? bracketed : "\(bracketed):\(port)"
    }

    /// Whether the host is an IP literal (no SNI is sent for those).
    public var hostIsIPAddress: Bool {
        host.contains(":") || host.allSatisfy { $0.isNumber || $0 == "." }
    }

    /// The URL, normalised.
    public var description: String { "\(isTLS ? "https" : "http")://\(authority)\(pathAndQuery)" }
}
