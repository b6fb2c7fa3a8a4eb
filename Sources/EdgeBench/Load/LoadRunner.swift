import NIOCore
import NIOPosix
import NIOSSL

/// A snapshot for the live progress line.
public struct ProgressSample: Sendable {
    /// Seconds since the load started.
    public var elapsedSeconds: Double
    /// Responses so far.
    public var responses: Int
    /// Failures so far (including non-2xx responses).
    public var errors: Int
    /// Responses per second since the previous sample.
    public var currentRate: Double
}

/// Runs one benchmark: checks the target with a single request, opens every connection, applies the
/// load for the duration (or request count) and returns the merged statistics of all event loops.
public struct LoadRunner: Sendable {
    /// The run's settings.
    public let configuration: BenchConfiguration

    /// A runner for `configuration`.
    public init(configuration: BenchConfiguration) {
        self.configuration = configuration
    }

    /// Runs the benchmark. `onProgress` is called about once a second while the load runs.
    /// Throws ``BenchError`` when the run cannot start (bad settings, unreachable server, TLS failure).
    public func run(onProgress: (@Sendable (ProgressSample) -> Void)? = nil) async throws -> BenchReport {
        try configuration.validate()
        try FileDescriptorBudget.ensure(connections: configuration.connections)
        let address = try resolveAddress()
        let connector = try makeConnector(address: address, choice: configuration.protocolChoice)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: configuration.threads)
        do {
            let report = try await run(group: group, connector: connector, onProgress: onProgress)
            try? await group.shutdownGracefully()
            return report
        } catch {
            try? await group.shutdownGracefully()
            throw error
        }
    }

    private func run(group: MultiThreadedEventLoopGroup, connector: Connector, onProgress: (@Sendable (ProgressSample) -> Void)?) async throws -> BenchReport {
        let negotiated = try await preflight(group: group, connector: connector)
        // Every connection speaks what the first one negotiated.
        var runConnector = connector
        if configuration.protocolChoice == .negotiate && configuration.target.isTLS {
            runConnector = try makeConnector(address: connector.address, choice: negotiated == "h2" ? .http2 : .http1)
        }

        let budget = configuration.requestLimit.map(RequestBudget.init(limit:))
        let plan = LoadPlan(configuration: configuration)
        let loops = Array(group.makeIterator())
        let progress = loops.map { _ in ProgressCounters() }
        let workers = try await makeWorkers(loops: loops, connector: runConnector, plan: plan, budget: budget, progress: progress)
        var assignments = Array(repeating: [Int](), count: workers.count)
        for index in 0..<configuration.connections { assignments[index % workers.count].append(index) }
        for (worker, indices) in zip(workers, assignments) {
            try await worker.eventLoop.flatSubmit { worker.value.prepare(slotIndices: indices) }.get()
        }

        let startNanos = NIODeadline.now().uptimeNanoseconds
        for worker in workers { worker.eventLoop.execute { worker.value.start(at: startNanos) } }
        let endNanos = await waitForEnd(startNanos: startNanos, progress: progress, budget: budget, onProgress: onProgress)

        var stats = LoadStats()
        for worker in workers {
            stats.merge(try await worker.eventLoop.submit { worker.value.stop() }.get())
        }
        let duration = Double(max(1, (budget?.completedAt ?? endNanos) &- startNanos)) / 1e9
        return BenchReport(configuration: configuration, stats: stats, durationSeconds: duration)
    }

    /// One connection, one request: fails fast with a clear message when the server cannot be reached,
    /// the handshake fails or the answer is not HTTP; returns the protocol the server chose.
    private func preflight(group: MultiThreadedEventLoopGroup, connector: Connector) async throws -> String {
        var probeConfiguration = configuration
        probeConfiguration.connections = 1
        probeConfiguration.rate = nil
        probeConfiguration.idle = false
        let budget = RequestBudget(limit: 1)
        let plan = LoadPlan(configuration: probeConfiguration, reconnects: false)
        let worker = try await makeWorkers(loops: [group.next()], connector: connector, plan: plan, budget: budget, progress: [ProgressCounters()])[0]
        try await worker.eventLoop.flatSubmit { worker.value.prepare(slotIndices: [0]) }.get()
        worker.eventLoop.execute { worker.value.start(at: NIODeadline.now().uptimeNanoseconds) }
        let waitLimit = ContinuousClock.now + configuration.timeout + .seconds(1)
        while budget.completedAt == nil && ContinuousClock.now < waitLimit {
            try? await Task.sleep(for: .milliseconds(5))
        }
        let stats = try await worker.eventLoop.submit { worker.value.stop() }.get()
        let where_ = "\(configuration.target.host):\(configuration.target.port)"
        // A slow first answer is not a reason to refuse the run: the run itself counts timeouts.
        let onlyTimedOut = stats.errors[ErrorKind.timeout.rawValue] == 1 && stats.failedRequests == 1 && stats.connectionsOpened == 1
        guard stats.responses == 1 || onlyTimedOut else {
            let message = ErrorKind.allCases.lazy.compactMap { stats.firstErrorMessages[$0.rawValue] }.first ?? "no response within \(configuration.timeout)"
            let firstKind = ErrorKind.allCases.first { stats.errors[$0.rawValue] > 0 }
            switch firstKind {
            case .connect: throw BenchError.preflight("cannot connect to \(where_): \(message)")
            case .tls:
                let hint = message.contains("CERTIFICATE_VERIFY_FAILED") ? " (for a self-signed certificate, add --insecure)" : ""
                throw BenchError.preflight("TLS handshake with \(where_) failed: \(message)\(hint)")
            default: throw BenchError.preflight("the first request to \(configuration.target) failed: \(message)")
            }
        }
        return stats.protocols.keys.first ?? "http/1.1"
    }

    /// One worker per loop; `progress[i]` is the counters of the worker on `loops[i]`.
    private func makeWorkers(
        loops: [any EventLoop], connector: Connector, plan: LoadPlan, budget: RequestBudget?, progress counters: [ProgressCounters]
    ) async throws -> [NIOLoopBound<LoopWorker>] {
        var workers: [NIOLoopBound<LoopWorker>] = []
        for (loop, progress) in zip(loops, counters) {
            workers.append(try await loop.submit {
                NIOLoopBound(LoopWorker(eventLoop: loop, connector: connector, plan: plan, budget: budget, progress: progress), eventLoop: loop)
            }.get())
        }
        return workers
    }

    /// Sleeps until the duration has passed or the request budget is spent, reporting progress; returns the end time.
    private func waitForEnd(startNanos: UInt64, progress progressCounters: [ProgressCounters], budget: RequestBudget?, onProgress: (@Sendable (ProgressSample) -> Void)?) async -> UInt64 {
        let durationNanos = configuration.duration.map { UInt64($0.inNanoseconds) }
        var lastSampleNanos = startNanos
        var lastResponses = 0
        while true {
            let now = NIODeadline.now().uptimeNanoseconds
            if budget?.completedAt != nil { return now }
            if let durationNanos, now &- startNanos >= durationNanos { return now }
            if let onProgress, now &- lastSampleNanos >= 1_000_000_000 {
                let totals = progressCounters.reduce((responses: 0, errors: 0)) { ($0.responses + $1.snapshot.responses, $0.errors + $1.snapshot.errors) }
                let rate = Double(totals.responses - lastResponses) / (Double(now &- lastSampleNanos) / 1e9)
                onProgress(ProgressSample(elapsedSeconds: Double(now &- startNanos) / 1e9, responses: totals.responses, errors: totals.errors, currentRate: rate))
                lastSampleNanos = now
                lastResponses = totals.responses
            }
            var sleepNanos: UInt64 = budget == nil ? 100_000_000 : 5_000_000
            if let durationNanos { sleepNanos = min(sleepNanos, durationNanos - min(durationNanos, now &- startNanos)) }
            try? await Task.sleep(nanoseconds: max(sleepNanos, 1_000_000))
        }
    }

    private func resolveAddress() throws -> SocketAddress {
        let target = configuration.target
        do {
            return try SocketAddress.makeAddressResolvingHost(target.host, port: target.port)
        } catch {
            throw BenchError.resolve("cannot resolve host '\(target.host)': \(error)")
        }
    }

    private func makeConnector(address: SocketAddress, choice: ProtocolChoice) throws -> Connector {
        let target = configuration.target
        var tls: NIOSSLContext?
        if target.isTLS {
            var tlsConfiguration = TLSConfiguration.makeClientConfiguration()
            if configuration.insecure { tlsConfiguration.certificateVerification = .none }
            switch choice {
            case .negotiate: tlsConfiguration.applicationProtocols = ["h2", "http/1.1"]
            case .http1: tlsConfiguration.applicationProtocols = ["http/1.1"]
            case .http2: tlsConfiguration.applicationProtocols = ["h2"]
            }
            switch configuration.tlsVersion {
            case .tls12?:
                tlsConfiguration.minimumTLSVersion = .tlsv12
                tlsConfiguration.maximumTLSVersion = .tlsv12
            case .tls13?:
                tlsConfiguration.minimumTLSVersion = .tlsv13
            case nil:
                tlsConfiguration.minimumTLSVersion = .tlsv12
            }
            do {
                tls = try NIOSSLContext(configuration: tlsConfiguration)
            } catch {
                throw BenchError.tlsSetup("cannot set up TLS: \(error)")
            }
        }
        return Connector(
            address: address, tls: tls, serverHostname: target.hostIsIPAddress ? nil : target.host, choice: choice,
            template: RequestTemplate(configuration: configuration), pipelineDepth: configuration.pipelineDepth,
            streams: configuration.streamsPerConnection, connectTimeout: .nanoseconds(configuration.timeout.inNanoseconds)
        )
    }
}
