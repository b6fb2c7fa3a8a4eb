import NIOCore
import NIOSSL

/// Builds the server `NIOSSLContext` for a TLS listener: TLS 1.2 and 1.3, ALPN offering `h2` then `http/1.1`.
enum TLSContextFactory {
    /// The ALPN protocols Edge offers, in order of preference.
    static let applicationProtocols = ["h2", "http/1.1"]

    /// How long a closing connection waits for the client's `close_notify` after sending its own (NIOSSL's
    /// default is 5 s). Nothing more is read by then, so waiting only holds the descriptor — and a client that
    /// has already half-closed TCP can never answer; one second still lets a well-behaved client close first,
    /// so that unread bytes of its own do not turn our close into a reset.
    static let closeNotifyTimeout = TimeAmount.seconds(1)

    /// Creates a context from PEM text.
    static func makeContext(certificateChainPEM: String, privateKeyPEM: String) throws -> NIOSSLContext {
        try makeContext(
            chain: NIOSSLCertificate.fromPEMBytes(Array(certificateChainPEM.utf8)),
            key: NIOSSLPrivateKey(bytes: Array(privateKeyPEM.utf8), format: .pem)
        )
    }

    /// Creates a context from PEM files on disk.
    static func makeContext(certificatePath: String, privateKeyPath: String) throws -> NIOSSLContext {
        try makeContext(
            chain: NIOSSLCertificate.fromPEMFile(certificatePath),
            key: NIOSSLPrivateKey(file: privateKeyPath, format: .pem)
        )
    }

    private static func makeContext(chain: [NIOSSLCertificate], key: NIOSSLPrivateKey) throws -> NIOSSLContext {
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: chain.map { .certificate($0) },
            privateKey: .privateKey(key)
        )
        configuration.minimumTLSVersion = .tlsv12
        configuration.maximumTLSVersion = .tlsv13
        configuration.applicationProtocols = applicationProtocols
        configuration.shutdownTimeout = closeNotifyTimeout
        return try NIOSSLContext(configuration: configuration)
    }
}
