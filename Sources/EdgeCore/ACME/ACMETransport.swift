import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import NIOSSL
import SwiftASN1
import X509

/// One HTTP exchange with the CA, as plain values so that tests can answer with canned responses.
public struct ACMEHTTPRequest: Sendable, Equatable {
    public var method: String
    public var url: String
    public var headers: [String: String]
    public var body: [UInt8]?

    public init(method: String, url: String, headers: [String: String] = [:], body: [UInt8]? = nil) {
        self.method = method
        self.url = url
        self.headers = headers
        self.body = body
    }
}

public struct ACMEHTTPResponse: Sendable, Equatable {
    public var status: Int
    /// Header names lower-cased; a repeated header's values joined with ", " (`Link` is not used).
    public var headers: [String: String]
    public var body: [UInt8]

    public init(status: Int, headers: [String: String] = [:], body: [UInt8] = []) {
        self.status = status
        self.headers = Dictionary(headers.map { ($0.key.lowercased(), $0.value) }, uniquingKeysWith: { $0 + ", " + $1 })
        self.body = body
    }

    public func header(_ name: String) -> String? { headers[name.lowercased()] }
}

/// Sends ACME requests. ``ACMEHTTPClientTransport`` is the real one; tests substitute their own.
public protocol ACMETransport: Sendable {
    /// Performs one request; throws ``ACMEError/transport(_:)`` when the CA cannot be reached.
    func perform(_ request: ACMEHTTPRequest) async throws -> ACMEHTTPResponse
    /// Releases connections; the transport is not used afterwards.
    func shutdown() async
}

/// ``ACMETransport`` over AsyncHTTPClient, trusting the system roots plus the configured `ca_roots`.
public final class ACMEHTTPClientTransport: ACMETransport {
    private let client: HTTPClient
    private let timeout: TimeAmount

    /// - Parameters:
    ///   - extraRootsPEM: PEM text of additional trusted roots (Pebble's or a private CA's), or `nil`.
    ///   - timeout: For a whole exchange; the CA's API answers in well under a second when it is healthy.
    public init(extraRootsPEM: String?, timeout: Duration = .seconds(30)) throws {
        var tls = TLSConfiguration.makeClientConfiguration()
        if let extraRootsPEM {
            let roots = try NIOSSLCertificate.fromPEMBytes(Array(extraRootsPEM.utf8))
            tls.additionalTrustRoots = [.certificates(roots)]
        }
        var configuration = HTTPClient.Configuration(tlsConfiguration: tls, redirectConfiguration: .disallow)
        configuration.timeout = .init(connect: .seconds(10))
        // One CA, a few requests a day: no reason to keep idle connections to it.
        configuration.connectionPool = .init(idleTimeout: .seconds(30))
        self.client = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration)
        let components = timeout.components
        self.timeout = .nanoseconds(components.seconds * 1_000_000_000 + components.attoseconds / 1_000_000_000)
    }

    /// The largest answer read: a certificate chain is a few KiB, a directory or order well under that.
    private static let maximumBody = 1 << 20

    public func perform(_ request: ACMEHTTPRequest) async throws -> ACMEHTTPResponse {
        var outgoing = HTTPClientRequest(url: request.url)
        outgoing.method = HTTPMethod(rawValue: request.method)
        for (name, value) in request.headers { outgoing.headers.add(name: name, value: value) }
        outgoing.headers.replaceOrAdd(name: "User-Agent", value: "Edge-ACME/1")
        if let body = request.body { outgoing.body = .bytes(ByteBuffer(bytes: body)) }
        do {
            let response = try await client.execute(outgoing, timeout: timeout)
            // Read to the end even for HEAD (where it is empty), so the connection goes back to the pool.
            let body = try await response.body.collect(upTo: Self.maximumBody)
            var headers: [String: String] = [:]
            for (name, value) in response.headers {
                let key = name.lowercased()
                headers[key] = headers[key].map { $0 + ", " + value } ?? value
            }
            return ACMEHTTPResponse(status: Int(response.status.code), headers: headers, body: Array(buffer: body))
        } catch let error as ACMEError {
            throw error
        } catch {
            throw ACMEError.transport("\(request.method) \(request.url): \(error)")
        }
    }

    public func shutdown() async {
        try? await client.shutdown()
    }
}

/// Reading PEM bundles of roots.
enum ACMETrust {
    /// Every certificate in a PEM text, in order (a chain, or a bundle of roots).
    static func certificates(fromPEM text: String) throws -> [Certificate] {
        try PEMDocument.parseMultiple(pemString: text)
            .filter { $0.discriminator == "CERTIFICATE" }
            .map { try Certificate(pemDocument: $0) }
    }
}
