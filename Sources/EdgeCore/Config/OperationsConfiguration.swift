import Foundation
import TOMLKit

/// The admin listener (`[admin]`): metrics, status, the running configuration and a reload trigger, on an address
/// of its own — never on the public listeners.
public struct AdminConfiguration: Sendable, Equatable {
    /// Where it listens; loopback unless configured otherwise.
    public var address: HostPort = HostPort(host: "127.0.0.1", port: 9901)
    /// Clients it answers (others get 403); loopback by default.
    public var allow: [AddressRange] = AdminConfiguration.loopback
    /// When set, every request must carry `Authorization: Bearer <token>` (else 401).
    public var token: String?

    public static let loopback = [AddressRange(parsing: "127.0.0.0/8")!, AddressRange(parsing: "::1")!]

    public init() {}
}

extension TOMLReader {
    mutating func readAdmin(_ table: TOMLTable, listeners: [ListenerConfiguration]) -> AdminConfiguration? {
        checkKeys(table, path: "admin", allowed: ["address", "allow", "token", "token_file"])
        var admin = AdminConfiguration()
        if let text = string(table, "address", path: "admin.address") {
            guard let address = HostPort(parsing: text) else {
                fail("admin.address", "expected HOST:PORT (e.g. \"127.0.0.1:9901\"), got \"\(text)\"")
                return nil
            }
            admin.address = address
        }
        if let clash = listeners.first(where: { $0.address.conflicts(with: admin.address) }) {
            fail("admin.address", "a public listener already listens on \(clash.address): the admin listener needs an address of its own")
        }
        if table.contains(key: "allow") {
            admin.allow = []
            for (index, text) in strings(table, "allow", path: "admin.allow").enumerated() {
                if let range = AddressRange(parsing: text) { admin.allow.append(range) } else {
                    fail("admin.allow[\(index)]", "expected an IP address or CIDR range (e.g. \"10.0.0.0/8\", \"::1\"), got \"\(text)\"")
                }
            }
        }
        if let token = string(table, "token", path: "admin.token") {
            if token.utf8.count < 16 || !token.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) {
                fail("admin.token", "expected at least 16 visible ASCII characters, no spaces")
            } else {
                admin.token = token
            }
        }
        if let file = string(table, "token_file", path: "admin.token_file") {
            if admin.token != nil {
                fail("admin.token_file", "set token or token_file, not both")
            } else if let text = try? String(contentsOfFile: file, encoding: .utf8) {
                let token = text.trimmingCharacters(in: .whitespacesAndNewlines)
                if token.utf8.count < 16 || !token.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) {
                    fail("admin.token_file", "\(file): expected a token of at least 16 visible ASCII characters")
                } else {
                    admin.token = token
                }
            } else {
                fail("admin.token_file", "cannot read \(file)")
            }
        }
        return admin
    }

    mutating func readTracing(_ table: TOMLTable) -> TracingConfiguration {
        checkKeys(table, path: "tracing", allowed: ["endpoint", "sampling_ratio", "service_name"])
        var tracing = TracingConfiguration()
        if let endpoint = string(table, "endpoint", path: "tracing.endpoint") {
            if let url = URL(string: endpoint), ["http", "https"].contains(url.scheme ?? ""), url.host != nil {
                tracing.endpoint = endpoint
            } else {
                fail("tracing.endpoint", "expected an http:// or https:// URL of an OTLP/HTTP receiver (e.g. \"http://127.0.0.1:4318/v1/traces\"), got \"\(endpoint)\"")
            }
        }
        if table.contains(key: "sampling_ratio") {
            let value = table["sampling_ratio"]
            let ratio = value?.double ?? value?.int.map(Double.init)
            if let ratio, (0...1).contains(ratio) { tracing.samplingRatio = ratio } else {
                fail("tracing.sampling_ratio", "expected a number from 0 to 1")
            }
        }
        if let name = string(table, "service_name", path: "tracing.service_name") {
            if name.isEmpty { fail("tracing.service_name", "must not be empty") } else { tracing.serviceName = name }
        }
        return tracing
    }

    mutating func readAccessLog(_ table: TOMLTable) -> AccessLogConfiguration {
        checkKeys(table, path: "access_log", allowed: ["path", "format", "redact_query", "max_queued_bytes"])
        var log = AccessLogConfiguration()
        if let path = string(table, "path", path: "access_log.path") {
            if path.isEmpty { fail("access_log.path", "expected \"stdout\" or a file path") } else { log.path = path }
        }
        if let format = string(table, "format", path: "access_log.format") {
            if let parsed = AccessLogConfiguration.Format(rawValue: format) { log.format = parsed } else {
                fail("access_log.format", "expected \"json\" or \"combined\", got \"\(format)\"")
            }
        }
        if table.contains(key: "redact_query") {
            log.redactQuery = strings(table, "redact_query", path: "access_log.redact_query")
        }
        if let bytes = int(table, "max_queued_bytes", path: "access_log.max_queued_bytes", range: 4096...(1 << 30)) {
            log.maxQueuedBytes = bytes
        }
        return log
    }
}
