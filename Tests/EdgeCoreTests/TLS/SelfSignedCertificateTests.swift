import EdgeCore
import Foundation
import Testing
import X509

@Suite("Self-signed certificate")
struct SelfSignedCertificateTests {
    @Test("is generated once, covers localhost, 127.0.0.1 and ::1, and is reused")
    func generatesAndReuses() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("edge-cert-\(UUID())").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let first = try SelfSignedCertificate.loadOrCreate(in: directory)
        #expect(first.generated)
        let certificate = try Certificate(pemEncoded: first.certificatePEM)
        let names = try #require(try certificate.extensions.subjectAlternativeNames)
        #expect(names.contains(.dnsName("localhost")))
        #expect(names.count == 3)
        let mode = try FileManager.default.attributesOfItem(atPath: first.privateKeyPath)[.posixPermissions] as? Int
        #expect(mode == 0o600)
        let second = try SelfSignedCertificate.loadOrCreate(in: directory)
        #expect(!second.generated)
        #expect(second.certificatePEM == first.certificatePEM)
    }

    @Test("a corrupt certificate file is replaced")
    func replacesCorrupt() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("edge-cert-\(UUID())").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let first = try SelfSignedCertificate.loadOrCreate(in: directory)
        try "garbage".write(toFile: first.certificatePath, atomically: true, encoding: .utf8)
        let second = try SelfSignedCertificate.loadOrCreate(in: directory)
        #expect(second.generated)
        #expect(second.certificatePEM != "garbage")
    }
}
