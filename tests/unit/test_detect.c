/* test_detect: the robust spike detector. Clean noisy series (a decaying loss, a heavy-tailed
 * gradient norm, a throughput) never fire at the default thresholds over 2,000 steps; a jump
 * and a drop fire at their step with exact evidence; NaN/Inf fire at once and never enter the
 * window; flagged values do not poison the baseline; warm-up, window roll-over, the threshold
 * floors, one-sided detectors, the set keyed by name, and option changes. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "common/err.h"
#include "controller/detect.h"
#include "tests/test.h"

/* Deterministic noise: xorshift64* and Box-Muller. */
static uint64_t rng = 0x9E3779B97F4A7C15ull;
static double uniform(void) {
  rng ^= rng >> 12;
  rng ^= rng << 25;
  rng ^= rng >> 27;
  return ((rng * 2685821657736338717ull) >> 11) * (1.0 / 9007199254740992.0);
}
static double gauss(void) {
  double u = uniform(), v = uniform();
  if (u < 1e-300) u = 1e-300;
  return sqrt(-2 * log(u)) * cos(2 * M_PI * v);
}

static gy_detect_opts_t opts(int window, int warmup, double z, double min_delta, double min_rel) {
  gy_detect_opts_t o = {.window = window,
                        .warmup = warmup,
                        .z = z,
                        .min_delta = min_delta,
                        .min_rel = min_rel,
                        .jump = 1,
                        .drop = 1};
  return o;
}

static gy_series_t *mk(const char *name, gy_detect_opts_t o) {
  gy_series_t *s = NULL;
  REQUIRE(gy_series_create(&s, name, &o) == 0 && s);
  return s;
}

/* Clean series at the default thresholds: zero false positives. */
static void test_clean_series(void) {
  gy_policy_t p;
  gy_policy_default(&p);
  gy_series_t *loss = mk("loss", p.detect[GY_SERIES_LOSS]);
  gy_series_t *ch = mk("loss/code", p.detect[GY_SERIES_CHANNEL_LOSS]);
  gy_series_t *gn = mk("grad_norm", p.detect[GY_SERIES_GRAD_NORM]);
  gy_series_t *tp = mk("tokens_per_s/0", p.detect[GY_SERIES_THROUGHPUT]);
  int fired = 0;
  for (int t = 0; t < 2000; t++) {
    /* A loss decaying fast from 10.5 to 3 (steepest at the start, where a lagging median is
     * most tempted to call the trend a drop), noise 0.05 nats. */
    double l = 3.0 + 7.5 * exp(-t / 150.0) + 0.05 * gauss();
    double c = 2.0 + 3.0 * exp(-t / 300.0) + 0.08 * gauss();
    /* Gradient norm: log-normal noise around a decaying level (heavy right tail). */
    double g = (0.4 + 2.0 * exp(-t / 100.0)) * exp(0.25 * gauss());
    double k = 50000.0 * (1 + 0.03 * gauss());
    gy_verdict_t v;
    fired += gy_series_push(loss, t, l, &v);
    CHECK_MSG(!v.fired, "loss fired at step %d: %g vs median %g thr %g", t, v.value, v.median,
              v.threshold);
    fired += gy_series_push(ch, t, c, NULL);
    fired += gy_series_push(gn, t, g, &v);
    CHECK_MSG(!v.fired, "grad_norm fired at step %d: %g vs median %g thr %g", t, v.value,
              v.median, v.threshold);
    fired += gy_series_push(tp, t, k, NULL);
  }
  CHECK_EQ_INT(fired, 0);
  /* The same loss with a spike in the middle of it: exactly that step fires. */
  gy_series_reset(loss);
  int at = -1, n = 0;
  for (int t = 0; t < 2000; t++) {
    double l = 3.0 + 7.5 * exp(-t / 150.0) + 0.05 * gauss() + (t == 1234 ? 1.0 : 0.0);
    if (gy_series_push(loss, t, l, NULL)) {
      at = t;
      n++;
    }
  }
  CHECK_EQ_INT(n, 1);
  CHECK_EQ_INT(at, 1234);
  gy_series_destroy(loss);
  gy_series_destroy(ch);
  gy_series_destroy(gn);
  gy_series_destroy(tp);
}

/* A known window gives exact evidence: values 1..5 -> median 3, MAD 1. */
static void test_exact_evidence(void) {
  gy_series_t *s = mk("x", opts(5, 5, 2.0, 0, 0));
  gy_verdict_t v;
  for (int i = 1; i <= 5; i++)
    CHECK(gy_series_push(s, i, i, &v) == 0);
  double thr = 2.0 * 1.4826 * 1.0; /* 2.9652 */
  /* Just inside: no fire (and the value enters the window, evicting 1). */
  CHECK(gy_series_push(s, 6, 3 + thr - 1e-9, &v) == 0);
  CHECK_NEAR(v.median, 3, 1e-12);
  CHECK_NEAR(v.mad, 1, 1e-12);
  CHECK_NEAR(v.threshold, thr, 1e-12);
  CHECK_EQ_INT(v.n, 5);
  CHECK(v.warm);
  /* Window is now 2,3,4,5,5.9652: median 4, |dev| = 2,1,0,1,1.9652 -> MAD 1. */
  CHECK(gy_series_push(s, 7, 4 + thr + 1e-9, &v) == 1);
  CHECK_EQ_INT(v.dir, GY_DETECT_JUMP);
  CHECK_NEAR(v.median, 4, 1e-12);
  CHECK_NEAR(v.mad, 1, 1e-12);
  CHECK_EQ_INT(v.step, 7);
  CHECK(!strcmp(v.series, "x"));
  CHECK(gy_series_push(s, 8, 4 - thr - 1e-9, &v) == 1);
  CHECK_EQ_INT(v.dir, GY_DETECT_DROP);
  CHECK(gy_series_push(s, 9, 4 - thr + 1e-9, &v) == 0);
  char buf[200];
  gy_verdict_format(&v, buf, sizeof(buf));
  CHECK(strstr(buf, "x=") == buf && strstr(buf, "median 4") && strstr(buf, "at step 9"));
  gy_series_destroy(s);
}

/* A jump and a drop on a noisy flat series fire at their step, nothing else does. */
static void test_jump_and_drop(void) {
  gy_policy_t p;
  gy_policy_default(&p);
  gy_series_t *s = mk("loss/en", p.detect[GY_SERIES_CHANNEL_LOSS]);
  gy_verdict_t v;
  for (int t = 0; t < 100; t++)
    CHECK(gy_series_push(s, t, 2.5 + 0.03 * gauss(), &v) == 0);
  CHECK(gy_series_push(s, 100, 4.0, &v) == 1);
  CHECK_EQ_INT(v.dir, GY_DETECT_JUMP);
  CHECK_EQ_INT(v.step, 100);
  CHECK_NEAR(v.value, 4.0, 0);
  CHECK_NEAR(v.median, 2.5, 0.05);
  CHECK(v.threshold >= p.detect[GY_SERIES_CHANNEL_LOSS].min_delta);
  for (int t = 101; t < 120; t++)
    CHECK(gy_series_push(s, t, 2.5 + 0.03 * gauss(), &v) == 0);
  CHECK(gy_series_push(s, 120, 0.2, &v) == 1); /* repeated tokens: the loss collapses */
  CHECK_EQ_INT(v.dir, GY_DETECT_DROP);
  CHECK_EQ_INT(v.step, 120);
  gy_series_destroy(s);
}

/* NaN and Inf fire at once (even before warm-up) and never enter the window. */
static void test_nonfinite(void) {
  gy_series_t *s = mk("loss", opts(8, 4, 6, 0.1, 0));
  gy_verdict_t v;
  CHECK(gy_series_push(s, 0, NAN, &v) == 1);
  CHECK_EQ_INT(v.dir, GY_DETECT_NONFINITE);
  CHECK(!v.warm);
  CHECK_EQ_INT(gy_series_baseline(s, NULL, NULL, NULL), 0);
  for (int t = 1; t <= 4; t++)
    CHECK(gy_series_push(s, t, 3.0, &v) == 0);
  CHECK(gy_series_push(s, 5, INFINITY, &v) == 1);
  CHECK_EQ_INT(v.dir, GY_DETECT_NONFINITE);
  CHECK(gy_series_push(s, 6, -INFINITY, &v) == 1);
  CHECK_EQ_INT(gy_series_baseline(s, NULL, NULL, NULL), 4);
  double m;
  gy_series_baseline(s, &m, NULL, NULL);
  CHECK_NEAR(m, 3.0, 0);
  gy_series_destroy(s);
}

/* Flagged values never enter the baseline: a run of spikes fires every time. */
static void test_no_poisoning(void) {
  gy_series_t *s = mk("loss", opts(16, 8, 6, 0.1, 0));
  gy_verdict_t v;
  for (int t = 0; t < 32; t++)
    gy_series_push(s, t, 3.0 + 0.01 * gauss(), &v);
  double m0;
  gy_series_baseline(s, &m0, NULL, NULL);
  for (int t = 32; t < 52; t++) {
    CHECK_MSG(gy_series_push(s, t, 5.0, &v) == 1, "spike at step %d did not fire", t);
    CHECK_EQ_INT(gy_series_streak(s), t - 31);
  }
  double m1;
  CHECK_EQ_INT(gy_series_baseline(s, &m1, NULL, NULL), 16);
  CHECK_NEAR(m1, m0, 0);
  CHECK(gy_series_push(s, 52, 3.0, &v) == 0);
  CHECK_EQ_INT(gy_series_streak(s), 0);
  gy_series_destroy(s);
}

/* Nothing but NaN fires before warm-up accepted values. */
static void test_warmup(void) {
  gy_series_t *s = mk("loss", opts(32, 10, 6, 0.1, 0));
  gy_verdict_t v;
  for (int t = 0; t < 9; t++)
    CHECK(gy_series_push(s, t, 3.0, &v) == 0);
  /* 9 accepted: a huge value is not judged, and it is accepted. */
  CHECK(gy_series_push(s, 9, 100.0, &v) == 0);
  CHECK(!v.warm);
  CHECK_EQ_INT(v.n, 9);
  /* 10 accepted now (median still 3): the next jump fires. */
  CHECK(gy_series_push(s, 10, 100.0, &v) == 1);
  CHECK(v.warm);
  CHECK_NEAR(v.median, 3.0, 0);
  gy_series_destroy(s);
}

/* The window rolls: old values leave, so a level shift that was accepted becomes the norm. */
static void test_window_rolls(void) {
  gy_series_t *s = mk("x", opts(4, 2, 3, 0.5, 0));
  gy_verdict_t v;
  double m;
  for (int t = 0; t < 4; t++)
    gy_series_push(s, t, 1.0, &v);
  /* Steps of 0.1 stay under min_delta 0.5 each time and walk the baseline up. */
  for (int t = 4; t < 20; t++)
    CHECK(gy_series_push(s, t, 1.0 + 0.1 * (t - 3), &v) == 0);
  gy_series_baseline(s, &m, NULL, NULL);
  CHECK_NEAR(m, 1.0 + 0.1 * 14.5, 1e-9); /* the last four: 1 + 0.1 * (13..16) */
  gy_series_destroy(s);
}

/* Threshold floors: min_delta on a flat series (MAD 0), min_rel on a large one. */
static void test_floors(void) {
  gy_series_t *a = mk("a", opts(8, 4, 6, 0.2, 0));
  gy_verdict_t v;
  for (int t = 0; t < 8; t++)
    gy_series_push(a, t, 2.0, &v);
  CHECK(gy_series_push(a, 8, 2.19, &v) == 0);
  CHECK_NEAR(v.threshold, 0.2, 0);
  CHECK(gy_series_push(a, 9, 2.21, &v) == 1);
  gy_series_destroy(a);
  gy_series_t *b = mk("b", opts(8, 4, 6, 0, 0.1));
  for (int t = 0; t < 8; t++)
    gy_series_push(b, t, 1000.0, &v);
  CHECK(gy_series_push(b, 8, 1099, &v) == 0);
  CHECK_NEAR(v.threshold, 100, 1e-9);
  CHECK(gy_series_push(b, 9, 899, &v) == 1);
  CHECK_EQ_INT(v.dir, GY_DETECT_DROP);
  gy_series_destroy(b);
}

/* One-sided detectors ignore the other side. */
static void test_one_sided(void) {
  gy_detect_opts_t o = opts(8, 4, 6, 0.1, 0);
  o.drop = 0;
  gy_series_t *s = mk("grad_norm", o);
  gy_verdict_t v;
  for (int t = 0; t < 8; t++)
    gy_series_push(s, t, 1.0, &v);
  CHECK(gy_series_push(s, 8, 0.01, &v) == 0);
  CHECK(gy_series_push(s, 9, 5.0, &v) == 1);
  gy_series_destroy(s);
  o.drop = 1;
  o.jump = 0;
  s = mk("tokens_per_s/3", o);
  for (int t = 0; t < 8; t++)
    gy_series_push(s, t, 1.0, &v);
  CHECK(gy_series_push(s, 8, 5.0, &v) == 0);
  CHECK(gy_series_push(s, 9, 0.01, &v) == 1);
  CHECK(gy_series_push(s, 10, NAN, &v) == 1); /* NaN fires whatever the sides */
  gy_series_destroy(s);
}

/* The set keyed by name; bad names and options are refused. */
static void test_set(void) {
  gy_detect_t *d = NULL;
  REQUIRE(gy_detect_create(&d) == 0);
  gy_detect_opts_t o = opts(8, 4, 6, 0.1, 0);
  gy_verdict_t v;
  for (int t = 0; t < 8; t++) {
    CHECK(gy_detect_push(d, "loss/en", &o, t, 2.0, &v) == 0);
    CHECK(gy_detect_push(d, "loss/zh", &o, t, 4.0, &v) == 0);
  }
  CHECK_EQ_INT(gy_detect_count(d), 2);
  /* 4.0 is normal for zh but a jump for en: each series has its own baseline. */
  CHECK(gy_detect_push(d, "loss/zh", &o, 8, 4.0, &v) == 0);
  CHECK(gy_detect_push(d, "loss/en", &o, 8, 4.0, &v) == 1);
  CHECK(!strcmp(v.series, "loss/en"));
  CHECK(gy_detect_get(d, "loss/en") == gy_detect_at(d, 0));
  CHECK(!strcmp(gy_series_name(gy_detect_at(d, 1)), "loss/zh"));
  CHECK(gy_detect_get(d, "nope") == NULL);
  char longname[GY_DETECT_NAME_MAX + 4];
  memset(longname, 'a', sizeof(longname) - 1);
  longname[sizeof(longname) - 1] = '\0';
  CHECK_EQ_INT(gy_detect_push(d, longname, &o, 0, 1.0, &v), GY_EINVAL);
  CHECK_EQ_INT(gy_detect_push(d, "", &o, 0, 1.0, &v), GY_EINVAL);
  gy_detect_opts_t bad = o;
  bad.warmup = 9; /* > window */
  CHECK_EQ_INT(gy_detect_push(d, "new", &bad, 0, 1.0, &v), GY_EINVAL);
  bad = o;
  bad.jump = bad.drop = 0;
  CHECK_EQ_INT(gy_detect_push(d, "new", &bad, 0, 1.0, &v), GY_EINVAL);
  CHECK_EQ_INT(gy_detect_count(d), 2);
  gy_detect_reset(d);
  CHECK_EQ_INT(gy_series_baseline(gy_detect_at(d, 0), NULL, NULL, NULL), 0);
  gy_detect_destroy(d);
  gy_detect_destroy(NULL);
  gy_series_destroy(NULL);
}

/* New options keep the newest values. */
static void test_set_opts(void) {
  gy_series_t *s = mk("x", opts(8, 2, 6, 0.1, 0));
  gy_verdict_t v;
  for (int t = 0; t < 8; t++)
    gy_series_push(s, t, (double)t, &v);
  gy_detect_opts_t o = opts(3, 2, 6, 0.1, 0);
  CHECK(gy_series_set_opts(s, &o) == 0);
  double m;
  CHECK_EQ_INT(gy_series_baseline(s, &m, NULL, NULL), 3);
  CHECK_NEAR(m, 6.0, 0); /* 5, 6, 7 */
  o.window = 16;
  CHECK(gy_series_set_opts(s, &o) == 0);
  CHECK_EQ_INT(gy_series_baseline(s, &m, NULL, NULL), 3);
  gy_series_push(s, 8, 8.0, &v);
  CHECK_EQ_INT(gy_series_baseline(s, &m, NULL, NULL), 4);
  CHECK_NEAR(m, 6.5, 0);
  o.z = 0;
  CHECK_EQ_INT(gy_series_set_opts(s, &o), GY_EINVAL);
  CHECK_EQ_INT(gy_series_opts(s)->window, 16);
  gy_series_destroy(s);
}

int main(void) {
  RUN(test_clean_series);
  RUN(test_exact_evidence);
  RUN(test_jump_and_drop);
  RUN(test_nonfinite);
  RUN(test_no_poisoning);
  RUN(test_warmup);
  RUN(test_window_rolls);
  RUN(test_floors);
  RUN(test_one_sided);
  RUN(test_set);
  RUN(test_set_opts);
  GY_TEST_END();
}
