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
    private let generation: Int

    init(configuration: WebSocketRouteConfiguration, relay: WebSocketRelay?, generation: Int) {
        self.settings = configuration
        self.sessionSettings = WebSocketSessionSettings(configuration)
        self.relay = relay
        self.generation = generation
    }

    var requestBody: OriginRequestBody { .upgrade }

    func serve(_ request: OriginRequest, context: OriginContext) -> Dispatch {
        guard let streamed = request.streamed else {
            return .ready(.response(.text(.internalServerError, "WebSocket route without its request head\n")))
        }
        let isHTTP2 = streamed.version.major == 2
        let outcome = WebSocketHandshake.check(
            method: request.method, isHTTP2: isHTTP2, httpVersion: streamed.version,
            values: { streamed.headers.values(of: $0) }
        )
        switch outcome {
        case .refuse(let status, let text, let extra):
            var response = EdgeResponse.text(status, text)
            for (name, value) in extra { response.headers.add(name: name, value: value) }
            return .ready(.response(response))
        case .accept(let key, _):
            if let relay {
                return relay.open(request, streamed: streamed, key: key, isHTTP2: isHTTP2, context: context) { upstream in
                    self.accepted(key: key, isHTTP2: isHTTP2, loop: context.loop, relayed: upstream)
                }
            }
            return .ready(accepted(key: key, isHTTP2: isHTTP2, loop: context.loop, relayed: nil))
        }
    }

    /// The switch to WebSocket: the handshake's answer fields, and the handlers the connection then runs.
    /// `relayed`: the upstream's answer when the route proxies (its negotiated protocol and extensions, and the
    /// channel to relay to).
    private func accepted(key: String?, isHTTP2: Bool, loop: LoopState, relayed: WebSocketRelay.Upstream?) -> Reply {
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
        return .upgrade(ProtocolUpgrade(headers: headers) { _, pipeline, position in
            try pipeline.addHandler(ByteToMessageHandler(WebSocketFrameDecoder(maxFrameSize: maxFrame)), position: position)
            try pipeline.addHandler(WebSocketFrameEncoder(), position: position)
            try pipeline.addHandler(
                WebSocketSession(settings: sessionSettings, application: WebSocketEcho(), loop: loop, generation: generation),
                position: position
            )
        })
    }
}
