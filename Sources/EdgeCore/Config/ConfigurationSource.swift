public import Foundation

/// Assembles the configuration a process runs with: file (or the embedded default), then `EDGE_*`
/// environment variables, then command-line flags.
public enum ConfigurationSource {
    /// Loads and validates a config file, and checks the files and folders it names
    /// (``ConfigurationFileChecks``): what `edge check-config` reports, and what start-up refuses.
    /// - Throws: ``ConfigurationError`` (unreadable file, syntax or semantic errors, missing or unusable files).
    public static func load(file path: String) throws(ConfigurationError) -> EdgeConfiguration {
        var isDirectory: ObjCBool = false
        let problem: String?
        if !FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) {
            problem = "no such file"
        } else if isDirectory.boolValue {
            problem = "is a directory"
        } else if !FileManager.default.isReadableFile(atPath: path) {
            problem = "permission denied"
        } else {
            problem = nil
        }
        guard problem == nil, let data = FileManager.default.contents(atPath: path) else {
            throw ConfigurationError(source: path, issues: [.init(key: "", message: "cannot read the config file: \(problem ?? "read error")")])
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw ConfigurationError(source: path, issues: [.init(key: "", message: "the config file is not UTF-8 text")])
        }
        return try ConfigurationLoader.load(text: text, source: path, checkingFiles: true)
    }

    /// The embedded default, plus `./public` served under `/public` when that folder exists.
    public static func embeddedDefault(directory: String = FileManager.default.currentDirectoryPath) -> EdgeConfiguration {
        var configuration = EdgeConfiguration.embeddedDefault
        let publicFolder = (directory as NSString).appendingPathComponent("public")
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: publicFolder, isDirectory: &isDirectory), isDirectory.boolValue {
            configuration.routes.append(RouteConfiguration(path: "/public", handler: .static(StaticConfiguration(root: publicFolder))))
        }
        return configuration
    }

    /// The configuration to run: `file` or the embedded default, with the environment and then `flags` applied.
    public static func resolve(
        file: String?,
        environment: [String: String] = ProcessInfo.processInfo.environment,
        flags: Overrides
    ) throws(ConfigurationError) -> EdgeConfiguration {
        var configuration = try file.map { path throws(ConfigurationError) in try load(file: path) } ?? embeddedDefault()
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
}
