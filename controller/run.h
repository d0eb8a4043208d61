/* run: the run state machine of the closed loop (DESIGN.md §2, CONVENTIONS.md §7). Pure: no
 * I/O and no clock — every input carries the time (milliseconds, any epoch) and the machine
 * answers with events (the audit log) and actions (what the controller must do).
 *
 * Usage: call an input function; then read gy_run_events() (persist them first: write-ahead)
 * and gy_run_actions() (carry them out), and gy_run_clear() before the next input. Refusals
 * return a negative code from common/err.h with a message in gy_run_errmsg() and change
 * nothing (GY_ENOTSUP: not possible in this state; GY_EINVAL: bad argument; GY_ERANGE: a step
 * out of order or a stale checkpoint; GY_ENOENT: no checkpoint for an operator rollback;
 * GY_ENOMEM: out of memory before anything changed, so the same input can be given again).
 * Out of memory while appending an event or an action drops that one output and the input
 * goes on (the state stays whole); gy_run_dropped() counts them.
 *
 * Steps and checkpoints: figures are "of step s" (the loss of the batch of step s); a
 * checkpoint's step is the number of steps completed (it holds the parameters that step s = its
 * step starts from). A repair rolls back to the newest clean committed checkpoint whose step is
 * strictly before the first suspected step. */
#ifndef GY_RUN_H
#define GY_RUN_H

#include <stddef.h>
#include <stdint.h>

#include "controller/detect.h"
#include "controller/event_kinds.h"
#include "policies/policy.h"

/* States. The transition table is in run.c (one function changes state):
 *   INIT            -> TRAIN, HALTED
 *   TRAIN           -> SPIKE_SUSPECTED, ROLLBACK, PAUSED, HALTED, DONE
 *   SPIKE_SUSPECTED -> TRAIN (recovered), ROLLBACK, PAUSED, HALTED, DONE
 *   ROLLBACK        -> ROLLBACK (restore failed / worker lost: again), SKIP_WINDOW, RESUME, HALTED
 *   SKIP_WINDOW     -> ROLLBACK (worker lost), RESUME, HALTED
 *   RESUME          -> TRAIN, ROLLBACK (worker lost), PAUSED (a pause asked meanwhile), HALTED
 *   PAUSED          -> TRAIN, ROLLBACK, HALTED, DONE
 *   HALTED          -> TRAIN (operator resume), ROLLBACK (operator rollback), DONE
 *   DONE            -> (none) */
#define GY_RUN_STATE_MAP(XX)                                                                       \
  XX(INIT)            /* the gang is forming */                                                    \
  XX(TRAIN)           /* training; every step feeds the detectors */                               \
  XX(SPIKE_SUSPECTED) /* a series jumped: watching observe_steps more steps */                     \
  XX(ROLLBACK)        /* every rank restores the target checkpoint */                              \
  XX(SKIP_WINDOW)     /* the decision's skips and knob changes are being applied */                \
  XX(RESUME)          /* grants are extended again; waiting for training to restart */             \
  XX(PAUSED)          /* the operator paused */                                                    \
  XX(HALTED)          /* unrecoverable or stopped by the operator: a human decides */              \
  XX(DONE)            /* the run finished */

typedef enum {
#define GY_RUN_STATE_ENUM(name) GY_RUN_##name,
  GY_RUN_STATE_MAP(GY_RUN_STATE_ENUM)
#undef GY_RUN_STATE_ENUM
      GY_RUN_NSTATES
} gy_run_state_t;

const char *gy_run_state_name(gy_run_state_t s); /* "TRAIN", ...; "?" when out of range */

/* ---- inputs ---- */

/* One figure of a step. Strings are borrowed for the call. */
typedef struct {
  const char *series;    /* "loss", "loss/<channel>", "grad_norm", "grad_norm_shallow",
                            "ppl/<source>", "tokens_per_s/<rank>" (< GY_DETECT_NAME_MAX) */
  gy_series_kind_t kind; /* which of the policy's thresholds apply */
  double value;
  int rank; /* the rank it belongs to, -1 for gang-wide figures */
} gy_run_value_t;

/* One attributed sample (from a rank's report). */
typedef struct {
  uint64_t id;
  const char *channel; /* may be NULL */
  double loss;
} gy_run_sample_t;

typedef struct {
  int64_t step;
  int nonfinite; /* some rank saw a non-finite gradient or loss */
  const gy_run_value_t *values;
  int nvalues;
  const gy_run_sample_t *top; /* the step's worst (highest-loss) samples: blamed for jumps */
  int ntop;
  const gy_run_sample_t *bottom; /* its best (lowest-loss) samples: blamed for drops; when
                                    absent, a drop blames `top` (see the report's caveat) */
  int nbottom;
  /* The workers' per-sample guard: the step's samples (masked ones included; 0: unknown), how
   * many it masked (exact), and the ids of those listed (at most GY_POLICY_MAX_SAMPLES used). */
  int samples;
  int nmasked;
  const uint64_t *masked;
  int nmasked_ids;
} gy_run_step_t;

/* ---- outputs ---- */

typedef enum {
  GY_RUN_ACT_ROLLBACK, /* stop granting; every rank restores checkpoint `step` (then call
                          gy_run_rollback_done, or gy_run_restore_failed) */
  GY_RUN_ACT_APPLY,    /* send the decision's skips (samples, step range) and knob changes to
                          every rank (then gy_run_skips_applied) */
  GY_RUN_ACT_RESUME,   /* grant again from `step` (then gy_run_resumed) */
  GY_RUN_ACT_PAUSE,    /* stop granting (operator pause) */
  GY_RUN_ACT_HALT,     /* stop granting: the run waits for a human */
  GY_RUN_ACT_ALERT,    /* send msg to the alert webhook */
  GY_RUN_ACT_DONE,     /* the run finished */
} gy_run_act_kind_t;

const char *gy_run_act_name(gy_run_act_kind_t k); /* "ROLLBACK", ... */

/* The classes of the run's alerts: the webhook's `kind`, which the alert sender rate-limits per
 * class. Routed by this value, never by the wording of the message. */
#define GY_ALERT_CLASS_MAP(XX)                                                                     \
  XX(OTHER, "alert")                     /* e.g. a held-out regression */                          \
  XX(HALTED, "halted")                   /* the run halted: a human decides */                     \
  XX(REPEATED_SPIKES, "repeated_spikes") /* the escalation ladder climbed a rung */                \
  XX(ANOMALY, "anomaly")                 /* an alert-only detector fired */

typedef enum {
#define GY_ALERT_CLASS_ENUM(name, str) GY_ALERT_##name,
  GY_ALERT_CLASS_MAP(GY_ALERT_CLASS_ENUM)
#undef GY_ALERT_CLASS_ENUM
      GY_ALERT_NCLASSES
} gy_alert_class_t;

const char *gy_alert_class_name(gy_alert_class_t c); /* "halted", ...; "alert" when out of range */

typedef struct {
  gy_run_act_kind_t kind;
  int64_t step;                  /* ROLLBACK, RESUME: the target checkpoint; else the step */
  uint64_t repair_id;            /* shared by the ROLLBACK/APPLY/RESUME of one repair; 0: none */
  gy_policy_decision_t decision; /* ROLLBACK, APPLY */
  char msg[256];                 /* ALERT, HALT: why */
  gy_alert_class_t alert_class;  /* ALERT */
} gy_run_action_t;

#define GY_RUN_EVIDENCE_MAX 4

typedef struct {
  uint64_t id;             /* 1, 2, ... over the life of the run */
  int64_t time_ms;         /* the input's time */
  int64_t step;            /* the step it is about */
  gy_run_state_t from, to; /* equal when no transition happened */
  gy_event_kind_t kind;    /* GY_EVENT_STARTED, _SPIKE_SUSPECTED, _RECOVERED_SPIKE, _ROLLBACK,
                              _SKIP, _RESUME, _RESUMED, _PAUSED, _HALTED, _DONE, _CHECKPOINT,
                              _ANOMALY, _DEFERRED, _EVAL_REGRESSION, _WORKER_LOST, _FORCED */
  char reason[400];
  char evidence[512]; /* the verdicts that fired, as text ("" when none) */
  char decision[256]; /* the decision taken, as text ("" when none) */
  int nverdicts;      /* the first verdicts, structured */
  gy_verdict_t verdict[GY_RUN_EVIDENCE_MAX];
} gy_run_event_t;

typedef struct {
  int64_t step;
  int clean;
} gy_run_ckpt_t;

typedef struct gy_run gy_run_t;

/* Creates a run in INIT with a copy of policy (NULL: gy_policy_default()). GY_EINVAL for a
 * policy that fails gy_policy_check, GY_ENOMEM. */
int gy_run_create(gy_run_t **out, const gy_policy_t *policy);
void gy_run_destroy(gy_run_t *r); /* NULL is a no-op */
/* Replaces the policy (copied) after gy_policy_check (GY_EINVAL, old policy kept): existing
 * detectors take the new thresholds and keep their windows. */
int gy_run_set_policy(gy_run_t *r, const gy_policy_t *policy);
const gy_policy_t *gy_run_policy(const gy_run_t *r);

/* ---- inputs, each with the time now_ms ---- */

/* The gang formed and trains from start_step: INIT -> TRAIN. */
int gy_run_started(gy_run_t *r, int64_t now_ms, int64_t start_step);
/* A step's aggregated figures (steps in increasing order; GY_ERANGE otherwise). In TRAIN:
 * NaN/Inf -> ROLLBACK at once; a drop of a loss -> ROLLBACK at once (the attributed samples
 * skipped); the guard masked more than policy guard.max_step_share of the step's samples (a
 * spike the samples alone do not explain) -> ROLLBACK at once on the ladder (trigger MASKED, the
 * masked samples attributed; in SPIKE_SUSPECTED too); a jump -> SPIKE_SUSPECTED (or straight
 * to ROLLBACK when observe_steps is 0); an alert-only series (throughput) -> an "anomaly" event
 * and an ALERT, once per streak. In
 * SPIKE_SUSPECTED: every series that fired back within recover_tolerance * threshold of its
 * baseline -> TRAIN ("recovered_spike"); else after observe_steps steps -> ROLLBACK. In PAUSED
 * the detectors keep learning; NaN/Inf -> ROLLBACK, other verdicts are events. Ignored (0) in
 * the other states: those figures belong to a timeline being abandoned. A repair that the
 * policy refuses (ladder exhausted, max_rollbacks) or that has no clean checkpoint -> HALTED
 * with an ALERT. */
int gy_run_step(gy_run_t *r, int64_t now_ms, const gy_run_step_t *s);
/* A held-out evaluation with the parameters of `step` steps done (values of kind
 * GY_SERIES_PPL, "ppl/<source>"), in increasing steps (GY_ERANGE otherwise; a rollback lets the
 * steps after its target come again). Evaluations are periodic, not per step, and the held-out
 * sets are fixed and clean: a value that fires says the parameters got worse, not that a batch
 * was bad, so there is no sample to blame and no next value to watch for observe_steps steps.
 * NaN/Inf -> ROLLBACK at once (as a non-finite step; a PAUSED run pauses again after it). A jump
 * (or drop) -> an "eval_regression" event with the evidence and an ALERT, and the checkpoint of
 * `step` (the parameters evaluated) is suspect: a repair never restores it; the training
 * figures' detectors still decide the repairs. An alert-only kind -> an "anomaly" event and an
 * ALERT once its streak lasts `sustain` evaluations. Ignored (0) outside TRAIN,
 * SPIKE_SUSPECTED and PAUSED. */
int gy_run_eval(gy_run_t *r, int64_t now_ms, int64_t step, const gy_run_value_t *values, int n);
/* Every rank reported its shard of the checkpoint at `step`: it is committed, clean when
 * `clean` and it was not taken while a spike was suspected (nor in the watch of a recovered
 * one). *clean_out (may be NULL) says which. GY_ERANGE: a checkpoint beyond the target of a
 * rollback in progress (stale). */
int gy_run_checkpoint(gy_run_t *r, int64_t now_ms, int64_t step, int clean, int *clean_out);
/* Every rank restored the target checkpoint `step`: ROLLBACK -> SKIP_WINDOW (APPLY) when the
 * decision skips or changes knobs, else -> RESUME (RESUME). */
int gy_run_rollback_done(gy_run_t *r, int64_t now_ms, int64_t step);
/* A rank could not restore checkpoint `step` (a shard failed its checksum): it is forgotten
 * and the rollback goes to the previous clean one (ROLLBACK -> ROLLBACK), or HALTED if none. */
int gy_run_restore_failed(gy_run_t *r, int64_t now_ms, int64_t step, const char *why);
/* Every rank applied the skips and knob changes: SKIP_WINDOW -> RESUME (RESUME). */
int gy_run_skips_applied(gy_run_t *r, int64_t now_ms);
/* Training restarted: RESUME -> TRAIN (or PAUSED when a pause was asked meanwhile). */
int gy_run_resumed(gy_run_t *r, int64_t now_ms);
/* A rank was lost: -> ROLLBACK with no skip (a repair in progress keeps its skips and knobs; a
 * PAUSED run pauses again after it), HALTED after max_restarts. INIT, HALTED, DONE: an event
 * only. */
int gy_run_worker_lost(gy_run_t *r, int64_t now_ms, int rank, const char *why);
/* Operator verbs. pause: TRAIN/SPIKE_SUSPECTED -> PAUSED; during a repair it is deferred to
 * its end. resume: PAUSED -> TRAIN; HALTED -> TRAIN (and the escalation starts over: a human
 * decided). halt: any state but DONE -> HALTED. rollback_to: -> ROLLBACK to the newest
 * committed checkpoint <= step, no skip, not bounded (GY_ENOENT if none). */
int gy_run_pause(gy_run_t *r, int64_t now_ms);
int gy_run_resume(gy_run_t *r, int64_t now_ms);
int gy_run_halt(gy_run_t *r, int64_t now_ms, const char *why);
int gy_run_rollback_to(gy_run_t *r, int64_t now_ms, int64_t step);
/* The last step was trained (or the operator stopped the run): -> DONE. */
int gy_run_finished(gy_run_t *r, int64_t now_ms);

/* ---- outputs ---- */

/* Events and actions since the last clear (valid until the next input or clear). */
const gy_run_event_t *gy_run_events(const gy_run_t *r, size_t *n);
const gy_run_action_t *gy_run_actions(const gy_run_t *r, size_t *n);
void gy_run_clear(gy_run_t *r);
/* What the run has learnt, for a successor controller (controller/journal.h): every
 * detector's accepted values and the repairs the escalation counts, as a JSON text
 * (jansson's memory: release it with free(), not gy_free; NULL when out of memory). */
char *gy_run_save(const gy_run_t *r);
/* Takes a gy_run_save text: with GY_RUN_LOAD_BASELINES the detectors' baselines are replaced
 * (series of unknown kinds are skipped), with GY_RUN_LOAD_REPAIRS the repair history is
 * appended. GY_EINVAL (with errmsg) for a text that is not one; GY_ENOMEM with nothing loaded
 * (new series of the text may exist, empty). Emits nothing. */
#define GY_RUN_LOAD_BASELINES 1
#define GY_RUN_LOAD_REPAIRS 2
int gy_run_load(gy_run_t *r, const char *text, int what, char *errmsg, size_t errlen);
const char *gy_run_errmsg(const gy_run_t *r);
/* Events and actions dropped since create because memory ran out appending them. */
uint64_t gy_run_dropped(const gy_run_t *r);

/* ---- read-only views ---- */

gy_run_state_t gy_run_state(const gy_run_t *r);
int64_t gy_run_last_step(const gy_run_t *r);    /* newest step fed (-1: none) */
int64_t gy_run_target(const gy_run_t *r);       /* target of the repair in progress (-1) */
int64_t gy_run_suspect_step(const gy_run_t *r); /* first suspected step (-1: none) */
int gy_run_rollbacks(const gy_run_t *r);        /* repairs made (spikes, drops, NaN) */
int gy_run_restarts(const gy_run_t *r);         /* rollbacks for lost workers */
/* The repair history (oldest first) and the committed checkpoints (by step). */
const gy_policy_repair_t *gy_run_history(const gy_run_t *r, int *n);
const gy_run_ckpt_t *gy_run_checkpoints(const gy_run_t *r, int *n);
/* The decision of the repair in progress (NULL: none). */
const gy_policy_decision_t *gy_run_decision(const gy_run_t *r);
gy_detect_t *gy_run_detectors(const gy_run_t *r);

/* Internal, for tests (CONVENTIONS §9): force a state, the one function that changes state
 * (GY_EINVAL for a pair outside the table, state unchanged), and the table itself. */
void gy__run_force_state(gy_run_t *r, gy_run_state_t s);
int gy__run_transition(gy_run_t *r, int64_t now_ms, gy_run_state_t to, gy_event_kind_t kind,
                       const char *reason);
int gy__run_transition_allowed(gy_run_state_t from, gy_run_state_t to);

#endif
