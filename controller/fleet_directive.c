/*
 * fleet_directive: the fleet's directives (see fleet.c): the operator's commands and rollbacks,
 * queued, sent to every rank at one step, acked, and their effect.
 *
 * API, in order: ack, command, rollback (gy_fleet_ack, gy_fleet_command, gy_fleet_rollback of
 * fleet.h); for fleet.c: send_directive, pump, check_acks; quarantine (gy_fleet_quarantine: the
 * QUARANTINE and SET_GUARD directives, whose payloads live in a ring like the rollbacks').
 *
 * An operator command is queued; the head of the queue is "in flight": the horizon stays
 * frozen at H, and once every rank's steps_done == H the directive goes out with at_step = H;
 * when every alive rank acked, its effect happens (PAUSE -> PAUSED, RESUME -> TRAIN, STOP ->
 * DONE) and the next queued directive goes out at the same H, or grants resume. A ROLLBACK is
 * a queued directive like the others; its parameters live in a record of the rollback log (a
 * ring of the newest GY_FLEET_ROLLBACK_LOG), so that the DIRECTIVE action can point at its skip
 * ranges. When its acks are in, rollback_done() moves every rank, the history, the committed
 * list and the horizon back to to_step, or rollback_failed() handles refusals.
 *
 * Invariants:
 * - At most QUEUE_MAX directives are queued; a queued or in-flight ROLLBACK's record is among
 *   the newest QUEUE_MAX + 1 of the log, so the ring never frees a live one (the same for the
 *   payloads of QUARANTINE and SET_GUARD in theirs).
 * - An ack counts once per rank, and only for the directive in flight (others are stale).
 */
#include "controller/fleet_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/err.h"

void gy__fleet_send_directive(gy_fleet_t *f, int rank) {
  gy_fleet_action_t *a = gy__fleet_push(f, GY_FLEET_ACT_DIRECTIVE);
  if (!a) return;
  a->rank = rank;
  a->seq = f->inflight.seq;
  a->dir_kind = f->inflight.kind;
  a->hparams = f->inflight.hp;
  a->step = f->horizon;
  if (f->inflight.q) a->qdir = &f->inflight.q->pub;
  const rb_rec_t *rb = f->inflight.rb;
  if (rb) {
    a->to_step = rb->pub.to_step;
    a->nskip = rb->pub.nskip;
    a->skip = rb->skip;
    gy__fleet_copy_str(a->msg, sizeof(a->msg), rb->pub.reason);
  }
}

/* Moves the directive pipeline forward: takes the next queued directive, and sends the one in
 * flight once every rank stands at the horizon. */
void gy__fleet_pump(gy_fleet_t *f) {
  if (f->state != GY_FLEET_TRAIN && f->state != GY_FLEET_PAUSED) return;
  while (!f->inflight_on) {
    if (!f->nqueue) return;
    f->inflight = f->queue[0];
    memmove(f->queue, f->queue + 1, (size_t)(f->nqueue - 1) * sizeof(f->queue[0]));
    f->nqueue--;
    f->inflight_on = 1;
    f->inflight_sent = 0;
    /* an earlier rollback may have forgotten this one's checkpoint */
    if (f->inflight.rb && !gy__fleet_is_committed(f, f->inflight.rb->pub.to_step)) {
      char why[96];
      snprintf(why, sizeof(why), "the checkpoint of step %lld is no longer committed",
               (long long)f->inflight.rb->pub.to_step);
      gy__fleet_drop_directive(f, &f->inflight, why);
      f->inflight_on = 0;
    }
  }
  if (f->inflight_sent) return;
  /* every steps_done <= horizon, so all stand at the horizon iff the slowest does */
  if (gy__fleet_min_steps(f) != f->horizon) return;
  for (int r = 0; r < f->nmembers; r++)
    f->members[r].acked = 0;
  f->inflight_sent = 1;
  if (f->inflight.rb) {
    f->inflight.rb->pub.status = GY_FLEET_RB_SENT;
    f->inflight.rb->pub.at_step = f->horizon;
  }
  gy__fleet_send_directive(f, -1);
  gy__fleet_event(f, GY_EVENT_DIRECTIVE, f->horizon, "directive seq %llu %s sent, at_step %lld",
                  (unsigned long long)f->inflight.seq, gy_dir_kind_name(f->inflight.kind),
                  (long long)f->horizon);
  if (f->inflight.kind == GY_DIR_STOP) gy__fleet_transition(f, GY_FLEET_STOPPING, "operator stop");
}

/* Every rank restored ROLLBACK d's checkpoint: the gang stands at to_step. Steps from to_step
 * on are run again, so their figures leave the history; the committed checkpoints after
 * to_step belong to the abandoned timeline. */
void gy__fleet_rollback_done(gy_fleet_t *f, const directive_t *d) {
  rb_rec_t *rb = d->rb;
  int64_t to = rb->pub.to_step, h = f->horizon;
  for (int r = 0; r < f->nmembers; r++) {
    f->members[r].steps_done = to;
    f->members[r].ckpt_step = -1;
  }
  /* every rank stood at h, so the steps with figures are <= h - 1 */
  int64_t n = h - to < f->hcap ? h - to : f->hcap;
  for (int64_t s = h - 1; s > h - 1 - n; s--) {
    gy_fleet_step_t *st = &f->hist[s % f->hcap];
    if (st->step == s) st->step = -1;
  }
  f->last_step = to - 1;
  f->horizon = to;
  f->npending = 0;
  gy__fleet_forget_committed(f, to, 0);
  rb->pub.status = GY_FLEET_RB_APPLIED;
  f->rb_failed = 0;
  gy_fleet_action_t *a = gy__fleet_push(f, GY_FLEET_ACT_ROLLED_BACK);
  if (a) {
    a->step = to;
    a->seq = d->seq;
    a->ok = 1;
  }
  gy__fleet_event(
      f, GY_EVENT_ROLLBACK, to,
      "rollback seq %llu: every rank restored step %lld at step %lld (%lld steps to run "
      "again), %d skip ranges: %s",
      (unsigned long long)d->seq, (long long)to, (long long)h, (long long)(h - to), rb->pub.nskip,
      rb->pub.reason);
}

/* Some rank acked ROLLBACK d with ok false: it refused, its state unchanged (a rank that fails
 * half way exits instead: it is lost). The checkpoint of to_step cannot be restored, so it is
 * forgotten. Every rank refused: the gang still stands at the horizon, consistent; grants are
 * held until a rollback succeeds or the operator resumes. Some ranks restored and some did not:
 * the gang is split, the refusing ranks are lost (DEGRADED; the gang re-forms from the newest
 * committed checkpoint before to_step). */
void gy__fleet_rollback_failed(gy_fleet_t *f, const directive_t *d, int nok) {
  rb_rec_t *rb = d->rb;
  int64_t to = rb->pub.to_step, h = f->horizon;
  rb->pub.status = GY_FLEET_RB_FAILED;
  gy__fleet_forget_committed(f, to, 1);
  gy_fleet_action_t *a = gy__fleet_push(f, GY_FLEET_ACT_ROLLED_BACK);
  if (a) {
    a->step = to;
    a->seq = d->seq;
    a->ok = 0;
  }
  if (!nok) {
    f->rb_failed = 1;
    gy__fleet_event(
        f, GY_EVENT_ROLLBACK_FAILED, to,
        "rollback seq %llu: every rank refused to restore step %lld; the gang stays at step "
        "%lld, grants held until a rollback succeeds or the operator resumes",
        (unsigned long long)d->seq, (long long)to, (long long)h);
    return;
  }
  gy__fleet_event(
      f, GY_EVENT_ROLLBACK_FAILED, to,
      "rollback seq %llu: %d of %d ranks restored step %lld, the others refused: the gang is "
      "split and re-forms",
      (unsigned long long)d->seq, nok, f->nmembers, (long long)to);
  char why[96];
  snprintf(why, sizeof(why), "could not restore step %lld (rollback seq %llu)", (long long)to,
           (unsigned long long)d->seq);
  for (int r = 0; r < f->nmembers; r++)
    if (f->members[r].alive && !f->members[r].ack_ok) gy__fleet_lose(f, r, why);
}

/* Called when an ack or an exit may have completed the directive in flight. */
void gy__fleet_check_acks(gy_fleet_t *f) {
  if (!f->inflight_on || !f->inflight_sent) return;
  for (int r = 0; r < f->nmembers; r++)
    if (f->members[r].alive && !f->members[r].acked) return;
  directive_t d = f->inflight;
  f->inflight_on = f->inflight_sent = 0;
  gy__fleet_event(f, GY_EVENT_DIRECTIVE_APPLIED, f->horizon,
                  "directive seq %llu %s applied at step %lld", (unsigned long long)d.seq,
                  gy_dir_kind_name(d.kind), (long long)f->horizon);
  if (d.kind == GY_DIR_CHECKPOINT || d.kind == GY_DIR_STOP) {
    /* a rank acks these once its checkpoint of at_step is on disk: every rank alive and ok
     * commits it now (a STOP's would otherwise never be reported) */
    int all = 1, sized = 1; /* the size is known only when every rank said it */
    uint64_t bytes = 0;
    for (int r = 0; r < f->nmembers; r++) {
      const gy_fleet_member_t *m = &f->members[r];
      all &= m->alive && m->ack_ok;
      sized &= m->ack_bytes > 0;
      bytes += m->ack_bytes;
    }
    if (all) gy__fleet_commit(f, f->horizon, sized ? bytes : 0);
  }
  switch (d.kind) {
  case GY_DIR_ROLLBACK: {
    int nok = 0, nfail = 0;
    for (int r = 0; r < f->nmembers; r++)
      if (f->members[r].alive) f->members[r].ack_ok ? nok++ : nfail++;
    if (nfail) {
      gy__fleet_rollback_failed(f, &d, nok);
      if (nok) return; /* split: DEGRADED */
    } else {
      gy__fleet_rollback_done(f, &d);
    }
    break;
  }
  case GY_DIR_PAUSE:
    gy__fleet_transition(f, GY_FLEET_PAUSED, "operator pause");
    break;
  case GY_DIR_RESUME:
    if (f->state == GY_FLEET_PAUSED) gy__fleet_transition(f, GY_FLEET_TRAIN, "operator resume");
    if (f->rb_failed)
      gy__fleet_event(f, GY_EVENT_RESUMED, f->horizon,
                      "operator resume after a failed rollback: training goes on "
                      "from step %lld",
                      (long long)f->horizon);
    f->rb_failed = 0;
    break;
  case GY_DIR_STOP:
    gy__fleet_transition(f, GY_FLEET_DONE, "stopped");
    return;
  default:
    break;
  }
  gy__fleet_pump(f);
  gy__fleet_maybe_grant(f);
}

int gy_fleet_ack(gy_fleet_t *f, int64_t now, int stream_rank, uint64_t generation, uint64_t seq,
                 int rank, int ok, const char *error, uint64_t checkpoint_bytes) {
  int rc = gy__fleet_check_msg(f, "ack", stream_rank, generation, rank);
  if (rc) return rc;
  gy_fleet_member_t *m = &f->members[rank];
  m->last_seen_ms = now;
  if (!f->inflight_on || !f->inflight_sent || seq != f->inflight.seq) return 0; /* stale */
  if (!m->acked) {
    m->ack_ok = ok != 0;
    m->ack_bytes = ok ? checkpoint_bytes : 0;
    if (!ok)
      gy__fleet_event(f, GY_EVENT_DIRECTIVE_FAILED, f->horizon,
                      "rank %d failed directive seq %llu (%s): %s", rank, (unsigned long long)seq,
                      gy_dir_kind_name(f->inflight.kind), error ? error : "");
  }
  m->acked = 1;
  gy__fleet_check_acks(f);
  return 0;
}

/* Whether a directive of kind can be queued now (0), else the refusal. */
static int check_queueable(gy_fleet_t *f, int kind) {
  if (f->state != GY_FLEET_TRAIN && f->state != GY_FLEET_PAUSED)
    return gy__fleet_refuse(f, GY_ENOTSUP, "command %s: not possible in state %s",
                            gy_dir_kind_name(kind), gy_fleet_state_name(f->state));
  if (f->stop_intent)
    return gy__fleet_refuse(f, GY_ENOTSUP, "command %s: a stop is under way",
                            gy_dir_kind_name(kind));
  if (kind == GY_DIR_PAUSE && f->pause_intent)
    return gy__fleet_refuse(f, GY_ENOTSUP, "command PAUSE: already paused");
  if (kind == GY_DIR_RESUME && !f->pause_intent && !f->rb_failed)
    return gy__fleet_refuse(f, GY_ENOTSUP, "command RESUME: not paused");
  if (kind != GY_DIR_STOP && f->horizon >= f->o.steps)
    return gy__fleet_refuse(f, GY_ENOTSUP,
                            "command %s: the run ends at step %lld before it could apply",
                            gy_dir_kind_name(kind), (long long)f->o.steps);
  if (f->nqueue == QUEUE_MAX)
    return gy__fleet_refuse(f, GY_ENOTSUP, "command %s: %d commands already queued",
                            gy_dir_kind_name(kind), QUEUE_MAX);
  return 0;
}

int gy_fleet_command(gy_fleet_t *f, int64_t now, int kind, const gy_fleet_hparams_t *hp,
                     uint64_t *seq, int64_t *at_step) {
  (void)now;
  f->errmsg[0] = 0;
  if (kind == GY_DIR_ROLLBACK)
    return gy__fleet_refuse(f, GY_EINVAL,
                            "command ROLLBACK: needs a target step (gy_fleet_rollback)");
  if (kind < GY_DIR_PAUSE || kind > GY_DIR_SET_HPARAMS)
    return gy__fleet_refuse(f, GY_EINVAL, "command: unknown directive kind %d", kind);
  if (kind == GY_DIR_SET_HPARAMS && (!hp || !hp->present))
    return gy__fleet_refuse(f, GY_EINVAL, "command: SET_HPARAMS without any field present");
  int rc = check_queueable(f, kind);
  if (rc) return rc;
  directive_t *d = &f->queue[f->nqueue++];
  memset(d, 0, sizeof(*d));
  d->seq = ++f->seq;
  d->kind = kind;
  if (kind == GY_DIR_SET_HPARAMS) d->hp = *hp;
  if (kind == GY_DIR_PAUSE) f->pause_intent = 1;
  if (kind == GY_DIR_RESUME) f->pause_intent = 0;
  if (kind == GY_DIR_STOP) f->stop_intent = 1;
  *seq = d->seq;
  *at_step = f->horizon;
  gy__fleet_event(f, GY_EVENT_COMMAND, f->horizon, "operator %s: seq %llu, applies at step %lld",
                  gy_dir_kind_name(kind), (unsigned long long)d->seq, (long long)f->horizon);
  gy__fleet_pump(f);
  return 0;
}

int gy_fleet_rollback(gy_fleet_t *f, int64_t now, int64_t to_step, const gy_fleet_skip_t *skips,
                      int nskips, const gy_fleet_hparams_t *hp, const char *reason, uint64_t *seq,
                      int64_t *at_step) {
  (void)now;
  f->errmsg[0] = 0;
  if (to_step < 0)
    return gy__fleet_refuse(f, GY_EINVAL, "rollback: negative step %lld", (long long)to_step);
  if (nskips < 0 || nskips > GY_FLEET_MAX_SKIPS || (nskips && !skips))
    return gy__fleet_refuse(f, GY_EINVAL, "rollback to step %lld: %d skip ranges (at most %d)",
                            (long long)to_step, nskips, GY_FLEET_MAX_SKIPS);
  for (int i = 0; i < nskips; i++)
    if (skips[i].first >= skips[i].last)
      return gy__fleet_refuse(f, GY_EINVAL,
                              "rollback to step %lld: skip range %d [%llu, %llu) is empty",
                              (long long)to_step, i, (unsigned long long)skips[i].first,
                              (unsigned long long)skips[i].last);
  int rc = check_queueable(f, GY_DIR_ROLLBACK);
  if (rc) return rc;
  if (!gy__fleet_is_committed(f, to_step)) {
    if (f->ncommitted)
      return gy__fleet_refuse(f, GY_ENOENT,
                              "rollback to step %lld: no committed checkpoint of that step (newest "
                              "committed: %lld)",
                              (long long)to_step, (long long)f->committed[0]);
    return gy__fleet_refuse(f, GY_ENOENT, "rollback to step %lld: no checkpoint committed yet",
                            (long long)to_step);
  }
  rb_rec_t *rb = gy_calloc(1, sizeof(*rb));
  gy_fleet_skip_t *sk = nskips ? gy_malloc((size_t)nskips * sizeof(*sk)) : NULL;
  if (!rb || (nskips && !sk)) {
    gy_free(rb);
    gy_free(sk);
    return gy__fleet_refuse(f, GY_ENOMEM, "rollback to step %lld: out of memory",
                            (long long)to_step);
  }
  if (nskips) memcpy(sk, skips, (size_t)nskips * sizeof(*sk));
  rb->skip = sk;
  rb->pub.skip = sk;
  rb->pub.nskip = nskips;
  rb->pub.to_step = to_step;
  rb->pub.from_step = f->last_step + 1;
  rb->pub.at_step = f->horizon;
  rb->pub.status = GY_FLEET_RB_QUEUED;
  if (hp) rb->pub.hparams = *hp;
  gy__fleet_copy_str(rb->pub.reason, sizeof(rb->pub.reason), reason);
  rb_rec_t **slot = &f->rblog[f->nrb % GY_FLEET_ROLLBACK_LOG];
  if (*slot) { /* GY_FLEET_ROLLBACK_LOG requests old: long sent or dropped */
    gy_free((*slot)->skip);
    gy_free(*slot);
  }
  *slot = rb;
  f->nrb++;
  directive_t *d = &f->queue[f->nqueue++];
  memset(d, 0, sizeof(*d));
  d->seq = ++f->seq;
  d->kind = GY_DIR_ROLLBACK;
  d->hp = rb->pub.hparams;
  d->rb = rb;
  rb->pub.seq = d->seq;
  uint64_t nsamples = 0;
  for (int i = 0; i < nskips; i++)
    nsamples += skips[i].last - skips[i].first;
  *seq = d->seq;
  *at_step = f->horizon;
  gy__fleet_event(
      f, GY_EVENT_COMMAND, f->horizon,
      "rollback to step %lld: seq %llu, applies at step %lld, %d skip ranges (%llu samples): %s",
      (long long)to_step, (unsigned long long)d->seq, (long long)f->horizon, nskips,
      (unsigned long long)nsamples, rb->pub.reason);
  gy__fleet_pump(f);
  return 0;
}

void gy__fleet_q_free(q_rec_t *q) {
  if (!q) return;
  gy_free(q->entries);
  gy_free(q->strs);
  gy_free(q);
}

int gy_fleet_quarantine(gy_fleet_t *f, int64_t now, int kind, const gy_fleet_qdir_t *q,
                        uint64_t *seq, int64_t *at_step) {
  (void)now;
  f->errmsg[0] = 0;
  if (kind != GY_DIR_QUARANTINE && kind != GY_DIR_SET_GUARD)
    return gy__fleet_refuse(f, GY_EINVAL,
                            "quarantine: directive kind %d is neither QUARANTINE "
                            "nor SET_GUARD",
                            kind);
  int n = kind == GY_DIR_QUARANTINE ? q->nentries : 0;
  if (kind == GY_DIR_QUARANTINE && (n < 1 || n > GY_FLEET_MAX_QENTRIES || !q->entries))
    return gy__fleet_refuse(f, GY_EINVAL, "quarantine: %d entries (1..%d)", n,
                            GY_FLEET_MAX_QENTRIES);
  size_t bytes = 0;
  for (int i = 0; i < n; i++) {
    const gy_fleet_qentry_t *e = &q->entries[i];
    if (!e->channel || !e->channel[0] || !e->file || !e->file[0] || e->length < 1)
      return gy__fleet_refuse(f, GY_EINVAL,
                              "quarantine: entry %d has no channel, no file or no length", i);
    bytes += strlen(e->channel) + strlen(e->file) + 2;
  }
  int rc = check_queueable(f, kind);
  if (rc) return rc;
  q_rec_t *r = gy_calloc(1, sizeof(*r));
  gy_fleet_qentry_t *es = n ? gy_malloc((size_t)n * sizeof(*es)) : NULL;
  char *strs = bytes ? gy_malloc(bytes) : NULL;
  if (!r || (n && !es) || (bytes && !strs)) {
    gy_free(r);
    gy_free(es);
    gy_free(strs);
    return gy__fleet_refuse(f, GY_ENOMEM, "quarantine: out of memory");
  }
  char *p = strs;
  for (int i = 0; i < n; i++) {
    es[i] = q->entries[i];
    size_t lc = strlen(q->entries[i].channel) + 1, lf = strlen(q->entries[i].file) + 1;
    memcpy(p, q->entries[i].channel, lc);
    es[i].channel = p;
    p += lc;
    memcpy(p, q->entries[i].file, lf);
    es[i].file = p;
    p += lf;
  }
  r->entries = es;
  r->strs = strs;
  r->pub.entries = es;
  r->pub.nentries = n;
  if (kind == GY_DIR_SET_GUARD) r->pub.guard = q->guard;
  q_rec_t **slot = &f->qlog[f->nq % GY_FLEET_QLOG];
  gy__fleet_q_free(*slot); /* GY_FLEET_QLOG payloads old: long sent or dropped */
  *slot = r;
  f->nq++;
  directive_t *d = &f->queue[f->nqueue++];
  memset(d, 0, sizeof(*d));
  d->seq = ++f->seq;
  d->kind = kind;
  d->q = r;
  *seq = d->seq;
  *at_step = f->horizon;
  if (kind == GY_DIR_QUARANTINE)
    gy__fleet_event(f, GY_EVENT_COMMAND, f->horizon,
                    "quarantine: seq %llu, applies at step %lld, %d regions",
                    (unsigned long long)d->seq, (long long)f->horizon, n);
  else
    gy__fleet_event(f, GY_EVENT_COMMAND, f->horizon,
                    "guard settings: seq %llu, applies at step %lld", (unsigned long long)d->seq,
                    (long long)f->horizon);
  gy__fleet_pump(f);
  return 0;
}
