import NIOCore
import TOMLKit

/// Reads an Edge configuration from TOML text, collecting every problem instead of stopping at the first.
public enum ConfigurationLoader {
    /// Parses `text` (the contents of `source`, used in messages) into a configuration.
    /// - Parameter checkingFiles: Also check every file and folder the configuration names
    ///   (``ConfigurationFileChecks``: certificates, keys, static roots, htpasswd files, `state_dir`), as
    ///   `edge check-config` and start-up do; without it, nothing on disk is looked at.
    /// - Throws: ``ConfigurationError`` listing every issue, each with its key and line.
    public static func load(text: String, source: String, checkingFiles: Bool = false) throws(ConfigurationError) -> EdgeConfiguration {
        let locator = TOMLKeyLocator(text: text)
        let findings = TOMLPreScanner.scan(text)
        let preIssues = findings.map { finding in
            switch finding.kind {
            case .nulEscape:
                ConfigurationIssue(
                    key: locator.key(before: finding.line) ?? "syntax", line: finding.line,
                    message: "a string with a NUL character (\\u0000) cannot be used: it would be cut short there"
                )
            case .nulByte:
                ConfigurationIssue(
                    key: "syntax", line: finding.line,
                    message: "the file contains a NUL byte, which TOML does not allow: everything after it would be ignored"
                )
            case .headerWithoutKey:
                ConfigurationIssue(
                    key: "syntax", line: finding.line,
                    message: "a table header must start with a key (a bare key of A-Z a-z 0-9 _ -, or a quoted one): [name] or [[name]]"
                )
            case .braceInArray:
                ConfigurationIssue(
                    key: locator.key(before: finding.line) ?? "syntax", line: finding.line,
                    message: "syntax: expected an array element or the closing ']', saw '}'"
                )
            }
        }
        if findings.contains(where: { $0.kind != .nulEscape }) {
            throw ConfigurationError(source: source, issues: preIssues)
        }
        let table: TOMLTable
        do {
            table = try TOMLTable(string: text)
        } catch let error as TOMLParseError {
            throw ConfigurationError(
                source: source,
                issues: [.init(key: "syntax", line: error.source.begin.line, message: error.description)]
            )
        } catch {
            throw ConfigurationError(source: source, issues: [.init(key: "syntax", message: "\(error)")])
        }
        var reader = TOMLReader(locator: locator)
        let configuration = reader.readConfiguration(table)
        var issues = preIssues + reader.issues
        if checkingFiles {
            let fileIssues = ConfigurationFileChecks.issues(for: reader.fileReferences).map { issue in
                var issue = issue
                issue.line = locator.line(of: issue.key)
                return issue
            }
            // A value cut short at a NUL is not worth a second, confusing message about the file it then names.
            issues += fileIssues.filter { issue in !preIssues.contains { $0.line == issue.line } }
        }
        if !issues.isEmpty {
            throw ConfigurationError(source: source, issues: issues.sorted { ($0.line ?? 0) < ($1.line ?? 0) })
        }
        return configuration
    }
}

/// Walks a parsed TOML table, converting values and recording issues with their key paths and lines.
struct TOMLReader {
    let locator: TOMLKeyLocator
    var issues: [ConfigurationIssue] = []
    /// The files and folders the configuration names, for ``ConfigurationFileChecks``.
    var fileReferences: [ConfigurationFileChecks.FileReference] = []

    init(locator: TOMLKeyLocator) {
        self.locator = locator
    }

    mutating func fail(_ path: String, _ message: String) {
        issues.append(.init(key: path, line: locator.line(of: path), message: message))
    }

    mutating func readConfiguration(_ root: TOMLTable) -> EdgeConfiguration {
        var config = EdgeConfiguration()
        checkKeys(
            root, path: "",
            allowed: ["threads", "state_dir", "log_level", "server_name", "shutdown_timeout_seconds", "http2_engine", "io",
                      "shutdown_delay_seconds", "listener", "limits", "timeouts", "cache", "route", "client_address", "upstream",
                      "admin", "access_log", "tracing", "site", "unknown_host", "tls", "acme"]
        )
        config.threads = int(root, "threads", path: "threads", range: 1...1024)
        config.stateDirectory = string(root, "state_dir", path: "state_dir")
        if let level = string(root, "log_level", path: "log_level") {
            if LogLevelName.parse(level) == nil {
                fail("log_level", "expected one of \(LogLevelName.allNames), got \"\(level)\"")
            } else {
                config.logLevel = level
            }
        }
        if let name = string(root, "server_name", path: "server_name") {
            if HeaderValue.isValid(name) { config.serverName = name } else {
                fail("server_name", "must not contain control characters")
            }
        }
        if let seconds = int(root, "shutdown_timeout_seconds", path: "shutdown_timeout_seconds", range: 0...3600) {
            config.shutdownTimeout = .seconds(Int64(seconds))
        }
        if let name = string(root, "http2_engine", path: "http2_engine") {
            if let engine = HTTP2Engine(rawValue: name) { config.http2Engine = engine } else {
                fail("http2_engine", "expected \"nio\" or \"edge\", got \"\(name)\"")
            }
        }
        if let name = string(root, "io", path: "io") {
            if let transport = IOTransport(rawValue: name) { config.io = transport } else {
                fail("io", "\(IOTransport.expected), got \"\(name)\"")
            }
        }
        if let seconds = int(root, "shutdown_delay_seconds", path: "shutdown_delay_seconds", range: 0...3600) {
            config.shutdownDelay = .seconds(Int64(seconds))
        }
        var listenerKeys: [String] = []
        for (index, table) in tables(root, "listener", path: "listener").enumerated() {
            let path = "listener[\(index)]"
            guard let listener = readListener(table, path: path) else { continue }
            if let clash = config.listeners.firstIndex(where: { $0.address.conflicts(with: listener.address) }) {
                let other = config.listeners[clash].address
                let line = locator.line(of: "\(listenerKeys[clash]).address").map { " (line \($0))" } ?? ""
                let covers: String
                if other.host.lowercased() == listener.address.host.lowercased() {
                    covers = ""
                } else if other.boundAddress == listener.address.boundAddress {
                    covers = ", the same address (\(other.boundAddress))"
                } else {
                    covers = ", which includes \(listener.address)"
                }
                fail("\(path).address", "\(listenerKeys[clash])\(line) already listens on \(other)\(covers)")
            }
            config.listeners.append(listener)
            listenerKeys.append(path)
        }
        if let directory = config.stateDirectory {
            let storesCertificate = config.listeners.contains { $0.tls == .selfSigned }
            fileReferences.append(.stateDirectory(directory, key: "state_dir", storesCertificate: storesCertificate))
        }
        if let limits = subtable(root, "limits", path: "limits") { config.limits = readLimits(limits) }
        if let timeouts = subtable(root, "timeouts", path: "timeouts") { config.timeouts = readTimeouts(timeouts) }
        if let cache = subtable(root, "cache", path: "cache") { config.cache = readCache(cache) }
        if let clients = subtable(root, "client_address", path: "client_address") {
            checkKeys(clients, path: "client_address", allowed: ["trusted_proxies"])
            for (index, text) in strings(clients, "trusted_proxies", path: "client_address.trusted_proxies").enumerated() {
                if let range = AddressRange(parsing: text) { config.trustedProxies.append(range) } else {
                    fail("client_address.trusted_proxies[\(index)]", "expected an IP address or CIDR range (e.g. \"10.0.0.0/8\", \"::1\"), got \"\(text)\"")
                }
            }
        }
        readUpstreams(root, into: &config)
        if let admin = subtable(root, "admin", path: "admin") { config.admin = readAdmin(admin, listeners: config.listeners) }
        if let log = subtable(root, "access_log", path: "access_log") { config.accessLog = readAccessLog(log) }
        if let tracing = subtable(root, "tracing", path: "tracing") { config.tracing = readTracing(tracing) }
        config.routes = readRoutes(root, path: "route")
        readSites(root, into: &config)
        if let tls = subtable(root, "tls", path: "tls") { config.tlsPolicy = readTLSPolicy(tls) }
        if let acme = subtable(root, "acme", path: "acme") { config.acme = readACME(acme) }
        if config.acme == nil, let index = config.sites.firstIndex(where: \.acme) {
            fail("site[\(index)].tls", "tls = \"acme\" needs an [acme] table naming the CA's directory (e.g. directory = \"https://acme-v02.api.letsencrypt.org/directory\")")
        }
        if root.contains(key: "unknown_host") {
            let value = root["unknown_host"]!.tomlValue
            let text = value.string ?? value.int.map(String.init)
            switch text {
            case "default": config.unknownHost = .defaultSite
            case "421", "misdirected": config.unknownHost = .misdirected
            case "404", "not_found": config.unknownHost = .notFound
            default: fail("unknown_host", "expected \"default\", 421 or 404, got \(describe(value))")
            }
            if config.unknownHost == .defaultSite, config.sites.isEmpty == false, !config.sites.contains(where: \.isDefault), config.routes.isEmpty {
                fail("unknown_host", "is \"default\" but no site has default = true and there are no top-level [[route]] tables")
            }
            if config.unknownHost != .defaultSite {
                if config.sites.isEmpty {
                    fail("unknown_host", "applies to hosts no [[site]] names, and there are no sites: every request would get it")
                } else if !config.routes.isEmpty {
                    fail("unknown_host", "top-level [[route]] tables answer the hosts no site names; with unknown_host = \(config.unknownHost.rawValue) they would answer nothing: move them into a site")
                } else if let index = config.sites.firstIndex(where: \.isDefault) {
                    fail("unknown_host", "site[\(index)] has default = true and answers every host no site names; drop one of the two")
                }
            }
        }
        checkProxyRoutes(config)
        return config
    }

    mutating func readListener(_ table: TOMLTable, path: String) -> ListenerConfiguration? {
        checkKeys(table, path: path, allowed: ["address", "tls", "certificate", "private_key", "proxy_protocol", "proxy_protocol_from"])
        guard var listener = readListenerAddressAndTLS(table, path: path) else { return nil }
        listener.proxyProtocol = bool(table, "proxy_protocol", path: "\(path).proxy_protocol") ?? false
        for (index, text) in strings(table, "proxy_protocol_from", path: "\(path).proxy_protocol_from").enumerated() {
            if let range = AddressRange(parsing: text) { listener.proxyProtocolFrom.append(range) } else {
                fail("\(path).proxy_protocol_from[\(index)]", "expected an IP address or CIDR range (e.g. \"10.0.0.0/8\"), got \"\(text)\"")
            }
        }
        if listener.proxyProtocol, !table.contains(key: "proxy_protocol_from") {
            fail("\(path).proxy_protocol_from", "is required with proxy_protocol = true: the addresses of the balancers that send the header")
        } else if !listener.proxyProtocol, table.contains(key: "proxy_protocol_from") {
            fail("\(path).proxy_protocol_from", "applies only with proxy_protocol = true")
        }
        return listener
    }

    mutating func readListenerAddressAndTLS(_ table: TOMLTable, path: String) -> ListenerConfiguration? {
        guard let text = string(table, "address", path: "\(path).address", required: true) else { return nil }
        guard let address = HostPort(parsing: text) else {
            fail("\(path).address", "expected HOST:PORT with a port from 0 to 65535 (e.g. \"127.0.0.1:8443\", \"[::1]:0\"), got \"\(text)\"")
            return nil
        }
        let tls = bool(table, "tls", path: "\(path).tls") ?? false
        let certificate = string(table, "certificate", path: "\(path).certificate")
        let key = string(table, "private_key", path: "\(path).private_key")
        switch (tls, certificate, key) {
        case (false, nil, nil):
            return ListenerConfiguration(address: address, tls: nil)
        case (false, _, _):
            fail("\(path).tls", "certificate and private_key need tls = true")
            return nil
        case (true, nil, nil):
            return ListenerConfiguration(address: address, tls: .selfSigned)
        case (true, let certificate?, let key?):
            fileReferences.append(.tlsPair(
                certificate: certificate, certificateKey: "\(path).certificate", privateKey: key, privateKeyKey: "\(path).private_key"
            ))
            return ListenerConfiguration(address: address, tls: .files(certificate: certificate, privateKey: key))
        case (true, nil, _):
            fail("\(path).certificate", "private_key is set but certificate is missing")
            return nil
        case (true, _, nil):
            fail("\(path).private_key", "certificate is set but private_key is missing")
            return nil
        }
    }

    mutating func readLimits(_ table: TOMLTable) -> LimitsConfiguration {
        var limits = LimitsConfiguration()
        checkKeys(
            table, path: "limits",
            allowed: ["max_connections", "max_connections_per_ip", "max_in_flight", "max_header_bytes", "max_header_fields",
                      "max_uri_bytes", "max_body_bytes", "http2_max_concurrent_streams", "http2_header_table_size",
                      "max_in_flight_per_client", "password_check_threads", "password_check_queue",
                      "max_compressing_responses"]
        )
        if let value = int(table, "max_in_flight_per_client", path: "limits.max_in_flight_per_client", range: 0...10_000_000) {
            limits.maxInFlightPerClient = value
        }
        if let value = int(table, "password_check_threads", path: "limits.password_check_threads", range: 1...64) { limits.passwordCheckThreads = value }
        if let value = int(table, "password_check_queue", path: "limits.password_check_queue", range: 1...100_000) { limits.passwordCheckQueue = value }
        if let value = int(table, "max_compressing_responses", path: "limits.max_compressing_responses", range: 0...1_000_000) {
            limits.maxCompressingResponses = value
        }
        if let value = int(table, "http2_header_table_size", path: "limits.http2_header_table_size", range: 0...(1 << 20)) { limits.http2HeaderTableSize = value }
        if let value = int(table, "max_connections_per_ip", path: "limits.max_connections_per_ip", range: 0...10_000_000) { limits.maxConnectionsPerIP = value }
        if let value = int(table, "max_header_fields", path: "limits.max_header_fields", range: 1...10_000) { limits.maxHeaderFields = value }
        if let value = int(table, "max_uri_bytes", path: "limits.max_uri_bytes", range: 16...(80 * 1024)) { limits.maxURIBytes = value }
        if let value = int(table, "max_connections", path: "limits.max_connections", range: 1...10_000_000) { limits.maxConnections = value }
        if let value = int(table, "max_in_flight", path: "limits.max_in_flight", range: 1...10_000_000) { limits.maxInFlight = value }
        if let value = int(table, "max_header_bytes", path: "limits.max_header_bytes", range: 1024...(80 * 1024)) { limits.maxHeaderBytes = value }
        if let value = int(table, "max_body_bytes", path: "limits.max_body_bytes", range: 0...(1 << 40)) { limits.maxBodyBytes = value }
        if let value = int(table, "http2_max_concurrent_streams", path: "limits.http2_max_concurrent_streams", range: 1...10_000) { limits.http2MaxConcurrentStreams = value }
        return limits
    }

    mutating func readTimeouts(_ table: TOMLTable) -> TimeoutsConfiguration {
        var timeouts = TimeoutsConfiguration()
        checkKeys(
            table, path: "timeouts",
            allowed: ["tls_handshake_seconds", "keepalive_seconds", "request_head_seconds", "request_body_grace_seconds",
                      "request_body_min_bytes_per_second", "send_seconds"]
        )
        if let value = int(table, "request_head_seconds", path: "timeouts.request_head_seconds", range: 1...3600) { timeouts.requestHead = .seconds(Int64(value)) }
        if let value = int(table, "request_body_grace_seconds", path: "timeouts.request_body_grace_seconds", range: 1...3600) { timeouts.requestBodyGrace = .seconds(Int64(value)) }
        if let value = int(table, "request_body_min_bytes_per_second", path: "timeouts.request_body_min_bytes_per_second", range: 0...(1 << 30)) { timeouts.requestBodyMinRate = value }
        if let value = int(table, "send_seconds", path: "timeouts.send_seconds", range: 1...3600) { timeouts.send = .seconds(Int64(value)) }
        if let value = int(table, "tls_handshake_seconds", path: "timeouts.tls_handshake_seconds", range: 1...3600) { timeouts.tlsHandshake = .seconds(Int64(value)) }
        if let value = int(table, "keepalive_seconds", path: "timeouts.keepalive_seconds", range: 1...86_400) { timeouts.keepalive = .seconds(Int64(value)) }
        return timeouts
    }

    mutating func readCache(_ table: TOMLTable) -> CacheConfiguration {
        var cache = CacheConfiguration()
        checkKeys(table, path: "cache", allowed: ["max_entries", "max_bytes", "max_entry_bytes", "ttl_seconds", "admission"])
        if let value = int(table, "max_entries", path: "cache.max_entries", range: 0...100_000_000) { cache.maxEntries = value }
        if let value = int(table, "max_bytes", path: "cache.max_bytes", range: 0...(1 << 44)) { cache.maxBytes = value }
        if let value = int(table, "max_entry_bytes", path: "cache.max_entry_bytes", range: 0...(1 << 40)) { cache.maxEntryBytes = value }
        if let value = int(table, "ttl_seconds", path: "cache.ttl_seconds", range: 0...(365 * 86_400)) { cache.ttl = .seconds(Int64(value)) }
        if let value = string(table, "admission", path: "cache.admission") {
            switch value {
            case "tinylfu": cache.admission = true
            case "lru": cache.admission = false
            default: fail("cache.admission", "expected \"tinylfu\" or \"lru\", got \"\(value)\"")
            }
        }
        return cache
    }

    mutating func readRoute(_ table: TOMLTable, path: String) -> RouteConfiguration? {
        let handlerKeys = ["demo", "respond", "static", "proxy", "websocket"]
        checkKeys(table, path: path, allowed: ["path", "match", "allow", "deny", "cache_ttl_seconds", "rate_limit", "basic_auth"] + handlerKeys)
        let rateLimit = readRateLimit(table, path: "\(path).rate_limit")
        let basicAuth = readBasicAuth(table, path: "\(path).basic_auth")
        let prefix = string(table, "path", path: "\(path).path", required: true)
        if let prefix, !prefix.hasPrefix("/") {
            fail("\(path).path", "must start with \"/\", got \"\(prefix)\"")
        } else if let prefix {
            // Requests are routed by their path in normal form; a prefix in any other form would never match.
            if prefix.utf8.contains(where: { $0 == UInt8(ascii: "?") || $0 == UInt8(ascii: "#") }) {
                fail("\(path).path", "\"\(prefix)\": routes match the request path alone, without a query or fragment")
            } else {
                switch RoutingPath.suggestedPrefix(for: prefix) {
                case .success(let suggested) where !suggested.hasBytes(prefix):
                    fail(
                        "\(path).path",
                        "\"\(prefix)\" is matched as \"\(suggested)\" (bytes that requests percent-encode escaped, "
                            + "escaped unreserved characters decoded, slashes merged, dot segments resolved): write that"
                    )
                case .success:
                    break
                case .failure(let invalid):
                    switch invalid {
                    case .aboveRoot: fail("\(path).path", "\"\(prefix)\" climbs above the root")
                    case .malformedEscape: fail("\(path).path", "\"\(prefix)\" has a malformed %-escape")
                    case .invalidByte: fail("\(path).path", "\"\(prefix)\" has a byte a request path cannot carry")
                    }
                }
            }
        }
        var ttl: TimeAmount?
        if let seconds = int(table, "cache_ttl_seconds", path: "\(path).cache_ttl_seconds", range: 0...(365 * 86_400)) {
            ttl = .seconds(Int64(seconds))
        }
        let present = handlerKeys.filter { table.contains(key: $0) }
        guard present.count == 1, let kind = present.first else {
            if present.isEmpty {
                fail(path, "needs one handler key: \(handlerKeys.joined(separator: ", "))")
            } else {
                fail("\(path).\(present[1])", "a route has one handler, but this one also has \(present[0])")
            }
            return nil
        }
        let handler: RouteHandlerConfiguration?
        switch kind {
        case "demo": handler = readDemo(table, path: "\(path).demo").map { .demo($0) }
        case "static": handler = readStatic(table, path: "\(path).static").map { .static($0) }
        case "proxy": handler = readProxy(table, path: "\(path).proxy").map { .proxy($0) }
        case "websocket": handler = readWebSocket(table, path: "\(path).websocket").map { .websocket($0) }
        default: handler = readRespond(table, path: "\(path).respond").map { .respond($0) }
        }
        var exact = false
        if let match = string(table, "match", path: "\(path).match") {
            switch match {
            case "prefix": break
            case "exact": exact = true
            default: fail("\(path).match", "expected \"prefix\" (the path and everything below it) or \"exact\" (the path alone), got \"\(match)\"")
            }
        }
        var access = (allow: [AddressRange](), deny: [AddressRange]())
        for key in ["allow", "deny"] {
            for (index, text) in strings(table, key, path: "\(path).\(key)").enumerated() {
                guard let range = AddressRange(parsing: text) else {
                    fail("\(path).\(key)[\(index)]", "expected an IP address or CIDR range (e.g. \"10.0.0.0/8\", \"::1\"), got \"\(text)\"")
                    continue
                }
                if key == "allow" { access.allow.append(range) } else { access.deny.append(range) }
            }
        }
        if table["allow"]?.tomlValue.array?.isEmpty == true {
            fail("\(path).allow", "is empty, which would refuse every client; drop the route or the key")
        }
        guard let prefix, prefix.hasPrefix("/"), let handler else { return nil }
        var route = RouteConfiguration(path: prefix, handler: handler, cacheTTL: ttl, rateLimit: rateLimit, basicAuth: basicAuth)
        route.exact = exact
        route.allow = access.allow
        route.deny = access.deny
        return route
    }

    mutating func readRateLimit(_ parent: TOMLTable, path: String) -> RateLimitConfiguration? {
        guard let table = subtable(parent, "rate_limit", path: path) else { return nil }
        checkKeys(table, path: path, allowed: ["per_second", "burst"])
        var perSecond: Double?
        if let value = table["per_second"] {
            // At least one request per 1,000 s: the limiter works in nanoseconds per request, times the burst.
            if let number = value.tomlValue.double ?? value.tomlValue.int.map(Double.init), number >= 0.001, number <= 1_000_000 {
                perSecond = number
            } else {
                fail("\(path).per_second", "expected a number of requests per second from 0.001 to 1000000, got \(describe(value.tomlValue))")
            }
        } else {
            fail("\(path).per_second", "is required")
        }
        let burst = int(table, "burst", path: "\(path).burst", range: 1...1_000_000) ?? 1
        return perSecond.map { RateLimitConfiguration(perSecond: $0, burst: burst) }
    }

    mutating func readBasicAuth(_ parent: TOMLTable, path: String) -> BasicAuthConfiguration? {
        guard let table = subtable(parent, "basic_auth", path: path) else { return nil }
        checkKeys(table, path: path, allowed: ["realm", "htpasswd"])
        let realm = string(table, "realm", path: "\(path).realm") ?? "edge"
        if !HeaderValue.isValid(realm) { fail("\(path).realm", "must not contain control characters") }
        guard let file = string(table, "htpasswd", path: "\(path).htpasswd", required: true) else { return nil }
        fileReferences.append(.htpasswd(file, key: "\(path).htpasswd"))
        return BasicAuthConfiguration(realm: realm, htpasswd: file)
    }

    mutating func readDemo(_ parent: TOMLTable, path: String) -> DemoBackendConfiguration? {
        guard let table = subtable(parent, "demo", path: path) else { return nil }
        checkKeys(table, path: path, allowed: ["delay_ms", "max_delay_ms"])
        var demo = DemoBackendConfiguration()
        if let value = int(table, "delay_ms", path: "\(path).delay_ms", range: 0...600_000) { demo.delay = .milliseconds(Int64(value)) }
        if let value = int(table, "max_delay_ms", path: "\(path).max_delay_ms", range: 0...600_000) { demo.maxDelay = .milliseconds(Int64(value)) }
        return demo
    }

    mutating func readStatic(_ parent: TOMLTable, path: String) -> StaticConfiguration? {
        if let root = parent["static"]?.tomlValue.string {
            fileReferences.append(.staticRoot(root, key: path))
            return StaticConfiguration(root: root)
        }
        guard let table = subtable(parent, "static", path: path) else { return nil }
        checkKeys(table, path: path, allowed: ["root", "index", "listing", "hidden", "follow_symlinks"])
        guard let root = string(table, "root", path: "\(path).root", required: true) else { return nil }
        fileReferences.append(.staticRoot(root, key: "\(path).root"))
        var settings = StaticConfiguration(root: root)
        if table.contains(key: "index") { settings.index = strings(table, "index", path: "\(path).index") }
        if let listing = bool(table, "listing", path: "\(path).listing") { settings.listing = listing }
        if let hidden = bool(table, "hidden", path: "\(path).hidden") { settings.hidden = hidden }
        if let follow = bool(table, "follow_symlinks", path: "\(path).follow_symlinks") { settings.followSymlinks = follow }
        for name in settings.index where name.isEmpty || name.contains("/") {
            fail("\(path).index", "index names are file names without \"/\", got \"\(name)\"")
        }
        return settings
    }

    mutating func readWebSocket(_ parent: TOMLTable, path: String) -> WebSocketRouteConfiguration? {
        guard let table = subtable(parent, "websocket", path: path) else { return nil }
        checkKeys(
            table, path: path,
            allowed: [
                "echo", "upstream", "hub", "strip_prefix", "host", "max_message_bytes", "max_frame_bytes", "idle_seconds",
                "ping_seconds", "reload_grace_seconds", "publish_from", "replay", "max_queued_messages", "permessage_deflate",
            ]
        )
        var settings: WebSocketRouteConfiguration
        let echo = bool(table, "echo", path: "\(path).echo") ?? false
        let hub = bool(table, "hub", path: "\(path).hub") ?? false
        let upstream = string(table, "upstream", path: "\(path).upstream")
        let targets = [echo ? "echo = true" : nil, hub ? "hub = true" : nil, upstream.map { _ in "upstream" }].compactMap { $0 }
        guard targets.count == 1 else {
            if targets.isEmpty {
                fail(path, "needs echo = true, hub = true or upstream = \"name\"")
            } else {
                fail(path, "a websocket route has one target, not both \(targets[0]) and \(targets[1])")
            }
            return nil
        }
        if let upstream {
            settings = WebSocketRouteConfiguration(target: .upstream(upstream))
        } else if hub {
            var hubSettings = WebSocketRouteConfiguration.HubConfiguration()
            if table.contains(key: "publish_from") {
                hubSettings.publishFrom = []
                for (index, text) in strings(table, "publish_from", path: "\(path).publish_from").enumerated() {
                    if let range = AddressRange(parsing: text) { hubSettings.publishFrom.append(range) } else {
                        fail("\(path).publish_from[\(index)]", "expected an IP address or CIDR range (e.g. \"10.0.0.0/8\"), got \"\(text)\"")
                    }
                }
            }
            if let value = int(table, "replay", path: "\(path).replay", range: 0...100_000) { hubSettings.replay = value }
            if let value = int(table, "max_queued_messages", path: "\(path).max_queued_messages", range: 1...1_000_000) {
                hubSettings.maxQueuedMessages = value
            }
            settings = WebSocketRouteConfiguration(target: .hub(hubSettings))
        } else {
            settings = WebSocketRouteConfiguration(target: .echo)
        }
        if !hub, let key = ["publish_from", "replay", "max_queued_messages"].first(where: { table.contains(key: $0) }) {
            fail("\(path).\(key)", "applies to a hub (hub = true)")
        }
        if let strip = bool(table, "strip_prefix", path: "\(path).strip_prefix") { settings.stripPrefix = strip }
        if let host = readHostHeader(table, path: "\(path).host") { settings.host = host }
        if let deflate = bool(table, "permessage_deflate", path: "\(path).permessage_deflate") {
            if upstream != nil {
                fail("\(path).permessage_deflate", "a relay passes extensions between client and upstream: the upstream negotiates them")
            }
            settings.permessageDeflate = deflate
        }
        if upstream == nil, let key = ["strip_prefix", "host"].first(where: { table.contains(key: $0) }) {
            fail("\(path).\(key)", "applies to a proxied websocket route (upstream = \"name\")")
        }
        let maxMessage = 1 << 31
        if let value = int(table, "max_message_bytes", path: "\(path).max_message_bytes", range: 125...maxMessage) {
            settings.maxMessageBytes = value
            settings.maxFrameBytes = min(settings.maxFrameBytes, value)
        }
        if let value = int(table, "max_frame_bytes", path: "\(path).max_frame_bytes", range: 125...maxMessage) {
            if value > settings.maxMessageBytes {
                fail("\(path).max_frame_bytes", "must not exceed max_message_bytes (\(settings.maxMessageBytes)), got \(value)")
            } else {
                settings.maxFrameBytes = value
            }
        }
        let day = 86_400
        if let value = int(table, "idle_seconds", path: "\(path).idle_seconds", range: 0...day) { settings.idleSeconds = value }
        if let value = int(table, "ping_seconds", path: "\(path).ping_seconds", range: 0...day) { settings.pingSeconds = value }
        if let value = int(table, "reload_grace_seconds", path: "\(path).reload_grace_seconds", range: 0...day) {
            settings.reloadGraceSeconds = value
        }
        return settings
    }

    mutating func readRespond(_ parent: TOMLTable, path: String) -> FixedResponseConfiguration? {
        guard let table = subtable(parent, "respond", path: path) else { return nil }
        checkKeys(table, path: path, allowed: ["status", "body", "content_type"])
        var respond = FixedResponseConfiguration()
        if let interim = table["status"]?.tomlValue.int, (100...199).contains(interim) {
            fail("\(path).status", "must be between 200 and 599, got \(interim): a 1xx status is an interim response, not an answer")
        } else if let status = int(table, "status", path: "\(path).status", range: 200...599) {
            respond.status = status
        }
        if let body = string(table, "body", path: "\(path).body") { respond.body = body }
        if FixedResponseConfiguration.statusesWithoutContent.contains(respond.status), !respond.body.isEmpty {
            fail(
                "\(path).body",
                "must be empty with status \(respond.status), which has no content (RFC 9110): a body would be read as the start of the next response"
            )
        }
        if let type = string(table, "content_type", path: "\(path).content_type") {
            if HeaderValue.isValid(type) { respond.contentType = type } else {
                fail("\(path).content_type", "must not contain control characters")
            }
        }
        return respond
    }

    // MARK: typed accessors

    mutating func checkKeys(_ table: TOMLTable, path: String, allowed: [String]) {
        for key in table.keys where !allowed.contains(key) {
            let full = path.isEmpty ? key : "\(path).\(key)"
            let hint = allowed.first { EditDistance.isClose(key, $0) }.map { " (did you mean \"\($0)\"?)" } ?? ""
            fail(full, "unknown key\(hint); allowed here: \(allowed.joined(separator: ", "))")
        }
    }

    mutating func int(_ table: TOMLTable, _ key: String, path: String, range: ClosedRange<Int>) -> Int? {
        guard let value = table[key] else { return nil }
        guard let number = value.tomlValue.int else {
            fail(path, "expected an integer, got \(describe(value.tomlValue))")
            return nil
        }
        guard range.contains(number) else {
            fail(path, "must be between \(range.lowerBound) and \(range.upperBound), got \(number)")
            return nil
        }
        return number
    }

    mutating func string(_ table: TOMLTable, _ key: String, path: String, required: Bool = false) -> String? {
        guard let value = table[key] else {
            if required { fail(path, "is required") }
            return nil
        }
        guard let text = value.tomlValue.string else {
            fail(path, "expected a string, got \(describe(value.tomlValue))")
            return nil
        }
        return text
    }

    mutating func strings(_ table: TOMLTable, _ key: String, path: String) -> [String] {
        guard let value = table[key] else { return [] }
        guard let array = value.tomlValue.array else {
            fail(path, "expected an array of strings, got \(describe(value.tomlValue))")
            return []
        }
        var result: [String] = []
        for (index, element) in array.enumerated() {
            if let text = element.tomlValue.string { result.append(text) } else {
                fail("\(path)[\(index)]", "expected a string, got \(describe(element.tomlValue))")
            }
        }
        return result
    }

    mutating func bool(_ table: TOMLTable, _ key: String, path: String) -> Bool? {
        guard let value = table[key] else { return nil }
        guard let flag = value.tomlValue.bool else {
            fail(path, "expected true or false, got \(describe(value.tomlValue))")
            return nil
        }
        return flag
    }

    mutating func subtable(_ table: TOMLTable, _ key: String, path: String) -> TOMLTable? {
        guard let value = table[key] else { return nil }
        guard let sub = value.tomlValue.table else {
            fail(path, "expected a table, got \(describe(value.tomlValue))")
            return nil
        }
        return sub
    }

    mutating func tables(_ table: TOMLTable, _ key: String, path: String) -> [TOMLTable] {
        guard let value = table[key] else { return [] }
        guard let array = value.tomlValue.array else {
            fail(path, "expected an array of tables ([[\(key)]]), got \(describe(value.tomlValue))")
            return []
        }
        var result: [TOMLTable] = []
        for (index, element) in array.enumerated() {
            if let sub = element.tomlValue.table { result.append(sub) } else {
                fail("\(path)[\(index)]", "expected a table, got \(describe(element.tomlValue))")
            }
        }
        return result
    }

    func describe(_ value: TOMLValue) -> String {
        switch value.type {
        case .string: return "string \(value.debugDescription)"
        case .table: return "a table"
        case .array: return "an array"
        default: return "\(value.type) \(value.debugDescription)"
        }
    }
}

/// A tiny Levenshtein check used for "did you mean" hints on unknown keys.
enum EditDistance {
    static func isClose(_ a: String, _ b: String) -> Bool {
        let a = Array(a), b = Array(b)
        guard abs(a.count - b.count) <= 2 else { return false }
        var previous = Array(0...b.count)
        for i in 1...max(a.count, 1) where !a.isEmpty {
            var current = [i] + Array(repeating: 0, count: b.count)
            for j in 1...max(b.count, 1) where !b.isEmpty {
                current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
            }
            previous = current
        }
        return previous[b.count] <= 2
    }
}

/// Validation of values that end up in response headers.
enum HeaderValue {
    /// True when `value` has no control characters (so it cannot split a header).
    static func isValid(_ value: String) -> Bool {
        !value.unicodeScalars.contains { $0.value < 0x20 && $0 != "\t" || $0.value == 0x7F }
    }
}
