public import Foundation
public import Logging
public import ServiceLifecycle
import SwiftASN1
import X509

/// One certificate to keep: the names it must cover and an id naming its folder (a site's first name).
public struct ACMECertificateRequest: Sendable, Equatable {
    public var id: String
    public var names: [String]

    public init(id: String, names: [String]) {
        self.id = id
        self.names = names
    }

    /// A request identified by its first name.
    public init(names: [String]) {
        self.init(id: names.first ?? "", names: names)
    }
}

/// A certificate ready to serve, as handed to the manager's callback.
public struct ACMEIssued: Sendable, Equatable {
    public var id: String
    /// The names the request asked for (the certificate covers at least these).
    public var names: [String]
    /// The PEM chain, leaf first.
    public var certificateChainPath: String
    /// The PEM private key (mode 0600).
    public var privateKeyPath: String
    public var notBefore: Date
    public var notAfter: Date
    /// The leaf's serial number in hex, as `openssl x509 -serial` and Pebble's management API write it.
    public var serialNumber: String
    /// The key's type, for a listener that serves an ECDSA and an RSA certificate side by side.
    public var keyType: ACMEConfiguration.KeyType
}

/// What the manager knows about one request, for status pages and tests.
public struct ACMECertificateStatus: Sendable {
    public var id: String
    public var names: [String]
    /// The certificate being served, if any.
    public var current: ACMEIssued?
    /// When the manager will next order (renewal, or retry after a failure).
    public var nextAttempt: Date
    /// Failures since the last success; 0 when the last attempt worked.
    public var consecutiveFailures: Int
    /// Why the last attempt failed, with the CA's problem detail when it sent one.
    public var lastError: String?
}

/// Where the manager's time comes from, so that tests can make days pass in seconds.
public struct ACMETiming: Sendable {
    /// The current time (certificates' validity is compared to it).
    public var now: @Sendable () -> Date
    /// Waits `seconds` of this timing's time.
    public var sleep: @Sendable (_ seconds: TimeInterval) async throws -> Void
    /// A number in 0..<1, for jitter.
    public var random: @Sendable () -> Double

    public init(
        now: @escaping @Sendable () -> Date,
        sleep: @escaping @Sendable (_ seconds: TimeInterval) async throws -> Void,
        random: @escaping @Sendable () -> Double
    ) {
        self.now = now
        self.sleep = sleep
        self.random = random
    }

    public static let system = ACMETiming(
        now: { Date() },
        sleep: { seconds in try await Task.sleep(for: .milliseconds(Int64(max(0, min(seconds, 1e9)) * 1000))) },
        random: { Double.random(in: 0..<1) }
    )

    /// Time running `factor` times faster than the wall clock from now on: a 60 s backoff lasts 60/`factor`
    /// real seconds, and ``now`` moves on accordingly.
    public static func accelerated(_ factor: Double) -> ACMETiming {
        let start = Date()
        return ACMETiming(
            now: { start.addingTimeInterval(Date().timeIntervalSince(start) * factor) },
            sleep: { seconds in try await ACMETiming.system.sleep(seconds / factor) },
            random: { Double.random(in: 0..<1) }
        )
    }
}

/// Errors of the manager's own API (as opposed to the CA's, which are ``ACMEError``).
public enum ACMEManagerError: Error, Sendable, Equatable, CustomStringConvertible {
    case unknownRequest(String)
    /// An order for this id is already running (the renewal loop's, or another call's).
    case inProgress(String)
    case noCertificate(String)

    public var description: String {
        switch self {
        case .unknownRequest(let id): return "no certificate request with id \(id)"
        case .inProgress(let id): return "an order for \(id) is already in progress"
        case .noCertificate(let id): return "no certificate for \(id)"
        }
    }
}

/// Keeps certificates from an ACME CA: loads what the state folder has, orders what is missing, renews ahead
/// of expiry and retries failures with backoff, reporting every certificate ready to serve through `onIssued`.
///
/// A failed order never takes away a working certificate: the old one stays on disk and in use, the reason is
/// logged (with the CA's problem detail), and the next attempt waits 1 minute, then 2, 4... up to a day, or
/// the CA's `Retry-After` if longer. Every path through the loop waits at least ``ACMERenewalSchedule/backoffInitial``
/// before the next order for the same certificate, so a CA that answers instantly with errors is not
/// hammered.
///
/// An actor: the loop, ``renewNow(id:)`` and ``revoke(id:reason:)`` share the per-certificate state, and an
/// order for one id never runs twice at once (``ACMEManagerError/inProgress(_:)``).
public actor ACMEManager: Service {
    private struct Entry {
        var request: ACMECertificateRequest
        var current: ACMEIssued?
        var nextAttempt: Date
        var failures = 0
        var lastError: String?
        var inFlight = false
    }

    private let configuration: ACMEConfiguration
    private let storage: ACMEStorage
    private let challengeStore: ACMEChallengeStore
    private let logger: Logger
    private let timing: ACMETiming
    private let onIssued: @Sendable (ACMEIssued) -> Void
    private let clientOptions: ACMEClient.Options
    /// Tests inject a transport; otherwise one is made from ``ACMEConfiguration/caRoots`` on first use.
    private var transport: (any ACMETransport)?
    private var client: ACMEClient?
    private var entries: [String: Entry] = [:]
    /// The ids in configuration order, so that the loop and the start-up report go in a stable order.
    private let order: [String]
    private var loaded = false
    private var napTask: Task<Void, Never>?
    private var shutDown = false

    public let schedule: ACMERenewalSchedule

    /// - Parameters:
    ///   - stateDirectory: The server's `state_dir`; files go under `acme/<directory-host>/`.
    ///   - requests: The certificates to keep; ids must be unique (a later duplicate is ignored).
    ///   - challengeStore: Where answers are put for the serving path to find.
    ///   - timing: The clock, waits and jitter source; ``ACMETiming/system`` in production.
    ///   - schedule: Renewal and backoff arithmetic; by default from `configuration.renewBeforeDays`.
    ///   - transport: Leave `nil` in production (AsyncHTTPClient trusting the system's roots and `ca_roots`).
    ///   - onIssued: Called (from the manager, not on an event loop) for each certificate found at start and
    ///     each one ordered; it should swap the site's TLS context and return quickly.
    public init(
        configuration: ACMEConfiguration,
        stateDirectory: String,
        requests: [ACMECertificateRequest],
        challengeStore: ACMEChallengeStore,
        logger: Logger,
        timing: ACMETiming = .system,
        schedule: ACMERenewalSchedule? = nil,
        clientOptions: ACMEClient.Options? = nil,
        transport: (any ACMETransport)? = nil,
        onIssued: @escaping @Sendable (ACMEIssued) -> Void
    ) {
        self.configuration = configuration
        self.storage = ACMEStorage(stateDirectory: stateDirectory, directoryURL: configuration.directory)
        self.challengeStore = challengeStore
        self.logger = logger
        self.timing = timing
        self.schedule = schedule ?? ACMERenewalSchedule(renewBeforeDays: configuration.renewBeforeDays)
        var options = clientOptions ?? ACMEClient.Options()
        options.contact = configuration.contact
        options.agreeToTerms = configuration.agreeToTerms
        self.clientOptions = options
        self.transport = transport
        self.onIssued = onIssued
        var order: [String] = []
        let now = timing.now()
        for request in requests where entries[request.id] == nil && !request.names.isEmpty {
            entries[request.id] = Entry(request: request, nextAttempt: now)
            order.append(request.id)
        }
        self.order = order
    }

    /// Where this manager keeps its files (`<state_dir>/acme/<directory-host>`).
    public nonisolated var storageFolder: String { storage.root }

    // MARK: Service

    /// Reports the certificates already on disk, then orders and renews until cancelled or until graceful
    /// shutdown; returns normally then, after closing the connections to the CA.
    public func run() async throws {
        loadStoredCertificates()
        await cancelWhenGracefulShutdown {
            await self.loop()
        }
        await shutdown()
    }

    private func loop() async {
        while !Task.isCancelled {
            let now = timing.now()
            if let id = order.first(where: { entries[$0].map { !$0.inFlight && $0.nextAttempt <= now } ?? false }) {
                _ = try? await attempt(id: id)
                continue
            }
            let next = order.compactMap { entries[$0] }.filter { !$0.inFlight }.map(\.nextAttempt).min()
            // Waking at least hourly bounds the effect of a wall-clock jump on a long wait.
            let wait = min(next.map { $0.timeIntervalSince(now) } ?? 3600, 3600)
            await nap(max(wait, 0.001))
        }
    }

    /// Sleeps until `seconds` pass, the task is cancelled, or ``wake()`` is called.
    private func nap(_ seconds: TimeInterval) async {
        let timing = self.timing
        let task = Task<Void, Never> { _ = try? await timing.sleep(seconds) }
        napTask = task
        await withTaskCancellationHandler { await task.value } onCancel: { task.cancel() }
        napTask = nil
    }

    /// Makes the loop look at the schedule again (after a manual renewal or revocation).
    private func wake() {
        napTask?.cancel()
    }

    /// Closes the connection to the CA. ``run()`` does this when it ends; call it when using only
    /// ``renewNow(id:)`` and ``revoke(id:reason:)`` without ``run()``.
    public func shutdown() async {
        guard !shutDown else { return }
        shutDown = true
        if let client { await client.shutdown() } else { await transport?.shutdown() }
        client = nil
        transport = nil
    }

    // MARK: Manual operations

    /// Orders a new certificate for `id` now, whatever the schedule says; returns it, or throws why not (the
    /// current certificate stays in use then, and the failure counts for backoff like the loop's own).
    @discardableResult
    public func renewNow(id: String) async throws -> ACMEIssued {
        loadStoredCertificates()
        guard entries[id] != nil else { throw ACMEManagerError.unknownRequest(id) }
        defer { wake() }
        return try await attempt(id: id)
    }

    /// Revokes `id`'s current certificate with the CA and moves its files aside (`revoked-<serial>-*.pem`);
    /// when ``run()`` is running, a replacement is ordered straight away, since a revoked certificate is no
    /// use to serve.
    public func revoke(id: String, reason: Int? = nil) async throws {
        loadStoredCertificates()
        guard let entry = entries[id] else { throw ACMEManagerError.unknownRequest(id) }
        guard let current = entry.current else { throw ACMEManagerError.noCertificate(id) }
        guard !entry.inFlight else { throw ACMEManagerError.inProgress(id) }
        let text = try String(contentsOfFile: current.certificateChainPath, encoding: .utf8)
        guard let leaf = try ACMETrust.certificates(fromPEM: text).first else { throw ACMEManagerError.noCertificate(id) }
        var serializer = DER.Serializer()
        try serializer.serialize(leaf)
        entries[id]?.inFlight = true
        defer { entries[id]?.inFlight = false }
        try await activeClient().revoke(certificateDER: serializer.serializedBytes, reason: reason)
        try storage.retireCertificate(id: id, serial: current.serialNumber)
        logger.notice("ACME certificate revoked", metadata: ["id": "\(id)", "serial": "\(current.serialNumber)"])
        entries[id]?.current = nil
        entries[id]?.failures = 0
        entries[id]?.nextAttempt = timing.now()
        wake()
    }

    /// The state of every request, in configuration order.
    public func status() -> [ACMECertificateStatus] {
        order.compactMap { entries[$0] }.map {
            ACMECertificateStatus(
                id: $0.request.id, names: $0.request.names, current: $0.current, nextAttempt: $0.nextAttempt,
                consecutiveFailures: $0.failures, lastError: $0.lastError
            )
        }
    }

    // MARK: Start-up

    /// Reads each request's certificate from disk once: a pair that matches, covers the names and has not
    /// expired is reported (even when due for renewal: an old certificate beats none while the new one is
    /// ordered) and scheduled; anything else is ordered at once.
    private func loadStoredCertificates() {
        guard !loaded else { return }
        loaded = true
        let now = timing.now()
        for id in order {
            guard let request = entries[id]?.request else { continue }
            guard let stored = storage.loadCertificate(id: id) else { continue }
            do {
                let issued = try check(request: request, chainPEM: stored.chainPEM, keyPEM: stored.keyPEM, key: nil)
                guard issued.notAfter > now else {
                    logger.notice("ACME certificate on disk has expired; ordering a new one", metadata: ["id": "\(id)"])
                    continue
                }
                entries[id]?.current = issued
                let due = schedule.dueDate(notBefore: issued.notBefore, notAfter: issued.notAfter)
                entries[id]?.nextAttempt = due <= now
                    ? now : schedule.renewalDate(notBefore: issued.notBefore, notAfter: issued.notAfter, random: timing.random())
                logger.info(
                    "ACME certificate loaded",
                    metadata: ["id": "\(id)", "not_after": "\(issued.notAfter)", "renew_at": "\(entries[id]?.nextAttempt ?? now)"]
                )
                onIssued(issued)
            } catch {
                logger.warning("ACME certificate on disk is not usable; ordering a new one", metadata: ["id": "\(id)", "reason": "\(error)"])
            }
        }
    }

    // MARK: Ordering

    private func attempt(id: String) async throws -> ACMEIssued {
        guard let entry = entries[id] else { throw ACMEManagerError.unknownRequest(id) }
        guard !entry.inFlight else { throw ACMEManagerError.inProgress(id) }
        entries[id]?.inFlight = true
        defer { entries[id]?.inFlight = false }
        do {
            let issued = try await order(entry.request)
            let now = timing.now()
            let renewal = schedule.renewalDate(notBefore: issued.notBefore, notAfter: issued.notAfter, random: timing.random())
            entries[id]?.current = issued
            entries[id]?.failures = 0
            entries[id]?.lastError = nil
            // Never sooner than a backoff step, even for a certificate that is due at once (a CA's clock far
            // ahead, or a lifetime of seconds): otherwise the loop would order back to back.
            entries[id]?.nextAttempt = max(renewal, now.addingTimeInterval(schedule.backoffInitial))
            logger.info(
                "ACME certificate issued",
                metadata: [
                    "id": "\(id)", "names": "\(entry.request.names.joined(separator: ","))", "serial": "\(issued.serialNumber)",
                    "not_after": "\(issued.notAfter)", "renew_at": "\(entries[id]?.nextAttempt ?? renewal)",
                ]
            )
            onIssued(issued)
            return issued
        } catch {
            let now = timing.now()
            let failures = (entries[id]?.failures ?? 0) + 1
            let delay = schedule.retryDelay(
                failures: failures, random: timing.random(), now: now, retryAfter: (error as? ACMEError)?.retryAfter
            )
            entries[id]?.failures = failures
            entries[id]?.lastError = "\(error)"
            entries[id]?.nextAttempt = now.addingTimeInterval(delay)
            var metadata: Logger.Metadata = [
                "id": "\(id)", "names": "\(entry.request.names.joined(separator: ","))", "error": "\(error)",
                "failures": "\(failures)", "retry_in_seconds": "\(Int(delay.rounded()))",
                "keeping": "\(entries[id]?.current.map { "serial \($0.serialNumber) until \($0.notAfter)" } ?? "none")",
            ]
            if let problem = (error as? ACMEError)?.problem {
                metadata["problem_type"] = "\(problem.type)"
                metadata["problem_detail"] = "\(problem.detail ?? "")"
            }
            logger.error("ACME certificate order failed", metadata: metadata)
            throw error
        }
    }

    /// One complete order for `request`: a new key, the ACME exchange, checks on what came back, and the files.
    private func order(_ request: ACMECertificateRequest) async throws -> ACMEIssued {
        if let wildcard = request.names.first(where: { $0.hasPrefix("*.") }) {
            throw ACMEError.unsupportedChallenge(name: wildcard, offered: ["dns-01 (wildcards need DNS validation, which Edge does not do)"])
        }
        let client = try activeClient()
        let key = try ACMECertificateKey.generate(configuration.keyType)
        let chainPEM = try await client.issueCertificate(
            names: request.names, key: key, challenge: configuration.challenge, store: challengeStore
        )
        let keyPEM = key.pemRepresentation + "\n"
        let issued = try check(request: request, chainPEM: chainPEM, keyPEM: keyPEM, key: key)
        try storage.storeCertificate(id: request.id, chainPEM: chainPEM, keyPEM: keyPEM)
        return issued
    }

    /// Checks that `chainPEM`'s leaf belongs to the key and covers the request's names, and describes it.
    private func check(request: ACMECertificateRequest, chainPEM: String, keyPEM: String, key: ACMECertificateKey?) throws -> ACMEIssued {
        guard let leaf = try ACMETrust.certificates(fromPEM: chainPEM).first else {
            throw ACMEError.badResponse("no certificate in the chain")
        }
        let privateKey = try key ?? ACMECertificateKey(pemRepresentation: keyPEM)
        guard leaf.publicKey == privateKey.publicKey else {
            throw ACMEError.badResponse("the certificate is not for its private key")
        }
        let covered = Set(Self.dnsNames(of: leaf).map { $0.lowercased() })
        let missing = request.names.filter { !covered.contains($0.lowercased()) }
        guard missing.isEmpty else {
            throw ACMEError.badResponse("the certificate does not cover \(missing.joined(separator: ", "))")
        }
        return ACMEIssued(
            id: request.id, names: request.names,
            certificateChainPath: storage.certificatePath(id: request.id), privateKeyPath: storage.privateKeyPath(id: request.id),
            notBefore: leaf.notValidBefore, notAfter: leaf.notValidAfter,
            serialNumber: Self.hex(serial: leaf.serialNumber), keyType: privateKey.type
        )
    }

    /// A serial number as lower-case hex without leading zeros (the DER form may carry a sign byte).
    static func hex(serial: Certificate.SerialNumber) -> String {
        let text = serial.bytes.map { String($0, radix: 16).leftPadded(to: 2) }.joined().drop { $0 == "0" }
        return text.isEmpty ? "0" : String(text)
    }

    static func dnsNames(of certificate: Certificate) -> [String] {
        guard let names = try? certificate.extensions.subjectAlternativeNames else { return [] }
        return names.compactMap { if case .dnsName(let name) = $0 { return name } else { return nil } }
    }

    /// The client, made on first use (reading the account key and `ca_roots` then, so that a problem with
    /// either is an attempt's logged failure with backoff rather than a crash at start).
    private func activeClient() throws -> ACMEClient {
        if let client { return client }
        let (accountKey, created) = try storage.loadOrCreateAccountKey()
        if created { logger.notice("ACME account key created", metadata: ["path": "\(storage.accountKeyPath)"]) }
        let transport: any ACMETransport
        if let injected = self.transport {
            transport = injected
        } else {
            let roots = try configuration.caRoots.map { try String(contentsOfFile: $0, encoding: .utf8) }
            transport = try ACMEHTTPClientTransport(extraRootsPEM: roots)
            self.transport = transport
        }
        let client = ACMEClient(
            directoryURL: configuration.directory, accountKey: accountKey, transport: transport, options: clientOptions, logger: logger
        )
        self.client = client
        shutDown = false
        return client
    }
}

extension String {
    fileprivate func leftPadded(to width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}
