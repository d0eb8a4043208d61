/*
 * core_repair: the closed loop between the run state machine (controller/run.h, pure), the
 * repair coordinator (controller/repair.h, pure) and the fleet.
 *
 * API, in order: run_drain, run_refused, gang_formed, step, rolled_back, operator.
 *
 * The run is fed from the fleet's actions (core.c drain()) — the first ASSIGN of a generation
 * (gang formed: started, or the repair of a lost worker goes on), STEP (the step's losses,
 * per-channel losses, gradient norms, non-finite flag and rank 0's top samples), COMMITTED (a
 * checkpoint), ROLLED_BACK (the repair's rollback applied: rollback_done, skips_applied,
 * resumed — the one directive did all three; refused: restore_failed), LOST (worker_lost),
 * DONE — and its actions are carried out by run_drain(): ROLLBACK, PAUSE and HALT go to the
 * repair coordinator, ALERT is an event and an alert (io->alert); its events are events
 * (emit_run_event). The coordinator decides when the run's rollback is asked of the fleet and what
 * the run is told back; repair_drain() carries out its actions: ASK becomes gy_fleet_rollback
 * (ask_fleet: the decision's sample ids, plus its window of steps converted to the sample ids those
 * steps trained on, plus, after a re-formed gang, every earlier skip; knob factors times the run
 * config's values) and its outcome goes back to the coordinator; RUN_* are run inputs; HOLD
 * freezes the gang with a PAUSE. A repair asked while there is no gang waits for the next one
 * (gangs re-form from the fleet's newest committed checkpoint).
 *
 * Invariants:
 * - in_force is the skip list every worker has in force (data.skip plus the skips of every
 *   applied rollback), so step s on data-parallel rank r trained on the unskipped ids number
 *   (s*dp + r)*B ... +B-1 of it; a decision's window is converted before its own ranges are
 *   added. The fleet rollback carrying the run's repair is the coordinator's (IN_FLIGHT).
 * - run_drain() does not nest: run inputs made while it carries out an action leave their
 *   outputs for its loop, and fleet inputs leave theirs for drain()'s. repair_drain() carries
 *   out the coordinator's actions at once, where the run or the fleet asked for them.
 */
#include "controller/core_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/log.h"

/* ---------------------------------------- closed loop ---------------------------------------- */

/* The policy's knob changes as SET_HPARAMS fields: factors multiply the run config's values. */
static void knobs_to_hparams(const gy_core_t *c, const gy_policy_knobs_t *k,
                             gy_fleet_hparams_t *hp) {
  memset(hp, 0, sizeof(*hp));
  if ((k->set & GY_KNOB_LR_SCALE) && c->o.base_lr_scale > 0) {
    hp->lr_scale = (float)(c->o.base_lr_scale * k->lr_scale_factor);
    hp->present |= 1u << 0;
  }
  if ((k->set & GY_KNOB_GRAD_CLIP) && c->o.base_grad_clip > 0) {
    hp->grad_clip = (float)(c->o.base_grad_clip * k->grad_clip_factor);
    hp->present |= 1u << 1;
  }
  if ((k->set & GY_KNOB_EPS) && c->o.base_eps > 0) {
    hp->eps = (float)(c->o.base_eps * k->eps_factor);
    hp->present |= 1u << 2;
  }
  if (k->set & GY_KNOB_SHALLOW) {
    hp->shallow_scale = (float)k->shallow_scale;
    hp->shallow_layers = k->shallow_layers;
    hp->present |= (1u << 4) | (1u << 5);
  }
  if (k->set & GY_KNOB_Z_LOSS) {
    hp->z_loss = (float)k->z_loss;
    hp->present |= 1u << 6;
  }
  if (k->set & GY_KNOB_WSD_DECAY) {
    hp->wsd_decay_now = 1;
    hp->present |= GY_FLEET_HP_WSD_DECAY_NOW;
  }
}

/* A run event as a controller event: "FROM -> TO: reason; evidence: ...; decision: ...". */
static void emit_run_event(gy_core_t *c, const gy_run_event_t *e) {
  char msg[1400];
  size_t o = 0;
  if (e->from != e->to)
    o += (size_t)snprintf(msg, sizeof(msg), "%s -> %s: ", gy_run_state_name(e->from),
                          gy_run_state_name(e->to));
  o += (size_t)snprintf(msg + o, sizeof(msg) - o, "%s", e->reason);
  if (e->evidence[0] && o < sizeof(msg))
    o += (size_t)snprintf(msg + o, sizeof(msg) - o, "; evidence: %s", e->evidence);
  if (e->decision[0] && o < sizeof(msg))
    snprintf(msg + o, sizeof(msg) - o, "; decision: %s", e->decision);
  gy__core_event(c, e->kind, e->step, msg);
}

static void run_act(gy_core_t *c, const gy_run_action_t *a);

/* Emits the run's events and carries out its actions until there are none. Does not nest: an
 * input fed while carrying out an action leaves its outputs for the running loop. */
void gy__core_run_drain(gy_core_t *c) {
  if (c->run_draining) return;
  c->run_draining = 1;
  for (;;) {
    size_t ne, na;
    const gy_run_event_t *ev = gy_run_events(c->run, &ne);
    for (size_t i = 0; i < ne; i++)
      emit_run_event(c, &ev[i]);
    const gy_run_action_t *ac = gy_run_actions(c->run, &na);
    if (na > c->caprbuf) {
      gy_run_action_t *b = realloc(c->rbuf, na * sizeof(*b));
      if (!b) {
        gy_run_clear(c->run);
        gy_log(GY_LOG_ERROR, "controller", "out of memory: %zu run actions lost", na);
        break;
      }
      c->rbuf = b;
      c->caprbuf = na;
    }
    if (na) memcpy(c->rbuf, ac, na * sizeof(*ac));
    gy_run_clear(c->run);
    if (!ne && !na) break;
    for (size_t i = 0; i < na; i++)
      run_act(c, &c->rbuf[i]);
  }
  c->run_draining = 0;
  uint64_t dropped = gy_run_dropped(c->run);
  if (dropped != c->run_dropped) { /* a lost repair action can leave the run waiting */
    gy_log(GY_LOG_ERROR, "controller", "out of memory: the run dropped %llu actions or events",
           (unsigned long long)(dropped - c->run_dropped));
    c->run_dropped = dropped;
  }
}

/* Logs a run input the state machine refused (they are expected now and then: a checkpoint of
 * an abandoned timeline, figures out of order around a re-formed gang). */
void gy__core_run_refused(gy_core_t *c, const char *what, int rc) {
  if (rc) gy_log(GY_LOG_DEBUG, "controller", "run: %s refused: %s", what, gy_run_errmsg(c->run));
}

/* Freezes the gang for a halted run: a PAUSE directive when it trains (a paused or degraded
 * fleet gives no grants anyway; a gang formed later is paused when it forms). */
static void hold(gy_core_t *c) {
  if (gy_fleet_state(c->fleet) != GY_FLEET_TRAIN) return;
  uint64_t seq;
  int64_t at;
  int rc = gy_fleet_command(c->fleet, gy__core_now(c), GY_DIR_PAUSE, NULL, &seq, &at);
  if (rc) gy__core_eventf(c, GY_EVENT_ERROR, "cannot hold the gang: %s", gy_fleet_errmsg(c->fleet));
}

/* What the fleet is, for the repair coordinator. */
static gy_repair_fleet_t fleet_cond(const gy_core_t *c) {
  gy_fleet_state_t st = gy_fleet_state(c->fleet);
  if (st == GY_FLEET_DONE || st == GY_FLEET_STOPPING) return GY_REPAIR_FLEET_ENDED;
  return st == GY_FLEET_TRAIN || st == GY_FLEET_PAUSED ? GY_REPAIR_FLEET_GANG
                                                       : GY_REPAIR_FLEET_NO_GANG;
}

/* The coordinator's ASK: asks the fleet to roll back to target, skipping the decision's samples
 * and the sample ids of its step window (mapped over the skip set in force: they are the ids
 * those steps trained on), plus every earlier skip when a re-formed gang needs them again
 * (resend); then tells the coordinator how it went. */
static void ask_fleet(gy_core_t *c, int64_t target, int resend) {
  const gy_policy_decision_t *d = gy_repair_decision(c->repair);
  int64_t now = gy__core_now(c);
  gy_skipset_t add = {0};
  int rc = 0;
  for (int i = 0; i < d->nsamples && !rc; i++)
    rc = gy_skipset_add(&add, d->samples[i], d->samples[i] + 1);
  if (!rc && d->skip_steps) {
    int64_t a = d->step_first > target ? d->step_first : target, b = d->step_last;
    int tp = c->o.tp > 0 ? c->o.tp : 1;
    uint64_t per_step = (uint64_t)(c->o.world / tp) * (uint64_t)(c->o.batch > 0 ? c->o.batch : 0);
    if (!per_step)
      gy__core_eventf(c, GY_EVENT_ERROR,
                      "cannot skip the batches of steps [%lld, %lld): train.batch unknown",
                      (long long)d->step_first, (long long)d->step_last);
    else if (b > a)
      rc = gy_skipset_add_mapped(&add, &c->in_force, (uint64_t)a * per_step,
                                 (uint64_t)(b - a) * per_step);
  }
  for (size_t i = 0; resend && i < c->sent.n && !rc; i++)
    rc = gy_skipset_add(&add, c->sent.r[i].first, c->sent.r[i].last);
  gy_fleet_hparams_t hp;
  knobs_to_hparams(c, &d->knobs, &hp);
  if (rc) {
    gy_skipset_free(&add);
    gy_repair_asked(c->repair, now, GY_REPAIR_ASK_REFUSED, 0, "out of memory building the skips");
    return;
  }
  /* A gang that just formed from the target itself, with nothing to send, is repaired. */
  if (gy_repair_fresh_gang(c->repair) && gy_repair_formed_start(c->repair) == target && !add.n &&
      !hp.present) {
    gy_skipset_free(&add);
    gy_repair_asked(c->repair, now, GY_REPAIR_ASK_NOTHING, 0, NULL);
    return;
  }
  char reason[GY_FLEET_REASON_MAX];
  gy_policy_decision_format(d, reason, sizeof(reason));
  uint64_t seq = 0;
  int64_t at = 0;
  rc = add.n > GY_FLEET_MAX_SKIPS
           ? GY_EINVAL
           : gy_fleet_rollback(c->fleet, now, target, add.r, (int)add.n, &hp, reason, &seq, &at);
  size_t nadd = add.n;
  gy_skipset_free(&add);
  switch (rc) {
  case 0:
    gy_repair_asked(c->repair, now, GY_REPAIR_ASK_SENT, seq, NULL);
    break;
  case GY_ENOENT: /* the fleet no longer has that checkpoint: the run picks an older one */
    gy_repair_asked(c->repair, now, GY_REPAIR_ASK_NO_CHECKPOINT, 0, gy_fleet_errmsg(c->fleet));
    break;
  default: {
    char why[300];
    /* GY_ENOTSUP: e.g. the run ends before a directive could apply, or a stop is under way */
    if (nadd > GY_FLEET_MAX_SKIPS)
      snprintf(why, sizeof(why), "the repair needs %zu skip ranges (at most %d)", nadd,
               GY_FLEET_MAX_SKIPS);
    else
      snprintf(why, sizeof(why), "the fleet cannot roll back: %s", gy_fleet_errmsg(c->fleet));
    gy_repair_asked(c->repair, now, GY_REPAIR_ASK_REFUSED, 0, why);
  }
  }
}

/* Carries out one action of the repair coordinator. */
static void repair_act(gy_core_t *c, const gy_repair_action_t *a) {
  int64_t now = gy__core_now(c);
  switch (a->kind) {
  case GY_REPAIR_ACT_ASK:
    ask_fleet(c, a->step, a->resend);
    break;
  case GY_REPAIR_ACT_RUN_STARTED:
    gy__core_run_refused(c, "started", gy_run_started(c->run, now, a->step));
    break;
  case GY_REPAIR_ACT_RUN_DONE:
    gy__core_run_refused(c, "rollback done", gy_run_rollback_done(c->run, now, a->step));
    break;
  case GY_REPAIR_ACT_RUN_FAILED:
    gy__core_run_refused(c, "restore failed", gy_run_restore_failed(c->run, now, a->step, a->msg));
    break;
  case GY_REPAIR_ACT_RUN_HALT:
    gy__core_run_refused(c, "halt", gy_run_halt(c->run, now, a->msg));
    break;
  case GY_REPAIR_ACT_RUN_PAUSE:
    gy__core_run_refused(c, "pause", gy_run_pause(c->run, now));
    break;
  case GY_REPAIR_ACT_HOLD:
    hold(c);
    break;
  case GY_REPAIR_ACT_EVENT:
    if (a->event == GY_REPAIR_EV_DROPPED)
      gy__core_eventf(c, GY_EVENT_ROLLBACK_DROPPED,
                      "repair to checkpoint %lld dropped: the run is %s", (long long)a->step,
                      gy_fleet_state_name(gy_fleet_state(c->fleet)));
    else
      gy__core_eventf(c, GY_EVENT_RECOVERED, "%s", a->msg);
    break;
  }
}

/* Carries out the coordinator's actions (and logs its moves) until there are none; an ASK's
 * answer appends more. Returns the number of actions carried out. */
static size_t repair_drain(gy_core_t *c, const char *what, int rc) {
  if (rc)
    gy_log(GY_LOG_DEBUG, "controller", "repair: %s refused: %s", what, gy_repair_errmsg(c->repair));
  size_t total = 0;
  for (;;) {
    size_t nm, na;
    const gy_repair_move_t *m = gy_repair_moves(c->repair, &nm);
    for (size_t i = 0; i < nm; i++) {
      c->moves[m[i].from][m[i].to]++;
      gy_log(GY_LOG_DEBUG, "controller", "repair: %s -> %s (%s)", gy_repair_state_name(m[i].from),
             gy_repair_state_name(m[i].to), what);
    }
    const gy_repair_action_t *a = gy_repair_actions(c->repair, &na);
    gy_repair_action_t buf[GY_REPAIR_ACTS_MAX]; /* na never exceeds it */
    memcpy(buf, a, na * sizeof(*a));
    gy_repair_clear(c->repair);
    if (!na) break;
    total += na;
    for (size_t i = 0; i < na; i++)
      repair_act(c, &buf[i]);
  }
  return total;
}

static void run_act(gy_core_t *c, const gy_run_action_t *a) {
  int64_t now = gy__core_now(c);
  switch (a->kind) {
  case GY_RUN_ACT_ROLLBACK:
    repair_drain(c, "rollback",
                 gy_repair_run_rollback(c->repair, now, a->step, &a->decision, fleet_cond(c)));
    break;
  case GY_RUN_ACT_APPLY: /* the ROLLBACK directive carried the skips and knobs */
    gy__core_run_refused(c, "skips applied", gy_run_skips_applied(c->run, now));
    break;
  case GY_RUN_ACT_RESUME: /* the fleet grants again once a rollback is applied */
    if (gy_run_state(c->run) == GY_RUN_RESUME)
      gy__core_run_refused(c, "resumed", gy_run_resumed(c->run, now));
    break;
  case GY_RUN_ACT_PAUSE: /* a pause deferred until a repair ended (held unless the operator's) */
    repair_drain(c, "pause", gy_repair_run_pause(c->repair, now));
    break;
  case GY_RUN_ACT_HALT:
    repair_drain(c, "halt", gy_repair_run_halt(c->repair, now));
    break;
  case GY_RUN_ACT_ALERT:
    gy__core_event(c, GY_EVENT_ALERT, a->step, a->msg);
    c->io.alert(c->io.ud, gy_alert_class_name(a->alert_class), a->step, a->msg);
    break;
  case GY_RUN_ACT_DONE:
    break;
  }
}

/* A gang formed (the first ASSIGN of a new generation) and trains from start. */
void gy__core_gang_formed(gy_core_t *c, uint64_t generation, int64_t start) {
  if (c->o.journal) { /* the generation, so that a successor forms a newer one */
    gy_jrec_t *r = gy__core_jrec(c, GY_JREC_STATE, "state");
    if (r) {
      r->seq = c->journaled_seq;
      r->gen = generation;
      r->nrb = (int64_t)gy_fleet_nrollbacks(c->fleet);
    }
    gy__core_journal_best(c, r);
  }
  repair_drain(c, "gang formed",
               gy_repair_gang_formed(c->repair, gy__core_now(c), generation, start,
                                     gy_run_state(c->run), fleet_cond(c)));
  gy__core_run_drain(c);
}

/* One aggregated step feeds the detectors: losses (total and per channel), gradient norms,
 * non-finite flag, rank 0's top samples, and the guard's masked share. */
void gy__core_step(gy_core_t *c, int64_t step) {
  const gy_fleet_step_t *h = gy_fleet_history(c->fleet, step);
  if (!h) return;
  gy_repair_step(c->repair);
  char names[GY_FLEET_MAX_CH][GY_DETECT_NAME_MAX];
  int world = c->o.world;
  if (!c->vals) { /* once: world is fixed for the controller's life */
    c->vals = calloc((size_t)(GY_FLEET_MAX_CH + 3 + world), sizeof(*c->vals));
    c->tps_names = calloc((size_t)world, sizeof(*c->tps_names));
    if (!c->vals || !c->tps_names) {
      free(c->vals);
      free(c->tps_names);
      c->vals = NULL;
      c->tps_names = NULL;
      return;
    }
    for (int r = 0; r < world; r++)
      snprintf(c->tps_names[r], sizeof(c->tps_names[r]), "tokens_per_s/%d", r);
  }
  gy_run_value_t *v = c->vals;
  int nv = 0;
  v[nv++] = (gy_run_value_t){"loss", GY_SERIES_LOSS, h->loss, -1};
  for (int k = 0; k < h->nch; k++) {
    if (!h->ch[k].tokens) continue; /* the channel had no sample in this step */
    snprintf(names[k], sizeof(names[k]), "loss/%s", h->ch[k].name);
    v[nv++] = (gy_run_value_t){names[k], GY_SERIES_CHANNEL_LOSS,
                               h->ch[k].loss_sum / (double)h->ch[k].tokens, -1};
  }
  v[nv++] = (gy_run_value_t){"grad_norm", GY_SERIES_GRAD_NORM, h->grad_norm, -1};
  v[nv++] =
      (gy_run_value_t){"grad_norm_shallow", GY_SERIES_GRAD_NORM_SHALLOW, h->grad_norm_shallow, -1};
  /* each rank's tokens/s against its own baseline (alert-only: a sustained drop is told) */
  for (int r = 0; r < world; r++) {
    const gy_fleet_member_t *m = gy_fleet_member(c->fleet, r);
    if (m && m->alive && m->tokens_per_s > 0)
      v[nv++] = (gy_run_value_t){c->tps_names[r], GY_SERIES_THROUGHPUT, m->tokens_per_s, r};
  }
  gy_run_sample_t top[TOP_MAX], bottom[TOP_MAX];
  int ntop = 0, nbottom = 0;
  const top_slot_t *t = &c->tops[step % TOP_RING];
  if (t->step == step) {
    for (; ntop < t->n; ntop++)
      top[ntop] = (gy_run_sample_t){t->id[ntop], t->ch[ntop][0] ? t->ch[ntop] : NULL,
                                    (double)t->loss[ntop]};
    for (; nbottom < t->nb; nbottom++) {
      int at = TOP_MAX + nbottom;
      bottom[nbottom] =
          (gy_run_sample_t){t->id[at], t->ch[at][0] ? t->ch[at] : NULL, (double)t->loss[at]};
    }
  }
  gy_run_step_t in = {.step = step,
                      .nonfinite = h->nonfinite,
                      .values = v,
                      .nvalues = nv,
                      .top = ntop ? top : NULL,
                      .ntop = ntop,
                      .bottom = nbottom ? bottom : NULL,
                      .nbottom = nbottom};
  uint64_t masked[MASK_MAX];
  gy__core_guard_step(c, step, &in, masked); /* the masked samples: told, and their share */
  gy__core_run_refused(c, "step", gy_run_step(c->run, gy__core_now(c), &in));
  gy__core_run_drain(c);
}

/* A fleet rollback completed: its skips are in force; the run's own one ends its repair. The
 * applied rollback is journaled first: returns 1 when that write is submitted (the caller waits
 * and calls again with resumed 1 once it is written), 0 when done. */
int gy__core_rolled_back(gy_core_t *c, uint64_t seq, int64_t to_step, int ok, int resumed) {
  if (!resumed) {
    if (ok) {
      gy_repair_applied(c->repair); /* the gang is no longer fresh, and has every skip */
      for (int i = 0; i < gy_fleet_nrollbacks(c->fleet); i++) {
        const gy_fleet_rollback_t *rb = gy_fleet_rollback_record(c->fleet, i);
        if (!rb || rb->seq != seq) continue;
        /* counted once: a re-formed gang is sent the skips already in force again */
        uint64_t nskipped = 0;
        for (int k = 0; k < rb->nskip; k++) {
          nskipped += gy_skipset_uncovered(&c->in_force, rb->skip[k].first, rb->skip[k].last);
          if (gy_skipset_add(&c->in_force, rb->skip[k].first, rb->skip[k].last) ||
              gy_skipset_add(&c->sent, rb->skip[k].first, rb->skip[k].last))
            gy_log(GY_LOG_ERROR, "controller", "out of memory: skip list incomplete");
        }
        gy_telemetry_rollback(c->o.telemetry, to_step, nskipped);
        break;
      }
      gy__core_ckeval_truncate(c, to_step); /* the abandoned timeline's */
      if (gy__core_journal_must(c, "rollback applied", JOURNAL_APPLIED, to_step, seq, NULL))
        return 1;
    } else if (c->o.journal) {
      char what[64];
      snprintf(what, sizeof(what), "rollback seq %llu failed", (unsigned long long)seq);
      gy_jrec_t *r = gy__core_jrec(c, GY_JREC_DROPPED, what);
      if (r) r->seq = seq;
      gy__core_journal_best(c, r);
    }
  }
  /* the run's own rollback ends its repair */
  if (repair_drain(c, "rolled back",
                   gy_repair_rolled_back(c->repair, gy__core_now(c), seq, to_step, ok)))
    gy__core_run_drain(c);
  return 0;
}

/* The operator's verb, accepted by the fleet, told to the run state machine too: pause, resume
 * (also after a halt: the escalation starts over), rollback (the run adopts the fleet's
 * rollback seq as its repair). A refusal leaves the run as it is (logged). */
void gy__core_operator(gy_core_t *c, int kind, uint64_t seq, int64_t to_step) {
  int64_t now = gy__core_now(c);
  gy_repair_operator(c->repair, 1, kind == GY_DIR_ROLLBACK ? seq : 0);
  switch (kind) {
  case GY_DIR_PAUSE:
    gy__core_run_refused(c, "operator pause", gy_run_pause(c->run, now));
    break;
  case GY_DIR_RESUME:
    gy__core_run_refused(c, "operator resume", gy_run_resume(c->run, now));
    break;
  case GY_DIR_ROLLBACK:
    gy__core_run_refused(c, "operator rollback", gy_run_rollback_to(c->run, now, to_step));
    break;
  default:
    break;
  }
  gy__core_run_drain(c);
  gy_repair_operator(c->repair, 0, 0);
}
