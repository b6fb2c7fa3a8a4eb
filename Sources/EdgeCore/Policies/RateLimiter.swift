public import NIOCore
import Synchronization

/// A per-client request rate limit using GCRA (the generic cell rate algorithm, a token bucket without a
/// refill timer): each client has a theoretical arrival time (TAT); a request is allowed when it is not more
/// than the burst tolerance ahead of now, and pushes the TAT one emission interval further.
///
/// Memory is bounded: at most `maxClients` addresses are tracked. A client whose TAT has passed is
/// indistinguishable from a new one, so such entries are dropped whenever a shard fills up; if a shard is full
/// of active clients, an arbitrary one is forgotten (which can only let that client through sooner).
/// State is spread over shards by address hash, so event loops seldom contend for one lock.
public final class RateLimiter: Sendable {
    /// The outcome of ``check(_:now:)``.
    public enum Decision: Equatable, Sendable {
        /// Serve the request.
        case allow
        /// Refuse it; the client may retry after this many whole seconds (at least 1).
        case reject(retryAfterSeconds: Int)
    }

    private final class Shard: Sendable {
        let arrivals = Mutex<[ClientAddress: Int64]>([:])
    }

    private static let shardCount = 16
    private let shards: [Shard]
    private let interval: Int64
    private let tolerance: Int64
    private let maxPerShard: Int

    /// - Parameters:
    ///   - perSecond: Sustained requests per second per client.
    ///   - burst: Requests a client may send at once.
    ///   - maxClients: Most client addresses tracked.
    public init(perSecond: Double, burst: Int, maxClients: Int = 100_000) {
        interval = Int64(1_000_000_000 / perSecond)
        tolerance = interval * Int64(max(burst, 1) - 1)
        maxPerShard = max(1, maxClients / Self.shardCount)
        shards = (0..<Self.shardCount).map { _ in Shard() }
    }

    /// Decides whether `client` may make a request at `now`, and records it if so.
    public func check(_ client: ClientAddress, now: NIODeadline) -> Decision {
        let now = Int64(now.uptimeNanoseconds)
        let shard = shards[Int(truncatingIfNeeded: (client.low ^ client.high) % UInt64(Self.shardCount))]
        return shard.arrivals.withLock { arrivals in
            let arrival = max(arrivals[client] ?? now, now)
            if arrival - now > tolerance {
                let wait = arrival - tolerance - now
                return .reject(retryAfterSeconds: max(1, Int((wait + 999_999_999) / 1_000_000_000)))
            }
            if arrivals[client] == nil, arrivals.count >= maxPerShard {
                arrivals = arrivals.filter { $0.value > now }
                if arrivals.count >= maxPerShard { arrivals.remove(at: arrivals.startIndex) }
            }
            arrivals[client] = arrival + interval
            return .allow
        }
    }

    /// Client addresses currently tracked, for tests.
    public var trackedClients: Int {
        shards.reduce(0) { total, shard in total + shard.arrivals.withLock { $0.count } }
    }
}
