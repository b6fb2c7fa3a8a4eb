import Foundation
import NIOCore
import NIOHTTP1
import NIOWebSocket

/// A `websocket` route: the origin that takes WebSocket handshakes (HTTP/1.1 `Upgrade`, HTTP/2 extended CONNECT)
/// and, once accepted, runs the WebSocket protocol on the connection or stream (``WebSocketSession``) for the
/// route's target — the echo endpoint, or a relay to upstream servers (``WebSocketRelay``).
///
/// A request that is not a handshake gets the RFC's answer (``WebSocketHandshake``): 426 with `Upgrade:
/// websocket` for a plain request, 400 for a malformed handshake, 426 with `Sec-WebSocket-Version: 13` for another
/// version. The route's policies (rate limit, Basic auth) apply to the handshake like to any request.
final class WebSocketRoute: Origin {
    private let settings: WebSocketRouteConfiguration
    private let sessionSettings: WebSocketSessionSettings
    private let relay: WebSocketRelay?
    private let hub: PubSubHub?
    private let generation: Int

    init(configuration: WebSocketRouteConfiguration, relay: WebSocketRelay?, hub: PubSubHub?, generation: Int) {
        self.settings = configuration
        self.sessionSettings = WebSocketSessionSettings(configuration)
        self.relay = relay
        self.hub = hub
        self.generation = generation
    }

    /// A hub's publishers POST messages of up to `max_message_bytes`; other routes take no body.
    var requestBody: OriginRequestBody { .upgrade(maxBodyBytes: hub == nil ? 0 : settings.maxMessageBytes) }

    func serve(_ request: OriginRequest, context: OriginContext) -> Dispatch {
        guard let streamed = request.streamed else {
            return .ready(.response(.text(.internalServerError, "WebSocket route without its request head\n")))
        }
        let isHTTP2 = streamed.version.major == 2
        if let hub {
            let channel = request.relativePath.isEmpty ? "/" : String(request.relativePath)
            switch request.method {
            case .POST, .PUT:
                return publish(to: hub, channel: channel, request: request, streamed: streamed, context: context)
            case .GET, .HEAD:
                let accept = streamed.headers.values(of: "accept").joined(separator: ",")
                if !streamed.headers.contains(name: "upgrade"), accept.lowercased().contains("text/event-stream") {
                    return .ready(eventStream(hub: hub, channel: channel, request: request, streamed: streamed, context: context))
                }
            default:
                break
            }
        }
        let outcome = WebSocketHandshake.check(
            method: request.method, isHTTP2: isHTTP2, httpVersion: streamed.version,
            values: { streamed.headers.values(of: $0) }
        )
        switch outcome {
        case .refuse(let status, let text, let extra):
            var response = EdgeResponse.text(status, text)
            for (name, value) in extra { response.headers.add(name: name, value: value) }
            return .ready(.response(response))
        case .accept(let key, _, let extensions):
            if let relay {
                return relay.open(request, streamed: streamed, key: key, isHTTP2: isHTTP2, context: context) { upstream in
                    self.accepted(key: key, isHTTP2: isHTTP2, loop: context.loop, relayed: upstream)
                }
            }
            let subscriber = hub.map { hub in
                WebSocketHubSubscriber(
                    hub: hub, channel: request.relativePath.isEmpty ? "/" : String(request.relativePath),
                    lastID: Self.lastEventID(request, streamed)
                )
            }
            let deflate = settings.permessageDeflate ? PerMessageDeflateOffer.negotiate(extensions) : nil
            return .ready(accepted(key: key, isHTTP2: isHTTP2, loop: context.loop, relayed: nil, subscriber: subscriber, deflate: deflate))
        }
    }

    /// The switch to WebSocket: the handshake's answer fields, and the handlers the connection then runs.
    /// `relayed`: the upstream's answer when the route proxies (its negotiated protocol and extensions, and the
    /// channel to relay to).
    private func accepted(
        key: String?, isHTTP2: Bool, loop: LoopState, relayed: WebSocketRelay.Upstream?, subscriber: WebSocketHubSubscriber? = nil,
        deflate: PerMessageDeflateOffer? = nil
    ) -> Reply {
        var headers = HTTPHeaders()
        if !isHTTP2, let key {
            headers.add(name: "upgrade", value: "websocket")
            headers.add(name: "connection", value: "upgrade")
            headers.add(name: "sec-websocket-accept", value: WebSocketHandshake.acceptValue(for: key))
        }
        if let relayed {
            for (name, value) in relayed.negotiated { headers.add(name: name, value: value) }
            return .upgrade(ProtocolUpgrade(headers: headers) { channel, pipeline, position in
                try relayed.join(client: channel, pipeline: pipeline, position: position)
            })
        }
        let sessionSettings = self.sessionSettings
        let maxFrame = settings.maxFrameBytes
        let generation = self.generation
        let application: any WebSocketApplication = subscriber ?? WebSocketEcho()
        if let deflate { headers.add(name: "sec-websocket-extensions", value: deflate.responseValue) }
        return .upgrade(ProtocolUpgrade(headers: headers) { _, pipeline, position in
            try pipeline.addHandler(ByteToMessageHandler(WebSocketFrameDecoder(maxFrameSize: maxFrame)), position: position)
            try pipeline.addHandler(WebSocketFrameEncoder(), position: position)
            try pipeline.addHandler(
                WebSocketSession(
                    settings: sessionSettings, application: application, loop: loop, generation: generation,
                    deflate: deflate.map(PerMessageDeflate.init(settings:))
                ),
                position: position
            )
        })
    }

    // MARK: hub

    /// The ID a reconnecting subscriber last saw: `Last-Event-ID` (what browsers' EventSource sends), or the
    /// `last_event_id` query parameter (for WebSocket clients, which cannot set fields).
    private static func lastEventID(_ request: OriginRequest, _ streamed: StreamedRequest) -> UInt64? {
        if let header = streamed.headers.values(of: "last-event-id").first, let id = UInt64(header.trimming()) { return id }
        guard let query = request.query else { return nil }
        for pair in query.split(separator: "&") where pair.hasPrefix("last_event_id=") {
            return UInt64(pair.dropFirst("last_event_id=".count))
        }
        return nil
    }

    /// A Server-Sent Events subscription: `200 text/event-stream`, events as they are published.
    private func eventStream(hub: PubSubHub, channel: String, request: OriginRequest, streamed: StreamedRequest, context: OriginContext) -> Reply {
        let pipe = BodyPipe(eventLoop: context.eventLoop, highWatermark: 64 * 1024)
        let subscriber = EventStreamHubSubscriber(hub: hub, channel: channel, pipe: pipe, loop: context.eventLoop)
        subscriber.start(after: Self.lastEventID(request, streamed), ping: sessionSettings.pingInterval)
        var headers = FieldBlock(capacity: 128)
        headers.add(name: "content-type", value: "text/event-stream; charset=utf-8")
        headers.add(name: "cache-control", value: "no-store")
        headers.add(name: "x-accel-buffering", value: "no")
        return .stream(StreamedResponse(status: .ok, headers: headers, body: request.method == .HEAD ? nil : pipe))
    }

    /// A publisher's POST: the body becomes one message to every subscriber of the channel.
    private func publish(
        to hub: PubSubHub, channel: String, request: OriginRequest, streamed: StreamedRequest, context: OriginContext
    ) -> Dispatch {
        guard hub.settings.publishFrom.isEmpty || hub.settings.publishFrom.contains(where: { $0.contains(request.client) }) else {
            streamed.body?.cancel(BodyPipe.Broken(description: "not a publisher"))
            return .ready(.response(.text(.forbidden, "publishing to this hub is not allowed from your address\n")))
        }
        let contentType = streamed.headers.values(of: "content-type").first?.lowercased()
        let promise = context.eventLoop.makePromise(of: Reply.self)
        var collected = ByteBuffer()
        func finish() {
            // Text (a WebSocket text frame) when the body is UTF-8, unless it is declared binary; a body declared
            // as text that is not UTF-8 is refused, since a text frame must be.
            let isUTF8 = collected.withUnsafeReadableBytes { UTF8Validator.isValid($0) }
            if contentType?.hasPrefix("text/") == true, !isUTF8 {
                return promise.succeed(.response(.text(.badRequest, "a text message must be UTF-8\n")))
            }
            let isText = isUTF8 && contentType?.hasPrefix("application/octet-stream") != true
            let (id, subscribers) = hub.publish(collected, isText: isText, to: channel)
            var response = EdgeResponse(status: .ok, body: ByteBuffer(
                string: "{\"channel\":\"\(JSONText.escaped(channel))\",\"id\":\(id),\"subscribers\":\(subscribers)}\n"
            ))
            response.headers.add(name: "content-type", value: "application/json")
            promise.succeed(.response(response))
        }
        guard let body = streamed.body else {
            finish()
            return .pending(promise.futureResult)
        }
        body.forEachPart { part in
            switch part {
            case .success(.chunk(var chunk)): collected.writeBuffer(&chunk)
            case .success(.end): finish()
            case .failure(let error): promise.fail(error)
            }
            return true
        }
        return .pending(promise.futureResult)
    }

}
