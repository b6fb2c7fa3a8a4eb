public import Foundation
public import Logging

/// An RFC 8555 client: account, order, challenges, finalization, download and revocation.
///
/// An actor because a client keeps a little session state between requests (the directory, unused nonces,
/// the account URL) and requests from one issuance are sequential anyway; this is control-plane work done a
/// few times per certificate lifetime, never on the request path. The state is rebuilt from nothing whenever
/// the CA could not be reached, so a CA that restarted (Pebble forgets everything) is picked up again.
public actor ACMEClient {
    public struct Options: Sendable {
        /// Contact URLs sent when the account is created.
        public var contact: [String] = []
        public var agreeToTerms = true
        /// The wait between polls of a pending authorization or a processing order when the CA gives no
        /// `Retry-After`.
        public var pollInterval: Duration = .seconds(1)
        /// The longest wait between polls, whatever `Retry-After` says (validation usually takes seconds).
        public var maximumPollInterval: Duration = .seconds(10)
        /// How long an order may take from creation to a downloadable certificate.
        public var orderTimeout: Duration = .seconds(300)
        /// How many times one request is re-sent after `badNonce` (each time with the fresh nonce the error
        /// carried). More than one: Pebble rejects 5% of good nonces by default, so with a single retry one
        /// request in 400 would fail on two rejections in a row, and an issuance takes a dozen requests.
        public var badNonceRetries = 3
        /// How the client waits between polls; tests shorten it.
        public var sleep: @Sendable (Duration) async throws -> Void = { try await Task.sleep(for: $0) }

        public init() {}
    }

    public let directoryURL: URL
    public let accountKey: ACMEAccountKey
    private let transport: any ACMETransport
    private let options: Options
    private let logger: Logger

    private var directory: ACMEDirectory?
    private var nonces: [String] = []
    /// The account's URL (the JWS `kid`), known once ``ensureAccount()`` has run.
    public private(set) var accountURL: String?

    public init(
        directoryURL: URL, accountKey: ACMEAccountKey, transport: any ACMETransport, options: Options = Options(),
        logger: Logger
    ) {
        self.directoryURL = directoryURL
        self.accountKey = accountKey
        self.transport = transport
        self.options = options
        self.logger = logger
    }

    /// Closes the transport's connections; the client is not used afterwards.
    public func shutdown() async {
        await transport.shutdown()
    }

    // MARK: Directory, nonces, account

    /// The CA's directory, fetched once per session.
    public func fetchDirectory() async throws -> ACMEDirectory {
        if let directory { return directory }
        let response = try await send(ACMEHTTPRequest(method: "GET", url: directoryURL.absoluteString))
        guard response.status == 200 else { throw problemError(response) }
        let decoded = try decode(ACMEDirectory.self, response, what: "directory")
        directory = decoded
        return decoded
    }

    /// A fresh nonce from `newNonce` (RFC 8555 §7.2), for when none is left over from earlier answers.
    func newNonce() async throws -> String {
        let url = try await fetchDirectory().newNonce
        let response = try await send(ACMEHTTPRequest(method: "HEAD", url: url))
        guard response.status == 200 || response.status == 204, let nonce = response.header("Replay-Nonce") else {
            throw ACMEError.badResponse("newNonce answered \(response.status) without a Replay-Nonce")
        }
        return nonce
    }

    /// Creates the account for ``accountKey``, or finds the existing one (`newAccount` answers 200 with the
    /// same URL for a key it knows), and returns its URL.
    @discardableResult
    public func ensureAccount() async throws -> String {
        if let accountURL { return accountURL }
        let directory = try await fetchDirectory()
        if directory.meta?.externalAccountRequired == true {
            throw ACMEError.badResponse("the CA requires external account binding, which Edge does not support")
        }
        struct NewAccount: Encodable {
            var termsOfServiceAgreed: Bool
            var contact: [String]?
        }
        let payload = NewAccount(
            termsOfServiceAgreed: options.agreeToTerms, contact: options.contact.isEmpty ? nil : options.contact
        )
        let response = try await post(directory.newAccount, payload: try json(payload), signer: .jwk)
        guard let location = response.header("Location") else {
            throw ACMEError.badResponse("newAccount answered \(response.status) without a Location")
        }
        struct Account: Decodable { var status: String? }
        if let status = (try? JSONDecoder().decode(Account.self, from: Data(response.body)))?.status, status != "valid" {
            throw ACMEError.badResponse("the account is \(status)")
        }
        logger.info("ACME account ready", metadata: ["account": "\(location)", "created": "\(response.status == 201)"])
        accountURL = location
        return location
    }

    // MARK: Orders and authorizations

    /// Asks for a certificate for `names` (RFC 8555 §7.4); returns the order's URL and its first state.
    public func newOrder(names: [String]) async throws -> (url: String, order: ACMEOrder) {
        struct NewOrder: Encodable { var identifiers: [ACMEIdentifier] }
        let directory = try await fetchDirectory()
        let response = try await post(directory.newOrder, payload: try json(NewOrder(identifiers: names.map { ACMEIdentifier(dns: $0) })))
        guard let location = response.header("Location") else {
            throw ACMEError.badResponse("newOrder answered \(response.status) without a Location")
        }
        return (location, try decode(ACMEOrder.self, response, what: "order"))
    }

    public func order(at url: String) async throws -> ACMEOrder {
        try decode(ACMEOrder.self, try await post(url, payload: nil), what: "order")
    }

    public func authorization(at url: String) async throws -> ACMEAuthorization {
        try decode(ACMEAuthorization.self, try await post(url, payload: nil), what: "authorization")
    }

    /// Tells the CA the answer to `challenge` is in place (an empty object, RFC 8555 §7.5.1).
    public func respond(to challenge: ACMEChallenge) async throws {
        _ = try await post(challenge.url, payload: Array("{}".utf8))
    }

    // MARK: Whole issuance

    /// Orders a certificate for `names`, answers the challenges through `store`, finalizes with a CSR for
    /// `key` and returns the PEM chain (leaf first).
    ///
    /// Challenge answers are removed from the store whatever the outcome. Authorizations the CA already holds
    /// as valid (reuse across orders is allowed, §7.1.4) need no answer.
    public func issueCertificate(
        names: [String], key: ACMECertificateKey, challenge: ACMEConfiguration.Challenge, store: ACMEChallengeStore
    ) async throws -> String {
        let deadline = ContinuousClock.now + options.orderTimeout
        let (orderURL, first) = try await newOrder(names: names)
        logger.debug("ACME order created", metadata: ["order": "\(orderURL)", "names": "\(names)"])
        var order = first
        if order.status == "pending" {
            try await authorize(order.authorizations, challenge: challenge, store: store, deadline: deadline)
            order = try await poll("order", deadline: deadline) {
                let response = try await self.post(orderURL, payload: nil)
                let order = try self.decode(ACMEOrder.self, response, what: "order")
                return (order, order.status == "pending" ? self.pollDelay(response) : nil)
            }
        }
        if order.status == "ready" {
            struct Finalize: Encodable { var csr: String }
            let csr = try key.certificateSigningRequest(names: names)
            let response = try await post(order.finalize, payload: try json(Finalize(csr: Base64URL.encode(csr))))
            order = try decode(ACMEOrder.self, response, what: "order")
        }
        if order.status == "processing" || order.status == "ready" {
            order = try await poll("finalization", deadline: deadline) {
                let response = try await self.post(orderURL, payload: nil)
                let order = try self.decode(ACMEOrder.self, response, what: "order")
                let settled = order.status != "processing" && order.status != "ready"
                return (order, settled ? nil : self.pollDelay(response))
            }
        }
        guard order.status == "valid", let certificateURL = order.certificate else {
            throw ACMEError.orderFailed(order.error ?? ACMEProblem(type: "order-\(order.status)", detail: "order ended \(order.status)"))
        }
        return try await downloadCertificate(certificateURL)
    }

    /// Fetches the chain (RFC 8555 §7.4.2) as PEM, leaf first.
    public func downloadCertificate(_ url: String) async throws -> String {
        let response = try await post(url, payload: nil, accept: "application/pem-certificate-chain")
        guard let text = String(validating: response.body, as: UTF8.self),
            let certificates = try? ACMETrust.certificates(fromPEM: text), !certificates.isEmpty
        else { throw ACMEError.badResponse("the certificate download is not a PEM chain") }
        return text
    }

    /// Revokes a certificate this account ordered (RFC 8555 §7.6); `reason` is a CRL reason code (RFC 5280
    /// §5.3.1: 0 unspecified, 1 keyCompromise, 4 superseded, 5 cessationOfOperation).
    public func revoke(certificateDER: [UInt8], reason: Int? = nil) async throws {
        struct Revocation: Encodable {
            var certificate: String
            var reason: Int?
        }
        let directory = try await fetchDirectory()
        _ = try await post(directory.revokeCert, payload: try json(Revocation(certificate: Base64URL.encode(certificateDER), reason: reason)))
    }

    /// Puts each pending authorization's answer in `store`, tells the CA, and waits for every one to settle.
    private func authorize(
        _ urls: [String], challenge type: ACMEConfiguration.Challenge, store: ACMEChallengeStore, deadline: ContinuousClock.Instant
    ) async throws {
        var installed: [(name: String, token: String)] = []
        func cleanUp() {
            for entry in installed {
                switch type {
                case .http01: store.removeHTTP01(token: entry.token)
                case .tlsALPN01: store.removeTLSALPN01(serverName: entry.name)
                }
            }
        }
        do {
            var waiting: [(url: String, name: String)] = []
            for url in urls {
                let authorization = try await self.authorization(at: url)
                let name = authorization.identifier.value
                if authorization.status == "valid" { continue }
                guard authorization.status == "pending" else {
                    throw ACMEError.challengeFailed(name: name, problem: authorization.challenges.compactMap(\.error).first)
                }
                guard let offered = authorization.challenges.first(where: { $0.type == type.rawValue }),
                    let token = offered.token, !token.isEmpty
                else {
                    throw ACMEError.unsupportedChallenge(name: name, offered: authorization.challenges.map(\.type))
                }
                let keyAuthorization = accountKey.keyAuthorization(token: token)
                switch type {
                case .http01: store.setHTTP01(token: token, keyAuthorization: keyAuthorization)
                case .tlsALPN01: try store.setTLSALPN01(serverName: name, keyAuthorization: keyAuthorization)
                }
                installed.append((name, token))
                if offered.status == "pending" { try await respond(to: offered) }
                waiting.append((url, name))
            }
            for (url, name) in waiting {
                let settled = try await poll("authorization of \(name)", deadline: deadline) {
                    let response = try await self.post(url, payload: nil)
                    let authorization = try self.decode(ACMEAuthorization.self, response, what: "authorization")
                    return (authorization, authorization.status == "pending" ? self.pollDelay(response) : nil)
                }
                guard settled.status == "valid" else {
                    let problem = settled.challenges.first(where: { $0.type == type.rawValue })?.error
                        ?? settled.challenges.compactMap(\.error).first
                    throw ACMEError.challengeFailed(name: name, problem: problem)
                }
                logger.debug("ACME authorization valid", metadata: ["name": "\(name)"])
            }
            cleanUp()
        } catch {
            cleanUp()
            throw error
        }
    }

    /// Calls `fetch` until it returns no delay (settled), sleeping that delay in between, within `deadline`.
    private func poll<T: Sendable>(
        _ what: String, deadline: ContinuousClock.Instant, _ fetch: () async throws -> (T, Duration?)
    ) async throws -> T {
        var (value, delay) = try await fetch()
        var polls = 0
        while let wait = delay {
            polls += 1
            if ContinuousClock.now + wait > deadline { throw ACMEError.timedOut(what) }
            try await options.sleep(wait)
            (value, delay) = try await fetch()
        }
        logger.trace("ACME poll settled", metadata: ["what": "\(what)", "polls": "\(polls)"])
        return value
    }

    /// How long to wait before polling again: the answer's `Retry-After` (RFC 8555 §7.5.1 invites it) within
    /// ``Options/maximumPollInterval``, else ``Options/pollInterval``.
    private func pollDelay(_ response: ACMEHTTPResponse) -> Duration {
        let now = Date()
        guard let until = RetryAfter.parse(response.header("Retry-After"), now: now) else { return options.pollInterval }
        let seconds = max(0, until.timeIntervalSince(now))
        return min(max(.milliseconds(Int(seconds * 1000)), options.pollInterval), options.maximumPollInterval)
    }

    // MARK: Requests

    /// A signed POST (RFC 8555 §6.2), `payload` `nil` for POST-as-GET.
    ///
    /// A `badNonce` answer is retried with the nonce it carries (§6.5: the error is expected, Pebble rejects
    /// 5% of good nonces on purpose), up to ``Options/badNonceRetries`` times; an `accountDoesNotExist`
    /// answer (the CA forgot the account, as a restarted Pebble does) is retried once after creating the
    /// account again.
    private func post(
        _ url: String, payload: [UInt8]?, signer fixedSigner: ACMEAccountKey.Signer? = nil, accept: String? = nil
    ) async throws -> ACMEHTTPResponse {
        var nonceRetries = 0
        var accountRetried = false
        while true {
            let signer: ACMEAccountKey.Signer
            if let fixedSigner { signer = fixedSigner } else { signer = .kid(try await ensureAccount()) }
            let nonce: String
            if let saved = nonces.popLast() { nonce = saved } else { nonce = try await newNonce() }
            var headers = ["Content-Type": "application/jose+json"]
            if let accept { headers["Accept"] = accept }
            let body = try accountKey.signedBody(url: url, nonce: nonce, signer: signer, payload: payload)
            let response = try await send(ACMEHTTPRequest(method: "POST", url: url, headers: headers, body: body))
            if response.status < 400 { return response }
            let error = problemError(response)
            switch error.problem?.code {
            case "badNonce" where nonceRetries < options.badNonceRetries:
                nonceRetries += 1
                logger.debug("ACME badNonce, retrying", metadata: ["url": "\(url)", "retry": "\(nonceRetries)"])
                continue
            case "accountDoesNotExist" where !accountRetried && fixedSigner == nil:
                accountRetried = true
                accountURL = nil
                continue
            default:
                throw error
            }
        }
    }

    /// Sends one request, keeping the nonce every ACME answer carries; a CA that cannot be reached also
    /// resets the session, so that the next attempt starts from the directory.
    private func send(_ request: ACMEHTTPRequest) async throws -> ACMEHTTPResponse {
        let response: ACMEHTTPResponse
        do {
            response = try await transport.perform(request)
        } catch {
            directory = nil
            nonces.removeAll()
            accountURL = nil
            throw error
        }
        if let nonce = response.header("Replay-Nonce"), !nonce.isEmpty {
            // A handful is plenty: each request uses one and its answer brings the next.
            if nonces.count >= 8 { nonces.removeFirst() }
            nonces.append(nonce)
        }
        return response
    }

    /// The error for an answer of 4xx or 5xx, from its problem document when it has one.
    private func problemError(_ response: ACMEHTTPResponse) -> ACMEError {
        let problem = (try? JSONDecoder().decode(ACMEProblem.self, from: Data(response.body)))
            ?? ACMEProblem(
                type: "about:blank",
                detail: "HTTP \(response.status)" + (String(validating: response.body.prefix(200), as: UTF8.self).map { ": " + $0 } ?? ""),
                status: response.status
            )
        let retryAfter = RetryAfter.parse(response.header("Retry-After"), now: Date())
        if problem.code == "rateLimited" { return .rateLimited(problem, retryAfter: retryAfter) }
        return .problem(problem, httpStatus: response.status, retryAfter: retryAfter)
    }

    private func decode<T: Decodable>(_ type: T.Type, _ response: ACMEHTTPResponse, what: String) throws -> T {
        do {
            return try JSONDecoder().decode(type, from: Data(response.body))
        } catch {
            throw ACMEError.badResponse("cannot read the \(what) (HTTP \(response.status)): \(error)")
        }
    }

    private func json(_ value: some Encodable) throws -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.withoutEscapingSlashes, .sortedKeys]
        return Array(try encoder.encode(value))
    }
}
