/*
 * straggler: the compute-time straggler rule (see straggler.h).
 *
 * API, in order: create, destroy, step, median.
 *
 * Invariants: streak[r] counts the consecutive steps rank r was over the threshold; it fires
 * when it reaches `steps` and not again until it fell back to 0. O(n log n) per step (a sort of
 * n values into `tmp`).
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
  int *streak;
  double *tmp;
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
  s->streak = gy_calloc((size_t)world, sizeof(*s->streak));
  s->tmp = gy_calloc((size_t)world, sizeof(*s->tmp));
  if (!s->streak || !s->tmp) {
    gy_straggler_destroy(s);
    return GY_ENOMEM;
  }
  *out = s;
  return 0;
}

void gy_straggler_destroy(gy_straggler_t *s) {
  if (!s) return;
  gy_free(s->streak);
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

/* The median of the known values but index `skip` (-1: none); 0 when none is known. */
static double median_of(gy_straggler_t *s, const double *v, int n, int skip) {
  int k = 0;
  for (int i = 0; i < n; i++)
    if (i != skip && known(v[i])) s->tmp[k++] = v[i];
  if (!k) return 0;
  qsort(s->tmp, (size_t)k, sizeof(*s->tmp), cmp_double);
  return k % 2 ? s->tmp[k / 2] : 0.5 * (s->tmp[k / 2 - 1] + s->tmp[k / 2]);
}

int gy_straggler_step(gy_straggler_t *s, const double *compute_ms, int n, char *msg, size_t len) {
  if (n > s->world) n = s->world;
  s->median = median_of(s, compute_ms, n, -1);
  int fired = -1;
  for (int r = 0; r < n; r++) {
    double others = known(compute_ms[r]) ? median_of(s, compute_ms, n, r) : 0;
    if (!others || compute_ms[r] <= s->o.factor * others) {
      s->streak[r] = 0;
      continue;
    }
    if (++s->streak[r] != s->o.steps || fired >= 0) continue;
    fired = r;
    if (msg && len)
      snprintf(msg, len,
               "rank %d computes each step in %.1f ms, %.2fx the other ranks' median %.1f ms, "
               "for %d steps in a row (time waiting for peers in collectives not counted)",
               r, compute_ms[r], compute_ms[r] / others, others, s->o.steps);
  }
  return fired;
}

double gy_straggler_median(const gy_straggler_t *s) {
  return s->median;
}
