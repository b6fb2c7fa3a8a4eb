import Atomics
import NIOCore

/// The shared allowance of `--requests N`: every request (or failed connection attempt) takes one unit,
/// and the run ends when all N have finished, answered or failed.
final class RequestBudget: Sendable {
    /// The number of requests the run may send.
    let limit: Int
    private let taken = ManagedAtomic<Int>(0)
    private let finished = ManagedAtomic<Int>(0)
    private let finishedAtNanos = ManagedAtomic<UInt64>(0)

    /// A budget of `limit` requests.
    init(limit: Int) {
        self.limit = limit
    }

    /// Takes one unit; `false` when none is left.
    func take() -> Bool {
        taken.loadThenWrappingIncrement(ordering: .relaxed) < limit
    }

    /// Whether units are left to take.
    var hasRemaining: Bool { taken.load(ordering: .relaxed) < limit }

    /// Marks `count` taken units as finished (answered, failed or abandoned).
    func finish(_ count: Int) {
        guard count > 0 else { return }
        let total = finished.wrappingIncrementThenLoad(by: count, ordering: .acquiringAndReleasing)
        if total >= limit && total - count < limit {
            finishedAtNanos.store(NIODeadline.now().uptimeNanoseconds, ordering: .releasing)
        }
    }

    /// When the last unit finished (`NIODeadline` nanoseconds), or `nil` while some are outstanding.
    var completedAt: UInt64? {
        let value = finishedAtNanos.load(ordering: .acquiring)
        return value == 0 ? nil : value
    }
}
