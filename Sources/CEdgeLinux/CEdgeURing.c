#define _GNU_SOURCE
#include "CEdgeURing.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#if defined(__NR_io_uring_setup)

static int uring_setup(unsigned entries, struct io_uring_params *params) {
    return (int)syscall(__NR_io_uring_setup, entries, params);
}

static int uring_enter(int fd, unsigned submit, unsigned minComplete, unsigned flags, void *arg, size_t argSize) {
    return (int)syscall(__NR_io_uring_enter, fd, submit, minComplete, flags, arg, argSize);
}

int CEdgeURing_init(CEdgeURing *ring, unsigned entries, unsigned flags) {
    memset(ring, 0, sizeof(*ring));
    ring->fd = -1;
    struct io_uring_params params;
    memset(&params, 0, sizeof(params));
    params.flags = flags;
    int fd = uring_setup(entries, &params);
    if (fd < 0) return -errno;
    ring->fd = fd;

    ring->sqRingSize = params.sq_off.array + params.sq_entries * sizeof(unsigned);
    ring->cqRingSize = params.cq_off.cqes + params.cq_entries * sizeof(struct io_uring_cqe);
    int single = (params.features & IORING_FEAT_SINGLE_MMAP) != 0;
    if (single) {
        if (ring->cqRingSize > ring->sqRingSize) ring->sqRingSize = ring->cqRingSize;
        ring->cqRingSize = ring->sqRingSize;
    }
    ring->sqRing = mmap(NULL, ring->sqRingSize, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd,
                        IORING_OFF_SQ_RING);
    if (ring->sqRing == MAP_FAILED) goto failed;
    if (single) {
        ring->cqRing = ring->sqRing;
    } else {
        ring->cqRing = mmap(NULL, ring->cqRingSize, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd,
                            IORING_OFF_CQ_RING);
        if (ring->cqRing == MAP_FAILED) { ring->cqRing = NULL; goto failed; }
    }
    ring->sqesSize = params.sq_entries * sizeof(struct io_uring_sqe);
    ring->sqes = mmap(NULL, ring->sqesSize, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd,
                      IORING_OFF_SQES);
    if (ring->sqes == MAP_FAILED) { ring->sqes = NULL; goto failed; }

    char *sq = ring->sqRing;
    ring->sqHead = (unsigned *)(sq + params.sq_off.head);
    ring->sqTail = (unsigned *)(sq + params.sq_off.tail);
    ring->sqArray = (unsigned *)(sq + params.sq_off.array);
    ring->sqMask = *(unsigned *)(sq + params.sq_off.ring_mask);
    ring->sqEntries = *(unsigned *)(sq + params.sq_off.ring_entries);
    ring->sqLocalTail = *ring->sqTail;
    // The array maps ring slots to entries one to one, once.
    for (unsigned i = 0; i < ring->sqEntries; i++) ring->sqArray[i] = i;

    char *cq = ring->cqRing;
    ring->cqHead = (unsigned *)(cq + params.cq_off.head);
    ring->cqTail = (unsigned *)(cq + params.cq_off.tail);
    ring->cqMask = *(unsigned *)(cq + params.cq_off.ring_mask);
    ring->cqEntries = *(unsigned *)(cq + params.cq_off.ring_entries);
    ring->cqes = (struct io_uring_cqe *)(cq + params.cq_off.cqes);
    return 0;

failed: {
        int error = errno;
        if (ring->sqRing == MAP_FAILED) ring->sqRing = NULL;
        CEdgeURing_deinit(ring);
        return -error;
    }
}

void CEdgeURing_deinit(CEdgeURing *ring) {
    if (ring->sqes) munmap(ring->sqes, ring->sqesSize);
    if (ring->cqRing && ring->cqRing != ring->sqRing) munmap(ring->cqRing, ring->cqRingSize);
    if (ring->sqRing) munmap(ring->sqRing, ring->sqRingSize);
    if (ring->fd >= 0) close(ring->fd);
    memset(ring, 0, sizeof(*ring));
    ring->fd = -1;
}

struct io_uring_sqe *CEdgeURing_getSQE(CEdgeURing *ring) {
    unsigned head = __atomic_load_n(ring->sqHead, __ATOMIC_ACQUIRE);
    if (ring->sqLocalTail - head >= ring->sqEntries) return NULL;
    struct io_uring_sqe *sqe = &ring->sqes[ring->sqLocalTail & ring->sqMask];
    ring->sqLocalTail++;
    memset(sqe, 0, sizeof(*sqe));
    return sqe;
}

int CEdgeURing_submitAndWait(CEdgeURing *ring, unsigned wait, int64_t timeoutNanoseconds) {
    unsigned submit = ring->sqLocalTail - *ring->sqTail;
    // Publish the prepared entries: the kernel reads the tail with an acquire load.
    __atomic_store_n(ring->sqTail, ring->sqLocalTail, __ATOMIC_RELEASE);
    unsigned flags = 0;
    if (wait) {
        flags |= IORING_ENTER_GETEVENTS;
        // Completions already there: no wait.
        if (__atomic_load_n(ring->cqTail, __ATOMIC_ACQUIRE) != *ring->cqHead) wait = 0;
    }
    if (submit == 0 && wait == 0) return 0;
    int result;
    if (wait && timeoutNanoseconds >= 0) {
        struct __kernel_timespec ts = {.tv_sec = timeoutNanoseconds / 1000000000LL,
                                       .tv_nsec = timeoutNanoseconds % 1000000000LL};
        struct io_uring_getevents_arg arg;
        memset(&arg, 0, sizeof(arg));
        arg.ts = (uint64_t)(uintptr_t)&ts;
        result = uring_enter(ring->fd, submit, 1, flags | IORING_ENTER_EXT_ARG, &arg, sizeof(arg));
    } else {
        result = uring_enter(ring->fd, submit, wait ? 1 : 0, flags, NULL, 0);
    }
    return result < 0 ? -errno : result;
}

unsigned CEdgeURing_reap(CEdgeURing *ring, struct io_uring_cqe *out, unsigned max) {
    unsigned head = *ring->cqHead;
    unsigned tail = __atomic_load_n(ring->cqTail, __ATOMIC_ACQUIRE);
    unsigned count = 0;
    while (head != tail && count < max) {
        out[count++] = ring->cqes[head & ring->cqMask];
        head++;
    }
    __atomic_store_n(ring->cqHead, head, __ATOMIC_RELEASE);
    return count;
}

#else

int CEdgeURing_init(CEdgeURing *ring, unsigned entries, unsigned flags) {
    (void)entries;
    (void)flags;
    memset(ring, 0, sizeof(*ring));
    ring->fd = -1;
    return -ENOSYS;
}
void CEdgeURing_deinit(CEdgeURing *ring) { (void)ring; }
struct io_uring_sqe *CEdgeURing_getSQE(CEdgeURing *ring) { (void)ring; return NULL; }
int CEdgeURing_submitAndWait(CEdgeURing *ring, unsigned wait, int64_t timeoutNanoseconds) {
    (void)ring; (void)wait; (void)timeoutNanoseconds;
    return -ENOSYS;
}
unsigned CEdgeURing_reap(CEdgeURing *ring, struct io_uring_cqe *out, unsigned max) {
    (void)ring; (void)out; (void)max;
    return 0;
}

#endif

void CEdgeURing_prepNop(struct io_uring_sqe *sqe, uint64_t userData) {
    sqe->opcode = IORING_OP_NOP;
    sqe->fd = -1;
    sqe->user_data = userData;
}

void CEdgeURing_prepRead(struct io_uring_sqe *sqe, int fd, void *buffer, unsigned length, uint64_t offset,
                         uint64_t userData) {
    sqe->opcode = IORING_OP_READ;
    sqe->fd = fd;
    sqe->addr = (uint64_t)(uintptr_t)buffer;
    sqe->len = length;
    sqe->off = offset;
    sqe->user_data = userData;
}

void CEdgeURing_prepRecv(struct io_uring_sqe *sqe, int fd, void *buffer, unsigned length, uint64_t userData) {
    sqe->opcode = IORING_OP_RECV;
    sqe->fd = fd;
    sqe->addr = (uint64_t)(uintptr_t)buffer;
    sqe->len = length;
    sqe->user_data = userData;
}

void CEdgeURing_prepSend(struct io_uring_sqe *sqe, int fd, const void *buffer, unsigned length, uint64_t userData) {
    sqe->opcode = IORING_OP_SEND;
    sqe->fd = fd;
    sqe->addr = (uint64_t)(uintptr_t)buffer;
    sqe->len = length;
    sqe->msg_flags = MSG_NOSIGNAL;
    sqe->user_data = userData;
}

void CEdgeURing_prepSendmsg(struct io_uring_sqe *sqe, int fd, const struct msghdr *message, uint64_t userData) {
    sqe->opcode = IORING_OP_SENDMSG;
    sqe->fd = fd;
    sqe->addr = (uint64_t)(uintptr_t)message;
    sqe->len = 1;
    sqe->msg_flags = MSG_NOSIGNAL;
    sqe->user_data = userData;
}

void CEdgeURing_prepAcceptMultishot(struct io_uring_sqe *sqe, int fd, uint64_t userData) {
    sqe->opcode = IORING_OP_ACCEPT;
    sqe->fd = fd;
    sqe->ioprio = IORING_ACCEPT_MULTISHOT;
    sqe->accept_flags = SOCK_NONBLOCK | SOCK_CLOEXEC;
    sqe->user_data = userData;
}

void CEdgeURing_prepConnect(struct io_uring_sqe *sqe, int fd, const struct sockaddr *address, unsigned length,
                            uint64_t userData) {
    sqe->opcode = IORING_OP_CONNECT;
    sqe->fd = fd;
    sqe->addr = (uint64_t)(uintptr_t)address;
    sqe->off = length;
    sqe->user_data = userData;
}

void CEdgeURing_prepPollAdd(struct io_uring_sqe *sqe, int fd, unsigned events, uint64_t userData) {
    sqe->opcode = IORING_OP_POLL_ADD;
    sqe->fd = fd;
    sqe->poll32_events = events;
    sqe->user_data = userData;
}

void CEdgeURing_prepCancelUserData(struct io_uring_sqe *sqe, uint64_t target, uint64_t userData) {
    sqe->opcode = IORING_OP_ASYNC_CANCEL;
    sqe->fd = -1;
    sqe->addr = target;
    sqe->cancel_flags = IORING_ASYNC_CANCEL_ALL;
    sqe->user_data = userData;
}

int CEdgeURing_eventfd(void) {
    int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

void CEdgeURing_nameThread(const char *name) {
    char shortName[16];
    strncpy(shortName, name, sizeof(shortName) - 1);
    shortName[sizeof(shortName) - 1] = 0;
    pthread_setname_np(pthread_self(), shortName);
}
