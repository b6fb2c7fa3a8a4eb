public import NIOCore
import NIOHTTP1
import Synchronization

/// The built-in demo backend: answers after a simulated delay, scheduled on the event loop (never a sleep).
///
/// The body names the request that caused the fetch; `X-Demo-Fetch` carries a process-wide sequence number of
/// backend calls, so clients can see how many fetches really happened. A `delay_ms` query parameter overrides
/// the configured delay, capped at `max_delay_ms`.
public final class DemoBackend: Sendable {
    private let configuration: DemoBackendConfiguration
    private let fetchCounter: Atomic<Int> = .init(0)

    /// Creates a backend with the route's settings.
    public init(configuration: DemoBackendConfiguration) {
        self.configuration = configuration
    }

    /// Fetches the response for a request on `eventLoop`.
    /// - Parameters:
    ///   - method: Request method.
    ///   - target: Path and query.
    ///   - query: The query part of `target`, if any.
    ///   - bodyBytes: Size of the request body that was received.
    public func fetch(method: String, target: String, query: Substring?, bodyBytes: Int, on eventLoop: any EventLoop) -> EventLoopFuture<EdgeResponse> {
        let delay = self.delay(for: query)
        let make: @Sendable () -> EdgeResponse = { [self] in
            let sequence = fetchCounter.add(1, ordering: .relaxed).newValue
            var text = "Hello from the Edge demo backend\n\(method) \(target)\n"
            if bodyBytes > 0 { text += "request body: \(bodyBytes) bytes\n" }
            return EdgeResponse(
                status: .ok,
                headers: ["content-type": "text/plain; charset=utf-8", "x-demo-fetch": String(sequence)],
                body: ByteBuffer(string: text)
            )
        }
        if delay <= .zero { return eventLoop.makeSucceededFuture(make()) }
        return eventLoop.scheduleTask(in: delay, make).futureResult
    }

    /// The delay for a request: `delay_ms` from the query (capped) or the configured delay.
    func delay(for query: Substring?) -> TimeAmount {
        guard let query else { return configuration.delay }
        for pair in query.split(separator: "&") where pair.hasPrefix("delay_ms=") {
            if let millis = Int64(pair.dropFirst("delay_ms=".count)), millis >= 0 {
                return min(.milliseconds(millis), configuration.maxDelay)
            }
        }
        return configuration.delay
    }
}

extension DemoBackend: Origin {
    func serve(_ request: OriginRequest, context: OriginContext) -> Dispatch {
        let fetched = fetch(
            method: request.method.rawValue, target: String(request.target), query: request.query,
            bodyBytes: request.bodyBytes, on: context.eventLoop
        )
        return .pending(fetched.map { .response($0) }.recover { _ in .response(.text(.badGateway, "backend failed\n")) })
    }
}
