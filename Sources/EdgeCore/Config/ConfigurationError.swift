/// One problem found in a configuration: the key it concerns, the line where the parser saw it, and what is wrong.
public struct ConfigurationIssue: Sendable, Equatable, CustomStringConvertible {
    /// Dotted key path, e.g. `route[1].demo.delay_ms`, or an environment variable or flag name.
    public var key: String
    /// 1-based line in the config file, when known.
    public var line: Int?
    /// What is wrong, in words a user can act on.
    public var message: String

    /// Creates an issue.
    public init(key: String, line: Int? = nil, message: String) {
        self.key = key
        self.line = line
        self.message = message
    }

    /// `LINE: key: message` (or `key: message` without a line).
    public var description: String {
        if let line { return "\(line): \(key): \(message)" }
        return "\(key): \(message)"
    }
}

/// Every problem found in a configuration source; thrown by ``ConfigurationLoader``.
public struct ConfigurationError: Error, Sendable, CustomStringConvertible {
    /// Name of the file (or `environment`, `command line`) the issues come from.
    public var source: String
    /// The problems, in file order.
    public var issues: [ConfigurationIssue]

    /// Creates an error.
    public init(source: String, issues: [ConfigurationIssue]) {
        self.source = source
        self.issues = issues
    }

    /// One `source:line: key: message` line per issue (`source: key: message` when the line is unknown).
    public var description: String {
        issues.map { issue in
            let key = issue.key.isEmpty ? "" : " \(issue.key):"
            let location = issue.line.map { "\(source):\($0):" } ?? "\(source):"
            return "\(location)\(key) \(issue.message)"
        }.joined(separator: "\n")
    }
}
