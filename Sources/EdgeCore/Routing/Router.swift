public import NIOCore

/// What a matched route does.
public enum RouteAction: Sendable {
    /// Ask the demo backend, through the cache unless `cacheTTL` is zero.
    case demo(DemoBackend, cacheTTL: TimeAmount)
    /// Answer with a fixed response.
    case respond(EdgeResponse)
    /// Serve files from a directory.
    case `static`(StaticFiles)
}

/// A route ready to serve: its prefix, policies and action.
///
/// A class, so that handing the matched route along the request path is one reference, not a copy of
/// every field.
public final class Route: Sendable {
    /// Path prefix.
    public let prefix: String
    /// What to do for matching requests.
    public let action: RouteAction
    /// Per-client rate limit, checked first.
    public let rateLimiter: RateLimiter?
    /// Basic authentication, checked after the rate limit.
    public let authenticator: BasicAuthenticator?

    /// Creates a route.
    public init(prefix: String, action: RouteAction, rateLimiter: RateLimiter?, authenticator: BasicAuthenticator?) {
        self.prefix = prefix
        self.action = action
        self.rateLimiter = rateLimiter
        self.authenticator = authenticator
    }
}

/// A route whose policies could not be set up (e.g. an unreadable htpasswd file).
public struct RouteSetupError: Error, CustomStringConvertible {
    /// What went wrong, naming the config key.
    public var description: String
}

/// Longest-prefix routing over the configured routes, as nginx's prefix `location`s.
public struct Router: Sendable {
    private let routes: [Route]

    /// Builds the routes of a configuration; `defaultTTL` applies to cached routes without their own TTL.
    /// - Throws: ``RouteSetupError`` when a route's htpasswd file or static root is missing or invalid.
    public init(routes configurations: [RouteConfiguration], defaultTTL: TimeAmount) throws(RouteSetupError) {
        var built: [Route] = []
        for (index, configuration) in configurations.enumerated() {
            let action: RouteAction
            switch configuration.handler {
            case .demo(let demo):
                action = .demo(DemoBackend(configuration: demo), cacheTTL: configuration.cacheTTL ?? defaultTTL)
            case .respond(let fixed):
                var response = EdgeResponse.text(.init(statusCode: fixed.status), fixed.body)
                response.headers.replaceOrAdd(name: "content-type", value: fixed.contentType)
                action = .respond(response)
            case .static(let settings):
                do {
                    action = .static(try StaticFiles(configuration: settings))
                } catch {
                    throw RouteSetupError(description: "route[\(index)].static: \(error.description)")
                }
            }
            let limiter = configuration.rateLimit.map { RateLimiter(perSecond: $0.perSecond, burst: $0.burst) }
            var authenticator: BasicAuthenticator?
            if let auth = configuration.basicAuth {
                do {
                    authenticator = try BasicAuthenticator(realm: auth.realm, path: auth.htpasswd)
                } catch {
                    throw RouteSetupError(description: "route[\(index)].basic_auth.htpasswd: \(error)")
                }
            }
            built.append(Route(prefix: configuration.path, action: action, rateLimiter: limiter, authenticator: authenticator))
        }
        routes = built.sorted { $0.prefix.utf8.count > $1.prefix.utf8.count }
    }

    /// Every route's authenticator, for reloading their files.
    public var authenticators: [BasicAuthenticator] { routes.compactMap(\.authenticator) }

    /// The route with the longest prefix of `path`, or `nil`. Prefixes are compared byte for byte, as nginx
    /// compares `location`s (and without the cost of comparing `Character`s).
    public func route(for path: Substring) -> Route? {
        routes.first { path.hasBytePrefix($0.prefix) }
    }
}
