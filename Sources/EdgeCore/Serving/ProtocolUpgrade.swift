import NIOCore
import NIOHTTP1

/// An origin's answer that moves a request's connection (HTTP/1.1 `Upgrade`, RFC 9110 §7.8) or stream (HTTP/2
/// extended CONNECT, RFC 8441) from HTTP to another protocol: WebSocket, today.
///
/// The front end writes the answer's head — `101 Switching Protocols` on HTTP/1.1, `200` on an HTTP/2 stream —
/// with ``headers`` and the per-request fields, then takes its HTTP handlers out of the channel, so that the
/// channel carries the new protocol's bytes both ways (`ByteBuffer` in, `ByteBuffer` out; on HTTP/2 an adapter
/// turns DATA frames into bytes and back, ``HTTP2StreamBytesHandler``), and calls ``start``, which adds the new
/// protocol's handlers. The origin never sees the wire format of the HTTP it leaves, and the front end never
/// sees the protocol it enters.
struct ProtocolUpgrade: @unchecked Sendable {  // made and used on one event loop (its closures capture that loop's state)
    /// The answer's fields, besides `Server` and `Date` (for WebSocket: `Upgrade`, `Connection`,
    /// `Sec-WebSocket-Accept` and the negotiated protocol and extensions).
    var headers: HTTPHeaders
    /// Called on the channel's event loop once the channel carries bytes: adds the new protocol's handlers to
    /// `pipeline`, each at `position` (in order). A throw closes the channel.
    var start: (
        _ channel: any Channel, _ pipeline: ChannelPipeline.SynchronousOperations, _ position: ChannelPipeline.SynchronousOperations.Position
    ) throws -> Void
    /// Called instead of ``start`` when the switch cannot happen (the client went away first), so that what the
    /// origin opened for it (a relay's upstream connection) is closed.
    var abandoned: () -> Void = {}
}
