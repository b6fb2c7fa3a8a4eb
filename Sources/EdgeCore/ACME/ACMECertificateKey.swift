public import _CryptoExtras
public import Crypto
import Foundation
import SwiftASN1
public import X509

/// The private key of an issued certificate: a new one for every order, so that a renewal also rotates it.
public enum ACMECertificateKey: Sendable {
    case ecdsaP256(P256.Signing.PrivateKey)
    /// RSA; 2048 bits when generated here (a key read back from disk is taken as it is).
    case rsa2048(_RSA.Signing.PrivateKey)

    /// A fresh key of `type`.
    public static func generate(_ type: ACMEConfiguration.KeyType) throws -> ACMECertificateKey {
        switch type {
        case .ecdsaP256: return .ecdsaP256(P256.Signing.PrivateKey())
        case .rsa2048: return .rsa2048(try _RSA.Signing.PrivateKey(keySize: .bits2048))
        }
    }

    /// Reads a key written by ``pemRepresentation`` (PKCS#8 for ECDSA, PKCS#1 or PKCS#8 for RSA).
    public init(pemRepresentation text: String) throws {
        if let key = try? P256.Signing.PrivateKey(pemRepresentation: text) {
            self = .ecdsaP256(key)
        } else {
            self = .rsa2048(try _RSA.Signing.PrivateKey(pemRepresentation: text))
        }
    }

    /// The key as PEM, as NIOSSL reads it for serving.
    public var pemRepresentation: String {
        switch self {
        case .ecdsaP256(let key): return key.pemRepresentation
        case .rsa2048(let key): return key.pemRepresentation
        }
    }

    public var type: ACMEConfiguration.KeyType {
        switch self {
        case .ecdsaP256: return .ecdsaP256
        case .rsa2048: return .rsa2048
        }
    }

    public var certificatePrivateKey: Certificate.PrivateKey {
        switch self {
        case .ecdsaP256(let key): return Certificate.PrivateKey(key)
        case .rsa2048(let key): return Certificate.PrivateKey(key)
        }
    }

    public var publicKey: Certificate.PublicKey { certificatePrivateKey.publicKey }

    /// A PKCS#10 request (DER) for `names`: every name in the subjectAltName extension (what CAs check), and
    /// the first as the subject's common name when it fits the 64-character limit (older clients look there).
    public func certificateSigningRequest(names: [String]) throws -> [UInt8] {
        guard let first = names.first else { throw ACMEError.badResponse("a certificate request needs at least one name") }
        let subject = try DistinguishedName {
            if first.utf8.count <= 64 { CommonName(first) }
        }
        let extensions = try Certificate.Extensions {
            SubjectAlternativeNames(names.map { .dnsName($0) })
        }
        let attributes = CertificateSigningRequest.Attributes([try .init(ExtensionRequest(extensions: extensions))])
        let request = try CertificateSigningRequest(
            version: .v1, subject: subject, privateKey: certificatePrivateKey, attributes: attributes
        )
        var serializer = DER.Serializer()
        try serializer.serialize(request)
        return serializer.serializedBytes
    }
}
