/// `websocket = { echo = true }` or `websocket = { upstream = "chat" }`, with optional limits: a route that
/// takes WebSocket handshakes (RFC 6455 over HTTP/1.1, RFC 8441 over HTTP/2).
public struct WebSocketRouteConfiguration: Sendable, Equatable {
    /// What the route's WebSocket connections reach.
    public enum Target: Sendable, Equatable {
        /// Every message comes back as it was sent: a diagnostic, and the conformance suites' target.
        case echo
        /// The upstream group of that name (`[[upstream]]`): the handshake is forwarded, then the frames are relayed
        /// both ways.
        case upstream(String)
        /// A publish/subscribe hub: clients subscribe to the channel named by the path below the route (by
        /// WebSocket, or Server-Sent Events); publishers POST messages to it.
        case hub(HubConfiguration)
    }

    /// `hub = true` and its settings.
    public struct HubConfiguration: Sendable, Equatable {
        /// Who may publish: clients in these ranges (after the route's own policies, Basic auth included). Empty:
        /// every client the route's policies let through.
        public var publishFrom: [AddressRange] = [AddressRange(parsing: "127.0.0.1")!, AddressRange(parsing: "::1")!]
        /// Messages kept per channel for clients that reconnect with the last ID they saw (`Last-Event-ID`, or
        /// `?last_event_id=`); 0 keeps none.
        public var replay: Int = 0
        /// Messages waiting for a subscriber whose socket is full; one more closes it (1008, or the end of its
        /// event stream), so that a slow subscriber costs bounded memory.
        public var maxQueuedMessages: Int = 256

        public init() {}
    }

    public var target: Target
    /// The largest message (all its frames) Edge takes from a client; a larger one closes the connection with
    /// 1009. Not applied to proxied connections, whose frames Edge relays without reading them.
    public var maxMessageBytes: Int = 1 << 20
    /// The largest single frame (a frame is held whole before it is read): at most ``maxMessageBytes``.
    public var maxFrameBytes: Int = 1 << 20
    /// A connection on which nothing arrives for this long is closed (1001). `0` turns it off.
    public var idleSeconds: Int = 120
    /// Edge sends a ping after this long without anything from the client, so that a live client answers and
    /// an idle one is seen through NATs. `0` turns it off.
    public var pingSeconds: Int = 30
    /// On reload, a WebSocket opened under the previous configuration is closed (1001) after this long; on
    /// shutdown at once, within `shutdown_timeout_seconds`.
    public var reloadGraceSeconds: Int = 30
    /// Whether permessage-deflate (RFC 7692) is offered to clients that ask for it (echo and hub routes; a relay
    /// passes the extension between client and upstream untouched). Off by default: each connection then holds
    /// zlib's state (about 300 KB with context takeover).
    public var permessageDeflate: Bool = false
    /// `strip_prefix` and `host` for a proxied route, as a `proxy` route has them.
    public var stripPrefix: Bool = false
    public var host: ProxyRouteConfiguration.HostHeader = .pass

    public init(target: Target) {
        self.target = target
    }
}
