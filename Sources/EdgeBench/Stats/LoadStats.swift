import Histogram

/// Counters and the latency histogram of one event loop, or of a whole run once merged.
struct LoadStats: Sendable {
    /// Highest latency the histogram tracks: one hour, in microseconds.
    static let highestTrackableMicroseconds: UInt64 = 3_600_000_000

    /// Latency in microseconds, from the intended send time (open loop) or the actual one (closed loop).
    var latency = Histogram<UInt64>(lowestDiscernibleValue: 1, highestTrackableValue: highestTrackableMicroseconds, numberOfSignificantValueDigits: .three)
    /// Complete responses, whatever their status.
    var responses = 0
    /// Responses by status code (index = status, 100–599).
    var statusCounts = [Int](repeating: 0, count: 600)
    /// Failures by ``ErrorKind`` raw value.
    var errors = [Int](repeating: 0, count: ErrorKind.allCases.count)
    /// The first message seen for each kind of failure.
    var firstErrorMessages: [String?] = Array(repeating: nil, count: ErrorKind.allCases.count)
    /// HTTP bytes received (after TLS decryption): heads, bodies and framing.
    var bytesReceived = 0
    /// Requests still in flight when the run ended (neither answered nor failed).
    var unfinished = 0
    /// Connections established (including replacements).
    var connectionsOpened = 0
    /// Connections open when the run ended.
    var connectionsOpenAtEnd = 0
    /// Established connections by negotiated protocol (`h2`, `http/1.1`).
    var protocols: [String: Int] = [:]

    /// Records one failure of `kind` (`count` requests or attempts).
    mutating func recordError(_ failure: TransportFailure, count: Int = 1) {
        guard count > 0 else { return }
        errors[failure.kind.rawValue] += count
        if firstErrorMessages[failure.kind.rawValue] == nil { firstErrorMessages[failure.kind.rawValue] = failure.message }
    }

    /// Adds `other` into `self`.
    mutating func merge(_ other: LoadStats) {
        latency.add(other.latency)
        responses += other.responses
        for index in statusCounts.indices { statusCounts[index] += other.statusCounts[index] }
        for index in errors.indices {
            errors[index] += other.errors[index]
            if firstErrorMessages[index] == nil { firstErrorMessages[index] = other.firstErrorMessages[index] }
        }
        bytesReceived += other.bytesReceived
        unfinished += other.unfinished
        connectionsOpened += other.connectionsOpened
        connectionsOpenAtEnd += other.connectionsOpenAtEnd
        protocols.merge(other.protocols, uniquingKeysWith: +)
    }

    /// Failures of every kind except ``ErrorKind/status`` (those got a response).
    var failedRequests: Int {
        ErrorKind.allCases.filter { $0 != .status }.reduce(0) { $0 + errors[$1.rawValue] }
    }
}
