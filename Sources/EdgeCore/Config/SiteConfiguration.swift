import TOMLKit

/// One `[[site]]`: a virtual host — the names it answers, its certificates, its routes (`[[site.route]]`) and
/// the response headers it adds.
public struct SiteConfiguration: Sendable, Equatable {
    /// Exact names (`example.com`) and leading wildcards (`*.example.com`), stored in lower case.
    public var names: [String]
    /// Whether this site answers hosts that no site names.
    public var isDefault = false
    /// Certificates served to TLS clients that name one of ``names`` (SNI): one per key type (RSA, ECDSA).
    public var certificates: [CertificateFiles] = []
    /// Whether the certificate is obtained and renewed with ACME (`tls = "acme"`).
    public var acme = false
    /// Plain-HTTP requests get a 308 to HTTPS (`redirect_https = true`, or the HTTPS port when it is not 443).
    public var redirectHTTPS: RedirectHTTPS?
    /// `Strict-Transport-Security` value, sent over TLS only (`hsts = true` for two years).
    public var hsts: String?
    /// Whether `X-Content-Type-Options`, `X-Frame-Options` and `Referrer-Policy` are added (`security_headers`).
    public var securityHeaders = false
    /// The site's routes; the longest matching prefix wins, an exact route first.
    public var routes: [RouteConfiguration] = []

    public struct RedirectHTTPS: Sendable, Equatable {
        /// The port named in `Location`; `nil` for 443.
        public var port: Int?
    }

    /// The HSTS value `hsts = true` stands for: two years, as the HSTS preload list asks.
    public static let defaultHSTS = "max-age=63072000"

    public init(names: [String], routes: [RouteConfiguration] = []) {
        self.names = names
        self.routes = routes
    }
}

/// A certificate chain and its private key, in PEM files.
public struct CertificateFiles: Sendable, Equatable {
    public var certificate: String
    public var privateKey: String

    public init(certificate: String, privateKey: String) {
        self.certificate = certificate
        self.privateKey = privateKey
    }
}

/// The TLS settings of every TLS listener (`[tls]`).
public struct TLSPolicyConfiguration: Sendable, Equatable {
    public enum Profile: String, Sendable, Equatable {
        /// Mozilla's "intermediate": TLS 1.2 with ECDHE and AEAD suites only, and TLS 1.3.
        case intermediate
        /// Mozilla's "modern": TLS 1.3 only.
        case modern
    }

    public var profile: Profile = .intermediate
    /// TLS 1.2 cipher suites in OpenSSL's names; `nil` for the profile's list. TLS 1.3's suites are fixed.
    public var ciphers: [String]?

    /// Mozilla's intermediate list (server side, 2024), less the DHE suites BoringSSL does not implement: forward
    /// secret, authenticated encryption only — no CBC, no SHA-1 MAC, no static RSA key exchange.
    public static let intermediateCiphers = [
        "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
    ]

    /// The TLS 1.2 suites BoringSSL knows by name, for checking `ciphers`.
    static let knownCiphers: Set<String> = [
        "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
        "ECDHE-ECDSA-AES128-SHA", "ECDHE-RSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA", "ECDHE-RSA-AES256-SHA",
        "ECDHE-PSK-AES128-CBC-SHA", "ECDHE-PSK-AES256-CBC-SHA", "ECDHE-PSK-CHACHA20-POLY1305",
        "AES128-GCM-SHA256", "AES256-GCM-SHA384", "AES128-SHA", "AES256-SHA", "DES-CBC3-SHA",
    ]

    /// The OpenSSL cipher string given to BoringSSL.
    var cipherString: String { (ciphers ?? Self.intermediateCiphers).joined(separator: ":") }

    public init() {}
}

extension TOMLReader {
    mutating func readTLSPolicy(_ table: TOMLTable) -> TLSPolicyConfiguration {
        checkKeys(table, path: "tls", allowed: ["policy", "ciphers"])
        var policy = TLSPolicyConfiguration()
        if let name = string(table, "policy", path: "tls.policy") {
            if let profile = TLSPolicyConfiguration.Profile(rawValue: name) { policy.profile = profile } else {
                fail("tls.policy", "expected \"intermediate\" (TLS 1.2 with forward-secret AEAD suites, and TLS 1.3) or \"modern\" (TLS 1.3 only), got \"\(name)\"")
            }
        }
        if table.contains(key: "ciphers") {
            let ciphers = strings(table, "ciphers", path: "tls.ciphers")
            if policy.profile == .modern {
                fail("tls.ciphers", "the modern policy is TLS 1.3 only, whose suites are fixed; ciphers applies to TLS 1.2")
            } else if ciphers.isEmpty {
                fail("tls.ciphers", "is empty: TLS 1.2 clients could not connect (use policy = \"modern\" for TLS 1.3 only)")
            } else {
                for (index, cipher) in ciphers.enumerated() where !TLSPolicyConfiguration.knownCiphers.contains(cipher) {
                    let hint = TLSPolicyConfiguration.knownCiphers.sorted().first { EditDistance.isClose(cipher, $0) }
                        .map { " (did you mean \"\($0)\"?)" } ?? ""
                    fail("tls.ciphers[\(index)]", "unknown TLS 1.2 cipher suite \"\(cipher)\"\(hint)")
                }
                policy.ciphers = ciphers
            }
        }
        return policy
    }

    /// Reads `[[site]]` tables; `listeners` tell the port a `redirect_https = true` names.
    mutating func readSites(_ root: TOMLTable, into config: inout EdgeConfiguration) {
        var owners: [String: String] = [:]
        var defaultKey: String?
        for (index, table) in tables(root, "site", path: "site").enumerated() {
            let path = "site[\(index)]"
            checkKeys(
                table, path: path,
                allowed: ["names", "default", "tls", "certificate", "private_key", "certificates", "redirect_https", "hsts",
                          "security_headers", "route"]
            )
            var site = SiteConfiguration(names: [])
            if !table.contains(key: "names") { fail("\(path).names", "is required: the host names this site answers, e.g. [\"example.com\", \"*.example.com\"]") }
            for (position, raw) in strings(table, "names", path: "\(path).names").enumerated() {
                let key = "\(path).names[\(position)]"
                let name = raw.lowercased()
                guard Self.isValidSiteName(name) else {
                    fail(key, "\"\(raw)\" is not a host name: expected letters, digits, - and . (e.g. \"example.com\"), optionally after \"*.\"")
                    continue
                }
                if let owner = owners[name] {
                    fail(key, "\"\(raw)\" is already a name of \(owner)")
                    continue
                }
                owners[name] = path
                site.names.append(name)
            }
            if table["names"]?.tomlValue.array?.isEmpty == true {
                fail("\(path).names", "is empty: a site needs at least one name")
            }
            if bool(table, "default", path: "\(path).default") == true {
                if let defaultKey {
                    fail("\(path).default", "\(defaultKey) is already the default site")
                } else {
                    defaultKey = path
                    site.isDefault = true
                }
            }
            readSiteTLS(table, path: path, into: &site)
            if table.contains(key: "redirect_https") {
                let value = table["redirect_https"]!.tomlValue
                if let flag = value.bool {
                    site.redirectHTTPS = flag ? .init(port: nil) : nil
                } else if let port = value.int, (1...65535).contains(port) {
                    site.redirectHTTPS = .init(port: port == 443 ? nil : port)
                } else {
                    fail("\(path).redirect_https", "expected true, false or the HTTPS port (1 to 65535), got \(describe(value))")
                }
            }
            if table.contains(key: "hsts") {
                let value = table["hsts"]!.tomlValue
                if let flag = value.bool {
                    site.hsts = flag ? SiteConfiguration.defaultHSTS : nil
                } else if let text = value.string, text.lowercased().hasPrefix("max-age="), HeaderValue.isValid(text) {
                    site.hsts = text
                } else {
                    fail("\(path).hsts", "expected true (\(SiteConfiguration.defaultHSTS)) or a header value starting with max-age=, got \(describe(value))")
                }
            }
            site.securityHeaders = bool(table, "security_headers", path: "\(path).security_headers") ?? false
            site.routes = readRoutes(table, path: "\(path).route")
            if site.routes.isEmpty, !table.contains(key: "route") {
                fail("\(path).route", "a site needs at least one [[site.route]]")
            }
            config.sites.append(site)
        }
        if let defaultKey, !config.routes.isEmpty {
            fail("\(defaultKey).default", "top-level [[route]] tables already answer hosts no site names; move them into a site or drop default = true")
        }
    }

    private mutating func readSiteTLS(_ table: TOMLTable, path: String, into site: inout SiteConfiguration) {
        if let mode = string(table, "tls", path: "\(path).tls") {
            if mode == "acme" {
                site.acme = true
                if site.names.contains(where: { $0.hasPrefix("*.") }) {
                    fail("\(path).tls", "ACME's HTTP-01 and TLS-ALPN-01 challenges cannot prove a wildcard name; list the names, or give a certificate")
                }
            } else {
                fail("\(path).tls", "expected \"acme\" (or certificate and private_key), got \"\(mode)\"")
            }
        }
        var pairs: [(CertificateFiles, String)] = []
        let certificate = string(table, "certificate", path: "\(path).certificate")
        let key = string(table, "private_key", path: "\(path).private_key")
        switch (certificate, key) {
        case (let certificate?, let key?): pairs.append((CertificateFiles(certificate: certificate, privateKey: key), path))
        case (nil, nil): break
        case (nil, _): fail("\(path).certificate", "private_key is set but certificate is missing")
        case (_, nil): fail("\(path).private_key", "certificate is set but private_key is missing")
        }
        for (index, entry) in tables(table, "certificates", path: "\(path).certificates").enumerated() {
            let entryPath = "\(path).certificates[\(index)]"
            checkKeys(entry, path: entryPath, allowed: ["certificate", "private_key"])
            guard let certificate = string(entry, "certificate", path: "\(entryPath).certificate", required: true),
                let key = string(entry, "private_key", path: "\(entryPath).private_key", required: true)
            else { continue }
            pairs.append((CertificateFiles(certificate: certificate, privateKey: key), entryPath))
        }
        if site.acme, !pairs.isEmpty {
            fail("\(path).tls", "tls = \"acme\" obtains the certificate itself; drop certificate/certificates or tls")
            return
        }
        for (pair, key) in pairs {
            fileReferences.append(.tlsPair(
                certificate: pair.certificate, certificateKey: "\(key).certificate", privateKey: pair.privateKey,
                privateKeyKey: "\(key).private_key"
            ))
            site.certificates.append(pair)
        }
    }

    /// Letters, digits, `-` and `.` in labels of 1 to 63 bytes, optionally after `*.`; or an IP literal.
    static func isValidSiteName(_ name: String) -> Bool {
        var rest = Substring(name)
        if rest.hasPrefix("*.") { rest = rest.dropFirst(2) }
        guard !rest.isEmpty, rest.utf8.count <= 253 else { return false }
        if rest.first == "[" { return rest.last == "]" && rest.utf8.allSatisfy { $0 == UInt8(ascii: "[") || $0 == UInt8(ascii: "]") || $0 == UInt8(ascii: ":") || $0 == UInt8(ascii: ".") || isHex($0) } }
        return rest.split(separator: ".", omittingEmptySubsequences: false).allSatisfy { label in
            (1...63).contains(label.utf8.count) && label.utf8.allSatisfy { byte in
                (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z")) || (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9"))
                    || byte == UInt8(ascii: "-") || byte == UInt8(ascii: "_")
            }
        }
    }

    private static func isHex(_ byte: UInt8) -> Bool {
        (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9")) || (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "f"))
    }

    /// Reads an array of route tables (`[[route]]` or `[[site.route]]`), refusing two routes that match the same
    /// requests.
    mutating func readRoutes(_ parent: TOMLTable, path: String) -> [RouteConfiguration] {
        let key = String(path.split(separator: ".").last ?? "route")
        // Keyed by the bytes a route is matched by: `/docs` and `/docs/` are one route; exact routes apart.
        var seenPaths: [[UInt8]: String] = [:]
        var seenExact: Set<String> = []
        var routes: [RouteConfiguration] = []
        for (index, table) in tables(parent, key, path: path).enumerated() {
            let routePath = "\(path)[\(index)]"
            guard let route = readRoute(table, path: routePath) else { continue }
            if route.exact {
                if !seenExact.insert(route.path).inserted {
                    fail("\(routePath).path", "another exact route already has path \"\(route.path)\"")
                }
            } else {
                let matched = Array(Route.matchForm(of: route.path).utf8)
                if let other = seenPaths[matched] {
                    let same = other.utf8.elementsEqual(route.path.utf8)
                    fail("\(routePath).path", same ? "another route already has path \"\(route.path)\""
                        : "\"\(route.path)\" matches the same requests as another route's \"\(other)\" (a trailing / makes no difference)")
                } else {
                    seenPaths[matched] = route.path
                }
            }
            routes.append(route)
        }
        return routes
    }
}
