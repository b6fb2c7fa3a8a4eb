import CEdgeLinux
import Glibc

/// One io_uring ring (issue 29): submission entries prepared by one thread, submitted with the same
/// `io_uring_enter` that waits for completions. Over the raw system calls (`CEdgeURing`), so the build needs no
/// liburing. Not thread-safe: it belongs to the thread of the event loop that created it.
final class URing {
    /// Why a ring could not be set up.
    struct Unavailable: Error, CustomStringConvertible {
        let errno: Int32
        var description: String {
            switch errno {
            case ENOSYS: "io_uring is not available in this kernel (ENOSYS)"
            case EPERM: "io_uring is not permitted here (EPERM: kernel.io_uring_disabled or a seccomp filter)"
            default: "io_uring_setup failed: \(String(cString: strerror(errno))) (errno \(errno))"
            }
        }
    }

    private let ring: UnsafeMutablePointer<CEdgeURing>

    /// A ring with `entries` submission entries. It asks for a single-issuer ring whose completions' task work
    /// runs only when this thread waits (`SINGLE_ISSUER`, `DEFER_TASKRUN`, kernel 6.1) and falls back to a plain
    /// ring on older kernels. Must be created on the thread that will use it.
    init(entries: UInt32) throws(Unavailable) {
        ring = .allocate(capacity: 1)
        let preferred = UInt32(IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN)
        var result = CEdgeURing_init(ring, entries, preferred)
        if result == -EINVAL { result = CEdgeURing_init(ring, entries, 0) }
        guard result == 0 else {
            ring.deallocate()
            throw Unavailable(errno: -result)
        }
    }

    deinit {
        CEdgeURing_deinit(ring)
        ring.deallocate()
    }

    /// A zeroed submission entry to fill in `prepare`. When the queue is full, what is prepared is submitted
    /// first to make room.
    func prepare(_ prepare: (UnsafeMutablePointer<io_uring_sqe>) -> Void) {
        if let sqe = CEdgeURing_getSQE(ring) {
            prepare(sqe)
            return
        }
        _ = CEdgeURing_submitAndWait(ring, 0, -1)
        guard let sqe = CEdgeURing_getSQE(ring) else { fatalError("io_uring: no submission entry after a submit") }
        prepare(sqe)
    }

    /// Submits what is prepared and waits for a completion, at most `timeout` (`nil`: no limit). Returns the
    /// number submitted, or the negative errno; a timeout or a signal is not an error.
    func submitAndWait(timeout: Int64?) -> Int32 {
        CEdgeURing_submitAndWait(ring, 1, timeout ?? -1)
    }

    /// Copies up to `buffer.count` completions into `buffer` and consumes them; returns how many.
    func reap(into buffer: UnsafeMutableBufferPointer<io_uring_cqe>) -> Int {
        Int(CEdgeURing_reap(ring, buffer.baseAddress, UInt32(buffer.count)))
    }
}
