import Crypto
@testable import EdgeCore
import Foundation
import Logging
import Synchronization
import X509

/// A transport that answers from a closure and records every request, for tests without a CA.
final class CannedTransport: ACMETransport {
    private let handler: @Sendable (ACMEHTTPRequest) throws -> ACMEHTTPResponse
    private let recorded = Mutex<[ACMEHTTPRequest]>([])

    init(_ handler: @escaping @Sendable (ACMEHTTPRequest) throws -> ACMEHTTPResponse) {
        self.handler = handler
    }

    var requests: [ACMEHTTPRequest] { recorded.withLock { $0 } }

    func perform(_ request: ACMEHTTPRequest) async throws -> ACMEHTTPResponse {
        recorded.withLock { $0.append(request) }
        return try handler(request)
    }

    func shutdown() async {}
}

/// The parts of a fake CA's answers the canned tests share.
enum FakeCA {
    static let directoryURL = URL(string: "https://ca.test/dir")!
    static let directory = #"{"newNonce":"https://ca.test/nonce","newAccount":"https://ca.test/account","newOrder":"https://ca.test/order","revokeCert":"https://ca.test/revoke"}"#

    /// Answers the directory, nonces and account creation; `other` answers the rest.
    static func transport(
        _ other: @escaping @Sendable (ACMEHTTPRequest, _ nonce: String) throws -> ACMEHTTPResponse
    ) -> CannedTransport {
        let counter = Mutex(0)
        return CannedTransport { request in
            let nonce = "nonce-\(counter.withLock { value in value += 1; return value })"
            switch (request.method, request.url) {
            case ("GET", "https://ca.test/dir"):
                return ACMEHTTPResponse(status: 200, headers: ["Content-Type": "application/json"], body: Array(directory.utf8))
            case ("HEAD", "https://ca.test/nonce"):
                return ACMEHTTPResponse(status: 200, headers: ["Replay-Nonce": nonce])
            case ("POST", "https://ca.test/account"):
                return ACMEHTTPResponse(
                    status: 201, headers: ["Replay-Nonce": nonce, "Location": "https://ca.test/acct/1"], body: Array(#"{"status":"valid"}"#.utf8)
                )
            default:
                return try other(request, nonce)
            }
        }
    }

    static func problem(_ status: Int, type: String, detail: String, nonce: String, headers: [String: String] = [:]) -> ACMEHTTPResponse {
        var all = headers
        all["Replay-Nonce"] = nonce
        all["Content-Type"] = "application/problem+json"
        return ACMEHTTPResponse(
            status: status, headers: all,
            body: Array(#"{"type":"urn:ietf:params:acme:error:\#(type)","detail":"\#(detail)","status":\#(status)}"#.utf8)
        )
    }

    /// The protected header of a request's JWS.
    static func protectedHeader(_ request: ACMEHTTPRequest) -> [String: Any]? {
        guard let body = request.body,
            let object = try? JSONSerialization.jsonObject(with: Data(body)) as? [String: String],
            let protected = object["protected"], let bytes = Base64URL.decode(protected)
        else { return nil }
        return try? JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any]
    }
}

/// A log handler that keeps what it is given, for checking what the manager logs.
struct CapturingLogHandler: LogHandler {
    /// Shared by every copy of the handler (swift-log copies handlers by value into loggers).
    final class Store: Sendable {
        let entries = Mutex<[(level: Logger.Level, message: String, metadata: Logger.Metadata)]>([])
        var all: [(level: Logger.Level, message: String, metadata: Logger.Metadata)] { entries.withLock { $0 } }
    }

    let store: Store
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace

    init(store: Store) {
        self.store = store
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let merged = metadata.merging(event.metadata ?? [:]) { $1 }
        store.entries.withLock { $0.append((event.level, "\(event.message)", merged)) }
    }

    static func logger() -> (Logger, Store) {
        let store = Store()
        return (Logger(label: "acme-test") { _ in CapturingLogHandler(store: store) }, store)
    }
}

enum ACMETestFiles {
    static func temporaryFolder(_ name: String) -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("\(name)-\(UUID().uuidString)").path
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    /// A self-signed certificate for `names` with `key`, valid from `notBefore` for `lifetime`: stands in for
    /// one a CA issued earlier.
    static func certificatePEM(names: [String], key: ACMECertificateKey, notBefore: Date, lifetime: TimeInterval) throws -> String {
        let name = try DistinguishedName { CommonName(names[0]) }
        let certificate = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: key.publicKey,
            notValidBefore: notBefore, notValidAfter: notBefore.addingTimeInterval(lifetime),
            issuer: name, subject: name, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions { SubjectAlternativeNames(names.map { .dnsName($0) }) },
            issuerPrivateKey: key.certificatePrivateKey
        )
        return try certificate.serializeAsPEM().pemString + "\n"
    }
}
