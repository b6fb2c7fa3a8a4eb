import EdgeCore
import ServiceLifecycle
import UnixSignals

/// Turns SIGHUP into ``EdgeServer/reloadAfterHangup()`` (a configuration reload) instead of its default action,
/// which ends the process.
///
/// The signal is trapped when the sequence is made (before the server starts, so that no SIGHUP after
/// `msg=ready` can kill it) and delivered through a Dispatch signal source, so no work runs in a signal
/// handler. Reloads run one at a time.
struct HangupService: Service {
    /// SIGHUPs, trapped by the caller with `await UnixSignalsSequence(trapping: .sighup)`.
    let hangups: UnixSignalsSequence
    /// The server to reload.
    let server: EdgeServer

    /// Handles SIGHUPs until graceful shutdown.
    func run() async {
        for await _ in hangups.cancelOnGracefulShutdown() {
            await server.reloadAfterHangup()
        }
    }
}

/// Turns SIGUSR1 into ``EdgeServer/reopenAccessLog()``, as nginx reopens its logs for logrotate.
struct LogReopenService: Service {
    let signals: UnixSignalsSequence
    let server: EdgeServer

    func run() async {
        for await _ in signals.cancelOnGracefulShutdown() {
            server.reopenAccessLog()
        }
    }
}
