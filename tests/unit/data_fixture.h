/* data_fixture.h: helpers shared by the shard and data tests: a temporary folder under /tmp
 * (removed with everything in it), reading a whole file, and real text turned into byte
 * tokens. Header-only so each test stays one executable. */
#ifndef GY_TEST_DATA_FIXTURE_H
#define GY_TEST_DATA_FIXTURE_H

#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "worker/shard.h"

/* Makes a fresh folder under /tmp; the caller frees the returned path. */
static char *fx_tmpdir(void) {
  char tmpl[] = "/tmp/gy-test-XXXXXX";
  if (!mkdtemp(tmpl)) {
    perror("mkdtemp");
    exit(1);
  }
  return strdup(tmpl);
}

static int fx_rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st;
  (void)flag;
  (void)ftw;
  return remove(path);
}

/* Removes dir and everything in it. */
static void fx_rmtree(const char *dir) {
  nftw(dir, fx_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* dir + "/" + name, malloc'd. */
static char *fx_path(const char *dir, const char *name) {
  size_t n = strlen(dir) + strlen(name) + 2;
  char *p = malloc(n);
  snprintf(p, n, "%s/%s", dir, name);
  return p;
}

/* Reads a whole file; NULL if it cannot. The caller frees. */
static unsigned char *fx_read(const char *path, size_t *n) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  size_t cap = 1 << 16, len = 0;
  unsigned char *p = malloc(cap);
  size_t k;
  while ((k = fread(p + len, 1, cap - len, f)) > 0) {
    len += k;
    if (len == cap) p = realloc(p, cap *= 2);
  }
  fclose(f);
  *n = len;
  return p;
}

static void fx_write(const char *path, const void *p, size_t n) {
  FILE *f = fopen(path, "wb");
  if (!f || fwrite(p, 1, n, f) != n) {
    perror(path);
    exit(1);
  }
  fclose(f);
}

/* The bytes of a system text file as tokens (one byte = one token). The caller frees. */
static uint16_t *fx_text_tokens(const char *path, size_t *n) {
  size_t len;
  unsigned char *b = fx_read(path, &len);
  if (!b) {
    fprintf(stderr, "cannot read %s (libc6-dev is needed to build gyro anyway)\n", path);
    exit(1);
  }
  uint16_t *t = malloc((len ? len : 1) * sizeof(uint16_t));
  for (size_t i = 0; i < len; i++)
    t[i] = b[i];
  free(b);
  *n = len;
  return t;
}

/* Channel c < nch of real text as two shards in dir: the bytes of texts[c][0] as
 * "c<c>_train.bin" and those of texts[c][1] as "c<c>_val.bin" (inline: not every test uses it). */
static inline void fx_write_text_shards(const char *dir, const char *const texts[][2], int nch) {
  char err[256];
  for (int c = 0; c < nch; c++)
    for (int k = 0; k < 2; k++) {
      size_t n;
      uint16_t *tok = fx_text_tokens(texts[c][k], &n);
      char name[64];
      snprintf(name, sizeof(name), "c%d_%s.bin", c, k ? "val" : "train");
      char *p = fx_path(dir, name);
      if (gy_shard_write(p, tok, n, err, sizeof(err))) {
        fprintf(stderr, "%s\n", err);
        exit(1);
      }
      free(p);
      free(tok);
    }
}

#endif
