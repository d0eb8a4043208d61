/*
 * core_journal: the core's records in the journal (controller/journal.h), handed to the io
 * (controller/io.h, which writes them off the loop thread), and the recovery from what a
 * journal held at load.
 *
 * API, in order: jrec, journal_must, journal_best, fence_submit, journal_hold, recover.
 *
 * What a record writes is copied into it when it is made (snapshots, skip ranges, generation
 * and directive numbers), so the writer never reads the core.
 *
 * journal_must gives the io a record that must precede what follows it (a checkpoint's
 * manifest before the commit's later effects, a rollback's intent before a rank can act on it,
 * an applied rollback's skips): the head of the action queue (core.c drain()) waits for
 * gy_core_journaled while the inputs go on; the service's writer retries through a store
 * outage with back-off for up to 10 minutes, then gives it up (an error event) and the
 * controller goes on without it. The workers park at their granted horizon meanwhile and keep
 * sending heartbeats, so the liveness verdicts need no grace after an outage.
 *
 * Invariants:
 * - journaled_seq is the newest rollback whose intent was written (or given up);
 *   journaled_hold is what the hold key says once the writes handed over so far are done (-1:
 *   unknown after a failed write, so the next drain writes it again).
 * - The other records (generation, baselines, evaluations, done, dropped) are best effort: a
 *   failure is logged and the run goes on.
 * - waiting is 1 while the head action waits for the io; nothing else is acted meanwhile.
 */
#include "controller/core_internal.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/log.h"

/* A new record of kind named what (NULL: out of memory, logged). */
gy_jrec_t *gy__core_jrec(gy_core_t *c, gy_jrec_kind_t kind, const char *what) {
  (void)c;
  gy_jrec_t *r = gy_jrec_new(kind);
  if (!r) {
    gy_log(GY_LOG_ERROR, "controller", "journal: out of memory: the %s is not written", what);
    return NULL;
  }
  snprintf(r->what, sizeof(r->what), "%s", what);
  return r;
}

/* Hands a record that must precede what follows it to the io (see the design block). Returns
 * 1 when the caller waits (the head action resumes at HEAD_WRITTEN once it is written or given
 * up), 0 when there is nothing to wait for (no journal; out of memory, logged: the run goes on
 * as after a give-up). JOURNAL_CKPT: step, arg = clean; JOURNAL_INTENT: the directive a;
 * JOURNAL_APPLIED: step = to_step, arg = the rollback's seq. */
int gy__core_journal_must(gy_core_t *c, const char *what, journal_op_t kind, int64_t step,
                          uint64_t arg, const gy_fleet_action_t *a) {
  if (!c->o.journal) return 0;
  gy_jrec_t *r = gy__core_jrec(c,
                               kind == JOURNAL_CKPT     ? GY_JREC_CKPT
                               : kind == JOURNAL_INTENT ? GY_JREC_INTENT
                                                        : GY_JREC_APPLIED,
                               what);
  if (!r) return 0;
  r->must = r->notify = 1;
  r->step = step;
  if (kind == JOURNAL_CKPT) {
    r->flag = (int)arg;
  } else if (kind == JOURNAL_INTENT) {
    r->in = (gy_journal_intent_t){.seq = a->seq,
                                  .kind = a->dir_kind,
                                  .at_step = a->step,
                                  .to_step = a->to_step,
                                  .nskip = a->nskip};
    snprintf(r->in.reason, sizeof(r->in.reason), "%.199s", a->msg);
    if (a->nskip > 0) {
      r->in.skip = malloc((size_t)a->nskip * sizeof(*r->in.skip));
      if (!r->in.skip) goto oom;
      memcpy(r->in.skip, a->skip, (size_t)a->nskip * sizeof(*r->in.skip));
    }
    r->text = gy_run_save(c->run); /* the repair history that decided it */
  } else {
    r->seq = arg;
    r->gen = gy_repair_generation(c->repair);
    r->id = c->journaled_seq;
    r->nrb = (int64_t)gy_fleet_nrollbacks(c->fleet);
    r->nskips = c->in_force.n;
    if (r->nskips) {
      if (!(r->skips = malloc(r->nskips * sizeof(*r->skips)))) goto oom;
      memcpy(r->skips, c->in_force.r, r->nskips * sizeof(*r->skips));
    }
  }
  if (c->io.journal(c->io.ud, r)) return 0;
  c->waiting = 1;
  c->head_state = HEAD_WRITING;
  return 1;
oom:
  gy_jrec_free(r);
  gy_log(GY_LOG_ERROR, "controller", "journal: out of memory: the %s is not written", what);
  return 0;
}

/* Hands r (from gy__core_jrec, filled; NULL is a no-op) to the io as a best-effort write:
 * tried once, a failure logged. */
void gy__core_journal_best(gy_core_t *c, gy_jrec_t *r) {
  if (!r) return;
  if (!c->o.journal) {
    gy_jrec_free(r);
    return;
  }
  c->io.journal(c->io.ud, r);
}

/* Asks the fence, behind the writes handed over before. Returns 1 (the head action waits for
 * gy_core_fenced), 0 when it cannot be asked (the head action is dropped, as when the fence
 * says no). */
int gy__core_fence_submit(gy_core_t *c) {
  if (c->io.fence(c->io.ud)) return 0;
  c->waiting = 1;
  return 1;
}

/* The journal's hold key follows the run: paused (by the operator, or a deferred pause) or
 * halted, so that a successor holds the re-formed gang the same way. */
void gy__core_journal_hold(gy_core_t *c) {
  if (!c->o.journal || gy_repair_recovered_hold(c->repair))
    return; /* a recovered hold is not applied yet */
  gy_run_state_t rs = gy_run_state(c->run);
  int h = rs == GY_RUN_HALTED                                                    ? 2
          : (rs == GY_RUN_PAUSED || gy_fleet_state(c->fleet) == GY_FLEET_PAUSED) ? 1
                                                                                 : 0;
  if (h == c->journaled_hold) return;
  gy_jrec_t *r = gy__core_jrec(c, GY_JREC_HOLD, "hold");
  if (!r) return;
  r->flag = h;
  r->notify = 1;
  if (h && !(r->text = strdup(h == 2 ? "halted" : "paused"))) {
    gy_jrec_free(r);
    return;
  }
  if (!c->io.journal(c->io.ud, r)) c->journaled_hold = h;
}

/* What a journal that holds the run said: the skips in force, the committed checkpoints (the
 * gang re-forms from the newest), the quarantine list, the generation and directive numbers,
 * and a rollback that
 * was committed but never confirmed is completed: its skips are in force and the checkpoints
 * after its target are forgotten, so the re-formed gang restores that target with the skips
 * (the Assignment carries them). The events are the caller's (its audit log). */
int gy_core_recover(gy_core_t *c, const gy_journal_state_t *st, const char *prefix, char *errmsg,
                    size_t errlen) {
  if (!st->found) return 0;
  int rc = 0;
  for (size_t i = 0; i < st->nskips && !rc; i++)
    rc = gy_skipset_add(&c->in_force, st->skips[i].first, st->skips[i].last);
  int64_t cut = INT64_MAX;
  uint64_t seq = st->last_seq;
  int ncompleted = 0;
  for (size_t i = 0; i < st->nintents && !rc; i++) {
    const gy_journal_intent_t *in = &st->intents[i];
    if (in->seq > seq) seq = in->seq;
    if (in->kind != GY_DIR_ROLLBACK) continue;
    for (int k = 0; k < in->nskip && !rc; k++)
      rc = gy_skipset_add(&c->in_force, in->skip[k].first, in->skip[k].last);
    if (in->to_step < cut) cut = in->to_step;
    ncompleted++;
  }
  /* A checkpoint committed while a spike was suspected (suspect) may hold what the spike did:
   * the gang re-forms from the newest clean one, and the steps after it run again under the
   * successor's eyes (the suspicion itself was not journaled). */
  int64_t newest_clean = -1;
  for (size_t i = 0; i < st->nckpts; i++)
    if (st->ckpts[i].clean && st->ckpts[i].step <= cut && st->ckpts[i].step > newest_clean)
      newest_clean = st->ckpts[i].step;
  if (newest_clean >= 0) cut = newest_clean;
  int64_t *steps = calloc(st->nckpts ? st->nckpts : 1, sizeof(*steps)), newest = -1;
  int n = 0;
  if (!steps && !rc) rc = GY_ENOMEM;
  for (size_t i = 0; i < st->nckpts && !rc; i++) {
    if (st->ckpts[i].step > cut) continue; /* the abandoned timeline of a completed rollback */
    steps[n++] = st->ckpts[i].step;
    if (st->ckpts[i].step > newest) newest = st->ckpts[i].step;
    gy_run_checkpoint(c->run, gy__core_now(c), st->ckpts[i].step, st->ckpts[i].clean, NULL);
    if (st->ckpts[i].eval) gy__core_ckeval_from_json(c, st->ckpts[i].step, st->ckpts[i].eval);
  }
  /* the detectors' baselines as of the checkpoint the gang re-forms from, and the repairs the
   * escalation counts */
  for (size_t i = 0; i < st->nbase && !rc; i++)
    if (st->base_steps[i] == newest &&
        gy_run_load(c->run, st->base_texts[i], GY_RUN_LOAD_BASELINES, errmsg, errlen))
      gy_log(GY_LOG_WARN, "controller", "journal: baselines of %lld: %s", (long long)newest,
             errmsg);
  if (!rc && st->run_snapshot &&
      gy_run_load(c->run, st->run_snapshot, GY_RUN_LOAD_REPAIRS, errmsg, errlen))
    gy_log(GY_LOG_WARN, "controller", "journal: repair history: %s", errmsg);
  errmsg[0] = 0;
  gy_run_clear(c->run); /* those commits are history, not news */
  if (!rc) rc = gy_fleet_restore(c->fleet, steps, n, st->generation, seq);
  free(steps);
  if (rc) {
    snprintf(errmsg, errlen, "journal: cannot restore the run's record: %s", gy_strerror(rc));
    return rc;
  }
  int nquar = gy__core_quar_recover(c, st);
  c->journaled_seq = seq;
  c->recovered_done = st->done;
  c->journaled_hold = st->hold;
  gy_repair_recovered(c->repair, st->hold, st->hold_why);
  gy__core_eventf(
      c, GY_EVENT_RECOVERED,
      "restarted from the journal %s: %zu events, %d committed checkpoints (newest %lld), %zu "
      "skip ranges in force, %d quarantine entries, generation %llu, directive %llu%s",
      prefix ? prefix : "", st->nevents, n, (long long)newest, c->in_force.n, nquar,
      (unsigned long long)st->generation, (unsigned long long)seq,
      ncompleted ? "; a rollback committed before the restart is completed" : "");
  return 0;
}
