/*
 * run: the run state machine of the closed loop (DESIGN.md §2): detect, watch, roll back, skip,
 * escalate, resume — as pure logic. Events in (with the time), events and actions out.
 *
 * API, in order: names; create/destroy/set_policy; inputs (started, checkpoint, rollback_done,
 * restore_failed, skips_applied, resumed, worker_lost, pause, resume, halt, rollback_to,
 * finished); outputs (events, actions, clear, errmsg); views; the internal state-change function
 * for tests. The figures (step, eval) go through the detectors in run_detect.c; save and load
 * are in run_save.c; struct gy_run and the gy__run_* calls between the files are in
 * run_internal.h.
 *
 * How it works. Every step's figures go through the detectors (controller/detect.c) with the
 * policy's thresholds for their kind. A jump opens a suspicion (first step S): the run watches
 * observe_steps more steps, collecting the series that fired and the samples they blame. If
 * every such series is back near its baseline the spike recovered (TRAIN, an event, and the
 * checkpoints taken meanwhile stay suspect). Otherwise — or at once for NaN/Inf and drops —
 * gy_policy_decide picks the rung from the repair history, and the run rolls back to the
 * newest clean committed checkpoint strictly before S, applies the skips and knob changes, and
 * resumes. A jump among the steps replayed after a repair that only skipped data is not
 * watched: the repair missed part of the cause, and the escalation takes over at once (after a
 * repair that changed knobs the usual watch applies: new knobs act over several steps). A lost
 * worker rolls back with no skip. Whatever the policy refuses ends in HALTED.
 *
 * Invariants:
 * - Only gy__run_move() writes r->state, and only pairs of the table `allowed` pass; every move
 * appends exactly one event and fires its state's entry action.
 * - A repair (ROLLBACK, SKIP_WINDOW, RESUME) always has a target that is a committed checkpoint
 *   and a decision; checkpoints above the target are forgotten when the repair starts (they
 *   belong to the timeline being abandoned), and so are suspect intervals above it.
 * - The rollback target of a spike is clean and strictly before the first suspected step.
 * - Bounded: each repair adds one entry to the history, and gy_policy_decide refuses a repair
 *   past the ladder or past max_rollbacks / max_restarts, so no input sequence loops forever.
 * - Figures arriving outside TRAIN, SPIKE_SUSPECTED and PAUSED never reach the detectors.
 * - Out of memory: an input allocates what its state needs before it changes anything and is
 *   refused with GY_ENOMEM; an event or action that cannot be appended is dropped and counted
 *   (gy_run_dropped). In SPIKE_SUSPECTED there is always room for one more suspect interval,
 *   so the checkpoints of a watch are never taken for clean because memory ran out.
 */
#include "controller/run_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/err.h"

/* ---------------------------------------- names ---------------------------------------- */

static const char *const state_names[] = {
#define GY_RUN_STATE_NAME(name) #name,
    GY_RUN_STATE_MAP(GY_RUN_STATE_NAME)
#undef GY_RUN_STATE_NAME
};

const char *gy_run_state_name(gy_run_state_t s) {
  return (s >= 0 && s < GY_RUN_NSTATES) ? state_names[s] : "?";
}

const char *gy_alert_class_name(gy_alert_class_t c) {
  static const char *const names[] = {
#define GY_ALERT_CLASS_STR(name, str) str,
      GY_ALERT_CLASS_MAP(GY_ALERT_CLASS_STR)
#undef GY_ALERT_CLASS_STR
  };
  return (c >= 0 && c < GY_ALERT_NCLASSES) ? names[c] : "alert";
}

const char *gy_run_act_name(gy_run_act_kind_t k) {
  static const char *const names[] = {"ROLLBACK", "APPLY", "RESUME", "PAUSE",
                                      "HALT",     "ALERT", "DONE"};
  return (k >= 0 && k <= GY_RUN_ACT_DONE) ? names[k] : "?";
}

/* ---------------------------------------- outputs ---------------------------------------- */

int gy__run_grow(void **p, size_t *cap, size_t need, size_t size) {
  if (need <= *cap) return 0;
  size_t c = *cap ? *cap : 8;
  while (c < need)
    c *= 2;
  void *q = gy_realloc(*p, c * size);
  if (!q) return GY_ENOMEM;
  *p = q;
  *cap = c;
  return 0;
}

/* Room for `extra` more suspect intervals: 0 or GY_ENOMEM. */
int gy__run_reserve_ivals(gy_run_t *r, int extra) {
  size_t cap = (size_t)r->capivals;
  if (gy__run_grow((void **)&r->ivals, &cap, (size_t)r->nivals + (size_t)extra, sizeof(*r->ivals)))
    return GY_ENOMEM;
  r->capivals = (int)cap;
  return 0;
}

/* Appends an event; NULL when out of memory (the event is dropped and counted, the state stays
 * consistent). */
gy_run_event_t *gy__run_event(gy_run_t *r, gy_event_kind_t kind, int64_t step, gy_run_state_t from,
                              gy_run_state_t to, const char *reason, const extra_t *x) {
  if (gy__run_grow((void **)&r->evs, &r->capevs, r->nevs + 1, sizeof(*r->evs))) {
    r->dropped++;
    return NULL;
  }
  gy_run_event_t *e = &r->evs[r->nevs++];
  memset(e, 0, sizeof(*e));
  e->id = ++r->event_id;
  e->time_ms = r->now;
  e->step = step;
  e->from = from;
  e->to = to;
  e->kind = kind;
  snprintf(e->reason, sizeof(e->reason), "%s", reason ? reason : "");
  if (x) {
    snprintf(e->evidence, sizeof(e->evidence), "%s", x->evidence ? x->evidence : "");
    snprintf(e->decision, sizeof(e->decision), "%s", x->decision ? x->decision : "");
    for (int i = 0; i < x->nv && i < GY_RUN_EVIDENCE_MAX; i++)
      e->verdict[e->nverdicts++] = x->v[i];
  }
  return e;
}

static gy_run_action_t *action(gy_run_t *r, gy_run_act_kind_t k, int64_t step) {
  if (gy__run_grow((void **)&r->acts, &r->capacts, r->nacts + 1, sizeof(*r->acts))) {
    r->dropped++;
    return NULL;
  }
  gy_run_action_t *a = &r->acts[r->nacts++];
  memset(a, 0, sizeof(*a));
  a->kind = k;
  a->step = step;
  return a;
}

void gy__run_alert(gy_run_t *r, gy_alert_class_t cls, const char *fmt, ...) {
  gy_run_action_t *a = action(r, GY_RUN_ACT_ALERT, r->last_step);
  if (!a) return;
  a->alert_class = cls;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(a->msg, sizeof(a->msg), fmt, ap);
  va_end(ap);
}

int gy__run_refuse(gy_run_t *r, int rc, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(r->errmsg, sizeof(r->errmsg), fmt, ap);
  va_end(ap);
  return rc;
}

/* ------------------------------------- state machine ------------------------------------- */

/* allowed[from][to]: the documented transitions (run.h). */
#define I GY_RUN_INIT
#define T GY_RUN_TRAIN
#define S GY_RUN_SPIKE_SUSPECTED
#define R GY_RUN_ROLLBACK
#define K GY_RUN_SKIP_WINDOW
#define U GY_RUN_RESUME
#define P GY_RUN_PAUSED
#define H GY_RUN_HALTED
#define D GY_RUN_DONE
static const unsigned char allowed[GY_RUN_NSTATES][GY_RUN_NSTATES] = {
    [I] = {[T] = 1, [H] = 1},
    [T] = {[S] = 1, [R] = 1, [P] = 1, [H] = 1, [D] = 1},
    [S] = {[T] = 1, [R] = 1, [P] = 1, [H] = 1, [D] = 1},
    [R] = {[R] = 1, [K] = 1, [U] = 1, [H] = 1},
    [K] = {[R] = 1, [U] = 1, [H] = 1},
    [U] = {[T] = 1, [R] = 1, [P] = 1, [H] = 1},
    [P] = {[T] = 1, [R] = 1, [H] = 1, [D] = 1},
    [H] = {[T] = 1, [R] = 1, [D] = 1},
    [D] = {0},
};
#undef I
#undef T
#undef S
#undef R
#undef K
#undef U
#undef P
#undef H
#undef D

int gy__run_transition_allowed(gy_run_state_t from, gy_run_state_t to) {
  if (from < 0 || from >= GY_RUN_NSTATES || to < 0 || to >= GY_RUN_NSTATES) return 0;
  return allowed[from][to];
}

/* Exit actions. */
static void clear_suspicion(gy_run_t *r) {
  r->susp_first = r->susp_last = -1;
  r->nsusp_series = r->nsusp_samples = r->nsusp_verdict = 0;
  r->susp_evidence[0] = '\0';
}

/* Records (susp_first, last_step + 1] as suspect: the checkpoints of the watch, however it
 * ended. The room was reserved before the run entered SPIKE_SUSPECTED (and kept by every
 * input that used some of it): the interval is never lost. */
static void keep_suspect(gy_run_t *r) {
  if (r->susp_first < 0) return;
  if (gy__run_reserve_ivals(r, 1)) return; /* not reached: reserved */
  r->ivals[r->nivals++] = (interval_t){r->susp_first, r->last_step + 1};
}

static void clear_repair(gy_run_t *r) {
  r->repairing = 0;
  r->target = -1;
  memset(&r->dec, 0, sizeof(r->dec));
}

/* The one function that changes state: checks the pair, records the event, runs the exit
 * action of the old state and the entry action of the new one. */
int gy__run_move(gy_run_t *r, gy_run_state_t to, gy_event_kind_t kind, const char *reason,
                 const extra_t *x) {
  gy_run_state_t from = r->state;
  if (!gy__run_transition_allowed(from, to))
    return gy__run_refuse(r, GY_EINVAL, "illegal state transition %s -> %s",
                          gy_run_state_name(from), gy_run_state_name(to));
  int64_t step = r->last_step;
  if (to == GY_RUN_ROLLBACK || to == GY_RUN_SKIP_WINDOW || to == GY_RUN_RESUME) step = r->target;
  gy__run_event(r, kind, step, from, to, reason, x);
  r->state = to;
  /* Exit actions: the checkpoints of a suspicion that ends without a rollback stay suspect;
   * a suspicion lives only in SPIKE_SUSPECTED (and while TRAIN gathers it). */
  if (from == GY_RUN_SPIKE_SUSPECTED && to != GY_RUN_ROLLBACK) keep_suspect(r);
  if (to != GY_RUN_SPIKE_SUSPECTED) clear_suspicion(r);
  gy_run_action_t *a;
  switch (to) {
  case GY_RUN_ROLLBACK:
    if ((a = action(r, GY_RUN_ACT_ROLLBACK, r->target))) {
      a->repair_id = r->repair_id;
      a->decision = r->dec;
    }
    break;
  case GY_RUN_SKIP_WINDOW:
    if ((a = action(r, GY_RUN_ACT_APPLY, r->target))) {
      a->repair_id = r->repair_id;
      a->decision = r->dec;
    }
    break;
  case GY_RUN_RESUME:
    if ((a = action(r, GY_RUN_ACT_RESUME, r->target))) a->repair_id = r->repair_id;
    break;
  case GY_RUN_TRAIN:
    if (from == GY_RUN_RESUME) {
      r->last_step = r->target - 1;
      clear_repair(r);
    } else if (from == GY_RUN_PAUSED || from == GY_RUN_HALTED) {
      action(r, GY_RUN_ACT_RESUME, r->last_step + 1);
    }
    break;
  case GY_RUN_PAUSED:
    if (from == GY_RUN_RESUME) {
      r->last_step = r->target - 1;
      clear_repair(r);
    }
    r->pause_after = 0;
    action(r, GY_RUN_ACT_PAUSE, r->last_step);
    break;
  case GY_RUN_HALTED:
    clear_repair(r);
    r->pause_after = 0;
    if ((a = action(r, GY_RUN_ACT_HALT, r->last_step)))
      snprintf(a->msg, sizeof(a->msg), "%s", reason ? reason : "");
    gy__run_alert(r, GY_ALERT_HALTED, "run halted at step %lld: %s", (long long)r->last_step, reason ? reason : "");
    break;
  case GY_RUN_DONE:
    clear_repair(r);
    action(r, GY_RUN_ACT_DONE, r->last_step);
    break;
  default:
    break;
  }
  return 0;
}

void gy__run_force_state(gy_run_t *r, gy_run_state_t s) {
  r->state = s;
}

int gy__run_transition(gy_run_t *r, int64_t now_ms, gy_run_state_t to, gy_event_kind_t kind,
                       const char *reason) {
  r->now = now_ms;
  return gy__run_move(r, to, kind, reason, NULL);
}

/* ---------------------------------------- create ---------------------------------------- */

int gy_run_create(gy_run_t **out, const gy_policy_t *policy) {
  gy_run_t *r = NULL;
  int rc = GY_ENOMEM;
  if (!out) return GY_EINVAL;
  if (policy && gy_policy_check(policy, NULL, 0)) return GY_EINVAL;
  if (!(r = gy_calloc(1, sizeof(*r)))) goto err;
  if (policy)
    r->pol = *policy;
  else
    gy_policy_default(&r->pol);
  if ((rc = gy_detect_create(&r->det))) goto err;
  r->state = GY_RUN_INIT;
  r->last_step = -1;
  r->last_eval = -1;
  r->replay_until = -1;
  clear_suspicion(r);
  clear_repair(r);
  *out = r;
  return 0;
err:
  gy_run_destroy(r);
  return rc;
}

void gy_run_destroy(gy_run_t *r) {
  if (!r) return;
  gy_detect_destroy(r->det);
  gy_free(r->kinds);
  gy_free(r->ckpts);
  gy_free(r->ivals);
  gy_free(r->hist);
  gy_free(r->evs);
  gy_free(r->acts);
  gy_free(r);
}

int gy_run_set_policy(gy_run_t *r, const gy_policy_t *policy) {
  char why[200];
  if (!policy) return gy__run_refuse(r, GY_EINVAL, "no policy");
  if (gy_policy_check(policy, why, sizeof(why)))
    return gy__run_refuse(r, GY_EINVAL, "policy refused: %s", why);
  /* Out of memory part-way leaves the earlier series with the new thresholds (harmless: they
   * passed the check) and the old policy in force for new series and decisions. */
  for (int i = 0; i < gy_detect_count(r->det); i++) {
    int rc = gy_series_set_opts(gy_detect_at(r->det, i), &policy->detect[r->kinds[i]]);
    if (rc) return gy__run_refuse(r, rc, "out of memory resizing a detector window");
  }
  r->pol = *policy;
  return 0;
}

const gy_policy_t *gy_run_policy(const gy_run_t *r) {
  return &r->pol;
}

/* --------------------------------------- helpers --------------------------------------- */

/* Newest committed checkpoint with step <= limit (clean ones only when need_clean); -1. */
static int64_t pick_ckpt(const gy_run_t *r, int64_t limit, int need_clean) {
  for (int i = r->nckpts - 1; i >= 0; i--)
    if (r->ckpts[i].step <= limit && (!need_clean || r->ckpts[i].clean)) return r->ckpts[i].step;
  return -1;
}

/* Forgets the checkpoints above target and trims the suspect intervals to it. */
static void abandon_above(gy_run_t *r, int64_t target) {
  while (r->nckpts && r->ckpts[r->nckpts - 1].step > target)
    r->nckpts--;
  if (r->last_eval > target) r->last_eval = target; /* the new timeline evaluates them again */
  int j = 0;
  for (int i = 0; i < r->nivals; i++) {
    if (r->ivals[i].first >= target) continue;
    if (r->ivals[i].last > target) r->ivals[i].last = target;
    r->ivals[j++] = r->ivals[i];
  }
  r->nivals = j;
}

static int is_suspect(const gy_run_t *r, int64_t step) {
  if (r->state == GY_RUN_SPIKE_SUSPECTED && step > r->susp_first) return 1;
  for (int i = 0; i < r->nivals; i++)
    if (step > r->ivals[i].first && step <= r->ivals[i].last) return 1;
  return 0;
}

/* Room for one more repair in the history: 0 or GY_ENOMEM. The figures (gy_run_step,
 * gy_run_eval) reserve it before they touch the detectors, so that the repair they may start
 * cannot run out of memory half way (after the step was counted). */
int gy__run_reserve_hist(gy_run_t *r) {
  size_t cap = (size_t)r->caphist;
  if (gy__run_grow((void **)&r->hist, &cap, (size_t)r->nhist + 1, sizeof(*r->hist)))
    return GY_ENOMEM;
  r->caphist = (int)cap;
  return 0;
}

static int add_history(gy_run_t *r, int64_t step, int rung, gy_trigger_t t) {
  if (gy__run_reserve_hist(r)) return GY_ENOMEM;
  r->hist[r->nhist++] = (gy_policy_repair_t){.step = step, .rung = rung, .trigger = t};
  return 0;
}

static int halt(gy_run_t *r, const char *reason, const extra_t *x) {
  return gy__run_move(r, GY_RUN_HALTED, GY_EVENT_HALTED, reason, x);
}

/* Starts a repair for trigger t over the suspected steps [first, last], blaming samples;
 * ends in ROLLBACK, or in HALTED when the policy refuses or no clean checkpoint exists. */
int gy__run_repair(gy_run_t *r, gy_trigger_t t, int64_t first, int64_t last,
                   const uint64_t *samples, int nsamples, const char *evidence,
                   const gy_verdict_t *v, int nv) {
  gy_policy_input_t in = {t, first, last, samples, nsamples};
  gy_policy_decision_t d;
  char dtext[256], why[400];
  int rc = gy_policy_decide(&r->pol, &in, r->hist + r->hist_base, r->nhist - r->hist_base, &d);
  if (rc) return gy__run_refuse(r, rc, "the policy could not decide (bad input)");
  gy_policy_decision_format(&d, dtext, sizeof(dtext));
  extra_t x = {evidence, v, nv, dtext};
  if (d.action == GY_ACTION_HALT) return halt(r, d.reason, &x);
  /* Spikes: strictly before the first suspected step. A lost worker: the newest clean one
   * (before a suspicion in progress, whose checkpoints are suspect anyway). */
  int64_t limit = first - 1;
  if (t == GY_TRIG_WORKER_LOST)
    limit = r->state == GY_RUN_SPIKE_SUSPECTED ? r->susp_first - 1 : first;
  int64_t target = pick_ckpt(r, limit, 1);
  if (target < 0) {
    snprintf(why, sizeof(why), "%s; but no clean committed checkpoint is at or before step %lld",
             d.reason, (long long)limit);
    return halt(r, why, &x);
  }
  if ((rc = add_history(r, first, d.rung, t))) return gy__run_refuse(r, rc, "out of memory");
  /* the steps up to here run again: a jump among them says a data repair missed part of the
   * cause (repaired at once, below in gy_run_step); after a repair that changes knobs they are
   * watched as usual, since new knobs act over several steps */
  if (d.knobs.set)
    r->replay_until = -1;
  else if (t != GY_TRIG_WORKER_LOST && r->last_step > r->replay_until)
    r->replay_until = r->last_step;
  r->dec = d;
  r->target = target;
  r->repair_id++;
  r->repairing = 1;
  abandon_above(r, target);
  if (t == GY_TRIG_WORKER_LOST && evidence)
    snprintf(why, sizeof(why), "%s: %s; roll back to checkpoint %lld", evidence, d.reason,
             (long long)target);
  else
    snprintf(why, sizeof(why), "%s; roll back to checkpoint %lld", d.reason, (long long)target);
  if ((rc = gy__run_move(r, GY_RUN_ROLLBACK, GY_EVENT_ROLLBACK, why, &x))) return rc;
  if (d.rung >= 2)
    gy__run_alert(r, GY_ALERT_REPEATED_SPIKES, "repeated spike near step %lld: escalated to rung %d of %d (%s)",
                  (long long)first, d.rung, r->pol.nrungs, dtext);
  return 0;
}

/* ----------------------------------------- inputs ----------------------------------------- */

int gy_run_started(gy_run_t *r, int64_t now_ms, int64_t start_step) {
  r->now = now_ms;
  if (start_step < 0)
    return gy__run_refuse(r, GY_EINVAL, "start step %lld < 0", (long long)start_step);
  if (r->state != GY_RUN_INIT)
    return gy__run_refuse(r, GY_ENOTSUP, "started in state %s", gy_run_state_name(r->state));
  r->last_step = start_step - 1;
  char why[96];
  snprintf(why, sizeof(why), "the gang formed; training from step %lld", (long long)start_step);
  return gy__run_move(r, GY_RUN_TRAIN, GY_EVENT_STARTED, why, NULL);
}

int gy_run_checkpoint(gy_run_t *r, int64_t now_ms, int64_t step, int clean, int *clean_out) {
  r->now = now_ms;
  if (step < 0) return gy__run_refuse(r, GY_EINVAL, "checkpoint step %lld < 0", (long long)step);
  if (r->repairing && r->state != GY_RUN_HALTED && step > r->target)
    return gy__run_refuse(r, GY_ERANGE,
                          "checkpoint %lld is stale: the run is rolling back to checkpoint %lld",
                          (long long)step, (long long)r->target);
  int c = clean && !is_suspect(r, step);
  size_t cap = (size_t)r->capckpts;
  if (gy__run_grow((void **)&r->ckpts, &cap, (size_t)r->nckpts + 1, sizeof(*r->ckpts)))
    return gy__run_refuse(r, GY_ENOMEM, "out of memory");
  r->capckpts = (int)cap;
  /* Sorted by step; a second commit of the same step replaces the first. */
  int i = r->nckpts;
  while (i > 0 && r->ckpts[i - 1].step > step)
    i--;
  if (i > 0 && r->ckpts[i - 1].step == step) {
    r->ckpts[i - 1].clean = c;
  } else {
    memmove(&r->ckpts[i + 1], &r->ckpts[i], (size_t)(r->nckpts - i) * sizeof(*r->ckpts));
    r->ckpts[i] = (gy_run_ckpt_t){step, c};
    r->nckpts++;
  }
  char why[160];
  snprintf(why, sizeof(why), "checkpoint %lld committed, %s", (long long)step,
           c       ? "clean"
           : clean ? "suspect: taken while a spike was suspected"
                   : "suspect");
  gy__run_event(r, GY_EVENT_CHECKPOINT, step, r->state, r->state, why, NULL);
  if (clean_out) *clean_out = c;
  return 0;
}

int gy_run_rollback_done(gy_run_t *r, int64_t now_ms, int64_t step) {
  r->now = now_ms;
  if (r->state != GY_RUN_ROLLBACK)
    return gy__run_refuse(r, GY_ENOTSUP, "rollback done in state %s", gy_run_state_name(r->state));
  if (step != r->target)
    return gy__run_refuse(r, GY_EINVAL, "rollback done for checkpoint %lld, but the target is %lld",
                          (long long)step, (long long)r->target);
  const gy_policy_decision_t *d = &r->dec;
  char why[160];
  if (d->nsamples || d->skip_steps || d->knobs.set) {
    snprintf(why, sizeof(why), "every rank restored checkpoint %lld; applying the skips and knobs",
             (long long)step);
    return gy__run_move(r, GY_RUN_SKIP_WINDOW, GY_EVENT_SKIP, why, NULL);
  }
  snprintf(why, sizeof(why), "every rank restored checkpoint %lld; nothing to skip",
           (long long)step);
  return gy__run_move(r, GY_RUN_RESUME, GY_EVENT_RESUME, why, NULL);
}

int gy_run_restore_failed(gy_run_t *r, int64_t now_ms, int64_t step, const char *why) {
  r->now = now_ms;
  if (r->state != GY_RUN_ROLLBACK)
    return gy__run_refuse(r, GY_ENOTSUP, "restore failed in state %s", gy_run_state_name(r->state));
  if (step != r->target)
    return gy__run_refuse(r, GY_EINVAL,
                          "restore failed for checkpoint %lld, but the target is %lld",
                          (long long)step, (long long)r->target);
  /* Forget the broken checkpoint, then go to the previous clean one. */
  int j = 0;
  for (int i = 0; i < r->nckpts; i++)
    if (r->ckpts[i].step != step) r->ckpts[j++] = r->ckpts[i];
  r->nckpts = j;
  int64_t prev = pick_ckpt(r, step - 1, 1);
  char text[256];
  if (prev < 0) {
    snprintf(text, sizeof(text),
             "checkpoint %lld could not be restored (%s) and no older clean "
             "checkpoint exists",
             (long long)step, why ? why : "?");
    return halt(r, text, NULL);
  }
  r->target = prev;
  abandon_above(r, prev);
  snprintf(text, sizeof(text),
           "checkpoint %lld could not be restored (%s): roll back to "
           "checkpoint %lld instead",
           (long long)step, why ? why : "?", (long long)prev);
  return gy__run_move(r, GY_RUN_ROLLBACK, GY_EVENT_ROLLBACK, text, NULL);
}

int gy_run_skips_applied(gy_run_t *r, int64_t now_ms) {
  r->now = now_ms;
  if (r->state != GY_RUN_SKIP_WINDOW)
    return gy__run_refuse(r, GY_ENOTSUP, "skips applied in state %s", gy_run_state_name(r->state));
  return gy__run_move(r, GY_RUN_RESUME, GY_EVENT_RESUME,
                      "every rank applied the skips and knob changes", NULL);
}

int gy_run_resumed(gy_run_t *r, int64_t now_ms) {
  r->now = now_ms;
  if (r->state != GY_RUN_RESUME)
    return gy__run_refuse(r, GY_ENOTSUP, "resumed in state %s", gy_run_state_name(r->state));
  char why[128];
  snprintf(why, sizeof(why), "training restarted from checkpoint %lld%s", (long long)r->target,
           r->pause_after ? "; paused as the operator asked" : "");
  if (r->pause_after) return gy__run_move(r, GY_RUN_PAUSED, GY_EVENT_PAUSED, why, NULL);
  return gy__run_move(r, GY_RUN_TRAIN, GY_EVENT_RESUMED, why, NULL);
}

int gy_run_worker_lost(gy_run_t *r, int64_t now_ms, int rank, const char *why) {
  r->now = now_ms;
  char text[256];
  snprintf(text, sizeof(text), "rank %d lost%s%s", rank, why ? ": " : "", why ? why : "");
  gy_run_state_t st = r->state;
  if (st == GY_RUN_INIT || st == GY_RUN_HALTED || st == GY_RUN_DONE) {
    gy__run_event(r, GY_EVENT_WORKER_LOST, r->last_step, st, st, text, NULL);
    return 0;
  }
  if (st == GY_RUN_PAUSED) r->pause_after = 1;
  if (!r->repairing)
    return gy__run_repair(r, GY_TRIG_WORKER_LOST, r->last_step + 1, r->last_step + 1, NULL, 0, text,
                          NULL, 0);
  /* A repair is in progress: redo its rollback (same target, same skips and knobs: applying
   * them twice is harmless), counted as a restart. */
  gy_policy_input_t in = {GY_TRIG_WORKER_LOST, r->last_step + 1, r->last_step + 1, NULL, 0};
  gy_policy_decision_t d;
  int rc = gy_policy_decide(&r->pol, &in, r->hist + r->hist_base, r->nhist - r->hist_base, &d);
  if (rc) return gy__run_refuse(r, rc, "the policy could not decide (bad input)");
  if (d.action == GY_ACTION_HALT) return halt(r, d.reason, NULL);
  if ((rc = add_history(r, r->last_step + 1, 0, GY_TRIG_WORKER_LOST)))
    return gy__run_refuse(r, rc, "out of memory");
  char full[400];
  snprintf(full, sizeof(full), "%s during a repair: roll back to checkpoint %lld again", text,
           (long long)r->target);
  return gy__run_move(r, GY_RUN_ROLLBACK, GY_EVENT_ROLLBACK, full, NULL);
}

int gy_run_pause(gy_run_t *r, int64_t now_ms) {
  r->now = now_ms;
  gy_run_state_t st = r->state;
  if (st == GY_RUN_TRAIN || st == GY_RUN_SPIKE_SUSPECTED)
    return gy__run_move(
        r, GY_RUN_PAUSED, GY_EVENT_PAUSED,
        st == GY_RUN_TRAIN ? "operator pause" : "operator pause (the suspicion is dropped)", NULL);
  if (st == GY_RUN_ROLLBACK || st == GY_RUN_SKIP_WINDOW || st == GY_RUN_RESUME) {
    r->pause_after = 1;
    gy__run_event(r, GY_EVENT_DEFERRED, r->last_step, st, st,
                  "operator pause: the run pauses when the repair "
                  "in progress is done",
                  NULL);
    return 0;
  }
  return gy__run_refuse(r, GY_ENOTSUP, "cannot pause in state %s", gy_run_state_name(st));
}

int gy_run_resume(gy_run_t *r, int64_t now_ms) {
  r->now = now_ms;
  gy_run_state_t st = r->state;
  if (st == GY_RUN_PAUSED)
    return gy__run_move(r, GY_RUN_TRAIN, GY_EVENT_RESUMED, "operator resume", NULL);
  if (st == GY_RUN_HALTED) {
    r->hist_base = r->nhist; /* a human decided: the escalation starts over */
    return gy__run_move(r, GY_RUN_TRAIN, GY_EVENT_RESUMED,
                        "operator resume after a halt; the escalation "
                        "starts over",
                        NULL);
  }
  if (r->pause_after &&
      (st == GY_RUN_ROLLBACK || st == GY_RUN_SKIP_WINDOW || st == GY_RUN_RESUME)) {
    r->pause_after = 0;
    gy__run_event(r, GY_EVENT_DEFERRED, r->last_step, st, st,
                  "operator resume: the deferred pause is cancelled", NULL);
    return 0;
  }
  return gy__run_refuse(r, GY_ENOTSUP, "cannot resume in state %s", gy_run_state_name(st));
}

int gy_run_halt(gy_run_t *r, int64_t now_ms, const char *why) {
  r->now = now_ms;
  if (r->state == GY_RUN_HALTED || r->state == GY_RUN_DONE)
    return gy__run_refuse(r, GY_ENOTSUP, "cannot halt in state %s", gy_run_state_name(r->state));
  char text[256];
  snprintf(text, sizeof(text), "operator halt%s%s", why ? ": " : "", why ? why : "");
  return halt(r, text, NULL);
}

int gy_run_rollback_to(gy_run_t *r, int64_t now_ms, int64_t step) {
  r->now = now_ms;
  gy_run_state_t st = r->state;
  if (st != GY_RUN_TRAIN && st != GY_RUN_SPIKE_SUSPECTED && st != GY_RUN_PAUSED &&
      st != GY_RUN_HALTED)
    return gy__run_refuse(r, GY_ENOTSUP, "cannot roll back in state %s", gy_run_state_name(st));
  int64_t target = pick_ckpt(r, step, 0);
  if (target < 0)
    return gy__run_refuse(r, GY_ENOENT, "no committed checkpoint at or before step %lld",
                          (long long)step);
  gy_policy_input_t in = {GY_TRIG_OPERATOR, r->last_step + 1, r->last_step + 1, NULL, 0};
  gy_policy_decision_t d;
  int rc = gy_policy_decide(&r->pol, &in, NULL, 0, &d);
  if (rc) return gy__run_refuse(r, rc, "the policy could not decide (bad input)");
  if (st == GY_RUN_PAUSED) r->pause_after = 1;
  if (st == GY_RUN_HALTED) r->hist_base = r->nhist;
  r->dec = d;
  r->target = target;
  r->repair_id++;
  r->repairing = 1;
  abandon_above(r, target);
  char why[160], dtext[256];
  gy_policy_decision_format(&d, dtext, sizeof(dtext));
  snprintf(why, sizeof(why), "operator rollback to step %lld: checkpoint %lld", (long long)step,
           (long long)target);
  extra_t x = {NULL, NULL, 0, dtext};
  return gy__run_move(r, GY_RUN_ROLLBACK, GY_EVENT_ROLLBACK, why, &x);
}

int gy_run_finished(gy_run_t *r, int64_t now_ms) {
  r->now = now_ms;
  gy_run_state_t st = r->state;
  if (st != GY_RUN_TRAIN && st != GY_RUN_SPIKE_SUSPECTED && st != GY_RUN_PAUSED &&
      st != GY_RUN_HALTED)
    return gy__run_refuse(r, GY_ENOTSUP, "cannot finish in state %s", gy_run_state_name(st));
  return gy__run_move(r, GY_RUN_DONE, GY_EVENT_DONE,
                      st == GY_RUN_SPIKE_SUSPECTED ? "the run finished with a spike still suspected"
                                                   : "the run finished",
                      NULL);
}

/* ---------------------------------------- outputs ---------------------------------------- */

const gy_run_event_t *gy_run_events(const gy_run_t *r, size_t *n) {
  if (n) *n = r->nevs;
  return r->evs;
}

const gy_run_action_t *gy_run_actions(const gy_run_t *r, size_t *n) {
  if (n) *n = r->nacts;
  return r->acts;
}

void gy_run_clear(gy_run_t *r) {
  r->nevs = r->nacts = 0;
}

const char *gy_run_errmsg(const gy_run_t *r) {
  return r->errmsg;
}

uint64_t gy_run_dropped(const gy_run_t *r) {
  return r->dropped;
}

/* ----------------------------------------- views ----------------------------------------- */

gy_run_state_t gy_run_state(const gy_run_t *r) {
  return r->state;
}

int64_t gy_run_last_step(const gy_run_t *r) {
  return r->last_step;
}

int64_t gy_run_target(const gy_run_t *r) {
  return r->repairing ? r->target : -1;
}

int64_t gy_run_suspect_step(const gy_run_t *r) {
  return r->state == GY_RUN_SPIKE_SUSPECTED ? r->susp_first : -1;
}

int gy_run_rollbacks(const gy_run_t *r) {
  int n = 0;
  for (int i = 0; i < r->nhist; i++)
    n += r->hist[i].rung > 0;
  return n;
}

int gy_run_restarts(const gy_run_t *r) {
  int n = 0;
  for (int i = 0; i < r->nhist; i++)
    n += r->hist[i].trigger == GY_TRIG_WORKER_LOST;
  return n;
}

const gy_policy_repair_t *gy_run_history(const gy_run_t *r, int *n) {
  if (n) *n = r->nhist;
  return r->hist;
}

const gy_run_ckpt_t *gy_run_checkpoints(const gy_run_t *r, int *n) {
  if (n) *n = r->nckpts;
  return r->ckpts;
}

const gy_policy_decision_t *gy_run_decision(const gy_run_t *r) {
  return r->repairing ? &r->dec : NULL;
}

gy_detect_t *gy_run_detectors(const gy_run_t *r) {
  return r->det;
}
