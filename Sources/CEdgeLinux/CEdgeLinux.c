#define _GNU_SOURCE
#include "CEdgeLinux.h"

#include <errno.h>
#include <sys/uio.h>

ssize_t CEdgeLinux_preadCached(int fd, void *buffer, size_t count, off_t offset) {
#if defined(__linux__) && defined(RWF_NOWAIT)
    struct iovec vector = {.iov_base = buffer, .iov_len = count};
    return preadv2(fd, &vector, 1, offset, RWF_NOWAIT);
#else
    (void)fd;
    (void)buffer;
    (void)count;
    (void)offset;
    errno = ENOSYS;
    return -1;
#endif
}
