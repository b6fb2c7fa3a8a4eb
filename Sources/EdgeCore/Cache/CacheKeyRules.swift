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

    /// Whether the key needs more of the request than its target (so the fast paths, which see only the target
    /// and a few fields, leave such requests to the full path).
    var needsFields: Bool { !fields.isEmpty || !cookies.isEmpty }

    /// The target as the key sees it.
    func target(_ target: Substring) -> String {
        guard query != .asIs || !include.isEmpty || !exclude.isEmpty,
            let mark = target.utf8.firstIndex(of: UInt8(ascii: "?"))
        else { return String(target) }
        let path = target[..<mark]
        if query == .ignored { return String(path) }
        var parameters = target[target.utf8.index(after: mark)...].split(separator: "&", omittingEmptySubsequences: true)
        parameters.removeAll { parameter in
            let name = parameter.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
            return (!include.isEmpty && !Self.matches(include, name)) || Self.matches(exclude, name)
        }
        if query == .sorted {
            parameters.sort { a, b in
                let (nameA, nameB) = (a.split(separator: "=", maxSplits: 1).first ?? "", b.split(separator: "=", maxSplits: 1).first ?? "")
                return nameA == nameB ? a.utf8.lexicographicallyPrecedes(b.utf8) : nameA.utf8.lexicographicallyPrecedes(nameB.utf8)
            }
        }
        return parameters.isEmpty ? String(path) : String(path) + "?" + parameters.joined(separator: "&")
    }

    private static func matches(_ patterns: [String], _ name: Substring) -> Bool {
        patterns.contains { pattern in
            pattern.hasSuffix("*") ? name.utf8.starts(with: pattern.utf8.dropLast()) : name.utf8.elementsEqual(pattern.utf8)
        }
    }

    /// The part of the secondary key the configured fields and cookies make; empty when none is configured.
    func extras(_ fields: FieldBlock) -> String {
        guard needsFields else { return "" }
        var parts: [String] = []
        for name in self.fields {
            parts.append(name + "=" + fields.values(of: name).joined(separator: ","))
        }
        if !cookies.isEmpty {
            let pairs = fields.values(of: "cookie").flatMap { $0.split(separator: ";") }.map { $0.trimming() }
            for cookie in cookies {
                let value = pairs.first { $0.hasPrefix(cookie + "=") }.map { String($0.dropFirst(cookie.utf8.count + 1)) }
                parts.append("cookie:" + cookie + "=" + (value ?? "\u{0}"))
            }
        }
        return "\u{2}" + parts.joined(separator: "\u{1}")
    }
}
