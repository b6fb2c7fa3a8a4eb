import Atomics
import NIOCore

/// One upstream server's figures for the metrics: exchanges, failures by cause and the time to the response head.
///
/// Atomics, not per-loop counters: every loop proxies to the same servers, and a proxied exchange (a network
/// round trip) dwarfs three relaxed atomic adds.
final class UpstreamStatistics: Sendable {
    enum FailureCause: Int, CaseIterable {
        case connect, closed, firstByteTimeout, stalled, malformed

        var label: String {
            switch self {
            case .connect: "connect"
            case .closed: "closed"
            case .firstByteTimeout: "first_byte_timeout"
            case .stalled: "stalled"
            case .malformed: "malformed"
            }
        }

        init?(_ cause: UpstreamFailure.Cause) {
            switch cause {
            case .connect: self = .connect
            case .closed: self = .closed
            case .firstByteTimeout: self = .firstByteTimeout
            case .stalled: self = .stalled
            case .malformed: self = .malformed
            case .cancelled: return nil
            }
        }
    }

    private let exchanges = ManagedAtomic<Int>(0)
    private let failures = FailureCause.allCases.map { _ in ManagedAtomic<Int>(0) }
    private let headerBuckets = (0..<LoopMetrics.bucketCount).map { _ in ManagedAtomic<Int>(0) }
    private let headerNanos = ManagedAtomic<Int>(0)

    init() {}

    /// Counts an exchange that ended; `failure` names its cause (a client that left is no failure of the server's).
    func finished(failure: UpstreamFailure?) {
        if let failure {
            guard let cause = FailureCause(failure.cause) else { return }
            failures[cause.rawValue].wrappingIncrement(ordering: .relaxed)
        }
        exchanges.wrappingIncrement(ordering: .relaxed)
    }

    /// Counts the time from sending the request to the response head.
    func responded(after time: TimeAmount) {
        headerBuckets[LoopMetrics.bucket(for: time.nanoseconds)].wrappingIncrement(ordering: .relaxed)
        headerNanos.wrappingIncrement(by: Int(time.nanoseconds), ordering: .relaxed)
    }

    struct Snapshot {
        var exchanges: Int
        var failures: [Int]
        var headerBuckets: [Int]
        var headerSeconds: Double
    }

    var snapshot: Snapshot {
        Snapshot(
            exchanges: exchanges.load(ordering: .relaxed), failures: failures.map { $0.load(ordering: .relaxed) },
            headerBuckets: headerBuckets.map { $0.load(ordering: .relaxed) },
            headerSeconds: Double(headerNanos.load(ordering: .relaxed)) / 1e9
        )
    }
}
