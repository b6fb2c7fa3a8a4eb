public import Foundation
import TOMLKit
import X509

/// Certificates from an ACME (RFC 8555) certificate authority (`[acme]`), for sites with `tls = "acme"`.
///
/// Only the CA side is configured here; which names get certificates comes from the sites, and where the
/// account key and certificates are kept comes from `state_dir` (``ACMEManager`` lays out the folders).
public struct ACMEConfiguration: Sendable, Equatable {
    /// How the CA is to check control of a name.
    public enum Challenge: String, Sendable, Equatable, CaseIterable {
        /// `GET http://<name>/.well-known/acme-challenge/<token>` on port 80, answered from the challenge store.
        case http01 = "http-01"
        /// A TLS handshake on port 443 offering only ALPN `acme-tls/1` (RFC 8737), answered with a challenge
        /// certificate; for sites that do not listen on port 80.
        case tlsALPN01 = "tls-alpn-01"
    }

    /// The kind of key a certificate gets (the account key is always ECDSA P-256, which every CA accepts).
    public enum KeyType: String, Sendable, Equatable, CaseIterable {
        case ecdsaP256 = "ecdsa-p256"
        /// For old clients that cannot do ECDSA; larger handshakes and slower signing.
        case rsa2048 = "rsa-2048"
    }

    /// The CA's directory URL (https), e.g. `https://acme-v02.api.letsencrypt.org/directory`.
    public var directory: URL
    /// Contact URLs for the account (`mailto:...`), where the CA sends expiry and policy notices.
    public var contact: [String] = []
    /// A PEM file of roots trusted for the CA's own HTTPS endpoint, in addition to the system's: for Pebble or
    /// a private CA whose API is not served with a publicly trusted certificate.
    public var caRoots: String?
    public var challenge: Challenge = .http01
    /// How long before expiry a certificate is renewed; at most a third of its lifetime, so that short-lived
    /// certificates are renewed at two thirds of their lifetime (see ``ACMERenewalSchedule``).
    public var renewBeforeDays: Int = 30
    public var keyType: KeyType = .ecdsaP256
    /// Whether the account agrees to the CA's terms of service when it is created; a CA that has terms refuses
    /// to create an account without it.
    public var agreeToTerms: Bool = true

    public init(directory: URL) {
        self.directory = directory
    }
}

extension TOMLReader {
    mutating func readACME(_ table: TOMLTable) -> ACMEConfiguration? {
        checkKeys(
            table, path: "acme",
            allowed: ["directory", "contact", "ca_roots", "challenge", "renew_before_days", "key_type", "agree_to_terms"]
        )
        var valid = true
        var directory: URL?
        if let text = string(table, "directory", path: "acme.directory", required: true) {
            if let url = URL(string: text), url.scheme?.lowercased() == "https", let host = url.host, !host.isEmpty {
                directory = url
            } else {
                fail("acme.directory", "expected the https:// URL of an ACME directory (e.g. \"https://acme-v02.api.letsencrypt.org/directory\"), got \"\(text)\"")
                valid = false
            }
        } else {
            valid = false
        }
        var contact: [String] = []
        for (index, text) in strings(table, "contact", path: "acme.contact").enumerated() {
            let address = text.dropFirst("mailto:".count)
            if text.lowercased().hasPrefix("mailto:"), address.contains("@"), !address.contains(where: { $0 == " " || $0 == "," }) {
                contact.append(text)
            } else {
                fail("acme.contact[\(index)]", "expected a \"mailto:name@example.com\" URL, got \"\(text)\"")
            }
        }
        var caRoots: String?
        if let path = string(table, "ca_roots", path: "acme.ca_roots") {
            // Read now rather than at the first renewal, so that `edge check-config` finds a wrong path.
            if let problem = Self.caRootsProblem(path) { fail("acme.ca_roots", problem) } else { caRoots = path }
        }
        var challenge = ACMEConfiguration.Challenge.http01
        if let text = string(table, "challenge", path: "acme.challenge") {
            if let parsed = ACMEConfiguration.Challenge(rawValue: text) { challenge = parsed } else {
                fail("acme.challenge", "expected \"http-01\" or \"tls-alpn-01\", got \"\(text)\"")
            }
        }
        // At most 89: a 90-day certificate renewed 90 days before expiry would be renewed at once, forever.
        let renewBeforeDays = int(table, "renew_before_days", path: "acme.renew_before_days", range: 1...89)
        var keyType = ACMEConfiguration.KeyType.ecdsaP256
        if let text = string(table, "key_type", path: "acme.key_type") {
            if let parsed = ACMEConfiguration.KeyType(rawValue: text) { keyType = parsed } else {
                fail("acme.key_type", "expected \"ecdsa-p256\" or \"rsa-2048\", got \"\(text)\"")
            }
        }
        let agree = bool(table, "agree_to_terms", path: "acme.agree_to_terms")
        guard valid, let directory else { return nil }
        var acme = ACMEConfiguration(directory: directory)
        acme.contact = contact
        acme.caRoots = caRoots
        acme.challenge = challenge
        if let renewBeforeDays { acme.renewBeforeDays = renewBeforeDays }
        acme.keyType = keyType
        if let agree { acme.agreeToTerms = agree }
        return acme
    }

    /// What is wrong with `path` as a PEM file of trusted roots, or `nil`.
    static func caRootsProblem(_ path: String) -> String? {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return "cannot read \(path)" }
        guard let certificates = try? ACMETrust.certificates(fromPEM: text), !certificates.isEmpty else {
            return "\(path): expected one or more PEM certificates (-----BEGIN CERTIFICATE-----)"
        }
        return nil
    }
}
