import NIOCore
import Synchronization

/// The route labels of the metrics, process-wide: each route path gets a slot once and keeps it across reloads,
/// so that every loop's counters index the same arrays and a route that a reload keeps keeps its series. Slot 0 is
/// "no route". Looked up only when a route table is built.
final class RouteLabels: Sendable {
    private let slots = Mutex<(byPath: [String: Int], paths: [String])>(([:], [""]))

    init() {}

    /// The slot of `path`, given one now if it has none.
    func slot(for path: String) -> Int {
        slots.withLock { slots in
            if let slot = slots.byPath[path] { return slot }
            slots.paths.append(path)
            slots.byPath[path] = slots.paths.count - 1
            return slots.paths.count - 1
        }
    }

    /// The route path of every slot, in slot order.
    var paths: [String] { slots.withLock { $0.paths } }
}

/// Why a TLS handshake failed, a label of `edge_tls_handshake_failures_total`.
enum TLSFailureReason: Int, CaseIterable {
    case timeout, closed, protocolVersion, noSharedCipher, certificateRejected, plainHTTP, other

    var label: String {
        switch self {
        case .timeout: "timeout"
        case .closed: "closed"
        case .protocolVersion: "protocol_version"
        case .noSharedCipher: "no_shared_cipher"
        case .certificateRejected: "certificate_rejected"
        case .plainHTTP: "plain_http"
        case .other: "other"
        }
    }
}

/// The TLS version of a connection, a label: none (plain TCP), 1.2, 1.3.
enum TLSVersionLabel: Int, CaseIterable {
    case none, tls12, tls13, other

    var label: String {
        switch self {
        case .none: "none"
        case .tls12: "TLSv1.2"
        case .tls13: "TLSv1.3"
        case .other: "other"
        }
    }
}

/// What kind of HTTP a connection speaks, a label of `edge_connections_open`.
enum ConnectionProtocol: Int, CaseIterable {
    case http1, http2

    var label: String { self == .http1 ? "http/1.1" : "h2" }
}

/// Requests Edge refused or cut off, by kind: `edge_requests_refused_total` and `edge_timeouts_total`.
enum RefusalKind: Int, CaseIterable {
    case rateLimited, authFailed, serverBusy, clientBusy

    var label: String {
        switch self {
        case .rateLimited: "rate_limited"
        case .authFailed: "auth_failed"
        case .serverBusy: "server_busy"
        case .clientBusy: "client_busy"
        }
    }
}

enum TimeoutKind: Int, CaseIterable {
    case tlsHandshake, requestHead, requestBody, send

    var label: String {
        switch self {
        case .tlsHandshake: "tls_handshake"
        case .requestHead: "request_head"
        case .requestBody: "request_body"
        case .send: "send"
        }
    }
}

/// One event loop's counters: plain integers in arrays, written only on the loop, without a lock, an atomic or
/// an allocation (an array grows only when a reload adds a route). A scrape copies them on each loop
/// (``snapshot()``) and adds the copies up (``MetricsSnapshot``).
///
/// Why not swift-prometheus's counters here: each is an atomic shared by every core, so every request would
/// write cache lines that the other loops also write. Those counters serve the rare events (reloads, the access
/// log's drops), through swift-metrics.
final class LoopMetrics {
    /// Upper bounds of the request-duration histogram, in seconds (Prometheus's `le`).
    static let durationBounds: [Double] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
    private static let boundNanos: [Int64] = durationBounds.map { Int64($0 * 1e9) }
    static let statusClasses = 5
    static let requestCells = WireProtocol.allCases.count * statusClasses * CacheOutcome.allCases.count
    static let bucketCount = durationBounds.count + 1

    /// Routes the arrays have room for.
    private(set) var routes = 0
    /// Requests by route, protocol, status class and cache outcome.
    private(set) var requests: [Int] = []
    /// Request durations by route: the histogram's buckets (not cumulative) and the sum in nanoseconds.
    private(set) var durationBuckets: [Int] = []
    private(set) var durationSums: [Int64] = []
    private(set) var bodyBytesIn: [Int] = []
    private(set) var bodyBytesOut: [Int] = []
    /// Connections opened and closed, by protocol and TLS version (open = opened − closed).
    private(set) var connectionsOpened = [Int](repeating: 0, count: ConnectionProtocol.allCases.count * TLSVersionLabel.allCases.count)
    private(set) var connectionsClosed = [Int](repeating: 0, count: ConnectionProtocol.allCases.count * TLSVersionLabel.allCases.count)
    private(set) var tlsHandshakes = [Int](repeating: 0, count: TLSVersionLabel.allCases.count)
    private(set) var tlsFailures = [Int](repeating: 0, count: TLSFailureReason.allCases.count)
    private(set) var refusals = [Int](repeating: 0, count: RefusalKind.allCases.count)
    private(set) var timeouts = [Int](repeating: 0, count: TimeoutKind.allCases.count)
    /// The route the dispatcher resolved last on this loop: the front end reads it right after the dispatcher
    /// returns, before anything else runs on the loop (``RequestDispatcher``).
    var lastRoute = 0

    init() {}

    /// Counts a finished request.
    func record(_ record: RequestRecord, now: NIODeadline) {
        let route = record.route
        if route >= routes { grow(to: route + 1) }
        let statusClass = min(max(record.status / 100, 1), 5) - 1
        let cell = (record.wire.rawValue * Self.statusClasses + statusClass) * CacheOutcome.allCases.count + record.cache.rawValue
        requests[route * Self.requestCells + cell] &+= 1
        let nanos = max((now - record.start).nanoseconds, 0)
        durationBuckets[route * Self.bucketCount + Self.bucket(for: nanos)] &+= 1
        durationSums[route] &+= nanos
        bodyBytesIn[route] &+= record.bodyBytesIn
        bodyBytesOut[route] &+= record.bodyBytesOut
    }

    /// The histogram bucket of a duration in nanoseconds.
    static func bucket(for nanos: Int64) -> Int {
        var bucket = 0
        while bucket < boundNanos.count, nanos > boundNanos[bucket] { bucket += 1 }
        return bucket
    }

    func connectionOpened(_ kind: ConnectionProtocol, tls: TLSVersionLabel) {
        connectionsOpened[kind.rawValue * TLSVersionLabel.allCases.count + tls.rawValue] &+= 1
    }

    func connectionClosed(_ kind: ConnectionProtocol, tls: TLSVersionLabel) {
        connectionsClosed[kind.rawValue * TLSVersionLabel.allCases.count + tls.rawValue] &+= 1
    }

    func tlsHandshakeCompleted(_ version: TLSVersionLabel) { tlsHandshakes[version.rawValue] &+= 1 }
    func tlsHandshakeFailed(_ reason: TLSFailureReason) { tlsFailures[reason.rawValue] &+= 1 }
    func refused(_ kind: RefusalKind) { refusals[kind.rawValue] &+= 1 }
    func timedOut(_ kind: TimeoutKind) { timeouts[kind.rawValue] &+= 1 }

    private func grow(to count: Int) {
        let added = count - routes
        requests += repeatElement(0, count: added * Self.requestCells)
        durationBuckets += repeatElement(0, count: added * Self.bucketCount)
        durationSums += repeatElement(0, count: added)
        bodyBytesIn += repeatElement(0, count: added)
        bodyBytesOut += repeatElement(0, count: added)
        routes = count
    }

    /// A copy of every counter, taken on the loop.
    func snapshot() -> MetricsSnapshot {
        MetricsSnapshot(
            routes: routes, requests: requests, durationBuckets: durationBuckets, durationSums: durationSums,
            bodyBytesIn: bodyBytesIn, bodyBytesOut: bodyBytesOut, connectionsOpened: connectionsOpened,
            connectionsClosed: connectionsClosed, tlsHandshakes: tlsHandshakes, tlsFailures: tlsFailures,
            refusals: refusals, timeouts: timeouts
        )
    }
}

/// Every loop's counters added up (``LoopMetrics/snapshot()``, ``adding(_:)``).
struct MetricsSnapshot: Sendable {
    var routes = 0
    var requests: [Int] = []
    var durationBuckets: [Int] = []
    var durationSums: [Int64] = []
    var bodyBytesIn: [Int] = []
    var bodyBytesOut: [Int] = []
    var connectionsOpened = [Int](repeating: 0, count: ConnectionProtocol.allCases.count * TLSVersionLabel.allCases.count)
    var connectionsClosed = [Int](repeating: 0, count: ConnectionProtocol.allCases.count * TLSVersionLabel.allCases.count)
    var tlsHandshakes = [Int](repeating: 0, count: TLSVersionLabel.allCases.count)
    var tlsFailures = [Int](repeating: 0, count: TLSFailureReason.allCases.count)
    var refusals = [Int](repeating: 0, count: RefusalKind.allCases.count)
    var timeouts = [Int](repeating: 0, count: TimeoutKind.allCases.count)

    /// The sum of this and `other`, element by element (the arrays with as many routes as the larger).
    func adding(_ other: MetricsSnapshot) -> MetricsSnapshot {
        func sum<T: AdditiveArithmetic>(_ a: [T], _ b: [T]) -> [T] {
            let (long, short) = a.count >= b.count ? (a, b) : (b, a)
            var result = long
            for index in short.indices { result[index] += short[index] }
            return result
        }
        return MetricsSnapshot(
            routes: max(routes, other.routes), requests: sum(requests, other.requests),
            durationBuckets: sum(durationBuckets, other.durationBuckets), durationSums: sum(durationSums, other.durationSums),
            bodyBytesIn: sum(bodyBytesIn, other.bodyBytesIn), bodyBytesOut: sum(bodyBytesOut, other.bodyBytesOut),
            connectionsOpened: sum(connectionsOpened, other.connectionsOpened),
            connectionsClosed: sum(connectionsClosed, other.connectionsClosed), tlsHandshakes: sum(tlsHandshakes, other.tlsHandshakes),
            tlsFailures: sum(tlsFailures, other.tlsFailures), refusals: sum(refusals, other.refusals), timeouts: sum(timeouts, other.timeouts)
        )
    }

    /// Requests of `route` by protocol, status class and cache outcome.
    func requests(route: Int, wire: WireProtocol, statusClass: Int, cache: CacheOutcome) -> Int {
        requests[route * LoopMetrics.requestCells
            + (wire.rawValue * LoopMetrics.statusClasses + statusClass) * CacheOutcome.allCases.count + cache.rawValue]
    }

    /// Open connections of a protocol and TLS version.
    func openConnections(_ kind: ConnectionProtocol, tls: TLSVersionLabel) -> Int {
        let index = kind.rawValue * TLSVersionLabel.allCases.count + tls.rawValue
        return connectionsOpened[index] - connectionsClosed[index]
    }

    var totalRequests: Int { requests.reduce(0, +) }
}
