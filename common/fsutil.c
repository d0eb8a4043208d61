/*
 * fsutil: durable whole-file writes (temporary file, fsync, rename, fsync of the folder),
 * shared by checkpoints and llm.c model files.
 */
#include "common/fsutil.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/err.h"

static int write_all(int fd, const uint8_t *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) return -1;
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

int gy_write_file_atomic(const char *path, const struct iovec *iov, int iovcnt, char *errmsg,
                         size_t errlen) {
  if (!path || !*path || (iovcnt > 0 && !iov)) return GY_EINVAL;
  char eb[128];
  int rc = GY_EIO, fd = -1, tmp_made = 0;
  size_t plen = strlen(path);
  char *tmp = malloc(plen + 32), *dir = malloc(plen + 2);
  if (!tmp || !dir) {
    rc = GY_ENOMEM;
    gy_errmsg(errmsg, errlen, "%s: out of memory", path);
    goto err;
  }
  snprintf(tmp, plen + 32, "%s.tmp.%ld", path, (long)getpid());
  /* The folder whose entry the rename changes, fsynced so the rename itself is durable. */
  const char *slash = strrchr(path, '/');
  if (!slash) {
    strcpy(dir, ".");
  } else if (slash == path) {
    strcpy(dir, "/");
  } else {
    memcpy(dir, path, (size_t)(slash - path));
    dir[slash - path] = '\0';
  }
  fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    gy_errmsg(errmsg, errlen, "%s: cannot create temporary file %s: %s", path, tmp,
              strerror_r(errno, eb, sizeof(eb)));
    goto err;
  }
  tmp_made = 1;
  for (int i = 0; i < iovcnt; i++) {
    if (write_all(fd, iov[i].iov_base, iov[i].iov_len) != 0) {
      gy_errmsg(errmsg, errlen, "%s: write of %s failed: %s", path, tmp,
                strerror_r(errno, eb, sizeof(eb)));
      goto err;
    }
  }
  if (fsync(fd) != 0) {
    gy_errmsg(errmsg, errlen, "%s: fsync of %s failed: %s", path, tmp,
              strerror_r(errno, eb, sizeof(eb)));
    goto err;
  }
  int c = close(fd);
  fd = -1;
  if (c != 0) {
    gy_errmsg(errmsg, errlen, "%s: close of %s failed: %s", path, tmp,
              strerror_r(errno, eb, sizeof(eb)));
    goto err;
  }
  if (rename(tmp, path) != 0) {
    gy_errmsg(errmsg, errlen, "%s: rename from %s failed: %s", path, tmp,
              strerror_r(errno, eb, sizeof(eb)));
    goto err;
  }
  tmp_made = 0;
  int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0 || fsync(dfd) != 0) {
    gy_errmsg(errmsg, errlen, "%s: fsync of folder %s failed: %s", path, dir,
              strerror_r(errno, eb, sizeof(eb)));
    if (dfd >= 0) close(dfd);
    goto err;
  }
  close(dfd);
  free(tmp);
  free(dir);
  return 0;

err:
  if (fd >= 0) close(fd);
  if (tmp_made) unlink(tmp);
  free(tmp);
  free(dir);
  return rc;
}
