/* telemetry: what the controller knows about its run, in memory, for the HTTP surfaces
 * (controller/http.h: /metrics, /api/series, /api/events) and nothing else: per-step gang figures
 * (total and per-channel loss, gradient norms, learning rate, tokens/s of the gang and of each
 * rank, step time), held-out loss and perplexity per source, the run's state, step and
 * generation, counters (spikes, recoveries, rollbacks, skipped samples, directives, reports,
 * events by kind, alerts), the audit events, the newest committed checkpoint, and per-rank GPU
 * figures when the reports carry them.
 *
 * Threads: the writers (everything but the readers below) are called on the controller's loop
 * thread, each in O(channels + ranks) under a mutex held for a copy; the readers (metrics,
 * series, events, ready) may be called from any thread (the HTTP server's): they copy what they
 * need under the mutex and format outside it. Every function accepts t == NULL and then does
 * nothing (readers return GY_EINVAL or NULL), so the service calls them unconditionally.
 *
 * Memory is bounded: the last ring_steps steps at full resolution; older steps are down-sampled
 * into coarse_points points (when full, every other point is dropped and the stride doubles); a
 * step that arrives at or before the newest one (the run rolled back and trains it again) moves
 * the steps it replaces to a bounded list of abandoned points (the dashboard draws them faintly)
 * and starts a new timeline; events and evaluations are rings.
 *
 * Units: losses in nats, step time in milliseconds here (seconds in /metrics), rates in tokens
 * per second, time in seconds since the epoch, GPU memory in bytes, utilisation in [0, 1]. */
#ifndef GY_TELEMETRY_H
#define GY_TELEMETRY_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "controller/event_kinds.h"

#define GY_TM_MAX_CH 16 /* channels (and held-out sources) kept */
#define GY_TM_NAME 32   /* a channel or source name, with the NUL */
#define GY_TM_RANK_SERIES                                                                          \
  64                          /* ranks whose throughput history is kept (all ranks' newest         \
                                 figures are) */
#define GY_TM_EVENT_TEXT 1400 /* an event's text, with the NUL (longer is truncated) */
#define GY_TM_EVENT_KIND 32
#define GY_TM_MASK_PAIRS 64 /* (channel, reason) pairs of gyro_guard_masked_total */

typedef struct {
  const char *run_name; /* copied; NULL: "" */
  int world;            /* ranks (>= 1) */
  int tp;               /* tensor-parallel size (informational) */
  int64_t steps;        /* run.steps (informational; 0: unknown) */
  int ring_steps;       /* steps kept at full resolution (0: 4096; >= 16) */
  int coarse_points;    /* down-sampled points kept beyond them (0: 1024; >= 16) */
  int max_events;       /* events kept (0: 2048; >= 16) */
  int max_abandoned;    /* abandoned points kept (0: 2048; >= 16) */
} gy_telemetry_opts_t;

/* One aggregated step. Strings and arrays are borrowed for the call. */
typedef struct {
  int64_t step;
  double loss;
  int nch;
  const char *const *ch_name;
  const double *ch_loss; /* mean cross-entropy per token; NaN: the channel had no sample */
  double grad_norm, grad_norm_shallow, grad_norm_deep, lr;
  double tokens_per_s; /* the gang's */
  double step_ms;      /* the slowest rank's */
  int nonfinite;
  /* Per-rank throughput: rank_rate(rank_ud, r) for r < nranks (NaN: unknown). */
  int nranks;
  double (*rank_rate)(const void *rank_ud, int rank);
  const void *rank_ud;
} gy_telemetry_step_t;

typedef struct gy_telemetry gy_telemetry_t;

/* Creates an empty record. The callee copies opts. GY_EINVAL (errmsg says which field),
 * GY_ENOMEM. */
int gy_telemetry_create(gy_telemetry_t **out, const gy_telemetry_opts_t *opts, char *errmsg,
                        size_t errlen);
/* NULL is a no-op. No reader may be running. */
void gy_telemetry_destroy(gy_telemetry_t *t);

/* ---- writers (the loop thread) ---- */

/* Readiness (/readyz): 1 once the controller serves, 0 when it stops; why (copied, may be
 * NULL) is said in /readyz's body. */
void gy_telemetry_set_ready(gy_telemetry_t *t, int ready, const char *why);
/* The run's state ("TRAIN", ...: the name gyroctl status shows), its generation and whether a
 * gang is formed. */
void gy_telemetry_state(gy_telemetry_t *t, const char *state, uint64_t generation, int gang);
/* One aggregated step (see above). A step at or before the newest one starts a new timeline. */
void gy_telemetry_step(gy_telemetry_t *t, const gy_telemetry_step_t *s);
/* A step report was ingested (lock-free: an atomic counter). */
void gy_telemetry_report(gy_telemetry_t *t);
/* An audit event. Counts it by kind; the kind's tally (event_kinds.h: spike_suspected,
 * recovered_spike, directive) also counts it as a spike detected, recovered or a directive sent. */
void gy_telemetry_event(gy_telemetry_t *t, uint64_t id, double time, int64_t step,
                        gy_event_kind_t kind, const char *text);
/* A rollback was applied by every rank (to checkpoint to_step), skipping `samples` more ids. */
void gy_telemetry_rollback(gy_telemetry_t *t, int64_t to_step, uint64_t samples);
/* A checkpoint was committed at `time`; bytes 0: unknown. */
void gy_telemetry_checkpoint(gy_telemetry_t *t, int64_t step, double time, uint64_t bytes);
/* Held-out figures of one source at a step. */
void gy_telemetry_eval(gy_telemetry_t *t, int64_t step, const char *source, double loss,
                       double ppl);
/* The same with the cloze accuracy (0..1; NaN: unknown) and whether the evaluation is the one of
 * the checkpoint of `step` (/metrics gyro_eval_cloze_accuracy; /api/series "cloze",
 * "checkpoint"). */
void gy_telemetry_eval_cloze(gy_telemetry_t *t, int64_t step, const char *source, double loss,
                             double ppl, double cloze, int checkpoint);
/* One rank's GPU figures (NaN: not reported). Ranks outside the world are ignored. */
void gy_telemetry_gpu(gy_telemetry_t *t, int rank, double temp_c, double mem_used_bytes,
                      double mem_total_bytes, double util);
/* An alert of kind (copied) was sent, suppressed by the rate limit, or failed for good
 * (outcome "sent", "suppressed", "failed", "dropped"). Any thread. */
void gy_telemetry_alert(gy_telemetry_t *t, const char *kind, const char *outcome);

/* The workers' per-sample guard on one aggregated step: its samples (masked ones included; 0:
 * unknown) and how many were masked (gyro_guard_masked_share, gyro_guard_samples_total). */
void gy_telemetry_guard(gy_telemetry_t *t, int64_t step, int samples, uint64_t masked);
/* n more samples of channel masked by rule `reason` (gyro_guard_masked_total{channel,reason};
 * at most GY_TM_MASK_PAIRS pairs are told apart, later ones count as channel "other"). */
void gy_telemetry_masked(gy_telemetry_t *t, const char *channel, const char *reason, uint64_t n);
/* The quarantine list as the dashboard shows it (/api/quarantine; list: a new reference, taken:
 * {"entries": [...], ...}) and its counts (gyro_quarantine_entries{state}). */
void gy_telemetry_quarantine(gy_telemetry_t *t, json_t *list, uint64_t active, uint64_t released);

/* ---- readers (any thread) ---- */

/* The Prometheus text exposition (format 0.0.4) of everything above, at wall time `now`
 * (seconds since the epoch; checkpoint age). *out is malloc'ed (caller frees), *len its length
 * without the NUL. GY_EINVAL (t NULL), GY_ENOMEM. */
int gy_telemetry_metrics(gy_telemetry_t *t, double now, char **out, size_t *len);
/* The dashboard's series: the steps after `since` of the current timeline (since < 0: all,
 * with the down-sampled history and the abandoned points), the held-out figures, the counters,
 * the state, the newest per-rank figures. New reference; NULL when out of memory. Shape: see
 * the design block of telemetry.c. */
json_t *gy_telemetry_series(gy_telemetry_t *t, int64_t since, double now);
/* The events with id > since, oldest first, at most max (<= 0: 500). New reference. */
json_t *gy_telemetry_events(gy_telemetry_t *t, uint64_t since, int max);
/* The event kinds (/api/event_kinds), from event_kinds.h: {"kinds": [{"name", "level" ("info" or
 * "warn"), "marker" (the dashboard's marker class, "" for none), "notable"}...]} in the table's
 * order. New reference; NULL when out of memory. */
json_t *gy_telemetry_event_kinds(void);
/* The quarantine list last given (/api/quarantine): a new reference ({"entries": []} before
 * any); NULL when out of memory. */
json_t *gy_telemetry_quarantine_json(gy_telemetry_t *t);
/* 1 when ready; why (may be NULL) gets the reason given to set_ready and the gang's state. */
int gy_telemetry_ready(gy_telemetry_t *t, char *why, size_t len);

/* Writes into buf (capacity cap) the Prometheus label value v escaped (backslash, double quote
 * and newline become \\, \" and \n), NUL-terminated. Returns the escaped length, like
 * snprintf; when it is >= cap nothing fitted and buf holds "". */
size_t gy_telemetry_escape_label(char *buf, size_t cap, const char *v);

#endif
