@testable import EdgeCore
import NIOCore
import NIOEmbedded
import NIOSSL
import Testing

@Suite("Reading the ClientHello for SNI, ALPN and the key types a client accepts")
struct ClientHelloTests {
    /// The first bytes NIOSSL's client sends with `configure` applied, as a server receives them.
    private func clientHello(serverName: String?, _ configure: (inout TLSConfiguration) -> Void = { _ in }) throws -> ByteBuffer {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.certificateVerification = .none
        configure(&configuration)
        let context = try NIOSSLContext(configuration: configuration)
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(try NIOSSLClientHandler(context: context, serverHostname: serverName))
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 443)).wait()
        var bytes = ByteBuffer()
        while var chunk = try channel.readOutbound(as: ByteBuffer.self) { bytes.writeBuffer(&chunk) }
        _ = try? channel.finish()
        return bytes
    }

    @Test("A modern client: its server name, its ALPN list, and ECDSA accepted")
    func modernClient() throws {
        let bytes = try clientHello(serverName: "A.Test") { $0.applicationProtocols = ["h2", "http/1.1"] }
        guard case .hello(let hello) = ClientHello.parse(bytes) else {
            Issue.record("not parsed")
            return
        }
        #expect(hello.serverName == "a.test")
        #expect(hello.applicationProtocols == ["h2", "http/1.1"])
        #expect(hello.acceptsECDSA)
    }

    @Test("A TLS 1.2 client offering only RSA suites does not accept ECDSA")
    func rsaOnlyClient() throws {
        let bytes = try clientHello(serverName: "c.test") {
            $0.maximumTLSVersion = .tlsv12
            $0.cipherSuites = "ECDHE-RSA-AES128-GCM-SHA256"
        }
        guard case .hello(let hello) = ClientHello.parse(bytes) else {
            Issue.record("not parsed")
            return
        }
        #expect(!hello.acceptsECDSA)
    }

    @Test("No SNI; every split of the bytes before the end asks for more; garbage is not a ClientHello")
    func partsAndGarbage() throws {
        let bytes = try clientHello(serverName: nil)
        guard case .hello(let hello) = ClientHello.parse(bytes) else {
            Issue.record("not parsed")
            return
        }
        #expect(hello.serverName == nil)
        for length in stride(from: 0, to: bytes.readableBytes, by: 7) {
            #expect(ClientHello.parse(bytes.getSlice(at: bytes.readerIndex, length: length)!) == .needMore)
        }
        #expect(ClientHello.parse(ByteBuffer(string: "GET / HTTP/1.1\r\nHost: x\r\n\r\n")) == .notClientHello)
        #expect(ClientHello.parse(ByteBuffer(bytes: [22, 3, 1, 0, 0])) == .notClientHello)
        // A record that claims a ClientHello far larger than any real one.
        #expect(ClientHello.parse(ByteBuffer(bytes: [22, 3, 1, 0, 4, 1, 0xFF, 0xFF, 0xFF])) == .notClientHello)
        // Every truncation or corruption of a real ClientHello's body is answered without a crash.
        var corrupted = bytes
        for offset in stride(from: 9, to: bytes.readableBytes, by: 3) {
            corrupted.setInteger(UInt8(0xFF), at: bytes.readerIndex + offset)
            _ = ClientHello.parse(corrupted)
        }
    }

    @Test("A ClientHello split over two TLS records is put back together")
    func splitOverRecords() throws {
        let bytes = try clientHello(serverName: "split.test")
        let length = Int(bytes.getInteger(at: bytes.readerIndex + 3, as: UInt16.self)!)
        let fragment = bytes.getBytes(at: bytes.readerIndex + 5, length: length)!
        var two = ByteBuffer()
        let cut = 40
        two.writeBytes([22, 3, 1]); two.writeInteger(UInt16(cut)); two.writeBytes(fragment[..<cut])
        two.writeBytes([22, 3, 1]); two.writeInteger(UInt16(length - cut)); two.writeBytes(fragment[cut...])
        guard case .hello(let hello) = ClientHello.parse(two) else {
            Issue.record("not parsed")
            return
        }
        #expect(hello.serverName == "split.test")
    }
}

@Suite("The TLS policy's contexts")
struct TLSPolicyContextTests {
    @Test("The server's suite order can be set on NIOSSL's private SSL_CTX (reflection finds it)")
    func serverCipherOrderIsReachable() throws {
        let made = try SelfSignedCertificate.generate(now: .now)
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: try NIOSSLCertificate.fromPEMBytes(Array(made.certificate.utf8)).map { .certificate($0) },
            privateKey: .privateKey(try NIOSSLPrivateKey(bytes: Array(made.key.utf8), format: .pem))
        )
        configuration.minimumTLSVersion = .tlsv12
        #expect(TLSContextFactory.preferServerCipherOrder(try NIOSSLContext(configuration: configuration)))
    }
}
