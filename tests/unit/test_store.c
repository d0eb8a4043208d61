/* test_store: the file rendezvous store: set/get round trips (binary, empty, namespaced keys),
 * overwrite, get with and without a timeout, check(), every kind of bad key, the "file:DIR"
 * spec, and two processes: one waiting for the other's key, and reads racing overwrites (a
 * reader must only ever see whole values). */
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/err.h"
#include "common/log.h"
#include "tests/test.h"
#include "worker/comm.h"

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st;
  (void)flag;
  (void)ftw;
  return remove(path);
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Counts the entries of dir whose name contains needle (all entries for ""). */
static int count_files(const char *dir, const char *needle) {
  DIR *d = opendir(dir);
  if (!d) return -1;
  struct dirent *de;
  int n = 0;
  while ((de = readdir(d))) {
    if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
    if (strstr(de->d_name, needle)) n++;
  }
  closedir(d);
  return n;
}

/* get() that returns the value as a NUL-terminated string (or NULL) and the code in *rc. */
static char *get_str(gy_store_t *s, const char *key, int timeout_ms, int *rc) {
  void *v = NULL;
  size_t n = 0;
  *rc = s->ops->get(s, key, &v, &n, timeout_ms);
  if (*rc) return NULL;
  char *str = malloc(n + 1);
  memcpy(str, v, n);
  str[n] = '\0';
  free(v);
  return str;
}

static void test_round_trips(gy_store_t *s, const char *dir) {
  int rc;
  CHECK_EQ_INT(s->ops->set(s, "alpha", "one", 3), GY_OK);
  char *v = get_str(s, "alpha", 0, &rc);
  CHECK_EQ_INT(rc, GY_OK);
  CHECK(v && strcmp(v, "one") == 0);
  free(v);

  /* Overwrite: the last value wins. */
  CHECK_EQ_INT(s->ops->set(s, "alpha", "second", 6), GY_OK);
  v = get_str(s, "alpha", 0, &rc);
  CHECK(v && strcmp(v, "second") == 0);
  free(v);

  /* Binary value with NUL bytes, and an empty value. */
  unsigned char bin[300];
  for (int i = 0; i < 300; i++)
    bin[i] = (unsigned char)(i * 7);
  CHECK_EQ_INT(s->ops->set(s, "bin", bin, sizeof(bin)), GY_OK);
  void *raw = NULL;
  size_t n = 0;
  CHECK_EQ_INT(s->ops->get(s, "bin", &raw, &n, 100), GY_OK);
  CHECK_EQ_INT(n, sizeof(bin));
  CHECK(raw && memcmp(raw, bin, sizeof(bin)) == 0);
  free(raw);
  CHECK_EQ_INT(s->ops->set(s, "empty", NULL, 0), GY_OK);
  raw = NULL;
  n = 99;
  CHECK_EQ_INT(s->ops->get(s, "empty", &raw, &n, 0), GY_OK);
  CHECK_EQ_INT(n, 0);
  CHECK(raw != NULL);
  free(raw);

  /* Namespaced keys ('/' separates a gang prefix and a group) stay one file in the folder. */
  CHECK_EQ_INT(s->ops->set(s, "g3/world/0", "addr", 4), GY_OK);
  v = get_str(s, "g3/world/0", 0, &rc);
  CHECK(v && strcmp(v, "addr") == 0);
  free(v);
  CHECK_EQ_INT(count_files(dir, "g3%2Fworld%2F0"), 1);
  struct stat st;
  CHECK(stat(dir, &st) == 0);
  char *sub = malloc(strlen(dir) + 8);
  sprintf(sub, "%s/g3", dir);
  CHECK_MSG(stat(sub, &st) != 0, "a key made a sub-folder %s", sub);
  free(sub);
  CHECK_EQ_INT(count_files(dir, ".tmp."), 0);

  /* check(): all present -> 1, one missing -> 0. */
  const char *both[] = {"alpha", "bin"};
  const char *miss[] = {"alpha", "nope"};
  CHECK_EQ_INT(s->ops->check(s, both, 2), 1);
  CHECK_EQ_INT(s->ops->check(s, miss, 2), 0);
  CHECK_EQ_INT(s->ops->check(s, both, 0), 1);
}

static void test_timeouts(gy_store_t *s) {
  int rc;
  double t0 = now_s();
  char *v = get_str(s, "missing", 0, &rc);
  CHECK(v == NULL);
  CHECK_EQ_INT(rc, GY_ETIMEDOUT);
  CHECK_MSG(now_s() - t0 < 0.05, "timeout 0 waited %.3f s", now_s() - t0);

  t0 = now_s();
  v = get_str(s, "missing", 150, &rc);
  double dt = now_s() - t0;
  CHECK(v == NULL);
  CHECK_EQ_INT(rc, GY_ETIMEDOUT);
  CHECK_MSG(dt >= 0.14 && dt < 0.6, "timeout 150 ms waited %.3f s", dt);
}

static void test_bad_keys(gy_store_t *s) {
  static const char *bad[] = {"",           ".",     "..",      "a/../b", "../x",    "/abs",
                              "a/",         "a//b",  "a b",     "a\nb",   ".hidden", "x%2Fy",
                              "semi;colon", "tab\t", "ünïcode", "./x"};
  char long_key[260];
  memset(long_key, 'k', sizeof(long_key) - 1);
  long_key[sizeof(long_key) - 1] = '\0';
  void *v = NULL;
  size_t n = 0;
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    CHECK_MSG(s->ops->set(s, bad[i], "x", 1) == GY_EINVAL, "set accepted key '%s'", bad[i]);
    CHECK_MSG(s->ops->get(s, bad[i], &v, &n, 0) == GY_EINVAL, "get accepted key '%s'", bad[i]);
    const char *one[] = {bad[i]};
    CHECK_MSG(s->ops->check(s, one, 1) == GY_EINVAL, "check accepted key '%s'", bad[i]);
  }
  CHECK_EQ_INT(s->ops->set(s, long_key, "x", 1), GY_EINVAL);
  CHECK_EQ_INT(s->ops->set(s, NULL, "x", 1), GY_EINVAL);
  CHECK_EQ_INT(s->ops->get(s, "alpha", NULL, &n, 0), GY_EINVAL);
  /* 200 bytes is the limit: still fine. */
  long_key[200] = '\0';
  CHECK_EQ_INT(s->ops->set(s, long_key, "x", 1), GY_OK);
}

/* Child: waits for "ping", answers "pong" with the ping's value reversed; then overwrites
 * "atom" 300 times with 4096 bytes of one value each. */
static int child_main(const char *dir) {
  gy_store_t *s = NULL;
  char err[256];
  if (gy_store_open(&s, dir, err, sizeof(err)) != 0) return 10;
  int rc;
  char *ping = get_str(s, "ping", 5000, &rc);
  if (!ping) return 11;
  size_t n = strlen(ping);
  for (size_t i = 0; i < n / 2; i++) {
    char t = ping[i];
    ping[i] = ping[n - 1 - i];
    ping[n - 1 - i] = t;
  }
  if (s->ops->set(s, "pong", ping, n) != 0) return 12;
  free(ping);
  unsigned char buf[4096];
  for (int i = 0; i < 300; i++) {
    memset(buf, i & 0xff, sizeof(buf));
    if (s->ops->set(s, "atom", buf, sizeof(buf)) != 0) return 13;
  }
  gy_store_destroy(s);
  return 0;
}

static void test_two_processes(const char *dir) {
  char spec[600];
  snprintf(spec, sizeof(spec), "file:%s", dir);
  fflush(NULL);
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) _exit(child_main(spec));

  gy_store_t *s = NULL;
  char err[256];
  REQUIRE(gy_store_open(&s, spec, err, sizeof(err)) == 0);
  struct timespec pause = {0, 30 * 1000000};
  nanosleep(&pause, NULL); /* the child is waiting by now */
  CHECK_EQ_INT(s->ops->set(s, "ping", "gyro-rdzv", 9), GY_OK);
  int rc;
  char *pong = get_str(s, "pong", 5000, &rc);
  CHECK_EQ_INT(rc, GY_OK);
  CHECK(pong && strcmp(pong, "vzdr-oryg") == 0);
  free(pong);

  /* Read "atom" while the child overwrites it: every read is one whole value. */
  int reads = 0, torn = 0;
  double t0 = now_s();
  while (now_s() - t0 < 5.0) {
    void *v = NULL;
    size_t n = 0;
    rc = s->ops->get(s, "atom", &v, &n, 5000);
    if (rc) break;
    reads++;
    unsigned char *b = v;
    if (n != 4096) {
      torn++;
    } else {
      for (size_t i = 1; i < n; i++)
        if (b[i] != b[0]) {
          torn++;
          break;
        }
    }
    int last = n == 4096 && b[0] == (299 & 0xff);
    free(v);
    if (last) break;
  }
  CHECK_EQ_INT(rc, GY_OK);
  CHECK(reads > 0);
  CHECK_EQ_INT(torn, 0);
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %d", status);
  CHECK_EQ_INT(count_files(dir, ".tmp."), 0);
  gy_store_destroy(s);
}

static void test_open_errors(const char *dir) {
  gy_store_t *s = (gy_store_t *)1;
  char err[256] = "";
  CHECK_EQ_INT(gy_store_open(&s, "etcd:localhost", err, sizeof(err)), GY_EINVAL);
  CHECK(s == NULL);
  CHECK_MSG(strstr(err, "etcd:localhost") != NULL, "message lacks the spec: %s", err);
  CHECK_EQ_INT(gy_store_open(&s, NULL, err, sizeof(err)), GY_EINVAL);
  CHECK_EQ_INT(gy_store_file_create(&s, "", err, sizeof(err)), GY_EINVAL);

  /* A path that is a file, not a folder. */
  char *file = malloc(strlen(dir) + 16);
  sprintf(file, "%s/plain", dir);
  FILE *f = fopen(file, "w");
  REQUIRE(f != NULL);
  fclose(f);
  err[0] = '\0';
  int rc = gy_store_file_create(&s, file, err, sizeof(err));
  CHECK(rc != GY_OK);
  CHECK(s == NULL);
  CHECK_MSG(strstr(err, file) != NULL, "message lacks the path: %s", err);
  free(file);
  gy_store_destroy(NULL);
}

int main(void) {
  gy_log_set_level(GY_LOG_ERROR);
  char tmpl[] = "/tmp/gy-store-XXXXXX";
  REQUIRE(mkdtemp(tmpl) != NULL);
  char dir[512];
  snprintf(dir, sizeof(dir), "%s/a/b", tmpl); /* created with its parents */

  gy_store_t *s = NULL;
  char err[256] = "";
  REQUIRE(gy_store_file_create(&s, dir, err, sizeof(err)) == GY_OK);
  test_round_trips(s, dir);
  test_timeouts(s);
  test_bad_keys(s);
  gy_store_destroy(s);

  char dir2[512];
  snprintf(dir2, sizeof(dir2), "%s/two", tmpl);
  test_two_processes(dir2);
  test_open_errors(tmpl);

  nftw(tmpl, rm_one, 16, FTW_DEPTH | FTW_PHYS);
  GY_TEST_END();
}
