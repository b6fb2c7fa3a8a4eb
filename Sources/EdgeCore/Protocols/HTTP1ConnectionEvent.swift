/// Outbound user events by which the request handler behind a hand-over tells ``HTTP1FastPathHandler``
/// where the connection is in its request cycle, so that the request-head deadline keeps applying after
/// NIO's parser has taken over.
enum HTTP1ConnectionEvent {
    /// A complete request head was parsed.
    case headReceived
    /// The response to the current request was written.
    case responseFinished
}
