/*
 * svc_session: the Worker side of the service (Join, held until the fleet assigns a rank, and
 * the Session streams), and drain(), which carries out the fleet's actions.
 *
 * API, in order: drain, on_join, open_stream, on_session_open, on_session_message,
 * on_session_close.
 *
 * drain() carries out the fleet's actions: answer held joins (ASSIGN), send grants and
 * directives on session streams (a message for every rank is encoded once and its bytes shared
 * by the streams), emit events (stderr JSON line + Watch streams), emit aggregated steps (stdout
 * JSON line + Watch streams that asked for steps), finish sessions (CLOSE), report DONE. A
 * ROLLBACK directive carries the fleet's to_step, skip ranges and reason; COMMITTED and
 * ROLLED_BACK are told by their events. The same actions feed the run state machine
 * (svc_repair.c). Every action is fenced (o.fence).
 *
 * The actions form an ordered queue (abuf[ahead, nabuf), then the fleet's newer ones): an
 * action that must be journaled first (a rollback's intent before its directive, a checkpoint's
 * manifest before the commit's later effects, an applied rollback) submits its write to the
 * writer's thread and waits at the head; nothing behind it is carried out until the write is
 * done (messages on the session streams keep their order), while the loop goes on serving and
 * feeding the fleet (the workers park at their granted horizon). The fence works the same way
 * when it is due. Nothing here waits for the store on the loop thread.
 *
 * Invariants:
 * - sessions[r] is the one stream bound to rank r (after an accepted Hello) or NULL; a stream
 *   replaced by a newer Hello of the same rank is unbound first, so its close does not count as
 *   the worker's loss.
 * - drain() copies the actions out before acting, and does not nest: a callback that feeds the
 *   fleet while actions are being carried out leaves its actions for the running drain loop.
 * - While waiting is set, the head action (abuf[ahead]) is the only one begun and not finished;
 *   only the writer's done callback (svc_journal.c) clears waiting and resumes drain().
 */
#include "controller/service_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/err.h"
#include "common/log.h"
#include "controller/wire.h"

/* ------------------------------------------ actions ------------------------------------------ */

/* Sends cm to rank, or to every connected rank (rank -1): encoded once, and for a broadcast
 * the bytes are shared by all the streams (gy_rpc_send_many). */
static void send_ctl(gy_service_t *s, int rank, const Gyro__ControllerMsg *cm) {
  uint8_t small[256];
  size_t n = protobuf_c_message_get_packed_size(&cm->base);
  uint8_t *buf = n <= sizeof(small) ? small : malloc(n);
  if (!buf) return;
  protobuf_c_message_pack(&cm->base, buf);
  if (rank >= 0) {
    if (rank < s->o.world && s->sessions[rank]) gy_rpc_send(s->sessions[rank]->rpc, buf, n);
  } else {
    size_t k = 0;
    for (int r = 0; r < s->o.world; r++)
      if (s->sessions[r]) s->fanout[k++] = s->sessions[r]->rpc;
    gy_rpc_send_many(s->fanout, k, buf, n);
  }
  if (buf != small) free(buf);
}

static void do_assign(gy_service_t *s, const gy_fleet_action_t *a) {
  held_join_t **pp = &s->joins;
  while (*pp && (*pp)->handle != a->join_handle)
    pp = &(*pp)->next;
  held_join_t *j = *pp;
  if (!j) return;
  *pp = j->next;
  char prefix[32];
  snprintf(prefix, sizeof(prefix), "g%llu", (unsigned long long)a->generation);
  Gyro__Assignment as = GYRO__ASSIGNMENT__INIT;
  as.generation = a->generation;
  as.rank = a->rank;
  as.world = s->o.world;
  as.tp = s->o.tp;
  as.config_yaml = (char *)(s->o.config_yaml ? s->o.config_yaml : "");
  as.session_id = (char *)a->session_id;
  as.start_step = a->step;
  as.rdzv_prefix = prefix;
  as.heartbeat_ms = s->o.heartbeat_ms;
  as.config_dir = (char *)(s->o.config_dir ? s->o.config_dir : "");
  /* the skips in force travel with the assignment (a checkpoint older than a skip lacks it) */
  size_t nsk = s->in_force.n;
  Gyro__SkipRange *sk = nsk ? malloc(nsk * sizeof(*sk)) : NULL;
  Gyro__SkipRange **skp = nsk ? malloc(nsk * sizeof(*skp)) : NULL;
  if (nsk && (!sk || !skp)) {
    free(sk);
    free(skp);
    gy_rpc_reply(j->rpc, GY_RPC_RESOURCE_EXHAUSTED, "out of memory", NULL, 0);
    free(j);
    return;
  }
  for (size_t i = 0; i < nsk; i++) {
    gyro__skip_range__init(&sk[i]);
    sk[i].first = s->in_force.r[i].first;
    sk[i].last = s->in_force.r[i].last;
    skp[i] = &sk[i];
  }
  as.n_skip = nsk;
  as.skip = skp;
  gy__svc_reply_msg(j->rpc, &as.base);
  free(sk);
  free(skp);
  free(j);
}

/* Sends a directive (a rollback's intent is already written: see act()). */
static void do_directive(gy_service_t *s, const gy_fleet_action_t *a) {
  Gyro__HParams hp = GYRO__HPARAMS__INIT;
  Gyro__Directive d = GYRO__DIRECTIVE__INIT;
  d.generation = a->generation;
  d.seq = a->seq;
  d.at_step = a->step;
  d.kind = (Gyro__Directive__Kind)a->dir_kind;
  Gyro__SkipRange *sk = NULL, **skp = NULL;
  if (a->dir_kind == GY_DIR_ROLLBACK) {
    d.to_step = a->to_step;
    d.reason = (char *)a->msg;
    if (a->nskip > 0) {
      sk = malloc((size_t)a->nskip * sizeof(*sk));
      skp = malloc((size_t)a->nskip * sizeof(*skp));
      if (!sk || !skp) {
        /* a rollback without its skips would train on them again: send nothing; the rank
         * gets the directive again when it reconnects */
        gy_log(GY_LOG_ERROR, "controller", "out of memory: directive seq %llu not sent",
               (unsigned long long)a->seq);
        free(sk);
        free(skp);
        return;
      }
      for (int i = 0; i < a->nskip; i++) {
        gyro__skip_range__init(&sk[i]);
        sk[i].first = a->skip[i].first;
        sk[i].last = a->skip[i].last;
        skp[i] = &sk[i];
      }
      d.n_skip = (size_t)a->nskip;
      d.skip = skp;
    }
  }
  if (a->dir_kind == GY_DIR_SET_HPARAMS || (a->dir_kind == GY_DIR_ROLLBACK && a->hparams.present)) {
    gy_wire_hparams_out(&a->hparams, &hp);
    d.hparams = &hp;
  }
  Gyro__ControllerMsg cm = GYRO__CONTROLLER_MSG__INIT;
  cm.msg_case = GYRO__CONTROLLER_MSG__MSG_DIRECTIVE;
  cm.directive = &d;
  send_ctl(s, a->rank, &cm);
  free(sk);
  free(skp);
}

static void unbind(gy_service_t *s, int rank) {
  call_t *c = s->sessions[rank];
  if (!c) return;
  s->sessions[rank] = NULL;
  c->rank = -1;
}

/* Monotonic milliseconds, read now (the loop's cached time can be old after a stop). */
static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Carries out the head action a, from where it got (head_state). Every action is fenced, not
 * only what goes to the workers: a controller resumed after a stop longer than its lease must
 * not print a step, an event or write its journal either before it learns that it was
 * replaced. Returns 1 when a waits for the writer (the fence's answer, or a must-write): the
 * writer's done callback resumes drain(), and a goes on from head_state. */
static int act(gy_service_t *s, const gy_fleet_action_t *a) {
  if (s->head_state == HEAD_NEW) {
    if (s->o.fence && mono_ms() - s->fence_ok_ms > s->o.fence_every_ms) {
      if (gy__svc_fence_submit(s)) return 1;
      return 0; /* not asked (out of memory): the action is dropped, the next one asks again */
    }
    s->head_state = HEAD_FENCED;
  }
  int resumed = s->head_state == HEAD_WRITTEN;
  switch (a->kind) {
  case GY_FLEET_ACT_ASSIGN:
    do_assign(s, a);
    if (a->generation != gy_repair_generation(s->repair))
      gy__svc_loop_gang_formed(s, a->generation, a->step);
    break;
  case GY_FLEET_ACT_GRANT: {
    Gyro__Grant g = GYRO__GRANT__INIT;
    g.generation = a->generation;
    g.horizon = a->step;
    Gyro__ControllerMsg cm = GYRO__CONTROLLER_MSG__INIT;
    cm.msg_case = GYRO__CONTROLLER_MSG__MSG_GRANT;
    cm.grant = &g;
    send_ctl(s, a->rank, &cm);
    break;
  }
  case GY_FLEET_ACT_DIRECTIVE:
    /* Write-ahead: a rollback's intent (target, skips, reason) is in the journal before any
     * rank can act on it, once per directive (a reconnecting rank gets the same one again). */
    if (a->dir_kind == GY_DIR_ROLLBACK && a->seq > s->journaled_seq) {
      if (!resumed && gy__svc_journal_must(s, "rollback intent", JOURNAL_INTENT, a->step, 0, a))
        return 1;
      s->journaled_seq = a->seq;
    }
    do_directive(s, a);
    break;
  case GY_FLEET_ACT_EVENT:
    gy__svc_emit_event(s, a->event_kind, a->step, a->msg);
    break;
  case GY_FLEET_ACT_LOST:
    /* An event says it; the run rolls back when the gang re-forms. With no checkpoint
     * committed yet there is nothing to roll back to (the run would halt): the gang re-forms
     * from the workers' steps as the fleet decides, and the run trains on. */
    if (gy_fleet_ncommitted(s->fleet) || gy_run_state(s->run) == GY_RUN_ROLLBACK) {
      gy__svc_run_refused(
          s, "worker lost",
          gy_run_worker_lost(s->run, gy__svc_now_ms(s), a->rank, "declared lost by the fleet"));
      gy__svc_run_drain(s);
    }
    break;
  case GY_FLEET_ACT_COMMITTED: { /* clean unless the run's own rule says suspect */
    if (!resumed) {
      gy_telemetry_checkpoint(s->o.telemetry, a->step, gy__svc_wall_s(), a->bytes);
      int clean = 0;
      gy__svc_run_refused(s, "checkpoint",
                          gy_run_checkpoint(s->run, gy__svc_now_ms(s), a->step, 1, &clean));
      int wait = gy__svc_journal_must(s, "checkpoint manifest", JOURNAL_CKPT, a->step,
                                      (uint64_t)clean, NULL);
      /* behind the manifest (the writer keeps the order): its evaluation, when it came before
       * the commit, and the baselines a successor restoring this checkpoint starts from */
      gy__svc_ckeval_journal(s, a->step);
      if (s->o.journal) {
        char what[64];
        snprintf(what, sizeof(what), "baselines of checkpoint %lld", (long long)a->step);
        jop_t *op = gy__svc_jop(s, JOP_BASELINES);
        gy__svc_jop_set(op, a->step, 0, 0, 0, gy_run_save(s->run));
        gy__svc_journal_best(s, op, what);
      }
      if (wait) return 1; /* the run hears of the commit once its manifest is written */
    }
    gy__svc_run_drain(s);
    break;
  }
  case GY_FLEET_ACT_ROLLED_BACK:
    if (gy__svc_loop_rolled_back(s, a->seq, a->step, a->ok, resumed)) return 1;
    break;
  case GY_FLEET_ACT_STEP:
    gy__svc_emit_step(s, a->step);
    gy__svc_loop_step(s, a->step);
    break;
  case GY_FLEET_ACT_CLOSE:
    if (a->rank >= 0 && a->rank < s->o.world && s->sessions[a->rank]) {
      gy_rpc_call_t *rpc = s->sessions[a->rank]->rpc;
      s->sessions[a->rank]->finished = 1;
      unbind(s, a->rank);
      gy_rpc_finish(rpc, GY_RPC_ABORTED, "the gang is re-forming: join again");
    }
    break;
  case GY_FLEET_ACT_DONE:
    if (gy_run_state(s->run) != GY_RUN_DONE) {
      gy__svc_run_refused(s, "finished", gy_run_finished(s->run, gy__svc_now_ms(s)));
      gy__svc_run_drain(s);
    }
    if (s->o.journal) {
      jop_t *op = gy__svc_jop(s, JOP_DONE);
      gy__svc_jop_set(op, s->o.steps, 0, 0, 0, NULL);
      gy__svc_journal_best(s, op, "done");
    }
    if (!s->done_fired) {
      s->done_fired = 1;
      if (s->done_cb) s->done_cb(s->done_ud);
    }
    break;
  }
  return 0;
}

/* Carries out the fleet's actions in order until there are none, or until the head waits for
 * the writer (see the invariants). */
void gy__svc_drain(gy_service_t *s) {
  if (s->draining) return;
  s->draining = 1;
  while (!s->waiting) {
    if (s->ahead >= s->nabuf) { /* the queue is done: the fleet's newer actions */
      s->ahead = s->nabuf = 0;
      size_t n;
      const gy_fleet_action_t *a = gy_fleet_actions(s->fleet, &n);
      if (!n) break;
      if (n > s->capabuf) {
        gy_fleet_action_t *b = realloc(s->abuf, n * sizeof(*b));
        if (!b) {
          gy_fleet_actions_clear(s->fleet);
          gy_log(GY_LOG_ERROR, "controller", "out of memory: %zu actions lost", n);
          break;
        }
        s->abuf = b;
        s->capabuf = n;
      }
      memcpy(s->abuf, a, n * sizeof(*a));
      gy_fleet_actions_clear(s->fleet);
      s->nabuf = n;
      s->head_state = HEAD_NEW;
    }
    if (act(s, &s->abuf[s->ahead])) break;
    s->ahead++;
    s->head_state = HEAD_NEW;
  }
  s->draining = 0;
  uint64_t dropped = gy_fleet_dropped(s->fleet);
  if (dropped != s->fleet_dropped) { /* a lost grant or assignment can stall the gang */
    gy_log(GY_LOG_ERROR, "controller", "out of memory: the fleet dropped %llu actions or events",
           (unsigned long long)(dropped - s->fleet_dropped));
    s->fleet_dropped = dropped;
  }
  gy__svc_journal_hold(s);
}

/* ------------------------------------------ Worker ------------------------------------------ */

void gy__svc_on_join(void *ud, gy_rpc_call_t *call, const uint8_t *req, size_t len) {
  gy_service_t *s = ud;
  Gyro__JoinRequest *jr = gyro__join_request__unpack(NULL, len, req);
  if (!jr) {
    gy__svc_refuse_unary(s, call, GY_RPC_INVALID_ARGUMENT, GY_EVENT_MALFORMED,
                         "malformed JoinRequest");
    return;
  }
  const char *tok = s->o.join_token;
  if (tok && *tok && !gy_rpc_token_equal(jr->join_token, tok)) {
    /* The event names the worker (printable ASCII only: the id is the peer's bytes and goes
     * into JSON and protobuf strings), never the token it sent. */
    char msg[300], id[201];
    size_t i = 0;
    for (const char *p = jr->worker_id; p && *p && i < sizeof(id) - 1; p++)
      id[i++] = (*p >= 0x20 && *p < 0x7f) ? *p : '?';
    id[i] = '\0';
    snprintf(msg, sizeof(msg), "worker %s: %s join token", id,
             jr->join_token && *jr->join_token ? "wrong" : "missing");
    gyro__join_request__free_unpacked(jr, NULL);
    gy__svc_refuse_unary(s, call, GY_RPC_UNAUTHENTICATED, GY_EVENT_REFUSED, msg);
    return;
  }
  held_join_t *j = calloc(1, sizeof(*j));
  if (!j) {
    gyro__join_request__free_unpacked(jr, NULL);
    gy_rpc_reply(call, GY_RPC_RESOURCE_EXHAUSTED, "out of memory", NULL, 0);
    return;
  }
  j->handle = ++s->join_ctr;
  j->rpc = call;
  j->next = s->joins;
  s->joins = j;
  gy_fleet_join_t in;
  gy_wire_join(jr, &in);
  int rc = gy_fleet_join(s->fleet, gy__svc_now_ms(s), &in, j->handle);
  gyro__join_request__free_unpacked(jr, NULL);
  if (rc) {
    s->joins = j->next; /* a refused join is not held: it is still the list head */
    free(j);
    gy_rpc_reply(call, gy__svc_rpc_status(rc), gy_fleet_errmsg(s->fleet), NULL, 0);
  }
  gy__svc_drain(s);
}

/* Attaches a call_t of `kind` to a stream that just opened (freed in on_close). */
void gy__svc_open_stream(gy_rpc_call_t *call, int kind) {
  call_t *c = calloc(1, sizeof(*c));
  if (!c) {
    gy_rpc_finish(call, GY_RPC_RESOURCE_EXHAUSTED, "out of memory");
    return;
  }
  c->kind = kind;
  c->rpc = call;
  c->rank = -1;
  gy_rpc_call_set_data(call, c);
}

void gy__svc_on_session_open(void *ud, gy_rpc_call_t *call) {
  (void)ud;
  gy__svc_open_stream(call, CALL_SESSION);
}

/* Ends a session stream after a refusal: the status, and an event (the fleet's, or ours). */
static void session_refuse(gy_service_t *s, call_t *c, int status, const char *msg, int ev) {
  c->finished = 1;
  if (ev)
    gy__svc_eventf(s, GY_EVENT_MALFORMED, "session from %s: %s", gy_rpc_call_peer(c->rpc), msg);
  gy_rpc_finish(c->rpc, status, msg);
}

static void session_msg(gy_service_t *s, call_t *c, const Gyro__WorkerMsg *wm) {
  int64_t now = gy__svc_now_ms(s);
  int rc = 0;
  if (c->rank < 0) {
    if (wm->msg_case != GYRO__WORKER_MSG__MSG_HELLO || !wm->hello) {
      session_refuse(s, c, GY_RPC_INVALID_ARGUMENT, "the first session message must be Hello", 1);
      return;
    }
    const Gyro__Hello *h = wm->hello;
    rc = gy_fleet_hello(s->fleet, now, h->session_id, h->generation, h->rank);
    if (rc) {
      session_refuse(s, c, gy__svc_rpc_status(rc), gy_fleet_errmsg(s->fleet), 0);
      return;
    }
    call_t *old = s->sessions[h->rank];
    if (old && old != c) {
      unbind(s, h->rank);
      old->finished = 1;
      gy_rpc_finish(old->rpc, GY_RPC_ABORTED, "replaced by a newer session of this rank");
    }
    s->sessions[h->rank] = c;
    c->rank = h->rank;
    return;
  }
  switch (wm->msg_case) {
  case GYRO__WORKER_MSG__MSG_REPORT: {
    const Gyro__StepReport *r = wm->report;
    gy_wire_channels_t chans;
    gy_fleet_report_t in;
    gy_wire_step_report(r, &chans, &in);
    rc = gy_fleet_report(s->fleet, now, c->rank, &in);
    if (!rc && c->rank == 0) gy__svc_keep_top(s, r); /* aggregated (drain) after this returns */
    if (!rc && r->gpu) gy__svc_gpu_report(s, c->rank, r->step, r->gpu);
    if (!rc) gy_telemetry_report(s->o.telemetry);
    break;
  }
  case GYRO__WORKER_MSG__MSG_HEARTBEAT:
    rc = gy_fleet_heartbeat(s->fleet, now, c->rank, wm->heartbeat->generation, wm->heartbeat->rank);
    break;
  case GYRO__WORKER_MSG__MSG_EVAL: {
    char why[256];
    if ((rc = gy__svc_eval_msg(s, c->rank, wm->eval, why, sizeof(why)))) {
      session_refuse(s, c, gy__svc_rpc_status(rc), why, rc != GY_EMISMATCH);
      return;
    }
    break;
  }
  case GYRO__WORKER_MSG__MSG_ACK: {
    const Gyro__DirectiveAck *a = wm->ack;
    rc = gy_fleet_ack(s->fleet, now, c->rank, a->generation, a->seq, a->rank, a->ok, a->error,
                      a->checkpoint_bytes);
    break;
  }
  default:
    session_refuse(s, c, GY_RPC_INVALID_ARGUMENT, "unexpected session message", 1);
    return;
  }
  if (rc) session_refuse(s, c, gy__svc_rpc_status(rc), gy_fleet_errmsg(s->fleet), 0);
}

void gy__svc_on_session_message(void *ud, gy_rpc_call_t *call, const uint8_t *msg, size_t len) {
  gy_service_t *s = ud;
  call_t *c = gy_rpc_call_data(call);
  if (!c || c->finished) return;
  s->arena_used = 0;
  Gyro__WorkerMsg *wm = gyro__worker_msg__unpack(&s->arena_alloc, len, msg);
  if (!wm) {
    s->arena_used = 0;
    session_refuse(s, c, GY_RPC_INVALID_ARGUMENT, "malformed WorkerMsg", 1);
  } else {
    session_msg(s, c, wm);
    gyro__worker_msg__free_unpacked(wm, &s->arena_alloc);
    s->arena_used = 0;
  }
  gy__svc_drain(s);
}

void gy__svc_on_session_close(void *ud, gy_rpc_call_t *call, int status) {
  gy_service_t *s = ud;
  (void)status;
  call_t *c = gy_rpc_call_data(call);
  if (!c) return;
  gy_rpc_call_set_data(call, NULL);
  if (c->rank >= 0 && s->sessions[c->rank] == c) {
    int rank = c->rank;
    unbind(s, rank);
    if (!s->shutting_down) gy_fleet_session_closed(s->fleet, gy__svc_now_ms(s), rank);
  }
  free(c);
  gy__svc_drain(s);
}
