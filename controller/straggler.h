/* straggler: which rank is slow, by its own work per step, not by its rate. In a synchronous
 * gang every rank reports the same step time and tokens/s (each waits for the slowest in the
 * all-reduce), so those cannot single a rank out; a rank's compute time — its step time minus
 * the time it waited in collectives (worker/comm_timed.c) — can. Pure: no I/O, no clock.
 *
 * Rule: each rank's compute time is taken as the median of its last `steps` known figures (a
 * window, so a noisy machine's outliers do not decide); a rank whose median exceeds `factor` x
 * the median of the other ranks' medians starts a straggler streak, told once; the streak ends
 * when its median comes back under. Ranks whose compute time is unknown (0, NaN) are left out,
 * and a rank is judged only once its window is full. */
#ifndef GY_CONTROLLER_STRAGGLER_H
#define GY_CONTROLLER_STRAGGLER_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
  double factor; /* > 1 (0: 1.5) */
  int steps;     /* the window, >= 1 (0: 20) */
} gy_straggler_opts_t;

typedef struct gy_straggler gy_straggler_t;

/* For a world of `world` ranks. GY_EINVAL (factor <= 1 but not 0, steps < 0, world < 1),
 * GY_ENOMEM. */
int gy_straggler_create(gy_straggler_t **out, int world, const gy_straggler_opts_t *opts);
void gy_straggler_destroy(gy_straggler_t *s); /* NULL is a no-op */

/* One aggregated step: compute_ms[r] for r < n (n <= world). Returns the rank whose streak
 * started at this step (the lowest one, when several did), with the evidence in msg, or -1. */
int gy_straggler_step(gy_straggler_t *s, const double *compute_ms, int n, char *msg, size_t len);

/* The gang's median compute time at the last step (0: unknown), for the telemetry. */
double gy_straggler_median(const gy_straggler_t *s);

#endif
