import Atomics

/// Running totals one event loop publishes for the progress line: one writer, any number of readers.
final class ProgressCounters: Sendable {
    private let responses = ManagedAtomic<Int>(0)
    private let errors = ManagedAtomic<Int>(0)

    /// Counts one response.
    func addResponse() { responses.wrappingIncrement(ordering: .relaxed) }

    /// Counts `count` failures.
    func addErrors(_ count: Int) { errors.wrappingIncrement(by: count, ordering: .relaxed) }

    /// The totals so far.
    var snapshot: (responses: Int, errors: Int) {
        (responses.load(ordering: .relaxed), errors.load(ordering: .relaxed))
    }
}
