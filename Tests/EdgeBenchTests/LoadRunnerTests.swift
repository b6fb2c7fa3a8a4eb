import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization
import Testing

@testable import EdgeBench

/// A tiny HTTP/1.1 server for the tests: counts requests, answers `status` after `delay`, and closes the
/// connection without a word after `closeAfter` requests on it (to provoke resets).
private final class CountingServer: Sendable {
    let requests = Atomic<Int>(0)
    let channel: any Channel
    let group: MultiThreadedEventLoopGroup

    init(status: HTTPResponseStatus = .ok, delay: TimeAmount = .zero, closeAfter: Int? = nil) async throws {
        group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let counter = Counter()
        channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(Responder(status: status, delay: delay, closeAfter: closeAfter, counter: counter))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        counter.server = self
    }

    var url: String { "http://127.0.0.1:\(channel.localAddress!.port!)/" }

    func shutdown() async throws {
        try await channel.close()
        try await group.shutdownGracefully()
    }

    final class Counter: @unchecked Sendable {
        weak var server: CountingServer?
    }

    final class Responder: ChannelInboundHandler {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart
        let status: HTTPResponseStatus
        let delay: TimeAmount
        let closeAfter: Int?
        let counter: Counter
        var onThisConnection = 0

        init(status: HTTPResponseStatus, delay: TimeAmount, closeAfter: Int?, counter: Counter) {
            self.status = status
            self.delay = delay
            self.closeAfter = closeAfter
            self.counter = counter
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            guard case .end = unwrapInboundIn(data) else { return }
            onThisConnection += 1
            if let closeAfter, onThisConnection > closeAfter {
                context.close(promise: nil)
                return
            }
            counter.server?.requests.add(1, ordering: .relaxed)
            let respond = { [status] in
                var headers = HTTPHeaders()
                headers.add(name: "Content-Length", value: "2")
                context.write(self.wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
                context.write(self.wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: "ok")))), promise: nil)
                context.writeAndFlush(self.wrapOutboundOut(.end(nil)), promise: nil)
            }
            if delay == .zero {
                respond()
            } else {
                context.eventLoop.assumeIsolated().scheduleTask(in: delay) { respond() }
            }
        }
    }
}

@Suite("LoadRunner against a tiny in-test server", .serialized)
struct LoadRunnerTests {
    private func configuration(_ url: String) throws -> BenchConfiguration {
        var configuration = BenchConfiguration(target: try TargetURL(url))
        configuration.threads = 2
        configuration.connections = 4
        configuration.duration = nil
        return configuration
    }

    @Test("the count edge-bench reports is the count the server answered")
    func countsMatch() async throws {
        let server = try await CountingServer()
        var configuration = try configuration(server.url)
        configuration.requestLimit = 1000
        let report = try await LoadRunner(configuration: configuration).run()
        let served = server.requests.load(ordering: .relaxed)
        try await server.shutdown()
        #expect(report.requests == 1000)
        #expect(served == 1000 + 1)  // and the preflight request
        #expect(report.errorsTotal == 0)
        #expect(report.latencyMs.p50 > 0 && report.latencyMs.p50 <= report.latencyMs.max)
    }

    @Test("non-2xx responses are requests and status errors")
    func statusErrors() async throws {
        let server = try await CountingServer(status: .tooManyRequests)
        var configuration = try configuration(server.url)
        configuration.requestLimit = 200
        let report = try await LoadRunner(configuration: configuration).run()
        try await server.shutdown()
        #expect(report.requests == 200)
        #expect(report.statusCodes == ["429": 200])
        #expect(report.errors["status"] == 200)
    }

    @Test("a server closing connections mid-stream: every request is either answered or counted as reset")
    func resetsAreCounted() async throws {
        let server = try await CountingServer(closeAfter: 7)
        var configuration = try configuration(server.url)
        configuration.requestLimit = 300
        configuration.pipelineDepth = 3
        let report = try await LoadRunner(configuration: configuration).run()
        let served = server.requests.load(ordering: .relaxed)
        try await server.shutdown()
        #expect(report.errors["reset"]! > 0)
        #expect(report.requests + report.errors["reset"]! + report.errors["connect"]! == 300)
        #expect(report.requests == served - 1)
    }

    @Test("open loop: the rate asked for is the rate sent")
    func openLoopRate() async throws {
        let server = try await CountingServer()
        var configuration = try configuration(server.url)
        configuration.duration = .seconds(2)
        configuration.rate = 250
        let report = try await LoadRunner(configuration: configuration).run()
        try await server.shutdown()
        #expect(report.coordinatedOmissionCorrected)
        #expect((450...550).contains(report.requests), "\(report.requests) requests")
    }

    @Test("open loop: latency counts from when a request was due, not when the busy connection sent it")
    func coordinatedOmission() async throws {
        let server = try await CountingServer(delay: .milliseconds(100))
        var configuration = try configuration(server.url)
        configuration.connections = 1
        configuration.duration = .seconds(2)
        configuration.rate = 20  // twice what one connection with a 100 ms server can do
        let report = try await LoadRunner(configuration: configuration).run()
        try await server.shutdown()
        // About 10 answers in 2 s; the k-th is due at 50k ms and answered at 100(k+1) ms: the late ones wait ~1 s.
        #expect(report.latencyMs.p50 > 300)
        #expect(report.latencyMs.max > 800)
    }
}
