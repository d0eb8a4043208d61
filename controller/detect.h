/* detect: robust two-sided spike detectors, one per series (DESIGN.md §5), and a set of them
 * keyed by series name. Pure: values in, verdicts out; no I/O, no clock.
 *
 * Each series keeps the last `window` ACCEPTED values. A new value is tested against the
 * median m and MAD d of that window (the value itself is not in it):
 *   threshold = max(z * 1.4826 * d, min_delta, min_rel * |m|)
 *   jump: v > m + threshold      drop: v < m - threshold      (each side only when enabled)
 * NaN/Inf fire at once, even during warm-up. Nothing else fires before `warmup` values were
 * accepted. A value that fires is never accepted, so a spike cannot drag the baseline after it
 * (two spikes in a row both fire); a value that does not fire is accepted (the oldest one
 * leaves when the window is full).
 *
 * Series names used by controller/run.c (the wiring builds them from a step's figures):
 *   "loss", "loss/<channel>", "grad_norm", "grad_norm_shallow", "ppl/<source>",
 *   "tokens_per_s/<rank>". */
#ifndef GY_DETECT_H
#define GY_DETECT_H

#include <stddef.h>
#include <stdint.h>

#include "policies/policy.h"

/* The detector options are the policy's per-kind thresholds. */
typedef gy_policy_detect_t gy_detect_opts_t;

typedef enum {
  GY_DETECT_NONE = 0,
  GY_DETECT_JUMP = 1,
  GY_DETECT_DROP = 2,
  GY_DETECT_NONFINITE = 3
} gy_detect_dir_t;

const char *gy_detect_dir_name(gy_detect_dir_t d); /* "none", "jump", "drop", "nonfinite" */

#define GY_DETECT_NAME_MAX 64 /* series names, with the NUL (longer ones are refused) */

/* The evidence of one test. For a value tested during warm-up (or a NaN) median, mad and
 * threshold describe the baseline as it is (NaN when the window is empty). */
typedef struct {
  char series[GY_DETECT_NAME_MAX];
  int64_t step;
  int fired;           /* 1 when dir != NONE */
  gy_detect_dir_t dir;
  double value, median, mad, threshold;
  int n;               /* accepted values in the baseline when tested */
  int warm;            /* n >= warmup: jumps and drops could fire */
} gy_verdict_t;

/* Formats v as "loss/code=5.41 (median 2.1, MAD 0.03, threshold 0.27, jump) at step 120". */
void gy_verdict_format(const gy_verdict_t *v, char *buf, size_t len);

/* ---- one series ---- */

typedef struct gy_series gy_series_t;

/* Creates a series named name (copied; < GY_DETECT_NAME_MAX chars). The callee copies opts;
 * GY_EINVAL for a bad name or opts (gy_policy_detect_check), GY_ENOMEM. */
int gy_series_create(gy_series_t **out, const char *name, const gy_detect_opts_t *opts);
void gy_series_destroy(gy_series_t *s); /* NULL is a no-op */
/* Tests value (from step) and accepts it unless it fired. Fills *v (may be NULL); returns 1
 * when it fired, else 0. */
int gy_series_push(gy_series_t *s, int64_t step, double value, gy_verdict_t *v);
/* The baseline now (without testing anything): median, MAD and threshold of the accepted
 * window; NaN when it is empty. Returns the number of accepted values. */
int gy_series_baseline(const gy_series_t *s, double *median, double *mad, double *threshold);
/* New options; the newest min(n, window) accepted values are kept. GY_EINVAL, GY_ENOMEM (the
 * series is unchanged on error). */
int gy_series_set_opts(gy_series_t *s, const gy_detect_opts_t *opts);
const gy_detect_opts_t *gy_series_opts(const gy_series_t *s);
const char *gy_series_name(const gy_series_t *s);
/* Consecutive pushes that fired, ending with the last one (0: the last push was accepted). */
int gy_series_streak(const gy_series_t *s);
/* Forgets every accepted value (warm-up starts again) and the streak. */
void gy_series_reset(gy_series_t *s);
/* The accepted values, oldest first, into out (at most max); returns how many there are. */
int gy_series_values(const gy_series_t *s, double *out, int max);
/* Replaces the accepted values with vals (oldest first; the newest window of them are kept;
 * non-finite ones are left out) and clears the streak: a successor controller's baseline. */
void gy_series_set_values(gy_series_t *s, const double *vals, int n);

/* ---- a set keyed by name ---- */

typedef struct gy_detect gy_detect_t;

int gy_detect_create(gy_detect_t **out);
void gy_detect_destroy(gy_detect_t *d); /* NULL is a no-op; destroys every series */
/* Tests value on the series `name`, creating it with opts when it is new (opts of an existing
 * series are left as they are: use gy_detect_set_opts). Returns 1 (fired), 0, or GY_EINVAL /
 * GY_ENOMEM (a series could not be created; *v untouched). */
int gy_detect_push(gy_detect_t *d, const char *name, const gy_detect_opts_t *opts, int64_t step,
                   double value, gy_verdict_t *v);
/* The series named name, created with opts when it is new (NULL: bad opts or out of memory). */
gy_series_t *gy_detect_ensure(gy_detect_t *d, const char *name, const gy_detect_opts_t *opts);
/* The series named name (NULL if none); valid until the set is destroyed. */
gy_series_t *gy_detect_get(const gy_detect_t *d, const char *name);
int gy_detect_count(const gy_detect_t *d);
gy_series_t *gy_detect_at(const gy_detect_t *d, int i); /* i-th series in creation order */
/* Forgets every series' window. */
void gy_detect_reset(gy_detect_t *d);

#endif
