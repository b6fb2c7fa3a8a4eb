import Crypto
public import Foundation
import SwiftASN1
import X509

/// A self-signed certificate for local use, kept in the state folder so restarts reuse it.
///
/// Covers `localhost`, `127.0.0.1` and `::1`; ECDSA P-256, valid for one year. A file that is missing,
/// unreadable or within a day of expiry is replaced by a fresh certificate.
public struct SelfSignedCertificate: Sendable {
    /// PEM of the certificate.
    public var certificatePEM: String
    /// PEM (PKCS#8) of the private key.
    public var privateKeyPEM: String
    /// Path of the certificate file.
    public var certificatePath: String
    /// Path of the key file (mode 0600).
    public var privateKeyPath: String
    /// Whether this call generated the certificate (`false`: an existing one was reused).
    public var generated: Bool

    /// Loads the certificate from `directory`, generating and storing a new one when needed.
    public static func loadOrCreate(in directory: String, now: Date = Date()) throws -> SelfSignedCertificate {
        let certificatePath = (directory as NSString).appendingPathComponent("self-signed-cert.pem")
        let keyPath = (directory as NSString).appendingPathComponent("self-signed-key.pem")
        if let certificatePEM = try? String(contentsOfFile: certificatePath, encoding: .utf8),
            let keyPEM = try? String(contentsOfFile: keyPath, encoding: .utf8),
            let certificate = try? Certificate(pemEncoded: certificatePEM),
            let key = try? P256.Signing.PrivateKey(pemRepresentation: keyPEM),
            certificate.publicKey == Certificate.PublicKey(key.publicKey),
            certificate.notValidAfter > now.addingTimeInterval(86_400)
        {
            return SelfSignedCertificate(
                certificatePEM: certificatePEM, privateKeyPEM: keyPEM,
                certificatePath: certificatePath, privateKeyPath: keyPath, generated: false
            )
        }
        let (certificatePEM, keyPEM) = try generate(now: now)
        try FileManager.default.createDirectory(
            atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700]
        )
        try write(keyPEM, to: keyPath, mode: 0o600)
        try write(certificatePEM, to: certificatePath, mode: 0o644)
        return SelfSignedCertificate(
            certificatePEM: certificatePEM, privateKeyPEM: keyPEM,
            certificatePath: certificatePath, privateKeyPath: keyPath, generated: true
        )
    }

    /// Generates a certificate and key as PEM strings.
    static func generate(now: Date) throws -> (certificate: String, key: String) {
        let key = P256.Signing.PrivateKey()
        let name = try DistinguishedName {
            OrganizationName("Edge (self-signed)")
            CommonName("localhost")
        }
        let extensions = try Certificate.Extensions {
            Critical(BasicConstraints.notCertificateAuthority)
            Critical(KeyUsage(digitalSignature: true))
            try ExtendedKeyUsage([.serverAuth])
            SubjectAlternativeNames([
                .dnsName("localhost"),
                .ipAddress(ASN1OctetString(contentBytes: [127, 0, 0, 1])),
                .ipAddress(ASN1OctetString(contentBytes: ArraySlice([UInt8](repeating: 0, count: 15) + [1]))),
            ])
        }
        return try selfSigned(name: name, extensions: extensions, key: key, now: now, days: 365)
    }

    /// A certificate for `name` signed by its own `key`, valid from an hour before `now` for `days`, as PEM
    /// strings (certificate, key). Shared by the fallback certificate and ACME's TLS-ALPN-01 challenge certificate.
    static func selfSigned(
        name: DistinguishedName, extensions: Certificate.Extensions, key: P256.Signing.PrivateKey, now: Date, days: Int
    ) throws -> (certificate: String, key: String) {
        let certificate = try Certificate(
            version: .v3,
            serialNumber: Certificate.SerialNumber(),
            publicKey: Certificate.PublicKey(key.publicKey),
            notValidBefore: now.addingTimeInterval(-3600),
            notValidAfter: now.addingTimeInterval(TimeInterval(days) * 86_400),
            issuer: name,
            subject: name,
            signatureAlgorithm: .ecdsaWithSHA256,
            extensions: extensions,
            issuerPrivateKey: Certificate.PrivateKey(key)
        )
        return (try certificate.serializeAsPEM().pemString + "\n", key.pemRepresentation + "\n")
    }

    private static func write(_ text: String, to path: String, mode: Int) throws {
        let temporary = path + ".tmp"
        guard FileManager.default.createFile(atPath: temporary, contents: Data(text.utf8), attributes: [.posixPermissions: mode]) else {
            throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: temporary])
        }
        if FileManager.default.fileExists(atPath: path) { try FileManager.default.removeItem(atPath: path) }
        try FileManager.default.moveItem(atPath: temporary, toPath: path)
    }
}
