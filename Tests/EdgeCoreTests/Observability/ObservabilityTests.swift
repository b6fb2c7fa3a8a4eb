@testable import EdgeCore
import Foundation
import NIOCore
import NIOEmbedded
import NIOHTTP1
import Testing

@Suite("Metrics, the access log and the admin listener's texts")
struct ObservabilityTests {
    private func record(
        route: Int, status: Int, wire: WireProtocol = .http1_1, cache: CacheOutcome = .none, after: TimeAmount = .milliseconds(3)
    ) -> (RequestRecord, NIODeadline) {
        let start = NIODeadline.uptimeNanoseconds(1_000_000_000)
        var record = RequestRecord(start: start, method: .GET, target: "/x", wire: wire, client: .unknown, tls: .none)
        record.route = route
        record.status = status
        record.cache = cache
        record.bodyBytesOut = 10
        return (record, start + after)
    }

    @Test("a loop counts requests by route, protocol, status class and cache outcome, and the histogram's buckets")
    func loopCounts() {
        let metrics = LoopMetrics()
        for (status, cache) in [(200, CacheOutcome.hit), (200, .hit), (404, .none), (503, .miss)] {
            let (r, now) = record(route: 2, status: status, cache: cache)
            metrics.record(r, now: now)
        }
        let (late, lateNow) = record(route: 1, status: 200, wire: .http2, after: .seconds(20))
        metrics.record(late, now: lateNow)
        let snapshot = metrics.snapshot()
        #expect(snapshot.routes == 3)
        #expect(snapshot.requests(route: 2, wire: .http1_1, statusClass: 1, cache: .hit) == 2)
        #expect(snapshot.requests(route: 2, wire: .http1_1, statusClass: 3, cache: .none) == 1)
        #expect(snapshot.requests(route: 2, wire: .http1_1, statusClass: 4, cache: .miss) == 1)
        #expect(snapshot.requests(route: 1, wire: .http2, statusClass: 1, cache: .none) == 1)
        #expect(snapshot.totalRequests == 5)
        // 3 ms falls in the 0.005 s bucket (index 3); 20 s only in +Inf.
        let buckets = snapshot.durationBuckets
        #expect(buckets[2 * LoopMetrics.bucketCount + 3] == 4)
        #expect(buckets[1 * LoopMetrics.bucketCount + LoopMetrics.bucketCount - 1] == 1)
        #expect(snapshot.bodyBytesOut[2] == 40)
    }

    @Test("snapshots of loops with different route counts add up")
    func snapshotsAdd() {
        let a = LoopMetrics(), b = LoopMetrics()
        let (r1, n1) = record(route: 1, status: 200)
        let (r3, n3) = record(route: 3, status: 200)
        a.record(r1, now: n1)
        b.record(r3, now: n3)
        b.record(r1, now: n1)
        a.connectionOpened(.http2, tls: .tls13)
        b.connectionOpened(.http2, tls: .tls13)
        b.connectionClosed(.http2, tls: .tls13)
        let sum = a.snapshot().adding(b.snapshot())
        #expect(sum.routes == 4)
        #expect(sum.requests(route: 1, wire: .http1_1, statusClass: 1, cache: .none) == 2)
        #expect(sum.requests(route: 3, wire: .http1_1, statusClass: 1, cache: .none) == 1)
        #expect(sum.openConnections(.http2, tls: .tls13) == 1)
    }

    @Test("a request that got no answer counts as 499, as nginx logs it")
    func noAnswerIs499() {
        let observer = LoopObserver()
        var (r, _) = record(route: 0, status: 0)
        r.status = 0
        observer.finished(r)
        #expect(observer.metrics.snapshot().requests(route: 0, wire: .http1_1, statusClass: 3, cache: .none) == 1)
    }

    @Test("the exposition escapes label values and writes cumulative buckets")
    func exposition() {
        var out = MetricsExposition()
        out.family("edge_x_total", "counter", "help")
        out.sample("edge_x_total", [("route", "/a\"b\\c\nd")], 3)
        out.histogram("edge_d_seconds", [("route", "/")], buckets: [1, 0, 2][...], bounds: [0.1, 1], sum: 1.5)
        #expect(out.text.contains(#"edge_x_total{route="/a\"b\\c\nd"} 3"#))
        #expect(out.text.contains(#"edge_d_seconds_bucket{route="/",le="0.1"} 1"#))
        #expect(out.text.contains(#"edge_d_seconds_bucket{route="/",le="1"} 1"#))
        #expect(out.text.contains(#"edge_d_seconds_bucket{route="/",le="+Inf"} 3"#))
        #expect(out.text.contains(#"edge_d_seconds_sum{route="/"} 1.5"#))
        #expect(out.text.contains(#"edge_d_seconds_count{route="/"} 3"#))
    }

    @Test("log text: control bytes, quotes and backslashes are escaped; bytes that are not UTF-8 too")
    func escaping() {
        var json = ByteBuffer()
        AccessLogBuffer.writeEscaped(Array("a\"b\\c\u{1}d\u{7f}é".utf8), to: &json, json: true)
        #expect(String(buffer: json) == #"a\"b\\c\u0001d\u007fé"#)
        var text = ByteBuffer()
        AccessLogBuffer.writeEscaped([0x61, 0xFF, 0x0A], to: &text, json: false)
        #expect(String(buffer: text) == #"a\xff\x0a"#)
    }

    @Test("durations are written in milliseconds with three decimals")
    func milliseconds() {
        var buffer = ByteBuffer()
        AccessLogBuffer.writeMilliseconds(.microseconds(1_234_567), to: &buffer)
        buffer.writeString(" ")
        AccessLogBuffer.writeMilliseconds(.microseconds(5), to: &buffer)
        #expect(String(buffer: buffer) == "1234.567 0.005")
    }

    @Test("the access log redacts the values of the configured query parameters, by name without case")
    func redaction() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("edge-log-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        var configuration = AccessLogConfiguration()
        configuration.path = path
        configuration.redactQuery = ["token", "sig"]
        let writer = try AccessLogWriter(configuration: configuration)
        let loop = EmbeddedEventLoop()
        let buffer = AccessLogBuffer(writer: writer, eventLoop: loop)
        var record = RequestRecord(
            start: .now(), method: .GET, target: "/p?Token=abc&x=1&sig=&tokenish=2&sig", wire: .http1_1, client: .unknown, tls: .none
        )
        record.status = 200
        buffer.log(record, routeLabel: "/", now: .now(), client: .unknown)
        buffer.handOver()
        let deadline = Date().addingTimeInterval(5)
        var text = ""
        while Date() < deadline {
            text = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
            if !text.isEmpty { break }
            Thread.sleep(forTimeInterval: 0.02)
        }
        #expect(text.contains(#""target":"/p?Token=REDACTED&x=1&sig=REDACTED&tokenish=2&sig""#))
        #expect(writer.written == 1)
    }

    @Test("the running configuration is dumped as JSON with secrets redacted and file paths kept")
    func configurationDump() throws {
        var configuration = EdgeConfiguration.embeddedDefault
        var admin = AdminConfiguration()
        admin.token = "0123456789abcdef-secret"
        configuration.admin = admin
        configuration.limits.passwordCheckThreads = 3
        let text = ConfigurationDump.json(configuration)
        #expect(!text.contains("0123456789abcdef-secret"))
        let object = try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
        let adminObject = try #require(object["admin"] as? [String: Any])
        #expect(adminObject["token"] as? String == "<redacted>")
        #expect(adminObject["address"] as? String == "127.0.0.1:9901")
        let limits = try #require(object["limits"] as? [String: Any])
        #expect(limits["password_check_threads"] as? Int == 3)
    }

    @Test("[admin] and [access_log] are read, and their errors name the key")
    func configuration() throws {
        let configuration = try ConfigurationLoader.load(
            text: """
                [[listener]]
                address = "127.0.0.1:8080"

                [admin]
                address = "[::1]:9902"
                allow = ["::1", "10.0.0.0/8"]
                token = "a-token-of-20-chars!"

                [access_log]
                path = "/var/log/edge/access.log"
                format = "combined"
                redact_query = ["session"]
                """,
            source: "test"
        )
        #expect(configuration.admin?.address == HostPort(host: "::1", port: 9902))
        #expect(configuration.admin?.allow.count == 2)
        #expect(configuration.admin?.token == "a-token-of-20-chars!")
        #expect(configuration.accessLog?.format == .combined)
        #expect(configuration.accessLog?.redactQuery == ["session"])
        #expect(throws: ConfigurationError.self) {
            try ConfigurationLoader.load(text: "[admin]\ntoken = \"short\"\n", source: "test")
        }
        do {
            _ = try ConfigurationLoader.load(text: "[[listener]]\naddress = \"127.0.0.1:9901\"\n[admin]\n", source: "test")
            Issue.record("an admin listener on a public listener's address was accepted")
        } catch {
            #expect(error.issues.contains { $0.key == "admin.address" })
        }
    }

    @Test("a bearer token is compared whole: a prefix, a longer value or another scheme is refused")
    func bearer() {
        let token = "0123456789abcdef"
        #expect(AdminHandler.bearer(["authorization": "Bearer \(token)"], matches: token))
        #expect(AdminHandler.bearer(["authorization": "bearer \(token)"], matches: token))
        #expect(!AdminHandler.bearer(["authorization": "Bearer 0123456789abcde"], matches: token))
        #expect(!AdminHandler.bearer(["authorization": "Bearer \(token)0"], matches: token))
        #expect(!AdminHandler.bearer(["authorization": "Basic \(token)"], matches: token))
        #expect(!AdminHandler.bearer([:], matches: token))
    }

    @Test("TLS handshake errors are told apart by reason")
    func tlsReasons() {
        struct Named: Error, CustomStringConvertible { var description: String }
        #expect(TLSHandshakeObserver.reason(of: Named(description: "handshakeFailed(error:1408F09C:SSL routines:HTTP_REQUEST)")) == .plainHTTP)
        #expect(TLSHandshakeObserver.reason(of: Named(description: "UNSUPPORTED_PROTOCOL")) == .protocolVersion)
        #expect(TLSHandshakeObserver.reason(of: Named(description: "NO_SHARED_CIPHER")) == .noSharedCipher)
        #expect(TLSHandshakeObserver.reason(of: Named(description: "TLSV1_ALERT_UNKNOWN_CA")) == .certificateRejected)
        #expect(TLSHandshakeObserver.reason(of: Named(description: "something else")) == .other)
    }
}
