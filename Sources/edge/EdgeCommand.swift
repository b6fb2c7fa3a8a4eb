import ArgumentParser
import EdgeCore
import Foundation
import Logging
import Metrics
import OTel
import Prometheus
import Tracing
import ServiceLifecycle
import UnixSignals

@main
struct EdgeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "edge",
        abstract: "An HTTPS edge server: TLS, HTTP/1.1 and HTTP/2, an in-memory cache in front of a backend.",
        subcommands: [Serve.self, CheckConfig.self],
        defaultSubcommand: Serve.self
    )
}

/// `edge [serve]`: run the server.
struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the server (the default). With no --config, runs the embedded default.",
        discussion: "Environment: " + EnvironmentOverrides.variables.map { "\($0.name) (\($0.meaning))" }.joined(separator: ", ")
            + ". Flags override the environment, which overrides the file."
    )

    @Option(name: .long, help: "TOML config file.")
    var config: String?
    @Option(name: .long, help: "Plain HTTP/1.1 listener HOST:PORT (port 0: ephemeral), or none.")
    var http: String?
    @Option(name: .long, help: "HTTPS listener HOST:PORT (port 0: ephemeral), or none.")
    var https: String?
    @Option(name: .long, help: "Admin listener HOST:PORT (metrics, status page; loopback by default), or none.")
    var admin: String?
    @Option(name: .long, help: "Event-loop threads (default: one per core).")
    var threads: String?
    @Option(name: .long, help: "Transport: epoll (default) or io_uring (falls back to epoll where the kernel refuses it).")
    var io: String?
    @Option(name: .long, help: "Folder for generated state (the self-signed certificate).")
    var stateDir: String?
    @Option(name: .long, help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel: String?
    @Option(name: .long, help: "Seconds a graceful shutdown may take.")
    var shutdownTimeout: String?

    func run() async throws {
        var flags = Overrides()
        flags.threads = threads
        flags.io = io
        flags.http = http
        flags.https = https
        flags.admin = admin
        flags.stateDirectory = stateDir
        flags.logLevel = logLevel
        flags.shutdownTimeout = shutdownTimeout
        let configuration: EdgeConfiguration
        do {
            configuration = try ConfigurationSource.resolve(file: config, flags: flags)
        } catch {
            printError("edge: invalid configuration\n\(error)")
            throw ExitCode(1)
        }
        let level = Logger.Level(rawValue: LogLevelName.parse(configuration.logLevel) ?? "info") ?? .info
        LoggingSystem.bootstrap { LogfmtLogHandler(label: $0, level: level) }
        let logger = Logger(label: "edge")
        logger.info("starting", metadata: ["config": "\(config ?? "embedded default")", "pid": "\(getpid())"])
        // swift-metrics records into the registry the admin listener's /metrics shows (reloads and other rare
        // events; the per-request counters are Edge's own, per event loop).
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        // Tracing: swift-otel's tracer and exporter (OTLP/HTTP, batched, on its own task), when configured.
        var tracingService: (any Service)?
        var tracing: RequestTracing?
        if let settings = configuration.tracing {
            var otel = OTel.Configuration.default
            otel.serviceName = settings.serviceName
            otel.logs.enabled = false
            otel.metrics.enabled = false
            otel.propagators = [.traceContext]
            otel.traces.exporter = .otlp
            otel.traces.otlpExporter.protocol = .httpProtobuf
            otel.traces.otlpExporter.endpoint = settings.endpoint
            otel.traces.sampler = .parentBasedTraceIDRatio(ratio: settings.samplingRatio) ?? .parentBasedAlwaysOn
            otel.traces.batchSpanProcessor.scheduleDelay = .milliseconds(500)
            otel.diagnosticLogger = .custom(Logger(label: "edge.tracing"))
            do {
                let backend = try OTel.makeTracingBackend(configuration: otel)
                tracing = RequestTracing(tracer: backend.factory)
                tracingService = backend.service
            } catch {
                logger.error("cannot start", metadata: ["reason": "tracing: \(error)"])
                throw ExitCode(1)
            }
        }
        let server: EdgeServer
        do {
            server = try EdgeServer(
                configuration: configuration, logger: logger,
                loadConfiguration: { [config, flags] in try ConfigurationSource.resolve(file: config, flags: flags) },
                observabilityRegistry: registry, tracing: tracing
            )
        } catch {
            logger.error("cannot start", metadata: ["reason": "\(error.message)"])
            throw ExitCode(1)
        }
        // Trapped before the server runs: from `msg=ready` on, SIGHUP never takes its default action (exit).
        let hangups = await UnixSignalsSequence(trapping: .sighup)
        let logRotations = await UnixSignalsSequence(trapping: .sigusr1)
        let group = ServiceGroup(
            configuration: .init(
                // The exporter comes first so that it stops last, after the server's final spans.
                services: (tracingService.map { [ServiceGroupConfiguration.ServiceConfiguration(service: $0)] } ?? []) + [
                    .init(service: server), .init(service: HangupService(hangups: hangups, server: server)),
                    .init(service: LogReopenService(signals: logRotations, server: server)),
                ],
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: Logger(label: "edge.lifecycle", factory: { LogfmtLogHandler(label: $0, level: .warning) })
            )
        )
        do {
            try await group.run()
        } catch let error as ServerStartError {
            logger.error("cannot start", metadata: ["reason": "\(error.message)"])
            throw ExitCode(1)
        }
    }
}

/// `edge check-config FILE`: validate a config file.
struct CheckConfig: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Validate a config file: exit 0, or print every error with its key and line and exit 1."
    )

    @Argument(help: "The TOML config file to check.")
    var file: String

    func run() throws {
        do {
            _ = try ConfigurationSource.load(file: file)
            print("\(file): ok")
        } catch {
            printError("\(error)")
            throw ExitCode(1)
        }
    }
}

func printError(_ text: String) {
    FileHandle.standardError.write(Data((text + "\n").utf8))
}
