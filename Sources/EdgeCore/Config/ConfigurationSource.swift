public import Foundation

/// Assembles the configuration a process runs with: file (or the embedded default), then `EDGE_*`
/// environment variables, then command-line flags.
public enum ConfigurationSource {
    /// Loads and validates a config file.
    /// - Throws: ``ConfigurationError`` (unreadable file, syntax or semantic errors).
    public static func load(file path: String) throws(ConfigurationError) -> EdgeConfiguration {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw ConfigurationError(source: path, issues: [.init(key: "file", message: "cannot read the config file: \(Self.reason(error))")])
        }
        return try ConfigurationLoader.load(text: text, source: path)
    }

    /// The configuration to run: `file` or the embedded default, with the environment and then `flags` applied.
    public static func resolve(
        file: String?,
        environment: [String: String] = ProcessInfo.processInfo.environment,
        flags: Overrides
    ) throws(ConfigurationError) -> EdgeConfiguration {
        var configuration = try file.map { path throws(ConfigurationError) in try load(file: path) } ?? .embeddedDefault
        configuration = try EnvironmentOverrides.apply(environment, to: configuration)
        configuration = try flags.apply(to: configuration, source: "command line", naming: .flags)
        if configuration.listeners.isEmpty {
            throw ConfigurationError(
                source: file ?? "command line",
                issues: [.init(key: "listener", message: "no listeners: add a [[listener]] table or pass --http / --https")]
            )
        }
        return configuration
    }

    private static func reason(_ error: any Error) -> String {
        let nsError = error as NSError
        if let underlying = nsError.userInfo[NSUnderlyingErrorKey] as? NSError, underlying.domain == NSPOSIXErrorDomain,
            let code = POSIXErrorCode(rawValue: Int32(underlying.code))
        {
            return String(cString: strerror(code.rawValue))
        }
        return nsError.localizedDescription
    }
}
