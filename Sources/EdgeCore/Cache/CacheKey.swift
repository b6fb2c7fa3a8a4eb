/// What identifies a cached response: method, host and request target (path and query).
///
/// `HEAD` shares the entry of `GET`, as in nginx and Varnish, so `method` is always the fetch method.
public struct CacheKey: Hashable, Sendable, CustomStringConvertible {
    /// Method used to fetch the response (`GET` for both GET and HEAD requests).
    public var method: String
    /// Lower-cased `Host` (HTTP/1.1) or `:authority` (HTTP/2), without changes to the port.
    public var host: String
    /// Path and query exactly as requested.
    public var target: String
    /// The secondary key of a response that varies (RFC 9111 §4.1): the request's normalised values of the
    /// fields its `Vary` names; empty for the primary key.
    public var variant: String = ""

    /// Creates a key.
    public init(method: String, host: String, target: String) {
        self.method = method
        self.host = host
        self.target = target
    }

    /// `host` in lower case, as keys hold it, without allocating when it already is.
    static func normalizedHost(_ host: Substring) -> String {
        host.utf8.contains { $0 >= UInt8(ascii: "A") && $0 <= UInt8(ascii: "Z") } ? host.lowercased() : String(host)
    }

    /// The key of one variant of this (primary) key.
    func variant(_ variant: String) -> CacheKey {
        var key = self
        key.variant = variant
        return key
    }

    /// The primary key, without a variant.
    var primary: CacheKey { variant.isEmpty ? self : variant("") }

    /// Approximate bytes the key occupies, for the cache's byte budget.
    var cost: Int { method.utf8.count + host.utf8.count + target.utf8.count + variant.utf8.count + 48 }

    /// `GET host/target`.
    public var description: String { "\(method) \(host)\(target)" }
}
