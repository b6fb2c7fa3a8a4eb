import _CryptoExtras
@testable import EdgeCore
import Foundation
import Logging
import NIOCore
import Synchronization
import Testing
import X509

/// End to end against a real Pebble (skipped where the `pebble` package is not installed).
@Suite("ACME: end to end against Pebble", .serialized, .enabled(if: PebbleHarness.isAvailable, "needs pebble and pebble-challtestsrv (apt-get install pebble)"))
struct ACMEPebbleTests {
    /// Collects what a manager reports.
    final class Reports: Sendable {
        private let list = Mutex<[ACMEIssued]>([])
        func append(_ issued: ACMEIssued) { list.withLock { $0.append(issued) } }
        var all: [ACMEIssued] { list.withLock { $0 } }

        /// Waits until at least `count` certificates were reported.
        func wait(for count: Int, seconds: Double = 60) async throws -> [ACMEIssued] {
            let deadline = Date().addingTimeInterval(seconds)
            while Date() < deadline {
                let now = all
                if now.count >= count { return now }
                try await Task.sleep(for: .milliseconds(50))
            }
            throw HarnessError("waited \(seconds) s for \(count) certificates, have \(all.count)")
        }
    }

    private func fastClient() -> ACMEClient.Options {
        var options = ACMEClient.Options()
        options.pollInterval = .milliseconds(100)
        options.orderTimeout = .seconds(60)
        return options
    }

    @Test("HTTP-01: account, issuance verified against Pebble's root, renewal, failures that keep the certificate, revocation, restart")
    func http01Lifecycle() async throws {
        let store = ACMEChallengeStore()
        let answered = ResponderCounter()
        let httpPort = try FreePort.next()
        let pebble = try PebbleHarness(httpPort: httpPort, tlsPort: try FreePort.next())
        var responder: (any Channel)? = try await HTTP01Responder.start(port: httpPort, store: store, counter: answered)
        try await pebble.start()
        let state = ACMETestFiles.temporaryFolder("acme-e2e")
        defer { try? FileManager.default.removeItem(atPath: state) }

        var configuration = ACMEConfiguration(directory: pebble.directoryURL)
        configuration.caRoots = pebble.caRootsPath
        configuration.contact = ["mailto:ops@edge.test"]
        let request = ACMECertificateRequest(id: "site.edge.test", names: ["site.edge.test", "www.site.edge.test"])
        let reports = Reports()
        let (logger, logs) = CapturingLogHandler.logger()
        let manager = ACMEManager(
            configuration: configuration, stateDirectory: state, requests: [request], challengeStore: store, logger: logger,
            clientOptions: fastClient(), onIssued: { reports.append($0) }
        )
        let run = Task { try await manager.run() }

        // 1. Account and first certificate, ordered by the loop at start.
        let first = try #require(try await reports.wait(for: 1).first)
        let storageRoot = "\(state)/acme/127.0.0.1_\(pebble.acmePort)"
        #expect(first.certificateChainPath == "\(storageRoot)/certificates/site.edge.test/cert.pem")
        #expect(first.privateKeyPath == "\(storageRoot)/certificates/site.edge.test/key.pem")
        #expect(try permissions("\(storageRoot)/account.key") == 0o600 && permissions(storageRoot) == 0o700)
        #expect(try permissions(first.privateKeyPath) == 0o600)
        #expect(logs.all.contains { $0.message == "ACME account ready" })
        #expect(answered.count >= 2, "Pebble fetched both names' key authorizations from the responder")
        let firstChain = try String(contentsOfFile: first.certificateChainPath, encoding: .utf8)
        let firstLeaf = try await pebble.verify(chainPEM: firstChain, names: request.names)
        #expect(ACMEManager.hex(serial: firstLeaf.serialNumber) == first.serialNumber)
        #expect(first.notAfter == firstLeaf.notValidAfter && first.keyType == .ecdsaP256)
        #expect(logs.all.contains { $0.message == "ACME account ready" && $0.metadata["created"] == "true" })
        let accountKey = try String(contentsOfFile: "\(storageRoot)/account.key", encoding: .utf8)

        // 2. Renewal gives a new certificate (new serial, new key) and reports it.
        let second = try await manager.renewNow(id: request.id)
        #expect(second.serialNumber != first.serialNumber)
        #expect(reports.all.count == 2)
        let secondChain = try String(contentsOfFile: second.certificateChainPath, encoding: .utf8)
        let secondLeaf = try await pebble.verify(chainPEM: secondChain, names: request.names)
        #expect(secondLeaf.publicKey != firstLeaf.publicKey)
        let secondKey = try String(contentsOfFile: second.privateKeyPath, encoding: .utf8)

        // 3. Challenge unreachable: the responder is gone; the order fails with Pebble's detail, the
        // certificate and key on disk stay as they were and the manager still serves them.
        try await responder?.close()
        responder = nil
        await #expect {
            try await manager.renewNow(id: request.id)
        } throws: { error in
            guard case .challengeFailed(_, let problem)? = error as? ACMEError else { return false }
            return problem?.code == "connection" || problem?.detail?.contains("connect") == true
        }
        var status = try #require(await manager.status().first)
        #expect(status.current?.serialNumber == second.serialNumber && status.consecutiveFailures == 1)
        #expect(try String(contentsOfFile: second.certificateChainPath, encoding: .utf8) == secondChain)
        #expect(try String(contentsOfFile: second.privateKeyPath, encoding: .utf8) == secondKey)
        let challengeError = try #require(logs.all.last { $0.level == .error })
        #expect(challengeError.metadata["problem_detail"].map { "\($0)".isEmpty } == false)
        #expect(reports.all.count == 2)
        responder = try await HTTP01Responder.start(port: httpPort, store: store, counter: answered)

        // 4. Revocation: Pebble records it, the files are moved aside, and the running loop orders a
        // replacement at once.
        try await manager.revoke(id: request.id, reason: 4)
        let revoked = try await pebble.management("/cert-status-by-serial/\(second.serialNumber)")
        #expect(revoked.contains("\"Revoked\""))
        #expect(FileManager.default.fileExists(atPath: "\(storageRoot)/certificates/site.edge.test/revoked-\(second.serialNumber)-cert.pem"))
        let third = try #require(try await reports.wait(for: 3).last)
        #expect(third.serialNumber != second.serialNumber)
        _ = try await pebble.verify(chainPEM: try String(contentsOfFile: third.certificateChainPath, encoding: .utf8), names: request.names)
        let valid = try await pebble.management("/cert-status-by-serial/\(third.serialNumber)")
        #expect(valid.contains("\"Valid\""))

        // 5. Directory down: Pebble is stopped; the attempt fails as unreachable, nothing changes on disk.
        let thirdChain = try String(contentsOfFile: third.certificateChainPath, encoding: .utf8)
        pebble.stopPebble()
        await #expect {
            try await manager.renewNow(id: request.id)
        } throws: { error in
            guard case .transport(let reason)? = error as? ACMEError else { return false }
            return reason.contains("127.0.0.1:\(pebble.acmePort)")
        }
        status = try #require(await manager.status().first)
        #expect(status.current?.serialNumber == third.serialNumber && status.lastError?.contains("cannot reach the CA") == true)
        #expect(status.nextAttempt > Date().addingTimeInterval(30), "backs off by about a minute, not a busy loop")
        #expect(try String(contentsOfFile: third.certificateChainPath, encoding: .utf8) == thirdChain)
        run.cancel()
        try await run.value

        // 6. A restart finds the certificate on disk, reports it at once without ordering, and keeps the account key.
        let restartedReports = Reports()
        let restarted = ACMEManager(
            configuration: configuration, stateDirectory: state, requests: [request], challengeStore: store, logger: logger,
            clientOptions: fastClient(), onIssued: { restartedReports.append($0) }
        )
        let rerun = Task { try await restarted.run() }
        let reloaded = try #require(try await restartedReports.wait(for: 1).first)
        #expect(reloaded == third)
        let restartedStatus = try #require(await restarted.status().first)
        #expect(restartedStatus.nextAttempt > Date().addingTimeInterval(86_400))
        rerun.cancel()
        try await rerun.value

        // 7. Pebble back (forgetting every account): the same account key registers again and orders.
        try await pebble.start()
        let afterRestart = ACMEManager(
            configuration: configuration, stateDirectory: state, requests: [request], challengeStore: store, logger: logger,
            clientOptions: fastClient(), onIssued: { _ in }
        )
        let fourth = try await afterRestart.renewNow(id: request.id)
        await afterRestart.shutdown()
        _ = try await pebble.verify(chainPEM: try String(contentsOfFile: fourth.certificateChainPath, encoding: .utf8), names: request.names)
        #expect(try String(contentsOfFile: "\(storageRoot)/account.key", encoding: .utf8) == accountKey)

        try await responder?.close()
        await pebble.stop()
    }

    @Test("TLS-ALPN-01 with an RSA key, and renewal by the schedule for short-lived certificates")
    func tlsALPNAndScheduledRenewal() async throws {
        let store = ACMEChallengeStore()
        let handshakes = ResponderCounter()
        let tlsPort = try FreePort.next()
        // Certificates live 12 s: renewal is due after 8 (two thirds), a little earlier with jitter.
        let pebble = try PebbleHarness(httpPort: try FreePort.next(), tlsPort: tlsPort, validitySeconds: 12)
        let responder = try await TLSALPNResponder.start(port: tlsPort, store: store, counter: handshakes)
        try await pebble.start()
        let state = ACMETestFiles.temporaryFolder("acme-e2e-alpn")
        defer { try? FileManager.default.removeItem(atPath: state) }

        var configuration = ACMEConfiguration(directory: pebble.directoryURL)
        configuration.caRoots = pebble.caRootsPath
        configuration.challenge = .tlsALPN01
        configuration.keyType = .rsa2048
        var schedule = ACMERenewalSchedule(renewBeforeDays: configuration.renewBeforeDays)
        schedule.backoffInitial = 1
        let request = ACMECertificateRequest(names: ["alpn.edge.test"])
        let reports = Reports()
        let manager = ACMEManager(
            configuration: configuration, stateDirectory: state, requests: [request], challengeStore: store,
            logger: Logger(label: "acme-e2e"), schedule: schedule, clientOptions: fastClient(), onIssued: { reports.append($0) }
        )
        let run = Task { try await manager.run() }
        let issued = try await reports.wait(for: 3, seconds: 60)
        run.cancel()
        try await run.value

        #expect(Set(issued.map(\.serialNumber)).count == 3)
        #expect(handshakes.count >= 3, "Pebble validated each order over TLS with ALPN acme-tls/1")
        #expect(!store.hasTLSALPNChallenges, "challenge certificates are removed once validated")
        for (earlier, later) in zip(issued, issued.dropFirst()) {
            // Renewed at two thirds of the lifetime less jitter (at most 5% of it), before expiry; validity
            // times in certificates are whole seconds, hence the second of slack.
            let lifetime = earlier.notAfter.timeIntervalSince(earlier.notBefore)
            let due = schedule.dueDate(notBefore: earlier.notBefore, notAfter: earlier.notAfter)
            #expect(lifetime > 10 && lifetime <= 12)
            #expect(later.notBefore >= due.addingTimeInterval(-lifetime * 0.05 - 1), "renewed at \(later.notBefore), due \(due)")
            #expect(later.notBefore < earlier.notAfter)
        }
        let last = try #require(issued.last)
        let leaf = try await pebble.verify(chainPEM: try String(contentsOfFile: last.certificateChainPath, encoding: .utf8), names: request.names)
        #expect(_RSA.Signing.PublicKey(leaf.publicKey)?.keySizeInBits == 2048 && last.keyType == .rsa2048)
        try await responder.close()
        await pebble.stop()
    }

    private func permissions(_ path: String) throws -> Int {
        try (FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int ?? -1) & 0o777
    }
}
