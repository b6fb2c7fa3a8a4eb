public import Crypto
import Foundation

/// Base64url without padding (RFC 7515 §2), the encoding of every binary value in JOSE and ACME.
enum Base64URL {
    static func encode(_ bytes: some Sequence<UInt8>) -> String {
        var text = Data(bytes).base64EncodedString()
        text = text.replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
        while text.hasSuffix("=") { text.removeLast() }
        return text
    }

    static func decode(_ text: String) -> [UInt8]? {
        var standard = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while standard.utf8.count % 4 != 0 { standard.append("=") }
        return Data(base64Encoded: standard).map { [UInt8]($0) }
    }
}

/// A public JSON Web Key (RFC 7517), as ACME puts it in an account's first request and in key authorizations.
public enum JSONWebKey: Sendable, Equatable {
    /// An elliptic-curve key: the curve name (`P-256`) and the big-endian coordinates.
    case ec(curve: String, x: [UInt8], y: [UInt8])
    /// An RSA key: the big-endian modulus and exponent (no leading zero bytes).
    case rsa(n: [UInt8], e: [UInt8])

    public init(_ key: P256.Signing.PublicKey) {
        // x963 is 0x04 || X || Y, each 32 bytes.
        let point = [UInt8](key.x963Representation)
        self = .ec(curve: "P-256", x: Array(point[1..<33]), y: Array(point[33..<65]))
    }

    /// The key's members in the lexicographic order and compact form RFC 7638 §3 requires for a thumbprint;
    /// the same text serves as the `jwk` header value (any order would do there).
    public var canonicalJSON: String {
        switch self {
        case .ec(let curve, let x, let y):
            return #"{"crv":"\#(curve)","kty":"EC","x":"\#(Base64URL.encode(x))","y":"\#(Base64URL.encode(y))"}"#
        case .rsa(let n, let e):
            return #"{"e":"\#(Base64URL.encode(e))","kty":"RSA","n":"\#(Base64URL.encode(n))"}"#
        }
    }

    /// The RFC 7638 thumbprint (SHA-256 of ``canonicalJSON``), base64url-encoded: the account's half of every
    /// key authorization.
    public var thumbprint: String {
        Base64URL.encode(SHA256.hash(data: Array(canonicalJSON.utf8)))
    }
}

/// The account key: ECDSA P-256, signing with ES256.
///
/// P-256 rather than RSA because every ACME CA accepts it and signatures are small and quick; the key is kept
/// as PKCS#8 PEM by ``ACMEManager`` and reused across restarts, so the account stays the same.
public struct ACMEAccountKey: Sendable {
    public let privateKey: P256.Signing.PrivateKey

    public init(_ privateKey: P256.Signing.PrivateKey = P256.Signing.PrivateKey()) {
        self.privateKey = privateKey
    }

    public init(pemRepresentation: String) throws {
        self.privateKey = try P256.Signing.PrivateKey(pemRepresentation: pemRepresentation)
    }

    public var pemRepresentation: String { privateKey.pemRepresentation }
    public var jwk: JSONWebKey { JSONWebKey(privateKey.publicKey) }
    public var thumbprint: String { jwk.thumbprint }

    /// The key authorization for a challenge token (RFC 8555 §8.1): `token || "." || thumbprint`.
    public func keyAuthorization(token: String) -> String {
        token + "." + thumbprint
    }

    /// Which key identifies the signer in the protected header.
    enum Signer {
        /// The whole public key: only for `newAccount` (and `revokeCert` by certificate key, unused here).
        case jwk
        /// The account URL, for every request once the account exists.
        case kid(String)
    }

    /// A JWS in flattened JSON serialization (RFC 7515 §7.2.2), the body of every ACME POST.
    ///
    /// `payload` is the JSON text of the request, or `nil` for POST-as-GET (an empty payload string, RFC 8555
    /// §6.3). The ES256 signature is the raw 64-byte r || s, not DER (RFC 7518 §3.4).
    func signedBody(url: String, nonce: String, signer: Signer, payload: [UInt8]?) throws -> [UInt8] {
        let keyMember: String
        switch signer {
        case .jwk: keyMember = #""jwk":\#(jwk.canonicalJSON)"#
        case .kid(let account): keyMember = #""kid":\#(JSONText.quoted(account))"#
        }
        let header = #"{"alg":"ES256",\#(keyMember),"nonce":\#(JSONText.quoted(nonce)),"url":\#(JSONText.quoted(url))}"#
        let protected = Base64URL.encode(Array(header.utf8))
        let encodedPayload = payload.map { Base64URL.encode($0) } ?? ""
        let signature = try privateKey.signature(for: Array((protected + "." + encodedPayload).utf8))
        let body = #"{"protected":"\#(protected)","payload":"\#(encodedPayload)","signature":"\#(Base64URL.encode(signature.rawRepresentation))"}"#
        return Array(body.utf8)
    }
}
