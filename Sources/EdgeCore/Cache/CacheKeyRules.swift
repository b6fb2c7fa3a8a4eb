/// How a route's requests map to cache keys, beyond method, host and target: which query parameters count and in
/// what order, and which request fields and cookies split one URL into several stored responses.
///
/// Fields and cookies go into the secondary key (as `Vary` does), so that a purge of the URL still reaches them all.
struct CacheKeyRules: Sendable, Equatable {
    enum Query: String, Sendable {
        /// The query as received.
        case asIs = "as-is"
        /// Parameters sorted by name (`?b=2&a=1` and `?a=1&b=2` share an entry).
        case sorted
        /// No query at all: every query of a path shares its entry.
        case ignored = "ignore"
    }

    var query: Query = .asIs
    /// Only these parameters count (names; a trailing `*` matches a prefix); empty: all of them.
    var include: [String] = []
    /// These parameters do not count (e.g. `utm_*`).
    var exclude: [String] = []
    /// Request fields (lower case) and cookies whose values are part of the key.
    var fields: [String] = []
    var cookies: [String] = []

    init(
        query: Query = .asIs, include: [String] = [], exclude: [String] = [], fields: [String] = [], cookies: [String] = []
    ) {
        self.query = query
        self.include = include
        self.exclude = exclude
        self.fields = fields
        self.cookies = cookies
    }

    /// A route's rules as configured (``HTTPCacheConfiguration``, whose loader has checked `key_query`).
    init(configuration: HTTPCacheConfiguration) {
        self.init(
            query: Query(rawValue: configuration.keyQuery) ?? .asIs, include: configuration.keyQueryInclude,
            exclude: configuration.keyQueryExclude, fields: configuration.keyFields, cookies: configuration.keyCookies
        )
    }

    /// Whether the key needs more of the request than its target (so the fast paths, which see only the target
    /// and a few fields, leave such requests to the full path).
    var needsFields: Bool { !fields.isEmpty || !cookies.isEmpty }

    /// The target as the key sees it, for a path (in normal form) and a query.
    func target(path: Substring, query: Substring?) -> String {
        guard let query else { return String(path) }
        guard self.query != .asIs || !include.isEmpty || !exclude.isEmpty else { return String(path) + "?" + query }
        if self.query == .ignored { return String(path) }
        var parameters = query.split(separator: "&", omittingEmptySubsequences: true)
        // Names are compared decoded (`%61` is `a` to the upstream, so it is to the key too).
        parameters.removeAll { parameter in
            let name = Self.decodedName(parameter)
            return (!include.isEmpty && !Self.matches(include, name[...])) || Self.matches(exclude, name[...])
        }
        if self.query == .sorted {
            // By name only, and stable: repeated parameters keep their order, which upstreams read differently
            // (the first, the last, or all).
            parameters.sort { Self.decodedName($0).utf8.lexicographicallyPrecedes(Self.decodedName($1).utf8) }
        }
        return parameters.isEmpty ? String(path) : String(path) + "?" + parameters.joined(separator: "&")
    }

    /// A query parameter's name with its %-escapes decoded (and `+` as a space), as an upstream reads it.
    static func decodedName(_ parameter: Substring) -> String {
        let name = parameter.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
        guard name.utf8.contains(where: { $0 == UInt8(ascii: "%") || $0 == UInt8(ascii: "+") }) else { return String(name) }
        var bytes: [UInt8] = []
        var utf8 = name.utf8[...]
        while let byte = utf8.popFirst() {
            if byte == UInt8(ascii: "%"), utf8.count >= 2,
                let value = UInt8(String(decoding: utf8.prefix(2), as: UTF8.self), radix: 16)
            {
                bytes.append(value)
                utf8 = utf8.dropFirst(2)
            } else {
                bytes.append(byte == UInt8(ascii: "+") ? UInt8(ascii: " ") : byte)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    private static func matches(_ patterns: [String], _ name: Substring) -> Bool {
        patterns.contains { pattern in
            pattern.hasSuffix("*") ? name.utf8.starts(with: pattern.utf8.dropLast()) : name.utf8.elementsEqual(pattern.utf8)
        }
    }

    /// The part of the secondary key the configured fields and cookies make; empty when none is configured;
    /// `nil` when a configured cookie is ambiguous (given twice, in one `Cookie` line or several), since upstreams
    /// would read different values from it than the key did: such a request goes to the upstream and its answer
    /// is not stored.
    func extras(_ fields: FieldBlock) -> String? {
        guard needsFields else { return "" }
        var parts: [String] = []
        for name in self.fields {
            parts.append(name + "=" + fields.values(of: name).joined(separator: ","))
        }
        if !cookies.isEmpty {
            // Every pair of every Cookie line (HTTP/2 sends one line per cookie), names and values trimmed.
            let pairs = fields.values(of: "cookie").flatMap { $0.split(separator: ";") }.map { pair in
                let halves = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                return (name: halves[0].trimming(), value: halves.count > 1 ? halves[1].trimming() : "")
            }
            for cookie in cookies {
                let matching = pairs.filter { $0.name.utf8.elementsEqual(cookie.utf8) }
                guard matching.count <= 1 else { return nil }
                parts.append("cookie:" + cookie + "=" + (matching.first.map { String($0.value) } ?? "\u{0}"))
            }
        }
        return "\u{2}" + parts.joined(separator: "\u{1}")
    }
}
