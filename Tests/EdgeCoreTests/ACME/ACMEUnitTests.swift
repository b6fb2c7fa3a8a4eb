import Crypto
@testable import EdgeCore
import Foundation
import SwiftASN1
import Testing
import TOMLKit
import X509

@Suite("ACME: JOSE, keys and CSRs")
struct ACMEJOSETests {
    @Test("the JWK thumbprint of RFC 7638 §3.1's example key")
    func rfc7638Thumbprint() throws {
        let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
        let key = JSONWebKey.rsa(n: try #require(Base64URL.decode(n)), e: try #require(Base64URL.decode("AQAB")))
        #expect(key.canonicalJSON == #"{"e":"AQAB","kty":"RSA","n":"\#(n)"}"#)
        #expect(key.thumbprint == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs")
    }

    @Test("an EC key's JWK has its members in RFC 7638 order, 32-byte coordinates, and the key authorization uses its thumbprint")
    func ecJWKAndKeyAuthorization() throws {
        let key = ACMEAccountKey()
        guard case .ec(let curve, let x, let y) = key.jwk else { Issue.record("not an EC JWK"); return }
        #expect(curve == "P-256" && x.count == 32 && y.count == 32)
        let json = key.jwk.canonicalJSON
        #expect(json.hasPrefix(#"{"crv":"P-256","kty":"EC","x":""#) && json.contains(#"","y":""#))
        #expect(key.thumbprint == Base64URL.encode(SHA256.hash(data: Array(json.utf8))))
        #expect(!key.thumbprint.contains("=") && key.thumbprint.utf8.count == 43)
        #expect(key.keyAuthorization(token: "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA") == "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA." + key.thumbprint)
        // The account key survives a PEM round trip (it is kept on disk between restarts).
        #expect(try ACMEAccountKey(pemRepresentation: key.pemRepresentation).thumbprint == key.thumbprint)
    }

    @Test("base64url has no padding and round-trips every length")
    func base64URL() {
        #expect(Base64URL.encode([0xFB, 0xFF]) == "-_8")
        for length in 0..<8 {
            let bytes = (0..<length).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ 250) }
            #expect(Base64URL.decode(Base64URL.encode(bytes)) == bytes)
        }
    }

    @Test("a JWS carries jwk or kid, nonce and url in its protected header, and an ES256 signature over both parts")
    func jwsStructureAndSignature() throws {
        let key = ACMEAccountKey()
        for signer in [ACMEAccountKey.Signer.jwk, .kid("https://ca.test/acct/1")] {
            for payload in [Array(#"{"a":1}"#.utf8), nil] {
                let body = try key.signedBody(url: "https://ca.test/new-order", nonce: "n0nce", signer: signer, payload: payload)
                let object = try #require(try JSONSerialization.jsonObject(with: Data(body)) as? [String: String])
                let protected = try #require(object["protected"])
                let headerBytes = try #require(Base64URL.decode(protected))
                let header = try #require(try JSONSerialization.jsonObject(with: Data(headerBytes)) as? [String: Any])
                #expect(header["alg"] as? String == "ES256")
                #expect(header["nonce"] as? String == "n0nce")
                #expect(header["url"] as? String == "https://ca.test/new-order")
                switch signer {
                case .jwk:
                    #expect(header["kid"] == nil)
                    let jwk = try #require(header["jwk"] as? [String: String])
                    #expect(jwk["kty"] == "EC" && jwk["crv"] == "P-256")
                case .kid(let url):
                    #expect(header["jwk"] == nil && header["kid"] as? String == url)
                }
                let encodedPayload = try #require(object["payload"])
                #expect(encodedPayload == (payload.map { Base64URL.encode($0) } ?? ""))
                let encodedSignature = try #require(object["signature"])
                let raw = try #require(Base64URL.decode(encodedSignature))
                #expect(raw.count == 64)
                let signature = try P256.Signing.ECDSASignature(rawRepresentation: raw)
                #expect(key.privateKey.publicKey.isValidSignature(signature, for: Array((protected + "." + encodedPayload).utf8)))
            }
        }
    }

    @Test("the CSR parses back with swift-certificates: names in subjectAltName, first as CN, the key's public key, a valid signature", arguments: ACMEConfiguration.KeyType.allCases)
    func certificateSigningRequest(type: ACMEConfiguration.KeyType) throws {
        let key = try ACMECertificateKey.generate(type)
        let names = ["www.example.test", "example.test", "static.example.test"]
        let der = try key.certificateSigningRequest(names: names)
        let csr = try CertificateSigningRequest(derEncoded: der)
        #expect(csr.publicKey == key.publicKey)
        #expect(csr.publicKey.isValidSignature(csr.signature, for: csr))
        #expect(csr.subject.description.contains("CN=www.example.test"))
        let extensions = try #require(try csr.attributes.extensionRequest?.extensions)
        let alternatives = try #require(try extensions.subjectAlternativeNames)
        #expect(alternatives.compactMap { if case .dnsName(let name) = $0 { name } else { nil } } == names)
        switch type {
        case .ecdsaP256: #expect(csr.signatureAlgorithm == .ecdsaWithSHA256)
        case .rsa2048: #expect(csr.signatureAlgorithm == .sha256WithRSAEncryption)
        }
        // The certificate key survives a PEM round trip (it is stored beside the chain).
        #expect(try ACMECertificateKey(pemRepresentation: key.pemRepresentation).publicKey == key.publicKey)
    }

    @Test("a name longer than a CN allows goes in subjectAltName only")
    func longNameHasNoCommonName() throws {
        let long = String(repeating: "a", count: 60) + ".example.test"
        let csr = try CertificateSigningRequest(derEncoded: try ACMECertificateKey.generate(.ecdsaP256).certificateSigningRequest(names: [long]))
        #expect(!csr.subject.description.contains("CN="))
        #expect(try csr.attributes.extensionRequest?.extensions.subjectAlternativeNames?.contains(.dnsName(long)) == true)
    }
}

@Suite("ACME: challenge store")
struct ACMEChallengeStoreTests {
    @Test("HTTP-01 answers are set, found by Substring token and removed")
    func http01() {
        let store = ACMEChallengeStore()
        let path = "/.well-known/acme-challenge/tok-123"
        let token = path.dropFirst(ACMEChallengeStore.http01PathPrefix.count)
        #expect(store.http01KeyAuthorization(token: token) == nil)
        store.setHTTP01(token: "tok-123", keyAuthorization: "tok-123.thumb")
        #expect(store.http01KeyAuthorization(token: token) == "tok-123.thumb")
        #expect(store.http01KeyAuthorization(token: "tok-12") == nil)
        store.removeHTTP01(token: "tok-123")
        #expect(store.http01KeyAuthorization(token: token) == nil)
    }

    @Test("the TLS-ALPN-01 certificate is self-signed for the name, with a critical acmeIdentifier holding SHA-256 of the key authorization")
    func tlsALPNCertificate() throws {
        let store = ACMEChallengeStore()
        #expect(store.tlsALPNCertificate(forServerName: "a.example.test") == nil && !store.hasTLSALPNChallenges)
        let keyAuthorization = "token-xyz.thumbprint-abc"
        try store.setTLSALPN01(serverName: "A.Example.Test", keyAuthorization: keyAuthorization)
        let pair = try #require(store.tlsALPNCertificate(forServerName: "a.example.test"))
        #expect(store.hasTLSALPNChallenges && store.tlsALPNContext(forServerName: "a.example.test") != nil)
        let certificate = try Certificate(pemEncoded: pair.certificatePEM)
        let ext = try #require(certificate.extensions[oid: ACMEChallengeStore.acmeIdentifierOID])
        #expect(ext.critical)
        #expect(ACMEChallengeStore.acmeIdentifierOID.description == "1.3.6.1.5.5.7.1.31")
        // extnValue is the DER OCTET STRING of the 32-byte digest: 04 20 <digest>.
        let digest = Array(SHA256.hash(data: Array(keyAuthorization.utf8)))
        #expect(Array(ext.value) == [0x04, 0x20] + digest)
        #expect(ACMEChallengeStore.acmeIdentifierDigest(of: certificate) == digest)
        #expect(try certificate.extensions.subjectAlternativeNames == SubjectAlternativeNames([.dnsName("A.Example.Test")]))
        #expect(certificate.issuer == certificate.subject)
        #expect(certificate.publicKey.isValidSignature(certificate.signature, for: certificate))
        let key = try P256.Signing.PrivateKey(pemRepresentation: pair.privateKeyPEM)
        #expect(certificate.publicKey == Certificate.PublicKey(key.publicKey))
        store.removeTLSALPN01(serverName: "a.EXAMPLE.test")
        #expect(store.tlsALPNCertificate(forServerName: "a.example.test") == nil && !store.hasTLSALPNChallenges)
        #expect(store.tlsALPNContext(forServerName: "a.example.test") == nil)
    }
}

@Suite("ACME: renewal schedule and backoff")
struct ACMERenewalScheduleTests {
    let start = Date(timeIntervalSince1970: 1_800_000_000)
    let day: TimeInterval = 86_400

    @Test("a 90-day certificate renews renew_before_days before expiry, at most a third of its lifetime")
    func longLived() {
        let notAfter = start.addingTimeInterval(90 * day)
        #expect(ACMERenewalSchedule(renewBeforeDays: 30).dueDate(notBefore: start, notAfter: notAfter) == start.addingTimeInterval(60 * day))
        #expect(ACMERenewalSchedule(renewBeforeDays: 10).dueDate(notBefore: start, notAfter: notAfter) == start.addingTimeInterval(80 * day))
        #expect(ACMERenewalSchedule(renewBeforeDays: 50).dueDate(notBefore: start, notAfter: notAfter) == start.addingTimeInterval(60 * day))
    }

    @Test("a short-lived certificate renews at two thirds of its lifetime")
    func shortLived() {
        let schedule = ACMERenewalSchedule(renewBeforeDays: 30)
        #expect(schedule.dueDate(notBefore: start, notAfter: start.addingTimeInterval(6 * day)) == start.addingTimeInterval(4 * day))
        #expect(schedule.dueDate(notBefore: start, notAfter: start.addingTimeInterval(30)) == start.addingTimeInterval(20))
    }

    @Test("jitter moves renewal earlier by up to 5% of the lifetime, at most a day, never before notBefore")
    func jitter() {
        let schedule = ACMERenewalSchedule(renewBeforeDays: 30)
        let notAfter = start.addingTimeInterval(90 * day)
        let due = start.addingTimeInterval(60 * day)
        #expect(schedule.renewalDate(notBefore: start, notAfter: notAfter, random: 0) == due)
        #expect(schedule.renewalDate(notBefore: start, notAfter: notAfter, random: 0.5) == due.addingTimeInterval(-day / 2))
        let earliest = schedule.renewalDate(notBefore: start, notAfter: notAfter, random: 0.999_999)
        #expect(earliest < due && earliest >= due.addingTimeInterval(-day))
        let short = schedule.renewalDate(notBefore: start, notAfter: start.addingTimeInterval(6 * day), random: 0.5)
        #expect(abs(short.timeIntervalSince(start.addingTimeInterval(4 * day - 0.025 * 6 * day))) < 0.001)
        for random in stride(from: 0.0, through: 1.0, by: 0.125) {
            let date = schedule.renewalDate(notBefore: start, notAfter: start.addingTimeInterval(12), random: random)
            #expect(date >= start && date <= start.addingTimeInterval(8))
        }
    }

    @Test("backoff doubles from a minute to a day, with up to 10% jitter, and honours a longer Retry-After up to a week")
    func backoff() {
        let schedule = ACMERenewalSchedule(renewBeforeDays: 30)
        let delays = (1...14).map { schedule.retryDelay(failures: $0, random: 0, now: start, retryAfter: nil) }
        #expect(Array(delays.prefix(5)) == [60, 120, 240, 480, 960])
        #expect(delays.last == 86_400)
        #expect(zip(delays, delays.dropFirst()).allSatisfy { $0 <= $1 })
        #expect(schedule.retryDelay(failures: 1, random: 0.5, now: start, retryAfter: nil) == 63)
        #expect(schedule.retryDelay(failures: 1000, random: 0, now: start, retryAfter: nil) == 86_400)
        #expect(schedule.retryDelay(failures: 1, random: 0, now: start, retryAfter: start.addingTimeInterval(3600)) == 3600)
        #expect(schedule.retryDelay(failures: 3, random: 0, now: start, retryAfter: start.addingTimeInterval(10)) == 240)
        #expect(schedule.retryDelay(failures: 1, random: 0, now: start, retryAfter: start.addingTimeInterval(30 * day)) == 7 * day)
    }

    @Test("accelerated timing runs waits and the clock faster by the same factor")
    func acceleratedTiming() async throws {
        let timing = ACMETiming.accelerated(1000)
        let realStart = Date()
        let start = timing.now()
        try await timing.sleep(200)
        let real = Date().timeIntervalSince(realStart)
        #expect(real >= 0.19 && real < 5)
        #expect(timing.now().timeIntervalSince(start) >= 190)
    }

    @Test("serial numbers are lower-case hex without leading zeros")
    func serialHex() throws {
        #expect(ACMEManager.hex(serial: Certificate.SerialNumber(bytes: [0x00, 0x0A, 0xBC])) == "abc")
        #expect(ACMEManager.hex(serial: Certificate.SerialNumber(bytes: [0x80, 0x01])) == "8001")  // stored with a 00 sign byte
    }

    @Test("Retry-After is read as seconds or as an HTTP date")
    func retryAfterParsing() {
        #expect(RetryAfter.parse("120", now: start) == start.addingTimeInterval(120))
        #expect(RetryAfter.parse("Wed, 21 Oct 2015 07:28:00 GMT", now: start) == Date(timeIntervalSince1970: 1_445_412_480))
        #expect(RetryAfter.parse("soon", now: start) == nil && RetryAfter.parse(nil, now: start) == nil)
    }
}

@Suite("ACME: configuration")
struct ACMEConfigurationTests {
    private func read(_ text: String) throws -> (ACMEConfiguration?, [ConfigurationIssue]) {
        let document = "[acme]\n" + text
        let table = try TOMLTable(string: document)
        var reader = TOMLReader(locator: TOMLKeyLocator(text: document))
        let acme = try #require(table["acme"]?.tomlValue.table)
        let result = reader.readACME(acme)
        return (result, reader.issues)
    }

    @Test("defaults: http-01, 30 days, ECDSA P-256, terms agreed")
    func defaults() throws {
        let (acme, issues) = try read(#"directory = "https://acme.test/dir""#)
        #expect(issues.isEmpty)
        let parsed = try #require(acme)
        #expect(parsed == ACMEConfiguration(directory: try #require(URL(string: "https://acme.test/dir"))))
        #expect(parsed.challenge == .http01 && parsed.renewBeforeDays == 30 && parsed.keyType == .ecdsaP256 && parsed.agreeToTerms)
        #expect(parsed.contact.isEmpty && parsed.caRoots == nil)
    }

    @Test("every key is read")
    func allKeys() throws {
        let roots = FileManager.default.temporaryDirectory.appendingPathComponent("acme-roots-\(UUID().uuidString).pem").path
        try SelfSignedCertificate.generate(now: Date()).certificate.write(toFile: roots, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: roots) }
        let (acme, issues) = try read("""
            directory = "https://127.0.0.1:14000/dir"
            contact = ["mailto:ops@example.test"]
            ca_roots = "\(roots)"
            challenge = "tls-alpn-01"
            renew_before_days = 20
            key_type = "rsa-2048"
            agree_to_terms = false
            """)
        #expect(issues.isEmpty)
        let parsed = try #require(acme)
        #expect(parsed.contact == ["mailto:ops@example.test"] && parsed.caRoots == roots)
        #expect(parsed.challenge == .tlsALPN01 && parsed.renewBeforeDays == 20 && parsed.keyType == .rsa2048 && !parsed.agreeToTerms)
    }

    @Test("errors name their keys and lines")
    func errors() throws {
        let (acme, issues) = try read("""
            directory = "http://acme.test/dir"
            contact = ["ops@example.test"]
            ca_roots = "/nonexistent/roots.pem"
            challenge = "dns-01"
            renew_before_days = 90
            key_type = "ed25519"
            agree_to_term = true
            """)
        #expect(acme == nil)
        #expect(issues.map(\.key).sorted() == [
            "acme.agree_to_term", "acme.ca_roots", "acme.challenge", "acme.contact[0]", "acme.directory", "acme.key_type",
            "acme.renew_before_days",
        ])
        #expect(issues.first { $0.key == "acme.directory" }?.line == 2)
        #expect(issues.first { $0.key == "acme.agree_to_term" }?.message.contains("did you mean \"agree_to_terms\"") == true)
        let (_, missing) = try read("contact = []")
        #expect(missing.map(\.key) == ["acme.directory"])
    }
}

@Suite("ACME: storage")
struct ACMEStorageTests {
    @Test("the account key is created 0600 in a 0700 folder per directory host and port, and reused")
    func accountKey() throws {
        let state = FileManager.default.temporaryDirectory.appendingPathComponent("acme-state-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: state) }
        let storage = ACMEStorage(stateDirectory: state, directoryURL: try #require(URL(string: "https://127.0.0.1:14000/dir")))
        #expect(storage.root == state + "/acme/127.0.0.1_14000")
        let (key, created) = try storage.loadOrCreateAccountKey()
        #expect(created)
        let (again, createdAgain) = try storage.loadOrCreateAccountKey()
        #expect(!createdAgain && again.thumbprint == key.thumbprint)
        #expect(try mode(storage.accountKeyPath) == 0o600)
        #expect(try mode(storage.root) == 0o700 && mode(state + "/acme") == 0o700)
        try storage.storeCertificate(id: "*.example.test", chainPEM: "chain", keyPEM: "key")
        #expect(storage.certificateFolder(id: "*.example.test").hasSuffix("/certificates/_.example.test"))
        #expect(try mode(storage.privateKeyPath(id: "*.example.test")) == 0o600)
        #expect(try mode(storage.certificateFolder(id: "*.example.test")) == 0o700)
        #expect(ACMEStorage.safeComponent("..") == "_..")
        #expect(ACMEStorage.safeComponent("a/b") == "a_b")
        // A damaged key is an error, not silently replaced (that would be a new account).
        try "garbage".write(toFile: storage.accountKeyPath, atomically: true, encoding: .utf8)
        #expect(throws: (any Error).self) { try storage.loadOrCreateAccountKey() }
    }

    private func mode(_ path: String) throws -> Int {
        try (FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int ?? -1) & 0o777
    }
}
