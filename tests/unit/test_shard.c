/* test_shard: llm.c token shards: a round trip of real text, and every way a file can be bad
 * (truncated, oversized, bad magic, bad version, negative count, missing, not a file). */
#include <dirent.h>
#include <sys/stat.h>

#include "common/err.h"
#include "tests/test.h"
#include "tests/unit/data_fixture.h"
#include "worker/shard.h"

#define HDR 1024

/* Writes a raw shard file: the header says count tokens, the file holds ntok of them. */
static void write_raw_shard(const char *path, int32_t magic, int32_t version, int32_t count,
                            size_t ntok, size_t extra) {
  size_t n = HDR + ntok * 2 + extra;
  unsigned char *b = calloc(1, n);
  int32_t *h = (int32_t *)b;
  h[0] = magic;
  h[1] = version;
  h[2] = count;
  for (size_t i = 0; i < ntok; i++)
    ((uint16_t *)(b + HDR))[i] = (uint16_t)('a' + i % 26);
  fx_write(path, b, n);
  free(b);
}

static int no_temp_files(const char *dir) {
  DIR *d = opendir(dir);
  struct dirent *de;
  int ok = 1;
  while ((de = readdir(d)))
    if (strstr(de->d_name, ".tmp.")) ok = 0;
  closedir(d);
  return ok;
}

static void expect_corrupt(const char *path, const char *what) {
  gy_shard_t s;
  char err[512] = "";
  int rc = gy_shard_open(&s, path, err, sizeof(err));
  CHECK_MSG(rc == GY_ECORRUPT, "%s: rc %s", what, gy_err_name(rc));
  CHECK_MSG(strstr(err, path) != NULL, "%s: errmsg lacks the file: %s", what, err);
  CHECK_MSG(s.tokens == NULL && s.map_base == NULL, "%s: shard not left empty", what);
  gy_shard_close(&s); /* closing a failed (empty) shard is harmless */
}

int main(void) {
  char *dir = fx_tmpdir();
  char err[512];
  size_t n;
  uint16_t *text = fx_text_tokens("/usr/include/stdio.h", &n);
  REQUIRE(n > 1000);

  /* Round trip of real text. */
  char *p = fx_path(dir, "stdio.bin");
  CHECK_EQ_INT(gy_shard_write(p, text, n, err, sizeof(err)), GY_OK);
  CHECK(no_temp_files(dir));
  gy_shard_t s;
  CHECK_EQ_INT(gy_shard_open(&s, p, err, sizeof(err)), GY_OK);
  CHECK_EQ_INT(s.ntokens, n);
  CHECK(s.tokens && memcmp(s.tokens, text, n * 2) == 0);
  struct stat st;
  CHECK(stat(p, &st) == 0 && (size_t)st.st_size == HDR + 2 * n);
  {
    size_t len;
    unsigned char *raw = fx_read(p, &len);
    const int32_t *h = (const int32_t *)raw;
    CHECK(h[0] == 20240520 && h[1] == 1 && h[2] == (int32_t)n);
    int zeros = 1;
    for (int i = 3; i < 256; i++)
      zeros &= h[i] == 0;
    CHECK(zeros);
    free(raw);
  }
  gy_shard_close(&s);
  CHECK(s.tokens == NULL);

  /* Overwriting replaces the whole file (rename over the old one). */
  CHECK_EQ_INT(gy_shard_write(p, text + 100, 500, err, sizeof(err)), GY_OK);
  CHECK_EQ_INT(gy_shard_open(&s, p, err, sizeof(err)), GY_OK);
  CHECK_EQ_INT(s.ntokens, 500);
  CHECK(memcmp(s.tokens, text + 100, 1000) == 0);
  gy_shard_close(&s);

  /* An empty shard is valid. */
  char *pe = fx_path(dir, "empty.bin");
  CHECK_EQ_INT(gy_shard_write(pe, NULL, 0, err, sizeof(err)), GY_OK);
  CHECK_EQ_INT(gy_shard_open(&s, pe, err, sizeof(err)), GY_OK);
  CHECK_EQ_INT(s.ntokens, 0);
  gy_shard_close(&s);

  /* Truncated: the header says 1000 tokens, 999 are there. */
  char *pt = fx_path(dir, "truncated.bin");
  write_raw_shard(pt, 20240520, 1, 1000, 999, 0);
  expect_corrupt(pt, "truncated");
  CHECK(gy_shard_open(&s, pt, err, sizeof(err)) == GY_ECORRUPT && strstr(err, "truncated"));
  /* Truncated mid-token (odd size). */
  write_raw_shard(pt, 20240520, 1, 1000, 999, 1);
  expect_corrupt(pt, "truncated by one byte");
  /* Truncated inside the header. */
  fx_write(pt, "\x38\x22\x35\x01", 4);
  expect_corrupt(pt, "short header");
  fx_write(pt, "", 0);
  expect_corrupt(pt, "empty file");
  /* Oversized: bytes after the last token. */
  char *po = fx_path(dir, "oversized.bin");
  write_raw_shard(po, 20240520, 1, 10, 10, 6);
  expect_corrupt(po, "oversized");
  CHECK(gy_shard_open(&s, po, err, sizeof(err)) == GY_ECORRUPT && strstr(err, "oversized"));
  /* Count mismatch the other way: the header says fewer tokens than the file holds. */
  write_raw_shard(po, 20240520, 1, 5, 10, 0);
  expect_corrupt(po, "count below the file's tokens");
  /* Bad magic: e.g. a GPT-2 model file or random bytes. */
  char *pm = fx_path(dir, "magic.bin");
  write_raw_shard(pm, 20240326, 1, 10, 10, 0);
  expect_corrupt(pm, "bad magic");
  CHECK(gy_shard_open(&s, pm, err, sizeof(err)) == GY_ECORRUPT && strstr(err, "magic"));
  /* Real text is not a shard. */
  expect_corrupt("/usr/include/stdio.h", "a text file");
  /* Bad version. */
  char *pv = fx_path(dir, "version.bin");
  write_raw_shard(pv, 20240520, 2, 10, 10, 0);
  expect_corrupt(pv, "bad version");
  CHECK(gy_shard_open(&s, pv, err, sizeof(err)) == GY_ECORRUPT && strstr(err, "version"));
  /* Negative count. */
  write_raw_shard(pv, 20240520, 1, -3, 0, 0);
  expect_corrupt(pv, "negative count");

  /* Missing file and a folder. */
  char *pn = fx_path(dir, "missing.bin");
  CHECK_EQ_INT(gy_shard_open(&s, pn, err, sizeof(err)), GY_ENOENT);
  CHECK(strstr(err, pn) != NULL);
  CHECK(gy_shard_open(&s, dir, err, sizeof(err)) != GY_OK);

  /* Writing into a missing folder fails cleanly and leaves nothing behind. */
  char *pd = fx_path(dir, "no/such/dir/x.bin");
  CHECK_EQ_INT(gy_shard_write(pd, text, 10, err, sizeof(err)), GY_EIO);
  CHECK(strstr(err, pd) != NULL);
  CHECK(no_temp_files(dir));

  free(text);
  free(p);
  free(pe);
  free(pt);
  free(po);
  free(pm);
  free(pv);
  free(pn);
  free(pd);
  fx_rmtree(dir);
  free(dir);
  GY_TEST_END();
}
