@testable import EdgeCore
import Foundation
import Logging
import Synchronization
import Testing

@Suite("ACME: client and manager against canned answers")
struct ACMEClientCannedTests {
    @Test("rateLimited is its own error, with the problem detail and Retry-After")
    func rateLimited() async throws {
        let transport = FakeCA.transport { request, nonce in
            #expect(request.url == "https://ca.test/order")
            return FakeCA.problem(
                429, type: "rateLimited", detail: "too many certificates already issued for \\\"example.test\\\"", nonce: nonce,
                headers: ["Retry-After": "3600"]
            )
        }
        let client = ACMEClient(directoryURL: FakeCA.directoryURL, accountKey: ACMEAccountKey(), transport: transport, logger: Logger(label: "t"))
        let before = Date()
        await #expect {
            _ = try await client.newOrder(names: ["example.test"])
        } throws: { error in
            guard let error = error as? ACMEError, case .rateLimited(let problem, let retryAfter) = error, let retryAfter else { return false }
            return problem.code == "rateLimited" && problem.detail?.contains("too many certificates") == true
                && abs(retryAfter.timeIntervalSince(before) - 3600) < 5 && "\(error)".contains("rate limited by the CA")
        }
    }

    @Test("any error answer's Retry-After is kept (a CA in maintenance answers 503 with one)")
    func unavailableRetryAfter() async throws {
        let transport = FakeCA.transport { _, nonce in
            FakeCA.problem(503, type: "serverInternal", detail: "down for maintenance", nonce: nonce, headers: ["Retry-After": "600"])
        }
        let client = ACMEClient(directoryURL: FakeCA.directoryURL, accountKey: ACMEAccountKey(), transport: transport, logger: Logger(label: "t"))
        let before = Date()
        await #expect {
            _ = try await client.newOrder(names: ["example.test"])
        } throws: { error in
            guard let error = error as? ACMEError, case .problem(let problem, 503, let retryAfter?) = error else { return false }
            return problem.detail == "down for maintenance" && abs(retryAfter.timeIntervalSince(before) - 600) < 5
                && error.retryAfter == retryAfter
        }
        // An answer that is not a problem document still says what came back.
        let plain = CannedTransport { _ in ACMEHTTPResponse(status: 502, body: Array("Bad Gateway".utf8)) }
        let other = ACMEClient(directoryURL: FakeCA.directoryURL, accountKey: ACMEAccountKey(), transport: plain, logger: Logger(label: "t"))
        await #expect {
            _ = try await other.fetchDirectory()
        } throws: { error in
            "\(error)".contains("HTTP 502: Bad Gateway")
        }
    }

    @Test("badNonce is retried with the nonce the error carried, up to badNonceRetries times in a row")
    func badNonceRetry() async throws {
        let rejections = Mutex(1)
        let transport = FakeCA.transport { request, nonce in
            if request.url == "https://ca.test/order" {
                if rejections.withLock({ count in defer { count -= 1 }; return count > 0 }) {
                    return FakeCA.problem(400, type: "badNonce", detail: "JWS has an invalid anti-replay nonce", nonce: nonce)
                }
                return ACMEHTTPResponse(
                    status: 201, headers: ["Replay-Nonce": nonce, "Location": "https://ca.test/order/1"],
                    body: Array(#"{"status":"pending","identifiers":[{"type":"dns","value":"a.test"}],"authorizations":[],"finalize":"https://ca.test/fin/1"}"#.utf8)
                )
            }
            Issue.record("unexpected \(request.method) \(request.url)")
            return ACMEHTTPResponse(status: 500)
        }
        var options = ACMEClient.Options()
        options.badNonceRetries = 1
        let client = ACMEClient(
            directoryURL: FakeCA.directoryURL, accountKey: ACMEAccountKey(), transport: transport, options: options, logger: Logger(label: "t")
        )
        let (url, order) = try await client.newOrder(names: ["a.test"])
        #expect(url == "https://ca.test/order/1" && order.status == "pending")
        let orders = transport.requests.filter { $0.url == "https://ca.test/order" }
        #expect(orders.count == 2)
        // The first account request introduces the key (jwk); the orders name the account (kid).
        let account = try #require(transport.requests.first { $0.url == "https://ca.test/account" })
        #expect(FakeCA.protectedHeader(account)?["jwk"] != nil)
        let nonces = orders.compactMap { FakeCA.protectedHeader($0)?["nonce"] as? String }
        #expect(nonces.count == 2 && nonces[0] != nonces[1])
        #expect(orders.allSatisfy { FakeCA.protectedHeader($0)?["kid"] as? String == "https://ca.test/acct/1" })
        // Only one HEAD for a nonce: later requests use the ones answers carried.
        #expect(transport.requests.filter { $0.method == "HEAD" }.count == 1)

        rejections.withLock { $0 = 2 }
        await #expect {
            _ = try await client.newOrder(names: ["a.test"])
        } throws: { error in
            (error as? ACMEError)?.problem?.code == "badNonce"
        }

        // The default retries three times: three rejections in a row still end in an order.
        let patient = ACMEClient(directoryURL: FakeCA.directoryURL, accountKey: ACMEAccountKey(), transport: transport, logger: Logger(label: "t"))
        rejections.withLock { $0 = 3 }
        #expect(try await patient.newOrder(names: ["a.test"]).url == "https://ca.test/order/1")
    }

    @Test("a failed renewal keeps the certificate on disk and in use, logs the CA's detail, and backs off past Retry-After")
    func failureKeepsCertificate() async throws {
        let state = ACMETestFiles.temporaryFolder("acme-keep")
        defer { try? FileManager.default.removeItem(atPath: state) }
        let transport = FakeCA.transport { _, nonce in
            FakeCA.problem(429, type: "rateLimited", detail: "slow down", nonce: nonce, headers: ["Retry-After": "7200"])
        }
        let configuration = ACMEConfiguration(directory: FakeCA.directoryURL)
        let request = ACMECertificateRequest(names: ["keep.test", "www.keep.test"])
        // A certificate issued 70 days ago, valid for 90: due for renewal (after 60), still valid.
        let storage = ACMEStorage(stateDirectory: state, directoryURL: FakeCA.directoryURL)
        let key = try ACMECertificateKey.generate(.ecdsaP256)
        let chain = try ACMETestFiles.certificatePEM(
            names: request.names, key: key, notBefore: Date().addingTimeInterval(-70 * 86_400), lifetime: 90 * 86_400
        )
        try storage.storeCertificate(id: request.id, chainPEM: chain, keyPEM: key.pemRepresentation)

        let (logger, logs) = CapturingLogHandler.logger()
        let reported = Mutex<[ACMEIssued]>([])
        let manager = ACMEManager(
            configuration: configuration, stateDirectory: state, requests: [request], challengeStore: ACMEChallengeStore(),
            logger: logger, transport: transport, onIssued: { issued in reported.withLock { $0.append(issued) } }
        )
        let start = Date()
        await #expect(throws: ACMEError.self) { try await manager.renewNow(id: "keep.test") }
        await manager.shutdown()

        // Reported once, from disk, before the attempt; never replaced.
        #expect(reported.withLock { $0.count } == 1)
        let status = try #require(await manager.status().first)
        #expect(status.current?.certificateChainPath == storage.certificatePath(id: "keep.test"))
        #expect(status.consecutiveFailures == 1 && status.lastError?.contains("slow down") == true)
        #expect(status.nextAttempt.timeIntervalSince(start) >= 7200)
        #expect(try String(contentsOfFile: storage.certificatePath(id: "keep.test"), encoding: .utf8) == chain)
        let failure = try #require(logs.all.first { $0.level == .error })
        #expect(failure.message == "ACME certificate order failed")
        #expect(failure.metadata["problem_type"] == "urn:ietf:params:acme:error:rateLimited")
        #expect(failure.metadata["problem_detail"] == "slow down")
        #expect("\(failure.metadata["keeping"] ?? "")".contains("serial"))
    }

    @Test("a CA that cannot be reached is retried with doubling waits, not in a loop")
    func directoryDownBacksOff() async throws {
        let state = ACMETestFiles.temporaryFolder("acme-down")
        defer { try? FileManager.default.removeItem(atPath: state) }
        // Fails at once, as a refused connection does (AsyncHTTPClient itself retries a refused connect for
        // up to its connect timeout; the Pebble test stops a real CA).
        let transport = CannedTransport { request in
            throw ACMEError.transport("\(request.method) \(request.url): connection refused")
        }
        // Virtual time: every wait the manager asks for is recorded and passes at once, so the test sees the
        // exact schedule however loaded the machine is.
        let clock = VirtualClock()
        let timing = ACMETiming(now: { clock.now }, sleep: { seconds in clock.sleep(seconds); await Task.yield() }, random: { 0 })
        var schedule = ACMERenewalSchedule(renewBeforeDays: 30)
        schedule.backoffInitial = 60
        let (logger, logs) = CapturingLogHandler.logger()
        let manager = ACMEManager(
            configuration: ACMEConfiguration(directory: FakeCA.directoryURL), stateDirectory: state,
            requests: [ACMECertificateRequest(names: ["down.test"])], challengeStore: ACMEChallengeStore(), logger: logger,
            timing: timing, schedule: schedule, transport: transport, onIssued: { _ in Issue.record("nothing to issue") }
        )
        let run = Task { try await manager.run() }
        let deadline = Date().addingTimeInterval(20)
        while await manager.status().first?.consecutiveFailures ?? 0 < 8, Date() < deadline {
            try await Task.sleep(for: .milliseconds(5))
        }
        run.cancel()
        try await run.value
        let status = try #require(await manager.status().first)
        #expect(status.consecutiveFailures >= 8)
        #expect(status.lastError?.contains("cannot reach the CA") == true)
        // One minute, doubling: the waits between attempts, one attempt (one request) after each.
        let waits = clock.sleeps
        #expect(Array(waits.prefix(7)) == [60, 120, 240, 480, 960, 1920, 3600])
        #expect(transport.requests.count == status.consecutiveFailures)
        let errors = logs.all.filter { $0.level == .error }
        #expect(errors.count == status.consecutiveFailures)
        #expect(errors.allSatisfy { "\($0.metadata["error"] ?? "")".contains("https://ca.test/dir: connection refused") })
    }
}

/// A clock that moves only when someone sleeps on it, recording each wait.
final class VirtualClock: Sendable {
    private let state = Mutex((now: Date(timeIntervalSince1970: 1_800_000_000), sleeps: [Double]()))
    var now: Date { state.withLock { $0.now } }
    var sleeps: [Double] { state.withLock { $0.sleeps } }

    func sleep(_ seconds: Double) {
        state.withLock {
            $0.sleeps.append(seconds)
            $0.now = $0.now.addingTimeInterval(seconds)
        }
    }
}

/// A loopback port nothing listens on right now (bound to port 0, read, closed); good enough for tests that
/// start their own servers a moment later.
enum FreePort {
    static func next() throws -> Int {
        #if canImport(Glibc)
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        #else
        let descriptor = socket(AF_INET, SOCK_STREAM, 0)
        #endif
        guard descriptor >= 0 else { throw POSIXError(.EMFILE) }
        defer { close(descriptor) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { generic in
                bind(descriptor, generic, length) == 0 && getsockname(descriptor, generic, &length) == 0
            }
        }
        guard bound else { throw POSIXError(.EADDRINUSE) }
        return Int(UInt16(bigEndian: address.sin_port))
    }
}
