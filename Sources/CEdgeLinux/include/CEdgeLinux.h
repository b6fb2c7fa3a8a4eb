#ifndef C_EDGE_LINUX_H
#define C_EDGE_LINUX_H

#include <sys/types.h>

#include "CEdgeURing.h"

/// Reads up to `count` bytes of `fd` at `offset` like pread(2), but only what is already in the page cache:
/// preadv2(2) with RWF_NOWAIT (Linux 4.14 and later). Returns the bytes read (fewer than `count` when only part
/// is cached or the file ends; 0 at end of file), or -1 with errno EAGAIN when a read would have to wait for the
/// disk, or another errno (ENOSYS, EOPNOTSUPP) where the system or file system cannot read this way.
/// Swift's Glibc module does not import preadv2: it is declared only under _GNU_SOURCE.
ssize_t CEdgeLinux_preadCached(int fd, void *buffer, size_t count, off_t offset);

/// Makes a TLS context choose the cipher suite by its own order rather than the client's
/// (SSL_OP_CIPHER_SERVER_PREFERENCE). `context` is the BoringSSL `SSL_CTX *` inside an `NIOSSLContext`, which NIOSSL
/// keeps private and offers no setting for; BoringSSL's functions are linked in under NIOSSL's symbol prefix.
void CEdgeLinux_preferServerCipherOrder(void *context);

#endif
