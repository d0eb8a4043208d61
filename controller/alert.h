/* alert: webhook alerts (libcurl) that never block the controller's loop. An alert is a POST of
 * Slack-compatible JSON, {"text": "..."}, to one URL. Kinds: "halted" (the run needs a human),
 * "repeated_spikes" (the repair escalated past its first rung), "straggler" (a rank's
 * throughput well below the rest of the fleet), "anomaly" (a throughput series left its
 * baseline), "hardware" (GPU Xid or ECC errors, protective throttling), or any other name.
 *
 * gy_alert_post queues (O(1), a mutex held for a copy); a background thread sends, retrying
 * with exponential back-off on transport errors, 429 and 5xx answers (max_attempts in all; other
 * 4xx answers are final). Rate limit: at most one alert of a kind per min_interval_ms; the ones
 * in between are suppressed and counted, and the next one sent says how many were. The queue is
 * bounded (queue_max): when full, the oldest waiting alert is dropped. Outcomes are counted in
 * the telemetry record (gyro_alerts_total{kind, outcome}) when one is given. */
#ifndef GY_ALERT_H
#define GY_ALERT_H

#include <stddef.h>
#include <stdint.h>

#include "controller/telemetry.h"

typedef struct {
  const char *url;           /* http:// or https:// (copied) */
  const char *run_name;      /* named in every text (copied; NULL: "") */
  int min_interval_ms;       /* per kind (0: 300000; < 0: no rate limit) */
  int max_attempts;          /* per alert (0: 5) */
  int backoff_ms;            /* first retry delay, doubled each time up to 60 s (0: 1000) */
  int timeout_ms;            /* per attempt (0: 5000) */
  int queue_max;             /* alerts waiting (0: 64) */
  double straggler_frac;     /* a rank below frac x the mean of the others... (0: 0.5) */
  int straggler_steps;       /* ...for this many steps in a row is a straggler (0: 20) */
  gy_telemetry_t *telemetry; /* borrowed, may be NULL: counts the outcomes */
} gy_alert_opts_t;

typedef struct gy_alert gy_alert_t;

/* Checks opts (GY_EINVAL with errmsg: a URL that is not http(s)://HOST..., a negative count) and
 * starts the sending thread. The callee copies opts. GY_ENOMEM. */
int gy_alert_create(gy_alert_t **out, const gy_alert_opts_t *opts, char *errmsg, size_t errlen);
/* Stops the thread: the attempt in flight ends (timeout_ms at most), alerts still queued get one
 * attempt each within 3 s in all, the rest are dropped. NULL is a no-op. */
void gy_alert_destroy(gy_alert_t *a);

/* Queues an alert of kind (copied) about step with text (copied; truncated to 2000 bytes).
 * Returns 1 when queued, 0 when suppressed by the rate limit or a is NULL. Never blocks on the
 * network. */
int gy_alert_post(gy_alert_t *a, const char *kind, int64_t step, const char *text);

/* Straggler check for one aggregated step: rank_rate(ud, r) for r < nranks (NaN or <= 0:
 * unknown). A rank whose rate stays below straggler_frac x the mean of the other ranks' for
 * straggler_steps steps in a row starts a straggler streak: an alert is posted, msg (may be
 * NULL) gets its text and the call returns 1 (once per streak; the streak ends when the rate
 * comes back). Else 0. Loop thread; O(nranks). */
int gy_alert_stragglers(gy_alert_t *a, int64_t step, int nranks,
                        double (*rank_rate)(const void *ud, int rank), const void *ud, char *msg,
                        size_t msglen);

/* Counts so far: alerts sent, suppressed, failed for good, dropped (queue full or shutdown). */
void gy_alert_counts(gy_alert_t *a, uint64_t *sent, uint64_t *suppressed, uint64_t *failed,
                     uint64_t *dropped);

#endif
