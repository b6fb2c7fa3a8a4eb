import Crypto
import Foundation
public import NIOSSL
public import SwiftASN1
import Synchronization
public import X509

/// The answers to the CA's challenges while an order is being validated, shared between ``ACMEClient`` (which
/// sets them) and the serving path (which reads them).
///
/// A lock rather than an actor: readers are request handlers on event loops that must answer synchronously,
/// entries change only a few times per certificate, and the map is read only for challenge requests
/// (`/.well-known/acme-challenge/...`, or a handshake offering only ALPN `acme-tls/1`), never on the hot path.
public final class ACMEChallengeStore: Sendable {
    private struct TLSALPNAnswer {
        var certificatePEM: String
        var privateKeyPEM: String
        /// Made once when the answer is set, not per validation handshake.
        var context: NIOSSLContext
    }

    private struct State {
        var http01: [String: String] = [:]
        var tlsALPN01: [String: TLSALPNAnswer] = [:]
    }

    private let state = Mutex(State())

    public init() {}

    // MARK: HTTP-01 (RFC 8555 §8.3)

    /// Answers `GET /.well-known/acme-challenge/<token>` with `keyAuthorization` until removed.
    public func setHTTP01(token: String, keyAuthorization: String) {
        state.withLock { $0.http01[token] = keyAuthorization }
    }

    public func removeHTTP01(token: String) {
        _ = state.withLock { $0.http01.removeValue(forKey: token) }
    }

    /// The body for `GET /.well-known/acme-challenge/<token>` (to be sent as `text/plain`, status 200), or
    /// `nil` for a token this server did not set (answer 404).
    public func http01KeyAuthorization(token: Substring) -> String? {
        state.withLock { $0.http01[String(token)] }
    }

    /// The path prefix of HTTP-01 requests, for the router.
    public static let http01PathPrefix = "/.well-known/acme-challenge/"

    // MARK: TLS-ALPN-01 (RFC 8737)

    /// The ALPN protocol name of a TLS-ALPN-01 validation handshake.
    public static let tlsALPNProtocol = "acme-tls/1"

    /// Serves a challenge certificate for `serverName` in handshakes that offer only ``tlsALPNProtocol``,
    /// until removed.
    public func setTLSALPN01(serverName: String, keyAuthorization: String) throws {
        let pair = try Self.tlsALPNChallengeCertificate(serverName: serverName, keyAuthorization: keyAuthorization)
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: try NIOSSLCertificate.fromPEMBytes(Array(pair.certificatePEM.utf8)).map { .certificate($0) },
            privateKey: .privateKey(try NIOSSLPrivateKey(bytes: Array(pair.privateKeyPEM.utf8), format: .pem))
        )
        // RFC 8737 §3: the server must negotiate acme-tls/1, and TLS 1.2 at least.
        configuration.applicationProtocols = [Self.tlsALPNProtocol]
        configuration.minimumTLSVersion = .tlsv12
        let answer = TLSALPNAnswer(
            certificatePEM: pair.certificatePEM, privateKeyPEM: pair.privateKeyPEM, context: try NIOSSLContext(configuration: configuration)
        )
        state.withLock { $0.tlsALPN01[serverName.lowercased()] = answer }
    }

    public func removeTLSALPN01(serverName: String) {
        _ = state.withLock { $0.tlsALPN01.removeValue(forKey: serverName.lowercased()) }
    }

    /// The certificate and key to present when a ClientHello names `serverName` (SNI) and offers only ALPN
    /// `acme-tls/1`; `nil` when no validation is under way for that name (fail the handshake then).
    public func tlsALPNCertificate(forServerName serverName: String) -> (certificatePEM: String, privateKeyPEM: String)? {
        state.withLock { $0.tlsALPN01[serverName.lowercased()].map { ($0.certificatePEM, $0.privateKeyPEM) } }
    }

    /// The same answer as a ready NIOSSL server context that negotiates only ALPN `acme-tls/1`: what
    /// ``ListenerCertificates``' `challenges` look-up returns for a ClientHello offering only `acme-tls/1`.
    public func tlsALPNContext(forServerName serverName: String) -> NIOSSLContext? {
        state.withLock { $0.tlsALPN01[serverName.lowercased()]?.context }
    }

    /// Whether any TLS-ALPN-01 validation is under way, so the TLS layer can skip looking at ALPN otherwise.
    public var hasTLSALPNChallenges: Bool {
        state.withLock { !$0.tlsALPN01.isEmpty }
    }

    /// `id-pe-acmeIdentifier` (RFC 8737 §6.1).
    public static let acmeIdentifierOID: ASN1ObjectIdentifier = [1, 3, 6, 1, 5, 5, 7, 1, 31]

    /// A self-signed certificate for `serverName` whose critical acmeIdentifier extension holds
    /// SHA-256(`keyAuthorization`), as RFC 8737 §3 asks; with a throwaway P-256 key (the CA looks only at the
    /// name and the extension, and the certificate lives for the few seconds of one validation).
    static func tlsALPNChallengeCertificate(
        serverName: String, keyAuthorization: String, now: Date = Date()
    ) throws -> (certificatePEM: String, privateKeyPEM: String) {
        let key = P256.Signing.PrivateKey()
        let digest = SHA256.hash(data: Array(keyAuthorization.utf8))
        // The extension's value is the DER of `Authorization ::= OCTET STRING (SIZE (32))`.
        var serializer = DER.Serializer()
        try serializer.serialize(ASN1OctetString(contentBytes: ArraySlice(digest)))
        let name = try DistinguishedName { CommonName(serverName) }
        let extensions = try Certificate.Extensions {
            SubjectAlternativeNames([.dnsName(serverName)])
            Certificate.Extension(oid: acmeIdentifierOID, critical: true, value: ArraySlice(serializer.serializedBytes))
        }
        let made = try SelfSignedCertificate.selfSigned(name: name, extensions: extensions, key: key, now: now, days: 7)
        return (made.certificate, made.key)
    }

    /// Reads the SHA-256 digest back out of a challenge certificate's acmeIdentifier extension (for checks).
    public static func acmeIdentifierDigest(of certificate: Certificate) -> [UInt8]? {
        guard let ext = certificate.extensions[oid: acmeIdentifierOID], ext.critical,
            let octets = try? ASN1OctetString(derEncoded: ext.value)
        else { return nil }
        return Array(octets.bytes)
    }
}
