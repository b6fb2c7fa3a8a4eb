import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix

/// What the admin listener asks of the running server (``EdgeServer`` answers).
protocol AdminBackend: Sendable {
    /// Every loop's counters added up, with the server-wide figures.
    func report() async -> ServerReport
    /// The running configuration as JSON, secrets redacted.
    func configurationJSON() -> String
    /// Reloads the configuration as SIGHUP does.
    func reload() async -> ReloadOutcome
    /// The swift-prometheus registry's text (metrics recorded through swift-metrics).
    func registryText() -> String
    /// Removes (or, `soft`, marks stale) the shared cache's entries tagged `tag` (`Surrogate-Key`), or those of
    /// `host` whose target starts with `prefix`; returns how many.
    func purge(tag: String?, host: String?, prefix: String?, soft: Bool) -> Int
}

/// The admin listener: its own socket and one event-loop thread of its own, so that it answers while the serving
/// loops are saturated, and so that nothing of it is reachable on the public listeners.
///
/// - `GET /` — the status page (HTML, refreshing itself from `/status`);
/// - `GET /metrics` — Prometheus text;
/// - `GET /status` — JSON: version, uptime, configuration generation, connections by protocol, requests, cache,
///   upstream health, recent 5xx answers, process figures;
/// - `GET /config` — the running configuration as JSON, secrets redacted;
/// - `POST /reload` — reloads the configuration as SIGHUP does and says what happened;
/// - `POST /purge?tag=T` or `POST /purge?host=H&prefix=/P` (`&soft=1`: mark stale) — purges the shared cache by
///   `Surrogate-Key` tag or by URL prefix, for every route (a single URL is purged with `PURGE` on its route).
///
/// Requests from outside `admin.allow` get 403; with `admin.token` set, a request without
/// `Authorization: Bearer <token>` gets 401.
final class AdminServer: Sendable {
    private let configuration: AdminConfiguration
    private let backend: any AdminBackend
    private let group: MultiThreadedEventLoopGroup
    private let logger: Logger

    init(configuration: AdminConfiguration, backend: any AdminBackend, logger: Logger) {
        self.configuration = configuration
        self.backend = backend
        self.group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        self.logger = logger
    }

    /// Binds the admin listener; returns the address bound (its real port when 0 was asked).
    func start() async throws -> any Channel {
        let configuration = self.configuration
        let backend = self.backend
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    // An admin connection idle for 30 s (or trickling a request) is closed.
                    try sync.addHandler(IdleStateHandler(readTimeout: .seconds(30)))
                    try sync.configureHTTPServerPipeline(withErrorHandling: true)
                    try sync.addHandler(AdminHandler(configuration: configuration, backend: backend))
                }
            }
        do {
            return try await bootstrap.bind(host: configuration.address.host, port: configuration.address.port).get()
        } catch {
            try? await group.shutdownGracefully()
            throw ServerStartError(message: "admin.address: cannot listen on \(configuration.address): \(error)")
        }
    }

    func stop(_ channel: (any Channel)?) async {
        try? await channel?.close()
        try? await group.shutdownGracefully()
    }
}

/// One admin connection: reads a request (a body of at most 64 KiB, which no endpoint needs), checks the client
/// and the token, and answers. The work that needs the serving loops runs as a task; the answer is written back
/// on this connection's loop.
final class AdminHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private static let maxBodyBytes = 64 * 1024

    private let configuration: AdminConfiguration
    private let backend: any AdminBackend
    private var head: HTTPRequestHead?
    private var bodyBytes = 0

    init(configuration: AdminConfiguration, backend: any AdminBackend) {
        self.configuration = configuration
        self.backend = backend
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent {
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
            bodyBytes = 0
        case .body(let chunk):
            bodyBytes += chunk.readableBytes
        case .end:
            guard let head else { return }
            self.head = nil
            handle(head, context: context)
        }
    }

    private func handle(_ head: HTTPRequestHead, context: ChannelHandlerContext) {
        let client = ClientAddress(context.channel.remoteAddress)
        guard configuration.allow.contains(where: { $0.contains(client) }) else {
            return respond(.forbidden, "not allowed from \(client)\n", for: head, context: context)
        }
        if let token = configuration.token, !Self.bearer(head.headers, matches: token) {
            var headers = HTTPHeaders()
            headers.add(name: "www-authenticate", value: "Bearer realm=\"edge admin\"")
            return respond(.unauthorized, "a bearer token is required\n", extra: headers, for: head, context: context)
        }
        guard bodyBytes <= Self.maxBodyBytes else {
            return respond(.payloadTooLarge, "request body too large\n", for: head, context: context)
        }
        let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? "/"
        let backend = self.backend
        switch (head.method, path) {
        case (.GET, "/"), (.HEAD, "/"):
            respond(.ok, StatusPage.html, type: "text/html; charset=utf-8", for: head, context: context)
        case (.GET, "/metrics"), (.HEAD, "/metrics"):
            answerLater(head, context: context, type: "text/plain; version=0.0.4; charset=utf-8") {
                (.ok, await backend.report().prometheusText() + backend.registryText())
            }
        case (.GET, "/status"), (.HEAD, "/status"):
            answerLater(head, context: context, type: "application/json") { (.ok, await backend.report().statusJSON()) }
        case (.GET, "/config"), (.HEAD, "/config"):
            respond(.ok, backend.configurationJSON(), type: "application/json", for: head, context: context)
        case (.POST, "/purge"):
            let query = Self.query(head.uri)
            let tag = query["tag"], host = query["host"], prefix = query["prefix"]
            guard (tag != nil) != (host != nil || prefix != nil), tag != nil || (host != nil && prefix != nil) else {
                return respond(.badRequest, "give tag=TAG, or host=HOST and prefix=/PATH\n", for: head, context: context)
            }
            let count = backend.purge(tag: tag, host: host, prefix: prefix, soft: query["soft"] == "1")
            respond(.ok, "{\"purged\": \(count), \"soft\": \(query["soft"] == "1")}\n", type: "application/json", for: head, context: context)
        case (.POST, "/reload"):
            answerLater(head, context: context, type: "application/json") {
                let outcome = await backend.reload()
                return (outcome.status, outcome.json)
            }
        case (_, "/"), (_, "/metrics"), (_, "/status"), (_, "/config"), (_, "/reload"), (_, "/purge"):
            var headers = HTTPHeaders()
            headers.add(name: "allow", value: path == "/reload" || path == "/purge" ? "POST" : "GET, HEAD")
            respond(.methodNotAllowed, "method not allowed\n", extra: headers, for: head, context: context)
        default:
            respond(
                .notFound, "not found: the admin listener serves /, /metrics, /status, /config, POST /reload and POST /purge\n",
                for: head, context: context
            )
        }
    }

    /// Runs `work` off the loop and writes its text as the answer when it is done.
    private func answerLater(
        _ head: HTTPRequestHead, context: ChannelHandlerContext, type: String,
        _ work: @escaping @Sendable () async -> (HTTPResponseStatus, String)
    ) {
        let loop = context.eventLoop
        let bound = NIOLoopBound((self, context), eventLoop: loop)
        Task {
            let (status, text) = await work()
            loop.execute {
                let (handler, context) = bound.value
                handler.respond(status, text, type: type, for: head, context: context)
            }
        }
    }

    private func respond(
        _ status: HTTPResponseStatus, _ text: String, type: String = "text/plain; charset=utf-8", extra: HTTPHeaders = [:],
        for request: HTTPRequestHead, context: ChannelHandlerContext
    ) {
        guard context.channel.isActive else { return }
        var headers = extra
        headers.add(name: "content-type", value: type)
        headers.add(name: "content-length", value: String(text.utf8.count))
        headers.add(name: "cache-control", value: "no-store")
        if !request.isKeepAlive { headers.add(name: "connection", value: "close") }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: request.version, status: status, headers: headers))), promise: nil)
        if request.method != .HEAD {
            context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: text)))), promise: nil)
        }
        let done = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        if !request.isKeepAlive { done.assumeIsolated().whenComplete { _ in context.close(promise: nil) } }
    }

    /// The query parameters of `uri`, percent-decoded (the last of a repeated name wins).
    static func query(_ uri: String) -> [String: String] {
        guard let mark = uri.firstIndex(of: "?") else { return [:] }
        var result: [String: String] = [:]
        for pair in uri[uri.index(after: mark)...].split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let name = String(parts[0]).removingPercentEncoding ?? String(parts[0])
            let raw = parts.count > 1 ? String(parts[1]).replacingOccurrences(of: "+", with: " ") : ""
            result[name] = raw.removingPercentEncoding ?? raw
        }
        return result
    }

    /// Whether `Authorization` is `Bearer <token>`, compared in constant time.
    static func bearer(_ headers: HTTPHeaders, matches token: String) -> Bool {
        guard let value = headers.first(name: "authorization") else { return false }
        let parts = value.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: true)
        guard parts.count == 2, parts[0].lowercased() == "bearer" else { return false }
        let given = Array(parts[1].utf8), expected = Array(token.utf8)
        var difference = UInt8(given.count == expected.count ? 0 : 1)
        for index in 0..<expected.count { difference |= expected[index] ^ (index < given.count ? given[index] : 0) }
        return difference == 0
    }
}

/// What a reload did, as `POST /reload` reports it.
public enum ReloadOutcome: Sendable, Equatable {
    /// A new configuration is in force.
    case applied(generation: Int)
    /// The configuration had not changed (certificates and htpasswd files were read again).
    case unchanged(generation: Int)
    /// The new configuration was refused; the running one is kept.
    case failed(reason: String)
    /// Another reload is under way.
    case busy

    /// 200 for a reload that went through (or had nothing to change), 422 for a configuration refused, 409 while
    /// another reload runs.
    var status: HTTPResponseStatus {
        switch self {
        case .applied, .unchanged: .ok
        case .failed: .unprocessableEntity
        case .busy: .conflict
        }
    }

    /// `applied`, `unchanged`, `failed` or `busy`: the `result` of the JSON answer and of the reload counter.
    var label: String {
        switch self {
        case .applied: "applied"
        case .unchanged: "unchanged"
        case .failed: "failed"
        case .busy: "busy"
        }
    }

    var json: String {
        switch self {
        case .applied(let generation): return "{\"result\": \"applied\", \"generation\": \(generation)}\n"
        case .unchanged(let generation): return "{\"result\": \"unchanged\", \"generation\": \(generation)}\n"
        case .failed(let reason): return "{\"result\": \"failed\", \"reason\": \(JSONText.quoted(reason))}\n"
        case .busy: return "{\"result\": \"busy\", \"reason\": \"another reload is under way\"}\n"
        }
    }
}
