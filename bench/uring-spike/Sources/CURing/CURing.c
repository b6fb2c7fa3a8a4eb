#include "CURing.h"
#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct io_uring *curing_create(unsigned entries, int *error) {
    struct io_uring *ring = calloc(1, sizeof(*ring));
    struct io_uring_params params;
    memset(&params, 0, sizeof(params));
    // One thread submits; completions' task work runs when that thread waits, not by interrupting it.
    params.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_COOP_TASKRUN;
    int rc = io_uring_queue_init_params(entries, ring, &params);
    if (rc < 0) { *error = -rc; free(ring); return NULL; }
    *error = 0;
    return ring;
}

struct io_uring_buf_ring *curing_buffers(struct io_uring *ring, unsigned count, unsigned size, unsigned short group,
                                         unsigned char **storage, int *error) {
    void *mem = NULL;
    if (posix_memalign(&mem, 4096, count * sizeof(struct io_uring_buf))) { *error = ENOMEM; return NULL; }
    struct io_uring_buf_ring *br = mem;
    io_uring_buf_ring_init(br);
    struct io_uring_buf_reg reg;
    memset(&reg, 0, sizeof(reg));
    reg.ring_addr = (unsigned long)br;
    reg.ring_entries = count;
    reg.bgid = group;
    int rc = io_uring_register_buf_ring(ring, &reg, 0);
    if (rc < 0) { *error = -rc; return NULL; }
    *storage = malloc((size_t)count * size);
    for (unsigned i = 0; i < count; i++)
        io_uring_buf_ring_add(br, *storage + (size_t)i * size, size, i, io_uring_buf_ring_mask(count), i);
    io_uring_buf_ring_advance(br, count);
    *error = 0;
    return br;
}

static unsigned added_since_commit = 0;

void curing_buffer_return(struct io_uring_buf_ring *br, unsigned count, unsigned char *storage, unsigned size,
                          unsigned short bid) {
    io_uring_buf_ring_add(br, storage + (size_t)bid * size, size, bid, io_uring_buf_ring_mask(count),
                          added_since_commit++);
}

void curing_buffer_commit(struct io_uring_buf_ring *br, int added) {
    (void)added;
    if (added_since_commit) { io_uring_buf_ring_advance(br, added_since_commit); added_since_commit = 0; }
}

static struct io_uring_sqe *sqe_for(struct io_uring *ring) {
    struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
    if (!sqe) { io_uring_submit(ring); sqe = io_uring_get_sqe(ring); }
    return sqe;
}

int curing_accept_multishot(struct io_uring *ring, int fd, uint64_t data) {
    struct io_uring_sqe *sqe = sqe_for(ring);
    if (!sqe) return -EBUSY;
    io_uring_prep_multishot_accept(sqe, fd, NULL, NULL, 0);
    io_uring_sqe_set_data64(sqe, data);
    return 0;
}

int curing_recv_multishot(struct io_uring *ring, int fd, unsigned short group, uint64_t data) {
    struct io_uring_sqe *sqe = sqe_for(ring);
    if (!sqe) return -EBUSY;
    io_uring_prep_recv_multishot(sqe, fd, NULL, 0, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = group;
    io_uring_sqe_set_data64(sqe, data);
    return 0;
}

int curing_send(struct io_uring *ring, int fd, const void *bytes, unsigned length, uint64_t data) {
    struct io_uring_sqe *sqe = sqe_for(ring);
    if (!sqe) return -EBUSY;
    io_uring_prep_send(sqe, fd, bytes, length, MSG_NOSIGNAL);
    io_uring_sqe_set_data64(sqe, data);
    return 0;
}

int curing_close(struct io_uring *ring, int fd, uint64_t data) {
    struct io_uring_sqe *sqe = sqe_for(ring);
    if (!sqe) return -EBUSY;
    io_uring_prep_close(sqe, fd);
    io_uring_sqe_set_data64(sqe, data);
    return 0;
}

int curing_submit_and_wait(struct io_uring *ring, unsigned wait) { return io_uring_submit_and_wait(ring, wait); }

unsigned curing_peek(struct io_uring *ring, struct io_uring_cqe **cqes, unsigned count) {
    return io_uring_peek_batch_cqe(ring, cqes, count);
}

void curing_advance(struct io_uring *ring, unsigned count) { io_uring_cq_advance(ring, count); }

#include <sys/socket.h>
int curing_accept_nonblocking(int fd) { return accept4(fd, NULL, NULL, SOCK_NONBLOCK); }
