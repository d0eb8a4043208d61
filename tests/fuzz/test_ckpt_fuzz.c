/* test_ckpt_fuzz: a deterministic random-mutation fuzzer for gy_ckpt_parse.
 *
 * 20,000 mutated copies of a valid checkpoint (bit flips, byte sets, truncations, extensions,
 * header and directory field overwrites; half of the field overwrites recompute the directory
 * and header CRCs so that the checks behind them are reached) are parsed from buffers of their
 * exact length, so an ASan build (-DGY_SANITIZE=ON) catches any read out of bounds. The parser
 * must never crash, must refuse every buffer whose bytes differ from the original with
 * GY_ECORRUPT and a message naming the source, and must accept the unchanged ones. The seed is
 * fixed; GY_FUZZ_SEED and GY_FUZZ_ITERS in the environment override it and the count. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/crc32c.h"
#include "common/err.h"
#include "common/le.h"
#include "tests/test.h"
#include "worker/ckpt.h"

static uint64_t rng_state;
static uint64_t rng(void) { /* splitmix64 */
  uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
static size_t below(size_t n) {
  return n ? (size_t)(rng() % n) : 0;
}

/* Recomputes the directory CRC (when the directory the header claims fits) and the header CRC,
 * as a careless or hostile writer would. */
static void fix_crcs(uint8_t *m, size_t len) {
  if (len < 72) return;
  uint64_t n = gy_le_get32(m + 12);
  if (72 + 72 * n <= len) gy_le_put32(m + 64, gy_crc32c(0, m + 72, (size_t)(72 * n)));
  gy_le_put32(m + 68, gy_crc32c(0, m, 68));
}

/* A value likely to hit a boundary of a field of the checkpoint of length len. */
static uint64_t interesting(size_t len) {
  switch (below(10)) {
  case 0:
    return 0;
  case 1:
    return 1;
  case 2:
    return len;
  case 3:
    return len - 1;
  case 4:
    return len + 1;
  case 5:
    return UINT64_MAX;
  case 6:
    return UINT64_MAX - below(100);
  case 7:
    return (uint64_t)1 << (32 + below(32));
  case 8:
    return 0xFFFFFFFFu;
  default:
    return rng();
  }
}

int main(void) {
  const char *seed_env = getenv("GY_FUZZ_SEED"), *iters_env = getenv("GY_FUZZ_ITERS");
  rng_state = seed_env ? strtoull(seed_env, NULL, 0) : 20240326;
  long iters = iters_env ? strtol(iters_env, NULL, 0) : 20000;

  /* The valid checkpoint: blobs of several sizes, one empty. */
  static uint8_t p0[13], p1[200], p2[1000];
  for (size_t i = 0; i < sizeof p2; i++)
    p2[i] = (uint8_t)rng();
  for (size_t i = 0; i < sizeof p1; i++)
    p1[i] = (uint8_t)i;
  memcpy(p0, "thirteen byte", 13);
  gy_ckpt_blob_t blobs[4] = {{.name = "rng", .data = p0, .nbytes = sizeof p0},
                             {.name = "empty", .data = NULL, .nbytes = 0},
                             {.name = "opt/m", .data = p1, .nbytes = sizeof p1},
                             {.name = "param/qkvw", .data = p2, .nbytes = sizeof p2}};
  gy_ckpt_meta_t meta = {.step = 42, .config_hash = 7, .rank = 0, .world = 1, .dp = 1, .tp = 1};
  gy_ckpt_buf_t *b = NULL;
  REQUIRE(gy_ckpt_build(&b, &meta, blobs, 4) == 0);
  const uint8_t *orig = gy_ckpt_buf_data(b);
  size_t len = gy_ckpt_buf_len(b);
  const char *what = "fuzz.gyck";
  size_t wlen = strlen(what);

  long accepted = 0, refused = 0, wrong_accept = 0, wrong_refuse = 0, bad_rc = 0, bad_msg = 0;
  long kinds[6] = {0};
  uint8_t *work = malloc(len + 4096);
  REQUIRE(work);
  for (long it = 0; it < iters; it++) {
    memcpy(work, orig, len);
    size_t mlen = len;
    int kind = (int)below(6);
    kinds[kind]++;
    switch (kind) {
    case 0: { /* bit flips */
      int n = 1 + (int)below(4);
      for (int i = 0; i < n; i++)
        work[below(len)] ^= (uint8_t)(1u << below(8));
      break;
    }
    case 1: { /* byte sets */
      int n = 1 + (int)below(8);
      for (int i = 0; i < n; i++)
        work[below(len)] = (uint8_t)(below(3) ? rng() : 0);
      break;
    }
    case 2: /* truncation */
      mlen = below(len);
      break;
    case 3: { /* extension */
      size_t ext = 1 + below(4000);
      for (size_t i = 0; i < ext; i++)
        work[len + i] = below(2) ? 0 : (uint8_t)rng();
      mlen = len + ext;
      break;
    }
    case 4: { /* header field overwrite: nblobs, dir offset, total length */
      int f = (int)below(3);
      uint64_t v = interesting(len);
      if (f == 0)
        gy_le_put32(work + 12, (uint32_t)(below(2) ? v : 3 + below(3) + 8 * below(2)));
      else
        gy_le_put64(work + (f == 1 ? 48 : 56), v);
      if (below(2)) fix_crcs(work, mlen);
      break;
    }
    default: { /* directory field overwrite: offset, nbytes, reserved (sometimes with CRCs) */
      uint8_t *e = work + 72 + 72 * below(4);
      int f = (int)below(3);
      uint64_t v = below(2) ? interesting(len) : gy_le_get32(e + 48) + below(130) - 65;
      if (f == 0)
        gy_le_put64(e + 48, v);
      else if (f == 1)
        gy_le_put64(e + 56, v);
      else
        gy_le_put32(e + 68, (uint32_t)v);
      if (below(2)) fix_crcs(work, mlen);
      break;
    }
    }
    /* Parse from an allocation of exactly mlen bytes, so ASan sees any overread. */
    uint8_t *m = malloc(mlen ? mlen : 1);
    REQUIRE(m);
    memcpy(m, work, mlen);
    int same = mlen == len && memcmp(m, orig, len) == 0;
    gy_ckpt_view_t v;
    char err[512] = "";
    int rc = gy_ckpt_parse(m, mlen, what, &v, err, sizeof err);
    if (rc == 0) {
      accepted++;
      if (!same && wrong_accept++ < 5)
        fprintf(stderr, "iteration %ld (kind %d): accepted\n", it, kind);
      /* The view must describe bytes inside the buffer. */
      for (int i = 0; i < v.nblobs; i++) {
        const uint8_t *d = v.blobs[i].data;
        CHECK(d >= m && d + v.blobs[i].nbytes <= m + mlen);
      }
      gy_ckpt_view_free(&v);
    } else {
      refused++;
      if (same) wrong_refuse++;
      if (rc != GY_ECORRUPT) bad_rc++;
      if (strncmp(err, what, wlen) != 0 || strlen(err) <= wlen + 2) {
        if (bad_msg++ < 5) fprintf(stderr, "iteration %ld: message '%s'\n", it, err);
      }
      CHECK(v.nblobs == 0 && v.blobs == NULL);
    }
    free(m);
  }
  printf("%ld iterations: %ld accepted, %ld refused (kinds: %ld %ld %ld %ld %ld %ld)\n", iters,
         accepted, refused, kinds[0], kinds[1], kinds[2], kinds[3], kinds[4], kinds[5]);
  CHECK_EQ_INT(wrong_accept, 0);
  CHECK_EQ_INT(wrong_refuse, 0);
  CHECK_EQ_INT(bad_rc, 0);
  CHECK_EQ_INT(bad_msg, 0);
  CHECK_EQ_INT(accepted + refused, iters);
  free(work);
  gy_ckpt_buf_unref(b);
  GY_TEST_END();
}
