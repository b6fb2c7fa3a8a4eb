public import NIOCore

/// What a matched route does.
public enum RouteAction: Sendable {
    /// Ask the demo backend, through the cache unless `cacheTTL` is zero.
    case demo(DemoBackend, cacheTTL: TimeAmount)
    /// Answer with a fixed response.
    case respond(EdgeResponse)
}

/// A route ready to serve: its prefix and action.
public struct Route: Sendable {
    /// Path prefix.
    public let prefix: String
    /// What to do for matching requests.
    public let action: RouteAction
}

/// Longest-prefix routing over the configured routes, as nginx's prefix `location`s.
public struct Router: Sendable {
    private let routes: [Route]

    /// Builds the routes of a configuration; `defaultTTL` applies to cached routes without their own TTL.
    public init(routes configurations: [RouteConfiguration], defaultTTL: TimeAmount) {
        routes = configurations
            .map { configuration in
                let action: RouteAction
                switch configuration.handler {
                case .demo(let demo):
                    action = .demo(DemoBackend(configuration: demo), cacheTTL: configuration.cacheTTL ?? defaultTTL)
                case .respond(let fixed):
                    var response = EdgeResponse.text(.init(statusCode: fixed.status), fixed.body)
                    response.headers.replaceOrAdd(name: "content-type", value: fixed.contentType)
                    action = .respond(response)
                }
                return Route(prefix: configuration.path, action: action)
            }
            .sorted { $0.prefix.utf8.count > $1.prefix.utf8.count }
    }

    /// The route with the longest prefix of `path`, or `nil`.
    public func route(for path: Substring) -> Route? {
        routes.first { path.hasPrefix($0.prefix) }
    }
}
