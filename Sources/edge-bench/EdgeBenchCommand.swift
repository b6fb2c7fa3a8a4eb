import ArgumentParser
import EdgeBench
import Foundation

/// `edge-bench`: an HTTP load generator (closed loop like wrk, open loop with coordinated-omission
/// correction like wrk2, HTTP/2 streams like h2load) reporting HdrHistogram latencies.
@main
struct EdgeBenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "edge-bench",
        abstract: "HTTP/1.1, HTTPS and HTTP/2 load generator with HdrHistogram latency percentiles.",
        discussion: """
            Closed loop (default): every connection sends its next request when the previous answer arrives.
            Open loop (--rate): requests are due at a constant total rate; latency counts from when each request \
            was due, so a stalled server cannot hide its stalls (coordinated-omission correction, as in wrk2).
            Exit status: 0 when the run completed, 1 when it could not start; errors during the run are reported, \
            not fatal (use --json and check `errors_total`).
            """
    )

    @Argument(help: "http://HOST[:PORT]/PATH or https://…")
    var url: String

    @Option(name: [.short, .long], help: "Connections kept open.")
    var connections = 50

    @Option(name: [.short, .long], help: "How long to run: 10s, 500ms, 2m (default 10s; with --requests, until they are done).")
    var duration: String?

    @Option(name: [.customShort("n"), .customLong("requests")], help: "Stop after this many requests (answered or failed).")
    var requests: Int?

    @Option(name: [.customShort("R"), .long], help: "Open loop: total requests per second across all connections.")
    var rate: Double?

    @Option(name: [.short, .long], help: "Event loop threads (default: one per core).")
    var threads: Int?

    @Flag(name: .customLong("http2"), help: "Force HTTP/2 (ALPN h2 over TLS; prior knowledge over plain HTTP).")
    var http2 = false

    @Flag(name: .customLong("http1"), help: "Force HTTP/1.1 (ALPN offers only http/1.1).")
    var http1 = false

    @Option(name: .long, help: "HTTP/2 streams in flight per connection.")
    var streams = 10

    @Option(name: .long, help: "HTTP/1.1 requests in flight per connection (pipelining depth).")
    var pipeline = 1

    @Flag(name: [.customShort("k"), .long], help: "Do not verify the server's certificate (self-signed servers).")
    var insecure = false

    @Option(name: .long, help: "Insist on one TLS version: 1.2 or 1.3.")
    var tlsVersion: String?

    @Option(name: [.customShort("H"), .long], help: "A request header 'Name: value' (repeatable).")
    var header: [String] = []

    @Option(name: [.short, .long], help: "Request method.")
    var method = "GET"

    @Option(name: [.short, .long], help: "Request body (sent with every request).")
    var body: String?

    @Option(name: .long, help: "Request timeout (also for connect and TLS handshake).")
    var timeout = "10s"

    @Flag(name: .long, help: "Idle mode: each connection sends one request, then stays open and quiet until --duration ends.")
    var idle = false

    @Flag(name: .long, help: "Print one JSON object instead of the table.")
    var json = false

    func run() async throws {
        do {
            let configuration = try makeConfiguration()
            let showProgress = !json && ProgressLine.isTerminal
            var progress: (@Sendable (ProgressSample) -> Void)?
            if showProgress { progress = { @Sendable sample in ProgressLine.draw(sample) } }
            let report = try await LoadRunner(configuration: configuration).run(onProgress: progress)
            if showProgress { ProgressLine.clear() }
            print(json ? report.jsonText() : HumanReport.render(report))
        } catch let error as BenchError {
            FileHandle.standardError.write(Data("edge-bench: \(error)\n".utf8))
            throw ExitCode.failure
        } catch {
            FileHandle.standardError.write(Data("edge-bench: \(error)\n".utf8))
            throw ExitCode.failure
        }
    }

    private func makeConfiguration() throws(BenchError) -> BenchConfiguration {
        var configuration = BenchConfiguration(target: try TargetURL(url))
        configuration.connections = connections
        if let threads { configuration.threads = threads }
        if let duration {
            guard let parsed = DurationText.parse(duration) else { throw .invalidOption("--duration: '\(duration)' is not a duration (10s, 500ms, 2m)") }
            configuration.duration = parsed
        } else if requests != nil {
            configuration.duration = nil
        }
        configuration.requestLimit = requests
        configuration.rate = rate
        if http1 && http2 { throw .invalidOption("--http1 and --http2 cannot be combined") }
        configuration.protocolChoice = http2 ? .http2 : (http1 ? .http1 : .negotiate)
        configuration.streamsPerConnection = streams
        configuration.pipelineDepth = pipeline
        configuration.insecure = insecure
        if let tlsVersion {
            guard let version = TLSVersionChoice(rawValue: tlsVersion) else { throw .invalidOption("--tls-version must be 1.2 or 1.3") }
            configuration.tlsVersion = version
        }
        for field in header {
            guard let colon = field.firstIndex(of: ":"), colon != field.startIndex else {
                throw .invalidOption("--header '\(field)': expected 'Name: value'")
            }
            let name = field[..<colon].trimmingCharacters(in: .whitespaces)
            let value = field[field.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            guard !name.isEmpty, name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "-_!#$%&'*+.^`|~".contains($0)) }) else {
                throw .invalidOption("--header '\(field)': '\(name)' is not a valid header name")
            }
            guard !value.contains("\r") && !value.contains("\n") else { throw .invalidOption("--header '\(field)': line breaks are not allowed") }
            configuration.headers.append((name: name, value: value))
        }
        let upperMethod = method.uppercased()
        guard !upperMethod.isEmpty, upperMethod.allSatisfy({ $0.isASCII && $0.isLetter }) else { throw .invalidOption("--method '\(method)' is not an HTTP method") }
        configuration.method = upperMethod
        configuration.body = body.map { Array($0.utf8) }
        guard let parsedTimeout = DurationText.parse(timeout) else { throw .invalidOption("--timeout: '\(timeout)' is not a duration") }
        configuration.timeout = parsedTimeout
        configuration.idle = idle
        try configuration.validate()
        return configuration
    }
}
