#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import NIOCore
public import Prometheus

/// What Edge keeps for operators across the whole process: the route labels of the metrics, the access log's
/// writer, the registry of swift-prometheus metrics (recorded through swift-metrics) and the start time.
public final class Observability: Sendable {
    let routeLabels = RouteLabels()
    let accessLog: AccessLogWriter?
    /// Spans for requests and upstream attempts (`[tracing]`).
    let tracing: RequestTracing?
    /// Metrics recorded rarely (reloads, the access log's drops, process figures): swift-prometheus, through
    /// swift-metrics where the code records them.
    public let registry: PrometheusCollectorRegistry
    /// When the process started serving.
    let started = NIODeadline.now()
    let startedWallClock = Int64(timeSinceEpochSeconds())

    /// - Throws: when the access log's file cannot be opened.
    public init(
        accessLog: AccessLogConfiguration? = nil, tracing: RequestTracing? = nil,
        registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()
    ) throws(AccessLogOpenError) {
        self.accessLog = try accessLog.map { configuration throws(AccessLogOpenError) in try AccessLogWriter(configuration: configuration) }
        self.tracing = tracing
        self.registry = registry
    }

    /// No access log, a registry of its own: for tests and tools that build services directly.
    static var standalone: Observability { try! Observability() }

    private static func timeSinceEpochSeconds() -> Int {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return now.tv_sec
    }
}

/// One event loop's observer of the requests it serves: counts each in the loop's ``LoopMetrics`` and, when the
/// access log is on, formats its line (``AccessLogBuffer``). Every front end calls ``finished(_:now:)`` once per
/// request, on the loop.
final class LoopObserver {
    /// What the dispatcher learned of the request it dispatched last: its route's metrics slot and the client a
    /// trusted proxy named. The front end takes it right after the dispatcher returns, before anything else runs on
    /// the loop; a value, so no request sees another's.
    struct DispatchNote {
        var route = 0
        var client: ClientAddress?
        /// The site that answered, for the header fields it adds (``Site/headers``).
        var site: Site?
    }

    let metrics = LoopMetrics()
    let accessLog: AccessLogBuffer?
    let tracing: RequestTracing?
    private let routeLabels: RouteLabels
    private var labels: [String] = [""]
    /// Touched on every request, by this loop only: no run-time exclusivity check.
    @exclusivity(unchecked) var lastDispatch = DispatchNote()
    /// The loop's latest answers with a 5xx status, newest last (at most ``recentErrorLimit``), for the status page.
    private(set) var recentErrors: [RecentError] = []
    static let recentErrorLimit = 16

    init(observability: Observability, eventLoop: any EventLoop) {
        routeLabels = observability.routeLabels
        accessLog = observability.accessLog.map { AccessLogBuffer(writer: $0, eventLoop: eventLoop) }
        tracing = observability.tracing
    }

    /// An observer that only counts (tests).
    init() {
        routeLabels = RouteLabels()
        accessLog = nil
        tracing = nil
    }

    /// Whether requests are logged: the front ends keep the fields only the log needs (`User-Agent`, `Referer`).
    var logs: Bool { accessLog != nil }

    /// Starts the server span of a request whose trace fields are `traceparent` and `tracestate`, when tracing is on.
    /// The fields are read only then.
    func startSpan(
        _ record: inout RequestRecord, traceparent: @autoclosure () -> String?, tracestate: @autoclosure () -> String?
    ) {
        guard let tracing else { return }
        record.detailed.span = tracing.serverSpan(
            method: record.method, target: record.target, traceparent: traceparent(), tracestate: tracestate(), start: record.start
        )
    }

    /// The note of the request just dispatched, reset for the next.
    func takeDispatch() -> DispatchNote {
        let note = lastDispatch
        lastDispatch = DispatchNote()
        return note
    }

    private func noteError(_ record: RequestRecord) {
        if recentErrors.count == Self.recentErrorLimit { recentErrors.removeFirst() }
        if record.route >= labels.count { labels = routeLabels.paths }
        recentErrors.append(
            RecentError(
                unixMilliseconds: RecentError.nowMilliseconds(), method: record.method.rawValue,
                target: String(record.target.prefix(200)), status: record.status,
                route: record.route < labels.count ? labels[record.route] : ""
            )
        )
    }

    /// Counts and logs the request a front end keeps while it answers (a file, a stream), once: `record` is `nil`
    /// afterwards.
    func finish(_ record: inout RequestRecord?) {
        guard let finishing = record else { return }
        record = nil
        finished(finishing)
    }

    /// Counts and logs a finished request.
    @inline(__always)
    func finished(_ record: RequestRecord, now: NIODeadline = .now()) {
        metrics.record(record, now: now)
        guard record.status < 500, record.details == nil, accessLog == nil else {
            finishedRarely(record, now: now)
            return
        }
    }

    /// What only a 5xx, a 499, the access log or tracing needs.
    private func finishedRarely(_ record: RequestRecord, now: NIODeadline) {
        var record = record
        if record.status == 0 { record.status = 499 }  // no answer began: the client went away (nginx's 499)
        if record.status >= 500 { noteError(record) }
        guard accessLog != nil || record.span != nil else { return }
        if record.route >= labels.count { labels = routeLabels.paths }
        if let span = record.span, let tracing {
            tracing.end(span, record: record, route: record.route < labels.count ? labels[record.route] : "", now: now)
        }
        guard let accessLog else { return }
        accessLog.log(record, routeLabel: record.route < labels.count ? labels[record.route] : "", now: now, client: record.client)
    }
}

/// An answer with a 5xx status, as the status page lists it.
struct RecentError: Sendable, Codable {
    var unixMilliseconds: Int64
    var method: String
    var target: String
    var status: Int
    var route: String

    static func nowMilliseconds() -> Int64 {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return Int64(now.tv_sec) * 1000 + Int64(now.tv_nsec / 1_000_000)
    }
}
