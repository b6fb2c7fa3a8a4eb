// The few liburing calls the io_uring responder needs, as plain functions: liburing's helpers are `static inline`
// and some use macros Swift cannot import.
#pragma once
#include <liburing.h>
#include <stdint.h>
#include <sys/epoll.h>

struct io_uring *curing_create(unsigned entries, int *error);
struct io_uring_buf_ring *curing_buffers(struct io_uring *ring, unsigned count, unsigned size, unsigned short group,
                                         unsigned char **storage, int *error);
void curing_buffer_return(struct io_uring_buf_ring *br, unsigned count, unsigned char *storage, unsigned size,
                          unsigned short bid);
void curing_buffer_commit(struct io_uring_buf_ring *br, int added);
int curing_accept_multishot(struct io_uring *ring, int fd, uint64_t data);
int curing_recv_multishot(struct io_uring *ring, int fd, unsigned short group, uint64_t data);
int curing_send(struct io_uring *ring, int fd, const void *bytes, unsigned length, uint64_t data);
int curing_close(struct io_uring *ring, int fd, uint64_t data);
int curing_submit_and_wait(struct io_uring *ring, unsigned wait);
unsigned curing_peek(struct io_uring *ring, struct io_uring_cqe **cqes, unsigned count);
void curing_advance(struct io_uring *ring, unsigned count);
int curing_accept_nonblocking(int fd);
