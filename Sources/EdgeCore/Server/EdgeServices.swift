import NIOCore

/// Everything a connection needs, shared read-only by all connections of a server.
final class EdgeServices: Sendable {
    /// The configuration the server runs with.
    let configuration: EdgeConfiguration
    /// Route table.
    let router: Router
    /// Shared response cache.
    let cache: SharedResponseCache
    /// Counters and the draining flag.
    let state: ServerState
    /// Per-event-loop state.
    let loops: LoopStates
    /// Open connections per client address.
    let connectionsPerClient: PerClientLimit
    /// Requests waiting per client address (`limits.max_in_flight_per_client`).
    let inFlightPerClient: PerClientLimit
    /// The threads that check passwords, shared by every route's Basic auth.
    let passwordChecks: PasswordCheckPool
    /// How many proxied responses are compressed at once (`limits.max_compressing_responses`); kept across reloads.
    let compressionBudget: CompressionBudget
    /// The ACME challenge answers (HTTP-01 tokens), when ACME is on; lives as long as the server.
    let acmeChallenges: ACMEChallengeStore?
    /// 0 at start, one more at every configuration reload: connections record the generation they were
    /// accepted under, so that a reload retires exactly the older ones.
    let generation: Int
    /// The metrics' route labels, the access log and the start time, for the life of the process.
    let observability: Observability

    init(
        configuration: EdgeConfiguration, group: any EventLoopGroup, state: ServerState,
        observability: Observability = Observability.standalone
    ) throws(RouteSetupError) {
        self.observability = observability
        self.configuration = configuration
        self.acmeChallenges = configuration.acme == nil ? nil : ACMEChallengeStore()
        let passwordChecks = PasswordCheckPool(
            threads: configuration.limits.passwordCheckThreads, queue: configuration.limits.passwordCheckQueue
        )
        self.passwordChecks = passwordChecks
        let compressionBudget = CompressionBudget(limit: configuration.limits.maxCompressingResponses)
        self.compressionBudget = compressionBudget
        do {
            self.router = try Router(
                routes: configuration.routes, sites: configuration.sites, unknownHost: configuration.unknownHost, defaultTTL: configuration.cache.ttl, passwordChecks: passwordChecks,
                upstreams: configuration.upstreams, serverName: configuration.serverName, trustedProxies: configuration.trustedProxies,
                maxEntryBytes: configuration.cache.maxEntryBytes, compressionBudget: compressionBudget, routeLabels: observability.routeLabels
            )
        } catch {
            Task { await passwordChecks.shutdown() }
            throw error
        }
        self.cache = SharedResponseCache(configuration: configuration.cache)
        self.state = state
        self.connectionsPerClient = PerClientLimit(limit: configuration.limits.maxConnectionsPerIP)
        self.inFlightPerClient = PerClientLimit(limit: configuration.limits.effectiveMaxInFlightPerClient)
        self.loops = LoopStates(
            group: group, localCacheCapacity: min(configuration.cache.maxEntries, 1024), observability: observability
        )
        self.generation = 0
    }

    /// The services of a reloaded `configuration`: a new route table (with its policies, responders and
    /// htpasswd files); the counters, the cache, the loops' state, the per-client counts and the password-check
    /// threads of `previous`, which live as long as the server.
    init(reloading configuration: EdgeConfiguration, after previous: EdgeServices) throws(RouteSetupError) {
        self.configuration = configuration
        self.router = try Router(
            routes: configuration.routes, sites: configuration.sites, unknownHost: configuration.unknownHost,
            defaultTTL: configuration.cache.ttl, passwordChecks: previous.passwordChecks,
            upstreams: configuration.upstreams, serverName: configuration.serverName, trustedProxies: configuration.trustedProxies,
            maxEntryBytes: configuration.cache.maxEntryBytes, generation: previous.generation + 1, previousHubs: previous.router.hubs,
            compressionBudget: previous.compressionBudget, routeLabels: previous.observability.routeLabels
        )
        previous.compressionBudget.setLimit(configuration.limits.maxCompressingResponses)
        self.compressionBudget = previous.compressionBudget
        self.observability = previous.observability
        self.cache = previous.cache
        self.state = previous.state
        self.connectionsPerClient = previous.connectionsPerClient
        self.inFlightPerClient = previous.inFlightPerClient
        self.passwordChecks = previous.passwordChecks
        self.acmeChallenges = previous.acmeChallenges
        self.loops = previous.loops
        self.generation = previous.generation + 1
    }
}
