import NIOCore
import NIOSSL
import Synchronization

/// One server of an upstream group, with the state every event loop shares: requests in progress (for least
/// connections and bounded-load hashing), passive health (failures in a window eject it for a cool-down that
/// doubles while it keeps failing) and the verdict of active health checks. Selection reads two atomics and
/// takes no lock; only a failure, a success after an ejection and a health check take the server's lock.
final class UpstreamServer: Sendable {
    let index: Int
    let address: HostPort
    let weight: Int
    let tls: Bool
    /// `host:port`, and `https://` for TLS: the key of pooled connections, which outlive a reload.
    let key: String
    /// Requests in progress on this server, from every loop.
    let active = Atomic<Int>(0)
    /// Exchanges, failures and response-head times, for the metrics.
    let statistics = UpstreamStatistics()
    /// Uptime nanoseconds until which the server is ejected by passive health; 0 when it is not.
    private let ejectedUntil = Atomic<Int64>(0)
    /// Whether active health checks hold the server down.
    private let checkedDown = Atomic<Bool>(false)
    private let health: Mutex<Health>

    private struct Health {
        var failures: [NIODeadline] = []
        /// Ejections in a row without a success between them: the cool-down doubles with each, up to 16 times.
        var ejections = 0
        /// Active checks: consecutive results of the current kind.
        var passes = 0
        var fails = 0
    }

    init(index: Int, configuration: UpstreamGroupConfiguration.Server) {
        self.index = index
        self.address = configuration.address
        self.weight = configuration.weight
        self.tls = configuration.tls
        self.key = (configuration.tls ? "https://" : "") + configuration.address.description
        self.health = Mutex(Health())
    }

    /// Whether requests may go to this server at `now`.
    func isAvailable(at now: NIODeadline) -> Bool {
        if checkedDown.load(ordering: .relaxed) { return false }
        let until = ejectedUntil.load(ordering: .relaxed)
        return until == 0 || Int64(now.uptimeNanoseconds) >= until
    }

    /// Requests in progress relative to the weight, for comparing servers.
    var load: Double { Double(active.load(ordering: .relaxed)) / Double(weight) }

    /// Records a failure (refused, reset, timed out, malformed answer); returns the cool-down when it ejects the
    /// server.
    /// A group's only server is never ejected (as nginx ignores `max_fails` then): there is nowhere else to go,
    /// and a 503 for the whole cool-down would be worse than trying it.
    func recordFailure(at now: NIODeadline, group: UpstreamGroupConfiguration) -> TimeAmount? {
        guard group.maxFailures > 0, group.servers.count > 1 else { return nil }
        return health.withLock { health -> TimeAmount? in
            health.failures.removeAll { now - $0 > group.failureWindow }
            health.failures.append(now)
            guard health.failures.count >= group.maxFailures else { return nil }
            health.failures.removeAll()
            let cooldown = group.cooldown * Int64(1 << min(health.ejections, 4))
            health.ejections += 1
            ejectedUntil.store(Int64((now + cooldown).uptimeNanoseconds), ordering: .relaxed)
            return cooldown
        }
    }

    /// Records a success; returns whether the server was coming back from an ejection.
    func recordSuccess() -> Bool {
        guard ejectedUntil.load(ordering: .relaxed) != 0 else { return false }
        return health.withLock { health in
            let wasEjected = health.ejections > 0
            health.ejections = 0
            health.failures.removeAll()
            ejectedUntil.store(0, ordering: .relaxed)
            return wasEjected
        }
    }

    /// Records an active check's result; returns the new verdict when it changed (`true`: up).
    func recordCheck(passed: Bool, rise: Int, fall: Int) -> Bool? {
        health.withLock { health -> Bool? in
            let down = checkedDown.load(ordering: .relaxed)
            if passed {
                health.passes += 1
                health.fails = 0
                if down, health.passes >= rise {
                    checkedDown.store(false, ordering: .relaxed)
                    return true
                }
            } else {
                health.fails += 1
                health.passes = 0
                if !down, health.fails >= fall {
                    checkedDown.store(true, ordering: .relaxed)
                    return false
                }
            }
            return nil
        }
    }
}

/// An `[[upstream]]` group ready to serve: its servers and the way one is chosen for a request.
final class UpstreamGroup: Sendable {
    let configuration: UpstreamGroupConfiguration
    let servers: [UpstreamServer]
    /// Smooth weighted round robin, laid out once: `schedule[i]` is the server of the i-th request.
    private let schedule: [Int]
    private let turn = Atomic<Int>(0)
    /// Consistent hashing: points on the ring (hash, server), sorted by hash.
    private let ring: [(hash: UInt64, server: Int)]
    /// Ring points per unit of weight: nginx's `hash ... consistent` uses 160. Fewer leave servers' shares of
    /// the keys further apart: in a simulation of this hash with 4 servers on random ports and 600 keys, one
    /// ring in 33 left a server more than 30 % off its quarter with 100 points, one in 150 with 160.
    static let ringPointsPerWeight = 160
    /// Retry budget: requests and retries in the current second (lock-free; a race at the turn of a second
    /// only blurs that second's count).
    private let budgetSecond = Atomic<Int64>(0)
    private let budgetRequests = Atomic<Int>(0)
    private let budgetRetries = Atomic<Int>(0)

    /// The TLS context of the group's `https://` servers (its CAs, verification, client certificate), made once for
    /// every route, pooled connection and health check; `nil` when no server uses TLS.
    let tls: NIOSSLContext?

    var name: String { configuration.name }

    /// What every exchange reads from the configuration, kept apart so that it is read without copying the whole
    /// configuration (and retaining each of its strings and arrays) per request.
    struct ExchangeSettings {
        var timeouts: UpstreamExchangeHandler.Timeouts
        var keepalive: Int
        var idleTimeout: TimeAmount
    }

    let exchangeSettings: ExchangeSettings

    /// - Throws: when the TLS settings cannot be used (an unreadable CA file, certificate or key).
    init(configuration: UpstreamGroupConfiguration) throws {
        self.configuration = configuration
        self.exchangeSettings = ExchangeSettings(
            timeouts: UpstreamExchangeHandler.Timeouts(
                firstByte: configuration.firstByteTimeout, betweenBytes: configuration.betweenBytesTimeout,
                total: configuration.totalTimeout
            ),
            keepalive: configuration.keepalive, idleTimeout: configuration.idleTimeout
        )
        if configuration.servers.contains(where: \.tls) {
            var tls = TLSConfiguration.makeClientConfiguration()
            let settings = configuration.tls
            if let ca = settings.caFile { tls.trustRoots = .file(ca) }
            tls.certificateVerification = settings.verify ? .fullVerification : .none
            if let certificate = settings.certificate, let key = settings.privateKey {
                tls.certificateChain = try NIOSSLCertificate.fromPEMFile(certificate).map { .certificate($0) }
                tls.privateKey = .privateKey(try NIOSSLPrivateKey(file: key, format: .pem))
            }
            tls.applicationProtocols = configuration.wireProtocol == .h2 ? ["h2"] : ["http/1.1"]
            self.tls = try NIOSSLContext(configuration: tls)
        } else {
            self.tls = nil
        }
        self.servers = configuration.servers.enumerated().map { UpstreamServer(index: $0.offset, configuration: $0.element) }
        self.schedule = Self.smoothSchedule(weights: configuration.servers.map(\.weight))
        var ring: [(hash: UInt64, server: Int)] = []
        if case .hash = configuration.balance {
            for (index, server) in configuration.servers.enumerated() {
                for replica in 0..<(Self.ringPointsPerWeight * server.weight) {
                    ring.append((Self.hash("\(server.address)#\(replica)".utf8), index))
                }
            }
            ring.sort { $0.hash < $1.hash }
        }
        self.ring = ring
    }

    /// Adds the TLS client handler for `server` to a new connection's pipeline, when the server is `https://`: SNI
    /// names `tls.server_name` or the server's host, except an IP address (SNI carries host names only).
    func addTLSHandler(for server: UpstreamServer, to pipeline: ChannelPipeline.SynchronousOperations) throws {
        guard server.tls, let tls else { return }
        let name = configuration.tls.serverName ?? server.address.host
        let isAddress = name.utf8.contains(UInt8(ascii: ":"))
            || name.utf8.allSatisfy { $0 == UInt8(ascii: ".") || ($0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9")) }
        try pipeline.addHandler(try NIOSSLClientHandler(context: tls, serverHostname: isAddress ? nil : name))
    }

    /// nginx's smooth weighted round robin, unrolled over one cycle (the sum of the weights): each server's
    /// turns spread evenly (weights 5, 1, 1 give a a b a c a a, not a a a a a b c).
    static func smoothSchedule(weights: [Int]) -> [Int] {
        guard !weights.isEmpty else { return [] }
        let total = weights.reduce(0, +)
        var current = [Int](repeating: 0, count: weights.count)
        var schedule: [Int] = []
        schedule.reserveCapacity(total)
        for _ in 0..<total {
            var best = 0
            for index in weights.indices {
                current[index] += weights[index]
                if current[index] > current[best] { best = index }
            }
            current[best] -= total
            schedule.append(best)
        }
        return schedule
    }

    /// The server for a request, skipping `excluded` (servers already tried) and those not available; `nil` when
    /// none is.
    func choose(key: @autoclosure () -> [UInt8]?, excluded: Set<Int>, now: NIODeadline) -> UpstreamServer? {
        // The common cases without building the candidates array (an allocation per request): one server, and
        // round robin, whose schedule holds every server within one turn of its length.
        if servers.count == 1 {
            let only = servers[0]
            return !excluded.contains(only.index) && only.isAvailable(at: now) ? only : nil
        }
        if case .roundRobin = configuration.balance {
            for _ in 0..<schedule.count {
                let server = servers[schedule[turn.add(1, ordering: .relaxed).oldValue % schedule.count]]
                if !excluded.contains(server.index), server.isAvailable(at: now) { return server }
            }
            return nil
        }
        let candidates = servers.filter { !excluded.contains($0.index) && $0.isAvailable(at: now) }
        guard !candidates.isEmpty else { return nil }
        if candidates.count == 1 { return candidates[0] }
        switch configuration.balance {
        case .roundRobin:
            return candidates[0]  // answered above
        case .leastConnections:
            let start = turn.add(1, ordering: .relaxed).oldValue
            var best = candidates[start % candidates.count]
            for offset in 1..<candidates.count {
                let server = candidates[(start + offset) % candidates.count]
                if server.load < best.load { best = server }
            }
            return best
        case .randomTwo:
            let first = Int.random(in: 0..<candidates.count)
            var second = Int.random(in: 0..<(candidates.count - 1))
            if second >= first { second += 1 }
            let (a, b) = (candidates[first], candidates[second])
            return b.load < a.load ? b : a
        case .hash:
            guard let key = key(), !ring.isEmpty else { return candidates[0] }
            return boundedLoadOwner(of: Self.hash(key), candidates: candidates)
        }
    }

    /// The first server clockwise from `point` that is a candidate and whose load is within 1.25 times the
    /// average (consistent hashing with bounded loads, Mirrokni et al.): a key keeps its server unless that server
    /// is overloaded or down, and adding a server takes over about 1/N of the keys.
    private func boundedLoadOwner(of point: UInt64, candidates: [UpstreamServer]) -> UpstreamServer {
        let allowed = Set(candidates.map(\.index))
        let total = candidates.reduce(0) { $0 + $1.active.load(ordering: .relaxed) } + 1
        let limit = Int((Double(total) * 1.25 / Double(candidates.count)).rounded(.up))
        var low = 0, high = ring.count
        while low < high {
            let middle = (low + high) / 2
            if ring[middle].hash < point { low = middle + 1 } else { high = middle }
        }
        var fallback: UpstreamServer?
        for step in 0..<ring.count {
            let index = ring[(low + step) % ring.count].server
            guard allowed.contains(index) else { continue }
            let server = servers[index]
            if fallback == nil { fallback = server }
            if server.active.load(ordering: .relaxed) < limit { return server }
        }
        return fallback ?? candidates[0]
    }

    /// 64-bit FNV-1a, then a final mix (splitmix64) so that nearby keys land far apart on the ring.
    static func hash<Bytes: Sequence<UInt8>>(_ bytes: Bytes) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in bytes {
            hash ^= UInt64(byte)
            hash = hash &* 0x100_0000_01b3
        }
        hash ^= hash >> 30
        hash = hash &* 0xbf58_476d_1ce4_e5b9
        hash ^= hash >> 27
        hash = hash &* 0x94d0_49bb_1331_11eb
        return hash ^ (hash >> 31)
    }

    /// Counts a request against the retry budget.
    func countRequest(now: NIODeadline) {
        roll(now)
        budgetRequests.add(1, ordering: .relaxed)
    }

    /// Whether one more retry fits the budget: 10 a second, plus `retry_budget_percent` of the requests.
    func mayRetry(now: NIODeadline) -> Bool {
        roll(now)
        let allowed = 10 + budgetRequests.load(ordering: .relaxed) * configuration.retryBudgetPercent / 100
        guard budgetRetries.add(1, ordering: .relaxed).oldValue < allowed else {
            budgetRetries.subtract(1, ordering: .relaxed)
            return false
        }
        return true
    }

    private func roll(_ now: NIODeadline) {
        let second = Int64(now.uptimeNanoseconds / 1_000_000_000)
        let current = budgetSecond.load(ordering: .relaxed)
        if current != second, budgetSecond.compareExchange(expected: current, desired: second, ordering: .relaxed).exchanged {
            budgetRequests.store(0, ordering: .relaxed)
            budgetRetries.store(0, ordering: .relaxed)
        }
    }
}
