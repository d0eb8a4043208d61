/* fsutil: writing a file so that a crash leaves either the old file or the new one, never a
 * mix: a temporary file in the same folder, fsync, rename, fsync of the folder. */
#ifndef GY_FSUTIL_H
#define GY_FSUTIL_H

#include <stddef.h>
#include <sys/uio.h>

/* Writes the iovcnt segments, in order, as the content of path. Errors are GY_EIO (or
 * GY_ENOMEM, GY_EINVAL) with "PATH: what failed: why" in errmsg; the temporary file is removed
 * and an existing path is left untouched. */
int gy_write_file_atomic(const char *path, const struct iovec *iov, int iovcnt, char *errmsg,
                         size_t errlen);

#endif
