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
    case rateLimited, authFailed, serverBusy, clientBusy, accessDenied

    var label: String {
        switch self {
        case .accessDenied: "access_denied"
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

/// One event loop's counters: plain integers written only on the loop, without a lock, an atomic or an allocation.
/// The per-route counters sit in one buffer of raw memory (grown only when a reload adds a route), so that counting a
/// request is a handful of stores: no bounds, uniqueness or exclusivity checks, which cost a Swift array in a class
/// more than the counting itself. A scrape copies them on each loop (``snapshot()``) and adds the copies up
/// (``MetricsSnapshot``).
///
/// Why not swift-prometheus's counters here: each is an atomic shared by every core, so every request would
/// write cache lines that the other loops also write. Those counters serve the rare events (reloads), through
/// swift-metrics.
final class LoopMetrics {
    /// Upper bounds of the request-duration histogram, in seconds (Prometheus's `le`).
    static let durationBounds: [Double] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
    static let statusClasses = 5
    /// Cells per route: protocols (3) × status classes (5) × cache outcomes (6).
    static let requestCells = 3 * 5 * 6
    /// Histogram buckets: 14 bounds and +Inf.
    static let bucketCount = 15
    /// Per route: the request cells, the buckets, the duration sum (ns), body bytes in, body bytes out.
    private static let stride = requestCells + bucketCount + 3

    /// Routes the buffer has room for. Only this loop touches these two (and the object), so Swift's run-time
    /// exclusivity checks, a call each per access, are left out for them.
    @exclusivity(unchecked) private(set) var routes = 0
    @exclusivity(unchecked) private var perRoute = UnsafeMutablePointer<Int>.allocate(capacity: 0)
    /// Connections opened and closed, by protocol and TLS version (open = opened − closed).
    private(set) var connectionsOpened = [Int](repeating: 0, count: 2 * 4)
    private(set) var connectionsClosed = [Int](repeating: 0, count: 2 * 4)
    private(set) var tlsHandshakes = [Int](repeating: 0, count: 4)
    private(set) var tlsFailures = [Int](repeating: 0, count: TLSFailureReason.allCases.count)
    private(set) var refusals = [Int](repeating: 0, count: RefusalKind.allCases.count)
    private(set) var timeouts = [Int](repeating: 0, count: TimeoutKind.allCases.count)
    init() {}

    deinit { perRoute.deallocate() }

    /// Counts a finished request (a status of 0, no answer, as 499).
    @inline(__always)
    func record(_ record: RequestRecord, now: NIODeadline) {
        let route = record.route
        if route >= routes { grow(to: route + 1) }
        let status = record.status == 0 ? 499 : record.status
        let statusClass = min(max(status / 100, 1), 5) - 1
        let base = perRoute + route * Self.stride
        base[(record.wire.rawValue * 5 + statusClass) * 6 + record.cache.rawValue] &+= 1
        let nanos = max((now - record.start).nanoseconds, 0)
        base[Self.requestCells + Self.bucket(for: nanos)] &+= 1
        let sums = base + Self.requestCells + Self.bucketCount
        sums[0] &+= Int(nanos)
        sums[1] &+= record.bodyBytesIn
        sums[2] &+= record.bodyBytesOut
    }

    /// The histogram bucket of a duration in nanoseconds.
    @inline(__always)
    static func bucket(for nanos: Int64) -> Int {
        // 0.5 ms … 10 s, as durationBounds; a literal list, compared without touching an array.
        switch nanos {
        case ...500_000: return 0
        case ...1_000_000: return 1
        case ...2_500_000: return 2
        case ...5_000_000: return 3
        case ...10_000_000: return 4
        case ...25_000_000: return 5
        case ...50_000_000: return 6
        case ...100_000_000: return 7
        case ...250_000_000: return 8
        case ...500_000_000: return 9
        case ...1_000_000_000: return 10
        case ...2_500_000_000: return 11
        case ...5_000_000_000: return 12
        case ...10_000_000_000: return 13
        default: return 14
        }
    }

    func connectionOpened(_ kind: ConnectionProtocol, tls: TLSVersionLabel) {
        connectionsOpened[kind.rawValue * 4 + tls.rawValue] &+= 1
    }

    func connectionClosed(_ kind: ConnectionProtocol, tls: TLSVersionLabel) {
        connectionsClosed[kind.rawValue * 4 + tls.rawValue] &+= 1
    }

    func tlsHandshakeCompleted(_ version: TLSVersionLabel) { tlsHandshakes[version.rawValue] &+= 1 }
    func tlsHandshakeFailed(_ reason: TLSFailureReason) { tlsFailures[reason.rawValue] &+= 1 }
    func refused(_ kind: RefusalKind) { refusals[kind.rawValue] &+= 1 }
    func timedOut(_ kind: TimeoutKind) { timeouts[kind.rawValue] &+= 1 }

    private func grow(to count: Int) {
        let grown = UnsafeMutablePointer<Int>.allocate(capacity: count * Self.stride)
        grown.initialize(repeating: 0, count: count * Self.stride)
        grown.update(from: perRoute, count: routes * Self.stride)
        perRoute.deallocate()
        perRoute = grown
        routes = count
    }

    /// A copy of every counter, taken on the loop.
    func snapshot() -> MetricsSnapshot {
        var snapshot = MetricsSnapshot()
        snapshot.routes = routes
        for route in 0..<routes {
            let base = perRoute + route * Self.stride
            snapshot.requests += UnsafeBufferPointer(start: base, count: Self.requestCells)
            snapshot.durationBuckets += UnsafeBufferPointer(start: base + Self.requestCells, count: Self.bucketCount)
            let sums = base + Self.requestCells + Self.bucketCount
            snapshot.durationSums.append(Int64(sums[0]))
            snapshot.bodyBytesIn.append(sums[1])
            snapshot.bodyBytesOut.append(sums[2])
        }
        snapshot.connectionsOpened = connectionsOpened
        snapshot.connectionsClosed = connectionsClosed
        snapshot.tlsHandshakes = tlsHandshakes
        snapshot.tlsFailures = tlsFailures
        snapshot.refusals = refusals
        snapshot.timeouts = timeouts
        return snapshot
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

    /// Every request cell with a count: its route, protocol, status class (0 for 1xx … 4 for 5xx) and cache outcome.
    func forEachRequestCell(_ body: (_ route: Int, _ wire: WireProtocol, _ statusClass: Int, _ cache: CacheOutcome, _ count: Int) -> Void) {
        for route in 0..<routes {
            for wire in WireProtocol.allCases {
                for statusClass in 0..<LoopMetrics.statusClasses {
                    for outcome in CacheOutcome.allCases {
                        let count = requests(route: route, wire: wire, statusClass: statusClass, cache: outcome)
                        if count > 0 { body(route, wire, statusClass, outcome, count) }
                    }
                }
            }
        }
    }
}
