/*
 * svc_journal: the service's records in the journal (controller/journal.h) that must not be
 * lost, and the recovery from the journal at create.
 *
 * API, in order: journal_must, recover, journal_hold.
 *
 * journal_must writes a record that must precede what follows it (a checkpoint's manifest
 * before the checkpoint is used, a rollback's intent before a rank can act on it, an applied
 * rollback's skips), holding the loop through a store outage. recover restores the service from
 * a journal that holds the run and completes a rollback that was committed but never confirmed.
 * journal_hold keeps the journal's hold key in step with the run.
 *
 * Invariants:
 * - journaled_seq is the newest rollback whose intent is in the journal; journaled_hold is what
 *   the hold key says now.
 * - The other journal writes (events, generation, baselines, done) are best effort: a failure
 *   is logged (or ignored, for events) and the run goes on.
 */
#include "controller/service_internal.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/log.h"

/* Writes one record that must precede what follows it (the directive is not sent, the
 * checkpoint not used, until it is in the store). A store outage holds the loop here, retrying
 * with back-off: the workers park at their horizon meanwhile, and once the store answers the
 * liveness verdicts wait one lost_after_ms so that parked workers are not declared lost. After
 * 10 minutes the record is given up (an error event) and the controller goes on without it.
 * JOURNAL_CKPT: step, arg = clean; JOURNAL_INTENT: the directive a; JOURNAL_APPLIED: step =
 * to_step, arg = the rollback's seq. */
void gy__svc_journal_must(gy_service_t *s, const char *what, journal_op_t op, int64_t step,
                          uint64_t arg, const gy_fleet_action_t *a) {
  if (!s->o.journal) return;
  char err[512] = "";
  int64_t t0 = gy__svc_now_ms(s), backoff = 100, outage = 0;
  for (;;) {
    int rc;
    if (op == JOURNAL_CKPT) {
      rc = gy_journal_checkpoint(s->o.journal, step, (int)arg, err, sizeof(err));
    } else if (op == JOURNAL_INTENT) {
      gy_journal_intent_t in = {.seq = a->seq,
                                .kind = a->dir_kind,
                                .at_step = a->step,
                                .to_step = a->to_step,
                                .skip = (gy_fleet_skip_t *)a->skip,
                                .nskip = a->nskip};
      snprintf(in.reason, sizeof(in.reason), "%.199s", a->msg);
      char *snap = gy_run_save(s->run); /* the repair history that decided it */
      rc = gy_journal_intent(s->o.journal, &in, snap, err, sizeof(err));
      free(snap);
    } else {
      rc = gy_journal_applied(s->o.journal, arg, step, s->in_force.r, s->in_force.n, err,
                              sizeof(err));
      if (!rc)
        rc = gy_journal_state(s->o.journal, gy_repair_generation(s->repair), s->journaled_seq,
                              (int64_t)gy_fleet_nrollbacks(s->fleet), err, sizeof(err));
    }
    if (!rc) break;
    if (!outage++)
      gy_log(GY_LOG_ERROR, "controller",
             "journal: cannot write the %s: %s; holding the run until the store answers", what,
             err);
    uv_update_time(s->loop);
    if (gy__svc_now_ms(s) - t0 > 600000) {
      gy__svc_eventf(s, "error", "journal: gave up writing the %s after 10 minutes: %s", what, err);
      break;
    }
    uv_sleep((unsigned)backoff);
    backoff = backoff < 2000 ? backoff * 2 : 2000;
  }
  if (outage) {
    uv_update_time(s->loop);
    s->tick_grace_until = gy__svc_now_ms(s) + s->o.lost_after_ms;
    gy__svc_eventf(s, "store", "journal: the store answered again after %lld ms; the %s is written",
                   (long long)(gy__svc_now_ms(s) - t0), what);
  }
}

/* At create, with a journal that holds the run: the events (the audit log goes on with the
 * next id), the skips in force, the committed checkpoints (the gang re-forms from the newest),
 * the generation and directive numbers, and a rollback that was committed but never confirmed
 * is completed: its skips are in force and the checkpoints after its target are forgotten, so
 * the re-formed gang restores that target with the skips (the Assignment carries them). */
int gy__svc_recover(gy_service_t *s, char *errmsg, size_t errlen) {
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
      s, "recovered",
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

/* The journal's hold key follows the run: paused (by the operator, or a deferred pause) or
 * halted, so that a successor holds the re-formed gang the same way. */
void gy__svc_journal_hold(gy_service_t *s) {
  if (!s->o.journal || gy_repair_recovered_hold(s->repair))
    return; /* a recovered hold is not applied yet */
  gy_run_state_t rs = gy_run_state(s->run);
  int h = rs == GY_RUN_HALTED                                                    ? 2
          : (rs == GY_RUN_PAUSED || gy_fleet_state(s->fleet) == GY_FLEET_PAUSED) ? 1
                                                                                 : 0;
  if (h == s->journaled_hold) return;
  char err[256];
  if (gy_journal_hold(s->o.journal, h, h == 2 ? "halted" : h ? "paused" : NULL, err, sizeof(err)))
    gy_log(GY_LOG_WARN, "controller", "journal: hold: %s", err);
  else
    s->journaled_hold = h;
}
