/*
 * straggler: the compute-time straggler rule (see straggler.h).
 *
 * API, in order: create, destroy, step, median.
 *
 * Invariants: ring holds each rank's last `steps` known compute times; med[r] is their median
 * once the window is full (0 before); streak[r] is 1 from the step the rank was told until its
 * median falls back under the threshold. O(n x steps log steps) per step.
 */
#include "controller/straggler.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/err.h"

struct gy_straggler {
  gy_straggler_opts_t o;
  int world;
  int *streak;  /* per rank: 1 while its streak lasts (told) */
  double *ring; /* world x steps: each rank's last compute times */
  int *nring;   /* per rank: values in its ring (<= steps) */
  int *at;      /* per rank: where the next value goes */
  double *med;  /* per rank: the median of its ring (0: not full yet) */
  double *tmp;  /* scratch for the medians */
  double median;
};

int gy_straggler_create(gy_straggler_t **out, int world, const gy_straggler_opts_t *opts) {
  *out = NULL;
  gy_straggler_opts_t o = opts ? *opts : (gy_straggler_opts_t){0};
  if (o.factor == 0) o.factor = 1.5;
  if (!o.steps) o.steps = 20;
  if (world < 1 || !(o.factor > 1) || o.steps < 1) return GY_EINVAL;
  gy_straggler_t *s = gy_calloc(1, sizeof(*s));
  if (!s) return GY_ENOMEM;
  s->o = o;
  s->world = world;
  size_t w = (size_t)world, k = (size_t)(world > o.steps ? world : o.steps);
  s->streak = gy_calloc(w, sizeof(*s->streak));
  s->ring = gy_calloc(w * (size_t)o.steps, sizeof(*s->ring));
  s->nring = gy_calloc(w, sizeof(*s->nring));
  s->at = gy_calloc(w, sizeof(*s->at));
  s->med = gy_calloc(w, sizeof(*s->med));
  s->tmp = gy_calloc(k, sizeof(*s->tmp));
  if (!s->streak || !s->ring || !s->nring || !s->at || !s->med || !s->tmp) {
    gy_straggler_destroy(s);
    return GY_ENOMEM;
  }
  *out = s;
  return 0;
}

void gy_straggler_destroy(gy_straggler_t *s) {
  if (!s) return;
  gy_free(s->streak);
  gy_free(s->ring);
  gy_free(s->nring);
  gy_free(s->at);
  gy_free(s->med);
  gy_free(s->tmp);
  gy_free(s);
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static int known(double v) {
  return v > 0 && isfinite(v);
}

/* The median of tmp[0..n), sorted in place; 0 when n is 0. */
static double median_tmp(gy_straggler_t *s, int n) {
  if (!n) return 0;
  qsort(s->tmp, (size_t)n, sizeof(*s->tmp), cmp_double);
  return n % 2 ? s->tmp[n / 2] : 0.5 * (s->tmp[n / 2 - 1] + s->tmp[n / 2]);
}

/* The median of the ranks' window medians, but rank `skip` (-1: none); 0 when none is known. */
static double median_of(gy_straggler_t *s, int n, int skip) {
  int k = 0;
  for (int i = 0; i < n; i++)
    if (i != skip && s->med[i] > 0) s->tmp[k++] = s->med[i];
  return median_tmp(s, k);
}

int gy_straggler_step(gy_straggler_t *s, const double *compute_ms, int n, char *msg, size_t len) {
  if (n > s->world) n = s->world;
  int w = s->o.steps;
  for (int r = 0; r < n; r++) { /* each rank's window: its last `steps` known figures */
    if (known(compute_ms[r])) {
      s->ring[(size_t)r * (size_t)w + (size_t)s->at[r]] = compute_ms[r];
      s->at[r] = (s->at[r] + 1) % w;
      if (s->nring[r] < w) s->nring[r]++;
    }
    s->med[r] = 0;
    if (s->nring[r] == w) {
      memcpy(s->tmp, &s->ring[(size_t)r * (size_t)w], (size_t)w * sizeof(*s->tmp));
      s->med[r] = median_tmp(s, w);
    }
  }
  s->median = median_of(s, n, -1);
  int fired = -1;
  for (int r = 0; r < n; r++) {
    double others = s->med[r] > 0 ? median_of(s, n, r) : 0;
    if (!others || s->med[r] <= s->o.factor * others) {
      s->streak[r] = 0;
      continue;
    }
    if (s->streak[r] || fired >= 0) continue;
    s->streak[r] = 1;
    fired = r;
    if (msg && len)
      snprintf(msg, len,
               "rank %d computes a step in %.1f ms (median of its last %d), %.2fx the other "
               "ranks' median %.1f ms (time waiting for peers in collectives not counted)",
               r, s->med[r], w, s->med[r] / others, others);
  }
  return fired;
}

double gy_straggler_median(const gy_straggler_t *s) {
  return s->median;
}
