/*
 * detect: robust two-sided spike detectors (DESIGN.md §5).
 *
 * API, in order: gy_detect_dir_name, gy_verdict_format; one series (create, destroy, push,
 * baseline, set_opts, opts, name, reset); a set keyed by name (create, destroy, push, get,
 * count, at, reset).
 *
 * Why median and MAD: a loss curve has outliers by nature (the very spikes we look for), and a
 * mean and standard deviation computed over a window that holds one of them are dragged
 * towards it, hiding the next one. Median and MAD move only when half the window moves. The
 * 1.4826 factor makes MAD estimate the standard deviation of normal noise, so z reads as
 * "sigmas". A slowly trending series (a decaying loss) widens its own MAD in step with the lag
 * of the median, so a trend alone stays near 1.4 robust sigmas whatever the window.
 *
 * Invariants:
 * - vals holds exactly n accepted values (n <= window), oldest at head; every one is finite
 *   and none of them fired.
 * - A test never modifies the window before the verdict is computed, so the value under test
 *   is never part of its own baseline.
 * - Cost: O(window log window) per push (a sorted copy); windows are small (<= 4096).
 */
#include "detect.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/err.h"

#define MAD_SIGMA 1.4826

struct gy_series {
  char name[GY_DETECT_NAME_MAX];
  gy_detect_opts_t o;
  double *vals;    /* ring of o.window accepted values */
  int head, n;     /* oldest at vals[head] */
  double *scratch; /* o.window doubles for the sorted copy */
  int streak;      /* consecutive pushes that fired */
};

struct gy_detect {
  gy_series_t **s;
  int n, cap;
  int hint; /* where the next push most likely goes: a step pushes its series in the same
               order every time, so a gang of N ranks costs O(N) a step, not O(N^2) */
};

const char *gy_detect_dir_name(gy_detect_dir_t d) {
  static const char *const names[] = {"none", "jump", "drop", "nonfinite"};
  return (d >= 0 && d <= GY_DETECT_NONFINITE) ? names[d] : "?";
}

void gy_verdict_format(const gy_verdict_t *v, char *buf, size_t len) {
  if (!buf || !len) return;
  if (v->dir == GY_DETECT_NONFINITE)
    snprintf(buf, len, "%s=%g (non-finite) at step %lld", v->series, v->value,
             (long long)v->step);
  else
    snprintf(buf, len, "%s=%.6g (median %.6g, MAD %.4g, threshold %.4g, %s) at step %lld",
             v->series, v->value, v->median, v->mad, v->threshold, gy_detect_dir_name(v->dir),
             (long long)v->step);
}

/* ---------------------------------------- series ---------------------------------------- */

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double median_sorted(const double *x, int n) {
  return (n & 1) ? x[n / 2] : 0.5 * (x[n / 2 - 1] + x[n / 2]);
}

/* Median and MAD of the accepted window (NaN when empty); uses the scratch buffer. */
static void stats(const gy_series_t *s, double *med, double *mad) {
  if (!s->n) {
    *med = *mad = NAN;
    return;
  }
  double *x = s->scratch;
  int w = s->o.window;
  for (int i = 0; i < s->n; i++)
    x[i] = s->vals[(s->head + i) % w];
  qsort(x, (size_t)s->n, sizeof(double), cmp_double);
  double m = median_sorted(x, s->n);
  for (int i = 0; i < s->n; i++)
    x[i] = fabs(x[i] - m);
  qsort(x, (size_t)s->n, sizeof(double), cmp_double);
  *med = m;
  *mad = median_sorted(x, s->n);
}

static double threshold(const gy_detect_opts_t *o, double med, double mad) {
  double t = o->z * MAD_SIGMA * mad;
  if (o->min_delta > t) t = o->min_delta;
  if (o->min_rel * fabs(med) > t) t = o->min_rel * fabs(med);
  return t;
}

int gy_series_create(gy_series_t **out, const char *name, const gy_detect_opts_t *opts) {
  gy_series_t *s = NULL;
  if (!out || !name || !*name || strlen(name) >= GY_DETECT_NAME_MAX || !opts ||
      gy_policy_detect_check(opts, NULL, 0))
    return GY_EINVAL;
  if (!(s = gy_calloc(1, sizeof(*s)))) goto err;
  snprintf(s->name, sizeof(s->name), "%s", name);
  s->o = *opts;
  if (!(s->vals = gy_malloc((size_t)opts->window * sizeof(double)))) goto err;
  if (!(s->scratch = gy_malloc((size_t)opts->window * sizeof(double)))) goto err;
  *out = s;
  return 0;
err:
  gy_series_destroy(s);
  return GY_ENOMEM;
}

void gy_series_destroy(gy_series_t *s) {
  if (!s) return;
  gy_free(s->scratch);
  gy_free(s->vals);
  gy_free(s);
}

int gy_series_push(gy_series_t *s, int64_t step, double value, gy_verdict_t *v) {
  gy_verdict_t r;
  memset(&r, 0, sizeof(r));
  snprintf(r.series, sizeof(r.series), "%s", s->name);
  r.step = step;
  r.value = value;
  r.n = s->n;
  r.warm = s->n >= s->o.warmup;
  stats(s, &r.median, &r.mad);
  r.threshold = s->n ? threshold(&s->o, r.median, r.mad) : NAN;
  if (!isfinite(value))
    r.dir = GY_DETECT_NONFINITE;
  else if (r.warm && s->o.jump && value > r.median + r.threshold)
    r.dir = GY_DETECT_JUMP;
  else if (r.warm && s->o.drop && value < r.median - r.threshold)
    r.dir = GY_DETECT_DROP;
  r.fired = r.dir != GY_DETECT_NONE;
  s->streak = r.fired ? s->streak + 1 : 0;
  if (!r.fired) {
    int w = s->o.window;
    if (s->n < w) {
      s->vals[(s->head + s->n) % w] = value;
      s->n++;
    } else {
      s->vals[s->head] = value;
      s->head = (s->head + 1) % w;
    }
  }
  if (v) *v = r;
  return r.fired;
}

int gy_series_baseline(const gy_series_t *s, double *median, double *mad, double *thr) {
  double m, d;
  stats(s, &m, &d);
  if (median) *median = m;
  if (mad) *mad = d;
  if (thr) *thr = s->n ? threshold(&s->o, m, d) : NAN;
  return s->n;
}

int gy_series_set_opts(gy_series_t *s, const gy_detect_opts_t *opts) {
  if (!opts || gy_policy_detect_check(opts, NULL, 0)) return GY_EINVAL;
  int w = opts->window, keep = s->n < w ? s->n : w;
  double *vals = gy_malloc((size_t)w * sizeof(double));
  double *scratch = gy_malloc((size_t)w * sizeof(double));
  if (!vals || !scratch) {
    gy_free(vals);
    gy_free(scratch);
    return GY_ENOMEM;
  }
  /* Keep the newest `keep` values, oldest first. */
  for (int i = 0; i < keep; i++)
    vals[i] = s->vals[(s->head + s->n - keep + i) % s->o.window];
  gy_free(s->vals);
  gy_free(s->scratch);
  s->vals = vals;
  s->scratch = scratch;
  s->head = 0;
  s->n = keep;
  s->o = *opts;
  return 0;
}

const gy_detect_opts_t *gy_series_opts(const gy_series_t *s) {
  return &s->o;
}

const char *gy_series_name(const gy_series_t *s) {
  return s->name;
}

int gy_series_streak(const gy_series_t *s) {
  return s->streak;
}

void gy_series_reset(gy_series_t *s) {
  s->head = s->n = s->streak = 0;
}

/* ------------------------------------------ set ------------------------------------------ */

int gy_detect_create(gy_detect_t **out) {
  if (!out) return GY_EINVAL;
  if (!(*out = gy_calloc(1, sizeof(gy_detect_t)))) return GY_ENOMEM;
  return 0;
}

void gy_detect_destroy(gy_detect_t *d) {
  if (!d) return;
  for (int i = 0; i < d->n; i++)
    gy_series_destroy(d->s[i]);
  gy_free(d->s);
  gy_free(d);
}

/* A linear search: a run has tens of series, and a push already sorts a window. */
gy_series_t *gy_detect_get(const gy_detect_t *d, const char *name) {
  for (int i = 0; name && i < d->n; i++)
    if (!strcmp(d->s[i]->name, name)) return d->s[i];
  return NULL;
}

/* The series named name, or NULL; O(1) when the names come in the order of the last lookups
 * (the hint moves past the one found). */
static gy_series_t *lookup(gy_detect_t *d, const char *name) {
  if (d->hint < d->n && !strcmp(d->s[d->hint]->name, name)) return d->s[d->hint++];
  for (int i = 0; i < d->n; i++)
    if (!strcmp(d->s[i]->name, name)) {
      d->hint = i + 1;
      return d->s[i];
    }
  return NULL;
}

int gy_detect_push(gy_detect_t *d, const char *name, const gy_detect_opts_t *opts, int64_t step,
                   double value, gy_verdict_t *v) {
  gy_series_t *s = lookup(d, name);
  if (!s) {
    if (d->n == d->cap) {
      int cap = d->cap ? 2 * d->cap : 16;
      gy_series_t **ns = gy_realloc(d->s, (size_t)cap * sizeof(*ns));
      if (!ns) return GY_ENOMEM;
      d->s = ns;
      d->cap = cap;
    }
    int rc = gy_series_create(&s, name, opts);
    if (rc) return rc;
    d->s[d->n++] = s;
    d->hint = d->n;
  }
  return gy_series_push(s, step, value, v);
}

gy_series_t *gy_detect_ensure(gy_detect_t *d, const char *name, const gy_detect_opts_t *opts) {
  gy_series_t *s = lookup(d, name);
  if (s) return s;
  if (d->n == d->cap) {
    int cap = d->cap ? 2 * d->cap : 16;
    gy_series_t **ns = gy_realloc(d->s, (size_t)cap * sizeof(*ns));
    if (!ns) return NULL;
    d->s = ns;
    d->cap = cap;
  }
  if (gy_series_create(&s, name, opts)) return NULL;
  d->s[d->n++] = s;
  d->hint = d->n;
  return s;
}

int gy_series_values(const gy_series_t *s, double *out, int max) {
  for (int i = 0; i < s->n && i < max; i++)
    out[i] = s->vals[(s->head + i) % s->o.window];
  return s->n;
}

void gy_series_set_values(gy_series_t *s, const double *vals, int n) {
  s->head = s->n = s->streak = 0;
  for (int i = n > s->o.window ? n - s->o.window : 0; i < n; i++)
    if (isfinite(vals[i])) s->vals[s->n++] = vals[i];
}

int gy_detect_count(const gy_detect_t *d) {
  return d->n;
}

gy_series_t *gy_detect_at(const gy_detect_t *d, int i) {
  return (i >= 0 && i < d->n) ? d->s[i] : NULL;
}

void gy_detect_reset(gy_detect_t *d) {
  for (int i = 0; i < d->n; i++)
    gy_series_reset(d->s[i]);
}
