/* policy: the fix-on-the-fly policy (DESIGN.md §2, §5): detector thresholds per series kind,
 * the suspicion window, and the escalation ladder, loaded from a YAML file (examples/policies/
 * default.yaml is the built-in default, field for field), plus one pure function that turns a
 * trigger and the repair history into a decision. No I/O (the policy file is read by
 * config/policy_file.h); no clock.
 *
 * A policy is a plain value (no pointers): copy it with `=`, nothing to free. */
#ifndef GY_POLICY_H
#define GY_POLICY_H

#include <stddef.h>
#include <stdint.h>

#include "policies/guard_policy.h"

/* ---- vocabulary ---- */

/* Kinds of series the detectors watch; each kind has its own thresholds. The YAML names are
 * the lower-case names ("loss", "channel_loss", ...). */
#define GY_SERIES_KIND_MAP(XX)                                                                     \
  XX(LOSS, "loss")                           /* the step's total loss */                           \
  XX(CHANNEL_LOSS, "channel_loss")           /* one data channel's loss (series "loss/<ch>") */    \
  XX(GRAD_NORM, "grad_norm")                 /* global gradient norm */                            \
  XX(GRAD_NORM_SHALLOW, "grad_norm_shallow") /* shallow-group gradient norm */                     \
  XX(PPL, "ppl")                             /* held-out perplexity of one source ("ppl/<src>") */ \
  XX(THROUGHPUT, "throughput")               /* one rank's tokens/s ("tokens_per_s/<rank>") */

typedef enum {
#define GY_SERIES_KIND_ENUM(name, str) GY_SERIES_##name,
  GY_SERIES_KIND_MAP(GY_SERIES_KIND_ENUM)
#undef GY_SERIES_KIND_ENUM
      GY_SERIES_NKINDS
} gy_series_kind_t;

const char *gy_series_kind_name(gy_series_kind_t k); /* "loss", ...; "?" when out of range */

/* What set off a decision. */
typedef enum {
  GY_TRIG_SPIKE = 0,      /* a jump was just detected: watch first (RECOVER_WATCH) */
  GY_TRIG_SPIKE_PERSISTS, /* the watch ran out and the series did not come back */
  GY_TRIG_DROP,           /* a loss dropped (empty or repeated data): skip the samples now */
  GY_TRIG_NONFINITE,      /* NaN/Inf in a figure or a gradient: roll back now */
  GY_TRIG_WORKER_LOST,    /* a rank died: roll back with no skip */
  GY_TRIG_OPERATOR,       /* gyroctl rollback: roll back with no skip, not bounded */
  GY_TRIG_MASKED,         /* the guard masked more than guard.max_step_share of a step's samples:
                             a spike the samples do not explain (as SPIKE_PERSISTS; the masked
                             samples are the attributed ones) */
  GY_TRIG_COUNT
} gy_trigger_t;

const char *gy_trigger_name(gy_trigger_t t); /* "spike", "spike_persists", ...; "?" */

typedef enum {
  GY_ACTION_RECOVER_WATCH = 0,
  GY_ACTION_ROLLBACK = 1,
  GY_ACTION_HALT = 2
} gy_action_t;

const char *gy_action_name(gy_action_t a); /* "RECOVER_WATCH", "ROLLBACK", "HALT"; "?" */

/* ---- the policy ---- */

/* One series kind's detector (controller/detect.h uses this as its options). A value v fires
 * when, with median m and MAD d of the baseline window and
 *   threshold = max(z * 1.4826 * d, min_delta, min_rel * |m|),
 * (jump and v > m + threshold) or (drop and v < m - threshold); NaN/Inf always fire. */
typedef struct {
  int window;       /* accepted values in the baseline, 2..4096 */
  int warmup;       /* accepted values needed before it may fire, 1..window */
  double z;         /* robust sigmas, > 0 */
  double min_delta; /* absolute floor of the threshold, >= 0 */
  double min_rel;   /* floor relative to |median|, >= 0 */
  int jump, drop;   /* which sides fire (at least one) */
  int alert_only;   /* on_fire: alert -> an alert event, never a repair (e.g. a slow rank) */
  int sustain;      /* alert-only series: consecutive firing values before the anomaly is told
                       (a sustained drop, not one slow step), 1..10000 (0 counts as 1) */
} gy_policy_detect_t;

/* Knob changes of a rung. Factors multiply the run config's value (not the current one), so
 * applying a decision twice gives the same knobs. Only fields whose bit is in `set` change. */
enum {
  GY_KNOB_GRAD_CLIP = 1u << 0, /* grad_clip *= grad_clip_factor */
  GY_KNOB_EPS = 1u << 1,       /* eps *= eps_factor */
  GY_KNOB_SHALLOW = 1u << 2,   /* shallow_scale, shallow_layers (absolute) */
  GY_KNOB_LR_SCALE = 1u << 3,  /* lr_scale *= lr_scale_factor */
  GY_KNOB_WSD_DECAY = 1u << 4, /* switch the schedule to the decay phase of WSD now */
  GY_KNOB_Z_LOSS = 1u << 5,    /* z_loss (absolute) */
};

typedef struct {
  uint32_t set;                                         /* GY_KNOB_* bits */
  double grad_clip_factor, eps_factor, lr_scale_factor; /* (0, 1e6] */
  double shallow_scale;                                 /* [0, 1e6] */
  int shallow_layers;                                   /* 0..4096 */
  double z_loss;                                        /* [0, 1] */
} gy_policy_knobs_t;

/* One rung of the ladder. */
typedef struct {
  int skip_samples;        /* skip the attributed samples (top-k of the spike steps) */
  int skip_window;         /* skip the batches of steps [first - before, last + after] */
  int before, after;       /* 0..100000 */
  gy_policy_knobs_t knobs; /* applied in addition to the knobs of the rungs below */
} gy_policy_rung_t;

#define GY_POLICY_MAX_RUNGS 16
/* Bounds of a detector's window and warm-up, and of region_steps. */
#define GY_POLICY_MAX_WINDOW 4096
#define GY_POLICY_MAX_STEPS 100000000

typedef struct {
  gy_policy_detect_t detect[GY_SERIES_NKINDS];
  int observe_steps;        /* steps watched after a jump before rolling back, 0..10000 */
  double recover_tolerance; /* recovered when |v - median| <= tolerance * threshold, [0, 1] */
  int region_steps;         /* a spike this close to the last repaired one climbs a rung */
  int max_rollbacks;        /* repairs (spike, drop, NaN) over the run, 1..100000 */
  int max_restarts;         /* rollbacks for lost workers over the run, 0..100000 */
  int drop_skip_samples;    /* on_drop: skip_samples (1) or ladder (0) */
  int nrungs;               /* 1..GY_POLICY_MAX_RUNGS */
  gy_policy_rung_t rung[GY_POLICY_MAX_RUNGS];
  gy_guard_opts_t guard; /* the workers' per-sample guard (policies/guard_policy.h) */
} gy_policy_t;

/* Fills p with the built-in default (identical to examples/policies/default.yaml). */
void gy_policy_default(gy_policy_t *p);
/* Checks ranges; 0 or GY_ECONFIG with the offending field named in errmsg. */
int gy_policy_check(const gy_policy_t *p, char *errmsg, size_t errlen);
int gy_policy_detect_check(const gy_policy_detect_t *d, char *errmsg, size_t errlen);
/* Writes p as a YAML policy file that gy_policy_load reads back to an equal policy ("policy
 * show"). Returns the length it needed (like snprintf); the text is truncated to len - 1. */
size_t gy_policy_format(const gy_policy_t *p, char *buf, size_t len);
/* 1 when every field of a and b is equal. */
int gy_policy_equal(const gy_policy_t *a, const gy_policy_t *b);

/* ---- decisions ---- */

#define GY_POLICY_MAX_SAMPLES 256

/* A repair already made (one per rollback the run entered). */
typedef struct {
  int64_t step; /* first suspected step of the repaired spike (lost worker: the step) */
  int rung;     /* ladder rung used, 1-based; 0 = none (lost worker) */
  gy_trigger_t trigger;
} gy_policy_repair_t;

/* What the decision is about. Pointers are borrowed for the call. */
typedef struct {
  gy_trigger_t trigger;
  int64_t first_step, last_step; /* first and last suspected step (last >= first) */
  const uint64_t *samples;       /* attributed sample ids (may repeat; may be NULL) */
  int nsamples;
} gy_policy_input_t;

typedef struct {
  gy_action_t action;
  gy_trigger_t trigger;
  int rung;          /* rung used, 1-based; 0 = none (watch, lost worker, halt) */
  int observe_steps; /* RECOVER_WATCH: steps to watch */
  int nsamples;      /* skip these sample ids (sorted, distinct; at most GY_POLICY_MAX_SAMPLES) */
  uint64_t samples[GY_POLICY_MAX_SAMPLES];
  int samples_dropped; /* attributed ids beyond the cap (not skipped) */
  int skip_steps;      /* skip the batches of steps [step_first, step_last) */
  int64_t step_first, step_last;
  gy_policy_knobs_t knobs; /* cumulative over rungs 1..rung; set == 0: knobs unchanged */
  char reason[256];
} gy_policy_decision_t;

/* The pure decision (DESIGN.md §2):
 *   SPIKE            -> RECOVER_WATCH for observe_steps (ROLLBACK as for SPIKE_PERSISTS when
 *                       observe_steps is 0);
 *   SPIKE_PERSISTS, NONFINITE, DROP, MASKED
 *                    -> ROLLBACK on rung r: r = 1 unless the last repair with a
 *                       rung was within region_steps of first_step (a repeat: its rung + 1);
 *                       a DROP with drop_skip_samples always skips the samples too;
 *                       r > nrungs (ladder exhausted) or max_rollbacks repairs made -> HALT;
 *   WORKER_LOST      -> ROLLBACK with no skip and no knobs (HALT after max_restarts of them);
 *   OPERATOR         -> ROLLBACK with no skip and no knobs (a human decided: never bounded).
 * hist holds the repairs made so far, oldest first (NULL when nhist is 0). Returns 0, or
 * GY_EINVAL for a bad argument (out untouched). */
int gy_policy_decide(const gy_policy_t *p, const gy_policy_input_t *in,
                     const gy_policy_repair_t *hist, int nhist, gy_policy_decision_t *out);
/* One line describing d ("ROLLBACK rung 2: skip steps [118, 123), grad_clip x0.5 ..."). */
void gy_policy_decision_format(const gy_policy_decision_t *d, char *buf, size_t len);

#endif
