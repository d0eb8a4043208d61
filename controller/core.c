/*
 * core: the controller's decisions behind the io table (see core.h). This file holds the
 * core's life (create, recover is in core_journal.c, destroy), the workers' and operator's
 * inputs, and drain(), which carries out the fleet's actions.
 *
 * API, in order: create, destroy, start, join, join_cancel, hello, report, heartbeat, ack,
 * session_closed, tick, command, set_policy, journaled, fenced, drain, and the state accessors.
 * The guard's figures and the quarantine list (gy_core_quarantine) are core_guard.c's.
 *
 * drain() carries out the fleet's actions: answer held joins (ASSIGN, DISMISS), send grants and
 * directives (io->send), emit events and aggregated steps, end sessions (CLOSE), report DONE.
 * The same actions feed the run state machine and the repair coordinator (core_repair.c).
 * Every action is fenced (o.fence).
 *
 * The actions form an ordered queue (abuf[ahead, nabuf), then the fleet's newer ones): an
 * action that must be journaled first (a rollback's intent before its directive, a checkpoint's
 * manifest before the commit's later effects, an applied rollback) gives its record to
 * io->journal and waits at the head; nothing behind it is carried out until
 * gy_core_journaled() says the write is done (messages to the workers keep their order), while
 * the inputs go on feeding the fleet (the workers park at their granted horizon). The fence
 * works the same way when it is due (gy_core_fenced). Nothing here waits.
 *
 * Invariants:
 * - drain() copies the actions out before acting, and does not nest: an input fed while
 *   actions are being carried out leaves its actions for the running drain loop.
 * - While waiting is set, the head action (abuf[ahead]) is the only one begun and not finished;
 *   only gy_core_journaled (a must-write) or gy_core_fenced clears it and resumes drain().
 */
#include "controller/core_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/log.h"

int64_t gy__core_now(gy_core_t *c) {
  return c->io.now_ms(c->io.ud);
}

void gy__core_event(gy_core_t *c, gy_event_kind_t kind, int64_t step, const char *msg) {
  c->io.event(c->io.ud, kind, step, msg);
}

/* An event at the fleet's newest step. */
void gy__core_eventf(gy_core_t *c, gy_event_kind_t kind, const char *fmt, ...) {
  char msg[1400];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  gy__core_event(c, kind, gy_fleet_last_step(c->fleet), msg);
}

/* ------------------------------------------- life ------------------------------------------- */

int gy_core_create(gy_core_t **out, const gy_core_opts_t *opts, const gy_io_t *io, char *errmsg,
                   size_t errlen) {
  *out = NULL;
  if (!opts || !io || opts->world < 1 || opts->steps < 1) {
    snprintf(errmsg, errlen, "core: an io, world >= 1 and steps >= 1 are required");
    return GY_EINVAL;
  }
  gy_core_t *c = calloc(1, sizeof(*c));
  if (!c) return GY_ENOMEM;
  int rc = GY_ENOMEM;
  c->o = *opts;
  c->o.policy = NULL; /* the run keeps its own copy */
  c->o.skip = NULL;
  c->o.nskip = 0;
  c->o.channels = NULL; /* copied into chans */
  c->o.nchannels = 0;
  c->io = *io;
  c->fence_ok_ms = INT64_MIN / 2; /* the first action asks */
  if (!(c->tops = malloc(TOP_RING * sizeof(*c->tops)))) goto err;
  for (int i = 0; i < TOP_RING; i++)
    c->tops[i].step = -1;
  for (int i = 0; i < opts->nskip; i++)
    if (opts->skip[i].first < opts->skip[i].last &&
        (rc = gy_skipset_add(&c->in_force, opts->skip[i].first, opts->skip[i].last)))
      goto err;
  if (opts->policy && gy_policy_check(opts->policy, errmsg, errlen)) {
    rc = GY_EINVAL;
    goto err;
  }
  if ((rc = gy_run_create(&c->run, opts->policy))) {
    if (rc == GY_EINVAL) snprintf(errmsg, errlen, "service: the repair policy is not valid");
    goto err;
  }
  if ((rc = gy_repair_create(&c->repair))) goto err;
  if ((rc = gy_straggler_create(&c->straggler, opts->world, NULL))) goto err;
  if ((rc = gy_quar_create(&c->quar, opts->quarantine_max))) goto err;
  if ((rc = gy__core_channels(c, opts->channels, opts->nchannels))) {
    if (rc == GY_EINVAL) snprintf(errmsg, errlen, "core: a channel without a name");
    goto err;
  }
  rc = GY_ENOMEM;
  if (!(c->compute = calloc((size_t)opts->world, sizeof(*c->compute)))) goto err;
  gy_fleet_opts_t fo = {.world = opts->world,
                        .tp = opts->tp,
                        .window = opts->window,
                        .steps = opts->steps,
                        .lost_after_ms = opts->lost_after_ms,
                        .hang_floor_ms = opts->hang_floor_ms,
                        .hang_factor = opts->hang_factor,
                        .reform_alert_ms = opts->reform_alert_ms,
                        .seed = opts->seed};
  if ((rc = gy_fleet_create(&c->fleet, &fo))) {
    snprintf(errmsg, errlen,
             "service: bad fleet options (world %d, window %d, steps %lld, "
             "lost_after_ms %d)",
             opts->world, opts->window, (long long)opts->steps, opts->lost_after_ms);
    goto err;
  }
  *out = c;
  return 0;
err:
  gy_core_destroy(c);
  return rc;
}

void gy_core_destroy(gy_core_t *c) {
  if (!c) return;
  gy_fleet_destroy(c->fleet);
  gy_run_destroy(c->run);
  gy_repair_destroy(c->repair);
  gy_straggler_destroy(c->straggler);
  free(c->compute);
  free(c->masks);
  gy_quar_destroy(c->quar);
  gy__core_channels_free(c);
  free(c->abuf);
  free(c->rbuf);
  free(c->tops);
  free(c->vals);
  free(c->tps_names);
  free(c->ckevals);
  gy_skipset_free(&c->in_force);
  gy_skipset_free(&c->sent);
  free(c);
}

int gy_core_start(gy_core_t *c, int64_t tick_ms) {
  return c->io.timer(c->io.ud, tick_ms);
}

/* ------------------------------------------ inputs ------------------------------------------ */

static int fleet_refused(gy_core_t *c, int rc) {
  if (rc) snprintf(c->errmsg, sizeof(c->errmsg), "%s", gy_fleet_errmsg(c->fleet));
  return rc;
}

int gy_core_join(gy_core_t *c, const gy_fleet_join_t *in, uint64_t handle) {
  return fleet_refused(c, gy_fleet_join(c->fleet, gy__core_now(c), in, handle));
}

void gy_core_join_cancel(gy_core_t *c, uint64_t handle) {
  gy_fleet_join_cancel(c->fleet, handle);
}

int gy_core_hello(gy_core_t *c, const char *session_id, uint64_t generation, int rank) {
  return fleet_refused(c, gy_fleet_hello(c->fleet, gy__core_now(c), session_id, generation, rank));
}

int gy_core_report(gy_core_t *c, int rank, const gy_fleet_report_t *in, const gy_core_sample_t *top,
                   size_t ntop, const gy_core_sample_t *bottom, size_t nbottom,
                   const gy_core_guard_t *guard) {
  int rc = fleet_refused(c, gy_fleet_report(c->fleet, gy__core_now(c), rank, in));
  if (!rc && rank == 0) { /* aggregated (drain) after this returns */
    gy__core_keep_top(c, in->step, top, ntop, bottom, nbottom);
    gy__core_keep_guard(c, in, guard);
  }
  if (!rc) gy_telemetry_report(c->o.telemetry);
  return rc;
}

int gy_core_heartbeat(gy_core_t *c, int rank, uint64_t generation, int claimed_rank) {
  return fleet_refused(
      c, gy_fleet_heartbeat(c->fleet, gy__core_now(c), rank, generation, claimed_rank));
}

int gy_core_ack(gy_core_t *c, int rank, uint64_t generation, uint64_t seq, int claimed_rank, int ok,
                const char *error, uint64_t checkpoint_bytes) {
  return fleet_refused(c, gy_fleet_ack(c->fleet, gy__core_now(c), rank, generation, seq,
                                       claimed_rank, ok, error, checkpoint_bytes));
}

void gy_core_progress(gy_core_t *c, int rank, const gy_fleet_progress_t *p) {
  gy_fleet_progress(c->fleet, gy__core_now(c), rank, p);
}

void gy_core_session_closed(gy_core_t *c, int rank) {
  gy_fleet_session_closed(c->fleet, gy__core_now(c), rank);
}

void gy_core_tick(gy_core_t *c) {
  /* No grace after a store outage: the inputs keep coming through it, so the heartbeats of the
   * workers parked at their horizon are heard meanwhile. */
  gy_fleet_tick(c->fleet, gy__core_now(c));
}

/* The ranges of a ROLLBACK that names step ranges or the newest checkpoint (gyroctl skip): the
 * target (*to_step: the newest committed checkpoint when newest), and into *add the sample ids
 * cmd->skip names plus the ids the steps of cmd->skip_steps train on (mapped over the skip set
 * in force, as the repair maps a decision's window). 0, or a gy_err_t with why. */
static int operator_skips(gy_core_t *c, const gy_core_cmd_t *cmd, int64_t *to_step,
                          gy_skipset_t *add, char *why, size_t wlen) {
  if (cmd->newest) {
    if (!gy_fleet_ncommitted(c->fleet)) {
      snprintf(why, wlen,
               "skip: there is no committed checkpoint to roll back to yet "
               "(take one with `gyroctl checkpoint`)");
      return GY_ENOTSUP;
    }
    *to_step = gy_fleet_committed(c->fleet, 0);
  }
  for (size_t i = 0; i < cmd->nskip; i++) {
    if (cmd->skip[i].first >= cmd->skip[i].last) {
      snprintf(why, wlen, "skip range %llu-%llu is empty", (unsigned long long)cmd->skip[i].first,
               (unsigned long long)cmd->skip[i].last);
      return GY_EINVAL;
    }
    if (gy_skipset_add(add, cmd->skip[i].first, cmd->skip[i].last)) goto oom;
  }
  if (!cmd->nskip_steps) return 0;
  int tp = c->o.tp > 0 ? c->o.tp : 1;
  uint64_t per_step = (uint64_t)(c->o.world / tp) * (uint64_t)(c->o.batch > 0 ? c->o.batch : 0);
  if (!per_step) {
    snprintf(why, wlen, "cannot skip the batches of steps: train.batch unknown");
    return GY_ENOTSUP;
  }
  for (size_t i = 0; i < cmd->nskip_steps; i++) {
    uint64_t a = cmd->skip_steps[i].first, b = cmd->skip_steps[i].last;
    if (a >= b || b > (uint64_t)INT64_MAX / per_step) {
      snprintf(why, wlen, "skip step range %llu-%llu is empty or too large", (unsigned long long)a,
               (unsigned long long)b);
      return GY_EINVAL;
    }
    if (gy_skipset_add_mapped(add, &c->in_force, a * per_step, (b - a) * per_step)) goto oom;
  }
  return 0;
oom:
  snprintf(why, wlen, "out of memory");
  return GY_ENOMEM;
}

int gy_core_command(gy_core_t *c, const gy_core_cmd_t *cmd, uint64_t *seq, int64_t *at, char *why,
                    size_t wlen) {
  *seq = 0;
  *at = 0;
  int rc;
  int64_t to_step = cmd->to_step;
  int64_t now = gy__core_now(c);
  if (cmd->kind == GY_DIR_ROLLBACK && (cmd->newest || cmd->nskip_steps)) {
    gy_skipset_t add = {0};
    if ((rc = operator_skips(c, cmd, &to_step, &add, why, wlen))) {
      gy_skipset_free(&add);
      return rc;
    }
    /* more ranges than the fleet takes are refused by it (GY_EINVAL) */
    rc = gy_fleet_rollback(c->fleet, now, to_step, add.r,
                           add.n > GY_FLEET_MAX_SKIPS ? GY_FLEET_MAX_SKIPS + 1 : (int)add.n,
                           &cmd->hp,
                           cmd->reason   ? cmd->reason
                           : cmd->newest ? "operator skip"
                                         : "operator rollback",
                           seq, at);
    gy_skipset_free(&add);
  } else if (cmd->kind == GY_DIR_ROLLBACK) {
    /* more ranges than the fleet takes are refused by it: pass none of them */
    int n = cmd->nskip > GY_FLEET_MAX_SKIPS ? GY_FLEET_MAX_SKIPS + 1 : (int)cmd->nskip;
    rc = gy_fleet_rollback(c->fleet, now, to_step, n <= GY_FLEET_MAX_SKIPS ? cmd->skip : NULL, n,
                           &cmd->hp, cmd->reason ? cmd->reason : "operator rollback", seq, at);
  } else {
    rc = gy_fleet_command(c->fleet, now, cmd->kind, &cmd->hp, seq, at);
  }
  if (rc) {
    snprintf(why, wlen, "%s", gy_fleet_errmsg(c->fleet));
    return rc;
  }
  gy__core_operator(c, cmd->kind, *seq, to_step);
  return 0;
}

int gy_core_set_policy(gy_core_t *c, const gy_policy_t *p) {
  gy_guard_opts_t before = gy_run_policy(c->run)->guard;
  int rc = gy_run_set_policy(c->run, p);
  if (rc) {
    snprintf(c->errmsg, sizeof(c->errmsg), "%s", gy_run_errmsg(c->run));
    return rc;
  }
  gy__core_guard_policy(c, &before);
  return 0;
}

/* A must-write ended: the head action goes on where it stopped. Other records: a failed hold
 * write makes the next drain write the hold key again. */
void gy_core_journaled(gy_core_t *c, const gy_jrec_t *rec, const gy_io_result_t *r) {
  if (rec->kind == GY_JREC_HOLD) {
    if (!r->rc) return;
    gy_log(GY_LOG_WARN, "controller", "journal: hold: %s", r->errmsg);
    if (c->journaled_hold == rec->flag) c->journaled_hold = -1;
    return;
  }
  if (!rec->must) return;
  if (r->rc)
    gy__core_eventf(c, GY_EVENT_ERROR, "journal: gave up writing the %s after 10 minutes: %s",
                    rec->what, r->errmsg);
  else if (r->tries > 1)
    gy__core_eventf(c, GY_EVENT_STORE,
                    "journal: the store answered again after %lld ms; the %s is written",
                    (long long)r->elapsed_ms, rec->what);
  c->waiting = 0;
  c->head_state = HEAD_WRITTEN;
  gy_core_drain(c);
}

/* The fence answered. 0: this controller leads, the head action goes on; else (the fence's
 * caller has stopped everything) the head action is dropped, and the next one asks again. */
void gy_core_fenced(gy_core_t *c, int rc) {
  c->waiting = 0;
  if (!rc) {
    c->fence_ok_ms = c->io.mono_ms(c->io.ud);
    c->head_state = HEAD_FENCED;
  } else {
    c->ahead++;
    c->head_state = HEAD_NEW;
  }
  gy_core_drain(c);
}

/* ------------------------------------------ actions ------------------------------------------ */

/* The compute-time straggler rule on an aggregated step (each rank's own work, its last
 * report's): a streak that starts is an event and an alert (posted when alerts are
 * configured). */
static void stragglers(gy_core_t *c, int64_t step) {
  int n = gy_fleet_nmembers(c->fleet);
  if (n < 2 || n > c->o.world) return;
  for (int r = 0; r < n; r++) {
    const gy_fleet_member_t *m = gy_fleet_member(c->fleet, r);
    c->compute[r] = m && m->alive ? m->compute_ms : 0;
  }
  char msg[300];
  if (gy_straggler_step(c->straggler, c->compute, n, msg, sizeof(msg)) < 0) return;
  gy__core_event(c, GY_EVENT_STRAGGLER, step, msg);
  c->io.alert(c->io.ud, "straggler", step, msg);
}

/* Carries out the head action a, from where it got (head_state). Every action is fenced, not
 * only what goes to the workers: a controller resumed after a stop longer than its lease must
 * not print a step, an event or write its journal either before it learns that it was
 * replaced. Returns 1 when a waits for the io (the fence's answer, or a must-write): the
 * completion resumes drain(), and a goes on from head_state. */
static int act(gy_core_t *c, const gy_fleet_action_t *a) {
  if (c->head_state == HEAD_NEW) {
    if (c->o.fence && c->io.mono_ms(c->io.ud) - c->fence_ok_ms > c->o.fence_every_ms) {
      if (gy__core_fence_submit(c)) return 1;
      return 0; /* not asked (out of memory): the action is dropped, the next one asks again */
    }
    c->head_state = HEAD_FENCED;
  }
  int resumed = c->head_state == HEAD_WRITTEN;
  switch (a->kind) {
  case GY_FLEET_ACT_ASSIGN:
    gy__core_assign(c, a);
    if (a->generation != gy_repair_generation(c->repair))
      gy__core_gang_formed(c, a->generation, a->step);
    break;
  case GY_FLEET_ACT_DISMISS:
    c->io.dismiss(c->io.ud, a->join_handle, a->msg);
    break;
  case GY_FLEET_ACT_GRANT:
    c->io.send(c->io.ud, a);
    break;
  case GY_FLEET_ACT_DIRECTIVE:
    /* Write-ahead: a rollback's intent (target, skips, reason) is in the journal before any
     * rank can act on it, once per directive (a reconnecting rank gets the same one again). */
    if (a->dir_kind == GY_DIR_ROLLBACK && a->seq > c->journaled_seq) {
      if (!resumed && gy__core_journal_must(c, "rollback intent", JOURNAL_INTENT, a->step, 0, a))
        return 1;
      c->journaled_seq = a->seq;
    }
    c->io.send(c->io.ud, a);
    break;
  case GY_FLEET_ACT_EVENT:
    gy__core_event(c, a->event_kind, a->step, a->msg);
    if (a->event_kind == GY_EVENT_WORKER_HUNG) c->io.alert(c->io.ud, "hung", a->step, a->msg);
    if (a->event_kind == GY_EVENT_REFORM_STALLED)
      c->io.alert(c->io.ud, "reform_stalled", a->step, a->msg);
    break;
  case GY_FLEET_ACT_LOST:
    /* An event says it; the run rolls back when the gang re-forms. With no checkpoint
     * committed yet there is nothing to roll back to (the run would halt): the gang re-forms
     * from the workers' steps as the fleet decides, and the run trains on. */
    if (gy_fleet_ncommitted(c->fleet) || gy_run_state(c->run) == GY_RUN_ROLLBACK) {
      gy__core_run_refused(
          c, "worker lost",
          gy_run_worker_lost(c->run, gy__core_now(c), a->rank, "declared lost by the fleet"));
      gy__core_run_drain(c);
    }
    break;
  case GY_FLEET_ACT_COMMITTED: { /* clean unless the run's own rule says suspect */
    if (!resumed) {
      gy_telemetry_checkpoint(c->o.telemetry, a->step, c->io.wall_s(c->io.ud), a->bytes);
      int clean = 0;
      gy__core_run_refused(c, "checkpoint",
                           gy_run_checkpoint(c->run, gy__core_now(c), a->step, 1, &clean));
      int wait = gy__core_journal_must(c, "checkpoint manifest", JOURNAL_CKPT, a->step,
                                       (uint64_t)clean, NULL);
      /* behind the manifest (the writes keep their order): its evaluation, when it came
       * before the commit, and the baselines a successor restoring this checkpoint starts
       * from */
      gy__core_ckeval_journal(c, a->step);
      if (c->o.journal) {
        char what[64];
        snprintf(what, sizeof(what), "baselines of checkpoint %lld", (long long)a->step);
        gy_jrec_t *r = gy__core_jrec(c, GY_JREC_BASELINES, what);
        if (r) {
          r->step = a->step;
          r->text = gy_run_save(c->run);
        }
        gy__core_journal_best(c, r);
      }
      if (wait) return 1; /* the run hears of the commit once its manifest is written */
    }
    gy__core_run_drain(c);
    break;
  }
  case GY_FLEET_ACT_ROLLED_BACK:
    if (gy__core_rolled_back(c, a->seq, a->step, a->ok, resumed)) return 1;
    break;
  case GY_FLEET_ACT_STEP:
    c->io.step(c->io.ud, a->step);
    stragglers(c, a->step);
    gy__core_step(c, a->step);
    break;
  case GY_FLEET_ACT_CLOSE:
    c->io.close(c->io.ud, a->rank, a->msg[0] ? a->msg : "the gang is re-forming: join again");
    break;
  case GY_FLEET_ACT_DONE:
    if (gy_run_state(c->run) != GY_RUN_DONE) {
      gy__core_run_refused(c, "finished", gy_run_finished(c->run, gy__core_now(c)));
      gy__core_run_drain(c);
    }
    if (c->o.journal) {
      gy_jrec_t *r = gy__core_jrec(c, GY_JREC_DONE, "done");
      if (r) r->step = c->o.steps;
      gy__core_journal_best(c, r);
    }
    if (!c->done_fired) {
      c->done_fired = 1;
      c->io.done(c->io.ud);
    }
    break;
  }
  return 0;
}

/* Carries out the fleet's actions in order until there are none, or until the head waits for
 * the io (see the invariants). */
void gy_core_drain(gy_core_t *c) {
  if (c->draining) return;
  c->draining = 1;
  while (!c->waiting) {
    if (c->ahead >= c->nabuf) { /* the queue is done: the fleet's newer actions */
      c->ahead = c->nabuf = 0;
      size_t n;
      const gy_fleet_action_t *a = gy_fleet_actions(c->fleet, &n);
      if (!n) break;
      if (n > c->capabuf) {
        gy_fleet_action_t *b = realloc(c->abuf, n * sizeof(*b));
        if (!b) {
          gy_fleet_actions_clear(c->fleet);
          gy_log(GY_LOG_ERROR, "controller", "out of memory: %zu actions lost", n);
          break;
        }
        c->abuf = b;
        c->capabuf = n;
      }
      memcpy(c->abuf, a, n * sizeof(*a));
      gy_fleet_actions_clear(c->fleet);
      c->nabuf = n;
      c->head_state = HEAD_NEW;
    }
    if (act(c, &c->abuf[c->ahead])) break;
    c->ahead++;
    c->head_state = HEAD_NEW;
  }
  c->draining = 0;
  uint64_t dropped = gy_fleet_dropped(c->fleet);
  if (dropped != c->fleet_dropped) { /* a lost grant or assignment can stall the gang */
    gy_log(GY_LOG_ERROR, "controller", "out of memory: the fleet dropped %llu actions or events",
           (unsigned long long)(dropped - c->fleet_dropped));
    c->fleet_dropped = dropped;
  }
  gy__core_journal_hold(c);
}

/* ------------------------------------------- state ------------------------------------------- */

const gy_fleet_t *gy_core_fleet(const gy_core_t *c) {
  return c->fleet;
}
const gy_run_t *gy_core_run(const gy_core_t *c) {
  return c->run;
}
const gy_repair_t *gy_core_repair(const gy_core_t *c) {
  return c->repair;
}
const gy_skipset_t *gy_core_in_force(const gy_core_t *c) {
  return &c->in_force;
}
const gy_quar_t *gy_core_quar(const gy_core_t *c) {
  return c->quar;
}
int gy_core_waiting(const gy_core_t *c) {
  return c->waiting;
}
int gy_core_recovered_done(const gy_core_t *c) {
  return c->recovered_done;
}
uint64_t gy_core_repair_moves(const gy_core_t *c, int from, int to) {
  if (from < 0 || from >= GY_REPAIR_NSTATES || to < 0 || to >= GY_REPAIR_NSTATES) return 0;
  return c->moves[from][to];
}
const char *gy_core_errmsg(const gy_core_t *c) {
  return c->errmsg;
}
