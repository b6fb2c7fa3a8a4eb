import Synchronization

/// Counts something per client address — open connections (nginx's `limit_conn`), requests in flight — and
/// refuses a client beyond `limit`. Only addresses with a non-zero count are tracked, so memory is bounded by
/// what is counted. The counts are spread over shards so that event loops rarely meet on one lock; connections
/// are counted at accept and close, requests only while they wait for something (a cache hit answered at once
/// is never counted).
final class PerClientLimit: Sendable {
    private final class Shard: Sendable {
        let counts = Mutex<[ClientAddress: Int]>([:])
    }

    private static let shardCount = 16
    private let shards: [Shard]
    private let limit: Int

    /// - Parameter limit: Most connections (or requests) per client address; 0 disables the limit.
    init(limit: Int) {
        self.limit = limit
        self.shards = (0..<Self.shardCount).map { _ in Shard() }
    }

    /// Counts one for `client`; `false` (and nothing counted) when the client is at its limit.
    func admit(_ client: ClientAddress) -> Bool {
        guard limit > 0 else { return true }
        return shard(for: client).counts.withLock { counts in
            let current = counts[client, default: 0]
            guard current < limit else { return false }
            counts[client] = current + 1
            return true
        }
    }

    /// Counts one for `client` whatever its count (for work already started; see ``isAtLimit(_:)``).
    func add(_ client: ClientAddress) {
        guard limit > 0 else { return }
        shard(for: client).counts.withLock { $0[client, default: 0] += 1 }
    }

    /// Whether `client` has `limit` or more counted.
    func isAtLimit(_ client: ClientAddress) -> Bool {
        limit > 0 && count(client) >= limit
    }

    /// The limit (0: none).
    var maximum: Int { limit }

    /// Forgets one counted by ``admit(_:)`` or ``add(_:)``.
    func release(_ client: ClientAddress) {
        guard limit > 0 else { return }
        shard(for: client).counts.withLock { counts in
            let remaining = counts[client, default: 1] - 1
            counts[client] = remaining > 0 ? remaining : nil
        }
    }

    /// The count of `client`.
    func count(_ client: ClientAddress) -> Int {
        shard(for: client).counts.withLock { $0[client, default: 0] }
    }

    private func shard(for client: ClientAddress) -> Shard {
        shards[Int(truncatingIfNeeded: (client.low ^ client.high) % UInt64(Self.shardCount))]
    }
}
