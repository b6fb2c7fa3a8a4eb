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
    let connectionsPerClient: PerClientConnectionLimit

    init(configuration: EdgeConfiguration, group: any EventLoopGroup, state: ServerState) throws(RouteSetupError) {
        self.configuration = configuration
        self.router = try Router(routes: configuration.routes, defaultTTL: configuration.cache.ttl)
        self.cache = SharedResponseCache(configuration: configuration.cache)
        self.state = state
        self.connectionsPerClient = PerClientConnectionLimit(limit: configuration.limits.maxConnectionsPerIP)
        self.loops = LoopStates(group: group, localCacheCapacity: min(configuration.cache.maxEntries, 1024))
    }
}
