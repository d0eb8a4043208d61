/* test_ckpt: checkpoint snapshots, files and the background writer.
 *
 * Round trips (build -> parse, write_file -> load_file), then refusal of bad bytes: every
 * truncation, every single-bit flip (header, directory, padding, blobs; a blob's error names
 * the blob), bad magic, wrong version, empty and missing files; then the writer (ordered
 * writes, references released after a flush, an unwritable path reported by flush). Files live
 * in a mkdtemp folder that is removed at the end. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/crc32c.h"
#include "common/err.h"
#include "common/le.h"
#include "tests/test.h"
#include "worker/ckpt.h"

static char tmpdir[64];

static void rm_tree(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) return;
  struct dirent *e;
  char p[512];
  while ((e = readdir(d))) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
    unlink(p);
  }
  closedir(d);
  rmdir(dir);
}

static int count_files(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) return -1;
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)))
    if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
  closedir(d);
  return n;
}

static void write_raw(const char *path, const uint8_t *p, size_t n) {
  FILE *f = fopen(path, "wb");
  REQUIRE(f);
  REQUIRE(n == 0 || fwrite(p, 1, n, f) == n);
  REQUIRE(fclose(f) == 0);
}

/* Test payloads. */
static float wte[1000];
static float qkvw[333];
static uint8_t rngstate[13];
static int64_t cursor[3] = {7, -1, 1234567890123ll};

static const gy_ckpt_meta_t META = {
    .step = 100, .config_hash = 0xDEADBEEFCAFEF00Dull, .rank = 1, .world = 4, .dp = 2, .tp = 2};

static int build_big(gy_ckpt_buf_t **out) {
  gy_ckpt_blob_t blobs[5] = {
      {.name = "param/wte", .data = wte, .nbytes = sizeof wte},
      {.name = "param/qkvw", .data = qkvw, .nbytes = sizeof qkvw},
      {.name = "empty", .data = NULL, .nbytes = 0},
      {.name = "rng", .data = rngstate, .nbytes = sizeof rngstate},
      {.name = "data/cursor", .data = cursor, .nbytes = sizeof cursor},
  };
  return gy_ckpt_build(out, &META, blobs, 5);
}

static void test_roundtrip(void) {
  for (int i = 0; i < 1000; i++)
    wte[i] = (float)i * 0.5f - 3.0f;
  for (int i = 0; i < 333; i++)
    qkvw[i] = 1.0f / (float)(i + 1);
  for (int i = 0; i < 13; i++)
    rngstate[i] = (uint8_t)(i * 37 + 1);

  gy_ckpt_buf_t *b = NULL;
  REQUIRE(build_big(&b) == 0);
  CHECK_EQ_INT(gy_ckpt_buf_step(b), 100);
  CHECK_EQ_INT(gy_ckpt_buf_refs(b), 1);
  const uint8_t *d = gy_ckpt_buf_data(b);
  size_t len = gy_ckpt_buf_len(b);
  CHECK(memcmp(d, "GYROCKP1", 8) == 0);

  gy_ckpt_view_t v;
  char err[512] = "";
  int rc = gy_ckpt_parse(d, len, "snapshot@step 100", &v, err, sizeof err);
  CHECK_MSG(rc == 0, "%s", err);
  REQUIRE(rc == 0);
  CHECK(memcmp(&v.meta, &META, sizeof META) == 0);
  CHECK_EQ_INT(v.nblobs, 5);
  const gy_ckpt_blob_t *w = gy_ckpt_find(&v, "param/wte"), *q = gy_ckpt_find(&v, "param/qkvw");
  const gy_ckpt_blob_t *e = gy_ckpt_find(&v, "empty"), *r = gy_ckpt_find(&v, "rng");
  const gy_ckpt_blob_t *c = gy_ckpt_find(&v, "data/cursor");
  REQUIRE(w && q && e && r && c);
  CHECK(gy_ckpt_find(&v, "nope") == NULL);
  CHECK(w->nbytes == sizeof wte && memcmp(w->data, wte, sizeof wte) == 0);
  CHECK(q->nbytes == sizeof qkvw && memcmp(q->data, qkvw, sizeof qkvw) == 0);
  CHECK(e->nbytes == 0);
  CHECK(r->nbytes == sizeof rngstate && memcmp(r->data, rngstate, sizeof rngstate) == 0);
  CHECK(c->nbytes == sizeof cursor && memcmp(c->data, cursor, sizeof cursor) == 0);
  /* Blobs are 64-byte aligned in memory (the buffer is, and their offsets are). */
  for (int i = 0; i < v.nblobs; i++)
    CHECK(((uintptr_t)v.blobs[i].data & 63) == 0);
  /* The blobs point into the parsed bytes. */
  CHECK((const uint8_t *)w->data > d && (const uint8_t *)w->data < d + len);
  gy_ckpt_view_free(&v);
  CHECK(v.blobs == NULL && v.nblobs == 0);

  /* Building is deterministic: the same input gives the same bytes. */
  gy_ckpt_buf_t *b2 = NULL;
  REQUIRE(build_big(&b2) == 0);
  CHECK(gy_ckpt_buf_len(b2) == len && memcmp(gy_ckpt_buf_data(b2), d, len) == 0);
  gy_ckpt_buf_unref(b2);

  /* No blob at all. */
  gy_ckpt_buf_t *b0 = NULL;
  REQUIRE(gy_ckpt_build(&b0, &META, NULL, 0) == 0);
  CHECK_EQ_INT(
      gy_ckpt_parse(gy_ckpt_buf_data(b0), gy_ckpt_buf_len(b0), "zero", &v, err, sizeof err), 0);
  CHECK_EQ_INT(v.nblobs, 0);
  gy_ckpt_view_free(&v);
  gy_ckpt_buf_unref(b0);

  /* Bad blob lists. */
  gy_ckpt_blob_t dup[2] = {{.name = "a", .data = wte, .nbytes = 4},
                           {.name = "a", .data = wte, .nbytes = 4}};
  gy_ckpt_buf_t *bx = NULL;
  CHECK_EQ_INT(gy_ckpt_build(&bx, &META, dup, 2), GY_EINVAL);
  gy_ckpt_blob_t noname = {.name = "", .data = wte, .nbytes = 4};
  CHECK_EQ_INT(gy_ckpt_build(&bx, &META, &noname, 1), GY_EINVAL);
  gy_ckpt_blob_t longname = {.data = wte, .nbytes = 4};
  memset(longname.name, 'x', GY_CKPT_NAME_MAX);
  CHECK_EQ_INT(gy_ckpt_build(&bx, &META, &longname, 1), GY_EINVAL);
  gy_ckpt_blob_t nodata = {.name = "x", .data = NULL, .nbytes = 4};
  CHECK_EQ_INT(gy_ckpt_build(&bx, &META, &nodata, 1), GY_EINVAL);
  CHECK(bx == NULL);

  /* Shared references. */
  gy_ckpt_buf_ref(b);
  CHECK_EQ_INT(gy_ckpt_buf_refs(b), 2);
  gy_ckpt_buf_unref(b);
  CHECK_EQ_INT(gy_ckpt_buf_refs(b), 1);
  gy_ckpt_buf_unref(NULL);

  /* File round trip. */
  char path[256];
  snprintf(path, sizeof path, "%s/step_000100.rank1.gyck", tmpdir);
  rc = gy_ckpt_write_file(path, b, err, sizeof err);
  CHECK_MSG(rc == 0, "%s", err);
  CHECK_EQ_INT(count_files(tmpdir), 1); /* no temporary file left behind */
  gy_ckpt_buf_t *lb = NULL;
  rc = gy_ckpt_load_file(path, &lb, &v, err, sizeof err);
  CHECK_MSG(rc == 0, "%s", err);
  REQUIRE(rc == 0 && lb);
  CHECK(gy_ckpt_buf_len(lb) == len && memcmp(gy_ckpt_buf_data(lb), d, len) == 0);
  CHECK_EQ_INT(gy_ckpt_buf_step(lb), 100);
  CHECK(memcmp(&v.meta, &META, sizeof META) == 0);
  q = gy_ckpt_find(&v, "param/qkvw");
  CHECK(q && q->nbytes == sizeof qkvw && memcmp(q->data, qkvw, sizeof qkvw) == 0);
  CHECK(q && (const uint8_t *)q->data >= gy_ckpt_buf_data(lb));
  gy_ckpt_view_free(&v);
  gy_ckpt_buf_unref(lb);
  /* Overwriting an existing file works (rename replaces it). */
  CHECK_EQ_INT(gy_ckpt_write_file(path, b, err, sizeof err), 0);
  unlink(path);
  gy_ckpt_buf_unref(b);
}

/* A small checkpoint (two blobs) so that every bit of it can be flipped. */
static gy_ckpt_buf_t *build_small(void) {
  static const char a[] = "hello, checkpoint";
  static const uint32_t q[5] = {1, 2, 3, 4, 0xFFFFFFFFu};
  gy_ckpt_blob_t blobs[2] = {{.name = "opt/m", .data = a, .nbytes = sizeof a},
                             {.name = "param/qkvw", .data = q, .nbytes = sizeof q}};
  gy_ckpt_buf_t *b = NULL;
  REQUIRE(gy_ckpt_build(&b, &META, blobs, 2) == 0);
  return b;
}

static void test_corruption(void) {
  gy_ckpt_buf_t *b = build_small();
  const uint8_t *d = gy_ckpt_buf_data(b);
  size_t len = gy_ckpt_buf_len(b);
  uint8_t *m = malloc(len + 64);
  REQUIRE(m);
  gy_ckpt_view_t v;
  char err[512];
  const char *what = "ckpt/step_000100.rank0.gyck";

  /* Locate the blobs (for the messages expected on flips inside them). */
  REQUIRE(gy_ckpt_parse(d, len, what, &v, err, sizeof err) == 0);
  size_t boff[2], blen[2];
  char bname[2][GY_CKPT_NAME_MAX];
  for (int i = 0; i < 2; i++) {
    boff[i] = (size_t)((const uint8_t *)v.blobs[i].data - d);
    blen[i] = v.blobs[i].nbytes;
    strcpy(bname[i], v.blobs[i].name);
  }
  gy_ckpt_view_free(&v);

  /* Every truncation. */
  int bad = 0, badmsg = 0;
  for (size_t n = 0; n < len; n++) {
    memcpy(m, d, n);
    err[0] = '\0';
    int rc = gy_ckpt_parse(m, n, what, &v, err, sizeof err);
    bad += rc != GY_ECORRUPT;
    badmsg += strncmp(err, what, strlen(what)) != 0 || (n > 0 && !strstr(err, "truncated"));
    if (rc == 0) gy_ckpt_view_free(&v);
  }
  CHECK_EQ_INT(bad, 0);
  CHECK_EQ_INT(badmsg, 0);
  /* The exact message for a truncation past the header. */
  char want[512];
  snprintf(want, sizeof want, "%s: truncated: expected %zu bytes, found %zu", what, len, len - 5);
  CHECK_EQ_INT(gy_ckpt_parse(d, len - 5, what, &v, err, sizeof err), GY_ECORRUPT);
  CHECK_MSG(strcmp(err, want) == 0, "got '%s'", err);
  /* Trailing bytes. */
  memcpy(m, d, len);
  memset(m + len, 0, 64);
  CHECK_EQ_INT(gy_ckpt_parse(m, len + 1, what, &v, err, sizeof err), GY_ECORRUPT);
  CHECK(strstr(err, "trailing") != NULL);

  /* Every single-bit flip. */
  bad = 0;
  badmsg = 0;
  int blob_flips = 0;
  for (size_t i = 0; i < len; i++) {
    for (int bit = 0; bit < 8; bit++) {
      memcpy(m, d, len);
      m[i] ^= (uint8_t)(1u << bit);
      err[0] = '\0';
      int rc = gy_ckpt_parse(m, len, what, &v, err, sizeof err);
      if (rc != GY_ECORRUPT) {
        if (bad++ < 5) fprintf(stderr, "flip of byte %zu bit %d: rc %d\n", i, bit, rc);
        if (rc == 0) gy_ckpt_view_free(&v);
      }
      if (strncmp(err, what, strlen(what)) != 0) badmsg++;
      for (int k = 0; k < 2; k++) {
        if (i >= boff[k] && i < boff[k] + blen[k]) {
          char quoted[128];
          snprintf(quoted, sizeof quoted, "blob '%s': CRC-32C mismatch", bname[k]);
          blob_flips++;
          if (!strstr(err, quoted)) {
            if (badmsg++ < 5) fprintf(stderr, "flip in blob %s: '%s'\n", bname[k], err);
          }
        }
      }
    }
  }
  CHECK_EQ_INT(bad, 0);
  CHECK_EQ_INT(badmsg, 0);
  CHECK_EQ_INT(blob_flips, (int)(8 * (blen[0] + blen[1])));

  /* The exact message of a blob CRC mismatch. */
  memcpy(m, d, len);
  m[boff[1] + 2] ^= 0x10;
  CHECK_EQ_INT(gy_ckpt_parse(m, len, what, &v, err, sizeof err), GY_ECORRUPT);
  CHECK(strncmp(err, "ckpt/step_000100.rank0.gyck: blob 'param/qkvw': CRC-32C mismatch (stored 0x",
                75) == 0);
  CHECK(strstr(err, ", computed 0x") != NULL);

  /* Bad magic. */
  memcpy(m, d, len);
  memcpy(m, "GYROCKP2", 8);
  CHECK_EQ_INT(gy_ckpt_parse(m, len, what, &v, err, sizeof err), GY_ECORRUPT);
  CHECK(strstr(err, "magic") != NULL);
  CHECK_EQ_INT(gy_ckpt_parse((const uint8_t *)"hello", 5, what, &v, err, sizeof err), GY_ECORRUPT);
  CHECK(strstr(err, "magic") != NULL);

  /* Wrong version, with a header CRC that matches it (a well-formed file of another version). */
  memcpy(m, d, len);
  gy_le_put32(m + 8, 2);
  gy_le_put32(m + 68, gy_crc32c(0, m, 68));
  CHECK_EQ_INT(gy_ckpt_parse(m, len, what, &v, err, sizeof err), GY_ECORRUPT);
  CHECK_MSG(strstr(err, "version 2") != NULL, "%s", err);

  /* Empty and missing files. */
  char path[256];
  snprintf(path, sizeof path, "%s/empty.gyck", tmpdir);
  write_raw(path, d, 0);
  gy_ckpt_buf_t *lb = (gy_ckpt_buf_t *)1;
  CHECK_EQ_INT(gy_ckpt_load_file(path, &lb, &v, err, sizeof err), GY_ECORRUPT);
  CHECK(lb == NULL);
  CHECK(strstr(err, path) == err && strstr(err, "empty") != NULL);
  unlink(path);
  snprintf(path, sizeof path, "%s/missing.gyck", tmpdir);
  CHECK_EQ_INT(gy_ckpt_load_file(path, &lb, &v, err, sizeof err), GY_ENOENT);
  CHECK(strstr(err, path) == err);

  /* A truncated file on disk: the message names the file and both sizes. */
  snprintf(path, sizeof path, "%s/trunc.gyck", tmpdir);
  write_raw(path, d, len - 100);
  CHECK_EQ_INT(gy_ckpt_load_file(path, &lb, &v, err, sizeof err), GY_ECORRUPT);
  snprintf(want, sizeof want, "%s: truncated: expected %zu bytes, found %zu", path, len, len - 100);
  CHECK_MSG(strcmp(err, want) == 0, "got '%s'", err);
  unlink(path);
  /* A corrupt blob on disk. */
  snprintf(path, sizeof path, "%s/flip.gyck", tmpdir);
  memcpy(m, d, len);
  m[boff[0]] ^= 1;
  write_raw(path, m, len);
  CHECK_EQ_INT(gy_ckpt_load_file(path, &lb, &v, err, sizeof err), GY_ECORRUPT);
  CHECK(strstr(err, path) == err && strstr(err, "blob 'opt/m'") != NULL);
  unlink(path);
  /* A folder is not a checkpoint. */
  CHECK(gy_ckpt_load_file(tmpdir, &lb, &v, err, sizeof err) < 0);

  free(m);
  gy_ckpt_buf_unref(b);
}

static void test_writer(void) {
  gy_ckpt_writer_t *w = NULL;
  REQUIRE(gy_ckpt_writer_create(&w) == 0);
  char err[512] = "", path[256];
  enum { N = 6 };
  gy_ckpt_buf_t *bufs[N];
  for (int i = 0; i < N; i++) {
    gy_ckpt_meta_t meta = META;
    meta.step = 100 * (uint64_t)(i + 1);
    uint32_t payload[64];
    for (int k = 0; k < 64; k++)
      payload[k] = (uint32_t)(i * 1000 + k);
    gy_ckpt_blob_t blob = {.name = "param/all", .data = payload, .nbytes = sizeof payload};
    REQUIRE(gy_ckpt_build(&bufs[i], &meta, &blob, 1) == 0);
    snprintf(path, sizeof path, "%s/step_%06d.rank1.gyck", tmpdir, 100 * (i + 1));
    CHECK_EQ_INT(gy_ckpt_writer_submit(w, bufs[i], path), 0);
  }
  int rc = gy_ckpt_writer_flush(w, err, sizeof err);
  CHECK_MSG(rc == 0, "%s", err);
  CHECK_EQ_INT(gy_ckpt_writer_completed(w), N);
  CHECK_EQ_INT(count_files(tmpdir), N);
  for (int i = 0; i < N; i++) {
    CHECK_EQ_INT(gy_ckpt_buf_refs(bufs[i]), 1); /* the writer's reference is gone */
    snprintf(path, sizeof path, "%s/step_%06d.rank1.gyck", tmpdir, 100 * (i + 1));
    gy_ckpt_buf_t *lb = NULL;
    gy_ckpt_view_t v;
    rc = gy_ckpt_load_file(path, &lb, &v, err, sizeof err);
    CHECK_MSG(rc == 0, "%s", err);
    if (rc != 0) continue;
    CHECK_EQ_INT(v.meta.step, 100 * (uint64_t)(i + 1));
    CHECK(gy_ckpt_buf_len(lb) == gy_ckpt_buf_len(bufs[i]) &&
          memcmp(gy_ckpt_buf_data(lb), gy_ckpt_buf_data(bufs[i]), gy_ckpt_buf_len(lb)) == 0);
    gy_ckpt_view_free(&v);
    gy_ckpt_buf_unref(lb);
    unlink(path);
  }

  /* A folder that does not exist: submit succeeds, flush reports the path; the next flush is
   * clean again, and the writer keeps working. */
  char bad[256];
  snprintf(bad, sizeof bad, "%s/no/such/folder/step_000700.gyck", tmpdir);
  CHECK_EQ_INT(gy_ckpt_writer_submit(w, bufs[0], bad), 0);
  snprintf(path, sizeof path, "%s/after.gyck", tmpdir);
  CHECK_EQ_INT(gy_ckpt_writer_submit(w, bufs[1], path), 0);
  err[0] = '\0';
  CHECK_EQ_INT(gy_ckpt_writer_flush(w, err, sizeof err), GY_EIO);
  CHECK_MSG(strstr(err, bad) != NULL, "'%s'", err);
  CHECK_MSG(strstr(err, "No such file or directory") != NULL, "'%s'", err);
  CHECK_EQ_INT(gy_ckpt_writer_flush(w, err, sizeof err), 0);
  CHECK_EQ_INT(gy_ckpt_writer_completed(w), N + 2);
  CHECK_EQ_INT(gy_ckpt_buf_refs(bufs[0]), 1);
  CHECK(access(path, F_OK) == 0);
  unlink(path);

  /* Destroy flushes what is still queued. */
  snprintf(path, sizeof path, "%s/last.gyck", tmpdir);
  CHECK_EQ_INT(gy_ckpt_writer_submit(w, bufs[2], path), 0);
  gy_ckpt_writer_destroy(w);
  gy_ckpt_writer_destroy(NULL);
  CHECK(access(path, F_OK) == 0);
  CHECK_EQ_INT(gy_ckpt_buf_refs(bufs[2]), 1);
  unlink(path);
  for (int i = 0; i < N; i++)
    gy_ckpt_buf_unref(bufs[i]);
  CHECK_EQ_INT(count_files(tmpdir), 0);
}

int main(void) {
  strcpy(tmpdir, "/tmp/gy_test_ckpt.XXXXXX");
  REQUIRE(mkdtemp(tmpdir) != NULL);
  RUN(test_roundtrip);
  RUN(test_corruption);
  RUN(test_writer);
  rm_tree(tmpdir);
  GY_TEST_END();
}
