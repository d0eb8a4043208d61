/* test_guard: the per-sample guard's rules (worker/guard.h): content statistics of real-looking
 * text and of junk, outliers either way against a channel's recent samples, warm-up, masked
 * samples never entering the baseline, order independence within a batch, NaN, and the state's
 * bytes (round trip, and malformed blobs refused without touching the state). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "tests/test.h"
#include "worker/guard.h"

static void bytes_of(const char *s, uint16_t *out, int n) {
  int len = (int)strlen(s);
  for (int i = 0; i < n; i++)
    out[i] = (uint8_t)s[i % len];
}

static const char *english =
    "The controller keeps a run on course: it rolls back to the last clean checkpoint, skips "
    "the samples that caused a spike and resumes, recording every decision it takes. ";
static const char *chinese =
    "控制器让训练保持在正轨上：回滚到最近的干净检查点，跳过导致尖峰的样本，然后继续。";

static void test_content(void) {
  enum { N = 129 };
  uint16_t t[N];
  float st[GY_GSTAT_COUNT];
  bytes_of(english, t, N);
  gy_guard_content(t, N, 256, st);
  CHECK(st[GY_GSTAT_ENTROPY] > 3.5 && st[GY_GSTAT_ENTROPY] < 5);
  CHECK(st[GY_GSTAT_REPEAT] < 0.1);
  CHECK(st[GY_GSTAT_NONTEXT] == 0);
  CHECK(st[GY_GSTAT_HIGHBYTE] == 0);
  bytes_of(chinese, t, N);
  gy_guard_content(t, N, 256, st);
  CHECK_MSG(st[GY_GSTAT_HIGHBYTE] > 0.9, "highbyte %f", st[GY_GSTAT_HIGHBYTE]);
  /* a window of a UTF-8 stream may start or end inside a character: those bytes are not junk */
  CHECK_MSG(st[GY_GSTAT_NONTEXT] < 0.05, "nontext %f", st[GY_GSTAT_NONTEXT]);
  for (int i = 0; i < N; i++)
    t[i] = '\n';
  gy_guard_content(t, N, 256, st);
  CHECK(st[GY_GSTAT_ENTROPY] == 0);
  CHECK(st[GY_GSTAT_REPEAT] == 1);
  uint64_t x = 7;
  for (int i = 0; i < N; i++) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    t[i] = (uint16_t)(x >> 56);
  }
  gy_guard_content(t, N, 256, st);
  CHECK_MSG(st[GY_GSTAT_NONTEXT] > 0.3, "random bytes: nontext %f", st[GY_GSTAT_NONTEXT]);
  CHECK(st[GY_GSTAT_ENTROPY] > 6);
  /* markup: a web page's leftovers count, an include or a comparison does not */
  bytes_of("<div class=\"para\">The kernel</div> &lt;x&gt; ", t, N);
  gy_guard_content(t, N, 256, st);
  CHECK_MSG(st[GY_GSTAT_MARKUP] > 0.5, "markup %f", st[GY_GSTAT_MARKUP]);
  bytes_of("#include <stdio.h>\nif (a < b && c > d) return x; ", t, N);
  gy_guard_content(t, N, 256, st);
  CHECK_MSG(st[GY_GSTAT_MARKUP] == 0, "markup of C %f", st[GY_GSTAT_MARKUP]);
  /* another tokenizer: no byte statistics */
  gy_guard_content(t, N, 50257, st);
  CHECK(st[GY_GSTAT_NONTEXT] == 0 && st[GY_GSTAT_HIGHBYTE] == 0 && st[GY_GSTAT_MARKUP] == 0);
}

/* A clean sample's figures: loss around 2.5 with a little spread, English-like content. */
static void clean(float *st, int i) {
  st[GY_GSTAT_LOSS] = 2.5f + 0.3f * (float)((i * 37) % 11 - 5) / 5;
  st[GY_GSTAT_ENTROPY] = 4.2f + 0.1f * (float)((i * 13) % 7 - 3) / 3;
  st[GY_GSTAT_REPEAT] = 0.02f * (float)(i % 3);
  st[GY_GSTAT_NONTEXT] = 0;
  st[GY_GSTAT_HIGHBYTE] = 0;
  st[GY_GSTAT_MARKUP] = 0;
}

static gy_guard_t *warmed(int nch, int samples) {
  gy_guard_opts_t o;
  gy_guard_default(&o);
  gy_guard_t *g;
  REQUIRE(gy_guard_create(&g, &o, nch) == 0);
  for (int i = 0; i < samples; i++) {
    float st[1][GY_GSTAT_COUNT];
    clean(st[0], i);
    int ch = i % nch;
    gy_guard_verdict_t v;
    gy_guard_judge(g, 1, &ch, (const float(*)[GY_GSTAT_COUNT])st, &v);
    REQUIRE(!v.masked);
  }
  return g;
}

static void test_outliers(void) {
  gy_guard_t *g = warmed(2, 600);
  float st[6][GY_GSTAT_COUNT];
  int ch[6] = {0, 0, 1, 1, 0, 1};
  for (int i = 0; i < 6; i++)
    clean(st[i], 1000 + i);
  st[1][GY_GSTAT_LOSS] = 7.0f;    /* gibberish: a jump */
  st[3][GY_GSTAT_ENTROPY] = 0.5f; /* one token repeated */
  st[3][GY_GSTAT_REPEAT] = 1.0f;
  st[4][GY_GSTAT_NONTEXT] = 0.4f;   /* binary bytes */
  st[5][GY_GSTAT_HIGHBYTE] = 0.95f; /* another script */
  gy_guard_verdict_t v[6];
  gy_guard_judge(g, 6, ch, (const float(*)[GY_GSTAT_COUNT])st, v);
  CHECK(!v[0].masked && !v[2].masked);
  CHECK(v[1].masked && v[1].stat == GY_GSTAT_LOSS && v[1].high);
  CHECK(v[3].masked && v[3].stat == GY_GSTAT_ENTROPY && !v[3].high);
  CHECK(v[4].masked && v[4].stat == GY_GSTAT_NONTEXT);
  CHECK(v[5].masked && v[5].stat == GY_GSTAT_HIGHBYTE);
  char why[32];
  gy_guard_reason(&v[1], why, sizeof(why));
  CHECK(!strcmp(why, "loss_high"));
  gy_guard_reason(&v[3], why, sizeof(why));
  CHECK(!strcmp(why, "entropy_low"));
  gy_guard_reason(&v[0], why, sizeof(why));
  CHECK(!strcmp(why, ""));
  CHECK(v[1].threshold >= 1.5f && fabsf(v[1].median - 2.5f) < 0.2f);
  /* a drop of the loss alone: far below the median by more than the floor */
  clean(st[0], 5);
  st[0][GY_GSTAT_LOSS] = 0.2f;
  gy_guard_judge(g, 1, ch, (const float(*)[GY_GSTAT_COUNT])st, v);
  CHECK(v[0].masked && v[0].stat == GY_GSTAT_LOSS && !v[0].high);
  gy_guard_destroy(g);
}

/* The loss rule waits for a full window (early in a run the loss falls fast); the content rules
 * only for the warm-up. */
static void test_loss_waits_for_the_window(void) {
  gy_guard_t *g = warmed(1, 100); /* past the warm-up, short of the window (256) */
  float st[2][GY_GSTAT_COUNT];
  clean(st[0], 1);
  clean(st[1], 2);
  st[0][GY_GSTAT_LOSS] = 0.1f;    /* far below: would fire with a full window */
  st[1][GY_GSTAT_NONTEXT] = 0.5f; /* binary bytes: fires */
  int ch[2] = {0, 0};
  gy_guard_verdict_t v[2];
  gy_guard_judge(g, 2, ch, (const float(*)[GY_GSTAT_COUNT])st, v);
  CHECK(!v[0].masked);
  CHECK(v[1].masked && v[1].stat == GY_GSTAT_NONTEXT);
  gy_guard_destroy(g);
}

static void test_warmup_and_nan(void) {
  gy_guard_t *g = warmed(1, 5); /* below the warm-up: nothing fires */
  float st[2][GY_GSTAT_COUNT];
  clean(st[0], 1);
  clean(st[1], 2);
  st[0][GY_GSTAT_LOSS] = 9;
  st[1][GY_GSTAT_LOSS] = NAN;
  int ch[2] = {0, 0};
  gy_guard_verdict_t v[2];
  gy_guard_judge(g, 2, ch, (const float(*)[GY_GSTAT_COUNT])st, v);
  CHECK(!v[0].masked);
  CHECK(v[1].masked && v[1].nonfinite); /* a NaN loss never makes a gradient */
  char why[32];
  gy_guard_reason(&v[1], why, sizeof(why));
  CHECK(!strcmp(why, "nonfinite"));
  /* disabled: nothing masked, not even NaN (the controller's NaN path then acts) */
  gy_guard_opts_t o = *gy_guard_opts(g);
  o.enabled = 0;
  REQUIRE(gy_guard_set_opts(g, &o) == 0);
  gy_guard_judge(g, 2, ch, (const float(*)[GY_GSTAT_COUNT])st, v);
  CHECK(!v[0].masked && !v[1].masked);
  gy_guard_destroy(g);
}

/* Junk never becomes the baseline: a long run of junk keeps being masked. */
static void test_masked_stay_out(void) {
  gy_guard_t *g = warmed(1, 300);
  uint64_t seen = gy_guard_seen(g, 0);
  int masked = 0;
  for (int i = 0; i < 1000; i++) {
    float st[1][GY_GSTAT_COUNT];
    clean(st[0], i);
    st[0][GY_GSTAT_LOSS] = 6.5f;
    int ch = 0;
    gy_guard_verdict_t v;
    gy_guard_judge(g, 1, &ch, (const float(*)[GY_GSTAT_COUNT])st, &v);
    masked += v.masked;
  }
  CHECK_EQ_INT(masked, 1000);
  CHECK(gy_guard_seen(g, 0) == seen);
  gy_guard_destroy(g);
}

/* Verdicts do not depend on the order of the batch (every sample is judged against the state
 * before the batch), and two guards fed the same batches agree: what a replay relies on. */
static void test_order_independent(void) {
  gy_guard_t *a = warmed(3, 900), *b = warmed(3, 900);
  float st[8][GY_GSTAT_COUNT], rs[8][GY_GSTAT_COUNT];
  int ch[8], rch[8];
  for (int i = 0; i < 8; i++) {
    clean(st[i], 77 * i);
    ch[i] = i % 3;
  }
  st[2][GY_GSTAT_LOSS] = 8;
  st[6][GY_GSTAT_REPEAT] = 0.9f;
  for (int i = 0; i < 8; i++) {
    memcpy(rs[i], st[7 - i], sizeof(rs[i]));
    rch[i] = ch[7 - i];
  }
  gy_guard_verdict_t va[8], vb[8];
  gy_guard_judge(a, 8, ch, (const float(*)[GY_GSTAT_COUNT])st, va);
  gy_guard_judge(b, 8, rch, (const float(*)[GY_GSTAT_COUNT])rs, vb);
  for (int i = 0; i < 8; i++)
    CHECK_MSG(va[i].masked == vb[7 - i].masked, "sample %d", i);
  CHECK(va[2].masked && va[6].masked);
  gy_guard_destroy(a);
  gy_guard_destroy(b);
}

static void test_state_bytes(void) {
  gy_guard_t *a = warmed(2, 333);
  uint8_t *blob;
  size_t n;
  REQUIRE(gy_guard_save(a, &blob, &n) == 0);
  gy_guard_opts_t o;
  gy_guard_default(&o);
  gy_guard_t *b;
  REQUIRE(gy_guard_create(&b, &o, 2) == 0);
  char err[256];
  REQUIRE(gy_guard_load(b, blob, n, err, sizeof(err)) == 0);
  CHECK(gy_guard_seen(b, 0) == gy_guard_seen(a, 0));
  /* the restored guard decides exactly as the original */
  float st[2][GY_GSTAT_COUNT];
  clean(st[0], 3);
  clean(st[1], 4);
  st[1][GY_GSTAT_LOSS] = 5.2f;
  int ch[2] = {0, 1};
  gy_guard_verdict_t va[2], vb[2];
  gy_guard_judge(a, 2, ch, (const float(*)[GY_GSTAT_COUNT])st, va);
  gy_guard_judge(b, 2, ch, (const float(*)[GY_GSTAT_COUNT])st, vb);
  CHECK(!memcmp(va, vb, sizeof(va)));
  /* malformed blobs: refused, named, state unchanged */
  uint64_t before = gy_guard_seen(b, 0);
  CHECK_EQ_INT(gy_guard_load(b, blob, n - 3, err, sizeof(err)), GY_ECORRUPT);
  blob[0] ^= 1;
  CHECK_EQ_INT(gy_guard_load(b, blob, n, err, sizeof(err)), GY_ECORRUPT);
  CHECK(strstr(err, "guard state") != NULL);
  blob[0] ^= 1;
  blob[8] = 9; /* nine channels */
  CHECK_EQ_INT(gy_guard_load(b, blob, n, err, sizeof(err)), GY_ECORRUPT);
  CHECK(gy_guard_seen(b, 0) == before);
  free(blob);
  gy_guard_destroy(a);
  gy_guard_destroy(b);
}

static void test_opts(void) {
  gy_guard_opts_t o;
  gy_guard_default(&o);
  char err[256];
  CHECK_EQ_INT(gy_guard_check(&o, err, sizeof(err)), 0);
  o.window = 4;
  CHECK_EQ_INT(gy_guard_check(&o, err, sizeof(err)), GY_ECONFIG);
  CHECK(strstr(err, "guard.window") != NULL);
  gy_guard_default(&o);
  o.rule[GY_GSTAT_REPEAT].floor = 0;
  CHECK_EQ_INT(gy_guard_check(&o, err, sizeof(err)), GY_ECONFIG);
  CHECK(strstr(err, "guard.rules.repeat.floor") != NULL);
  gy_guard_default(&o);
  o.max_step_share = 0;
  CHECK_EQ_INT(gy_guard_check(&o, err, sizeof(err)), GY_ECONFIG);
  /* a smaller window keeps the newest figures */
  gy_guard_t *g = warmed(1, 300);
  gy_guard_default(&o);
  o.window = 16;
  o.warmup = 8;
  REQUIRE(gy_guard_set_opts(g, &o) == 0);
  float st[1][GY_GSTAT_COUNT];
  clean(st[0], 1);
  st[0][GY_GSTAT_LOSS] = 7;
  int ch = 0;
  gy_guard_verdict_t v;
  gy_guard_judge(g, 1, &ch, (const float(*)[GY_GSTAT_COUNT])st, &v);
  CHECK(v.masked);
  gy_guard_destroy(g);
}

int main(void) {
  RUN(test_content);
  RUN(test_outliers);
  RUN(test_warmup_and_nan);
  RUN(test_loss_waits_for_the_window);
  RUN(test_masked_stay_out);
  RUN(test_order_independent);
  RUN(test_state_bytes);
  RUN(test_opts);
  GY_TEST_END();
}
