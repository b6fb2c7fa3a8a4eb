/// The per-connection view of a run's settings, shared read-only by every event loop.
struct LoadPlan: Sendable {
    /// Nanoseconds between one connection's intended sends (open loop), or `nil` for a closed loop.
    let interval: UInt64?
    /// Total connections (open-loop start times are staggered across them).
    let connections: Int
    /// Requests a connection sends before it falls quiet (`1` in idle mode), or `nil` for no limit.
    let requestsPerConnection: Int?
    /// Nanoseconds before an unanswered request counts as a timeout.
    let timeoutNanos: UInt64
    /// Whether a failed connection is retried (not during the first-connection check).
    let reconnects: Bool

    /// The plan for `configuration`.
    init(configuration: BenchConfiguration, reconnects: Bool = true) {
        if let rate = configuration.rate {
            interval = UInt64((Double(configuration.connections) / rate * 1e9).rounded())
        } else {
            interval = nil
        }
        connections = configuration.connections
        requestsPerConnection = configuration.idle ? 1 : nil
        timeoutNanos = UInt64(configuration.timeout.inNanoseconds)
        self.reconnects = reconnects
    }
}
