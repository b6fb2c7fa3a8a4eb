@testable import EdgeCore
import NIOCore
import NIOHTTP2
import Testing

@Suite("HTTP/2 connection lifecycle")
struct HTTP2ConnectionLifecycleTests {
    let start = NIODeadline.uptimeNanoseconds(1_000_000_000)
    let timeout = TimeAmount.seconds(75)

    @Test("idle for the whole timeout: a final GOAWAY naming the last stream, then close")
    func idleTimeout() {
        var lifecycle = HTTP2ConnectionLifecycle(now: start)
        lifecycle.streamOpened(1)
        lifecycle.streamOpened(3)
        #expect(lifecycle.idleCheck(now: start + .seconds(80), timeout: timeout) == .checkAgain(in: timeout))
        #expect(lifecycle.streamClosed(now: start + .seconds(90)) == .none)
        #expect(lifecycle.streamClosed(now: start + .seconds(100)) == .none)
        #expect(lifecycle.idleCheck(now: start + .seconds(160), timeout: timeout) == .checkAgain(in: .seconds(15)))
        #expect(
            lifecycle.idleCheck(now: start + .seconds(175), timeout: timeout)
                == .close(.goAway(lastStreamID: 3, ping: nil, thenClose: true))
        )
        #expect(lifecycle.phase == .finishing)
        #expect(lifecycle.idleCheck(now: start + .seconds(300), timeout: timeout) == .stop)
    }

    @Test("a stalled connection gets a GOAWAY naming its newest stream and closes when its streams are done; once only")
    func stalled() {
        var lifecycle = HTTP2ConnectionLifecycle(now: start)
        lifecycle.streamOpened(1)
        lifecycle.streamOpened(5)
        #expect(lifecycle.stalled() == .goAway(lastStreamID: 5, ping: nil, thenClose: false))
        #expect(lifecycle.phase == .finishing)
        #expect(lifecycle.stalled() == .none)
        #expect(lifecycle.streamClosed(now: start) == .none)
        #expect(lifecycle.streamClosed(now: start) == .closeWhenWritten)
        var quiet = HTTP2ConnectionLifecycle(now: start)
        quiet.streamOpened(1)
        #expect(quiet.streamClosed(now: start) == .none)
        #expect(quiet.stalled() == .goAway(lastStreamID: 1, ping: nil, thenClose: true))
    }

    @Test("a connection that never opens a stream is idle from its start")
    func idleFromStart() {
        var lifecycle = HTTP2ConnectionLifecycle(now: start)
        #expect(
            lifecycle.idleCheck(now: start + timeout, timeout: timeout)
                == .close(.goAway(lastStreamID: .rootStream, ping: nil, thenClose: true))
        )
    }

    @Test("graceful shutdown: GOAWAY(max) and PING; on its acknowledgement the last stream; close when done")
    func gracefulShutdown() {
        var lifecycle = HTTP2ConnectionLifecycle(now: start)
        lifecycle.streamOpened(1)
        #expect(lifecycle.quiesce() == .goAway(lastStreamID: .maxID, ping: HTTP2ConnectionLifecycle.shutdownPing, thenClose: false))
        #expect(lifecycle.quiesce() == .none)
        lifecycle.streamOpened(5)  // crossed the GOAWAY on the wire
        #expect(lifecycle.pingAcknowledged(HTTP2PingData(withInteger: 42)) == .none, "someone else's PING")
        #expect(lifecycle.idleCheck(now: start + .seconds(1000), timeout: timeout) == .stop)
        #expect(lifecycle.pingAcknowledged(HTTP2ConnectionLifecycle.shutdownPing) == .goAway(lastStreamID: 5, ping: nil, thenClose: false))
        #expect(lifecycle.pingAcknowledged(HTTP2ConnectionLifecycle.shutdownPing) == .none)
        #expect(lifecycle.streamClosed(now: start) == .none)
        #expect(lifecycle.streamClosed(now: start) == .closeWhenWritten)
    }

    @Test("shutdown with no stream open closes as soon as the PING is acknowledged")
    func gracefulShutdownIdle() {
        var lifecycle = HTTP2ConnectionLifecycle(now: start)
        lifecycle.streamOpened(7)
        _ = lifecycle.streamClosed(now: start)
        _ = lifecycle.quiesce()
        #expect(lifecycle.pingAcknowledged(HTTP2ConnectionLifecycle.shutdownPing) == .goAway(lastStreamID: 7, ping: nil, thenClose: true))
    }

    @Test("a half-closed client gets the final GOAWAY at once, during a shutdown too")
    func halfClose() {
        var lifecycle = HTTP2ConnectionLifecycle(now: start)
        lifecycle.streamOpened(3)
        _ = lifecycle.quiesce()
        #expect(lifecycle.inputClosed() == .goAway(lastStreamID: 3, ping: nil, thenClose: false))
        #expect(lifecycle.inputClosed() == .none)
        #expect(lifecycle.streamClosed(now: start) == .closeWhenWritten)

        var idle = HTTP2ConnectionLifecycle(now: start)
        #expect(idle.inputClosed() == .goAway(lastStreamID: .rootStream, ping: nil, thenClose: true))
    }
}
