/*
 * svc_journal: the service's records in the journal (controller/journal.h), written off the
 * loop thread by the service's writer (controller/jwriter.h), and the recovery from the
 * journal at create.
 *
 * API, in order: journal_start, journal_must, journal_event, journal_best, fence_submit,
 * recover, journal_hold.
 *
 * Threads: every journal write and the fence check run on the writer's thread, in the order
 * the loop submitted them; what they write is copied on the loop thread at submit (snapshots,
 * skip ranges, generation and directive numbers), so the thread never reads the service.
 * Their outcomes come back on the loop thread (must_done, fence_done, hold_done). recover()
 * alone is synchronous: it runs in gy_service_create, before the loop serves anything and
 * before the writer's thread starts (what it submits waits for the thread).
 *
 * journal_must writes a record that must precede what follows it (a checkpoint's manifest
 * before the commit's later effects, a rollback's intent before a rank can act on it, an
 * applied rollback's skips): the head of the action queue (svc_session.c drain()) waits for
 * it while the loop goes on serving; the writer retries through a store outage with back-off
 * for up to 10 minutes, then gives it up (an error event) and the controller goes on without
 * it. The workers park at their granted horizon meanwhile and keep sending heartbeats, which
 * the running loop hears, so the liveness verdicts need no grace after an outage.
 *
 * Invariants:
 * - journaled_seq is the newest rollback whose intent was written (or given up);
 *   journaled_hold is what the hold key says once the writes submitted so far are done (-1:
 *   unknown after a failed write, so the next drain writes it again).
 * - The other journal writes (events, generation, baselines, evaluations, done, dropped) are
 *   best effort: a failure is logged (events wait in the journal's memory) and the run goes on.
 * - waiting is 1 while the head action waits for the writer; nothing else is acted meanwhile.
 */
#include "controller/service_internal.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/err.h"
#include "common/log.h"

/* One operation for the writer: everything copied at submit. */
struct jop {
  jop_kind_t kind;
  gy_journal_t *j; /* borrowed: it outlives the service and so the writer */
  int64_t step;
  uint64_t id, seq, gen; /* id: EVENT: the event id; APPLIED: the state record's last seq */
  int64_t nrb;
  int flag; /* CKPT: clean; HOLD: the hold */
  double time;
  char ekind[32];
  char *text; /* EVENT: the message; INTENT, BASELINES: the run's snapshot; CKPT_EVAL: JSON;
                 HOLD: why */
  gy_journal_intent_t in; /* INTENT (in.skip owned) */
  gy_fleet_skip_t *skips; /* APPLIED: the skips in force */
  size_t nskips;
  int (*fence)(void *);
  void *fence_ud;
};

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void jop_free(void *p) {
  jop_t *op = p;
  free(op->text);
  free(op->in.skip);
  free(op->skips);
  free(op);
}

/* Writer thread. */
static int jop_run(void *p, char *err, size_t errlen) {
  jop_t *op = p;
  switch (op->kind) {
  case JOP_EVENT:
    return gy_journal_event(op->j, op->id, op->time, op->step, op->ekind, op->text);
  case JOP_CKPT:
    return gy_journal_checkpoint(op->j, op->step, op->flag, err, errlen);
  case JOP_CKPT_EVAL:
    return gy_journal_checkpoint_eval(op->j, op->step, op->text, err, errlen);
  case JOP_INTENT:
    return gy_journal_intent(op->j, &op->in, op->text, err, errlen);
  case JOP_BASELINES:
    return gy_journal_baselines(op->j, op->step, op->text, err, errlen);
  case JOP_APPLIED: {
    int rc = gy_journal_applied(op->j, op->seq, op->step, op->skips, op->nskips, err, errlen);
    return rc ? rc : gy_journal_state(op->j, op->gen, op->id, op->nrb, err, errlen);
  }
  case JOP_DROPPED:
    return gy_journal_dropped(op->j, op->seq, err, errlen);
  case JOP_STATE:
    return gy_journal_state(op->j, op->gen, op->seq, op->nrb, err, errlen);
  case JOP_HOLD:
    return gy_journal_hold(op->j, op->flag, op->text, err, errlen);
  case JOP_DONE:
    return gy_journal_done(op->j, op->step, err, errlen);
  case JOP_FENCE:
    if (op->fence(op->fence_ud)) return 0;
    snprintf(err, errlen, "this controller no longer leads");
    return GY_EBUSY;
  }
  return GY_EINVAL;
}

/* Starts the writer's thread (gy_service_create, after recover). */
int gy__svc_journal_start(gy_service_t *s) {
  return s->jw ? gy_jwriter_start(s->jw) : 0;
}

/* A new operation of kind for s's journal (NULL: out of memory, logged). */
jop_t *gy__svc_jop(gy_service_t *s, jop_kind_t kind) {
  jop_t *op = calloc(1, sizeof(*op));
  if (!op) {
    gy_log(GY_LOG_ERROR, "controller", "journal: out of memory: a record is not written");
    return NULL;
  }
  op->kind = kind;
  op->j = s->o.journal;
  return op;
}

/* Fills a best-effort operation: CKPT_EVAL, BASELINES: step and text; STATE: gen, seq, nrb;
 * DROPPED: seq; DONE: step. text (malloc'ed, may be NULL) is the operation's from now on. */
void gy__svc_jop_set(jop_t *op, int64_t step, uint64_t seq, uint64_t gen, int64_t nrb, char *text) {
  if (!op) {
    free(text);
    return;
  }
  op->step = step;
  op->seq = seq;
  op->gen = gen;
  op->nrb = nrb;
  op->text = text;
}

/* Loop thread: a must-write ended; the head action goes on where it stopped. */
static void must_done(void *ud, void *p, const gy_jwriter_result_t *r) {
  gy_service_t *s = ud;
  jop_t *op = p;
  const char *what = op->kind == JOP_CKPT     ? "checkpoint manifest"
                     : op->kind == JOP_INTENT ? "rollback intent"
                                              : "rollback applied";
  if (r->rc)
    gy__svc_eventf(s, GY_EVENT_ERROR, "journal: gave up writing the %s after 10 minutes: %s", what,
                   r->errmsg);
  else if (r->tries > 1)
    gy__svc_eventf(s, GY_EVENT_STORE,
                   "journal: the store answered again after %lld ms; the %s is written",
                   (long long)r->elapsed_ms, what);
  s->waiting = 0;
  s->head_state = HEAD_WRITTEN;
  gy__svc_drain(s);
}

/* Submits a record that must precede what follows it (see the design block). Returns 1 when
 * the caller waits (the head action resumes at HEAD_WRITTEN once it is written or given up),
 * 0 when there is nothing to wait for (no journal; out of memory, logged: the run goes on as
 * after a give-up). JOURNAL_CKPT: step, arg = clean; JOURNAL_INTENT: the directive a;
 * JOURNAL_APPLIED: step = to_step, arg = the rollback's seq. */
int gy__svc_journal_must(gy_service_t *s, const char *what, journal_op_t kind, int64_t step,
                         uint64_t arg, const gy_fleet_action_t *a) {
  if (!s->o.journal || !s->jw) return 0;
  jop_t *op = gy__svc_jop(s, kind == JOURNAL_CKPT     ? JOP_CKPT
                             : kind == JOURNAL_INTENT ? JOP_INTENT
                                                      : JOP_APPLIED);
  if (!op) return 0;
  op->step = step;
  if (kind == JOURNAL_CKPT) {
    op->flag = (int)arg;
  } else if (kind == JOURNAL_INTENT) {
    op->in = (gy_journal_intent_t){.seq = a->seq,
                                   .kind = a->dir_kind,
                                   .at_step = a->step,
                                   .to_step = a->to_step,
                                   .nskip = a->nskip};
    snprintf(op->in.reason, sizeof(op->in.reason), "%.199s", a->msg);
    if (a->nskip > 0) {
      op->in.skip = malloc((size_t)a->nskip * sizeof(*op->in.skip));
      if (!op->in.skip) {
        jop_free(op);
        gy_log(GY_LOG_ERROR, "controller", "journal: out of memory: the %s is not written", what);
        return 0;
      }
      memcpy(op->in.skip, a->skip, (size_t)a->nskip * sizeof(*op->in.skip));
    }
    op->text = gy_run_save(s->run); /* the repair history that decided it */
  } else {
    op->seq = arg;
    op->gen = gy_repair_generation(s->repair);
    op->id = s->journaled_seq;
    op->nrb = (int64_t)gy_fleet_nrollbacks(s->fleet);
    op->nskips = s->in_force.n;
    if (op->nskips) {
      op->skips = malloc(op->nskips * sizeof(*op->skips));
      if (!op->skips) {
        jop_free(op);
        gy_log(GY_LOG_ERROR, "controller", "journal: out of memory: the %s is not written", what);
        return 0;
      }
      memcpy(op->skips, s->in_force.r, op->nskips * sizeof(*op->skips));
    }
  }
  gy_jwriter_req_t req = {
      .what = what, .must = 1, .run = jop_run, .free_op = jop_free, .done = must_done, .ud = s};
  if (gy_jwriter_submit(s->jw, &req, op)) return 0;
  s->waiting = 1;
  s->head_state = HEAD_WRITING;
  return 1;
}

/* An event, best effort (the journal keeps what fails in memory and writes it first later). */
void gy__svc_journal_event(gy_service_t *s, uint64_t id, double t, int64_t step, const char *kind,
                           const char *msg) {
  if (!s->o.journal || !s->jw) return;
  jop_t *op = gy__svc_jop(s, JOP_EVENT);
  if (!op) return;
  op->id = id;
  op->time = t;
  op->step = step;
  snprintf(op->ekind, sizeof(op->ekind), "%s", kind);
  if (!(op->text = strdup(msg))) {
    jop_free(op);
    return;
  }
  gy_jwriter_req_t req = {.what = "event", .run = jop_run, .free_op = jop_free};
  gy_jwriter_submit(s->jw, &req, op);
}

/* Submits op (from gy__svc_jop, filled; NULL is a no-op) as a best-effort write: tried once, a
 * failure logged as "journal: <what>: <error>". The writer owns op. */
void gy__svc_journal_best(gy_service_t *s, jop_t *op, const char *what) {
  if (!op) return;
  if (!s->o.journal || !s->jw) {
    jop_free(op);
    return;
  }
  gy_jwriter_req_t req = {.what = what, .run = jop_run, .free_op = jop_free};
  gy_jwriter_submit(s->jw, &req, op);
}

/* Loop thread: the fence answered. 0: this controller leads, the head action goes on; else
 * (the fence's caller has stopped everything) the head action is dropped, and the next one
 * asks again. */
static void fence_done(void *ud, void *p, const gy_jwriter_result_t *r) {
  gy_service_t *s = ud;
  (void)p;
  s->waiting = 0;
  if (!r->rc) {
    s->fence_ok_ms = mono_ms();
    s->head_state = HEAD_FENCED;
  } else {
    s->ahead++;
    s->head_state = HEAD_NEW;
  }
  gy__svc_drain(s);
}

/* Asks the fence on the writer's thread, behind the writes submitted before. Returns 1 (the
 * head action waits for fence_done), 0 when it cannot be asked (out of memory: the head
 * action is dropped, as when the fence says no). */
int gy__svc_fence_submit(gy_service_t *s) {
  jop_t *op = s->jw ? gy__svc_jop(s, JOP_FENCE) : NULL;
  if (!op) return 0;
  op->fence = s->o.fence;
  op->fence_ud = s->o.fence_ud;
  gy_jwriter_req_t req = {
      .what = "fence check", .run = jop_run, .free_op = jop_free, .done = fence_done, .ud = s};
  if (gy_jwriter_submit(s->jw, &req, op)) return 0;
  s->waiting = 1;
  return 1;
}

/* At create, with a journal that holds the run: the events (the audit log goes on with the
 * next id), the skips in force, the committed checkpoints (the gang re-forms from the newest),
 * the generation and directive numbers, and a rollback that was committed but never confirmed
 * is completed: its skips are in force and the checkpoints after its target are forgotten, so
 * the re-formed gang restores that target with the skips (the Assignment carries them). */
int gy__svc_recover(gy_service_t *s, char *errmsg, size_t errlen) {
  /* Synchronous on purpose: this runs in gy_service_create, before the server serves and
   * before the writer's thread starts, so nothing waits for it but the caller. */
  gy_journal_state_t st;
  int rc = gy_journal_load(s->o.journal, &st, EVLOG_MAX, errmsg, errlen);
  if (rc) return rc;
  if (!st.found) {
    gy_journal_state_free(&st);
    return 0;
  }
  for (size_t i = 0; i < st.nevents; i++) {
    const gy_journal_event_t *e = &st.events[i];
    evrec_t *r = &s->evlog[(e->id - 1) % EVLOG_MAX];
    r->id = e->id;
    r->time = e->time;
    r->step = e->step;
    snprintf(r->kind, sizeof(r->kind), "%s", e->kind);
    snprintf(r->msg, sizeof(r->msg), "%s", e->text);
  }
  s->event_id = st.last_event_id;
  for (size_t i = 0; i < st.nskips && !rc; i++)
    rc = gy_skipset_add(&s->in_force, st.skips[i].first, st.skips[i].last);
  int64_t cut = INT64_MAX;
  uint64_t seq = st.last_seq;
  int ncompleted = 0;
  for (size_t i = 0; i < st.nintents && !rc; i++) {
    const gy_journal_intent_t *in = &st.intents[i];
    if (in->seq > seq) seq = in->seq;
    if (in->kind != GY_DIR_ROLLBACK) continue;
    for (int k = 0; k < in->nskip && !rc; k++)
      rc = gy_skipset_add(&s->in_force, in->skip[k].first, in->skip[k].last);
    if (in->to_step < cut) cut = in->to_step;
    ncompleted++;
  }
  /* A checkpoint committed while a spike was suspected (suspect) may hold what the spike did:
   * the gang re-forms from the newest clean one, and the steps after it run again under the
   * successor's eyes (the suspicion itself was not journaled). */
  int64_t newest_clean = -1;
  for (size_t i = 0; i < st.nckpts; i++)
    if (st.ckpts[i].clean && st.ckpts[i].step <= cut && st.ckpts[i].step > newest_clean)
      newest_clean = st.ckpts[i].step;
  if (newest_clean >= 0) cut = newest_clean;
  int64_t *steps = calloc(st.nckpts ? st.nckpts : 1, sizeof(*steps)), newest = -1;
  int n = 0;
  if (!steps && !rc) rc = GY_ENOMEM;
  for (size_t i = 0; i < st.nckpts && !rc; i++) {
    if (st.ckpts[i].step > cut) continue; /* the abandoned timeline of a completed rollback */
    steps[n++] = st.ckpts[i].step;
    if (st.ckpts[i].step > newest) newest = st.ckpts[i].step;
    gy_run_checkpoint(s->run, gy__svc_now_ms(s), st.ckpts[i].step, st.ckpts[i].clean, NULL);
    if (st.ckpts[i].eval) gy__svc_ckeval_from_json(s, st.ckpts[i].step, st.ckpts[i].eval);
  }
  /* the detectors' baselines as of the checkpoint the gang re-forms from, and the repairs the
   * escalation counts */
  for (size_t i = 0; i < st.nbase && !rc; i++)
    if (st.base_steps[i] == newest &&
        gy_run_load(s->run, st.base_texts[i], GY_RUN_LOAD_BASELINES, errmsg, errlen))
      gy_log(GY_LOG_WARN, "controller", "journal: baselines of %lld: %s", (long long)newest,
             errmsg);
  if (!rc && st.run_snapshot &&
      gy_run_load(s->run, st.run_snapshot, GY_RUN_LOAD_REPAIRS, errmsg, errlen))
    gy_log(GY_LOG_WARN, "controller", "journal: repair history: %s", errmsg);
  errmsg[0] = 0;
  gy_run_clear(s->run); /* those commits are history, not news */
  if (!rc) rc = gy_fleet_restore(s->fleet, steps, n, st.generation, seq);
  free(steps);
  if (rc) {
    snprintf(errmsg, errlen, "journal: cannot restore the run's record: %s", gy_strerror(rc));
    gy_journal_state_free(&st);
    return rc;
  }
  s->journaled_seq = seq;
  s->recovered_done = st.done;
  s->journaled_hold = st.hold;
  gy_repair_recovered(s->repair, st.hold, st.hold_why);
  gy__svc_eventf(
      s, GY_EVENT_RECOVERED,
      "restarted from the journal %s: %zu events, %d committed checkpoints (newest %lld), %zu "
      "skip ranges in force, generation %llu, directive %llu%s",
      gy_journal_prefix(s->o.journal), st.nevents, n, (long long)newest, s->in_force.n,
      (unsigned long long)st.generation, (unsigned long long)seq,
      ncompleted ? "; a rollback committed before the restart is completed" : "");
  for (size_t i = 0; i < st.nintents; i++) { /* completed above, or dropped */
    const gy_journal_intent_t *in = &st.intents[i];
    char err[256];
    if (in->kind == GY_DIR_ROLLBACK)
      rc = gy_journal_applied(s->o.journal, in->seq, in->to_step, s->in_force.r, s->in_force.n, err,
                              sizeof(err));
    else
      rc = gy_journal_dropped(s->o.journal, in->seq, err, sizeof(err));
    if (rc)
      gy_log(GY_LOG_WARN, "controller", "journal: intent %llu: %s", (unsigned long long)in->seq,
             err);
    rc = 0;
  }
  gy_journal_state_free(&st);
  return 0;
}

/* Loop thread: a hold write failed: the next drain writes the hold key again. */
static void hold_done(void *ud, void *p, const gy_jwriter_result_t *r) {
  gy_service_t *s = ud;
  jop_t *op = p;
  if (!r->rc) return;
  gy_log(GY_LOG_WARN, "controller", "journal: hold: %s", r->errmsg);
  if (s->journaled_hold == op->flag) s->journaled_hold = -1;
}

/* The journal's hold key follows the run: paused (by the operator, or a deferred pause) or
 * halted, so that a successor holds the re-formed gang the same way. */
void gy__svc_journal_hold(gy_service_t *s) {
  if (!s->o.journal || !s->jw || gy_repair_recovered_hold(s->repair))
    return; /* a recovered hold is not applied yet */
  gy_run_state_t rs = gy_run_state(s->run);
  int h = rs == GY_RUN_HALTED                                                    ? 2
          : (rs == GY_RUN_PAUSED || gy_fleet_state(s->fleet) == GY_FLEET_PAUSED) ? 1
                                                                                 : 0;
  if (h == s->journaled_hold) return;
  jop_t *op = gy__svc_jop(s, JOP_HOLD);
  if (!op) return;
  op->flag = h;
  if (h && !(op->text = strdup(h == 2 ? "halted" : "paused"))) {
    jop_free(op);
    return;
  }
  gy_jwriter_req_t req = {
      .what = "hold", .run = jop_run, .free_op = jop_free, .done = hold_done, .ud = s};
  if (!gy_jwriter_submit(s->jw, &req, op)) s->journaled_hold = h;
}
