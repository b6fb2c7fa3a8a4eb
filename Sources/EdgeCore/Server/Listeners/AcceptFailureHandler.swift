#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import Logging
import NIOCore
import Synchronization

/// Keeps a listener from spinning when `accept` fails for want of resources, and says so in the log.
///
/// At the open-file limit (`EMFILE`, `ENFILE`) or out of kernel memory, `accept` fails at once for as long as
/// a connection waits in the backlog, and the listening socket stays readable. The classic
/// `ServerBootstrap.bind` adds no back-off, and NIO's `AcceptBackoffHandler` would not help here: it delays
/// the next `read`, but a failed `accept` leaves the channel's read pending, so no `read` is ever asked for
/// and epoll keeps reporting the socket — the listener retried about 2,400 times a second and used most of a
/// core. Like nginx, which stops accepting for 500 ms then, this handler turns the listener's auto-read off
/// for ``pause`` (which removes the socket from epoll) and logs a warning — at most one every ``logInterval``,
/// with the number of failures since the last. Other accept errors are only logged.
final class AcceptFailureHandler: ChannelInboundHandler {
    typealias InboundIn = any Channel
    typealias InboundOut = any Channel

    /// How long a listener stops accepting after a failure for want of resources.
    static let pause = TimeAmount.milliseconds(250)
    /// The shortest time between two warnings from one listener.
    static let logInterval = TimeAmount.seconds(10)

    private let logger: Logger
    private let address: String
    private var paused = false
    private let warnings: Warnings

    /// When the listener last warned, and the failures since: shared by the server channels of one listener (one
    /// per event loop on the io_uring transport), so that the listener warns once per ``logInterval``, not once
    /// per loop. Used on failures only.
    final class Warnings: Sendable {
        fileprivate let state = Mutex<(lastLogged: NIODeadline?, suppressed: Int)>((nil, 0))
        init() {}
    }

    /// - Parameter address: The listener's configured address, for the log.
    init(logger: Logger, address: String, warnings: Warnings = Warnings()) {
        self.logger = logger
        self.address = address
        self.warnings = warnings
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        let shortage = (error as? IOError).map { Self.isResourceShortage($0.errnoCode) } ?? false
        if shortage { pauseAccepting(context: context) }
        log(error, shortage: shortage)
    }

    private func pauseAccepting(context: ChannelHandlerContext) {
        guard !paused, let options = context.channel.syncOptions else { return }
        paused = true
        try? options.setOption(.autoRead, value: false)
        context.eventLoop.assumeIsolated().scheduleTask(in: Self.pause) {
            self.paused = false
            try? context.channel.syncOptions?.setOption(.autoRead, value: true)
        }
    }

    private func log(_ error: any Error, shortage: Bool) {
        let now = NIODeadline.now()
        let suppressed = warnings.state.withLock { state -> Int? in
            if let lastLogged = state.lastLogged, now - lastLogged < Self.logInterval {
                state.suppressed += 1
                return nil
            }
            defer { state = (now, 0) }
            return state.suppressed
        }
        guard let suppressed else { return }
        var metadata: Logger.Metadata = ["listener": "\(address)", "error": "\(error)"]
        if shortage {
            metadata["pause_ms"] = "\(Self.pause.nanoseconds / 1_000_000)"
            metadata["hint"] = "raise the open-file limit (ulimit -n) or lower limits.max_connections"
        }
        if suppressed > 0 { metadata["failures_since_last_warning"] = "\(suppressed)" }
        logger.warning("accept failed", metadata: metadata)
    }

    /// Whether `accept` failed because the process or system ran out of descriptors or memory.
    static func isResourceShortage(_ code: CInt) -> Bool {
        code == EMFILE || code == ENFILE || code == ENOBUFS || code == ENOMEM
    }
}
