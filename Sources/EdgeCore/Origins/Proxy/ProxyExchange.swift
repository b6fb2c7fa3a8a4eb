import NIOCore
import Tracing

/// One proxied request, across its attempts: it chooses a server, takes a connection, starts the exchange, and
/// retries or answers when an attempt fails. One object per request, the upstream exchange's delegate and the
/// target of the client's cancellation, rather than a closure per step (each a heap allocation).
///
/// Used on the client connection's event loop only.
final class ProxyExchange: UpstreamExchangeDelegate, RequestCancellationTarget {
    let responder: ProxyResponder
    let request: ProxyRequest
    let head: UpstreamRequest
    let pool: UpstreamPool
    let eventLoop: any EventLoop
    let promise: EventLoopPromise<Reply>
    /// What consistent hashing hashes for this request, worked out once for all its attempts.
    private let hashKey: [UInt8]?
    private var tried: Set<Int> = []
    private var retriesLeft: Int
    private var lastFailure: UpstreamFailure?

    /// The attempt under way: its server and connection, whether that connection had carried an exchange before,
    /// and whether it was opened for this attempt because a pooled one had gone stale.
    private var server: UpstreamServer?
    private var connection: UpstreamConnection?
    private var reused = false
    private var fresh = false
    /// When the attempt's request went out, for the time to the response head.
    private var sent = NIODeadline.now()
    /// Whether the access log is on: the response then carries the server and the request ID for it.
    private let logs: Bool
    /// Spans for the attempts, when tracing is on and the request has a server span.
    private let tracing: RequestTracing?
    private var attemptSpan: (any Span)?

    init(
        responder: ProxyResponder, request: ProxyRequest, head: UpstreamRequest, pool: UpstreamPool, eventLoop: any EventLoop,
        logs: Bool = false, tracing: RequestTracing? = nil
    ) {
        self.logs = logs
        self.tracing = tracing
        self.responder = responder
        self.request = request
        self.head = head
        self.pool = pool
        self.eventLoop = eventLoop
        self.promise = eventLoop.makePromise(of: Reply.self)
        self.retriesLeft = responder.group.configuration.retries
        self.hashKey = responder.hashKey(for: request)
    }

    private var group: UpstreamGroup { responder.group }

    /// One try on a server of the group: a pooled connection at once, else a new one (or an HTTP/2 stream).
    func attempt() {
        guard let server = group.choose(key: hashKey, excluded: tried, now: .now()) else {
            promise.succeed(responder.noServerAnswer(lastFailure: lastFailure))
            return
        }
        self.server = server
        server.active.add(1, ordering: .relaxed)
        if !fresh, let pooled = pool.idleConnection(to: server, group: group) {
            start(on: pooled, server: server)
        } else {
            pool.acquire(server, group: group, fresh: fresh, on: eventLoop).assumeIsolated().whenComplete { result in
                switch result {
                case .success(let connection):
                    self.start(on: connection, server: server)
                case .failure(let error):
                    let failure = error as? UpstreamFailure ?? UpstreamFailure(cause: .connect("\(error)"))
                    self.responder.finished(server, failure: failure)
                    self.retryOrAnswer(failure, server: server)
                }
            }
        }
    }

    private func start(on connection: UpstreamConnection, server: UpstreamServer) {
        let settings = group.exchangeSettings
        if let cancellation = request.cancellation {
            guard !cancellation.isCancelled else {
                // The client left while the connection was being made: nothing is sent.
                let gone = UpstreamFailure(cause: .cancelled)
                responder.finished(server, failure: gone)
                if connection.parent == nil {
                    pool.release(connection, keepalive: settings.keepalive, idleTimeout: settings.idleTimeout, on: eventLoop)
                } else {
                    connection.channel.close(promise: nil)
                }
                promise.fail(gone)
                return
            }
            // A client that leaves before the answer begins ends the exchange now, not at a timeout: a client must
            // not be able to hold upstream connections by asking and leaving (HTTP/2 rapid reset).
            cancellation.target = self
        }
        self.connection = connection
        // A stream is new, but its HTTP/2 connection may have served others before the server stopped taking
        // streams on it.
        reused = connection.parent.map { $0.streamsStarted > 1 } ?? (connection.exchanges > 0)
        connection.exchanges += 1
        var head = head
        if case .upstream = responder.configuration.host { head.host = server.address.description }
        if let tracing, let parent = request.trace {
            // A client span per attempt; the upstream sees it as the parent of its own work.
            attemptSpan?.end()
            let span = tracing.clientSpan(parent: parent, method: request.method, server: server.key)
            attemptSpan = span
            head.fields.remove(name: "traceparent")
            head.fields.remove(name: "tracestate")
            for (name, value) in tracing.fields(of: span.context) { head.fields.add(name: name, value: value) }
        }
        sent = .now()
        connection.handler.start(head, body: request.body, timeouts: settings.timeouts, delegate: self)
    }

    /// The client went away before the answer began.
    func cancelRequest() {
        connection?.handler.cancel()
    }

    /// Whether `failure` is what a kept-alive connection closed by the server looks like: closed before any of
    /// the response.
    private static func isStale(_ failure: UpstreamFailure) -> Bool {
        failure.cause == .closed && !failure.responseStarted
    }

    // MARK: UpstreamExchangeDelegate

    func upstreamFinished(_ failure: UpstreamFailure?) {
        if let span = attemptSpan {
            attemptSpan = nil
            if let failure { span.setStatus(SpanStatus(code: .error, message: "\(failure)")) }
            span.end()
        }
        guard let server, let connection else { return }
        // A pooled connection the server closed as the request went out says nothing of the server.
        let stale = reused && failure.map(Self.isStale) == true
        responder.finished(server, failure: failure, counted: !stale)
        if failure == nil, connection.handler.isReusable, connection.parent == nil {
            let settings = group.exchangeSettings
            pool.release(connection, keepalive: settings.keepalive, idleTimeout: settings.idleTimeout, on: eventLoop)
        }
    }

    func upstreamResponded(_ result: Result<StreamedResponse, UpstreamFailure>) {
        request.cancellation?.target = nil
        switch result {
        case .success(let streamed):
            var response = responder.clientResponse(streamed)
            attemptSpan?.attributes["http.response.status_code"] = Int(streamed.status.code)
            if let server {
                let time = NIODeadline.now() - sent
                server.statistics.responded(after: time)
                if logs {
                    response.upstream = UpstreamOutcome(
                        server: server.key, headerTime: time, requestID: head.fields.values(of: "x-request-id").first
                    )
                }
            }
            promise.succeed(.stream(response))
        case .failure(let failure):
            guard let server, let connection else { return }
            if reused, !fresh, Self.isStale(failure), !failure.bodySent,
                request.body != nil || ProxyResponder.isIdempotent(request.method)
            {
                if let parent = connection.parent { pool.retire(parent) }
                // The server closed a kept-alive connection as the request reached it (its idle timeout, a restart):
                // nothing was answered, so the request goes again on a new connection, as HAProxy and Envoy do,
                // without using a retry or counting against the server. Not a body-less POST (the server may have
                // acted on its head alone), nor a body already partly sent (it cannot be sent again).
                fresh = true
                attempt()
                return
            }
            retryOrAnswer(failure, server: server)
        }
    }

    private func retryOrAnswer(_ failure: UpstreamFailure, server: UpstreamServer) {
        let replayable = request.body == nil || !failure.bodySent
        if failure.isRetryable, retriesLeft > 0, replayable, ProxyResponder.isIdempotent(request.method) || !failure.bodySent,
            group.mayRetry(now: .now())
        {
            tried.insert(server.index)
            retriesLeft -= 1
            lastFailure = failure
            fresh = false
            attempt()
            return
        }
        if failure.cause == .cancelled {
            promise.fail(failure)
            return
        }
        promise.succeed(responder.failureAnswer(failure))
    }
}
