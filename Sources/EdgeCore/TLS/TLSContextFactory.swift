import NIOCore
import NIOSSL
import X509
import Crypto
import CEdgeLinux

/// Builds the server `NIOSSLContext`s of TLS listeners: the versions and suites of the TLS policy (`[tls]`), ALPN
/// offering `h2` then `http/1.1`.
///
/// Session tickets: BoringSSL encrypts them with a key it makes per context and replaces every two days
/// (`SSL_DEFAULT_TICKET_KEY_ROTATION_INTERVAL`), keeping the previous key to decrypt; every reload builds new
/// contexts, and so new keys, too. Tickets therefore never outlive a key by more than one rotation.
enum TLSContextFactory {
    /// The ALPN protocols Edge offers, in order of preference.
    static let applicationProtocols = ["h2", "http/1.1"]

    /// How long a closing connection waits for the client's `close_notify` after sending its own (NIOSSL's
    /// default is 5 s). Nothing more is read by then, so waiting only holds the descriptor — and a client that
    /// has already half-closed TCP can never answer; one second still lets a well-behaved client close first,
    /// so that unread bytes of its own do not turn our close into a reset.
    static let closeNotifyTimeout = TimeAmount.seconds(1)

    /// A certificate chain and key, loaded, with the key's type.
    struct Loaded {
        var chain: [NIOSSLCertificate]
        var key: NIOSSLPrivateKey
        var isECDSA: Bool
    }

    /// Creates a context from PEM text.
    static func makeContext(
        certificateChainPEM: String, privateKeyPEM: String, policy: TLSPolicyConfiguration = .init(),
        applicationProtocols: [String] = applicationProtocols
    ) throws -> NIOSSLContext {
        try makeContext(
            chain: NIOSSLCertificate.fromPEMBytes(Array(certificateChainPEM.utf8)),
            key: NIOSSLPrivateKey(bytes: Array(privateKeyPEM.utf8), format: .pem), policy: policy,
            applicationProtocols: applicationProtocols
        )
    }

    /// Creates a context from PEM files on disk.
    static func makeContext(certificatePath: String, privateKeyPath: String, policy: TLSPolicyConfiguration = .init()) throws -> NIOSSLContext {
        let loaded = try load(certificatePath: certificatePath, privateKeyPath: privateKeyPath)
        return try makeContext(chain: loaded.chain, key: loaded.key, policy: policy)
    }

    /// Reads a certificate chain and its key, and tells whether the key is ECDSA (else RSA).
    static func load(certificatePath: String, privateKeyPath: String) throws -> Loaded {
        let chain = try NIOSSLCertificate.fromPEMFile(certificatePath)
        guard let leaf = chain.first else { throw TLSSetupError(message: "\(certificatePath) holds no certificate") }
        let key = try NIOSSLPrivateKey(file: privateKeyPath, format: .pem)
        let certificate = try Certificate(derEncoded: leaf.toDERBytes())
        let isECDSA = P256.Signing.PublicKey(certificate.publicKey) != nil || P384.Signing.PublicKey(certificate.publicKey) != nil
            || P521.Signing.PublicKey(certificate.publicKey) != nil
        return Loaded(chain: chain, key: key, isECDSA: isECDSA)
    }

    static func makeContext(
        chain: [NIOSSLCertificate], key: NIOSSLPrivateKey, policy: TLSPolicyConfiguration = .init(),
        applicationProtocols: [String] = applicationProtocols
    ) throws -> NIOSSLContext {
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: chain.map { .certificate($0) },
            privateKey: .privateKey(key)
        )
        switch policy.profile {
        case .intermediate:
            configuration.minimumTLSVersion = .tlsv12
            configuration.cipherSuites = policy.cipherString
        case .modern:
            configuration.minimumTLSVersion = .tlsv13
        }
        configuration.maximumTLSVersion = .tlsv13
        configuration.applicationProtocols = applicationProtocols
        configuration.shutdownTimeout = closeNotifyTimeout
        let context = try NIOSSLContext(configuration: configuration)
        preferServerCipherOrder(context)
        return context
    }

    /// Has BoringSSL pick the suite by the policy's order, strongest first, instead of the client's — as Mozilla's
    /// "modern" and nginx's `ssl_prefer_server_ciphers` do and as testssl.sh asks. NIOSSL has no setting for it and
    /// keeps its `SSL_CTX` private, so the pointer is read by reflection; `false` if that ever stops working
    /// (a unit test says so before a release does).
    @discardableResult
    static func preferServerCipherOrder(_ context: NIOSSLContext) -> Bool {
        guard let pointer = Mirror(reflecting: context).children.first(where: { $0.label == "sslContext" })?.value as? OpaquePointer
        else { return false }
        CEdgeLinux_preferServerCipherOrder(UnsafeMutableRawPointer(pointer))
        return true
    }
}

/// A certificate that cannot be used.
struct TLSSetupError: Error, CustomStringConvertible {
    var message: String
    var description: String { message }
}
