/*
 * store: the rendezvous key-value store of comm.h, and its file-system implementation.
 *
 * API, in order: gy_store_file_create() opens a store in a folder; gy_store_open() parses a
 * "file:DIR" spec; gy_store_destroy() releases either. The operations themselves go through the
 * gy_store_ops_t table (set, get, check, destroy), so the controller's store can replace this
 * one without the callers (the Gloo shim, the NCCL id exchange) changing.
 *
 * The file store keeps one file per key in one folder, which may sit on a file system every rank
 * can reach. Invariants:
 *  - A key is 1..200 bytes of [A-Za-z0-9._-] and '/'; '/' separates namespaces (the gang prefix,
 *    the group) and is encoded as "%2F" in the file name, so every key is one plain file inside
 *    the folder. Empty segments, "." and ".." segments are refused, so no key can name a path
 *    outside the folder or the folder itself, and no key starts with '.', the prefix reserved
 *    for temporary files.
 *  - set() writes a temporary file ".tmp.<pid>.<seq>.<name>" and renames it over the key's file:
 *    a reader sees the old value or the new one, never part of one. There is no fsync: rendezvous
 *    values are only useful while the gang that wrote them is alive.
 *  - get() polls with a backoff from 1 ms doubling up to 50 ms, so a key written a moment after
 *    the first look is seen within about 1 ms, and a long wait costs 20 looks a second.
 * Errors are returned as codes (GY_EINVAL for a bad key, GY_ETIMEDOUT, GY_EIO); the file name and
 * the reason of an I/O error are logged, since the ops table has no room for a message.
 */
#include "worker/comm.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/err.h"
#include "common/log.h"

#define KEY_MAX 200        /* bytes of a key, and of its encoded file name */
#define POLL_FIRST_US 1000 /* first sleep of a waiting get() */
#define POLL_MAX_US 50000  /* longest sleep of a waiting get() */

typedef struct {
  gy_store_t base;
  char *dir;       /* owned */
  atomic_uint seq; /* makes temporary names unique among this process's threads */
} file_store_t;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void sleep_us(long us) {
  struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

/* Checks key and writes its file name into name (KEY_MAX + 1 bytes). Returns 0 or GY_EINVAL. */
static int key_to_name(const char *key, char name[KEY_MAX + 1]) {
  if (!key || !key[0]) return GY_EINVAL;
  size_t n = 0;
  const char *seg = key; /* start of the current segment */
  for (const char *p = key;; p++) {
    char ch = *p;
    if (ch == '/' || ch == '\0') {
      size_t len = (size_t)(p - seg);
      if (len == 0) return GY_EINVAL; /* leading, trailing or doubled '/' */
      if (seg[0] == '.' && (len == 1 || (len == 2 && seg[1] == '.'))) return GY_EINVAL;
      if (ch == '\0') break;
      if (n + 3 > KEY_MAX) return GY_EINVAL;
      memcpy(name + n, "%2F", 3);
      n += 3;
      seg = p + 1;
      continue;
    }
    int ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
             ch == '.' || ch == '_' || ch == '-';
    if (!ok || n + 1 > KEY_MAX) return GY_EINVAL;
    name[n++] = ch;
  }
  if (name[0] == '.') return GY_EINVAL; /* reserved for temporary files */
  name[n] = '\0';
  return 0;
}

/* Returns "dir/name" malloc'ed, or NULL when out of memory. */
static char *join(const char *dir, const char *name) {
  size_t a = strlen(dir), b = strlen(name);
  char *p = malloc(a + b + 2);
  if (!p) return NULL;
  memcpy(p, dir, a);
  p[a] = '/';
  memcpy(p + a + 1, name, b + 1);
  return p;
}

static int write_all(int fd, const void *buf, size_t len) {
  const char *p = buf;
  while (len > 0) {
    ssize_t w = write(fd, p, len);
    if (w < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    p += w;
    len -= (size_t)w;
  }
  return 0;
}

static int fs_set(gy_store_t *s, const char *key, const void *val, size_t len) {
  file_store_t *fs = s->impl;
  char name[KEY_MAX + 1], tmpname[KEY_MAX + 64];
  char *path = NULL, *tmp = NULL;
  int fd = -1, rc;

  if (key_to_name(key, name) != 0) {
    gy_log(GY_LOG_ERROR, "store",
           "refused key '%s': use 1..%d of [A-Za-z0-9._-/], no '.' or "
           "'..' segments, not starting with '.'",
           key ? key : "(null)", KEY_MAX);
    return GY_EINVAL;
  }
  if (!val && len) return GY_EINVAL;
  snprintf(tmpname, sizeof(tmpname), ".tmp.%ld.%u.%s", (long)getpid(),
           atomic_fetch_add(&fs->seq, 1u), name);
  path = join(fs->dir, name);
  tmp = join(fs->dir, tmpname);
  if (!path || !tmp) {
    rc = GY_ENOMEM;
    goto err;
  }
  fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0 || write_all(fd, val, len) != 0) {
    gy_log(GY_LOG_ERROR, "store", "cannot write %s: %s", tmp, strerror(errno));
    rc = GY_EIO;
    goto err;
  }
  if (close(fd) != 0) {
    fd = -1;
    gy_log(GY_LOG_ERROR, "store", "cannot write %s: %s", tmp, strerror(errno));
    rc = GY_EIO;
    goto err;
  }
  fd = -1;
  if (rename(tmp, path) != 0) {
    gy_log(GY_LOG_ERROR, "store", "cannot rename %s to %s: %s", tmp, path, strerror(errno));
    rc = GY_EIO;
    goto err;
  }
  free(tmp);
  free(path);
  return 0;

err:
  if (fd >= 0) close(fd);
  if (tmp) unlink(tmp);
  free(tmp);
  free(path);
  return rc;
}

/* Reads the whole file at path. Returns 0, GY_ENOENT when it does not exist, or an error. */
static int read_file(const char *path, void **val, size_t *len) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return GY_ENOENT;
    gy_log(GY_LOG_ERROR, "store", "cannot open %s: %s", path, strerror(errno));
    return GY_EIO;
  }
  struct stat st;
  char *buf = NULL;
  int rc;
  if (fstat(fd, &st) != 0) {
    gy_log(GY_LOG_ERROR, "store", "cannot stat %s: %s", path, strerror(errno));
    rc = GY_EIO;
    goto err;
  }
  size_t size = (size_t)st.st_size, got = 0;
  buf = malloc(size ? size : 1);
  if (!buf) {
    rc = GY_ENOMEM;
    goto err;
  }
  while (got < size) {
    ssize_t r = read(fd, buf + got, size - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      gy_log(GY_LOG_ERROR, "store", "cannot read %s: %s", path,
             r < 0 ? strerror(errno) : "file shrank");
      rc = GY_EIO;
      goto err;
    }
    got += (size_t)r;
  }
  close(fd);
  *val = buf;
  *len = size;
  return 0;

err:
  free(buf);
  close(fd);
  return rc;
}

/* Waits for key; timeout_ms < 0 waits without end, 0 looks once. */
static int fs_get(gy_store_t *s, const char *key, void **val, size_t *len, int timeout_ms) {
  file_store_t *fs = s->impl;
  char name[KEY_MAX + 1];
  if (!val || !len) return GY_EINVAL;
  *val = NULL;
  *len = 0;
  if (key_to_name(key, name) != 0) {
    gy_log(GY_LOG_ERROR, "store", "refused key '%s'", key ? key : "(null)");
    return GY_EINVAL;
  }
  char *path = join(fs->dir, name);
  if (!path) return GY_ENOMEM;
  double deadline = now_s() + (timeout_ms > 0 ? timeout_ms : 0) / 1000.0;
  long pause = POLL_FIRST_US;
  int rc;
  for (;;) {
    rc = read_file(path, val, len);
    if (rc != GY_ENOENT) break;
    double left = deadline - now_s();
    if (timeout_ms >= 0 && left <= 0) {
      rc = GY_ETIMEDOUT;
      break;
    }
    long us = pause;
    if (timeout_ms >= 0 && us > (long)(left * 1e6) + 1) us = (long)(left * 1e6) + 1;
    sleep_us(us);
    pause = pause * 2 > POLL_MAX_US ? POLL_MAX_US : pause * 2;
  }
  free(path);
  return rc;
}

static int fs_check(gy_store_t *s, const char *const *keys, int nkeys) {
  file_store_t *fs = s->impl;
  if (nkeys < 0 || (nkeys > 0 && !keys)) return GY_EINVAL;
  for (int i = 0; i < nkeys; i++) {
    char name[KEY_MAX + 1];
    if (key_to_name(keys[i], name) != 0) {
      gy_log(GY_LOG_ERROR, "store", "refused key '%s'", keys[i] ? keys[i] : "(null)");
      return GY_EINVAL;
    }
    char *path = join(fs->dir, name);
    if (!path) return GY_ENOMEM;
    struct stat st;
    int r = stat(path, &st), e = errno;
    free(path);
    if (r != 0) {
      if (e == ENOENT) return 0;
      gy_log(GY_LOG_ERROR, "store", "cannot stat key '%s' in %s: %s", keys[i], fs->dir,
             strerror(e));
      return GY_EIO;
    }
  }
  return 1;
}

static void fs_destroy(gy_store_t *s) {
  file_store_t *fs = s->impl;
  free(fs->dir);
  free(fs);
}

static const gy_store_ops_t file_ops = {
    .set = fs_set, .get = fs_get, .check = fs_check, .destroy = fs_destroy};

/* Creates dir and its missing parents (mkdir -p). */
static int mkdirs(const char *dir) {
  char *p = strdup(dir);
  if (!p) return -1;
  for (char *q = p + 1; *q; q++) {
    if (*q != '/') continue;
    *q = '\0';
    if (mkdir(p, 0755) != 0 && errno != EEXIST) {
      free(p);
      return -1;
    }
    *q = '/';
  }
  int r = mkdir(p, 0755);
  free(p);
  return (r != 0 && errno != EEXIST) ? -1 : 0;
}

/* The store copies dir. On error *out is NULL and errmsg says why. */
int gy_store_file_create(gy_store_t **out, const char *dir, char *errmsg, size_t errlen) {
  file_store_t *fs = NULL;
  struct stat st;
  int rc;

  if (!out) return GY_EINVAL;
  *out = NULL;
  if (!dir || !dir[0]) {
    gy_errmsg(errmsg, errlen, "rendezvous store: empty folder name");
    return GY_EINVAL;
  }
  if (mkdirs(dir) != 0) {
    gy_errmsg(errmsg, errlen, "rendezvous store %s: cannot create folder: %s", dir,
              strerror(errno));
    return GY_EIO;
  }
  if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
    gy_errmsg(errmsg, errlen, "rendezvous store %s: not a folder", dir);
    return GY_EIO;
  }
  if (access(dir, R_OK | W_OK | X_OK) != 0) {
    gy_errmsg(errmsg, errlen, "rendezvous store %s: not writable: %s", dir, strerror(errno));
    return GY_EIO;
  }
  fs = calloc(1, sizeof(*fs));
  if (!fs) {
    rc = GY_ENOMEM;
    goto err;
  }
  fs->dir = strdup(dir);
  if (!fs->dir) {
    rc = GY_ENOMEM;
    goto err;
  }
  atomic_init(&fs->seq, 0u);
  fs->base.ops = &file_ops;
  fs->base.impl = fs;
  *out = &fs->base;
  return 0;

err:
  if (fs) free(fs->dir);
  free(fs);
  gy_errmsg(errmsg, errlen, "rendezvous store %s: out of memory", dir);
  return rc;
}

int gy_store_open(gy_store_t **out, const char *spec, char *errmsg, size_t errlen) {
  if (!out) return GY_EINVAL;
  *out = NULL;
  if (spec && strncmp(spec, "file:", 5) == 0)
    return gy_store_file_create(out, spec + 5, errmsg, errlen);
  gy_errmsg(errmsg, errlen, "rendezvous spec '%s': unknown kind (expected file:DIR)",
            spec ? spec : "(null)");
  return GY_EINVAL;
}

void gy_store_destroy(gy_store_t *s) {
  if (s) s->ops->destroy(s);
}
