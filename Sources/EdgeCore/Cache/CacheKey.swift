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

    /// Creates a key.
    public init(method: String, host: String, target: String) {
        self.method = method
        self.host = host
        self.target = target
    }

    /// Approximate bytes the key occupies, for the cache's byte budget.
    var cost: Int { method.utf8.count + host.utf8.count + target.utf8.count + 48 }

    /// `GET host/target`.
    public var description: String { "\(method) \(host)\(target)" }
}
