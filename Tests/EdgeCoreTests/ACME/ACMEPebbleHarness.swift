import Crypto
@testable import EdgeCore
import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import NIOTLS
import SwiftASN1
import Synchronization
import X509

/// A Pebble ACME test CA on loopback, with its own TLS certificate, a pebble-challtestsrv as its DNS server
/// (every name resolves to 127.0.0.1) and its ports chosen at start.
///
/// Debian's `pebble` package ships the binaries but not Pebble's test certificates, so the harness makes a
/// throwaway CA and a certificate for 127.0.0.1 with swift-certificates; that CA is what `ca_roots` names.
final class PebbleHarness {
    static let binary = PebbleHarness.find("pebble")
    static let challengeServerBinary = PebbleHarness.find("pebble-challtestsrv")
    /// Pebble tests run only where both binaries are installed (`apt-get install pebble`).
    static var isAvailable: Bool { binary != nil && challengeServerBinary != nil }

    let folder: String
    let caRootsPath: String
    let caRootsPEM: String
    let acmePort: Int
    let managementPort: Int
    let dnsPort: Int
    let httpPort: Int
    let tlsPort: Int
    let validitySeconds: Int?
    private var pebble: Process?
    private var challengeServer: Process?
    private let transport: ACMEHTTPClientTransport

    var directoryURL: URL { URL(string: "https://127.0.0.1:\(acmePort)/dir")! }

    /// - Parameters:
    ///   - httpPort, tlsPort: Where Pebble's validation authority connects for HTTP-01 and TLS-ALPN-01.
    ///   - validitySeconds: The lifetime of the certificates Pebble issues (Pebble's default is five years).
    init(httpPort: Int, tlsPort: Int, validitySeconds: Int? = nil) throws {
        folder = ACMETestFiles.temporaryFolder("pebble")
        acmePort = try FreePort.next()
        managementPort = try FreePort.next()
        dnsPort = try FreePort.next()
        self.httpPort = httpPort
        self.tlsPort = tlsPort
        self.validitySeconds = validitySeconds
        let (caPEM, certificatePEM, keyPEM) = try Self.makeServerCertificate()
        caRootsPEM = caPEM
        caRootsPath = folder + "/ca.pem"
        try caPEM.write(toFile: caRootsPath, atomically: true, encoding: .utf8)
        try certificatePEM.write(toFile: folder + "/cert.pem", atomically: true, encoding: .utf8)
        try keyPEM.write(toFile: folder + "/key.pem", atomically: true, encoding: .utf8)
        transport = try ACMEHTTPClientTransport(extraRootsPEM: caPEM, timeout: .seconds(5))
    }

    /// Starts the DNS stand-in and Pebble, and waits for Pebble's directory to answer.
    func start() async throws {
        if challengeServer == nil {
            challengeServer = try launch(
                Self.challengeServerBinary, log: "challtestsrv.log",
                arguments: [
                    "-dns01", "127.0.0.1:\(dnsPort)", "-http01", "", "-https01", "", "-tlsalpn01", "",
                    "-management", "127.0.0.1:\(try FreePort.next())", "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "",
                ]
            )
        }
        var settings: [String: Any] = [
            "listenAddress": "127.0.0.1:\(acmePort)",
            "managementListenAddress": "127.0.0.1:\(managementPort)",
            "certificate": folder + "/cert.pem",
            "privateKey": folder + "/key.pem",
            "httpPort": httpPort,
            "tlsPort": tlsPort,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        ]
        if let validitySeconds { settings["certificateValidityPeriod"] = validitySeconds }
        let configuration = try JSONSerialization.data(withJSONObject: ["pebble": settings], options: [.prettyPrinted])
        try configuration.write(to: URL(fileURLWithPath: folder + "/pebble.json"))
        pebble = try launch(
            Self.binary, log: "pebble.log",
            arguments: ["-config", folder + "/pebble.json", "-dnsserver", "127.0.0.1:\(dnsPort)"],
            // No random validation sleeps; no reuse of valid authorizations, so that every order is really
            // validated (a renewal with the responder stopped must fail). Pebble's default of rejecting 5% of
            // good nonces stays on: the client must cope with badNonce.
            environment: ["PEBBLE_VA_NOSLEEP": "1", "PEBBLE_AUTHZREUSE": "0"]
        )
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline {
            if let response = try? await transport.perform(ACMEHTTPRequest(method: "GET", url: directoryURL.absoluteString)),
                response.status == 200
            {
                return
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw HarnessError("Pebble did not answer at \(directoryURL) within 30 s; see \(folder)/pebble.log")
    }

    /// Stops Pebble (SIGTERM to its own process id) and waits for it to exit; Pebble forgets everything.
    func stopPebble() {
        guard let pebble else { return }
        pebble.terminate()
        pebble.waitUntilExit()
        self.pebble = nil
    }

    func stop() async {
        stopPebble()
        if let challengeServer {
            challengeServer.terminate()
            challengeServer.waitUntilExit()
        }
        challengeServer = nil
        await transport.shutdown()
    }

    /// GET on Pebble's management interface (`/roots/0`, `/cert-status-by-serial/<hex>`).
    func management(_ path: String) async throws -> String {
        let response = try await transport.perform(ACMEHTTPRequest(method: "GET", url: "https://127.0.0.1:\(managementPort)\(path)"))
        guard response.status == 200, let text = String(validating: response.body, as: UTF8.self) else {
            throw HarnessError("management \(path) answered \(response.status)")
        }
        return text
    }

    /// Verifies `chainPEM` (leaf first) up to Pebble's current root, as a client of the site would.
    func verify(chainPEM: String, names: [String]) async throws -> Certificate {
        let chain = try ACMETrust.certificates(fromPEM: chainPEM)
        guard let leaf = chain.first else { throw HarnessError("empty chain") }
        let root = try Certificate(pemEncoded: try await management("/roots/0"))
        for name in names {
            var verifier = Verifier(rootCertificates: CertificateStore([root])) {
                RFC5280Policy()
                ServerIdentityPolicy(serverHostname: name, serverIP: nil)
            }
            let result = await verifier.validate(leaf: leaf, intermediates: CertificateStore(chain.dropFirst()))
            guard case .validCertificate = result else {
                throw HarnessError("chain does not verify for \(name) against Pebble's root: \(result)")
            }
        }
        return leaf
    }

    func log() -> String {
        (try? String(contentsOfFile: folder + "/pebble.log", encoding: .utf8)) ?? ""
    }

    deinit {
        pebble?.terminate()
        challengeServer?.terminate()
        try? FileManager.default.removeItem(atPath: folder)
    }

    private func launch(_ binary: String?, log: String, arguments: [String], environment: [String: String] = [:]) throws -> Process {
        guard let binary else { throw HarnessError("binary missing") }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = arguments
        process.currentDirectoryURL = URL(fileURLWithPath: folder)
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        _ = FileManager.default.createFile(atPath: folder + "/" + log, contents: nil)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: folder + "/" + log))
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
        return process
    }

    private static func find(_ name: String) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        for folder in path.split(separator: ":") + ["/usr/bin"] {
            let candidate = "\(folder)/\(name)"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        return nil
    }

    /// A CA and, signed by it, a certificate for 127.0.0.1 and localhost: Pebble's HTTPS identity.
    private static func makeServerCertificate() throws -> (ca: String, certificate: String, key: String) {
        let now = Date()
        let caKey = P256.Signing.PrivateKey()
        let caName = try DistinguishedName { CommonName("Edge ACME test CA") }
        let ca = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: Certificate.PublicKey(caKey.publicKey),
            notValidBefore: now.addingTimeInterval(-3600), notValidAfter: now.addingTimeInterval(86_400),
            issuer: caName, subject: caName, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
                Critical(KeyUsage(keyCertSign: true))
            },
            issuerPrivateKey: Certificate.PrivateKey(caKey)
        )
        let key = P256.Signing.PrivateKey()
        let leaf = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: Certificate.PublicKey(key.publicKey),
            notValidBefore: now.addingTimeInterval(-3600), notValidAfter: now.addingTimeInterval(86_400),
            issuer: caName, subject: try DistinguishedName { CommonName("127.0.0.1") }, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.notCertificateAuthority)
                Critical(KeyUsage(digitalSignature: true))
                try ExtendedKeyUsage([.serverAuth])
                SubjectAlternativeNames([.dnsName("localhost"), .ipAddress(ASN1OctetString(contentBytes: [127, 0, 0, 1]))])
            },
            issuerPrivateKey: Certificate.PrivateKey(caKey)
        )
        return (try ca.serializeAsPEM().pemString + "\n", try leaf.serializeAsPEM().pemString + "\n", key.pemRepresentation + "\n")
    }
}

struct HarnessError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// Counts what the test responders answered, to show that Pebble really came to them.
final class ResponderCounter: Sendable {
    private let value = Mutex(0)
    func increment() { value.withLock { $0 += 1 } }
    var count: Int { value.withLock { $0 } }
}

/// The HTTP-01 responder a site would be: `GET /.well-known/acme-challenge/<token>` answered from the
/// challenge store as `text/plain`, 404 otherwise.
enum HTTP01Responder {
    static func start(port: Int, store: ACMEChallengeStore, counter: ResponderCounter) async throws -> any Channel {
        try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(Handler(store: store, counter: counter))
                }
            }
            .bind(host: "127.0.0.1", port: port).get()
    }

    private final class Handler: ChannelInboundHandler {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart
        let store: ACMEChallengeStore
        let counter: ResponderCounter
        var uri = ""

        init(store: ACMEChallengeStore, counter: ResponderCounter) {
            self.store = store
            self.counter = counter
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let head): uri = head.uri
            case .body: break
            case .end:
                var status = HTTPResponseStatus.notFound
                var body = "not found\n"
                if uri.hasPrefix(ACMEChallengeStore.http01PathPrefix),
                    let answer = store.http01KeyAuthorization(token: uri.dropFirst(ACMEChallengeStore.http01PathPrefix.count))
                {
                    status = .ok
                    body = answer
                    counter.increment()
                }
                let head = HTTPResponseHead(
                    version: .http1_1, status: status,
                    headers: ["Content-Type": "text/plain", "Content-Length": "\(body.utf8.count)", "Connection": "close"]
                )
                context.write(wrapOutboundOut(.head(head)), promise: nil)
                context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: body)))), promise: nil)
                let channel = context.channel
                context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
            }
        }
    }
}

/// The TLS-ALPN-01 responder a site's TLS layer would be: reads the SNI name from the ClientHello, then
/// completes the handshake with the store's challenge context for it, which negotiates ALPN `acme-tls/1`.
enum TLSALPNResponder {
    static func start(port: Int, store: ACMEChallengeStore, counter: ResponderCounter) async throws -> any Channel {
        try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let sni = SNIHandler { result in
                        guard case .hostname(let name) = result, let tls = store.tlsALPNContext(forServerName: name) else {
                            return channel.close()
                        }
                        return channel.eventLoop.makeCompletedFuture {
                            try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls))
                            counter.increment()
                        }
                    }
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(sni))
                }
            }
            .bind(host: "127.0.0.1", port: port).get()
    }
}
