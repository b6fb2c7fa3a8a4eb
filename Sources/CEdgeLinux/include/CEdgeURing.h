#ifndef C_EDGE_URING_H
#define C_EDGE_URING_H

// A minimal io_uring ring over the raw system calls (io_uring_setup, io_uring_enter, io_uring_register and the
// mmap'd rings), so that Edge's build needs no liburing: the kernel's <linux/io_uring.h> comes with libc's
// headers. The ring is single-issuer: one thread prepares entries, submits and reaps, as an event loop does.
// Memory ordering follows liburing: the kernel's tails are read with acquire loads and our tails and heads
// published with release stores.

#include <stddef.h>
#include <stdint.h>
#include <linux/io_uring.h>

typedef struct CEdgeURing {
    int fd;
    // submission queue
    unsigned *sqHead;
    unsigned *sqTail;
    unsigned *sqArray;
    unsigned sqMask;
    unsigned sqEntries;
    unsigned sqLocalTail;  // entries prepared, not yet published
    struct io_uring_sqe *sqes;
    // completion queue
    unsigned *cqHead;
    unsigned *cqTail;
    unsigned cqMask;
    unsigned cqEntries;
    struct io_uring_cqe *cqes;
    // mappings
    void *sqRing;
    size_t sqRingSize;
    void *cqRing;
    size_t cqRingSize;
    size_t sqesSize;
} CEdgeURing;

/// Sets up a ring of `entries` submission entries with the IORING_SETUP_* `flags`. Returns 0, or -errno (ENOSYS
/// without io_uring, EPERM where io_uring_disabled or seccomp refuses it, EINVAL for flags the kernel lacks).
int CEdgeURing_init(CEdgeURing *ring, unsigned entries, unsigned flags);

/// Unmaps and closes the ring.
void CEdgeURing_deinit(CEdgeURing *ring);

/// A zeroed submission entry to fill, or NULL when the queue is full (submit first).
struct io_uring_sqe *CEdgeURing_getSQE(CEdgeURing *ring);

/// Submits the prepared entries and, when `wait` is nonzero, waits until a completion is there or
/// `timeoutNanoseconds` passed (negative: no limit). Returns the entries submitted, or -errno (-ETIME when the
/// wait timed out, -EINTR when a signal came first: neither is an error for an event loop).
int CEdgeURing_submitAndWait(CEdgeURing *ring, unsigned wait, int64_t timeoutNanoseconds);

/// Copies up to `max` completions into `out`, consumes them, and returns how many.
unsigned CEdgeURing_reap(CEdgeURing *ring, struct io_uring_cqe *out, unsigned max);

// Preparing entries (the fields are in unions Swift does not import by name).
void CEdgeURing_prepNop(struct io_uring_sqe *sqe, uint64_t userData);
void CEdgeURing_prepRead(struct io_uring_sqe *sqe, int fd, void *buffer, unsigned length, uint64_t offset,
                         uint64_t userData);

// The socket operations of Edge's io_uring channels (Transport/URing).
struct msghdr;
struct sockaddr;
void CEdgeURing_prepRecv(struct io_uring_sqe *sqe, int fd, void *buffer, unsigned length, uint64_t userData);
void CEdgeURing_prepSend(struct io_uring_sqe *sqe, int fd, const void *buffer, unsigned length, uint64_t userData);
void CEdgeURing_prepSendmsg(struct io_uring_sqe *sqe, int fd, const struct msghdr *message, uint64_t userData);
/// A multishot accept: one completion per accepted connection (its descriptor, non-blocking and close-on-exec),
/// until an error ends it (no IORING_CQE_F_MORE).
void CEdgeURing_prepAcceptMultishot(struct io_uring_sqe *sqe, int fd, uint64_t userData);
void CEdgeURing_prepConnect(struct io_uring_sqe *sqe, int fd, const struct sockaddr *address, unsigned length,
                            uint64_t userData);
void CEdgeURing_prepPollAdd(struct io_uring_sqe *sqe, int fd, unsigned events, uint64_t userData);

/// Cancels the operations in flight whose user_data is `target`.
void CEdgeURing_prepCancelUserData(struct io_uring_sqe *sqe, uint64_t target, uint64_t userData);

/// eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC): an event loop's wake-up from other threads. -errno on failure.
int CEdgeURing_eventfd(void);

/// Names the calling thread (the first 15 bytes of `name`), as `top -H` and `perf` show it.
void CEdgeURing_nameThread(const char *name);

#endif
