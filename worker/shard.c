/*
 * shard: llm.c token shard files.
 *
 * A shard is a 1024-byte header of 256 little-endian int32 (header[0] = magic 20240520,
 * header[1] = version 1, header[2] = number of tokens) followed by that many uint16 tokens.
 * This is the layout llm.c's data scripts write, so their GPT-2 shards load here too.
 *
 * API, in order: gy_shard_open() maps a file read-only and validates it; gy_shard_close()
 * unmaps it; gy_shard_write() writes a new shard atomically.
 *
 * Invariants: an open shard's file size is exactly 1024 + 2 * ntokens bytes (a truncated or
 * oversized file is refused, never half-read); tokens points into the read-only mapping and is
 * valid until gy_shard_close(). A written shard appears under its name complete or not at all:
 * the bytes go to a temporary file in the same folder, which is fsynced and then renamed.
 */
#include "worker/shard.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/err.h"

#define HEADER_BYTES (GY_SHARD_HEADER_INTS * sizeof(int32_t))

/* Opens and validates path. On success s owns the mapping (release with gy_shard_close()); on
 * error s is left empty and nothing needs releasing. */
int gy_shard_open(gy_shard_t *s, const char *path, char *errmsg, size_t errlen) {
  int rc, fd = -1;
  void *base = MAP_FAILED;
  struct stat st;
  size_t size = 0;

  memset(s, 0, sizeof(*s));
  fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int e = errno;
    rc = (e == ENOENT || e == ENOTDIR) ? GY_ENOENT : GY_EIO;
    gy_errmsg(errmsg, errlen, "shard %s: cannot open: %s", path, strerror(e));
    goto err;
  }
  if (fstat(fd, &st) != 0) {
    rc = GY_EIO;
    gy_errmsg(errmsg, errlen, "shard %s: cannot stat: %s", path, strerror(errno));
    goto err;
  }
  if (!S_ISREG(st.st_mode)) {
    rc = GY_EIO;
    gy_errmsg(errmsg, errlen, "shard %s: not a regular file", path);
    goto err;
  }
  size = (size_t)st.st_size;
  if (size < HEADER_BYTES) {
    rc = GY_ECORRUPT;
    gy_errmsg(errmsg, errlen, "shard %s: truncated header: %zu bytes, a header needs %zu", path,
              size, (size_t)HEADER_BYTES);
    goto err;
  }
  base = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
  if (base == MAP_FAILED) {
    rc = GY_EIO;
    gy_errmsg(errmsg, errlen, "shard %s: cannot map %zu bytes: %s", path, size, strerror(errno));
    goto err;
  }
  const int32_t *h = (const int32_t *)base;
  if (h[0] != GY_SHARD_MAGIC) {
    rc = GY_ECORRUPT;
    gy_errmsg(errmsg, errlen, "shard %s: bad magic %d (expected %d): not an llm.c token shard",
              path, h[0], GY_SHARD_MAGIC);
    goto err;
  }
  if (h[1] != GY_SHARD_VERSION) {
    rc = GY_ECORRUPT;
    gy_errmsg(errmsg, errlen, "shard %s: unsupported version %d (expected %d)", path, h[1],
              GY_SHARD_VERSION);
    goto err;
  }
  if (h[2] < 0) {
    rc = GY_ECORRUPT;
    gy_errmsg(errmsg, errlen, "shard %s: negative token count %d in the header", path, h[2]);
    goto err;
  }
  size_t n = (size_t)h[2];
  size_t want = HEADER_BYTES + n * sizeof(uint16_t);
  if (size != want) {
    rc = GY_ECORRUPT;
    gy_errmsg(errmsg, errlen,
              "shard %s: %s: the header says %zu tokens (%zu bytes) but the file has %zu bytes",
              path, size < want ? "truncated" : "oversized", n, want, size);
    goto err;
  }
  close(fd);
  s->map_base = base;
  s->map_len = size;
  s->tokens = (const uint16_t *)((const char *)base + HEADER_BYTES);
  s->ntokens = n;
  return GY_OK;

err:
  if (base != MAP_FAILED) munmap(base, size);
  if (fd >= 0) close(fd);
  return rc;
}

/* Unmaps s; s->tokens is no longer valid. Closing an empty (zeroed) shard is a no-op. */
void gy_shard_close(gy_shard_t *s) {
  if (!s) return;
  if (s->map_base) munmap(s->map_base, s->map_len);
  memset(s, 0, sizeof(*s));
}

/* fsyncs the folder holding path so the rename itself survives a crash. Best effort. */
static void sync_parent(const char *path) {
  char *copy = strdup(path);
  if (!copy) return;
  int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    (void)fsync(fd);
    close(fd);
  }
  free(copy);
}

/* Writes tokens as a shard at path. The caller keeps tokens. A failure leaves no temporary
 * file behind and does not touch an existing file at path. */
int gy_shard_write(const char *path, const uint16_t *tokens, size_t ntokens, char *errmsg,
                   size_t errlen) {
  int rc, fd = -1;
  FILE *f = NULL;
  char *tmp = NULL;

  if (ntokens > (size_t)INT32_MAX) {
    gy_errmsg(errmsg, errlen, "shard %s: %zu tokens do not fit the int32 header count", path,
              ntokens);
    return GY_ERANGE;
  }
  size_t plen = strlen(path);
  tmp = malloc(plen + 16);
  if (!tmp) {
    gy_errmsg(errmsg, errlen, "shard %s: out of memory", path);
    return GY_ENOMEM;
  }
  memcpy(tmp, path, plen);
  memcpy(tmp + plen, ".tmp.XXXXXX", sizeof(".tmp.XXXXXX"));
  fd = mkstemp(tmp);
  if (fd < 0) {
    rc = GY_EIO;
    gy_errmsg(errmsg, errlen, "shard %s: cannot create a temporary file: %s", path,
              strerror(errno));
    free(tmp);
    return rc;
  }
  /* mkstemp makes the file private; a shard is data for every reader, like any output. */
  if (fchmod(fd, 0644) != 0) {
    rc = GY_EIO;
    gy_errmsg(errmsg, errlen, "shard %s: chmod: %s", path, strerror(errno));
    goto err;
  }
  f = fdopen(fd, "wb");
  if (!f) {
    rc = GY_EIO;
    gy_errmsg(errmsg, errlen, "shard %s: fdopen: %s", path, strerror(errno));
    goto err;
  }
  fd = -1; /* owned by f now */
  int32_t header[GY_SHARD_HEADER_INTS];
  memset(header, 0, sizeof(header));
  header[0] = GY_SHARD_MAGIC;
  header[1] = GY_SHARD_VERSION;
  header[2] = (int32_t)ntokens;
  if (fwrite(header, sizeof(header), 1, f) != 1 ||
      (ntokens && fwrite(tokens, sizeof(uint16_t), ntokens, f) != ntokens) || fflush(f) != 0) {
    rc = GY_EIO;
    gy_errmsg(errmsg, errlen, "shard %s: write failed: %s", path, strerror(errno));
    goto err;
  }
  if (fsync(fileno(f)) != 0) {
    rc = GY_EIO;
    gy_errmsg(errmsg, errlen, "shard %s: fsync failed: %s", path, strerror(errno));
    goto err;
  }
  int cr = fclose(f);
  f = NULL;
  if (cr != 0) {
    rc = GY_EIO;
    gy_errmsg(errmsg, errlen, "shard %s: close failed: %s", path, strerror(errno));
    goto err;
  }
  if (rename(tmp, path) != 0) {
    rc = GY_EIO;
    gy_errmsg(errmsg, errlen, "shard %s: rename from %s failed: %s", path, tmp, strerror(errno));
    goto err;
  }
  sync_parent(path);
  free(tmp);
  return GY_OK;

err:
  if (f) fclose(f);
  if (fd >= 0) close(fd);
  unlink(tmp);
  free(tmp);
  return rc;
}
