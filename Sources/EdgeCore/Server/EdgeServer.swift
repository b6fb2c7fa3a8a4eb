public import Foundation
public import Prometheus
public import Logging
public import NIOCore
import NIOExtras
import NIOPosix
import NIOSSL
import Synchronization
public import ServiceLifecycle
import Metrics

/// The Edge server: binds the configured listeners, serves until a graceful shutdown is requested, then drains.
///
/// Run it inside a `ServiceGroup` with `gracefulShutdownSignals: [.sigterm, .sigint]`, and route SIGHUP to
/// ``reloadAfterHangup()`` (the `edge` command does both). On shutdown it turns
/// `/healthz` to 503, waits `shutdown_delay`, closes the listeners, lets every in-flight request finish (idle
/// HTTP/1.1 connections close, HTTP/2 connections get GOAWAY) and, at `shutdown_timeout`, closes what is left.
public final class EdgeServer: Service, Sendable {
    /// A bound listener.
    public struct BoundListener: Sendable {
        /// `http` or `https`.
        public var scheme: String
        /// The address actually bound (with the real port when 0 was asked).
        public var address: SocketAddress
    }

    private let configuration: EdgeConfiguration
    private let logger: Logger
    private let group: any EventLoopGroup
    /// The transport the group runs: `io_uring` only when asked for and the kernel allowed it.
    private let transport: IOTransport
    /// One quiescing helper per server channel (one per listener on epoll, one per listener and loop on
    /// io_uring): each tracks the connections its server channel accepted.
    /// Released before the event loops stop, because a helper completes a promise on a loop when it deinits.
    private let quiescers: Mutex<[ServerQuiescingHelper]>
    /// What new connections are configured with; replaced by a configuration reload.
    private let services: Mutex<EdgeServices>
    /// The TLS context of each listener (`nil` for plain ones), made at bind and again at each reload, so that a
    /// renewed certificate is served to new connections after SIGHUP.
    private let tlsContexts = Mutex<[ListenerCertificates?]>([])
    /// Reads the configuration again from where it came from (file, environment, flags), for SIGHUP.
    private let loadConfiguration: (@Sendable () throws -> EdgeConfiguration)?
    /// Counters and the draining flag, shared with every connection.
    public let state: ServerState
    /// Route labels, the access log, the registry of swift-metrics' metrics.
    public let observability: Observability
    /// A reload is under way (SIGHUP or `POST /reload`): one at a time.
    private let reloading = Mutex(false)
    /// The certificates ACME has obtained, by request id (a site's first name): served by SNI like configured ones.
    private let acmeIssued = Mutex<[String: ACMEIssued]>([:])

    private var currentServices: EdgeServices { services.withLock { $0 } }

    /// Creates a server; nothing is bound until ``run()``.
    /// - Parameters:
    ///   - loadConfiguration: Reads the configuration again from its sources, for a reload on SIGHUP; `nil`
    ///     (the default) makes SIGHUP re-read only the htpasswd files.
    /// - Throws: ``ServerStartError`` when a route's policies cannot be set up (e.g. a bad htpasswd file), or
    ///   when the system would not start `threads` event-loop threads.
    public init(
        configuration: EdgeConfiguration, logger: Logger,
        loadConfiguration: (@Sendable () throws -> EdgeConfiguration)? = nil,
        observabilityRegistry: PrometheusCollectorRegistry = PrometheusCollectorRegistry(),
        tracing: RequestTracing? = nil
    ) throws(ServerStartError) {
        self.configuration = configuration
        self.loadConfiguration = loadConfiguration
        self.logger = logger
        let threads = configuration.threads ?? System.coreCount
        // The event loops and NIO's blocking pool (file reads, bcrypt), which starts one thread per core.
        if let failure = ThreadCapacityProbe.check(threads: threads + System.coreCount) {
            throw ServerStartError(
                message: "threads = \(threads): the system refused to start more than \(failure.started) threads "
                    + "(\(failure.reason)); lower threads (EDGE_THREADS, --threads) or raise the process's limits"
            )
        }
        var transport = configuration.io
        if transport == .ioUring {
            do {
                self.group = try URingEventLoopGroup(threads: threads)
            } catch {
                logger.warning("io_uring is not available, using epoll", metadata: ["reason": "\(error)"])
                transport = .epoll
                self.group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
            }
        } else {
            self.group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
        }
        self.transport = transport
        let group = self.group
        self.state = ServerState()
        do {
            self.observability = try Observability(
                accessLog: configuration.accessLog, tracing: tracing, registry: observabilityRegistry
            )
        } catch {
            try? group.syncShutdownGracefully()
            throw ServerStartError(message: error.description)
        }
        do {
            self.services = Mutex(
                try EdgeServices(configuration: configuration, group: group, state: state, observability: observability)
            )
        } catch {
            try? group.syncShutdownGracefully()
            throw ServerStartError(message: error.description)
        }
        self.quiescers = Mutex([])
    }

    /// The number of event-loop threads.
    public var threadCount: Int { configuration.threads ?? System.coreCount }

    /// Binds every listener and serves until graceful shutdown, then drains and stops the event loops.
    public func run() async throws {
        let listeners: [BoundListener]
        do {
            listeners = try await bind()
        } catch {
            quiescers.withLock { $0 = [] }
            try? await group.shutdownGracefully()
            throw error
        }
        for (_, route) in configuration.keyedRoutes {
            if case .static(let settings) = route.handler {
                logger.info("serving static files", metadata: ["path": "\(route.path)", "root": "\(settings.root)"])
            }
        }
        logHtpasswdWarnings()
        var admin: (server: AdminServer, channel: any Channel)?
        if let settings = configuration.admin {
            let server = AdminServer(configuration: settings, backend: self, logger: logger)
            do {
                let channel = try await server.start()
                admin = (server, channel)
                logger.info("listening", metadata: ["scheme": "admin", "address": "\(Self.describe(channel.localAddress!))"])
            } catch {
                quiescers.withLock { $0 = [] }
                try? await group.shutdownGracefully()
                throw error
            }
        }
        if let log = configuration.accessLog {
            logger.info("access log", metadata: ["path": "\(log.path)", "format": "\(log.format.rawValue)"])
        }
        logger.info("ready", metadata: ["threads": "\(threadCount)", "listeners": "\(listeners.count)", "io": "\(transport.rawValue)"])
        let acme = startACME()
        let reloader = Task { await watchHtpasswdFiles() }
        let healthChecks = Task { [group, logger] in
            await UpstreamHealthChecker.run(
                groups: { [self] in Array(self.currentServices.router.upstreamGroups.values) }, on: group, logger: logger
            )
        }
        try? await gracefulShutdown()
        if let acme {
            acme.task.cancel()
            await acme.manager.shutdown()
        }
        reloader.cancel()
        healthChecks.cancel()
        await drain()
        await admin?.server.stop(admin?.channel)
        await observability.accessLog?.shutdown()
        await currentServices.passwordChecks.shutdown()
    }

    /// Starts obtaining and renewing the certificates of the `tls = "acme"` sites (``ACMEManager``); each one
    /// obtained, or found valid on disk, is served to new connections at once (``acmeCertificateIssued(_:)``).
    /// Until then such a site's clients get the listener's own certificate. Which sites use ACME is read at start.
    private func startACME() -> (manager: ACMEManager, task: Task<Void, Never>)? {
        guard let settings = configuration.acme, let challenges = currentServices.acmeChallenges else { return nil }
        let requests = configuration.acmeRequests
        guard !requests.isEmpty else { return nil }
        let manager = ACMEManager(
            configuration: settings, stateDirectory: configuration.stateDirectory ?? StateDirectory.defaultPath(),
            requests: requests, challengeStore: challenges, logger: logger
        ) { [self] issued in
            acmeCertificateIssued(issued)
        }
        logger.info("acme", metadata: ["directory": "\(settings.directory)", "certificates": "\(requests.map(\.id).joined(separator: ","))"])
        let task = Task { [logger] in
            do {
                try await manager.run()
            } catch {
                logger.error("acme stopped", metadata: ["reason": "\(error)"])
            }
        }
        return (manager, task)
    }

    /// Puts a certificate ACME obtained in front of new connections: the listeners' certificate tables are built
    /// again with it. Open connections keep the one they have.
    private func acmeCertificateIssued(_ issued: ACMEIssued) {
        acmeIssued.withLock { $0[issued.id] = issued }
        do {
            let contexts = try makeTLSContexts(for: currentServices.configuration)
            tlsContexts.withLock { $0 = contexts }
            logger.notice(
                "acme certificate in use",
                metadata: ["names": "\(issued.names.joined(separator: ","))", "not_after": "\(issued.notAfter)", "serial": "\(issued.serialNumber)"]
            )
        } catch {
            logger.error("acme certificate cannot be used; the previous one is kept", metadata: ["names": "\(issued.names.joined(separator: ","))", "reason": "\(error)"])
        }
    }

    /// One warning per htpasswd line whose hash is in a weak format (see ``BasicAuthenticator/warnings``).
    private func logHtpasswdWarnings() {
        for authenticator in currentServices.router.authenticators {
            for warning in authenticator.warnings {
                logger.warning("htpasswd: weak password hash", metadata: ["line": "\(warning)"])
            }
        }
    }

    private func bind() async throws -> [BoundListener] {
        let openFiles = FileDescriptorLimit.raiseToHardLimit()
        if let openFiles, openFiles < configuration.limits.maxConnections + 64 {
            logger.warning(
                "open-file limit is below max_connections",
                metadata: ["open_files": "\(openFiles)", "max_connections": "\(configuration.limits.maxConnections)"]
            )
        }
        let contexts = try makeTLSContexts()
        tlsContexts.withLock { $0 = contexts }
        var bound: [BoundListener] = []
        for (index, listener) in configuration.listeners.enumerated() {
            let warnings = AcceptFailureHandler.Warnings()
            let serverInitializer: @Sendable (any Channel) -> EventLoopFuture<Void> = { [self, logger, group] channel in
                let quiesce = ServerQuiescingHelper(group: group)
                quiescers.withLock { $0.append(quiesce) }
                return channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    try sync.addHandler(AcceptFailureHandler(logger: logger, address: "\(listener.address)", warnings: warnings))
                    try sync.addHandler(quiesce.makeServerChannelHandler(channel: channel))
                }
            }
            let childInitializer: @Sendable (any Channel) -> EventLoopFuture<Void> = { [self] channel in
                channel.eventLoop.makeCompletedFuture {
                    let services = currentServices
                    let certificates = tlsContexts.withLock({ $0[index] })
                    let configure = { (channel: any Channel, client: ClientAddress?) throws in
                        if let certificates {
                            try HTTPPipelines.configureTLS(channel, certificates: certificates, services: services, client: client)
                        } else {
                            try HTTPPipelines.configurePlain(channel, services: services, client: client)
                        }
                    }
                    if listener.proxyProtocol {
                        // The pipeline is installed once the PROXY header has named the client.
                        try channel.pipeline.syncOperations.addHandler(
                            ProxyProtocolHandler(
                                trusted: listener.proxyProtocolFrom, timeout: services.configuration.timeouts.tlsHandshake,
                                configure: { try configure($0, $1) }
                            )
                        )
                    } else {
                        try configure(channel, nil)
                    }
                }
            }
            let channel: any Channel
            do {
                if let uring = group as? URingEventLoopGroup {
                    let address = try SocketAddress.makeAddressResolvingHost(listener.address.host, port: listener.address.port)
                    channel = try await URingListener.bind(
                        group: uring, address: address, backlog: 4096, serverInitializer: serverInitializer,
                        childOptions: { child in
                            try child.setOption0(.socketOption(.tcp_nodelay), value: 1)
                            try child.setOption0(.allowRemoteHalfClosure, value: true)
                            try child.setOption0(.recvAllocator, value: Self.receiveBuffers)
                        },
                        childInitializer: childInitializer
                    )[0]
                } else {
                    channel = try await ServerBootstrap(group: group)
                        .serverChannelOption(.backlog, value: 4096)
                        .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                        .serverChannelOption(.maxMessagesPerRead, value: 256)
                        .serverChannelInitializer(serverInitializer)
                        .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
                        // A client that shuts down its sending side after its requests still gets their responses
                        // (RFC 9112 §9.6): the protocol handlers close once everything asked for is answered.
                        .childChannelOption(.allowRemoteHalfClosure, value: true)
                        .childChannelOption(.maxMessagesPerRead, value: 16)
                        .childChannelOption(.recvAllocator, value: Self.receiveBuffers)
                        .childChannelInitializer(childInitializer)
                        .bind(host: listener.address.host, port: listener.address.port).get()
                }
            } catch {
                throw ServerStartError(message: "cannot listen on \(listener.address): \(error)")
            }
            let scheme = listener.tls == nil ? "http" : "https"
            let address = channel.localAddress!
            bound.append(BoundListener(scheme: scheme, address: address))
            logger.info("listening", metadata: ["scheme": "\(scheme)", "address": "\(Self.describe(address))"])
        }
        return bound
    }

    /// Each connection keeps its last receive buffer for the next read, idle or not. NIO starts it at 2 KiB; 1 KiB
    /// (nginx's `client_header_buffer_size`) holds a typical request head and costs 1 KiB less per idle connection
    /// (5.2 → 4.2 KiB). A read that fills it grows the next one.
    private static var receiveBuffers: AdaptiveRecvByteBufferAllocator {
        AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 1024, maximum: 65536)
    }

    /// The certificates of each listener (`nil` for plain ones): its own (or the self-signed one, loaded once) and
    /// every site's, chosen by SNI (``ListenerCertificates``), all under the TLS policy in force.
    private func makeTLSContexts(for configuration: EdgeConfiguration? = nil) throws -> [ListenerCertificates?] {
        try Self.makeListenerCertificates(
            configuration: configuration ?? self.configuration, acmeIssued: acmeIssued.withLock { $0 },
            challenges: currentServices.acmeChallenges, logger: logger
        )
    }

    static func makeListenerCertificates(
        configuration: EdgeConfiguration, acmeIssued: [String: ACMEIssued] = [:], challenges: ACMEChallengeStore? = nil,
        logger: Logger
    ) throws -> [ListenerCertificates?] {
        let policy = configuration.tlsPolicy
        var selfSigned: NIOSSLContext?
        // The sites' certificates, by name; built once and shared by every TLS listener.
        var exact: [String: ListenerCertificates.Choice] = [:]
        var wildcards: [String: ListenerCertificates.Choice] = [:]
        for (index, site) in configuration.sites.enumerated() {
            var pairs = site.certificates
            if site.acme, let id = site.names.first, let issued = acmeIssued[id] {
                pairs = [CertificateFiles(certificate: issued.certificateChainPath, privateKey: issued.privateKeyPath)]
            }
            guard !pairs.isEmpty else { continue }
            var choice = ListenerCertificates.Choice()
            for (position, pair) in pairs.enumerated() {
                let key = pairs.count == 1 && position == 0 ? "site[\(index)]" : "site[\(index)].certificates[\(position)]"
                do {
                    let loaded = try TLSContextFactory.load(certificatePath: pair.certificate, privateKeyPath: pair.privateKey)
                    let context = try TLSContextFactory.makeContext(chain: loaded.chain, key: loaded.key, policy: policy)
                    if loaded.isECDSA {
                        guard choice.ecdsa == nil else { throw TLSSetupError(message: "a second ECDSA certificate for the same site: give one per key type") }
                        choice.ecdsa = context
                    } else {
                        guard choice.rsa == nil else { throw TLSSetupError(message: "a second RSA certificate for the same site: give one per key type") }
                        choice.rsa = context
                    }
                } catch {
                    throw ServerStartError(message: "\(key): cannot use certificate \(pair.certificate) / key \(pair.privateKey): \(error)")
                }
            }
            for name in site.names {
                if name.hasPrefix("*.") { wildcards[String(name.dropFirst(2))] = choice } else { exact[name] = choice }
            }
        }
        var challengeContext: (@Sendable (String) -> NIOSSLContext?)?
        if let challenges {
            challengeContext = { name in challenges.tlsALPNContext(forServerName: name) }
        }
        return try configuration.listeners.map { listener -> ListenerCertificates? in
            let fallback: NIOSSLContext
            switch listener.tls {
            case nil:
                return nil
            case .files(let certificate, let privateKey):
                do {
                    fallback = try TLSContextFactory.makeContext(certificatePath: certificate, privateKeyPath: privateKey, policy: policy)
                } catch {
                    throw ServerStartError(message: "cannot load TLS certificate \(certificate) / key \(privateKey) for \(listener.address): \(error)")
                }
            case .selfSigned:
                if let selfSigned {
                    fallback = selfSigned
                    break
                }
                let directory = configuration.stateDirectory ?? StateDirectory.defaultPath()
                if let problem = ConfigurationFileChecks.stateDirectoryProblem(directory, storesCertificate: true) {
                    throw ServerStartError(message: "state_dir: \(problem)")
                }
                let certificate: SelfSignedCertificate
                do {
                    certificate = try SelfSignedCertificate.loadOrCreate(in: directory)
                } catch {
                    throw ServerStartError(message: "cannot create the self-signed certificate in state_dir \(directory): \(error)")
                }
                logger.info(
                    "self-signed certificate",
                    metadata: ["action": "\(certificate.generated ? "generated" : "reused")", "path": "\(certificate.certificatePath)"]
                )
                fallback = try TLSContextFactory.makeContext(
                    certificateChainPEM: certificate.certificatePEM, privateKeyPEM: certificate.privateKeyPEM, policy: policy
                )
                selfSigned = fallback
            }
            return ListenerCertificates(
                fallback: .init(ecdsa: fallback), exact: exact, wildcards: wildcards,
                challenges: challengeContext
            )
        }
    }

    /// What SIGHUP does (the `edge` command routes it here), as nginx's reload: the configuration is read again
    /// from its sources and checked like at start. If it is valid, every connection's next request gets it
    /// (routes, policies, upstreams: ``LoopState/current``); only when a setting fixed per connection changed
    /// is every older connection retired (``RetireConnectionEvent``: it finishes what it is doing, then closes);
    /// settings that only a restart can change keep their running values, with a warning naming them. If it is
    /// not, the error is logged and nothing changes. The listeners' certificates are read again either way (a
    /// renewed certificate reaches new connections). When nothing else changed, or without a configuration
    /// source, the htpasswd files are read again too.
    @discardableResult
    public func reloadAfterHangup() async -> ReloadOutcome {
        // One reload at a time: a SIGHUP waits for one under way; `POST /reload` is told it is busy (``reload()``).
        while !beginReload() {
            try? await Task.sleep(nanoseconds: 50_000_000)
        }
        return await reloadHoldingTheGate()
    }

    /// Takes the one-reload-at-a-time gate; `false` when another reload holds it.
    private func beginReload() -> Bool {
        reloading.withLock { busy in
            if busy { return false }
            busy = true
            return true
        }
    }

    /// Reloads, counts the outcome (swift-metrics) and opens the gate ``beginReload()`` took.
    private func reloadHoldingTheGate() async -> ReloadOutcome {
        defer { reloading.withLock { $0 = false } }
        let outcome = await performReload()
        Counter(label: "edge_config_reloads_total", dimensions: [("result", outcome.label)]).increment()
        return outcome
    }

    private func performReload() async -> ReloadOutcome {
        guard let loadConfiguration else {
            let files = reloadHtpasswdFiles(evenIfUnchanged: true)
            logger.notice("SIGHUP: htpasswd files re-read", metadata: ["htpasswd_files": "\(files)"])
            return .unchanged(generation: currentServices.generation)
        }
        // Everything is read and built first; nothing is put in place unless all of it succeeded.
        let previous = currentServices
        let applied: EdgeConfiguration
        let restartOnly: [String]
        let contexts: [ListenerCertificates?]
        let next: EdgeServices?
        do {
            (applied, restartOnly) = Self.reloadable(try loadConfiguration(), running: configuration)
            contexts = try makeTLSContexts(for: applied)
            next = applied == previous.configuration ? nil : try EdgeServices(reloading: applied, after: previous)
        } catch {
            logger.error("reload failed, the running configuration is kept", metadata: ["reason": "\(error)"])
            return .failed(reason: "\(error)")
        }
        tlsContexts.withLock { $0 = contexts }
        guard let next else {
            let files = reloadHtpasswdFiles(evenIfUnchanged: true)
            logger.notice(
                "SIGHUP: configuration unchanged, certificates and htpasswd files re-read",
                metadata: ["htpasswd_files": "\(files)", "restart_only_changes": "\(restartOnly.joined(separator: ","))"]
            )
            return .unchanged(generation: previous.generation)
        }
        services.withLock { $0 = next }
        logHtpasswdWarnings()
        if !restartOnly.isEmpty {
            logger.warning(
                "reload: these settings change only at restart and keep their running values",
                metadata: ["keys": "\(restartOnly.joined(separator: ","))"]
            )
        }
        // Every open connection's next request sees the new services (each loop's ``LoopState/current``).
        let keptHubs = Set(next.router.hubs.values.map(ObjectIdentifier.init))
        try? await next.loops.forEach(on: group) { loop, state in
            state.current = next
            // WebSocket connections hold their route for hours: those of the older configuration are closed
            // (1001) after their route's grace period, and their clients reconnect to the new one — but for the
            // subscribers of a hub the new configuration keeps as it was.
            for socket in state.webSockets.values where socket.generation < next.generation {
                if let hub = socket.hub, keptHubs.contains(ObjectIdentifier(hub)) { continue }
                socket.retire()
            }
            return loop.makeSucceededVoidFuture()
        }.get()
        // Only settings fixed per connection at accept (timeouts, head and body limits, HTTP/2 settings,
        // `server_name`) need the connection renewed: then older connections are retired as before.
        let retired = Self.connectionSettingsDiffer(previous.configuration, applied) ? await retireConnections(before: next.generation) : 0
        logger.notice(
            "configuration reloaded",
            metadata: ["generation": "\(next.generation)", "routes": "\(applied.routes.count)", "connections_retired": "\(retired)"]
        )
        return .applied(generation: next.generation)
    }

    /// Reopens the access log's file (SIGUSR1, after logrotate moved it).
    public func reopenAccessLog() {
        guard let log = observability.accessLog else { return }
        log.reopen()
        logger.notice("access log reopened", metadata: ["path": "\(log.configuration.path)"])
    }

    /// Whether a reload changes a setting that a connection takes when it is accepted and keeps.
    static func connectionSettingsDiffer(_ old: EdgeConfiguration, _ new: EdgeConfiguration) -> Bool {
        var oldLimits = old.limits, newLimits = new.limits
        // Read per request: no need to renew connections for these.
        oldLimits.maxInFlight = 0
        newLimits.maxInFlight = 0
        return oldLimits != newLimits || old.timeouts != new.timeouts || old.serverName != new.serverName
    }

    /// `loaded` with the settings a running server cannot change — listeners, threads, `state_dir`, log level,
    /// shutdown timing, cache sizes, the per-client connection limit — set back to their `running` values, and
    /// the keys of those that differed.
    static func reloadable(_ loaded: EdgeConfiguration, running: EdgeConfiguration) -> (EdgeConfiguration, [String]) {
        var applied = loaded
        var restartOnly: [String] = []
        func keep<Value: Equatable>(_ key: String, _ path: WritableKeyPath<EdgeConfiguration, Value>) {
            if applied[keyPath: path] != running[keyPath: path] {
                restartOnly.append(key)
                applied[keyPath: path] = running[keyPath: path]
            }
        }
        keep("listener", \.listeners)
        keep("threads", \.threads)
        keep("io", \.io)
        keep("state_dir", \.stateDirectory)
        keep("log_level", \.logLevel)
        keep("shutdown_timeout_seconds", \.shutdownTimeout)
        keep("shutdown_delay_seconds", \.shutdownDelay)
        keep("cache", \.cache)
        keep("admin", \.admin)
        keep("access_log", \.accessLog)
        keep("tracing", \.tracing)
        keep("acme", \.acme)
        keep("limits.max_connections_per_ip", \.limits.maxConnectionsPerIP)
        keep("limits.max_in_flight_per_client", \.limits.maxInFlightPerClient)
        keep("limits.password_check_threads", \.limits.passwordCheckThreads)
        keep("limits.password_check_queue", \.limits.passwordCheckQueue)
        return (applied, restartOnly)
    }

    /// Sends ``RetireConnectionEvent`` to every open connection accepted under a generation before `generation`;
    /// returns how many.
    private func retireConnections(before generation: Int) async -> Int {
        let count = Mutex(0)
        let done = currentServices.loops.forEach(on: group) { loop, state in
            for connection in state.connections.values where connection.generation < generation {
                connection.channel.pipeline.fireUserInboundEventTriggered(RetireConnectionEvent())
                count.withLock { $0 += 1 }
            }
            return loop.makeSucceededVoidFuture()
        }
        try? await done.get()
        return count.withLock { $0 }
    }

    /// Re-reads changed htpasswd files every two seconds; a broken file is logged and the old users stay.
    private func watchHtpasswdFiles() async {
        while !Task.isCancelled {
            try? await Task.sleep(nanoseconds: 2_000_000_000)
            reloadHtpasswdFiles(evenIfUnchanged: false)
        }
    }

    /// Reloads every route's htpasswd file (only those that changed, unless `evenIfUnchanged`), logging each
    /// reload and each failure; returns the number of files.
    @discardableResult
    private func reloadHtpasswdFiles(evenIfUnchanged: Bool) -> Int {
        let authenticators = currentServices.router.authenticators
        for authenticator in authenticators {
            do {
                let users = evenIfUnchanged ? try authenticator.reload() : try authenticator.reloadIfChanged()
                if let users {
                    logger.info("htpasswd reloaded", metadata: ["path": "\(authenticator.path)", "users": "\(users)"])
                    for warning in authenticator.warnings {
                        logger.warning("htpasswd: weak password hash", metadata: ["line": "\(warning)"])
                    }
                }
            } catch {
                logger.warning("htpasswd not reloaded, keeping the previous users", metadata: ["reason": "\(error)"])
            }
        }
        return authenticators.count
    }

    private func drain() async {
        state.beginDraining()
        logger.info(
            "draining",
            metadata: [
                "connections": "\(state.connectionCount)", "in_flight": "\(state.inFlightCount)",
                "deadline_s": "\(configuration.shutdownTimeout.nanoseconds / 1_000_000_000)",
            ]
        )
        if configuration.shutdownDelay > .zero {
            try? await Task.sleep(nanoseconds: UInt64(configuration.shutdownDelay.nanoseconds))
        }
        // Connections still open at the deadline are closed, which takes a moment — a TLS one may wait up to
        // `closeNotifyTimeout` for the client's close_notify — so that moment is reserved from the deadline.
        let usesTLS = configuration.listeners.contains { $0.tls != nil }
        let closing = (usesTLS ? TLSContextFactory.closeNotifyTimeout : .zero) + .milliseconds(250)
        // WebSocket connections never end by themselves: each is closed now (1001), within the deadline below.
        try? await currentServices.loops.forEach(on: group) { loop, state in
            for socket in state.webSockets.values { socket.goAway() }
            return loop.makeSucceededVoidFuture()
        }.get()
        let drained = (try? await quiesceAll(deadline: max(configuration.shutdownTimeout - closing, .zero)).get()) ?? false
        if !drained {
            logger.warning(
                "shutdown deadline reached, closing remaining connections",
                metadata: ["connections": "\(state.connectionCount)", "in_flight": "\(state.inFlightCount)"]
            )
            _ = try? await closeRemainingConnections(within: closing).get()
        }
        // The access-log lines still gathered on the loops go to the writer before the loops stop.
        try? await currentServices.loops.forEach(on: group) { loop, state in
            state.observer.accessLog?.handOver()
            return loop.makeSucceededVoidFuture()
        }.get()
        try? await group.shutdownGracefully()
        logger.info("stopped")
    }

    /// Closes every connection still open, on its own loop; `true` when all closed within `limit`. Done before the
    /// loops stop, so that nothing a closing connection schedules meets a loop that is gone.
    private func closeRemainingConnections(within limit: TimeAmount) -> EventLoopFuture<Bool> {
        let closed = currentServices.loops.forEach(on: group) { loop, state in
            let closing = state.connections.values.map { connection in
                connection.channel.close(promise: nil)
                return connection.channel.closeFuture
            }
            return EventLoopFuture.andAllComplete(closing, on: loop)
        }
        return completes(closed, within: limit)
    }

    /// Closes the listeners and asks every connection to finish; the future is `true` when all closed before
    /// `deadline`. The helpers are released here, while the event loops still run.
    private func quiesceAll(deadline: TimeAmount) -> EventLoopFuture<Bool> {
        let loop = group.next()
        let helpers = quiescers.withLock { helpers in
            defer { helpers = [] }
            return helpers
        }
        let quiesced = helpers.map { helper in
            let promise = loop.makePromise(of: Void.self)
            helper.initiateShutdown(promise: promise)
            return promise.futureResult
        }
        return completes(EventLoopFuture.andAllComplete(quiesced, on: loop), within: deadline)
    }

    /// `true` once `future` completes (successfully or not), or `false` when `limit` passes first.
    private func completes(_ future: EventLoopFuture<Void>, within limit: TimeAmount) -> EventLoopFuture<Bool> {
        let loop = group.next()
        let outcome = loop.makePromise(of: Bool.self)
        let timer = loop.scheduleTask(in: limit) { outcome.succeed(false) }
        future.whenComplete { _ in
            timer.cancel()
            outcome.succeed(true)
        }
        return outcome.futureResult
    }

    private static func describe(_ address: SocketAddress) -> String {
        let host = address.ipAddress ?? "?"
        let port = address.port ?? 0
        return host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
    }
}

/// A failure to start (bind, certificates) described for the user, without a stack trace.
public struct ServerStartError: Error, CustomStringConvertible {
    /// What went wrong.
    public var message: String
    /// The message.
    public var description: String { message }
}

/// Where Edge keeps generated state when `state_dir` is not set.
public enum StateDirectory {
    /// `$XDG_STATE_HOME/edge`, else `~/.local/state/edge`, else `./.edge-state`.
    public static func defaultPath(environment: [String: String] = ProcessInfo.processInfo.environment) -> String {
        if let xdg = environment["XDG_STATE_HOME"], !xdg.isEmpty { return xdg + "/edge" }
        if let home = environment["HOME"], !home.isEmpty { return home + "/.local/state/edge" }
        return ".edge-state"
    }
}

extension EdgeServer: AdminBackend {
    func report() async -> ServerReport {
        let services = currentServices
        let loops = (try? await services.loops.collect(on: group) { state in
            LoopReport(
                metrics: state.observer.metrics.snapshot(), idleUpstreamConnections: state.upstreamPool.idleByServer,
                recentErrors: state.observer.recentErrors, webSockets: state.webSockets.count
            )
        }.get()) ?? []
        return ServerReport(loops: loops, services: services)
    }

    func configurationJSON() -> String {
        ConfigurationDump.json(currentServices.configuration)
    }

    func reload() async -> ReloadOutcome {
        guard beginReload() else { return .busy }
        return await reloadHoldingTheGate()
    }

    func registryText() -> String {
        observability.registry.emitToString()
    }

    func purge(tag: String?, host: String?, prefix: String?, soft: Bool) -> Int {
        let cache = currentServices.cache
        if let tag { return cache.invalidate(tag: tag, soft: soft) }
        guard let host, let prefix else { return 0 }
        return cache.invalidate(host: CacheKey.normalizedHost(host[...]), prefix: prefix, soft: soft)
    }
}
