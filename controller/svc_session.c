/*
 * svc_session: the Worker side of the service (Join, held until the fleet assigns a rank, and
 * the Session streams), and the core's io towards the workers.
 *
 * API, in order: io_assign, io_dismiss, io_send, io_close, drain, on_join, open_stream,
 * on_session_open, on_session_message, on_session_close.
 *
 * A handler decodes the message (a decode failure ends the stream as INVALID_ARGUMENT, with an
 * event), feeds the core the input (controller/core.h), then drain() lets the core carry out
 * what follows. The core's actions come back through its io: io_assign answers a held join
 * (io_dismiss refuses one a newer join of the same worker replaced),
 * io_send puts a grant or directive on a session stream (a message for every rank is encoded
 * once and its bytes shared by the streams), io_close ends a session.
 *
 * Invariants:
 * - sessions[r] is the one stream bound to rank r (after an accepted Hello) or NULL; a stream
 *   replaced by a newer Hello of the same rank is unbound first, so its close does not count as
 *   the worker's loss.
 * - A held join is in s->joins until the core assigns it (io_assign) or refuses it, or the
 *   service shuts down.
 */
#include "controller/service_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

void gy__svc_io_assign(void *ud, const gy_fleet_action_t *a, const gy_skipset_t *skips) {
  gy_service_t *s = ud;
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
  size_t nsk = skips->n;
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
    sk[i].first = skips->r[i].first;
    sk[i].last = skips->r[i].last;
    skp[i] = &sk[i];
  }
  as.n_skip = nsk;
  as.skip = skp;
  gy__svc_reply_msg(j->rpc, &as.base);
  free(sk);
  free(skp);
  free(j);
}

/* Answers the held join `handle` with a refusal: a newer join of its worker took its place. */
void gy__svc_io_dismiss(void *ud, uint64_t handle, const char *why) {
  gy_service_t *s = ud;
  held_join_t **pp = &s->joins;
  while (*pp && (*pp)->handle != handle)
    pp = &(*pp)->next;
  held_join_t *j = *pp;
  if (!j) return;
  *pp = j->next;
  gy_rpc_reply(j->rpc, GY_RPC_ABORTED, why, NULL, 0);
  free(j);
}

/* A directive (a rollback's intent is already written: the core saw to it). */
static void send_directive(gy_service_t *s, const gy_fleet_action_t *a) {
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

/* The core's GRANT and DIRECTIVE actions. */
void gy__svc_io_send(void *ud, const gy_fleet_action_t *a) {
  gy_service_t *s = ud;
  if (a->kind == GY_FLEET_ACT_DIRECTIVE) {
    send_directive(s, a);
    return;
  }
  Gyro__Grant g = GYRO__GRANT__INIT;
  g.generation = a->generation;
  g.horizon = a->step;
  Gyro__ControllerMsg cm = GYRO__CONTROLLER_MSG__INIT;
  cm.msg_case = GYRO__CONTROLLER_MSG__MSG_GRANT;
  cm.grant = &g;
  send_ctl(s, a->rank, &cm);
}

/* Ends rank's session (the fleet re-forms the gang: the worker joins again). */
void gy__svc_io_close(void *ud, int rank, const char *why) {
  gy_service_t *s = ud;
  if (rank < 0 || rank >= s->o.world || !s->sessions[rank]) return;
  gy_rpc_call_t *rpc = s->sessions[rank]->rpc;
  s->sessions[rank]->finished = 1;
  unbind(s, rank);
  gy_rpc_finish(rpc, GY_RPC_ABORTED, why);
}

/* Lets the core carry out what the last input led to. */
void gy__svc_drain(gy_service_t *s) {
  gy_core_drain(s->core);
}

/* ------------------------------------------ Worker ------------------------------------------ */

/* A held Join's client went away (its deadline passed, its process ended): it no longer counts
 * towards the gang. */
static void join_cancelled(void *ud, gy_rpc_call_t *call) {
  gy_service_t *s = ud;
  held_join_t **pp = &s->joins;
  while (*pp && (*pp)->rpc != call)
    pp = &(*pp)->next;
  held_join_t *j = *pp;
  if (!j) return;
  *pp = j->next;
  gy_core_join_cancel(s->core, j->handle);
  free(j);
  gy_rpc_reply(call, GY_RPC_CANCELLED, "the caller went away", NULL, 0);
  gy__svc_drain(s);
}

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
  int rc = gy_core_join(s->core, &in, j->handle);
  if (!rc) gy_rpc_call_on_cancel(call, join_cancelled, s);
  gyro__join_request__free_unpacked(jr, NULL);
  if (rc) {
    s->joins = j->next; /* a refused join is not held: it is still the list head */
    free(j);
    gy_rpc_reply(call, gy__svc_rpc_status(rc), gy_core_errmsg(s->core), NULL, 0);
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
  int rc = 0;
  if (c->rank < 0) {
    if (wm->msg_case != GYRO__WORKER_MSG__MSG_HELLO || !wm->hello) {
      session_refuse(s, c, GY_RPC_INVALID_ARGUMENT, "the first session message must be Hello", 1);
      return;
    }
    const Gyro__Hello *h = wm->hello;
    rc = gy_core_hello(s->core, h->session_id, h->generation, h->rank);
    if (rc) {
      session_refuse(s, c, gy__svc_rpc_status(rc), gy_core_errmsg(s->core), 0);
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
    gy_core_sample_t top[2 * GY_WIRE_TOPK_MAX];
    size_t ntop = 0, nbottom = 0;
    if (c->rank == 0) /* only rank 0's samples are kept; at most GY_WIRE_TOPK_MAX of each */
      gy_wire_samples(r, top, GY_WIRE_TOPK_MAX, &ntop, &nbottom);
    rc = gy_core_report(s->core, c->rank, &in, top, ntop, top + GY_WIRE_TOPK_MAX, nbottom);
    if (!rc && r->gpu) gy__svc_gpu_report(s, c->rank, r->step, r->gpu);
    break;
  }
  case GYRO__WORKER_MSG__MSG_HEARTBEAT:
    rc = gy_core_heartbeat(s->core, c->rank, wm->heartbeat->generation, wm->heartbeat->rank);
    break;
  case GYRO__WORKER_MSG__MSG_EVAL: {
    char why[256];
    gy_wire_eval_t ev;
    gy_wire_eval(wm->eval, &ev);
    if ((rc = gy_core_eval(s->core, c->rank, &ev.in, why, sizeof(why)))) {
      session_refuse(s, c, gy__svc_rpc_status(rc), why, rc != GY_EMISMATCH);
      return;
    }
    break;
  }
  case GYRO__WORKER_MSG__MSG_ACK: {
    const Gyro__DirectiveAck *a = wm->ack;
    rc = gy_core_ack(s->core, c->rank, a->generation, a->seq, a->rank, a->ok, a->error,
                     a->checkpoint_bytes);
    break;
  }
  default:
    session_refuse(s, c, GY_RPC_INVALID_ARGUMENT, "unexpected session message", 1);
    return;
  }
  if (rc) session_refuse(s, c, gy__svc_rpc_status(rc), gy_core_errmsg(s->core), 0);
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
    if (!s->shutting_down) gy_core_session_closed(s->core, rank);
  }
  free(c);
  gy__svc_drain(s);
}
