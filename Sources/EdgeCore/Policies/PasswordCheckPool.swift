import NIOCore
import NIOPosix
import Synchronization

/// The threads that check passwords, apart from NIO's shared pool that opens and reads files.
///
/// A bcrypt check costs tens to hundreds of milliseconds by design. On the shared pool, two dozen requests with
/// distinct wrong passwords made a 200 KB file wait seconds behind them; here they wait only for each other. The
/// queue is bounded: a check that would wait behind ``capacity`` others is not started, and the request gets 503
/// with `Retry-After` at once (the caller's answer), so a flood of guesses costs Edge a bounded amount of memory
/// and never delays file serving.
final class PasswordCheckPool: Sendable {
    private let pool: NIOThreadPool
    /// Checks running or waiting.
    private let pending = Atomic<Int>(0)
    /// Most checks running or waiting at once.
    let capacity: Int

    /// Starts `threads` threads with room for `queue` checks waiting beyond those running.
    init(threads: Int, queue: Int) {
        self.pool = NIOThreadPool(numberOfThreads: max(1, threads))
        self.capacity = max(1, threads) + max(0, queue)
        pool.start()
    }

    /// Runs `check` on the pool and completes on `eventLoop`; `nil` (and nothing started) when the queue is full.
    func submit<Result: Sendable>(on eventLoop: any EventLoop, _ check: @escaping @Sendable () -> Result) -> EventLoopFuture<Result>? {
        let previous = pending.add(1, ordering: .relaxed).oldValue
        guard previous < capacity else {
            pending.subtract(1, ordering: .relaxed)
            return nil
        }
        let future = pool.runIfActive(eventLoop: eventLoop, check)
        future.whenComplete { _ in self.pending.subtract(1, ordering: .relaxed) }
        return future
    }

    /// A pool of one thread for authenticators made outside a server (tests, tools); started on first use.
    static let standalone = PasswordCheckPool(threads: 1, queue: 64)

    /// Checks running or waiting now.
    var pendingCount: Int { pending.load(ordering: .relaxed) }

    /// Stops the threads once the checks under way are done.
    func shutdown() async {
        try? await pool.shutdownGracefully()
    }
}
