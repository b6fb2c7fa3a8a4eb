#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import NIOCore
import NIOHTTP1
public import Tracing

/// The tracing settings (`[tracing]`): spans are exported with OTLP/HTTP (protobuf) by swift-otel.
public struct TracingConfiguration: Sendable, Equatable {
    /// Where spans are sent, e.g. `http://127.0.0.1:4318/v1/traces`.
    public var endpoint: String = "http://127.0.0.1:4318/v1/traces"
    /// The share of new traces recorded (0…1); a client's `traceparent` decides for its own trace.
    public var samplingRatio: Double = 1.0
    /// `service.name` of the spans.
    public var serviceName: String = "edge"

    public init() {}
}

/// Spans for requests, through swift-distributed-tracing (the tracer swift-otel makes, in the `edge` command): a
/// server span per request, its parent read from the client's W3C `traceparent`/`tracestate`, and a client span per
/// upstream attempt whose context goes upstream in those fields.
///
/// Only used when `[tracing]` is configured; without it the front ends do not look for the fields.
public final class RequestTracing: Sendable {
    let tracer: any Tracer

    public init(tracer: any Tracer) {
        self.tracer = tracer
    }

    /// Starts a request's server span at `start` (when its first byte arrived).
    func serverSpan(method: HTTPMethod, target: Substring, traceparent: String?, tracestate: String?, start: NIODeadline) -> any Span {
        var context = ServiceContext.topLevel
        if let traceparent {
            tracer.extract(TraceFields(traceparent: traceparent, tracestate: tracestate), into: &context, using: TraceFieldsExtractor())
        }
        let span = tracer.startSpan(method.rawValue, context: context, ofKind: .server, at: Self.instant(of: start))
        let path = target.utf8.firstIndex(of: UInt8(ascii: "?")).map { target[..<$0] } ?? target
        span.attributes["http.request.method"] = method.rawValue
        span.attributes["url.path"] = String(path)
        return span
    }

    /// Ends a request's server span with what the answer was.
    func end(_ span: any Span, record: RequestRecord, route: String, now: NIODeadline) {
        span.operationName = "\(record.method.rawValue) \(route.isEmpty ? "-" : route)"
        span.attributes["http.response.status_code"] = record.status
        span.attributes["http.route"] = route
        span.attributes["network.protocol.version"] = record.wire == .http2 ? "2" : record.wire == .http1_0 ? "1.0" : "1.1"
        span.attributes["client.address"] = record.client.description
        if record.cache != .none { span.attributes["edge.cache"] = record.cache.label }
        if record.status >= 500 { span.setStatus(SpanStatus(code: .error)) }
        span.end(at: Self.instant(of: now))
    }

    /// Starts the client span of one upstream attempt, under the request's server span.
    func clientSpan(parent: ServiceContext, method: HTTPMethod, server: String) -> any Span {
        let span = tracer.startSpan(method.rawValue, context: parent, ofKind: .client)
        span.attributes["http.request.method"] = method.rawValue
        span.attributes["server.address"] = server
        return span
    }

    /// The `traceparent` and `tracestate` of `context`, to send upstream.
    func fields(of context: ServiceContext) -> [(String, String)] {
        var fields = TraceFields()
        tracer.inject(context, into: &fields, using: TraceFieldsInjector())
        return [("traceparent", fields.traceparent), ("tracestate", fields.tracestate)].compactMap { name, value in
            value.map { (name, $0) }
        }
    }

    /// A monotonic `NIODeadline` as the wall-clock instant tracers take.
    static func instant(of deadline: NIODeadline) -> DefaultTracerClock.Instant {
        var wall = timespec()
        clock_gettime(CLOCK_REALTIME, &wall)
        let wallNanos = UInt64(wall.tv_sec) * 1_000_000_000 + UInt64(wall.tv_nsec)
        let ago = Int64(NIODeadline.now().uptimeNanoseconds) - Int64(deadline.uptimeNanoseconds)
        return DefaultTracerClock.Instant(nanosecondsSinceEpoch: UInt64(max(Int64(wallNanos) - max(ago, 0), 0)))
    }
}

/// The W3C trace fields of a request, as a carrier for swift-distributed-tracing's extract and inject.
struct TraceFields {
    var traceparent: String?
    var tracestate: String?
}

struct TraceFieldsExtractor: Extractor {
    func extract(key: String, from carrier: TraceFields) -> String? {
        switch key.lowercased() {
        case "traceparent": carrier.traceparent
        case "tracestate": carrier.tracestate
        default: nil
        }
    }
}

struct TraceFieldsInjector: Injector {
    func inject(_ value: String, forKey key: String, into carrier: inout TraceFields) {
        switch key.lowercased() {
        case "traceparent": carrier.traceparent = value
        case "tracestate": carrier.tracestate = value
        default: break
        }
    }
}
