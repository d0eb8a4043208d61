/*
 * ckpt: checkpoint files (one per rank), their in-memory snapshots, and the background writer.
 *
 * API, in order: gy_ckpt_build / _buf_ref / _buf_unref / _buf_data / _buf_len / _buf_step /
 * _buf_refs (a snapshot: exactly the bytes of the file); gy_ckpt_parse / _view_free / _find
 * (validation); gy_ckpt_load_file / _write_file (durable files); gy_ckpt_writer_* (one thread
 * writing queued snapshots in order).
 *
 * File format, version 1. Every integer is little-endian and serialized field by field (no
 * struct is ever dumped, so compiler padding never reaches a file).
 *
 *   header (72 bytes, at offset 0)
 *      0  magic        8 bytes "GYROCKP1"
 *      8  version      u32 = 1
 *     12  nblobs       u32
 *     16  step         u64
 *     24  config_hash  u64
 *     32  rank, world  i32, i32
 *     40  dp, tp       i32, i32
 *     48  dir_offset   u64 = 72 (the directory follows the header)
 *     56  total_len    u64, the length of the whole file
 *     64  dir_crc      u32, CRC-32C of the nblobs directory entries
 *     68  header_crc   u32, CRC-32C of header bytes [0, 68)
 *   directory (nblobs entries of 72 bytes, at dir_offset)
 *      0  name         48 bytes, NUL-terminated, NUL-padded, non-empty, unique in the file
 *     48  offset       u64
 *     56  nbytes       u64
 *     64  crc          u32, CRC-32C of the blob's bytes
 *     68  reserved     u32 = 0
 *   blobs, in directory order: blob i starts at the first multiple of 64 at or after the end
 *   of the directory (i = 0) or of blob i-1; the bytes between are zero. The file ends where
 *   the last blob ends (at the end of the directory when there is no blob).
 *
 * Invariants. The layout is canonical: a writer has exactly one way to place given blobs, and
 * the parser demands that placement, zero padding and zero reserved fields. Together with the
 * header, directory and blob CRCs, this means every byte of a file is checked, so any change to
 * a valid file is refused (short of a CRC collision). A snapshot's bytes are allocated 64-byte
 * aligned, so the blobs of a parsed snapshot are 64-byte aligned in memory too.
 *
 * Snapshots are immutable once built and reference counted (stdatomic), so the in-memory ring
 * and the background writer share them across threads without a lock. The writer's mutex
 * guards its queue and counters only; it is never held during I/O, so submit never waits on a
 * disk. No global state: everything lives in the objects; memory comes from malloc.
 */
#include "ckpt.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/crc32c.h"
#include "common/err.h"
#include "common/fsutil.h"
#include "common/le.h"

#define MAGIC "GYROCKP1"
#define VERSION 1u
#define HDR_SIZE 72u
#define HDR_CRC_OFF 68u
#define DIRENT_SIZE 72u
#define BLOB_ALIGN 64u

struct gy_ckpt_buf {
  atomic_int refs;
  uint64_t step;
  size_t len;
  uint8_t *data; /* owned, BLOB_ALIGN-aligned, len bytes (immutable after build/load) */
};

/* ---- helpers ---------------------------------------------------------------------------- */

/* Rounds x up to a multiple of BLOB_ALIGN; 0 on overflow (x > 0 never rounds to 0). */
static uint64_t align_up(uint64_t x) {
  if (x > UINT64_MAX - (BLOB_ALIGN - 1)) return 0;
  return (x + BLOB_ALIGN - 1) & ~(uint64_t)(BLOB_ALIGN - 1);
}

/* Thread-safe strerror (the writer thread reports errors while other threads run). */
static const char *errstr(int e, char *buf, size_t n) {
  return strerror_r(e, buf, n); /* GNU variant (_GNU_SOURCE): returns the message */
}

/* A new buffer of len bytes (uninitialised) with refcount 1, or NULL. */
static gy_ckpt_buf_t *buf_alloc(size_t len) {
  gy_ckpt_buf_t *b = malloc(sizeof(*b));
  if (!b) return NULL;
  size_t cap = (size_t)align_up(len ? len : 1);
  if (cap == 0 || !(b->data = aligned_alloc(BLOB_ALIGN, cap))) {
    free(b);
    return NULL;
  }
  atomic_init(&b->refs, 1);
  b->step = 0;
  b->len = len;
  return b;
}

/* ---- snapshots -------------------------------------------------------------------------- */

int gy_ckpt_build(gy_ckpt_buf_t **out, const gy_ckpt_meta_t *meta, const gy_ckpt_blob_t *blobs,
                  int nblobs) {
  if (!out || !meta || nblobs < 0 || (nblobs > 0 && !blobs)) return GY_EINVAL;
  *out = NULL;
  /* Validate names and compute the layout (overflow-checked) before allocating anything. */
  uint64_t end = (uint64_t)HDR_SIZE + (uint64_t)DIRENT_SIZE * (uint64_t)nblobs;
  for (int i = 0; i < nblobs; i++) {
    size_t nlen = strnlen(blobs[i].name, GY_CKPT_NAME_MAX);
    if (nlen == 0 || nlen == GY_CKPT_NAME_MAX) return GY_EINVAL;
    if (blobs[i].nbytes > 0 && !blobs[i].data) return GY_EINVAL;
    for (int j = 0; j < i; j++)
      if (strcmp(blobs[i].name, blobs[j].name) == 0) return GY_EINVAL;
    uint64_t off = align_up(end);
    if (off == 0 || blobs[i].nbytes > UINT64_MAX - off) return GY_ERANGE;
    end = off + blobs[i].nbytes;
  }
  if (end > SIZE_MAX) return GY_ERANGE;

  gy_ckpt_buf_t *b = buf_alloc((size_t)end);
  if (!b) return GY_ENOMEM;
  uint8_t *d = b->data;
  memset(d, 0, HDR_SIZE + (size_t)DIRENT_SIZE * nblobs);

  /* Blobs first (their CRCs go into the directory), zeroing the alignment gaps. */
  uint64_t pos = HDR_SIZE + (uint64_t)DIRENT_SIZE * nblobs;
  for (int i = 0; i < nblobs; i++) {
    uint64_t off = align_up(pos);
    memset(d + pos, 0, off - pos);
    if (blobs[i].nbytes) memcpy(d + off, blobs[i].data, blobs[i].nbytes);
    uint8_t *e = d + HDR_SIZE + (size_t)DIRENT_SIZE * i;
    memcpy(e, blobs[i].name, strlen(blobs[i].name)); /* rest stays NUL */
    gy_le_put64(e + 48, off);
    gy_le_put64(e + 56, blobs[i].nbytes);
    gy_le_put32(e + 64, gy_crc32c(0, d + off, blobs[i].nbytes));
    gy_le_put32(e + 68, 0);
    pos = off + blobs[i].nbytes;
  }

  memcpy(d, MAGIC, 8);
  gy_le_put32(d + 8, VERSION);
  gy_le_put32(d + 12, (uint32_t)nblobs);
  gy_le_put64(d + 16, meta->step);
  gy_le_put64(d + 24, meta->config_hash);
  gy_le_put32(d + 32, (uint32_t)meta->rank);
  gy_le_put32(d + 36, (uint32_t)meta->world);
  gy_le_put32(d + 40, (uint32_t)meta->dp);
  gy_le_put32(d + 44, (uint32_t)meta->tp);
  gy_le_put64(d + 48, HDR_SIZE);
  gy_le_put64(d + 56, end);
  gy_le_put32(d + 64, gy_crc32c(0, d + HDR_SIZE, (size_t)DIRENT_SIZE * nblobs));
  gy_le_put32(d + HDR_CRC_OFF, gy_crc32c(0, d, HDR_CRC_OFF));

  b->step = meta->step;
  *out = b;
  return 0;
}

void gy_ckpt_buf_ref(gy_ckpt_buf_t *b) {
  if (b) atomic_fetch_add_explicit(&b->refs, 1, memory_order_relaxed);
}

void gy_ckpt_buf_unref(gy_ckpt_buf_t *b) {
  if (!b) return;
  if (atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel) == 1) {
    free(b->data);
    free(b);
  }
}

int gy_ckpt_buf_refs(const gy_ckpt_buf_t *b) {
  return b ? atomic_load_explicit(&b->refs, memory_order_acquire) : 0;
}

const uint8_t *gy_ckpt_buf_data(const gy_ckpt_buf_t *b) {
  return b->data;
}
size_t gy_ckpt_buf_len(const gy_ckpt_buf_t *b) {
  return b->len;
}
uint64_t gy_ckpt_buf_step(const gy_ckpt_buf_t *b) {
  return b->step;
}

/* ---- parsing ---------------------------------------------------------------------------- */

static bool all_zero(const uint8_t *p, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (p[i]) return false;
  return true;
}

int gy_ckpt_parse(const uint8_t *data, size_t len, const char *what, gy_ckpt_view_t *view,
                  char *errmsg, size_t errlen) {
  if (!view) return GY_EINVAL;
  memset(view, 0, sizeof(*view));
  if (!what) what = "checkpoint";
  if (!data && len > 0) return GY_EINVAL;
  gy_ckpt_blob_t *blobs = NULL;
  int rc = GY_ECORRUPT;

  if (len == 0) {
    gy_errmsg(errmsg, errlen, "%s: empty (0 bytes), not a checkpoint", what);
    goto err;
  }
  if (len < 8 && memcmp(data, MAGIC, len) == 0) {
    gy_errmsg(errmsg, errlen, "%s: truncated: expected at least %u header bytes, found %zu", what,
              HDR_SIZE, len);
    goto err;
  }
  if (len < 8 || memcmp(data, MAGIC, 8) != 0) {
    gy_errmsg(errmsg, errlen, "%s: bad magic (not a gyro checkpoint)", what);
    goto err;
  }
  if (len < HDR_SIZE) {
    gy_errmsg(errmsg, errlen, "%s: truncated: expected at least %u header bytes, found %zu", what,
              HDR_SIZE, len);
    goto err;
  }
  uint32_t version = gy_le_get32(data + 8);
  if (version != VERSION) {
    gy_errmsg(errmsg, errlen, "%s: unsupported format version %u (expected %u) or corrupt header",
              what, version, VERSION);
    goto err;
  }
  uint32_t hcrc_stored = gy_le_get32(data + HDR_CRC_OFF), hcrc = gy_crc32c(0, data, HDR_CRC_OFF);
  if (hcrc != hcrc_stored) {
    gy_errmsg(errmsg, errlen, "%s: header CRC-32C mismatch (stored 0x%08x, computed 0x%08x)", what,
              hcrc_stored, hcrc);
    goto err;
  }
  uint64_t total = gy_le_get64(data + 56);
  if (total != len) {
    if (total > len)
      gy_errmsg(errmsg, errlen, "%s: truncated: expected %llu bytes, found %zu", what,
                (unsigned long long)total, len);
    else
      gy_errmsg(errmsg, errlen, "%s: %zu trailing bytes after the expected %llu", what,
                len - (size_t)total, (unsigned long long)total);
    goto err;
  }
  uint32_t nblobs = gy_le_get32(data + 12);
  uint64_t dir_off = gy_le_get64(data + 48);
  if (dir_off != HDR_SIZE) {
    gy_errmsg(errmsg, errlen, "%s: directory offset %llu, expected %u", what,
              (unsigned long long)dir_off, HDR_SIZE);
    goto err;
  }
  if (nblobs > (len - HDR_SIZE) / DIRENT_SIZE || nblobs > INT_MAX) {
    gy_errmsg(errmsg, errlen, "%s: directory of %u entries does not fit in %zu bytes", what, nblobs,
              len);
    goto err;
  }
  size_t dir_len = (size_t)DIRENT_SIZE * nblobs;
  const uint8_t *dir = data + HDR_SIZE;
  uint32_t dcrc_stored = gy_le_get32(data + 64), dcrc = gy_crc32c(0, dir, dir_len);
  if (dcrc != dcrc_stored) {
    gy_errmsg(errmsg, errlen, "%s: directory CRC-32C mismatch (stored 0x%08x, computed 0x%08x)",
              what, dcrc_stored, dcrc);
    goto err;
  }

  if (nblobs > 0 && !(blobs = calloc(nblobs, sizeof(*blobs)))) {
    rc = GY_ENOMEM;
    gy_errmsg(errmsg, errlen, "%s: out of memory for %u directory entries", what, nblobs);
    goto err;
  }
  /* Directory: names, canonical placement, bounds. No blob byte is read before this loop has
   * proven every blob in bounds. */
  uint64_t pos = HDR_SIZE + dir_len;
  for (uint32_t i = 0; i < nblobs; i++) {
    const uint8_t *e = dir + (size_t)DIRENT_SIZE * i;
    size_t nlen = strnlen((const char *)e, GY_CKPT_NAME_MAX);
    if (nlen == 0 || nlen == GY_CKPT_NAME_MAX || !all_zero(e + nlen, GY_CKPT_NAME_MAX - nlen)) {
      gy_errmsg(errmsg, errlen,
                "%s: directory entry %u: bad name (empty, not NUL-terminated in %d "
                "bytes, or not NUL-padded)",
                what, i, GY_CKPT_NAME_MAX);
      goto err;
    }
    memcpy(blobs[i].name, e, nlen);
    for (uint32_t j = 0; j < i; j++) {
      if (strcmp(blobs[i].name, blobs[j].name) == 0) {
        gy_errmsg(errmsg, errlen, "%s: blob '%s' appears twice in the directory", what,
                  blobs[i].name);
        goto err;
      }
    }
    uint64_t off = gy_le_get64(e + 48), nbytes = gy_le_get64(e + 56), want = align_up(pos);
    if (gy_le_get32(e + 68) != 0) {
      gy_errmsg(errmsg, errlen, "%s: blob '%s': reserved field is not zero", what, blobs[i].name);
      goto err;
    }
    if (off != want || off > len || nbytes > len - off) {
      gy_errmsg(errmsg, errlen,
                "%s: blob '%s': bytes [%llu, +%llu) out of place (expected offset "
                "%llu, file of %zu bytes)",
                what, blobs[i].name, (unsigned long long)off, (unsigned long long)nbytes,
                (unsigned long long)want, len);
      goto err;
    }
    if (!all_zero(data + pos, off - pos)) {
      gy_errmsg(errmsg, errlen, "%s: non-zero padding before blob '%s'", what, blobs[i].name);
      goto err;
    }
    blobs[i].data = data + off;
    blobs[i].nbytes = nbytes;
    pos = off + nbytes;
  }
  if (pos != len) {
    gy_errmsg(errmsg, errlen, "%s: %zu unaccounted bytes after the last blob", what,
              len - (size_t)pos);
    goto err;
  }
  for (uint32_t i = 0; i < nblobs; i++) {
    const uint8_t *e = dir + (size_t)DIRENT_SIZE * i;
    uint32_t stored = gy_le_get32(e + 64), crc = gy_crc32c(0, blobs[i].data, blobs[i].nbytes);
    if (crc != stored) {
      gy_errmsg(errmsg, errlen, "%s: blob '%s': CRC-32C mismatch (stored 0x%08x, computed 0x%08x)",
                what, blobs[i].name, stored, crc);
      goto err;
    }
  }

  view->meta.step = gy_le_get64(data + 16);
  view->meta.config_hash = gy_le_get64(data + 24);
  view->meta.rank = (int32_t)gy_le_get32(data + 32);
  view->meta.world = (int32_t)gy_le_get32(data + 36);
  view->meta.dp = (int32_t)gy_le_get32(data + 40);
  view->meta.tp = (int32_t)gy_le_get32(data + 44);
  view->nblobs = (int)nblobs;
  view->blobs = blobs;
  return 0;

err:
  free(blobs);
  return rc;
}

void gy_ckpt_view_free(gy_ckpt_view_t *view) {
  if (!view) return;
  free(view->blobs);
  memset(view, 0, sizeof(*view));
}

const gy_ckpt_blob_t *gy_ckpt_find(const gy_ckpt_view_t *view, const char *name) {
  if (!view || !name) return NULL;
  for (int i = 0; i < view->nblobs; i++)
    if (strcmp(view->blobs[i].name, name) == 0) return &view->blobs[i];
  return NULL;
}

/* ---- files ------------------------------------------------------------------------------ */

int gy_ckpt_load_file(const char *path, gy_ckpt_buf_t **out, gy_ckpt_view_t *view, char *errmsg,
                      size_t errlen) {
  if (!path || !out || !view) return GY_EINVAL;
  *out = NULL;
  memset(view, 0, sizeof(*view));
  char eb[128];
  gy_ckpt_buf_t *b = NULL;
  int rc, fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int e = errno;
    rc = (e == ENOENT) ? GY_ENOENT : GY_EIO;
    gy_errmsg(errmsg, errlen, "%s: cannot open: %s", path, errstr(e, eb, sizeof(eb)));
    return rc;
  }
  struct stat st;
  if (fstat(fd, &st) != 0) {
    rc = GY_EIO;
    gy_errmsg(errmsg, errlen, "%s: cannot stat: %s", path, errstr(errno, eb, sizeof(eb)));
    goto err;
  }
  if (!S_ISREG(st.st_mode)) {
    rc = GY_EIO;
    gy_errmsg(errmsg, errlen, "%s: not a regular file", path);
    goto err;
  }
  if ((uint64_t)st.st_size > SIZE_MAX) {
    rc = GY_ERANGE;
    gy_errmsg(errmsg, errlen, "%s: too large to load", path);
    goto err;
  }
  if (!(b = buf_alloc((size_t)st.st_size))) {
    rc = GY_ENOMEM;
    gy_errmsg(errmsg, errlen, "%s: out of memory for %lld bytes", path, (long long)st.st_size);
    goto err;
  }
  size_t got = 0;
  while (got < b->len) {
    ssize_t n = read(fd, b->data + got, b->len - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      rc = GY_EIO;
      gy_errmsg(errmsg, errlen, "%s: read failed: %s", path, errstr(errno, eb, sizeof(eb)));
      goto err;
    }
    if (n == 0) {
      rc = GY_EIO;
      gy_errmsg(errmsg, errlen, "%s: file shrank while being read (%zu of %zu bytes)", path, got,
                b->len);
      goto err;
    }
    got += (size_t)n;
  }
  close(fd);
  fd = -1;
  if ((rc = gy_ckpt_parse(b->data, b->len, path, view, errmsg, errlen)) != 0) goto err;
  b->step = view->meta.step;
  *out = b;
  return 0;

err:
  gy_ckpt_buf_unref(b);
  if (fd >= 0) close(fd);
  return rc;
}

int gy_ckpt_write_file(const char *path, const gy_ckpt_buf_t *b, char *errmsg, size_t errlen) {
  if (!path || !b || !*path) return GY_EINVAL;
  struct iovec iov = {.iov_base = b->data, .iov_len = b->len};
  return gy_write_file_atomic(path, &iov, 1, errmsg, errlen);
}

/* ---- background writer ------------------------------------------------------------------ */

typedef struct job {
  struct job *next;
  gy_ckpt_buf_t *buf; /* one reference, owned by the job */
  char path[];        /* owned copy */
} job_t;

struct gy_ckpt_writer {
  pthread_t thread;
  pthread_mutex_t mu;
  pthread_cond_t work; /* signalled when a job is queued or stop is set */
  pthread_cond_t idle; /* signalled when pending drops to 0 */
  job_t *head, *tail;  /* FIFO of jobs not yet started */
  uint64_t pending;    /* queued + in progress */
  uint64_t completed;  /* writes finished (successfully or not) */
  bool stop;
  int err; /* first error since the last flush, 0 if none */
  char errmsg[512];
};

static void *writer_main(void *arg) {
  gy_ckpt_writer_t *w = arg;
  char msg[512];
  pthread_mutex_lock(&w->mu);
  for (;;) {
    while (!w->head && !w->stop)
      pthread_cond_wait(&w->work, &w->mu);
    if (!w->head) break; /* stop requested and nothing left */
    job_t *j = w->head;
    w->head = j->next;
    if (!w->head) w->tail = NULL;
    pthread_mutex_unlock(&w->mu);

    msg[0] = '\0';
    int rc = gy_ckpt_write_file(j->path, j->buf, msg, sizeof(msg));
    /* Release the snapshot before reporting the job done, so that after a flush every
     * reference the writer took is gone. */
    gy_ckpt_buf_unref(j->buf);
    free(j);

    pthread_mutex_lock(&w->mu);
    if (rc != 0 && w->err == 0) {
      w->err = rc;
      snprintf(w->errmsg, sizeof(w->errmsg), "%s", msg);
    }
    w->completed++;
    if (--w->pending == 0) pthread_cond_broadcast(&w->idle);
  }
  pthread_mutex_unlock(&w->mu);
  return NULL;
}

int gy_ckpt_writer_create(gy_ckpt_writer_t **out) {
  if (!out) return GY_EINVAL;
  *out = NULL;
  gy_ckpt_writer_t *w = calloc(1, sizeof(*w));
  if (!w) return GY_ENOMEM;
  int made = 0; /* how many of mu, work, idle exist (released in reverse order on error) */
  if (pthread_mutex_init(&w->mu, NULL) != 0) goto err;
  made++;
  if (pthread_cond_init(&w->work, NULL) != 0) goto err;
  made++;
  if (pthread_cond_init(&w->idle, NULL) != 0) goto err;
  made++;
  if (pthread_create(&w->thread, NULL, writer_main, w) != 0) goto err;
  *out = w;
  return 0;

err:
  if (made > 2) pthread_cond_destroy(&w->idle);
  if (made > 1) pthread_cond_destroy(&w->work);
  if (made > 0) pthread_mutex_destroy(&w->mu);
  free(w);
  return GY_ENOMEM;
}

int gy_ckpt_writer_submit(gy_ckpt_writer_t *w, gy_ckpt_buf_t *b, const char *path) {
  if (!w || !b || !path || !*path) return GY_EINVAL;
  size_t plen = strlen(path);
  job_t *j = malloc(sizeof(*j) + plen + 1);
  if (!j) return GY_ENOMEM;
  memcpy(j->path, path, plen + 1);
  j->next = NULL;
  j->buf = b;
  pthread_mutex_lock(&w->mu);
  if (w->stop) {
    pthread_mutex_unlock(&w->mu);
    free(j);
    return GY_EINVAL;
  }
  gy_ckpt_buf_ref(b);
  if (w->tail)
    w->tail->next = j;
  else
    w->head = j;
  w->tail = j;
  w->pending++;
  pthread_cond_signal(&w->work);
  pthread_mutex_unlock(&w->mu);
  return 0;
}

int gy_ckpt_writer_flush(gy_ckpt_writer_t *w, char *errmsg, size_t errlen) {
  if (!w) return GY_EINVAL;
  pthread_mutex_lock(&w->mu);
  while (w->pending > 0)
    pthread_cond_wait(&w->idle, &w->mu);
  int rc = w->err;
  if (rc) gy_errmsg(errmsg, errlen, "%s", w->errmsg);
  w->err = 0;
  w->errmsg[0] = '\0';
  pthread_mutex_unlock(&w->mu);
  return rc;
}

uint64_t gy_ckpt_writer_completed(gy_ckpt_writer_t *w) {
  if (!w) return 0;
  pthread_mutex_lock(&w->mu);
  uint64_t n = w->completed;
  pthread_mutex_unlock(&w->mu);
  return n;
}

void gy_ckpt_writer_destroy(gy_ckpt_writer_t *w) {
  if (!w) return;
  /* A caller that cares about the last writes' errors flushes first; here they are dropped. */
  gy_ckpt_writer_flush(w, NULL, 0);
  pthread_mutex_lock(&w->mu);
  w->stop = true;
  pthread_cond_signal(&w->work);
  pthread_mutex_unlock(&w->mu);
  pthread_join(w->thread, NULL);
  pthread_cond_destroy(&w->idle);
  pthread_cond_destroy(&w->work);
  pthread_mutex_destroy(&w->mu);
  free(w);
}
