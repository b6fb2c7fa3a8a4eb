import NIOCore
import TOMLKit

/// Reading `[[upstream]]` groups and `proxy` routes.
extension TOMLReader {
    mutating func readUpstreams(_ root: TOMLTable, into config: inout EdgeConfiguration) {
        var names: Set<String> = []
        for (index, table) in tables(root, "upstream", path: "upstream").enumerated() {
            let path = "upstream[\(index)]"
            guard let group = readUpstream(table, path: path) else { continue }
            if !names.insert(group.name).inserted {
                fail("\(path).name", "another upstream is already named \"\(group.name)\"")
                continue
            }
            config.upstreams.append(group)
        }
    }

    mutating func readUpstream(_ table: TOMLTable, path: String) -> UpstreamGroupConfiguration? {
        checkKeys(
            table, path: path,
            allowed: ["name", "servers", "balance", "hash_key", "keepalive", "idle_timeout_seconds", "connect_timeout_ms",
                      "first_byte_timeout_seconds", "between_bytes_timeout_seconds", "total_timeout_seconds", "retries",
                      "retry_budget_percent", "max_failures", "failure_window_seconds", "cooldown_seconds", "health_check", "tls",
                      "protocol"]
        )
        let name = string(table, "name", path: "\(path).name", required: true)
        if let name, name.isEmpty || !name.utf8.allSatisfy(RequestTargetRules.isTokenByte) {
            fail("\(path).name", "expected a name of letters, digits and - _ . (got \"\(name)\")")
        }
        var servers: [UpstreamGroupConfiguration.Server] = []
        if let value = table["servers"] {
            if let array = value.tomlValue.array, !array.isEmpty {
                for (index, element) in array.enumerated() {
                    if let server = readServer(element.tomlValue, path: "\(path).servers[\(index)]") { servers.append(server) }
                }
            } else {
                fail("\(path).servers", "expected a non-empty array of servers (\"host:port\", \"https://host:port\" or { address, weight })")
            }
        } else {
            fail("\(path).servers", "is required")
        }
        guard let name else { return nil }
        var group = UpstreamGroupConfiguration(name: name, servers: servers)
        if let balance = string(table, "balance", path: "\(path).balance") {
            switch balance {
            case "round_robin": group.balance = .roundRobin
            case "least_conn": group.balance = .leastConnections
            case "random_two": group.balance = .randomTwo
            case "hash":
                guard let key = string(table, "hash_key", path: "\(path).hash_key", required: true) else { break }
                if let hashKey = Self.hashKey(key) {
                    group.balance = .hash(hashKey)
                } else {
                    fail("\(path).hash_key", "expected client, uri, header:NAME or cookie:NAME, got \"\(key)\"")
                }
            default:
                fail("\(path).balance", "expected round_robin, least_conn, random_two or hash, got \"\(balance)\"")
            }
        }
        if table.contains(key: "hash_key"), table["balance"]?.tomlValue.string != "hash" {
            fail("\(path).hash_key", "applies only with balance = \"hash\"")
        }
        if let value = int(table, "keepalive", path: "\(path).keepalive", range: 0...10_000) { group.keepalive = value }
        if let value = int(table, "idle_timeout_seconds", path: "\(path).idle_timeout_seconds", range: 1...3600) {
            group.idleTimeout = .seconds(Int64(value))
        }
        if let value = int(table, "connect_timeout_ms", path: "\(path).connect_timeout_ms", range: 1...600_000) {
            group.connectTimeout = .milliseconds(Int64(value))
        }
        if let value = int(table, "first_byte_timeout_seconds", path: "\(path).first_byte_timeout_seconds", range: 1...86_400) {
            group.firstByteTimeout = .seconds(Int64(value))
        }
        if let value = int(table, "between_bytes_timeout_seconds", path: "\(path).between_bytes_timeout_seconds", range: 1...86_400) {
            group.betweenBytesTimeout = .seconds(Int64(value))
        }
        if let value = int(table, "total_timeout_seconds", path: "\(path).total_timeout_seconds", range: 0...86_400) {
            group.totalTimeout = .seconds(Int64(value))
        }
        if let value = int(table, "retries", path: "\(path).retries", range: 0...10) { group.retries = value }
        if let value = int(table, "retry_budget_percent", path: "\(path).retry_budget_percent", range: 0...100) { group.retryBudgetPercent = value }
        if let value = int(table, "max_failures", path: "\(path).max_failures", range: 0...1000) { group.maxFailures = value }
        if let value = int(table, "failure_window_seconds", path: "\(path).failure_window_seconds", range: 1...3600) {
            group.failureWindow = .seconds(Int64(value))
        }
        if let value = int(table, "cooldown_seconds", path: "\(path).cooldown_seconds", range: 1...3600) {
            group.cooldown = .seconds(Int64(value))
        }
        if let health = subtable(table, "health_check", path: "\(path).health_check") {
            group.health = readHealthCheck(health, path: "\(path).health_check")
        }
        if let tls = subtable(table, "tls", path: "\(path).tls") {
            group.tls = readUpstreamTLS(tls, path: "\(path).tls")
        }
        if let value = string(table, "protocol", path: "\(path).protocol") {
            if let wire = UpstreamGroupConfiguration.WireProtocol(rawValue: value) {
                group.wireProtocol = wire
            } else {
                fail("\(path).protocol", "expected \"http1.1\", \"h2\" (HTTP/2 over TLS) or \"h2c\" (HTTP/2 with prior knowledge), got \"\(value)\"")
            }
        }
        switch group.wireProtocol {
        case .http1:
            break
        case .h2:
            if group.servers.contains(where: { !$0.tls }) {
                fail("\(path).servers", "protocol = \"h2\" is HTTP/2 over TLS: every server must be https://host:port (use \"h2c\" for plain servers)")
            }
        case .h2c:
            if group.servers.contains(where: \.tls) {
                fail("\(path).servers", "protocol = \"h2c\" is HTTP/2 over plain TCP: no server may be https:// (use \"h2\" for TLS)")
            }
        }
        return group
    }

    /// `client`, `uri`, `header:NAME` or `cookie:NAME` (NAME a token), or `nil`.
    private static func hashKey(_ text: String) -> UpstreamGroupConfiguration.HashKey? {
        switch text {
        case "client": return .clientAddress
        case "uri": return .uri
        default:
            guard let colon = text.firstIndex(of: ":") else { return nil }
            let name = String(text[text.index(after: colon)...])
            guard !name.isEmpty, name.utf8.allSatisfy(RequestTargetRules.isTokenByte) else { return nil }
            switch text[..<colon] {
            case "header": return .header(name.lowercased())
            case "cookie": return .cookie(name)
            default: return nil
            }
        }
    }

    private mutating func readServer(_ value: TOMLValue, path: String) -> UpstreamGroupConfiguration.Server? {
        var text: String
        var weight = 1
        if let string = value.string {
            text = string
        } else if let table = value.table {
            checkKeys(table, path: path, allowed: ["address", "weight"])
            guard let address = string(table, "address", path: "\(path).address", required: true) else { return nil }
            text = address
            if let value = int(table, "weight", path: "\(path).weight", range: 1...1000) { weight = value }
        } else {
            fail(path, "expected \"host:port\", \"https://host:port\" or { address = \"host:port\", weight = 1 }, got \(describe(value))")
            return nil
        }
        var tls = false
        if text.hasPrefix("https://") {
            tls = true
            text.removeFirst(8)
        } else if text.hasPrefix("http://") {
            text.removeFirst(7)
        }
        guard let address = HostPort(parsing: text), address.port > 0, !address.host.isEmpty else {
            fail(path, "expected host:port with a port from 1 to 65535, got \"\(text)\"")
            return nil
        }
        return .init(address: address, weight: weight, tls: tls)
    }

    private mutating func readHealthCheck(_ table: TOMLTable, path: String) -> UpstreamGroupConfiguration.HealthCheck {
        checkKeys(table, path: path, allowed: ["path", "interval_seconds", "timeout_ms", "expect_status", "rise", "fall"])
        var health = UpstreamGroupConfiguration.HealthCheck()
        if let value = string(table, "path", path: "\(path).path") {
            if value.hasPrefix("/"), value.utf8.allSatisfy(RequestTargetRules.isTargetByte) { health.path = value } else {
                fail("\(path).path", "expected a request path starting with /, got \"\(value)\"")
            }
        }
        if let value = int(table, "interval_seconds", path: "\(path).interval_seconds", range: 1...3600) { health.interval = .seconds(Int64(value)) }
        if let value = int(table, "timeout_ms", path: "\(path).timeout_ms", range: 1...600_000) { health.timeout = .milliseconds(Int64(value)) }
        if let value = int(table, "expect_status", path: "\(path).expect_status", range: 100...599) { health.expectStatus = value...value }
        if let value = int(table, "rise", path: "\(path).rise", range: 1...100) { health.rise = value }
        if let value = int(table, "fall", path: "\(path).fall", range: 1...100) { health.fall = value }
        return health
    }

    private mutating func readUpstreamTLS(_ table: TOMLTable, path: String) -> UpstreamGroupConfiguration.TLS {
        checkKeys(table, path: path, allowed: ["ca_file", "verify", "server_name", "certificate", "private_key"])
        var tls = UpstreamGroupConfiguration.TLS()
        tls.caFile = string(table, "ca_file", path: "\(path).ca_file")
        if let verify = bool(table, "verify", path: "\(path).verify") { tls.verify = verify }
        tls.serverName = string(table, "server_name", path: "\(path).server_name")
        tls.certificate = string(table, "certificate", path: "\(path).certificate")
        tls.privateKey = string(table, "private_key", path: "\(path).private_key")
        if (tls.certificate == nil) != (tls.privateKey == nil) {
            fail("\(path).certificate", "a client certificate needs both certificate and private_key")
        }
        return tls
    }

    mutating func readProxy(_ parent: TOMLTable, path: String) -> ProxyRouteConfiguration? {
        if let name = parent["proxy"]?.tomlValue.string { return ProxyRouteConfiguration(upstream: name) }
        guard let table = subtable(parent, "proxy", path: path) else { return nil }
        checkKeys(
            table, path: path, allowed: ["upstream", "strip_prefix", "host", "request_headers", "response_headers", "max_body_bytes", "cache", "compress"]
        )
        guard let upstream = string(table, "upstream", path: "\(path).upstream", required: true) else { return nil }
        var proxy = ProxyRouteConfiguration(upstream: upstream)
        if let strip = bool(table, "strip_prefix", path: "\(path).strip_prefix") { proxy.stripPrefix = strip }
        if let host = readHostHeader(table, path: "\(path).host") { proxy.host = host }
        if let edits = subtable(table, "request_headers", path: "\(path).request_headers") {
            proxy.requestHeaders = readHeaderEdits(edits, path: "\(path).request_headers")
        }
        if let edits = subtable(table, "response_headers", path: "\(path).response_headers") {
            proxy.responseHeaders = readHeaderEdits(edits, path: "\(path).response_headers")
        }
        if let value = int(table, "max_body_bytes", path: "\(path).max_body_bytes", range: 0...(1 << 50)) { proxy.maxBodyBytes = value }
        if table.contains(key: "cache") {
            if let enabled = table["cache"]?.tomlValue.bool {
                proxy.cache = enabled ? HTTPCacheConfiguration() : nil
            } else if let cache = subtable(table, "cache", path: "\(path).cache") {
                proxy.cache = readHTTPCache(cache, path: "\(path).cache")
            }
        }
        if table.contains(key: "compress") {
            if let enabled = table["compress"]?.tomlValue.bool {
                proxy.compress = enabled ? ProxyRouteConfiguration.defaultCompression : []
            } else if table["compress"]?.tomlValue.array != nil {
                for (index, name) in strings(table, "compress", path: "\(path).compress").enumerated() {
                    guard let coding = ContentCoding(configurationName: name) else {
                        fail("\(path).compress[\(index)]", "unknown content coding \"\(name)\"; expected \"zstd\", \"br\" or \"gzip\"")
                        continue
                    }
                    if proxy.compress.contains(coding.token) {
                        fail("\(path).compress[\(index)]", "\"\(name)\" is listed twice")
                    } else {
                        proxy.compress.append(coding.token)
                    }
                }
            } else {
                fail("\(path).compress", "expected true, false or a list of codings such as [\"zstd\", \"br\", \"gzip\"]")
            }
        }
        return proxy
    }

    private mutating func readHTTPCache(_ table: TOMLTable, path: String) -> HTTPCacheConfiguration {
        checkKeys(
            table, path: path,
            allowed: [
                "heuristic_percent", "heuristic_max_seconds", "grace_seconds", "keep_seconds", "store_set_cookie", "targeted_field",
                "hit_for_pass_seconds", "purge_from", "purge_token", "key_query", "key_query_include", "key_query_exclude",
                "key_fields", "key_cookies",
            ]
        )
        var cache = HTTPCacheConfiguration()
        let day = 86_400
        if let value = int(table, "heuristic_percent", path: "\(path).heuristic_percent", range: 0...100) { cache.heuristicPercent = value }
        if let value = int(table, "heuristic_max_seconds", path: "\(path).heuristic_max_seconds", range: 0...(365 * day)) {
            cache.heuristicMaxSeconds = value
        }
        if let value = int(table, "grace_seconds", path: "\(path).grace_seconds", range: 0...(365 * day)) { cache.graceSeconds = value }
        if let value = int(table, "keep_seconds", path: "\(path).keep_seconds", range: 0...(365 * day)) { cache.keepSeconds = value }
        if let value = int(table, "hit_for_pass_seconds", path: "\(path).hit_for_pass_seconds", range: 0...day) { cache.hitForPassSeconds = value }
        if let value = bool(table, "store_set_cookie", path: "\(path).store_set_cookie") { cache.storeSetCookie = value }
        if let name = string(table, "targeted_field", path: "\(path).targeted_field") {
            if isFieldName(name) { cache.targetedField = name.lowercased() } else { fail("\(path).targeted_field", "\"\(name)\" is not a header name") }
        }
        for (index, text) in strings(table, "purge_from", path: "\(path).purge_from").enumerated() {
            if let range = AddressRange(parsing: text) { cache.purgeFrom.append(range) } else {
                fail("\(path).purge_from[\(index)]", "expected an IP address or CIDR range (e.g. \"127.0.0.1\", \"10.0.0.0/8\"), got \"\(text)\"")
            }
        }
        if let token = string(table, "purge_token", path: "\(path).purge_token") {
            if token.utf8.count >= 16, HeaderValue.isValid(token), !token.contains(" ") { cache.purgeToken = token } else {
                fail("\(path).purge_token", "must be at least 16 characters, without spaces or control characters")
            }
        }
        if let query = string(table, "key_query", path: "\(path).key_query") {
            if CacheKeyRules.Query(rawValue: query) != nil { cache.keyQuery = query } else {
                fail("\(path).key_query", "expected \"as-is\", \"sorted\" or \"ignore\", got \"\(query)\"")
            }
        }
        cache.keyQueryInclude = strings(table, "key_query_include", path: "\(path).key_query_include")
        cache.keyQueryExclude = strings(table, "key_query_exclude", path: "\(path).key_query_exclude")
        for (index, name) in strings(table, "key_fields", path: "\(path).key_fields").enumerated() {
            if isFieldName(name) { cache.keyFields.append(name.lowercased()) } else { fail("\(path).key_fields[\(index)]", "\"\(name)\" is not a header name") }
        }
        for (index, name) in strings(table, "key_cookies", path: "\(path).key_cookies").enumerated() {
            if isFieldName(name) { cache.keyCookies.append(name) } else { fail("\(path).key_cookies[\(index)]", "\"\(name)\" is not a cookie name") }
        }
        return cache
    }

    private mutating func readHeaderEdits(_ table: TOMLTable, path: String) -> ProxyRouteConfiguration.HeaderEdits {
        checkKeys(table, path: path, allowed: ["remove", "set", "add"])
        var edits = ProxyRouteConfiguration.HeaderEdits()
        for name in strings(table, "remove", path: "\(path).remove") {
            if isFieldName(name) { edits.remove.append(name.lowercased()) } else { fail("\(path).remove", "\"\(name)\" is not a header name") }
        }
        for key in ["set", "add"] {
            guard let fields = subtable(table, key, path: "\(path).\(key)") else { continue }
            for name in fields.keys.sorted() {
                guard isFieldName(name) else {
                    fail("\(path).\(key).\(name)", "is not a header name")
                    continue
                }
                guard let value = string(fields, name, path: "\(path).\(key).\(name)") else { continue }
                guard HeaderValue.isValid(value) else {
                    fail("\(path).\(key).\(name)", "must not contain control characters")
                    continue
                }
                if key == "set" { edits.set.append((name.lowercased(), value)) } else { edits.add.append((name.lowercased(), value)) }
            }
        }
        return edits
    }

    /// `host = "pass" | "upstream" | "host[:port]"` of a proxy or WebSocket relay route.
    mutating func readHostHeader(_ table: TOMLTable, path: String) -> ProxyRouteConfiguration.HostHeader? {
        guard let host = string(table, "host", path: path) else { return nil }
        switch host {
        case "pass": return .pass
        case "upstream": return .upstream
        default:
            if RequestTargetRules.isValidHost(host.utf8), !host.isEmpty { return .fixed(host) }
            fail(path, "expected \"pass\", \"upstream\" or a host[:port], got \"\(host)\"")
            return nil
        }
    }

    private func isFieldName(_ name: String) -> Bool {
        !name.isEmpty && name.utf8.allSatisfy(RequestTargetRules.isTokenByte)
    }

    /// Every proxy route names an upstream that exists.
    mutating func checkProxyRoutes(_ config: EdgeConfiguration) {
        let names = Set(config.upstreams.map(\.name))
        for (routeKey, route) in config.keyedRoutes {
            let (key, upstream): (String, String)
            switch route.handler {
            case .proxy(let proxy): (key, upstream) = ("proxy", proxy.upstream)
            case .websocket(let socket):
                guard case .upstream(let name) = socket.target else { continue }
                (key, upstream) = ("websocket.upstream", name)
            default: continue
            }
            guard !names.contains(upstream) else { continue }
            let known = names.isEmpty ? "no [[upstream]] is defined" : "defined: \(names.sorted().joined(separator: ", "))"
            fail("\(routeKey).\(key)", "names upstream \"\(upstream)\", which is not defined (\(known))")
        }
    }
}
