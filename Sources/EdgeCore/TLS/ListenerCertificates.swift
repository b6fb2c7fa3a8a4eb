import NIOCore
import NIOSSL

/// The certificates one TLS listener serves, chosen per connection from its ClientHello: the site whose name the
/// client sent (SNI: exact name, then a one-label wildcard as RFC 6125 §6.4.3 allows), else the listener's own
/// certificate; and of a site's certificates, ECDSA when the client accepts it, else RSA.
///
/// Built whole at start and at every reload (and after an ACME renewal), then only read: a connection takes the
/// table in force when it is accepted, so a new certificate reaches new connections and no connection drops.
final class ListenerCertificates: Sendable {
    /// A certificate per key type for one set of names.
    struct Choice: Sendable {
        var ecdsa: NIOSSLContext?
        var rsa: NIOSSLContext?

        func context(acceptsECDSA: Bool) -> NIOSSLContext? {
            acceptsECDSA ? (ecdsa ?? rsa) : (rsa ?? ecdsa)
        }
    }

    /// The listener's own certificate (or the self-signed one): for clients that send no name, or one no site has.
    let fallback: Choice
    private let exact: [String: Choice]
    private let wildcards: [String: Choice]
    /// Answers TLS-ALPN-01 challenges (RFC 8737) for ACME, when ACME is on.
    private let challenges: (@Sendable (String) -> NIOSSLContext?)?

    init(fallback: Choice, exact: [String: Choice] = [:], wildcards: [String: Choice] = [:], challenges: (@Sendable (String) -> NIOSSLContext?)? = nil) {
        self.fallback = fallback
        self.exact = exact
        self.wildcards = wildcards
        self.challenges = challenges
    }

    /// Whether every connection gets the same context, so the ClientHello need not be read first.
    var isSingle: Bool { exact.isEmpty && wildcards.isEmpty && challenges == nil && (fallback.ecdsa == nil || fallback.rsa == nil) }

    /// The context of a connection whose ClientHello is `hello` (`nil`: it was not one Edge could read).
    func context(for hello: ClientHello?) -> NIOSSLContext {
        let defaultContext = fallback.context(acceptsECDSA: hello?.acceptsECDSA ?? true)!
        guard let hello else { return defaultContext }
        if let challenges, hello.applicationProtocols == ["acme-tls/1"], let name = hello.serverName {
            if let context = challenges(name) { return context }
        }
        guard let name = hello.serverName else { return defaultContext }
        if let choice = exact[name], let context = choice.context(acceptsECDSA: hello.acceptsECDSA) { return context }
        if let dot = name.utf8.firstIndex(of: UInt8(ascii: ".")) {
            let parent = String(name[name.utf8.index(after: dot)...])
            if let choice = wildcards[parent], let context = choice.context(acceptsECDSA: hello.acceptsECDSA) { return context }
        }
        return defaultContext
    }
}

/// Sits first on a TLS connection whose listener has several certificates: holds the bytes until the ClientHello
/// is whole, asks ``ListenerCertificates`` for the context, puts NIOSSL's handler with it in its own place and
/// hands it the bytes. Bytes that are not a ClientHello go to the default context's handler unchanged, so plain
/// HTTP on the TLS port and garbage fail exactly as they would without it. The handshake deadline
/// (``ConnectionGuard``) bounds how long it waits.
final class ClientHelloSniffer: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private let certificates: ListenerCertificates
    private let install: (NIOSSLContext, ChannelHandlerContext) throws -> Void
    private var buffered: ByteBuffer?
    private var decided = false

    /// `install` adds the TLS handler with the chosen context right after this handler.
    init(certificates: ListenerCertificates, install: @escaping (NIOSSLContext, ChannelHandlerContext) throws -> Void) {
        self.certificates = certificates
        self.install = install
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !decided else {
            context.fireChannelRead(data)
            return
        }
        var bytes = unwrapInboundIn(data)
        if buffered == nil {
            buffered = bytes
        } else {
            buffered!.writeBuffer(&bytes)
        }
        let buffer = buffered!
        switch ClientHello.parse(buffer) {
        case .needMore where buffer.readableBytes <= ClientHello.maximumBytes:
            return
        case .needMore, .notClientHello:
            decide(certificates.context(for: nil), context: context)
        case .hello(let hello):
            decide(certificates.context(for: hello), context: context)
        }
    }

    private func decide(_ chosen: NIOSSLContext, context: ChannelHandlerContext) {
        decided = true
        do {
            try install(chosen, context)
        } catch {
            context.fireErrorCaught(error)
            context.close(promise: nil)
            return
        }
        let bytes = buffered!
        buffered = nil
        // The read-complete that follows this read reaches the TLS handler once this handler has left.
        context.fireChannelRead(wrapInboundOut(bytes))
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if decided { context.fireChannelReadComplete() }
    }
}
