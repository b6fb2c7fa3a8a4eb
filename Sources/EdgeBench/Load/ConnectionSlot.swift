import NIOCore

/// One of the run's connections, kept alive for the whole run: it connects, reconnects after a
/// failure (with backoff), and decides when each request goes out.
///
/// Closed loop: as many requests in flight as the connection allows, the next sent when an answer arrives.
/// Open loop: requests are due at fixed intervals from a staggered start; a request that could not go out
/// on time (connection busy or reconnecting) goes out as soon as it can, and its latency still counts from
/// when it was due, which is the coordinated-omission correction wrk2 introduced.
/// Lives on its worker's event loop.
final class ConnectionSlot: TransportDelegate {
    private let worker: LoopWorker  // strong: channels may report after the run stopped; the worker drops its slots at stop
    private let index: Int
    private(set) var transport: (any LoadTransport)?
    private var connecting = false
    private var connectStartedAt: UInt64 = 0
    private var pendingChannel: (any Channel)?
    private var consecutiveFailures = 0
    private var nextIntended: UInt64 = 0
    private var sentOnConnection = 0
    private var sendTimer: Scheduled<Void>?
    private var closingForTimeout = false
    private var firstOutcome: (() -> Void)?

    /// Slot `index` of the run, owned by `worker`.
    init(worker: LoopWorker, index: Int) {
        self.worker = worker
        self.index = index
    }

    // MARK: Lifecycle

    /// Opens the first connection; `outcome` runs once it is ready or has failed.
    func open(outcome: @escaping () -> Void) {
        firstOutcome = outcome
        connect()
    }

    /// Starts sending at `startNanos`.
    func start(at startNanos: UInt64) {
        if let interval = worker.plan.interval {
            nextIntended = startNanos + interval * UInt64(index) / UInt64(worker.plan.connections)
        }
        pump()
    }

    /// Stops: cancels timers and closes the connection; returns requests still in flight.
    func stop() -> Int {
        sendTimer?.cancel()
        sendTimer = nil
        pendingChannel?.close(promise: nil)
        pendingChannel = nil
        guard let transport else { return 0 }
        self.transport = nil
        return transport.abandon()
    }

    /// Closes a connection whose oldest request has waited longer than the timeout, or whose connect or handshake has.
    func checkTimeout(now: UInt64) {
        let limit = worker.plan.timeoutNanos
        if let transport, let oldest = transport.oldestSentAt, now &- oldest >= limit {
            closingForTimeout = true
            transport.close()
        } else if transport == nil, connecting, let channel = pendingChannel, now &- connectStartedAt >= limit {
            closingForTimeout = true
            channel.close(promise: nil)
        }
    }

    private func connect() {
        guard worker.isRunningOrPreparing else { return }
        connecting = true
        closingForTimeout = false
        connectStartedAt = NIODeadline.now().uptimeNanoseconds
        let bound = NIOLoopBound<any TransportDelegate>(self, eventLoop: worker.eventLoop)
        worker.connector.connect(on: worker.eventLoop, delegate: bound).assumeIsolated().whenComplete { result in
            switch result {
            case .success(let channel):
                if self.connecting && self.transport == nil { self.pendingChannel = channel }
            case .failure(let error):
                self.connectFailed(FailureClassifier.classify(error, beforeReady: true))
            }
        }
    }

    private func connectFailed(_ failure: TransportFailure) {
        connecting = false
        pendingChannel = nil
        let kind = closingForTimeout ? TransportFailure(kind: .timeout, message: "connect or TLS handshake timed out") : failure
        closingForTimeout = false
        worker.recordConnectFailure(kind)
        reportFirstOutcome()
        scheduleReconnect()
    }

    private func scheduleReconnect() {
        guard worker.isRunningOrPreparing, worker.plan.reconnects, worker.budgetAllowsMore else { return }
        consecutiveFailures += 1
        let backoffMillis = consecutiveFailures <= 1 ? 0 : min(1000, 10 << min(consecutiveFailures - 2, 7))
        if backoffMillis == 0 {
            connect()
        } else {
            worker.eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(Int64(backoffMillis))) { self.connect() }
        }
    }

    private func reportFirstOutcome() {
        if let outcome = firstOutcome {
            firstOutcome = nil
            outcome()
        }
    }

    // MARK: Sending

    /// Sends what is due, then flushes once.
    func pump() {
        guard worker.isRunning, let transport, transport.canSend else { return }
        var sent = 0
        let now = NIODeadline.now().uptimeNanoseconds
        if let interval = worker.plan.interval {
            while transport.canSend && nextIntended <= now && worker.takeBudget() {
                transport.send(RequestStamp(intended: nextIntended, sent: now))
                nextIntended += interval
                sent += 1
            }
            if nextIntended > now && sendTimer == nil {
                sendTimer = worker.eventLoop.assumeIsolated().scheduleTask(deadline: NIODeadline.uptimeNanoseconds(nextIntended)) {
                    self.sendTimer = nil
                    self.pump()
                }
            }
        } else {
            let limit = worker.plan.requestsPerConnection ?? .max
            while transport.canSend && sentOnConnection < limit && worker.takeBudget() {
                transport.send(RequestStamp(intended: now, sent: now))
                sentOnConnection += 1
                sent += 1
            }
        }
        if sent > 0 { transport.flush() }
    }

    // MARK: TransportDelegate

    func transportReady(_ transport: any LoadTransport, protocol name: String) {
        connecting = false
        pendingChannel = nil
        consecutiveFailures = 0
        sentOnConnection = 0
        self.transport = transport
        worker.recordConnection(protocol: name)
        reportFirstOutcome()
        pump()
    }

    func transportReceived(bytes count: Int) {
        worker.stats.bytesReceived += count
    }

    func transportCompleted(status: Int, stamp: RequestStamp) {
        worker.recordResponse(status: status, stamp: stamp)
    }

    func transportFailed(stamp: RequestStamp, failure: TransportFailure) {
        worker.recordFailures(failure, count: 1)
    }

    func transportReadComplete() {
        pump()
    }

    func transportClosed(outstanding: Int, failure: TransportFailure?) {
        guard transport != nil else {
            // Never became ready: the TLS handshake (or protocol choice) failed.
            connectFailed(failure ?? TransportFailure(kind: .connect, message: "connection closed before it was ready"))
            return
        }
        transport = nil
        if closingForTimeout {
            worker.recordFailures(TransportFailure(kind: .timeout, message: "no response within the timeout"), count: outstanding)
        } else {
            worker.recordFailures(failure ?? TransportFailure(kind: .reset, message: "the server closed the connection with requests in flight"), count: outstanding)
        }
        closingForTimeout = false
        sendTimer?.cancel()
        sendTimer = nil
        if worker.isRunningOrPreparing && worker.plan.reconnects && worker.budgetAllowsMore {
            if failure != nil { consecutiveFailures += 1 }
            connect()
        }
    }
}
