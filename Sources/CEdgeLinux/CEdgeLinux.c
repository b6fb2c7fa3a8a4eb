#define _GNU_SOURCE
#include "CEdgeLinux.h"

#include <errno.h>
#include <stdint.h>
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

/* BoringSSL as NIOSSL builds it: every symbol carries the CNIOBoringSSL_ prefix. */
extern uint32_t CNIOBoringSSL_SSL_CTX_set_options(void *context, uint32_t options);

void CEdgeLinux_preferServerCipherOrder(void *context) {
    CNIOBoringSSL_SSL_CTX_set_options(context, 0x00400000u /* SSL_OP_CIPHER_SERVER_PREFERENCE */);
}
