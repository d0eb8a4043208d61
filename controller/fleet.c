/*
 * fleet: the controller's pure logic (DESIGN.md §2-§4, control-plane design): no I/O, no clock.
 *
 * API, in order: create/destroy; inputs join, join_cancel, hello, report; outputs
 * actions/actions_clear/errmsg; read-only views; the internal state-change function for tests.
 * The directives (ack, command, rollback, and the pipeline that sends them) are in
 * fleet_directive.c; liveness (heartbeat, progress, session_closed, tick, and losing a rank) in
 * fleet_liveness.c; struct gy_fleet and the gy__fleet_* calls between the files are in
 * fleet_internal.h.
 *
 * How it works. Joins are held in `joiners` until `world` of them are present; then the gang
 * forms (generation + 1, ranks by ordinal else lowest free, start step = the newest committed
 * checkpoint, else the joiners' minimum steps_done) and every joiner gets an ASSIGN. Grants:
 * horizon = min(slowest rank's steps_done + window, steps), sent to every rank each time it
 * grows. An operator command is queued; the
 * head of the queue is "in flight": the horizon stays frozen at H, and once every rank's
 * steps_done == H the directive goes out with at_step = H; when every alive rank acked, its
 * effect happens (PAUSE -> PAUSED, RESUME -> TRAIN, STOP -> DONE) and the next queued
 * directive goes out at the same H, or grants resume. Aggregation: each report of step s is
 * folded into the history slot s % hcap; when the slot counts a report from every rank, s is
 * final. Cost: a report is O(1) amortised (no scan over the ranks): the slowest rank's
 * steps_done is last_step + 1, advanced by the report that completes a slot (and past any
 * later slot already complete).
 *
 * Checkpoints: a rank's report may say it wrote the checkpoint of step c; `pending` counts, per
 * step, the ranks that said so (each rank's checkpoints come in increasing step order within a
 * timeline, so ckpt_step dedupes), and c is committed when the count reaches the world. A
 * ROLLBACK is a queued directive like the others; its parameters live in a record of the
 * rollback log (a ring of the newest GY_FLEET_ROLLBACK_LOG), so that the DIRECTIVE action can
 * point at its skip ranges. When its acks are in, gy__fleet_rollback_done() moves every rank, the
 * history, the committed list and the horizon back to to_step, or gy__fleet_rollback_failed()
 * handles refusals.
 *
 * Invariants:
 * - Only transition() writes f->state, and only pairs of the table `allowed` pass.
 * - The horizon never decreases, except when a ROLLBACK completes (it restarts at to_step,
 *   where every rank then stands), and does not change while a directive is in flight or
 *   queued, the run is PAUSED or every rank refused the last rollback, so every rank applies a
 * directive at the same step H.
 * - A member's steps_done <= horizon; reports arrive in step order per rank.
 * - While a gang is formed, min over ranks of steps_done == last_step + 1, and hist[s].nreports
 *   (for last_step < s < horizon) is the number of ranks with steps_done > s.
 * - hcap = GY_FLEET_HISTORY + window + 1: the slots of the last GY_FLEET_HISTORY aggregated
 *   steps and of every step a rank may run ahead (< horizon) are distinct.
 * - Every refusal sets errmsg and appends an event "refused".
 * - Out of memory: an input that needs memory for its state (the members of a gang that forms,
 *   a rollback record) allocates it before changing anything and is refused with GY_ENOMEM;
 *   an action that cannot be appended is dropped and counted (gy_fleet_dropped), never half
 *   written, and the state it reports on stays whole.
 * - committed[] is sorted by decreasing step, without repeats; every committed step is
 *   <= last_step + 1 of the timeline that committed it (a rollback forgets the later ones).
 * - A queued or in-flight ROLLBACK's record is among the newest QUEUE_MAX + 1 of the log, so
 *   the ring (GY_FLEET_ROLLBACK_LOG > QUEUE_MAX + 1) never frees a live one.
 */
#include "controller/fleet_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/err.h"
#include "common/utf8.h"

/* ---------------------------------------- names ---------------------------------------- */

static const char *const state_names[] = {
#define GY_FLEET_STATE_NAME(name) #name,
    GY_FLEET_STATE_MAP(GY_FLEET_STATE_NAME)
#undef GY_FLEET_STATE_NAME
};

const char *gy_fleet_state_name(gy_fleet_state_t s) {
  return (s >= 0 && s < GY_FLEET_NSTATES) ? state_names[s] : "?";
}

const char *gy_dir_kind_name(int kind) {
  static const char *const names[] = {"NONE",     "PAUSE",      "RESUME",
                                      "STOP",     "CHECKPOINT", "SET_HPARAMS",
                                      "ROLLBACK", "QUARANTINE", "SET_GUARD"};
  return (kind >= 0 && kind <= GY_DIR_SET_GUARD) ? names[kind] : "?";
}

/* ---------------------------------------- actions ---------------------------------------- */

/* Appends a zeroed action of kind k; NULL when out of memory (the action is dropped and counted
 * in f->dropped; the caller's state stays consistent). */
gy_fleet_action_t *gy__fleet_push(gy_fleet_t *f, gy_fleet_act_kind_t k) {
  if (f->nacts == f->capacts) {
    size_t cap = f->capacts ? 2 * f->capacts : 16;
    gy_fleet_action_t *a = gy_realloc(f->acts, cap * sizeof(*a));
    if (!a) {
      f->dropped++;
      return NULL;
    }
    f->acts = a;
    f->capacts = cap;
  }
  gy_fleet_action_t *a = &f->acts[f->nacts++];
  memset(a, 0, sizeof(*a));
  a->kind = k;
  a->rank = -1;
  a->generation = f->generation;
  return a;
}

/* Peers send arbitrary bytes; what the fleet shows (events, refusals, ids, channel names) goes
 * into JSON lines and protobuf string fields, which must be UTF-8. Replaces, in place, every
 * byte that is not part of a well-formed sequence (a sequence cut by truncation included) and
 * every control character by '?'. */
static void utf8_scrub(char *s) {
  size_t n = strlen(s);
  unsigned char *p = (unsigned char *)s;
  for (size_t i = 0; i < n;) {
    size_t k = gy_utf8_seq(p + i, n - i, NULL);
    if (k == 0 || p[i] < 0x20 || p[i] == 0x7f) {
      p[i++] = '?';
      continue;
    }
    i += k;
  }
}

/* 1 when s is well-formed UTF-8 without control characters (what an identifier must be). */
static int clean_str(const char *s) {
  return gy_utf8_clean(s, strlen(s));
}

void gy__fleet_event(gy_fleet_t *f, gy_event_kind_t kind, int64_t step, const char *fmt, ...) {
  gy_fleet_action_t *a = gy__fleet_push(f, GY_FLEET_ACT_EVENT);
  if (!a) return;
  a->event_id = ++f->event_id;
  a->event_kind = kind;
  a->step = step;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(a->msg, sizeof(a->msg), fmt, ap);
  va_end(ap);
  utf8_scrub(a->msg);
}

/* Records why a call is refused, appends an event "refused" and returns rc. */
int gy__fleet_refuse(gy_fleet_t *f, int rc, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(f->errmsg, sizeof(f->errmsg), fmt, ap);
  va_end(ap);
  utf8_scrub(f->errmsg);
  gy__fleet_event(f, GY_EVENT_REFUSED, f->last_step, "%s", f->errmsg);
  return rc;
}

/* ------------------------------------- state machine ------------------------------------- */

/* allowed[from][to]: the documented transitions. */
static const unsigned char allowed[GY_FLEET_NSTATES][GY_FLEET_NSTATES] = {
    /*              INIT TRAIN PAUSED STOPPING DONE DEGRADED */
    [GY_FLEET_INIT] = {0, 1, 0, 0, 0, 0},   [GY_FLEET_TRAIN] = {0, 0, 1, 1, 1, 1},
    [GY_FLEET_PAUSED] = {0, 1, 0, 1, 0, 1}, [GY_FLEET_STOPPING] = {0, 0, 0, 0, 1, 0},
    [GY_FLEET_DONE] = {0, 0, 0, 0, 0, 0},   [GY_FLEET_DEGRADED] = {1, 0, 0, 0, 0, 0},
};

int gy__fleet_transition_allowed(gy_fleet_state_t from, gy_fleet_state_t to) {
  if (from < 0 || from >= GY_FLEET_NSTATES || to < 0 || to >= GY_FLEET_NSTATES) return 0;
  return allowed[from][to];
}

/* A directive that will never be sent (or completed): an event, and its rollback record. */
void gy__fleet_drop_directive(gy_fleet_t *f, directive_t *d, const char *why) {
  if (d->rb) d->rb->pub.status = GY_FLEET_RB_DROPPED;
  gy__fleet_event(f, GY_EVENT_DIRECTIVE_DROPPED, f->last_step,
                  "directive seq %llu (%s) dropped: %s", (unsigned long long)d->seq,
                  gy_dir_kind_name(d->kind), why);
}

/* A worker was lost with rollbacks queued or in flight (some ranks may have restored already):
 * the decision to leave the timeline after the earliest target stands, so the checkpoints
 * after it are forgotten and the re-formed gang starts from it (the skips and hparams are not
 * applied: whoever decided the rollback asks again once the gang is back). */
static void abandon_timeline(gy_fleet_t *f) {
  int64_t to = INT64_MAX;
  if (f->inflight_on && f->inflight.rb) to = f->inflight.rb->pub.to_step;
  for (int i = 0; i < f->nqueue; i++)
    if (f->queue[i].rb && f->queue[i].rb->pub.to_step < to) to = f->queue[i].rb->pub.to_step;
  if (to != INT64_MAX) gy__fleet_forget_committed(f, to, 0);
}

/* Exit actions. */
static void clear_directives(gy_fleet_t *f, const char *why) {
  if (f->inflight_on) gy__fleet_drop_directive(f, &f->inflight, why);
  for (int i = 0; i < f->nqueue; i++)
    gy__fleet_drop_directive(f, &f->queue[i], why);
  f->inflight_on = f->inflight_sent = 0;
  f->nqueue = 0;
  f->pause_intent = f->stop_intent = 0;
}

static void clear_gang(gy_fleet_t *f) {
  gy_free(f->members);
  f->members = NULL;
  f->nmembers = 0;
}

int gy__fleet_transition(gy_fleet_t *f, gy_fleet_state_t to, const char *why) {
  gy_fleet_state_t from = f->state;
  if (!gy__fleet_transition_allowed(from, to)) {
    snprintf(f->errmsg, sizeof(f->errmsg), "illegal state transition %s -> %s",
             gy_fleet_state_name(from), gy_fleet_state_name(to));
    return GY_EINVAL;
  }
  f->state = to;
  gy__fleet_event(f, GY_EVENT_STATE, f->last_step, "%s -> %s: %s", gy_fleet_state_name(from),
                  gy_fleet_state_name(to), why ? why : "");
  switch (to) {
  case GY_FLEET_DONE:
    clear_directives(f, "the run is done");
    gy__fleet_push(f, GY_FLEET_ACT_DONE);
    gy__fleet_event(f, GY_EVENT_DONE, f->last_step, "run done at step %lld",
                    (long long)(f->last_step + 1));
    break;
  case GY_FLEET_DEGRADED:
    abandon_timeline(f);
    clear_directives(f, "a worker was lost");
    break;
  case GY_FLEET_INIT:
    clear_gang(f);
    break;
  default:
    break;
  }
  return 0;
}

void gy__fleet_force_state(gy_fleet_t *f, gy_fleet_state_t s) {
  f->state = s;
}

/* ---------------------------------------- helpers ---------------------------------------- */

void gy__fleet_copy_str(char *dst, size_t n, const char *src) {
  snprintf(dst, n, "%s", src ? src : "");
  utf8_scrub(dst); /* a sequence cut at n - 1 bytes included */
}

int gy_fleet_restore(gy_fleet_t *f, const int64_t *committed, int n, uint64_t generation,
                     uint64_t seq) {
  if (f->state != GY_FLEET_INIT || f->njoiners) return GY_ENOTSUP;
  for (int i = 0; i < n; i++)
    if (committed[i] < 0) return GY_EINVAL;
  for (int i = 0; i < n; i++) {
    int64_t step = committed[i];
    int k = 0, dup = 0;
    for (int m = 0; m < f->ncommitted; m++)
      dup |= f->committed[m] == step;
    if (dup) continue;
    while (k < f->ncommitted && f->committed[k] > step)
      k++;
    if (k == GY_FLEET_MAX_COMMITTED) continue; /* older than every one kept */
    int c = f->ncommitted < GY_FLEET_MAX_COMMITTED ? f->ncommitted : GY_FLEET_MAX_COMMITTED - 1;
    memmove(&f->committed[k + 1], &f->committed[k], (size_t)(c - k) * sizeof(f->committed[0]));
    f->committed[k] = step;
    f->ncommitted = c + 1;
  }
  if (generation > f->generation) f->generation = generation;
  if (seq > f->seq) f->seq = seq;
  return 0;
}

int gy__fleet_is_committed(const gy_fleet_t *f, int64_t step) {
  for (int i = 0; i < f->ncommitted; i++)
    if (f->committed[i] == step) return 1;
  return 0;
}

/* Records step as committed (sorted, newest first; the oldest falls off a full list). */
void gy__fleet_commit(gy_fleet_t *f, int64_t step, uint64_t bytes) {
  if (gy__fleet_is_committed(f, step)) return;
  int i = 0;
  while (i < f->ncommitted && f->committed[i] > step)
    i++;
  if (i == GY_FLEET_MAX_COMMITTED) return; /* older than every one kept */
  int n = f->ncommitted < GY_FLEET_MAX_COMMITTED ? f->ncommitted : GY_FLEET_MAX_COMMITTED - 1;
  memmove(&f->committed[i + 1], &f->committed[i], (size_t)(n - i) * sizeof(f->committed[0]));
  f->committed[i] = step;
  f->ncommitted = n + 1;
  gy_fleet_action_t *a = gy__fleet_push(f, GY_FLEET_ACT_COMMITTED);
  if (a) {
    a->step = step;
    a->bytes = bytes;
  }
  gy__fleet_event(f, GY_EVENT_CHECKPOINT_COMMITTED, step,
                  "checkpoint of step %lld committed: every rank wrote it", (long long)step);
}

/* Forgets the committed checkpoints after step (inclusive: also step itself). */
void gy__fleet_forget_committed(gy_fleet_t *f, int64_t step, int inclusive) {
  int k = 0;
  for (int i = 0; i < f->ncommitted; i++) {
    int64_t c = f->committed[i];
    if (c > step || (inclusive && c == step))
      gy__fleet_event(f, GY_EVENT_CHECKPOINT_FORGOTTEN, c,
                      "committed checkpoint of step %lld forgotten", (long long)c);
    else
      f->committed[k++] = c;
  }
  f->ncommitted = k;
}

/* Rank m says it wrote the checkpoint of step c (its file: bytes): commits c once every rank
 * has said so. */
static void ckpt_reported(gy_fleet_t *f, gy_fleet_member_t *m, int64_t c, uint64_t bytes) {
  if (c <= m->ckpt_step) return; /* said already (checkpoints come in step order) */
  m->ckpt_step = c;
  if (gy__fleet_is_committed(f, c)) return;
  int i = 0;
  while (i < f->npending && f->pending[i].step != c)
    i++;
  if (i == f->npending) {
    if (f->npending == GY_FLEET_PENDING_CKPT) { /* drop the oldest: it is unlikely to complete */
      int o = 0;
      for (int k = 1; k < f->npending; k++)
        if (f->pending[k].step < f->pending[o].step) o = k;
      gy__fleet_event(f, GY_EVENT_CHECKPOINT_INCOMPLETE, f->pending[o].step,
                      "checkpoint of step %lld: only %d of %d ranks reported it; no longer tracked",
                      (long long)f->pending[o].step, f->pending[o].n, f->nmembers);
      f->pending[o] = f->pending[--f->npending];
      i = f->npending;
    }
    f->pending[i].step = c;
    f->pending[i].n = 0;
    f->pending[i].bytes = 0;
    f->npending++;
  }
  f->pending[i].bytes += bytes;
  if (++f->pending[i].n < f->nmembers) return;
  uint64_t total = f->pending[i].bytes;
  /* committed: older pending checkpoints cannot matter any more (a newer one is complete) */
  int k = 0;
  for (int j = 0; j < f->npending; j++)
    if (f->pending[j].step > c) f->pending[k++] = f->pending[j];
  f->npending = k;
  gy__fleet_commit(f, c, total);
}

/* The slowest rank's steps_done, in O(1): every rank starts at start_step and steps_done only
 * grows by one per accepted report, so the minimum is the first step not yet reported by every
 * rank, i.e. last_step + 1 (report() advances last_step past each step whose history slot
 * counts nmembers reports). */
int64_t gy__fleet_min_steps(const gy_fleet_t *f) {
  return f->nmembers ? f->last_step + 1 : 0;
}

static int64_t cap_steps(const gy_fleet_t *f, int64_t h) {
  return h < f->o.steps ? h : f->o.steps;
}

/* Extends the horizon when nothing holds it frozen. */
void gy__fleet_maybe_grant(gy_fleet_t *f) {
  if (f->state != GY_FLEET_TRAIN || f->inflight_on || f->nqueue || f->rb_failed) return;
  int64_t h = cap_steps(f, gy__fleet_min_steps(f) + f->o.window);
  if (h <= f->horizon) return;
  f->horizon = h;
  gy_fleet_action_t *a = gy__fleet_push(f, GY_FLEET_ACT_GRANT);
  if (a) a->step = h;
}

static uint64_t splitmix(uint64_t *x) {
  uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/* The world-th joiner arrived: forms the gang in mem (world zeroed members, allocated by the
 * caller before it changed anything; the fleet owns it after the call) and answers every
 * joiner. */
static void form(gy_fleet_t *f, int64_t now, gy_fleet_member_t *mem) {
  int w = f->o.world;
  uint64_t gen = f->generation;
  int64_t start = INT64_MAX;
  for (int i = 0; i < f->njoiners; i++) {
    if (f->joiners[i].prev_generation > gen) gen = f->joiners[i].prev_generation;
    if (f->joiners[i].m.steps_done < start) start = f->joiners[i].m.steps_done;
  }
  /* a re-formed gang restores the newest committed checkpoint: its state is known good on
   * every rank's storage, whatever each joiner's own progress */
  int from_ckpt = f->ncommitted > 0;
  if (from_ckpt) start = f->committed[0];
  f->generation = gen + 1;
  for (int i = 0; i < w; i++)
    mem[i].rank = -1;
  /* ordinals first, then the lowest free ranks in join order */
  for (int i = 0; i < f->njoiners; i++)
    if (f->joiners[i].m.ordinal >= 0) f->joiners[i].m.rank = f->joiners[i].m.ordinal;
  for (int i = 0; i < f->njoiners; i++) {
    joiner_t *j = &f->joiners[i];
    if (j->m.ordinal >= 0) {
      mem[j->m.rank].rank = j->m.rank;
      continue;
    }
    j->m.rank = -1;
  }
  for (int i = 0; i < f->njoiners; i++) {
    joiner_t *j = &f->joiners[i];
    if (j->m.ordinal >= 0) continue;
    int r = 0;
    while (mem[r].rank >= 0)
      r++;
    j->m.rank = r;
    mem[r].rank = r;
  }
  for (int i = 0; i < f->njoiners; i++) {
    joiner_t *j = &f->joiners[i];
    gy_fleet_member_t *m = &mem[j->m.rank];
    *m = j->m;
    m->steps_done = start;
    m->last_seen_ms = now;
    m->alive = 1;
    m->connected = 0;
    m->acked = 0;
    m->ckpt_step = -1;
    uint64_t x = f->o.seed ^ (++f->session_ctr * 0x2545f4914f6cdd1dull);
    uint64_t a = splitmix(&x), b = splitmix(&x);
    snprintf(m->session_id, sizeof(m->session_id), "%016llx%016llx", (unsigned long long)a,
             (unsigned long long)b);
  }
  gy_free(f->members);
  f->members = mem;
  f->nmembers = w;
  f->start_step = start;
  f->last_step = start - 1;
  f->horizon = cap_steps(f, start + f->o.window);
  for (int64_t i = 0; i < f->hcap; i++)
    f->hist[i].step = -1;
  f->inflight_on = f->inflight_sent = 0;
  f->nqueue = 0;
  f->pause_intent = f->stop_intent = 0;
  f->rb_failed = 0;
  f->npending = 0;
  for (int i = 0; i < f->njoiners; i++) {
    gy_fleet_action_t *a = gy__fleet_push(f, GY_FLEET_ACT_ASSIGN);
    if (!a) continue;
    a->rank = f->joiners[i].m.rank;
    a->join_handle = f->joiners[i].handle;
    a->step = start;
    memcpy(a->session_id, mem[a->rank].session_id, sizeof(a->session_id));
  }
  f->njoiners = 0;
  gy__fleet_transition(f, GY_FLEET_TRAIN, "gang formed");
  gy__fleet_event(f, GY_EVENT_GANG_FORMED, start,
                  "generation %llu formed: world %d, start step %lld%s",
                  (unsigned long long)f->generation, w, (long long)start,
                  from_ckpt ? " (the newest committed checkpoint)" : "");
  if (start >= f->o.steps) gy__fleet_transition(f, GY_FLEET_DONE, "every step already done");
}

/* ------------------------------------------ API ------------------------------------------ */

int gy_fleet_create(gy_fleet_t **out, const gy_fleet_opts_t *opts) {
  *out = NULL;
  if (!opts || opts->world < 1 || opts->window < 1 || opts->steps < 1 || opts->lost_after_ms < 1 ||
      opts->hang_floor_ms < 0 || opts->hang_factor < 0 || opts->reform_alert_ms < 0)
    return GY_EINVAL;
  gy_fleet_t *f = gy_calloc(1, sizeof(*f));
  if (!f) return GY_ENOMEM;
  f->o = *opts;
  f->state = GY_FLEET_INIT;
  f->last_step = -1;
  f->hcap = GY_FLEET_HISTORY + (int64_t)opts->window + 1;
  f->hist = gy_calloc((size_t)f->hcap, sizeof(*f->hist));
  f->joiners = gy_calloc((size_t)opts->world, sizeof(*f->joiners));
  if (!f->hist || !f->joiners) goto err;
  for (int64_t i = 0; i < f->hcap; i++)
    f->hist[i].step = -1;
  f->gangless_since = -1;
  *out = f;
  return 0;
err:
  gy_fleet_destroy(f);
  return GY_ENOMEM;
}

void gy_fleet_destroy(gy_fleet_t *f) {
  if (!f) return;
  for (int i = 0; i < GY_FLEET_ROLLBACK_LOG; i++) {
    if (!f->rblog[i]) continue;
    gy_free(f->rblog[i]->skip);
    gy_free(f->rblog[i]);
  }
  for (int i = 0; i < GY_FLEET_QLOG; i++)
    gy__fleet_q_free(f->qlog[i]);
  gy_free(f->acts);
  gy_free(f->hist);
  gy_free(f->joiners);
  gy_free(f->members);
  gy_free(f);
}

int gy_fleet_join(gy_fleet_t *f, int64_t now, const gy_fleet_join_t *req, uint64_t join_handle) {
  f->errmsg[0] = 0;
  if (!req->worker_id || !req->worker_id[0])
    return gy__fleet_refuse(f, GY_EINVAL, "join: empty worker_id");
  if (strlen(req->worker_id) >= GY_FLEET_ID_MAX)
    return gy__fleet_refuse(f, GY_EINVAL, "join: worker_id longer than %d bytes",
                            GY_FLEET_ID_MAX - 1);
  if (!clean_str(req->worker_id))
    return gy__fleet_refuse(f, GY_EINVAL,
                            "join: worker_id '%s' is not UTF-8 text without control characters",
                            req->worker_id);
  if (req->ordinal < -1 || req->ordinal >= f->o.world)
    return gy__fleet_refuse(f, GY_ERANGE, "join: worker %s: ordinal %d outside [0, %d)",
                            req->worker_id, req->ordinal, f->o.world);
  if (req->steps_done < 0)
    return gy__fleet_refuse(f, GY_EINVAL, "join: worker %s: negative steps_done", req->worker_id);
  int superseded = 0;
  switch (f->state) {
  case GY_FLEET_DONE:
    return gy__fleet_refuse(f, GY_ENOTSUP, "join: the run is done");
  case GY_FLEET_TRAIN:
  case GY_FLEET_PAUSED:
  case GY_FLEET_STOPPING:
    for (int r = 0; r < f->nmembers; r++) {
      gy_fleet_member_t *m = &f->members[r];
      if (strcmp(m->worker_id, req->worker_id)) continue;
      /* A member that was assigned but never opened its session nor reported (its process had
       * to restart to restore the gang's start step) may come back as itself: it gets the
       * same assignment again. */
      if (f->state != GY_FLEET_STOPPING && m->alive && !m->connected &&
          m->steps_done == f->start_step && (req->ordinal < 0 || req->ordinal == m->ordinal)) {
        gy__fleet_copy_str(m->host, sizeof(m->host), req->host);
        m->pid = req->pid;
        m->last_seen_ms = now;
        gy_fleet_action_t *a = gy__fleet_push(f, GY_FLEET_ACT_ASSIGN);
        if (a) {
          a->rank = r;
          a->join_handle = join_handle;
          a->step = f->start_step;
          memcpy(a->session_id, m->session_id, sizeof(a->session_id));
        }
        gy__fleet_event(
            f, GY_EVENT_JOIN, req->steps_done,
            "worker %s (host %s, pid %d) comes back as rank %d of generation %llu: it starts "
            "again from step %lld",
            req->worker_id, m->host, req->pid, r, (unsigned long long)f->generation,
            (long long)f->start_step);
        return 0;
      }
      if (f->state == GY_FLEET_STOPPING)
        return gy__fleet_refuse(f, GY_ENOTSUP, "join: worker %s: the run is stopping",
                                req->worker_id);
      /* The same worker id joins again: its earlier process is gone (it restarted, or its
       * session is a leftover the controller has not seen end). The rank is lost now, not
       * after lost_after_ms of silence, and the gang re-forms with the newcomer. */
      gy__fleet_lose(f, r, "the worker joined again: its earlier process is gone");
      superseded = 1;
      break;
    }
    if (superseded) goto degraded;
    return gy__fleet_refuse(f, GY_ENOTSUP,
                            "join: worker %s: the gang of generation %llu is complete",
                            req->worker_id, (unsigned long long)f->generation);
  case GY_FLEET_DEGRADED:
  degraded:
    for (int r = 0; r < f->nmembers; r++)
      if (f->members[r].connected) {
        gy_fleet_action_t *a = gy__fleet_push(f, GY_FLEET_ACT_CLOSE);
        if (a) a->rank = r;
      }
    gy__fleet_transition(f, GY_FLEET_INIT, "re-forming the gang");
    break;
  default:
    break;
  }
  int same = -1; /* a held join of the same worker id: superseded by this one */
  for (int i = 0; i < f->njoiners; i++) {
    const gy_fleet_member_t *m = &f->joiners[i].m;
    if (!strcmp(m->worker_id, req->worker_id)) {
      same = i;
      continue;
    }
    if (req->ordinal >= 0 && m->ordinal == req->ordinal)
      return gy__fleet_refuse(f, GY_EBUSY, "join: worker %s: ordinal %d already taken by %s",
                              req->worker_id, req->ordinal, m->worker_id);
  }
  if (same >= 0) {
    /* The worker's earlier Join is still held here, though its caller gave up on it (its
     * deadline passed, or its process restarted): the newer one takes its place, and the
     * earlier call is answered. */
    joiner_t *j = &f->joiners[same];
    gy_fleet_action_t *a = gy__fleet_push(f, GY_FLEET_ACT_DISMISS);
    if (a) {
      a->join_handle = j->handle;
      snprintf(a->msg, sizeof(a->msg), "superseded by a newer join of worker %s", req->worker_id);
    }
    gy__fleet_copy_str(j->m.host, sizeof(j->m.host), req->host);
    j->m.ordinal = req->ordinal;
    j->m.pid = req->pid;
    j->m.steps_done = req->steps_done;
    j->handle = join_handle;
    j->prev_generation = req->generation;
    gy__fleet_event(f, GY_EVENT_JOIN, req->steps_done,
                    "worker %s (host %s, pid %d, ordinal %d) joined again: its newer join "
                    "replaces the held one; %d of %d",
                    req->worker_id, j->m.host, req->pid, req->ordinal, f->njoiners, f->o.world);
    return 0;
  }
  /* The members of the gang this join completes, before anything changes: out of memory then
   * refuses the join (the caller answers it; the worker joins again) instead of leaving `world`
   * joiners and no gang, where the next join would write past the joiners. */
  gy_fleet_member_t *mem = NULL;
  if (f->njoiners + 1 == f->o.world && !(mem = gy_calloc((size_t)f->o.world, sizeof(*mem))))
    return gy__fleet_refuse(f, GY_ENOMEM, "join: worker %s: out of memory forming the gang",
                            req->worker_id);
  joiner_t *j = &f->joiners[f->njoiners++];
  memset(j, 0, sizeof(*j));
  gy__fleet_copy_str(j->m.worker_id, sizeof(j->m.worker_id), req->worker_id);
  gy__fleet_copy_str(j->m.host, sizeof(j->m.host), req->host);
  j->m.ordinal = req->ordinal;
  j->m.pid = req->pid;
  j->m.rank = -1;
  j->m.steps_done = req->steps_done;
  j->handle = join_handle;
  j->prev_generation = req->generation;
  gy__fleet_event(f, GY_EVENT_JOIN, req->steps_done,
                  "worker %s (host %s, pid %d, ordinal %d) joined: %d of %d", req->worker_id,
                  j->m.host, req->pid, req->ordinal, f->njoiners, f->o.world);
  if (mem) form(f, now, mem);
  return 0;
}

void gy_fleet_join_cancel(gy_fleet_t *f, uint64_t join_handle) {
  for (int i = 0; i < f->njoiners; i++) {
    if (f->joiners[i].handle != join_handle) continue;
    gy__fleet_event(f, GY_EVENT_JOIN_CANCELLED, -1, "worker %s left before the gang formed",
                    f->joiners[i].m.worker_id);
    memmove(&f->joiners[i], &f->joiners[i + 1], (size_t)(f->njoiners - i - 1) * sizeof(joiner_t));
    f->njoiners--;
    return;
  }
}

/* Checks what every session message shares: a formed gang, the generation, the rank. */
int gy__fleet_check_msg(gy_fleet_t *f, const char *what, int stream_rank, uint64_t generation,
                        int rank) {
  f->errmsg[0] = 0;
  if (!f->nmembers || f->state == GY_FLEET_INIT)
    return gy__fleet_refuse(f, GY_ENOTSUP, "%s: no gang formed", what);
  if (generation != f->generation)
    return gy__fleet_refuse(f, GY_EMISMATCH, "%s: generation %llu, current is %llu", what,
                            (unsigned long long)generation, (unsigned long long)f->generation);
  if (rank < 0 || rank >= f->nmembers)
    return gy__fleet_refuse(f, GY_ERANGE, "%s: rank %d outside [0, %d)", what, rank, f->nmembers);
  if (stream_rank >= 0 && rank != stream_rank)
    return gy__fleet_refuse(f, GY_ERANGE, "%s: rank %d on the session of rank %d", what, rank,
                            stream_rank);
  return 0;
}

int gy_fleet_hello(gy_fleet_t *f, int64_t now, const char *session_id, uint64_t generation,
                   int rank) {
  int rc = gy__fleet_check_msg(f, "hello", -1, generation, rank);
  if (rc) return rc;
  gy_fleet_member_t *m = &f->members[rank];
  if (!session_id || strcmp(session_id, m->session_id))
    return gy__fleet_refuse(f, GY_EMISMATCH, "hello: unknown session for rank %d", rank);
  if (!m->alive) return gy__fleet_refuse(f, GY_EMISMATCH, "hello: rank %d was declared lost", rank);
  if (f->state == GY_FLEET_DONE || f->state == GY_FLEET_DEGRADED)
    return gy__fleet_refuse(f, GY_ENOTSUP, "hello: rank %d: the run is %s", rank,
                            gy_fleet_state_name(f->state));
  m->connected = 1;
  m->last_seen_ms = now;
  /* a rank that acked a rollback still in flight stands at its to_step until the rollback
   * completes: its horizon is to_step, not the frozen horizon it restored from */
  int rb_acked = f->inflight_on && f->inflight_sent && f->inflight.rb && m->acked;
  gy_fleet_action_t *a = gy__fleet_push(f, GY_FLEET_ACT_GRANT);
  if (a) {
    a->rank = rank;
    a->step = rb_acked ? f->inflight.rb->pub.to_step : f->horizon;
  }
  if (f->inflight_on && f->inflight_sent && !m->acked) gy__fleet_send_directive(f, rank);
  return 0;
}

int gy_fleet_report(gy_fleet_t *f, int64_t now, int stream_rank, const gy_fleet_report_t *r) {
  int rc = gy__fleet_check_msg(f, "report", stream_rank, r->generation, r->rank);
  if (rc) return rc;
  gy_fleet_member_t *m = &f->members[r->rank];
  m->last_seen_ms = now;
  if (f->inflight_on && f->inflight_sent && f->inflight.kind == GY_DIR_ROLLBACK && m->acked)
    return gy__fleet_refuse(
        f, GY_ERANGE,
        "report: rank %d ran step %lld after acking the rollback to step %lld, before "
        "its grant",
        r->rank, (long long)r->step, (long long)f->inflight.rb->pub.to_step);
  if (r->step < m->steps_done) return 0; /* a repeat after a reconnect: already counted */
  if (f->state != GY_FLEET_TRAIN && f->state != GY_FLEET_PAUSED)
    return gy__fleet_refuse(f, GY_ENOTSUP, "report: rank %d step %lld in state %s", r->rank,
                            (long long)r->step, gy_fleet_state_name(f->state));
  if (r->step != m->steps_done)
    return gy__fleet_refuse(f, GY_ERANGE, "report: rank %d reported step %lld, expected %lld",
                            r->rank, (long long)r->step, (long long)m->steps_done);
  if (r->step >= f->horizon)
    return gy__fleet_refuse(f, GY_ERANGE, "report: rank %d ran step %lld beyond its horizon %lld",
                            r->rank, (long long)r->step, (long long)f->horizon);
  if (r->nch < 0 || r->nch > GY_FLEET_MAX_CH ||
      (r->nch && (!r->ch_name || !r->ch_loss_sum || !r->ch_tokens)))
    return gy__fleet_refuse(f, GY_EINVAL, "report: rank %d: %d channels (at most %d)", r->rank,
                            r->nch, GY_FLEET_MAX_CH);
  if (r->has_checkpoint && (r->checkpoint_step < 0 || r->checkpoint_step > r->step + 1))
    return gy__fleet_refuse(
        f, GY_EINVAL, "report: rank %d step %lld: checkpoint of step %lld is not in [0, %lld]",
        r->rank, (long long)r->step, (long long)r->checkpoint_step, (long long)(r->step + 1));
  gy_fleet_step_t *s = &f->hist[r->step % f->hcap];
  if (s->step != r->step) {
    memset(s, 0, sizeof(*s));
    s->step = r->step;
  }
  s->nreports++;
  if (r->step_ms > s->step_ms) s->step_ms = r->step_ms;
  if (r->rank == 0) {
    s->loss = r->loss;
    s->nch = r->nch;
    for (int c = 0; c < r->nch; c++) {
      gy__fleet_copy_str(s->ch[c].name, sizeof(s->ch[c].name), r->ch_name[c]);
      s->ch[c].loss_sum = r->ch_loss_sum[c];
      s->ch[c].tokens = r->ch_tokens[c];
    }
    s->grad_norm = r->grad_norm;
    s->grad_norm_shallow = r->grad_norm_shallow;
    s->grad_norm_deep = r->grad_norm_deep;
    s->update_ratio = r->update_ratio;
    s->lr = r->lr;
    s->nonfinite = r->nonfinite;
    s->tokens_per_s = r->tokens_per_s;
  }
  m->steps_done = r->step + 1;
  m->tokens_per_s = r->tokens_per_s;
  m->compute_ms = r->compute_ms > 0 && r->compute_ms < 1e9 ? r->compute_ms : 0;
  m->stepping = 0; /* the step ended: progress; its time into the recent average */
  if (r->step_ms > 0 && r->step_ms < 1e9)
    m->recent_step_ms =
        m->recent_step_ms > 0 ? 0.875 * m->recent_step_ms + 0.125 * r->step_ms : r->step_ms;
  if (r->has_checkpoint) ckpt_reported(f, m, r->checkpoint_step, r->checkpoint_bytes);
  /* A step is final when its slot counts a report from every rank; only the report that
   * completes the slowest step can move last_step, and then it may move past several steps. */
  for (;;) {
    int64_t st = f->last_step + 1;
    gy_fleet_step_t *h = &f->hist[st % f->hcap];
    if (h->step != st || h->nreports < f->nmembers) break;
    f->last_step = st;
    h->aggregated = 1;
    gy_fleet_action_t *a = gy__fleet_push(f, GY_FLEET_ACT_STEP);
    if (a) a->step = st;
    if (h->nonfinite)
      gy__fleet_event(f, GY_EVENT_NONFINITE, st, "step %lld: non-finite loss or gradient",
                      (long long)st);
  }
  int64_t lo = gy__fleet_min_steps(f);
  if (lo >= f->o.steps) {
    gy__fleet_transition(f, GY_FLEET_DONE, "every rank reported the last step");
    return 0;
  }
  gy__fleet_pump(f);
  gy__fleet_maybe_grant(f);
  return 0;
}

const gy_fleet_action_t *gy_fleet_actions(const gy_fleet_t *f, size_t *n) {
  *n = f->nacts;
  return f->acts;
}

void gy_fleet_actions_clear(gy_fleet_t *f) {
  f->nacts = 0;
}
const char *gy_fleet_errmsg(const gy_fleet_t *f) {
  return f->errmsg;
}
gy_fleet_state_t gy_fleet_state(const gy_fleet_t *f) {
  return f->state;
}
uint64_t gy_fleet_dropped(const gy_fleet_t *f) {
  return f->dropped;
}
uint64_t gy_fleet_generation(const gy_fleet_t *f) {
  return f->generation;
}
int64_t gy_fleet_horizon(const gy_fleet_t *f) {
  return f->horizon;
}
int64_t gy_fleet_start_step(const gy_fleet_t *f) {
  return f->start_step;
}
const gy_fleet_opts_t *gy_fleet_opts(const gy_fleet_t *f) {
  return &f->o;
}
int gy_fleet_nmembers(const gy_fleet_t *f) {
  return f->nmembers;
}
int gy_fleet_forming(const gy_fleet_t *f) {
  return f->njoiners;
}
int64_t gy_fleet_last_step(const gy_fleet_t *f) {
  return f->last_step;
}

const gy_fleet_member_t *gy_fleet_member(const gy_fleet_t *f, int rank) {
  return (rank >= 0 && rank < f->nmembers) ? &f->members[rank] : NULL;
}

const gy_fleet_step_t *gy_fleet_history(const gy_fleet_t *f, int64_t step) {
  if (step < 0 || step > f->last_step || step <= f->last_step - GY_FLEET_HISTORY) return NULL;
  const gy_fleet_step_t *s = &f->hist[step % f->hcap];
  return (s->step == step && s->aggregated) ? s : NULL;
}

uint64_t gy_fleet_inflight(const gy_fleet_t *f, int *sent) {
  if (sent) *sent = f->inflight_on && f->inflight_sent;
  return f->inflight_on ? f->inflight.seq : 0;
}

int gy_fleet_queued(const gy_fleet_t *f) {
  return f->nqueue;
}

int gy_fleet_ncommitted(const gy_fleet_t *f) {
  return f->ncommitted;
}

int64_t gy_fleet_committed(const gy_fleet_t *f, int i) {
  return (i >= 0 && i < f->ncommitted) ? f->committed[i] : -1;
}

int gy_fleet_nrollbacks(const gy_fleet_t *f) {
  return f->nrb < GY_FLEET_ROLLBACK_LOG ? (int)f->nrb : GY_FLEET_ROLLBACK_LOG;
}

const gy_fleet_rollback_t *gy_fleet_rollback_record(const gy_fleet_t *f, int i) {
  if (i < 0 || i >= gy_fleet_nrollbacks(f)) return NULL;
  return &f->rblog[(f->nrb - 1 - (uint64_t)i) % GY_FLEET_ROLLBACK_LOG]->pub;
}

int gy_fleet_rollback_failed(const gy_fleet_t *f) {
  return f->rb_failed;
}
