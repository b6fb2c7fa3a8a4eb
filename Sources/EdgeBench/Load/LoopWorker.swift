import NIOCore

/// The connections of one event loop and the statistics they record. Everything here runs on that loop,
/// so recording a response costs no lock and no atomic beyond the progress counter.
final class LoopWorker {
    private enum Phase {
        case preparing
        case running
        case stopped
    }

    /// The loop this worker and its connections live on.
    let eventLoop: any EventLoop
    /// How connections are opened.
    let connector: Connector
    /// The per-connection settings.
    let plan: LoadPlan
    /// Statistics recorded so far on this loop.
    var stats = LoadStats()
    /// Totals for the progress line (read by the runner from any thread).
    let progress: ProgressCounters

    private let budget: RequestBudget?
    private var slots: [ConnectionSlot] = []
    private var phase = Phase.preparing
    private var sweeper: Scheduled<Void>?

    /// A worker for `eventLoop`; `budget` is shared by all workers of a `--requests` run.
    init(eventLoop: any EventLoop, connector: Connector, plan: LoadPlan, budget: RequestBudget?, progress: ProgressCounters) {
        self.eventLoop = eventLoop
        self.connector = connector
        self.plan = plan
        self.budget = budget
        self.progress = progress
    }

    /// Whether requests may be sent.
    var isRunning: Bool { phase == .running }
    /// Whether connections should be (re)opened.
    var isRunningOrPreparing: Bool { phase != .stopped }
    /// Whether a `--requests` budget (if any) has units left.
    var budgetAllowsMore: Bool { budget?.hasRemaining ?? true }

    /// Opens `slotIndices.count` connections; the future completes when each is ready or has failed once.
    func prepare(slotIndices: [Int]) -> EventLoopFuture<Void> {
        let promise = eventLoop.makePromise(of: Void.self)
        startSweeping()
        var waiting = slotIndices.count
        if waiting == 0 { promise.succeed() }
        for index in slotIndices {
            let slot = ConnectionSlot(worker: self, index: index)
            slots.append(slot)
            slot.open {
                waiting -= 1
                if waiting == 0 { promise.succeed() }
            }
        }
        return promise.futureResult
    }

    /// Starts sending at `startNanos` (`NIODeadline` nanoseconds).
    func start(at startNanos: UInt64) {
        phase = .running
        for slot in slots { slot.start(at: startNanos) }
    }

    /// Checks every connection for an overdue request, connect or handshake, a few times per timeout.
    private func startSweeping() {
        guard phase != .stopped else { return }
        let sweepEvery = TimeAmount.nanoseconds(Int64(max(1_000_000, min(plan.timeoutNanos / 4, 100_000_000))))
        sweeper = eventLoop.assumeIsolated().scheduleTask(in: sweepEvery) {
            let now = NIODeadline.now().uptimeNanoseconds
            for slot in self.slots { slot.checkTimeout(now: now) }
            self.startSweeping()
        }
    }

    /// Stops sending, closes every connection and returns this loop's statistics.
    func stop() -> LoadStats {
        phase = .stopped
        sweeper?.cancel()
        sweeper = nil
        var open = 0
        for slot in slots {
            if slot.transport != nil { open += 1 }
            let abandoned = slot.stop()
            stats.unfinished += abandoned
            budget?.finish(abandoned)
        }
        stats.connectionsOpenAtEnd = open
        slots.removeAll()
        return stats
    }

    // MARK: Recording

    /// Takes one request from the `--requests` budget, if there is one.
    func takeBudget() -> Bool {
        budget?.take() ?? true
    }

    /// Records a complete response to the request sent at `stamp`.
    func recordResponse(status: Int, stamp: RequestStamp) {
        let now = NIODeadline.now().uptimeNanoseconds
        let micros = max(1, (now &- stamp.intended) / 1000)
        stats.latency.record(min(micros, LoadStats.highestTrackableMicroseconds))
        stats.responses += 1
        stats.statusCounts[min(max(status, 0), 599)] += 1
        if !(200..<300).contains(status) {
            stats.recordError(TransportFailure(kind: .status, message: "status \(status)"))
            progress.addErrors(1)
        }
        progress.addResponse()
        budget?.finish(1)
    }

    /// Records `count` requests that failed with `failure`.
    func recordFailures(_ failure: TransportFailure, count: Int) {
        guard count > 0 else { return }
        stats.recordError(failure, count: count)
        progress.addErrors(count)
        budget?.finish(count)
    }

    /// Records a failed connection attempt (it takes one unit of a `--requests` budget, so such a run still ends).
    func recordConnectFailure(_ failure: TransportFailure) {
        stats.recordError(failure)
        progress.addErrors(1)
        if let budget, budget.take() { budget.finish(1) }
    }

    /// Records an established connection speaking `protocol`.
    func recordConnection(protocol name: String) {
        stats.connectionsOpened += 1
        stats.protocols[name, default: 0] += 1
    }
}
