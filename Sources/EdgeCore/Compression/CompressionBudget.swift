import Synchronization

/// How many responses may be compressed as they stream at once, server-wide (`limits.max_compressing_responses`).
///
/// Each such response holds an encoder (up to about 1.4 MiB, ``CompressionSettings/streaming``) for as long as it
/// streams, and a long-lived response (an event stream) holds it for hours; without a bound, many open responses
/// would add up to gigabytes. Beyond the limit a response is sent as it is — still correct, since the client
/// accepts it uncompressed (its `Vary: Accept-Encoding` stays). One atomic add per compressed response; the
/// budget outlives reloads, which only change the limit.
final class CompressionBudget: Sendable {
    private let active = Atomic<Int>(0)
    private let limit: Atomic<Int>

    init(limit: Int) {
        self.limit = Atomic(limit)
    }

    /// Applies a reloaded configuration's limit; responses already being compressed go on.
    func setLimit(_ limit: Int) {
        self.limit.store(limit, ordering: .relaxed)
    }

    /// Responses being compressed now.
    var inUse: Int { active.load(ordering: .relaxed) }

    /// A slot for one response, or `nil` when the limit is reached. The slot is given back when it is released.
    func take() -> Slot? {
        let now = active.add(1, ordering: .relaxed).newValue
        guard now <= limit.load(ordering: .relaxed) else {
            active.subtract(1, ordering: .relaxed)
            return nil
        }
        return Slot(budget: self)
    }

    /// One response's share of the budget, held by the body being compressed.
    final class Slot {
        private let budget: CompressionBudget

        fileprivate init(budget: CompressionBudget) {
            self.budget = budget
        }

        deinit {
            budget.active.subtract(1, ordering: .relaxed)
        }
    }
}
