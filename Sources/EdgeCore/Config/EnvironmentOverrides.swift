import NIOCore

/// Applies `EDGE_*` environment variables over a configuration's top-level settings.
///
/// Flags are applied after this, so the order of precedence is: flags, then environment, then file.
public enum EnvironmentOverrides {
    /// The variables Edge reads, with what each overrides.
    public static let variables: [(name: String, meaning: String)] = [
        ("EDGE_THREADS", "threads"),
        ("EDGE_HTTP", "the plain listeners (HOST:PORT or none)"),
        ("EDGE_HTTPS", "the TLS listeners (HOST:PORT or none)"),
        ("EDGE_ADMIN", "admin.address (HOST:PORT or none)"),
        ("EDGE_STATE_DIR", "state_dir"),
        ("EDGE_LOG_LEVEL", "log_level"),
        ("EDGE_SHUTDOWN_TIMEOUT", "shutdown_timeout_seconds"),
        ("EDGE_MAX_CONNECTIONS", "limits.max_connections"),
        ("EDGE_MAX_IN_FLIGHT", "limits.max_in_flight"),
        ("EDGE_HTTP2_ENGINE", "http2_engine (nio or edge)"),
        ("EDGE_IO", "io (epoll or io_uring)"),
    ]

    /// Returns `configuration` with every `EDGE_*` variable of `environment` applied.
    /// - Throws: ``ConfigurationError`` naming each variable with a bad value.
    public static func apply(
        _ environment: [String: String],
        to configuration: EdgeConfiguration
    ) throws(ConfigurationError) -> EdgeConfiguration {
        var overrides = Overrides()
        overrides.threads = environment["EDGE_THREADS"]
        overrides.http = environment["EDGE_HTTP"]
        overrides.https = environment["EDGE_HTTPS"]
        overrides.admin = environment["EDGE_ADMIN"]
        overrides.stateDirectory = environment["EDGE_STATE_DIR"]
        overrides.logLevel = environment["EDGE_LOG_LEVEL"]
        overrides.shutdownTimeout = environment["EDGE_SHUTDOWN_TIMEOUT"]
        overrides.maxConnections = environment["EDGE_MAX_CONNECTIONS"]
        overrides.maxInFlight = environment["EDGE_MAX_IN_FLIGHT"]
        overrides.io = environment["EDGE_IO"]
        var config = try overrides.apply(to: configuration, source: "environment", naming: .environment)
        if let name = environment["EDGE_HTTP2_ENGINE"] {
            guard let engine = HTTP2Engine(rawValue: name) else {
                throw ConfigurationError(
                    source: "environment", issues: [.init(key: "EDGE_HTTP2_ENGINE", message: "expected \"nio\" or \"edge\", got \"\(name)\"")]
                )
            }
            config.http2Engine = engine
        }
        return config
    }
}

/// Textual overrides of top-level settings, shared by the environment and the command line.
public struct Overrides: Sendable {
    /// How to name a setting in error messages.
    public enum Naming: Sendable {
        /// `EDGE_THREADS`
        case environment
        /// `--threads`
        case flags
    }

    /// Thread count.
    public var threads: String?
    /// Plain listener address, or `none`.
    public var http: String?
    /// TLS listener address, or `none`.
    public var https: String?
    /// The admin listener's address, or `none`.
    public var admin: String?
    /// State folder.
    public var stateDirectory: String?
    /// Log level name.
    public var logLevel: String?
    /// Shutdown deadline in seconds.
    public var shutdownTimeout: String?
    /// Connection limit.
    public var maxConnections: String?
    /// In-flight request limit.
    public var maxInFlight: String?
    /// The transport, `epoll` or `io_uring`.
    public var io: String?

    /// Creates an empty set of overrides.
    public init() {}

    /// Applies the overrides, collecting every bad value: also a `state_dir` that exists and is not a folder,
    /// and a listener address another listener already uses.
    public func apply(
        to configuration: EdgeConfiguration,
        source: String,
        naming: Naming
    ) throws(ConfigurationError) -> EdgeConfiguration {
        var config = configuration
        var issues: [ConfigurationIssue] = []
        func name(_ env: String, _ flag: String) -> String { naming == .environment ? env : flag }
        // The same ranges as the config file's keys (ConfigurationLoader).
        func positive(_ text: String?, _ env: String, _ flag: String, upTo limit: Int) -> Int? {
            guard let text else { return nil }
            guard let value = Int(text), value > 0 else {
                issues.append(.init(key: name(env, flag), message: "expected a positive integer, got \"\(text)\""))
                return nil
            }
            guard value <= limit else {
                issues.append(.init(key: name(env, flag), message: "must be between 1 and \(limit), got \(value)"))
                return nil
            }
            return value
        }
        if let value = positive(threads, "EDGE_THREADS", "--threads", upTo: 1024) { config.threads = value }
        if let text = io {
            if let transport = IOTransport(rawValue: text) { config.io = transport } else {
                issues.append(.init(key: name("EDGE_IO", "--io"), message: "\(IOTransport.expected), got \"\(text)\""))
            }
        }
        if let value = positive(maxConnections, "EDGE_MAX_CONNECTIONS", "--max-connections", upTo: 10_000_000) {
            config.limits.maxConnections = value
        }
        if let value = positive(maxInFlight, "EDGE_MAX_IN_FLIGHT", "--max-in-flight", upTo: 10_000_000) { config.limits.maxInFlight = value }
        if let text = shutdownTimeout {
            if let value = Int(text), (0...3600).contains(value) { config.shutdownTimeout = .seconds(Int64(value)) } else {
                issues.append(.init(
                    key: name("EDGE_SHUTDOWN_TIMEOUT", "--shutdown-timeout"),
                    message: "expected a number of seconds between 0 and 3600, got \"\(text)\""
                ))
            }
        }
        if let level = logLevel {
            if LogLevelName.parse(level) != nil { config.logLevel = level } else {
                issues.append(.init(key: name("EDGE_LOG_LEVEL", "--log-level"), message: "expected one of \(LogLevelName.allNames), got \"\(level)\""))
            }
        }
        for (text, isTLS, key) in [(http, false, name("EDGE_HTTP", "--http")), (https, true, name("EDGE_HTTPS", "--https"))] {
            guard let text else { continue }
            let kept = config.listeners.filter { ($0.tls != nil) != isTLS }
            if text == "none" {
                config.listeners = kept
            } else if let address = HostPort(parsing: text) {
                if let other = kept.first(where: { $0.address.conflicts(with: address) }) {
                    issues.append(.init(key: key, message: "another listener already listens on \(other.address)"))
                }
                let tls = isTLS ? (config.listeners.first { $0.tls != nil }?.tls ?? .selfSigned) : nil
                config.listeners = kept + [ListenerConfiguration(address: address, tls: tls)]
            } else {
                issues.append(.init(key: key, message: "expected HOST:PORT (e.g. 127.0.0.1:8080, [::1]:0) or none, got \"\(text)\""))
            }
        }
        if let text = admin {
            if text == "none" {
                config.admin = nil
            } else if let address = HostPort(parsing: text) {
                if let other = config.listeners.first(where: { $0.address.conflicts(with: address) }) {
                    issues.append(.init(
                        key: name("EDGE_ADMIN", "--admin"),
                        message: "a public listener already listens on \(other.address): the admin listener needs an address of its own"
                    ))
                }
                var settings = config.admin ?? AdminConfiguration()
                settings.address = address
                config.admin = settings
            } else {
                issues.append(.init(
                    key: name("EDGE_ADMIN", "--admin"), message: "expected HOST:PORT (e.g. 127.0.0.1:9901) or none, got \"\(text)\""
                ))
            }
        }
        if let stateDirectory {
            if let problem = ConfigurationFileChecks.stateDirectoryProblem(
                stateDirectory, storesCertificate: config.listeners.contains { $0.tls == .selfSigned }
            ) {
                issues.append(.init(key: name("EDGE_STATE_DIR", "--state-dir"), message: problem))
            } else {
                config.stateDirectory = stateDirectory
            }
        }
        if !issues.isEmpty { throw ConfigurationError(source: source, issues: issues) }
        return config
    }
}

/// The log level names accepted in config, environment and flags.
public enum LogLevelName {
    /// Every accepted name, for messages.
    public static let allNames = "trace, debug, info, notice, warning, error, critical"

    /// Returns the canonical name when `text` is a known level.
    public static func parse(_ text: String) -> String? {
        let lower = text.lowercased()
        return allNames.split(separator: ",").map { $0.trimmingPrefix(" ") }.contains { $0 == lower } ? lower : nil
    }
}
