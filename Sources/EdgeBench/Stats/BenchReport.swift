/// The result of a run, for people (``HumanReport``) and scripts (``jsonText()``).
///
/// Accounting: `requests` counts complete responses of any status; `errors` counts failures by kind,
/// where `status` is the non-2xx subset of `requests` and every other kind is a request (or connection
/// attempt) that got no response. `unfinished` requests were in flight when the run ended.
public struct BenchReport: Sendable, Encodable {
    /// Latency percentiles in milliseconds.
    public struct Latency: Sendable, Encodable {
        /// Median.
        public var p50: Double
        /// 90th percentile.
        public var p90: Double
        /// 99th percentile.
        public var p99: Double
        /// 99.9th percentile.
        public var p999: Double
        /// 99.99th percentile.
        public var p9999: Double
        /// Largest recorded.
        public var max: Double
        /// Smallest recorded.
        public var min: Double
        /// Arithmetic mean.
        public var mean: Double
        /// Standard deviation.
        public var stdev: Double
    }

    /// The URL requested.
    public var url: String
    /// The HTTP version(s) spoken: `http/1.1`, `h2`.
    public var `protocol`: String
    /// `closed` (wrk-like), `open` (fixed rate, wrk2-like) or `idle`.
    public var mode: String
    /// Connections asked for.
    public var connections: Int
    /// Event loop threads.
    public var threads: Int
    /// Requests in flight per connection: the pipelining depth (HTTP/1.1) or streams (HTTP/2).
    public var depth: Int
    /// The open-loop rate asked for, requests per second.
    public var targetRate: Double?
    /// Whether latencies count from the intended send time (open loop).
    public var coordinatedOmissionCorrected: Bool
    /// Measured length of the load phase.
    public var durationSeconds: Double
    /// Complete responses (any status).
    public var requests: Int
    /// Failures by kind (see ``ErrorKind``); `status` is the non-2xx responses.
    public var errors: [String: Int]
    /// Sum of ``errors``.
    public var errorsTotal: Int
    /// The first message seen for each failure kind that occurred.
    public var errorMessages: [String: String]
    /// Responses by status code.
    public var statusCodes: [String: Int]
    /// Requests in flight when the run ended (not counted anywhere else).
    public var unfinished: Int
    /// ``requests`` per second of ``durationSeconds``.
    public var requestsPerSecond: Double
    /// HTTP bytes received (after TLS decryption).
    public var bytes: Int
    /// ``bytes`` per second.
    public var bytesPerSecond: Double
    /// Response latency.
    public var latencyMs: Latency
    /// Connections established, including replacements.
    public var connectionsOpened: Int
    /// Connections open when the run ended.
    public var connectionsOpenAtEnd: Int

    enum CodingKeys: String, CodingKey {
        case url, `protocol`, mode, connections, threads, depth, requests, errors, unfinished, bytes
        case targetRate = "target_rate"
        case coordinatedOmissionCorrected = "coordinated_omission_corrected"
        case durationSeconds = "duration_s"
        case errorsTotal = "errors_total"
        case errorMessages = "error_messages"
        case statusCodes = "status_codes"
        case requestsPerSecond = "requests_per_second"
        case bytesPerSecond = "bytes_per_second"
        case latencyMs = "latency_ms"
        case connectionsOpened = "connections_opened"
        case connectionsOpenAtEnd = "connections_open_at_end"
    }

    init(configuration: BenchConfiguration, stats: LoadStats, durationSeconds: Double) {
        url = configuration.target.description
        `protocol` = stats.protocols.keys.sorted().joined(separator: "+")
        if `protocol`.isEmpty { `protocol` = "none" }
        mode = configuration.idle ? "idle" : (configuration.isOpenLoop ? "open" : "closed")
        connections = configuration.connections
        threads = configuration.threads
        depth = stats.protocols["h2"] != nil ? configuration.streamsPerConnection : configuration.pipelineDepth
        targetRate = configuration.rate
        coordinatedOmissionCorrected = configuration.isOpenLoop
        self.durationSeconds = durationSeconds
        requests = stats.responses
        var errors: [String: Int] = [:]
        var messages: [String: String] = [:]
        for kind in ErrorKind.allCases {
            errors[kind.description] = stats.errors[kind.rawValue]
            if let message = stats.firstErrorMessages[kind.rawValue] { messages[kind.description] = message }
        }
        self.errors = errors
        errorMessages = messages
        errorsTotal = stats.errors.reduce(0, +)
        var codes: [String: Int] = [:]
        for (status, count) in stats.statusCounts.enumerated() where count > 0 { codes[String(status)] = count }
        statusCodes = codes
        unfinished = stats.unfinished
        requestsPerSecond = Double(stats.responses) / durationSeconds
        bytes = stats.bytesReceived
        bytesPerSecond = Double(stats.bytesReceived) / durationSeconds
        let histogram = stats.latency
        func ms(_ micros: UInt64) -> Double { Double(micros) / 1000 }
        let empty = histogram.totalCount == 0
        latencyMs = Latency(
            p50: empty ? 0 : ms(histogram.valueAtPercentile(50)),
            p90: empty ? 0 : ms(histogram.valueAtPercentile(90)),
            p99: empty ? 0 : ms(histogram.valueAtPercentile(99)),
            p999: empty ? 0 : ms(histogram.valueAtPercentile(99.9)),
            p9999: empty ? 0 : ms(histogram.valueAtPercentile(99.99)),
            max: empty ? 0 : ms(histogram.max),
            min: empty ? 0 : ms(histogram.min),
            mean: empty ? 0 : histogram.mean / 1000,
            stdev: empty ? 0 : histogram.stdDeviation / 1000
        )
        connectionsOpened = stats.connectionsOpened
        connectionsOpenAtEnd = stats.connectionsOpenAtEnd
    }
}
