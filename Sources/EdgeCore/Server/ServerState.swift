import Synchronization

/// Process-wide counters and flags shared by every connection; all lock-free atomics.
public final class ServerState: Sendable {
    private let draining = Atomic<Bool>(false)
    private let connections = Atomic<Int>(0)
    private let inFlight = Atomic<Int>(0)

    /// Creates the state of a server that is serving.
    public init() {}

    /// Whether a graceful shutdown has begun (`/healthz` answers 503).
    public var isDraining: Bool { draining.load(ordering: .relaxed) }

    /// Starts draining.
    public func beginDraining() { draining.store(true, ordering: .relaxed) }

    /// Open client connections.
    public var connectionCount: Int { connections.load(ordering: .relaxed) }

    /// Requests being processed.
    public var inFlightCount: Int { inFlight.load(ordering: .relaxed) }

    /// Counts a new connection; returns `false` (and counts nothing) when `limit` connections are open.
    func admitConnection(limit: Int) -> Bool {
        Self.acquire(connections, limit: limit)
    }

    /// Forgets a connection admitted by ``admitConnection(limit:)``.
    func connectionClosed() { connections.subtract(1, ordering: .relaxed) }

    /// Counts a request; returns `false` (and counts nothing) when `limit` requests are in flight.
    func admitRequest(limit: Int) -> Bool {
        Self.acquire(inFlight, limit: limit)
    }

    /// Whether fewer than `limit` requests are in flight; for answers that never wait and so are not counted.
    func inFlightBelow(_ limit: Int) -> Bool { inFlight.load(ordering: .relaxed) < limit }

    /// Forgets a request admitted by ``admitRequest(limit:)``.
    func requestFinished() { inFlight.subtract(1, ordering: .relaxed) }

    private static func acquire(_ counter: borrowing Atomic<Int>, limit: Int) -> Bool {
        let previous = counter.add(1, ordering: .relaxed).oldValue
        if previous >= limit {
            counter.subtract(1, ordering: .relaxed)
            return false
        }
        return true
    }
}
