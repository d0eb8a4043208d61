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
 * once and its bytes shared by the streams), io_close ends a session. Every message is decoded
 * and encoded by controller/wire.h (session messages into the service's arena).
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

/* Sends the bytes of a ControllerMsg to rank, or to every connected rank (rank -1): for a
 * broadcast the bytes are shared by all the streams (gy_rpc_send_many). */
static void send_bytes(gy_service_t *s, int rank, const uint8_t *buf, size_t n) {
  if (rank >= 0) {
    if (rank < s->o.world && s->sessions[rank]) gy_rpc_send(s->sessions[rank]->rpc, buf, n);
  } else {
    size_t k = 0;
    for (int r = 0; r < s->o.world; r++)
      if (s->sessions[r]) s->fanout[k++] = s->sessions[r]->rpc;
    gy_rpc_send_many(s->fanout, k, buf, n);
  }
}

void gy__svc_io_assign(void *ud, const gy_fleet_action_t *a, const gy_io_assign_t *x) {
  gy_service_t *s = ud;
  held_join_t **pp = &s->joins;
  while (*pp && (*pp)->handle != a->join_handle)
    pp = &(*pp)->next;
  held_join_t *j = *pp;
  if (!j) return;
  *pp = j->next;
  char prefix[32];
  snprintf(prefix, sizeof(prefix), "g%llu", (unsigned long long)a->generation);
  /* the skips in force and the quarantine travel with the assignment (a checkpoint older than
   * a skip or an entry lacks it), and the policy's guard */
  gy_wire_assignment_t as = {.generation = a->generation,
                             .rank = a->rank,
                             .world = s->o.world,
                             .tp = s->o.tp,
                             .config_yaml = s->o.config_yaml,
                             .session_id = a->session_id,
                             .start_step = a->step,
                             .rdzv_prefix = prefix,
                             .heartbeat_ms = s->o.heartbeat_ms,
                             .hang_floor_ms = (uint32_t)s->o.hang_floor_ms,
                             .hang_factor = (uint32_t)s->o.hang_factor,
                             .config_dir = s->o.config_dir,
                             .skip = x->skips->r,
                             .nskip = x->skips->n,
                             .guard = x->guard,
                             .quar = x->quar,
                             .nquar = x->nquar};
  uint8_t *buf;
  size_t n;
  int rc = gy_wire_assignment_encode(&as, &buf, &n);
  gy__svc_reply_encoded(j->rpc, rc, buf, n);
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

static void unbind(gy_service_t *s, int rank) {
  call_t *c = s->sessions[rank];
  if (!c) return;
  s->sessions[rank] = NULL;
  c->rank = -1;
}

/* The core's GRANT and DIRECTIVE actions (a rollback's intent is already written: the core saw
 * to it). A message for every rank is encoded once. */
void gy__svc_io_send(void *ud, const gy_fleet_action_t *a) {
  gy_service_t *s = ud;
  uint8_t small[256], *buf;
  size_t n;
  int rc = gy_wire_ctl_encode(a, small, sizeof(small), &buf, &n);
  if (rc) {
    /* a rollback without its skips would train on them again: send nothing; the rank gets the
     * directive again when it reconnects */
    if (a->kind == GY_FLEET_ACT_DIRECTIVE)
      gy_log(GY_LOG_ERROR, "controller", "out of memory: directive seq %llu not sent",
             (unsigned long long)a->seq);
    return;
  }
  send_bytes(s, a->rank, buf, n);
  if (buf != small) free(buf);
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
  gy_wire_join_req_t jr;
  if (gy_wire_join_decode(req, len, &jr)) {
    gy__svc_refuse_unary(s, call, GY_RPC_INVALID_ARGUMENT, GY_EVENT_MALFORMED,
                         "malformed JoinRequest");
    return;
  }
  const char *tok = s->o.join_token;
  if (tok && *tok && !gy_rpc_token_equal(jr.join_token, tok)) {
    /* The event names the worker (printable ASCII only: the id is the peer's bytes and goes
     * into JSON and protobuf strings), never the token it sent. */
    char msg[300], id[201];
    size_t i = 0;
    for (const char *p = jr.join.worker_id; p && *p && i < sizeof(id) - 1; p++)
      id[i++] = (*p >= 0x20 && *p < 0x7f) ? *p : '?';
    id[i] = '\0';
    snprintf(msg, sizeof(msg), "worker %s: %s join token", id,
             *jr.join_token ? "wrong" : "missing");
    gy_wire_join_free(&jr);
    gy__svc_refuse_unary(s, call, GY_RPC_UNAUTHENTICATED, GY_EVENT_REFUSED, msg);
    return;
  }
  held_join_t *j = calloc(1, sizeof(*j));
  if (!j) {
    gy_wire_join_free(&jr);
    gy_rpc_reply(call, GY_RPC_RESOURCE_EXHAUSTED, "out of memory", NULL, 0);
    return;
  }
  j->handle = ++s->join_ctr;
  j->rpc = call;
  j->next = s->joins;
  s->joins = j;
  int rc = gy_core_join(s->core, &jr.join, j->handle);
  if (!rc) gy_rpc_call_on_cancel(call, join_cancelled, s);
  gy_wire_join_free(&jr);
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

static void session_msg(gy_service_t *s, call_t *c, const gy_wire_worker_msg_t *wm) {
  int rc = 0;
  if (c->rank < 0) {
    if (wm->kind != GY_WIRE_WORKER_HELLO) {
      session_refuse(s, c, GY_RPC_INVALID_ARGUMENT, "the first session message must be Hello", 1);
      return;
    }
    rc = gy_core_hello(s->core, wm->session_id, wm->generation, wm->rank);
    if (rc) {
      session_refuse(s, c, gy__svc_rpc_status(rc), gy_core_errmsg(s->core), 0);
      return;
    }
    call_t *old = s->sessions[wm->rank];
    if (old && old != c) {
      unbind(s, wm->rank);
      old->finished = 1;
      gy_rpc_finish(old->rpc, GY_RPC_ABORTED, "replaced by a newer session of this rank");
    }
    s->sessions[wm->rank] = c;
    c->rank = wm->rank;
    return;
  }
  switch (wm->kind) {
  case GY_WIRE_WORKER_REPORT: {
    gy_core_sample_t top[2 * GY_WIRE_TOPK_MAX];
    size_t ntop = 0, nbottom = 0;
    gy_wire_masked_t mk;
    if (c->rank == 0) { /* only rank 0's samples are kept; at most GY_WIRE_TOPK_MAX of each */
      gy_wire_samples(wm, top, GY_WIRE_TOPK_MAX, &ntop, &nbottom);
      gy_wire_masked(wm, &mk); /* the gang's masked samples (the engine reduced them) */
    }
    rc = gy_core_report(s->core, c->rank, &wm->report, top, ntop, top + GY_WIRE_TOPK_MAX, nbottom,
                        c->rank == 0 ? &mk.in : NULL);
    if (!rc && wm->has_gpu) gy__svc_gpu_report(s, c->rank, wm->step, &wm->gpu);
    break;
  }
  case GY_WIRE_WORKER_HEARTBEAT:
    rc = gy_core_heartbeat(s->core, c->rank, wm->generation, wm->rank);
    if (!rc) gy_core_progress(s->core, c->rank, &wm->progress);
    break;
  case GY_WIRE_WORKER_EVAL: {
    char why[256];
    gy_wire_eval_t ev;
    gy_wire_eval(wm, &ev);
    if ((rc = gy_core_eval(s->core, c->rank, &ev.in, why, sizeof(why)))) {
      session_refuse(s, c, gy__svc_rpc_status(rc), why, rc != GY_EMISMATCH);
      return;
    }
    break;
  }
  case GY_WIRE_WORKER_ACK:
    rc = gy_core_ack(s->core, c->rank, wm->generation, wm->seq, wm->rank, wm->ok, wm->error,
                     wm->checkpoint_bytes);
    break;
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
  gy_wire_worker_msg_t wm;
  if (gy_wire_session_decode_with(msg, len, &s->arena_alloc, &wm)) {
    s->arena_used = 0;
    session_refuse(s, c, GY_RPC_INVALID_ARGUMENT, "malformed WorkerMsg", 1);
  } else {
    session_msg(s, c, &wm);
    gy_wire_session_free(&wm);
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
