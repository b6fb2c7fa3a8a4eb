/// When one request was meant to go out and when it did, in `NIODeadline` nanoseconds.
struct RequestStamp {
    /// The time the schedule said to send it: latency is measured from here (coordinated-omission correction).
    /// Equal to ``sent`` in a closed loop.
    var intended: UInt64
    /// The time it was written to the connection; timeouts are measured from here.
    var sent: UInt64
}

/// One established connection as the load loop sees it, whatever the HTTP version.
/// Implementations live on the connection's event loop and are used only there.
protocol LoadTransport: AnyObject {
    /// Whether another request may be sent now (open, not closing, fewer in flight than allowed).
    var canSend: Bool { get }
    /// Requests in flight.
    var inFlight: Int { get }
    /// When the oldest request in flight was sent, or `nil` when none is.
    var oldestSentAt: UInt64? { get }
    /// Writes one request (not flushed).
    func send(_ stamp: RequestStamp)
    /// Flushes the requests written since the last flush.
    func flush()
    /// Closes the connection; requests in flight are reported to the delegate as it closes.
    func close()
    /// Closes the connection without reporting anything, and returns how many requests were in flight.
    func abandon() -> Int
}

/// What a connection tells the connection slot that owns it. Called on the connection's event loop.
protocol TransportDelegate: AnyObject {
    /// The connection is established (handshake done, protocol chosen) and may send.
    func transportReady(_ transport: any LoadTransport, protocol: String)
    /// `count` bytes of HTTP arrived.
    func transportReceived(bytes count: Int)
    /// A complete response to the request sent at `stamp` arrived.
    func transportCompleted(status: Int, stamp: RequestStamp)
    /// One request failed without closing the connection (an HTTP/2 stream reset).
    func transportFailed(stamp: RequestStamp, failure: TransportFailure)
    /// A batch of reads ended: the moment to send more and flush.
    func transportReadComplete()
    /// The connection closed with `outstanding` requests unanswered; `failure` is the first error seen, if any.
    func transportClosed(outstanding: Int, failure: TransportFailure?)
}
