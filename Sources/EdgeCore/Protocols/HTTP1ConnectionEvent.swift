import NIOCore

/// Outbound user events by which the request handler behind a hand-over tells ``HTTP1FastPathHandler``
/// where the connection is in its request cycle, so that the request-head deadline keeps applying after
/// NIO's parser has taken over, and hands it the rare response NIO's encoder would not send as written.
enum HTTP1ConnectionEvent {
    /// A complete request head was parsed.
    case headReceived
    /// The response to the current request was written.
    case responseFinished
    /// A complete, already encoded final response (head and body) to write below NIO's response encoder, after
    /// which the connection closes. For the answer to a `CONNECT`: NIO's encoder treats any response to it as
    /// the start of a tunnel and drops its body, although RFC 9112 §6.3 lets only a 2xx one have none.
    case finalResponse(ByteBuffer)
}
