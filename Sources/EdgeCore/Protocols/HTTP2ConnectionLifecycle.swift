import NIOCore
import NIOHTTP2

/// What NIOHTTP2 leaves to the application about an HTTP/2 connection's life: how many streams are open, since
/// when none has been, and how the connection ends — after an idle timeout, in a graceful shutdown, or after
/// the client half-closed. ``HTTP2FastPathHandler`` feeds it stream events and frames and carries out the
/// ``Action``s it returns.
///
/// It takes the place of NIOHTTP2's `NIOHTTP2ServerConnectionManagementHandler`. That handler's work per
/// stream — its own pass over every stream event, and an idle timer cancelled and re-armed each time the
/// stream count touches zero — cost about 10 % of the throughput of cached HTTP/2 responses, and its
/// graceful shutdown cannot finish for a client that half-closed (it waits for a PING acknowledgement).
/// The shutdown sequence is the same: GOAWAY with the highest stream ID and a PING, then, once the PING is
/// acknowledged (so the client has seen the GOAWAY and opens no more streams), a GOAWAY naming the last
/// stream; the connection closes when its streams are done.
struct HTTP2ConnectionLifecycle {
    /// Where the connection is in its life.
    enum Phase: Equatable {
        /// Serving requests; an idle connection is closed after the idle timeout.
        case serving
        /// Shutting down: GOAWAY (last stream 2^31−1) and a PING went out; the acknowledgement is awaited.
        case awaitingPingAck
        /// The final GOAWAY went out; the connection closes once no stream is open.
        case finishing
    }

    /// What the connection handler must do.
    enum Action: Equatable {
        /// Nothing.
        case none
        /// Write `GOAWAY(NO_ERROR)` naming `lastStreamID`, then a PING carrying `ping` if there is one, and
        /// flush. If `thenClose`, close once they are written; otherwise, if the phase is now
        /// ``Phase/finishing``, close at the shutdown deadline at the latest.
        case goAway(lastStreamID: HTTP2StreamID, ping: HTTP2PingData?, thenClose: Bool)
        /// Close once what was written is on the wire: the last stream of a finishing connection is done.
        case closeWhenWritten
    }

    /// What the idle check found.
    enum IdleVerdict: Equatable {
        /// Idle for the whole timeout: carry out the action (a final GOAWAY, then close).
        case close(Action)
        /// Check again after this long.
        case checkAgain(in: TimeAmount)
        /// Shutting down already: no more idle checks.
        case stop
    }

    /// The opaque data of the shutdown PING.
    static let shutdownPing = HTTP2PingData(withInteger: 0x4544_4745_5354_4F50)  // "EDGESTOP"

    /// Where the connection is in its life.
    private(set) var phase = Phase.serving
    /// Streams NIOHTTP2 has opened and not yet closed.
    private(set) var openStreams = 0
    /// The newest stream the client opened.
    private(set) var newestStreamID = HTTP2StreamID.rootStream
    /// When the last open stream closed (or the connection began); `nil` while a stream is open.
    private var idleSince: NIODeadline?

    /// Creates the state of a connection that has just been established.
    init(now: NIODeadline) {
        self.idleSince = now
    }

    /// NIOHTTP2 opened stream `id`.
    mutating func streamOpened(_ id: HTTP2StreamID) {
        openStreams += 1
        if id > newestStreamID { newestStreamID = id }
        idleSince = nil
    }

    /// A stream closed; `now` is read only when it was the last one open.
    mutating func streamClosed(now: @autoclosure () -> NIODeadline) -> Action {
        openStreams -= 1
        guard openStreams == 0 else { return .none }
        if phase == .finishing { return .closeWhenWritten }
        idleSince = now()
        return .none
    }

    /// The server is shutting down: warn the client with a GOAWAY and a PING.
    mutating func quiesce() -> Action {
        guard phase == .serving else { return .none }
        phase = .awaitingPingAck
        return .goAway(lastStreamID: .maxID, ping: Self.shutdownPing, thenClose: false)
    }

    /// The client acknowledged a PING carrying `data`.
    mutating func pingAcknowledged(_ data: HTTP2PingData) -> Action {
        guard phase == .awaitingPingAck, data == Self.shutdownPing else { return .none }
        return finish()
    }

    /// The client shut down its sending side: it can open no more streams, nor acknowledge a PING, nor grant
    /// flow-control window; the streams it opened are finished and the connection closes.
    mutating func inputClosed() -> Action {
        guard phase != .finishing else { return .none }
        return finish()
    }

    /// Nothing could be sent for `send_seconds` while responses waited (the client grants no flow-control window):
    /// a GOAWAY naming the newest stream, and the connection closes once its streams are done (the stalled ones
    /// were reset).
    mutating func stalled() -> Action {
        guard phase != .finishing else { return .none }
        return finish()
    }

    /// Decides, `now`, whether the connection has been idle for `timeout`.
    mutating func idleCheck(now: NIODeadline, timeout: TimeAmount) -> IdleVerdict {
        guard phase == .serving else { return .stop }
        guard let idleSince else { return .checkAgain(in: timeout) }
        let idleFor = now - idleSince
        if idleFor >= timeout {
            return .close(finish())
        }
        return .checkAgain(in: timeout - idleFor)
    }

    private mutating func finish() -> Action {
        phase = .finishing
        return .goAway(lastStreamID: newestStreamID, ping: nil, thenClose: openStreams == 0)
    }
}
