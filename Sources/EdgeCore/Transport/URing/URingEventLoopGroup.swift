import Atomics
import Dispatch
import Glibc
import NIOCore

/// The io_uring transport's event loops (issue 29): one thread and one ring each, thread per core. Listeners bind
/// one socket per loop with `SO_REUSEPORT` (``URingServerChannel``), so that a connection is accepted and served by
/// the same thread.
final class URingEventLoopGroup: EventLoopGroup, Sendable {
    let loops: [URingEventLoop]
    private let index = ManagedAtomic<Int>(0)

    /// Starts `threads` loops. Throws ``URing/Unavailable`` when the kernel refuses io_uring (the loops already
    /// started are stopped again), so that the caller can use epoll instead.
    init(threads: Int, name: String = "edge-uring") throws {
        // A peer gone while `sendfile` writes to it must cost an EPIPE, not the process (NIO's loops ignore SIGPIPE
        // the same way).
        signal(SIGPIPE, SIG_IGN)
        var loops: [URingEventLoop] = []
        do {
            for number in 0..<max(1, threads) {
                loops.append(try URingEventLoop.start(name: "\(name)-\(number)"))
            }
        } catch {
            for loop in loops { try? loop.syncShutdownGracefully() }
            throw error
        }
        self.loops = loops
    }

    func next() -> any EventLoop {
        loops[index.loadThenWrappingIncrement(ordering: .relaxed) % loops.count]
    }

    func any() -> any EventLoop {
        loops.first(where: \.inEventLoop) ?? next()
    }

    func makeIterator() -> EventLoopIterator {
        EventLoopIterator(loops)
    }

    func shutdownGracefully(queue: DispatchQueue, _ callback: @escaping @Sendable ((any Error)?) -> Void) {
        let group = DispatchGroup()
        for loop in loops {
            group.enter()
            loop.shutdownGracefully(queue: queue) { _ in group.leave() }
        }
        group.notify(queue: queue) { callback(nil) }
    }
}
