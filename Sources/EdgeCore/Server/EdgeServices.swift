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

    init(configuration: EdgeConfiguration, group: any EventLoopGroup, state: ServerState) {
        self.configuration = configuration
        self.router = Router(routes: configuration.routes, defaultTTL: configuration.cache.ttl)
        self.cache = SharedResponseCache(configuration: configuration.cache)
        self.state = state
        self.loops = LoopStates(group: group, localCacheCapacity: min(configuration.cache.maxEntries, 1024))
    }
}
