/*
 * run: the run state machine of the closed loop (DESIGN.md §2): detect, watch, roll back, skip,
 * escalate, resume — as pure logic. Events in (with the time), events and actions out.
 *
 * API, in order: names; create/destroy/set_policy; inputs (started, step, eval, checkpoint,
 * rollback_done, restore_failed, skips_applied, resumed, worker_lost, pause, resume, halt,
 * rollback_to, finished); outputs (events, actions, clear, errmsg); views; the internal
 * state-change function for tests.
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
 * - Only move() writes r->state, and only pairs of the table `allowed` pass; every move appends
 *   exactly one event and fires its state's entry action.
 * - A repair (ROLLBACK, SKIP_WINDOW, RESUME) always has a target that is a committed checkpoint
 *   and a decision; checkpoints above the target are forgotten when the repair starts (they
 *   belong to the timeline being abandoned), and so are suspect intervals above it.
 * - The rollback target of a spike is clean and strictly before the first suspected step.
 * - Bounded: each repair adds one entry to the history, and gy_policy_decide refuses a repair
 *   past the ladder or past max_rollbacks / max_restarts, so no input sequence loops forever.
 * - Figures arriving outside TRAIN, SPIKE_SUSPECTED and PAUSED never reach the detectors.
 */
#include "run.h"

#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"

#define MAX_FIRED 16 /* series remembered per suspicion */

typedef struct {
  int64_t first, last; /* checkpoints with first < step <= last are suspect */
} interval_t;

struct gy_run {
  gy_policy_t pol;
  gy_run_state_t state;
  gy_detect_t *det;
  gy_series_kind_t *kinds; /* kind of each detector series, in creation order */
  int capkinds;
  int64_t last_step;
  int64_t last_eval; /* step of the newest held-out evaluation fed (-1: none) */
  /* the newest step seen when the last repair of bad data (spike, drop, NaN) that changed no
   * knobs began: the steps up to it run again after its rollback, and a jump among them means
   * the repair missed part of the cause (-1: none) */
  int64_t replay_until;
  /* the suspicion (SPIKE_SUSPECTED) */
  int64_t susp_first, susp_last;
  char susp_series[MAX_FIRED][GY_DETECT_NAME_MAX];
  int nsusp_series;
  uint64_t susp_samples[GY_POLICY_MAX_SAMPLES];
  int nsusp_samples;
  char susp_evidence[512];
  gy_verdict_t susp_verdict[GY_RUN_EVIDENCE_MAX];
  int nsusp_verdict;
  /* checkpoints and suspect intervals */
  gy_run_ckpt_t *ckpts;
  int nckpts, capckpts;
  interval_t *ivals;
  int nivals, capivals;
  /* repairs */
  gy_policy_repair_t *hist;
  int nhist, caphist;
  int hist_base; /* the escalation sees hist[hist_base..]: an operator resume starts it over */
  int repairing;
  gy_policy_decision_t dec;
  int64_t target;
  uint64_t repair_id;
  int pause_after; /* a pause asked during a repair (or a repair of a paused run) */
  /* outputs */
  gy_run_event_t *evs;
  size_t nevs, capevs;
  gy_run_action_t *acts;
  size_t nacts, capacts;
  uint64_t event_id;
  int64_t now; /* the current input's time */
  char errmsg[256];
};

/* Evidence and decision attached to the event of a move. */
typedef struct {
  const char *evidence;
  const gy_verdict_t *v;
  int nv;
  const char *decision;
} extra_t;

/* ---------------------------------------- names ---------------------------------------- */

static const char *const state_names[] = {
#define GY_RUN_STATE_NAME(name) #name,
    GY_RUN_STATE_MAP(GY_RUN_STATE_NAME)
#undef GY_RUN_STATE_NAME
};

const char *gy_run_state_name(gy_run_state_t s) {
  return (s >= 0 && s < GY_RUN_NSTATES) ? state_names[s] : "?";
}

const char *gy_run_act_name(gy_run_act_kind_t k) {
  static const char *const names[] = {"ROLLBACK", "APPLY", "RESUME", "PAUSE",
                                      "HALT",     "ALERT", "DONE"};
  return (k >= 0 && k <= GY_RUN_ACT_DONE) ? names[k] : "?";
}

/* ---------------------------------------- outputs ---------------------------------------- */

static int grow(void **p, size_t *cap, size_t need, size_t size) {
  if (need <= *cap) return 0;
  size_t c = *cap ? *cap : 8;
  while (c < need)
    c *= 2;
  void *q = realloc(*p, c * size);
  if (!q) return GY_ENOMEM;
  *p = q;
  *cap = c;
  return 0;
}

/* Appends an event; NULL when out of memory (the event is lost, the state stays consistent). */
static gy_run_event_t *event(gy_run_t *r, const char *kind, int64_t step, gy_run_state_t from,
                             gy_run_state_t to, const char *reason, const extra_t *x) {
  if (grow((void **)&r->evs, &r->capevs, r->nevs + 1, sizeof(*r->evs))) return NULL;
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
  if (grow((void **)&r->acts, &r->capacts, r->nacts + 1, sizeof(*r->acts))) return NULL;
  gy_run_action_t *a = &r->acts[r->nacts++];
  memset(a, 0, sizeof(*a));
  a->kind = k;
  a->step = step;
  return a;
}

static void alert(gy_run_t *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void alert(gy_run_t *r, const char *fmt, ...) {
  gy_run_action_t *a = action(r, GY_RUN_ACT_ALERT, r->last_step);
  if (!a) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(a->msg, sizeof(a->msg), fmt, ap);
  va_end(ap);
}

static int refuse(gy_run_t *r, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int refuse(gy_run_t *r, int rc, const char *fmt, ...) {
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
 * ended. Out of memory loses the interval (those checkpoints would count as clean). */
static void keep_suspect(gy_run_t *r) {
  size_t cap = (size_t)r->capivals;
  if (r->susp_first < 0 || grow((void **)&r->ivals, &cap, (size_t)r->nivals + 1, sizeof(*r->ivals)))
    return;
  r->capivals = (int)cap;
  r->ivals[r->nivals++] = (interval_t){r->susp_first, r->last_step + 1};
}

static void clear_repair(gy_run_t *r) {
  r->repairing = 0;
  r->target = -1;
  memset(&r->dec, 0, sizeof(r->dec));
}

/* The one function that changes state: checks the pair, records the event, runs the exit
 * action of the old state and the entry action of the new one. */
static int move(gy_run_t *r, gy_run_state_t to, const char *kind, const char *reason,
                const extra_t *x) {
  gy_run_state_t from = r->state;
  if (!gy__run_transition_allowed(from, to))
    return refuse(r, GY_EINVAL, "illegal state transition %s -> %s", gy_run_state_name(from),
                  gy_run_state_name(to));
  int64_t step = r->last_step;
  if (to == GY_RUN_ROLLBACK || to == GY_RUN_SKIP_WINDOW || to == GY_RUN_RESUME) step = r->target;
  event(r, kind, step, from, to, reason, x);
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
    alert(r, "run halted at step %lld: %s", (long long)r->last_step, reason ? reason : "");
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

int gy__run_transition(gy_run_t *r, int64_t now_ms, gy_run_state_t to, const char *kind,
                       const char *reason) {
  r->now = now_ms;
  return move(r, to, kind ? kind : "forced", reason, NULL);
}

/* ---------------------------------------- create ---------------------------------------- */

int gy_run_create(gy_run_t **out, const gy_policy_t *policy) {
  gy_run_t *r = NULL;
  int rc = GY_ENOMEM;
  if (!out) return GY_EINVAL;
  if (policy && gy_policy_check(policy, NULL, 0)) return GY_EINVAL;
  if (!(r = calloc(1, sizeof(*r)))) goto err;
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
  free(r->kinds);
  free(r->ckpts);
  free(r->ivals);
  free(r->hist);
  free(r->evs);
  free(r->acts);
  free(r);
}

int gy_run_set_policy(gy_run_t *r, const gy_policy_t *policy) {
  char why[200];
  if (!policy) return refuse(r, GY_EINVAL, "no policy");
  if (gy_policy_check(policy, why, sizeof(why)))
    return refuse(r, GY_EINVAL, "policy refused: %s", why);
  /* Out of memory part-way leaves the earlier series with the new thresholds (harmless: they
   * passed the check) and the old policy in force for new series and decisions. */
  for (int i = 0; i < gy_detect_count(r->det); i++) {
    int rc = gy_series_set_opts(gy_detect_at(r->det, i), &policy->detect[r->kinds[i]]);
    if (rc) return refuse(r, rc, "out of memory resizing a detector window");
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

static int add_history(gy_run_t *r, int64_t step, int rung, gy_trigger_t t) {
  size_t cap = (size_t)r->caphist;
  if (grow((void **)&r->hist, &cap, (size_t)r->nhist + 1, sizeof(*r->hist))) return GY_ENOMEM;
  r->caphist = (int)cap;
  r->hist[r->nhist++] = (gy_policy_repair_t){.step = step, .rung = rung, .trigger = t};
  return 0;
}

static int halt(gy_run_t *r, const char *reason, const extra_t *x) {
  return move(r, GY_RUN_HALTED, "halted", reason, x);
}

/* Starts a repair for trigger t over the suspected steps [first, last], blaming samples;
 * ends in ROLLBACK, or in HALTED when the policy refuses or no clean checkpoint exists. */
static int repair(gy_run_t *r, gy_trigger_t t, int64_t first, int64_t last, const uint64_t *samples,
                  int nsamples, const char *evidence, const gy_verdict_t *v, int nv) {
  gy_policy_input_t in = {t, first, last, samples, nsamples};
  gy_policy_decision_t d;
  char dtext[256], why[400];
  int rc = gy_policy_decide(&r->pol, &in, r->hist + r->hist_base, r->nhist - r->hist_base, &d);
  if (rc) return refuse(r, rc, "the policy could not decide (bad input)");
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
  if ((rc = add_history(r, first, d.rung, t))) return refuse(r, rc, "out of memory");
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
  if ((rc = move(r, GY_RUN_ROLLBACK, "rollback", why, &x))) return rc;
  if (d.rung >= 2)
    alert(r, "repeated spike near step %lld: escalated to rung %d of %d (%s)", (long long)first,
          d.rung, r->pol.nrungs, dtext);
  return 0;
}

/* ----------------------------------------- inputs ----------------------------------------- */

int gy_run_started(gy_run_t *r, int64_t now_ms, int64_t start_step) {
  r->now = now_ms;
  if (start_step < 0) return refuse(r, GY_EINVAL, "start step %lld < 0", (long long)start_step);
  if (r->state != GY_RUN_INIT)
    return refuse(r, GY_ENOTSUP, "started in state %s", gy_run_state_name(r->state));
  r->last_step = start_step - 1;
  char why[96];
  snprintf(why, sizeof(why), "the gang formed; training from step %lld", (long long)start_step);
  return move(r, GY_RUN_TRAIN, "started", why, NULL);
}

static int is_loss(gy_series_kind_t k) {
  return k == GY_SERIES_LOSS || k == GY_SERIES_CHANNEL_LOSS;
}

/* The channel of a "loss/<channel>" series, or NULL. */
static const char *channel_of(const char *series, gy_series_kind_t k) {
  const char *slash = strchr(series, '/');
  return (k == GY_SERIES_CHANNEL_LOSS && slash) ? slash + 1 : NULL;
}

/* Adds the samples of src (those of the blamed channels when any of them matches) to the
 * suspicion's list. */
static void blame(gy_run_t *r, const gy_run_sample_t *src, int n, const char *const *chans,
                  int nchans) {
  int matched = 0;
  for (int i = 0; i < n && nchans; i++)
    for (int c = 0; c < nchans; c++)
      matched += src[i].channel && !strcmp(src[i].channel, chans[c]);
  for (int i = 0; i < n; i++) {
    int ok = !matched;
    for (int c = 0; c < nchans && !ok; c++)
      ok = src[i].channel && !strcmp(src[i].channel, chans[c]);
    if (!ok) continue;
    int dup = 0;
    for (int j = 0; j < r->nsusp_samples && !dup; j++)
      dup = r->susp_samples[j] == src[i].id;
    if (!dup && r->nsusp_samples < GY_POLICY_MAX_SAMPLES)
      r->susp_samples[r->nsusp_samples++] = src[i].id;
  }
}

static void remember_series(gy_run_t *r, const char *name) {
  for (int i = 0; i < r->nsusp_series; i++)
    if (!strcmp(r->susp_series[i], name)) return;
  if (r->nsusp_series < MAX_FIRED)
    snprintf(r->susp_series[r->nsusp_series++], GY_DETECT_NAME_MAX, "%s", name);
}

/* Appends verdict text to the suspicion's evidence and keeps the first few structured. */
static void add_evidence(gy_run_t *r, const gy_verdict_t *v) {
  char line[200];
  gy_verdict_format(v, line, sizeof(line));
  size_t o = strlen(r->susp_evidence);
  if (o + 3 < sizeof(r->susp_evidence))
    snprintf(r->susp_evidence + o, sizeof(r->susp_evidence) - o, "%s%s", o ? "; " : "", line);
  if (r->nsusp_verdict < GY_RUN_EVIDENCE_MAX) r->susp_verdict[r->nsusp_verdict++] = *v;
}

/* Pushes the figures of s through the detectors; out[i] is the verdict of s->values[i]. */
static int detect_all(gy_run_t *r, const gy_run_step_t *s, gy_verdict_t *out) {
  for (int i = 0; i < s->nvalues; i++) {
    const gy_run_value_t *v = &s->values[i];
    /* room for the kind of a series the push may create (no name lookup here: the push does
     * it, in O(1) for the usual order) */
    int before = gy_detect_count(r->det);
    size_t cap = (size_t)r->capkinds;
    if (grow((void **)&r->kinds, &cap, (size_t)before + 1, sizeof(*r->kinds))) return GY_ENOMEM;
    r->capkinds = (int)cap;
    int rc = gy_detect_push(r->det, v->series, &r->pol.detect[v->kind], s->step, v->value, &out[i]);
    if (rc < 0) return rc;
    if (gy_detect_count(r->det) > before) r->kinds[before] = v->kind;
  }
  return 0;
}

/* Every series that fired in the suspicion is back near its baseline in this step. */
static int recovered(const gy_run_t *r, const gy_run_step_t *s, const gy_verdict_t *v) {
  if (!r->nsusp_series) return 0;
  for (int k = 0; k < r->nsusp_series; k++) {
    int ok = 0;
    for (int i = 0; i < s->nvalues && !ok; i++) {
      if (strcmp(s->values[i].series, r->susp_series[k])) continue;
      double tol = r->pol.recover_tolerance * v[i].threshold;
      ok = !v[i].fired && fabs(v[i].value - v[i].median) <= tol;
    }
    if (!ok) return 0;
  }
  return 1;
}

int gy_run_step(gy_run_t *r, int64_t now_ms, const gy_run_step_t *s) {
  r->now = now_ms;
  if (!s || s->nvalues < 0 || (s->nvalues && !s->values) || s->ntop < 0 || (s->ntop && !s->top) ||
      s->nbottom < 0 || (s->nbottom && !s->bottom) || s->step < 0)
    return refuse(r, GY_EINVAL, "malformed step figures");
  for (int i = 0; i < s->nvalues; i++) {
    const gy_run_value_t *v = &s->values[i];
    if (!v->series || !*v->series || strlen(v->series) >= GY_DETECT_NAME_MAX || v->kind < 0 ||
        v->kind >= GY_SERIES_NKINDS)
      return refuse(r, GY_EINVAL, "step %lld: figure %d has a bad series name or kind",
                    (long long)s->step, i);
  }
  gy_run_state_t st = r->state;
  if (st != GY_RUN_TRAIN && st != GY_RUN_SPIKE_SUSPECTED && st != GY_RUN_PAUSED) return 0;
  if (s->step <= r->last_step)
    return refuse(r, GY_ERANGE, "step %lld arrived after step %lld", (long long)s->step,
                  (long long)r->last_step);

  gy_verdict_t *v = calloc((size_t)s->nvalues + 1, sizeof(*v));
  if (!v) return refuse(r, GY_ENOMEM, "out of memory");
  int rc = detect_all(r, s, v);
  if (rc) {
    free(v);
    return refuse(r, rc, "out of memory creating a detector");
  }
  r->last_step = s->step;

  /* Classify. */
  int nonfinite = s->nonfinite, drop = 0, jump = 0;
  const char *drop_ch[MAX_FIRED], *jump_ch[MAX_FIRED];
  int ndrop_ch = 0, njump_ch = 0;
  char ev[512] = "";
  gy_verdict_t fired[GY_RUN_EVIDENCE_MAX];
  int nfired = 0;
  for (int i = 0; i < s->nvalues; i++) {
    if (!v[i].fired) continue;
    gy_series_kind_t k = s->values[i].kind;
    if (r->pol.detect[k].alert_only && v[i].dir != GY_DETECT_NONFINITE) {
      /* Tell a human once per streak, when it has lasted `sustain` values; never repair. */
      if (gy_series_streak(gy_detect_get(r->det, s->values[i].series)) ==
          (r->pol.detect[k].sustain > 1 ? r->pol.detect[k].sustain : 1)) {
        char line[200];
        gy_verdict_format(&v[i], line, sizeof(line));
        extra_t x = {line, &v[i], 1, NULL};
        event(r, "anomaly", s->step, st, st, "an alert-only series left its baseline", &x);
        if (s->values[i].rank >= 0)
          alert(r, "anomaly on rank %d: %s", s->values[i].rank, line);
        else
          alert(r, "anomaly: %s", line);
      }
      continue;
    }
    const char *ch = channel_of(s->values[i].series, k);
    if (v[i].dir == GY_DETECT_NONFINITE) {
      nonfinite = 1;
    } else if (v[i].dir == GY_DETECT_DROP && is_loss(k)) {
      drop = 1;
      if (ch && ndrop_ch < MAX_FIRED) drop_ch[ndrop_ch++] = ch;
    } else {
      jump = 1;
      if (ch && njump_ch < MAX_FIRED) jump_ch[njump_ch++] = ch;
    }
    if (st == GY_RUN_SPIKE_SUSPECTED || st == GY_RUN_TRAIN) {
      remember_series(r, s->values[i].series);
      add_evidence(r, &v[i]);
    }
    if (nfired < GY_RUN_EVIDENCE_MAX) fired[nfired++] = v[i];
    char line[200];
    gy_verdict_format(&v[i], line, sizeof(line));
    size_t o = strlen(ev);
    if (o + 3 < sizeof(ev)) snprintf(ev + o, sizeof(ev) - o, "%s%s", o ? "; " : "", line);
  }
  if (s->nonfinite) {
    const char *line = "a rank reported non-finite gradients";
    size_t o = strlen(ev);
    if (o + 3 < sizeof(ev)) snprintf(ev + o, sizeof(ev) - o, "%s%s", o ? "; " : "", line);
    if (st != GY_RUN_PAUSED) {
      o = strlen(r->susp_evidence);
      if (o + 3 < sizeof(r->susp_evidence))
        snprintf(r->susp_evidence + o, sizeof(r->susp_evidence) - o, "%s%s", o ? "; " : "", line);
    }
  }
  /* Attribution: drops blame the lowest-loss samples, everything else the highest. */
  if (st != GY_RUN_PAUSED) {
    if (drop)
      blame(r, s->nbottom ? s->bottom : s->top, s->nbottom ? s->nbottom : s->ntop, drop_ch,
            ndrop_ch);
    if (jump || nonfinite) blame(r, s->top, s->ntop, jump_ch, njump_ch);
  }

  switch (st) {
  case GY_RUN_TRAIN:
    if (nonfinite || drop) {
      rc =
          repair(r, nonfinite ? GY_TRIG_NONFINITE : GY_TRIG_DROP, s->step, s->step, r->susp_samples,
                 r->nsusp_samples, r->susp_evidence, r->susp_verdict, r->nsusp_verdict);
    } else if (jump && s->step <= r->replay_until) {
      /* a spike again in the steps replayed after a repair of bad data: that repair missed
       * part of it (e.g. poisoned samples that slid into the step after the skipped ones); no
       * watching — the escalation takes over at once */
      rc = repair(r, GY_TRIG_SPIKE_PERSISTS, s->step, s->step, r->susp_samples, r->nsusp_samples,
                  r->susp_evidence, r->susp_verdict, r->nsusp_verdict);
    } else if (jump && r->pol.observe_steps == 0) {
      rc = repair(r, GY_TRIG_SPIKE, s->step, s->step, r->susp_samples, r->nsusp_samples,
                  r->susp_evidence, r->susp_verdict, r->nsusp_verdict);
    } else if (jump) {
      char why[160];
      snprintf(why, sizeof(why), "spike suspected at step %lld: watching %d more steps",
               (long long)s->step, r->pol.observe_steps);
      extra_t x = {r->susp_evidence, r->susp_verdict, r->nsusp_verdict, "RECOVER_WATCH"};
      /* move() keeps the suspicion gathered above when it enters SPIKE_SUSPECTED. */
      if (!(rc = move(r, GY_RUN_SPIKE_SUSPECTED, "spike_suspected", why, &x)))
        r->susp_first = r->susp_last = s->step;
    }
    break;
  case GY_RUN_SPIKE_SUSPECTED:
    if (nonfinite || drop) {
      rc = repair(r, nonfinite ? GY_TRIG_NONFINITE : GY_TRIG_DROP, r->susp_first, s->step,
                  r->susp_samples, r->nsusp_samples, r->susp_evidence, r->susp_verdict,
                  r->nsusp_verdict);
    } else if (!jump && recovered(r, s, v)) {
      char why[160];
      snprintf(why, sizeof(why),
               "recovered spike: suspected at step %lld, back within %g x threshold of the "
               "baseline at step %lld",
               (long long)r->susp_first, r->pol.recover_tolerance, (long long)s->step);
      extra_t x = {r->susp_evidence, r->susp_verdict, r->nsusp_verdict, "none"};
      rc = move(r, GY_RUN_TRAIN, "recovered_spike", why, &x);
    } else {
      if (jump) r->susp_last = s->step;
      if (s->step - r->susp_first >= r->pol.observe_steps)
        rc = repair(r, GY_TRIG_SPIKE_PERSISTS, r->susp_first, r->susp_last, r->susp_samples,
                    r->nsusp_samples, r->susp_evidence, r->susp_verdict, r->nsusp_verdict);
    }
    break;
  case GY_RUN_PAUSED:
    if (nonfinite) {
      /* Roll back now (the parameters are broken) and pause again afterwards. */
      r->pause_after = 1;
      rc = repair(r, GY_TRIG_NONFINITE, s->step, s->step, NULL, 0, ev, fired, nfired);
    } else if (nfired) {
      extra_t x = {ev, fired, nfired, NULL};
      event(r, "anomaly", s->step, st, st, "a spike while paused: no repair until resumed", &x);
    }
    break;
  default:
    break;
  }
  free(v);
  return rc;
}

/* Marks the checkpoint of `step` suspect: an interval (step - 1, step], and the flag of the
 * checkpoint when it is already committed. Out of memory loses the interval. */
static void suspect_one(gy_run_t *r, int64_t step) {
  for (int i = 0; i < r->nckpts; i++)
    if (r->ckpts[i].step == step) r->ckpts[i].clean = 0;
  size_t cap = (size_t)r->capivals;
  if (grow((void **)&r->ivals, &cap, (size_t)r->nivals + 1, sizeof(*r->ivals))) return;
  r->capivals = (int)cap;
  r->ivals[r->nivals++] = (interval_t){step - 1, step};
}

int gy_run_eval(gy_run_t *r, int64_t now_ms, int64_t step, const gy_run_value_t *values, int n) {
  r->now = now_ms;
  if (n < 0 || (n && !values) || step < 0)
    return refuse(r, GY_EINVAL, "malformed evaluation figures");
  for (int i = 0; i < n; i++) {
    const gy_run_value_t *v = &values[i];
    if (!v->series || !*v->series || strlen(v->series) >= GY_DETECT_NAME_MAX || v->kind < 0 ||
        v->kind >= GY_SERIES_NKINDS)
      return refuse(r, GY_EINVAL,
                    "evaluation at step %lld: figure %d has a bad series name or kind",
                    (long long)step, i);
  }
  gy_run_state_t st = r->state;
  if (st != GY_RUN_TRAIN && st != GY_RUN_SPIKE_SUSPECTED && st != GY_RUN_PAUSED) return 0;
  if (step <= r->last_eval)
    return refuse(r, GY_ERANGE, "evaluation at step %lld arrived after the one at step %lld",
                  (long long)step, (long long)r->last_eval);
  gy_verdict_t *v = calloc((size_t)n + 1, sizeof(*v));
  if (!v) return refuse(r, GY_ENOMEM, "out of memory");
  gy_run_step_t in = {.step = step, .values = values, .nvalues = n};
  int rc = detect_all(r, &in, v);
  if (rc) {
    free(v);
    return refuse(r, rc, "out of memory creating a detector");
  }
  r->last_eval = step;
  char ev[512] = "";
  gy_verdict_t fired[GY_RUN_EVIDENCE_MAX];
  int nfired = 0, nonfinite = 0, regress = 0;
  for (int i = 0; i < n; i++) {
    if (!v[i].fired) continue;
    if (v[i].dir == GY_DETECT_NONFINITE)
      nonfinite = 1;
    else if (r->pol.detect[values[i].kind].alert_only &&
             gy_series_streak(gy_detect_get(r->det, values[i].series)) <
                 (r->pol.detect[values[i].kind].sustain > 1 ? r->pol.detect[values[i].kind].sustain
                                                            : 1))
      continue; /* alert-only: told once its streak has lasted `sustain` evaluations */
    else
      regress |= !r->pol.detect[values[i].kind].alert_only ? 1 : 2;
    if (nfired < GY_RUN_EVIDENCE_MAX) fired[nfired++] = v[i];
    char line[200];
    gy_verdict_format(&v[i], line, sizeof(line));
    size_t o = strlen(ev);
    if (o + 3 < sizeof(ev)) snprintf(ev + o, sizeof(ev) - o, "%s%s", o ? "; " : "", line);
  }
  free(v);
  if (nonfinite) {
    /* The parameters are broken: roll back now (and pause again afterwards when paused). */
    int64_t first = st == GY_RUN_SPIKE_SUSPECTED && r->susp_first >= 0 && r->susp_first < step
                        ? r->susp_first
                        : step;
    if (st == GY_RUN_PAUSED) r->pause_after = 1;
    return repair(r, GY_TRIG_NONFINITE, first, step, NULL, 0, ev, fired, nfired);
  }
  if (!nfired) return 0;
  extra_t x = {ev, fired, nfired, NULL};
  if (regress & 1) {
    suspect_one(r, step);
    char why[200];
    snprintf(why, sizeof(why),
             "held-out figures got worse at step %lld: its checkpoint is suspect (never restored "
             "by a repair)",
             (long long)step);
    event(r, "eval_regression", step, st, st, why, &x);
    alert(r, "held-out regression at step %lld: %s", (long long)step, ev);
  } else {
    event(r, "anomaly", step, st, st, "an alert-only held-out series left its baseline", &x);
    alert(r, "anomaly: %s", ev);
  }
  return 0;
}

int gy_run_checkpoint(gy_run_t *r, int64_t now_ms, int64_t step, int clean, int *clean_out) {
  r->now = now_ms;
  if (step < 0) return refuse(r, GY_EINVAL, "checkpoint step %lld < 0", (long long)step);
  if (r->repairing && r->state != GY_RUN_HALTED && step > r->target)
    return refuse(r, GY_ERANGE,
                  "checkpoint %lld is stale: the run is rolling back to checkpoint %lld",
                  (long long)step, (long long)r->target);
  int c = clean && !is_suspect(r, step);
  size_t cap = (size_t)r->capckpts;
  if (grow((void **)&r->ckpts, &cap, (size_t)r->nckpts + 1, sizeof(*r->ckpts)))
    return refuse(r, GY_ENOMEM, "out of memory");
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
  event(r, "checkpoint", step, r->state, r->state, why, NULL);
  if (clean_out) *clean_out = c;
  return 0;
}

int gy_run_rollback_done(gy_run_t *r, int64_t now_ms, int64_t step) {
  r->now = now_ms;
  if (r->state != GY_RUN_ROLLBACK)
    return refuse(r, GY_ENOTSUP, "rollback done in state %s", gy_run_state_name(r->state));
  if (step != r->target)
    return refuse(r, GY_EINVAL, "rollback done for checkpoint %lld, but the target is %lld",
                  (long long)step, (long long)r->target);
  const gy_policy_decision_t *d = &r->dec;
  char why[160];
  if (d->nsamples || d->skip_steps || d->knobs.set) {
    snprintf(why, sizeof(why), "every rank restored checkpoint %lld; applying the skips and knobs",
             (long long)step);
    return move(r, GY_RUN_SKIP_WINDOW, "skip", why, NULL);
  }
  snprintf(why, sizeof(why), "every rank restored checkpoint %lld; nothing to skip",
           (long long)step);
  return move(r, GY_RUN_RESUME, "resume", why, NULL);
}

int gy_run_restore_failed(gy_run_t *r, int64_t now_ms, int64_t step, const char *why) {
  r->now = now_ms;
  if (r->state != GY_RUN_ROLLBACK)
    return refuse(r, GY_ENOTSUP, "restore failed in state %s", gy_run_state_name(r->state));
  if (step != r->target)
    return refuse(r, GY_EINVAL, "restore failed for checkpoint %lld, but the target is %lld",
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
  return move(r, GY_RUN_ROLLBACK, "rollback", text, NULL);
}

int gy_run_skips_applied(gy_run_t *r, int64_t now_ms) {
  r->now = now_ms;
  if (r->state != GY_RUN_SKIP_WINDOW)
    return refuse(r, GY_ENOTSUP, "skips applied in state %s", gy_run_state_name(r->state));
  return move(r, GY_RUN_RESUME, "resume", "every rank applied the skips and knob changes", NULL);
}

int gy_run_resumed(gy_run_t *r, int64_t now_ms) {
  r->now = now_ms;
  if (r->state != GY_RUN_RESUME)
    return refuse(r, GY_ENOTSUP, "resumed in state %s", gy_run_state_name(r->state));
  char why[128];
  snprintf(why, sizeof(why), "training restarted from checkpoint %lld%s", (long long)r->target,
           r->pause_after ? "; paused as the operator asked" : "");
  if (r->pause_after) return move(r, GY_RUN_PAUSED, "paused", why, NULL);
  return move(r, GY_RUN_TRAIN, "resumed", why, NULL);
}

int gy_run_worker_lost(gy_run_t *r, int64_t now_ms, int rank, const char *why) {
  r->now = now_ms;
  char text[256];
  snprintf(text, sizeof(text), "rank %d lost%s%s", rank, why ? ": " : "", why ? why : "");
  gy_run_state_t st = r->state;
  if (st == GY_RUN_INIT || st == GY_RUN_HALTED || st == GY_RUN_DONE) {
    event(r, "worker_lost", r->last_step, st, st, text, NULL);
    return 0;
  }
  if (st == GY_RUN_PAUSED) r->pause_after = 1;
  if (!r->repairing)
    return repair(r, GY_TRIG_WORKER_LOST, r->last_step + 1, r->last_step + 1, NULL, 0, text, NULL,
                  0);
  /* A repair is in progress: redo its rollback (same target, same skips and knobs: applying
   * them twice is harmless), counted as a restart. */
  gy_policy_input_t in = {GY_TRIG_WORKER_LOST, r->last_step + 1, r->last_step + 1, NULL, 0};
  gy_policy_decision_t d;
  int rc = gy_policy_decide(&r->pol, &in, r->hist + r->hist_base, r->nhist - r->hist_base, &d);
  if (rc) return refuse(r, rc, "the policy could not decide (bad input)");
  if (d.action == GY_ACTION_HALT) return halt(r, d.reason, NULL);
  if ((rc = add_history(r, r->last_step + 1, 0, GY_TRIG_WORKER_LOST)))
    return refuse(r, rc, "out of memory");
  char full[400];
  snprintf(full, sizeof(full), "%s during a repair: roll back to checkpoint %lld again", text,
           (long long)r->target);
  return move(r, GY_RUN_ROLLBACK, "rollback", full, NULL);
}

int gy_run_pause(gy_run_t *r, int64_t now_ms) {
  r->now = now_ms;
  gy_run_state_t st = r->state;
  if (st == GY_RUN_TRAIN || st == GY_RUN_SPIKE_SUSPECTED)
    return move(r, GY_RUN_PAUSED, "paused",
                st == GY_RUN_TRAIN ? "operator pause" : "operator pause (the suspicion is dropped)",
                NULL);
  if (st == GY_RUN_ROLLBACK || st == GY_RUN_SKIP_WINDOW || st == GY_RUN_RESUME) {
    r->pause_after = 1;
    event(r, "deferred", r->last_step, st, st,
          "operator pause: the run pauses when the repair "
          "in progress is done",
          NULL);
    return 0;
  }
  return refuse(r, GY_ENOTSUP, "cannot pause in state %s", gy_run_state_name(st));
}

int gy_run_resume(gy_run_t *r, int64_t now_ms) {
  r->now = now_ms;
  gy_run_state_t st = r->state;
  if (st == GY_RUN_PAUSED) return move(r, GY_RUN_TRAIN, "resumed", "operator resume", NULL);
  if (st == GY_RUN_HALTED) {
    r->hist_base = r->nhist; /* a human decided: the escalation starts over */
    return move(r, GY_RUN_TRAIN, "resumed",
                "operator resume after a halt; the escalation "
                "starts over",
                NULL);
  }
  if (r->pause_after &&
      (st == GY_RUN_ROLLBACK || st == GY_RUN_SKIP_WINDOW || st == GY_RUN_RESUME)) {
    r->pause_after = 0;
    event(r, "deferred", r->last_step, st, st, "operator resume: the deferred pause is cancelled",
          NULL);
    return 0;
  }
  return refuse(r, GY_ENOTSUP, "cannot resume in state %s", gy_run_state_name(st));
}

int gy_run_halt(gy_run_t *r, int64_t now_ms, const char *why) {
  r->now = now_ms;
  if (r->state == GY_RUN_HALTED || r->state == GY_RUN_DONE)
    return refuse(r, GY_ENOTSUP, "cannot halt in state %s", gy_run_state_name(r->state));
  char text[256];
  snprintf(text, sizeof(text), "operator halt%s%s", why ? ": " : "", why ? why : "");
  return halt(r, text, NULL);
}

int gy_run_rollback_to(gy_run_t *r, int64_t now_ms, int64_t step) {
  r->now = now_ms;
  gy_run_state_t st = r->state;
  if (st != GY_RUN_TRAIN && st != GY_RUN_SPIKE_SUSPECTED && st != GY_RUN_PAUSED &&
      st != GY_RUN_HALTED)
    return refuse(r, GY_ENOTSUP, "cannot roll back in state %s", gy_run_state_name(st));
  int64_t target = pick_ckpt(r, step, 0);
  if (target < 0)
    return refuse(r, GY_ENOENT, "no committed checkpoint at or before step %lld", (long long)step);
  gy_policy_input_t in = {GY_TRIG_OPERATOR, r->last_step + 1, r->last_step + 1, NULL, 0};
  gy_policy_decision_t d;
  int rc = gy_policy_decide(&r->pol, &in, NULL, 0, &d);
  if (rc) return refuse(r, rc, "the policy could not decide (bad input)");
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
  return move(r, GY_RUN_ROLLBACK, "rollback", why, &x);
}

int gy_run_finished(gy_run_t *r, int64_t now_ms) {
  r->now = now_ms;
  gy_run_state_t st = r->state;
  if (st != GY_RUN_TRAIN && st != GY_RUN_SPIKE_SUSPECTED && st != GY_RUN_PAUSED &&
      st != GY_RUN_HALTED)
    return refuse(r, GY_ENOTSUP, "cannot finish in state %s", gy_run_state_name(st));
  return move(r, GY_RUN_DONE, "done",
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

/* ------------------------------------ save and load ------------------------------------ */

char *gy_run_save(const gy_run_t *r) {
  json_t *o = json_object(), *series = json_array(), *reps = json_array();
  double *vals = NULL;
  int maxw = 0;
  for (int i = 0; i < gy_detect_count(r->det); i++) {
    const gy_series_t *s = gy_detect_at(r->det, i);
    if (gy_series_opts(s)->window > maxw) maxw = gy_series_opts(s)->window;
  }
  if (!(vals = malloc((size_t)(maxw ? maxw : 1) * sizeof(*vals)))) goto oom;
  for (int i = 0; i < gy_detect_count(r->det); i++) {
    const gy_series_t *s = gy_detect_at(r->det, i);
    int n = gy_series_values(s, vals, maxw);
    json_t *a = json_array();
    for (int k = 0; k < n && k < maxw; k++)
      json_array_append_new(a, json_real(vals[k]));
    json_array_append_new(series, json_pack("{s:s, s:i, s:o}", "name", gy_series_name(s), "kind",
                                            (int)r->kinds[i], "values", a));
  }
  for (int i = r->hist_base; i < r->nhist; i++)
    json_array_append_new(reps, json_pack("[I, i, i]", (json_int_t)r->hist[i].step, r->hist[i].rung,
                                          (int)r->hist[i].trigger));
  json_object_set_new(o, "series", series);
  json_object_set_new(o, "repairs", reps);
  json_object_set_new(o, "replay_until", json_integer((json_int_t)r->replay_until));
  free(vals);
  char *text = json_dumps(o, JSON_COMPACT);
  json_decref(o);
  return text;
oom:
  json_decref(o);
  json_decref(series);
  json_decref(reps);
  return NULL;
}

int gy_run_load(gy_run_t *r, const char *text, int what, char *errmsg, size_t errlen) {
  json_error_t je;
  json_t *o = json_loads(text ? text : "", 0, &je), *series, *reps;
  double *vals = NULL;
  int rc = GY_EINVAL;
  if (!o || json_unpack(o, "{s:o, s:o}", "series", &series, "repairs", &reps) ||
      !json_is_array(series) || !json_is_array(reps)) {
    gy_errmsg(errmsg, errlen, "run snapshot: not one (%s)", o ? "fields" : je.text);
    goto out;
  }
  size_t i;
  json_t *e;
  if (!(what & GY_RUN_LOAD_BASELINES)) series = NULL;
  if (!(what & GY_RUN_LOAD_REPAIRS)) reps = NULL;
  json_array_foreach(series, i, e) {
    const char *name;
    int kind;
    json_t *a;
    if (json_unpack(e, "{s:s, s:i, s:o}", "name", &name, "kind", &kind, "values", &a) ||
        !json_is_array(a) || kind < 0 || kind >= GY_SERIES_NKINDS)
      continue;
    int before = gy_detect_count(r->det);
    size_t cap = (size_t)r->capkinds;
    if (grow((void **)&r->kinds, &cap, (size_t)before + 1, sizeof(*r->kinds))) {
      rc = GY_ENOMEM;
      goto out;
    }
    r->capkinds = (int)cap;
    gy_series_t *s = gy_detect_ensure(r->det, name, &r->pol.detect[kind]);
    if (!s) continue;
    if (gy_detect_count(r->det) > before) r->kinds[before] = (gy_series_kind_t)kind;
    size_t n = json_array_size(a);
    free(vals);
    if (!(vals = malloc((n ? n : 1) * sizeof(*vals)))) {
      rc = GY_ENOMEM;
      goto out;
    }
    for (size_t k = 0; k < n; k++)
      vals[k] = json_number_value(json_array_get(a, k));
    gy_series_set_values(s, vals, (int)n);
  }
  json_array_foreach(reps, i, e) {
    json_int_t step;
    int rung, trig;
    if (json_unpack(e, "[I, i, i]", &step, &rung, &trig)) continue;
    size_t cap = (size_t)r->caphist;
    if (grow((void **)&r->hist, &cap, (size_t)r->nhist + 1, sizeof(*r->hist))) {
      rc = GY_ENOMEM;
      goto out;
    }
    r->caphist = (int)cap;
    r->hist[r->nhist++] =
        (gy_policy_repair_t){.step = step, .rung = rung, .trigger = (gy_trigger_t)trig};
  }
  if (what & GY_RUN_LOAD_REPAIRS) {
    json_t *ru = json_object_get(o, "replay_until"); /* absent in older snapshots */
    if (json_is_integer(ru) && json_integer_value(ru) > r->replay_until)
      r->replay_until = (int64_t)json_integer_value(ru);
  }
  rc = 0;
out:
  free(vals);
  json_decref(o);
  return rc;
}
