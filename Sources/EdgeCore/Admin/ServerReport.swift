import Foundation
import NIOCore

/// The version Edge reports (`/status`, `edge_build_info`).
public enum EdgeVersion {
    public static let string = "0.5.0-dev"
}

/// What one event loop reports at a scrape, copied on the loop.
struct LoopReport: Sendable {
    var metrics: MetricsSnapshot
    var idleUpstreamConnections: [String: Int]
    var recentErrors: [RecentError]
    var webSockets: Int
}

/// Everything the admin listener shows at one moment: every loop's counters added up, with the server-wide figures
/// (cache, upstream health, process) read beside them. Rendered as Prometheus text (``prometheusText()``) and as
/// the status JSON (``statusJSON()``).
struct ServerReport {
    var metrics = MetricsSnapshot()
    var routePaths: [String] = [""]
    var idleUpstreamConnections: [String: Int] = [:]
    var recentErrors: [RecentError] = []
    var webSockets = 0
    var cache = SharedResponseCache.Statistics(entries: 0, bytes: 0, fetchesInFlight: 0)
    var connections = 0
    var inFlight = 0
    var draining = false
    var generation = 0
    var upstreams: [UpstreamGroup] = []
    var accessLog: (written: Int, dropped: Int)?
    var process = ProcessStatistics()
    var uptimeSeconds = 0.0
    var startedUnixSeconds: Int64 = 0

    init() {}

    init(loops: [LoopReport], services: EdgeServices) {
        for loop in loops {
            metrics = metrics.adding(loop.metrics)
            idleUpstreamConnections.merge(loop.idleUpstreamConnections, uniquingKeysWith: +)
            recentErrors += loop.recentErrors
            webSockets += loop.webSockets
        }
        recentErrors.sort { $0.unixMilliseconds < $1.unixMilliseconds }
        recentErrors = Array(recentErrors.suffix(LoopObserver.recentErrorLimit))
        let observability = services.observability
        routePaths = observability.routeLabels.paths
        cache = services.cache.statistics
        connections = services.state.connectionCount
        inFlight = services.state.inFlightCount
        draining = services.state.isDraining
        generation = services.generation
        upstreams = services.router.upstreamGroups.values.sorted { $0.name < $1.name }
        accessLog = observability.accessLog.map { ($0.written, $0.dropped) }
        process = ProcessStatistics.current()
        uptimeSeconds = Double((NIODeadline.now() - observability.started).nanoseconds) / 1e9
        startedUnixSeconds = observability.startedWallClock
    }

    private func routeLabel(_ slot: Int) -> String { slot < routePaths.count ? routePaths[slot] : "" }

    private func requests(cache outcome: CacheOutcome) -> Int {
        var total = 0
        metrics.forEachRequestCell { _, _, _, cache, count in if cache == outcome { total += count } }
        return total
    }

    // MARK: Prometheus

    func prometheusText() -> String {
        var out = MetricsExposition()
        out.family("edge_build_info", "gauge", "Edge's version; always 1.")
        out.sample("edge_build_info", ["version": EdgeVersion.string], 1)
        out.single("edge_config_generation", "gauge", "0 at start, one more at every configuration reload that changed something.", generation)

        out.family("edge_http_requests_total", "counter", "Requests answered, by route, protocol, status class and cache outcome.")
        metrics.forEachRequestCell { route, wire, statusClass, outcome, count in
            out.sample(
                "edge_http_requests_total",
                [("route", routeLabel(route)), ("protocol", wire.label), ("code", "\(statusClass + 1)xx"), ("cache", outcome.label)],
                count
            )
        }
        out.family(
            "edge_http_request_duration_seconds", "histogram",
            "Time from a request's first byte in to its answer's last byte handed to the connection, by route."
        )
        for route in 0..<metrics.routes {
            let start = route * LoopMetrics.bucketCount
            let buckets = metrics.durationBuckets[start..<start + LoopMetrics.bucketCount]
            guard buckets.contains(where: { $0 > 0 }) else { continue }
            out.histogram(
                "edge_http_request_duration_seconds", [("route", routeLabel(route))], buckets: buckets,
                bounds: LoopMetrics.durationBounds, sum: Double(metrics.durationSums[route]) / 1e9
            )
        }
        out.family("edge_http_request_body_bytes_total", "counter", "Request body bytes received, by route.")
        for route in 0..<metrics.routes where metrics.bodyBytesIn[route] > 0 {
            out.sample("edge_http_request_body_bytes_total", [("route", routeLabel(route))], metrics.bodyBytesIn[route])
        }
        out.family("edge_http_response_body_bytes_total", "counter", "Response body bytes sent, by route.")
        for route in 0..<metrics.routes where metrics.bodyBytesOut[route] > 0 {
            out.sample("edge_http_response_body_bytes_total", [("route", routeLabel(route))], metrics.bodyBytesOut[route])
        }
        out.single("edge_http_requests_in_flight", "gauge", "Requests waiting for an origin (cache hits and fixed answers never wait).", inFlight)
        out.family("edge_requests_refused_total", "counter", "Requests refused by a policy or limit, by reason.")
        for kind in RefusalKind.allCases {
            out.sample("edge_requests_refused_total", [("reason", kind.label)], metrics.refusals[kind.rawValue])
        }
        out.family("edge_timeouts_total", "counter", "Connections or requests cut off by a timeout, by kind.")
        for kind in TimeoutKind.allCases {
            out.sample("edge_timeouts_total", [("kind", kind.label)], metrics.timeouts[kind.rawValue])
        }

        out.single("edge_connections", "gauge", "Client connections open (admitted, TLS included while it negotiates).", connections)
        // Each family's samples together, as the text format requires.
        let kinds = ConnectionProtocol.allCases.flatMap { kind in TLSVersionLabel.allCases.map { (kind, $0) } }.filter { kind, tls in
            metrics.connectionsOpened[kind.rawValue * TLSVersionLabel.allCases.count + tls.rawValue] > 0
        }
        out.family("edge_connections_open", "gauge", "Client connections speaking HTTP, by protocol and TLS version.")
        for (kind, tls) in kinds {
            out.sample("edge_connections_open", [("protocol", kind.label), ("tls", tls.label)], metrics.openConnections(kind, tls: tls))
        }
        out.family("edge_connections_opened_total", "counter", "Client connections that began speaking HTTP, by protocol and TLS version.")
        for (kind, tls) in kinds {
            out.sample(
                "edge_connections_opened_total", [("protocol", kind.label), ("tls", tls.label)],
                metrics.connectionsOpened[kind.rawValue * TLSVersionLabel.allCases.count + tls.rawValue]
            )
        }
        out.single("edge_websocket_connections", "gauge", "WebSocket connections open (on HTTP/1.1 connections and HTTP/2 streams).", webSockets)
        out.family("edge_tls_handshakes_total", "counter", "TLS handshakes completed, by version.")
        for version in TLSVersionLabel.allCases where version != .none {
            out.sample("edge_tls_handshakes_total", [("version", version.label)], metrics.tlsHandshakes[version.rawValue])
        }
        out.family("edge_tls_handshake_failures_total", "counter", "TLS handshakes that did not complete, by reason.")
        for reason in TLSFailureReason.allCases {
            out.sample("edge_tls_handshake_failures_total", [("reason", reason.label)], metrics.tlsFailures[reason.rawValue])
        }

        out.single("edge_cache_entries", "gauge", "Responses held in the shared cache.", cache.entries)
        out.single("edge_cache_bytes", "gauge", "Bytes charged to the shared cache.", cache.bytes)
        out.family("edge_cache_requests_total", "counter", "Requests answered by a cached route, by cache outcome.")
        for outcome in CacheOutcome.allCases where outcome != .none {
            out.sample("edge_cache_requests_total", [("result", outcome.label)], requests(cache: outcome))
        }
        out.single("edge_cache_evictions_total", "counter", "Entries evicted to keep the cache within its bounds.", cache.evictions)
        out.single("edge_cache_coalesced_waits_total", "counter", "Misses that waited for another request's fetch of the same key.", cache.coalesced)
        out.single("edge_cache_fetches_in_flight", "gauge", "Keys being fetched from an origin.", cache.fetchesInFlight)

        writeUpstreams(into: &out)

        if let accessLog {
            out.family("edge_access_log_lines_total", "counter", "Access-log lines written.")
            out.sample("edge_access_log_lines_total", [], accessLog.written)
            out.family("edge_access_log_dropped_lines_total", "counter", "Access-log lines dropped because the disk fell behind or a write failed.")
            out.sample("edge_access_log_dropped_lines_total", [], accessLog.dropped)
        }

        out.single("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", process.residentBytes)
        out.single("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", process.virtualBytes)
        out.single("process_open_fds", "gauge", "Open file descriptors.", process.openDescriptors)
        out.single("process_max_fds", "gauge", "The limit on open file descriptors.", process.maxDescriptors)
        out.single("process_threads", "gauge", "Threads of the process.", process.threads)
        out.single("process_cpu_seconds_total", "counter", "User and system CPU time spent, in seconds.", process.cpuSeconds)
        out.single("process_start_time_seconds", "gauge", "When the process started serving, in seconds since the Unix epoch.", Double(startedUnixSeconds))
        return out.text
    }

    /// Every upstream server with its labels and its figures, read once per scrape.
    private func upstreamRows() -> [(labels: [(String, String)], server: UpstreamServer, figures: UpstreamStatistics.Snapshot)] {
        upstreams.flatMap { group in
            group.servers.map { server in ([("upstream", group.name), ("server", server.key)], server, server.statistics.snapshot) }
        }
    }

    /// The upstream families, each with its samples together (as the text format requires).
    private func writeUpstreams(into out: inout MetricsExposition) {
        let now = NIODeadline.now()
        let rows = upstreamRows()
        out.family("edge_upstream_server_up", "gauge", "1 when the upstream server may be chosen (not ejected, not failing its health checks).")
        for row in rows { out.sample("edge_upstream_server_up", row.labels, row.server.isAvailable(at: now) ? 1 : 0) }
        out.family("edge_upstream_requests_total", "counter", "Exchanges with an upstream server (each attempt), finished.")
        for row in rows { out.sample("edge_upstream_requests_total", row.labels, row.figures.exchanges) }
        out.family("edge_upstream_active_requests", "gauge", "Exchanges with an upstream server under way.")
        for row in rows { out.sample("edge_upstream_active_requests", row.labels, row.server.active.load(ordering: .relaxed)) }
        out.family("edge_upstream_idle_connections", "gauge", "Kept-alive connections to an upstream server waiting in the pools.")
        for row in rows { out.sample("edge_upstream_idle_connections", row.labels, idleUpstreamConnections[row.server.key] ?? 0) }
        out.family("edge_upstream_failures_total", "counter", "Failed exchanges with an upstream server, by cause.")
        for row in rows {
            for cause in UpstreamStatistics.FailureCause.allCases {
                out.sample("edge_upstream_failures_total", row.labels + [("cause", cause.label)], row.figures.failures[cause.rawValue])
            }
        }
        out.family("edge_upstream_response_head_seconds", "histogram", "Time from sending a request upstream to its response head.")
        for row in rows where row.figures.headerBuckets.contains(where: { $0 > 0 }) {
            out.histogram(
                "edge_upstream_response_head_seconds", row.labels, buckets: row.figures.headerBuckets[...],
                bounds: LoopMetrics.durationBounds, sum: row.figures.headerSeconds
            )
        }
    }

    // MARK: status JSON

    struct Status: Codable {
        struct Connection: Codable {
            var `protocol`: String
            var tls: String
            var open: Int
        }
        struct Server: Codable {
            var server: String
            var up: Bool
            var active: Int
            var requests: Int
            var failures: Int
        }
        struct Upstream: Codable {
            var name: String
            var servers: [Server]
        }
        var version: String
        var uptimeSeconds: Double
        var generation: Int
        var draining: Bool
        var connections: Int
        var connectionsByProtocol: [Connection]
        var webSockets: Int
        var requests: Int
        var requestsByStatus: [String: Int]
        var inFlight: Int
        var cacheEntries: Int
        var cacheBytes: Int
        var cacheHits: Int
        var cacheMisses: Int
        var upstreams: [Upstream]
        var recentErrors: [RecentError]
        var residentBytes: Int
        var openDescriptors: Int
        var threads: Int
    }

    func status() -> Status {
        var byStatus: [String: Int] = ["1xx": 0, "2xx": 0, "3xx": 0, "4xx": 0, "5xx": 0]
        metrics.forEachRequestCell { _, _, statusClass, _, count in byStatus["\(statusClass + 1)xx", default: 0] += count }
        var byProtocol: [Status.Connection] = []
        for kind in ConnectionProtocol.allCases {
            for tls in TLSVersionLabel.allCases {
                let open = metrics.openConnections(kind, tls: tls)
                if open > 0 { byProtocol.append(.init(protocol: kind.label, tls: tls.label, open: open)) }
            }
        }
        let now = NIODeadline.now()
        return Status(
            version: EdgeVersion.string, uptimeSeconds: (uptimeSeconds * 10).rounded() / 10, generation: generation,
            draining: draining, connections: connections, connectionsByProtocol: byProtocol, webSockets: webSockets,
            requests: metrics.totalRequests, requestsByStatus: byStatus, inFlight: inFlight, cacheEntries: cache.entries,
            cacheBytes: cache.bytes, cacheHits: requests(cache: .hit), cacheMisses: requests(cache: .miss),
            upstreams: upstreams.map { group in
                Status.Upstream(
                    name: group.name,
                    servers: group.servers.map { server in
                        let snapshot = server.statistics.snapshot
                        return Status.Server(
                            server: server.key, up: server.isAvailable(at: now), active: server.active.load(ordering: .relaxed),
                            requests: snapshot.exchanges, failures: snapshot.failures.reduce(0, +)
                        )
                    }
                )
            },
            recentErrors: recentErrors, residentBytes: process.residentBytes, openDescriptors: process.openDescriptors,
            threads: process.threads
        )
    }

    func statusJSON() -> String {
        let encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        guard let data = try? encoder.encode(status()) else { return "{}" }
        return String(decoding: data, as: UTF8.self) + "\n"
    }
}

/// The process's own figures, from `/proc/self` (Linux); zeros where they cannot be read.
struct ProcessStatistics: Sendable {
    var residentBytes = 0
    var virtualBytes = 0
    var openDescriptors = 0
    var maxDescriptors = 0
    var threads = 0
    var cpuSeconds = 0.0

    static func current() -> ProcessStatistics {
        var stats = ProcessStatistics()
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        if let stat = try? String(contentsOfFile: "/proc/self/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        {
            // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15,
            // num_threads 20, vsize 23, rss 24.
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            func field(_ number: Int) -> Int { fields.count > number - 3 ? Int(fields[number - 3]) ?? 0 : 0 }
            stats.cpuSeconds = ticks > 0 ? Double(field(14) + field(15)) / ticks : 0
            stats.threads = field(20)
            stats.virtualBytes = field(23)
            stats.residentBytes = field(24) * page
        }
        stats.openDescriptors = ((try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd"))?.count ?? 1) - 1
        var limit = rlimit()
        if getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 { stats.maxDescriptors = Int(limit.rlim_cur) }
        return stats
    }
}
