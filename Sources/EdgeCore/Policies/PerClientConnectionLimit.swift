import Synchronization

/// Counts open connections per client address and refuses a client's connection beyond `limit`
/// (nginx's `limit_conn`). Only addresses with open connections are tracked, so memory is bounded by
/// `max_connections`. Touched once per accept and once per close, never per request; the counts are
/// spread over shards so that accepts on different event loops rarely meet on one lock.
final class PerClientConnectionLimit: Sendable {
    private final class Shard: Sendable {
        let counts = Mutex<[ClientAddress: Int]>([:])
    }

    private static let shardCount = 16
    private let shards: [Shard]
    private let limit: Int

    /// - Parameter limit: Most connections per client address; 0 disables the limit.
    init(limit: Int) {
        self.limit = limit
        self.shards = (0..<Self.shardCount).map { _ in Shard() }
    }

    /// Counts a connection from `client`; `false` (and nothing counted) when the client is at its limit.
    func admit(_ client: ClientAddress) -> Bool {
        guard limit > 0 else { return true }
        return shard(for: client).counts.withLock { counts in
            let current = counts[client, default: 0]
            guard current < limit else { return false }
            counts[client] = current + 1
            return true
        }
    }

    /// Forgets a connection admitted by ``admit(_:)``.
    func release(_ client: ClientAddress) {
        guard limit > 0 else { return }
        shard(for: client).counts.withLock { counts in
            let remaining = counts[client, default: 1] - 1
            counts[client] = remaining > 0 ? remaining : nil
        }
    }

    /// Open connections of `client`, for tests.
    func count(_ client: ClientAddress) -> Int {
        shard(for: client).counts.withLock { $0[client, default: 0] }
    }

    private func shard(for client: ClientAddress) -> Shard {
        shards[Int(truncatingIfNeeded: (client.low ^ client.high) % UInt64(Self.shardCount))]
    }
}
