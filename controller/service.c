/*
 * service: the controller's gRPC side (see service.h), and the composition root of its files.
 * Everything runs on the loop thread: gy_rpc calls the handlers there, the liveness timer fires
 * there, so no lock is needed. The one exception is the store: the journal's writes and the
 * fence check run on the writer's thread (jw, controller/jwriter.h), which works only on what
 * the loop copied into each operation and tells the outcome back on the loop; nothing on the
 * loop thread waits for the store (the recovery at create excepted: it runs before serving).
 *
 * API, in order: create (fleet + run + recovery from the journal + server + timer),
 * recovered_done, port, fleet, run, on_done, shutdown, destroy. Also the helpers the svc_*.c
 * files share: now_ms, wall_s, rpc_status, num, refuse_unary, pack, reply_msg.
 *
 * One file per concern; struct gy_service and the gy__svc_* calls between the files are in
 * service_internal.h:
 * - svc_session.c: Worker Join and Session streams; drain() carries out the fleet's actions.
 * - svc_rendezvous.c: StoreSet and StoreGet, the workers' rendezvous store (held gets).
 * - svc_operator.c: the Operator's unary calls (Status, Command, Events, Checkpoints,
 *   PolicyShow, PolicySet) and its Watch streams.
 * - svc_events.c: events (and their ring, evlog), the status, aggregated steps.
 * - svc_ckeval.c: held-out (checkpoint) evaluations, GPU reports, rank 0's top samples.
 * - svc_repair.c: the closed loop between the run state machine and the fleet.
 * - svc_journal.c: the journal's writes (submitted to the writer's thread; those that must
 *   precede what follows them hold the action queue until done), the fence check, and the
 *   recovery from the journal at create.
 *
 * Flow: a handler decodes the message (protobuf-c; a decode failure is INVALID_ARGUMENT and an
 * event; session messages decode into a per-service arena, so a StepReport costs no malloc),
 * checks tokens, calls the fleet, answers the call, then drain() carries out the fleet's
 * actions, and the run's actions they lead to (run_drain()).
 *
 * Invariants:
 * - Every held unary call (joins, store gets) is in exactly one list and is answered exactly
 *   once: by the fleet, by a key arriving, by its timer, or at shutdown.
 * - Each call's data (call_t) is freed in on_close (streams); unary calls have none.
 */
#include "controller/service_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/err.h"
#include "proto/contract.h"

/* ------------------------------------------ helpers ------------------------------------------ */

int64_t gy__svc_now_ms(gy_service_t *s) {
  return (int64_t)uv_now(s->loop) - s->t0_ms;
}

double gy__svc_wall_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int gy__svc_rpc_status(int rc) {
  switch (rc) {
  case GY_EINVAL:
    return GY_RPC_INVALID_ARGUMENT;
  case GY_ERANGE:
    return GY_RPC_OUT_OF_RANGE;
  case GY_EBUSY:
    return GY_RPC_ALREADY_EXISTS;
  case GY_EMISMATCH:
  case GY_ENOTSUP:
  case GY_ENOENT:
    return GY_RPC_FAILED_PRECONDITION;
  case GY_ENOMEM:
    return GY_RPC_RESOURCE_EXHAUSTED;
  default:
    return GY_RPC_INTERNAL;
  }
}

static void *arena_alloc(void *ud, size_t n) {
  gy_service_t *s = ud;
  size_t need = (n + 15) & ~(size_t)15;
  if (need >= n && need <= ARENA_BYTES - s->arena_used) {
    void *p = s->arena + s->arena_used;
    s->arena_used += need;
    return p;
  }
  return malloc(n);
}

static void arena_free(void *ud, void *p) {
  gy_service_t *s = ud;
  uint8_t *b = p;
  if (b >= s->arena && b < s->arena + ARENA_BYTES) return; /* released by the reset */
  free(p);
}

json_t *gy__svc_num(double v) {
  return isfinite(v) ? json_real(v) : json_null();
}

/* Answers a unary call with an error and records it as an event. */
void gy__svc_refuse_unary(gy_service_t *s, gy_rpc_call_t *call, int status, gy_event_kind_t kind,
                          const char *msg) {
  gy__svc_eventf(s, kind, "%s from %s: %s", gy_rpc_call_method(call), gy_rpc_call_peer(call), msg);
  gy_rpc_reply(call, status, msg, NULL, 0);
}

/* Packs m into a malloc'ed buffer (*len its size); NULL when out of memory. */
uint8_t *gy__svc_pack(const ProtobufCMessage *m, size_t *len) {
  *len = protobuf_c_message_get_packed_size(m);
  uint8_t *buf = malloc(*len ? *len : 1);
  if (buf) protobuf_c_message_pack(m, buf);
  return buf;
}

void gy__svc_reply_msg(gy_rpc_call_t *call, const ProtobufCMessage *m) {
  size_t n;
  uint8_t *buf = gy__svc_pack(m, &n);
  if (!buf) {
    gy_rpc_reply(call, GY_RPC_RESOURCE_EXHAUSTED, "out of memory", NULL, 0);
    return;
  }
  gy_rpc_reply(call, GY_RPC_OK, NULL, buf, n);
  free(buf);
}

/* --------------------------------------------- API ---------------------------------------------
 */

static void on_tick(uv_timer_t *t) {
  gy_service_t *s = t->data;
  /* No grace after a store outage: the loop keeps running through it, so the heartbeats of the
   * workers parked at their horizon are heard meanwhile. */
  gy_fleet_tick(s->fleet, gy__svc_now_ms(s));
  gy__svc_drain(s);
}

static char *dup_or_null(const char *p) {
  return p ? strdup(p) : NULL;
}

static void free_opts(gy_service_opts_t *o) {
  free((char *)o->listen);
  free((char *)o->run_name);
  free((char *)o->join_token);
  free((char *)o->operator_token);
  free((char *)o->config_yaml);
  free((char *)o->config_dir);
}

int gy_service_create(gy_service_t **out, uv_loop_t *loop, const gy_service_opts_t *opts,
                      char *errmsg, size_t errlen) {
  *out = NULL;
  if (!opts || !opts->listen || opts->world < 1 || opts->steps < 1) {
    snprintf(errmsg, errlen, "service: listen, world >= 1 and steps >= 1 are required");
    return GY_EINVAL;
  }
  int rc = GY_ENOMEM;
  gy_service_t *s = calloc(1, sizeof(*s));
  if (!s) return GY_ENOMEM;
  s->loop = loop;
  s->o = *opts;
  s->o.listen = dup_or_null(opts->listen);
  s->o.run_name = dup_or_null(opts->run_name ? opts->run_name : "gyro");
  s->o.join_token = dup_or_null(opts->join_token);
  s->o.operator_token = dup_or_null(opts->operator_token);
  s->o.config_yaml = dup_or_null(opts->config_yaml);
  s->o.config_dir = dup_or_null(opts->config_dir);
  s->o.policy = NULL; /* the run keeps its own copy */
  s->o.skip = NULL;
  s->o.nskip = 0;
  if (!s->o.tick_ms) s->o.tick_ms = 100;
  if (!s->o.listen || !s->o.run_name || (opts->join_token && !s->o.join_token) ||
      (opts->operator_token && !s->o.operator_token) || (opts->config_yaml && !s->o.config_yaml) ||
      (opts->config_dir && !s->o.config_dir))
    goto err;
  s->sessions = calloc((size_t)opts->world, sizeof(*s->sessions));
  s->fanout = calloc((size_t)opts->world, sizeof(*s->fanout));
  s->tops = malloc(TOP_RING * sizeof(*s->tops));
  s->evlog = calloc(EVLOG_MAX, sizeof(*s->evlog));
  if (!s->sessions || !s->fanout || !s->tops || !s->evlog) goto err;
  for (int i = 0; i < TOP_RING; i++)
    s->tops[i].step = -1;
  for (int i = 0; i < opts->nskip; i++)
    if (opts->skip[i].first < opts->skip[i].last &&
        (rc = gy_skipset_add(&s->in_force, opts->skip[i].first, opts->skip[i].last)))
      goto err;
  if (opts->policy && (rc = gy_policy_check(opts->policy, errmsg, errlen))) {
    rc = GY_EINVAL;
    goto err;
  }
  if ((rc = gy_run_create(&s->run, opts->policy))) {
    if (rc == GY_EINVAL) snprintf(errmsg, errlen, "service: the repair policy is not valid");
    goto err;
  }
  if ((rc = gy_repair_create(&s->repair))) goto err;
  rc = GY_ENOMEM;
  s->arena_alloc = (ProtobufCAllocator){arena_alloc, arena_free, s};
  s->t0_ms = (int64_t)uv_now(loop);
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  gy_fleet_opts_t fo = {.world = opts->world,
                        .tp = opts->tp,
                        .window = opts->window,
                        .steps = opts->steps,
                        .lost_after_ms = opts->lost_after_ms,
                        .seed = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)ts.tv_sec ^
                                ((uint64_t)getpid() << 40)};
  if ((rc = gy_fleet_create(&s->fleet, &fo))) {
    snprintf(errmsg, errlen,
             "service: bad fleet options (world %d, window %d, steps %lld, "
             "lost_after_ms %d)",
             opts->world, opts->window, (long long)opts->steps, opts->lost_after_ms);
    goto err;
  }
  if ((s->o.journal || s->o.fence) && (rc = gy_jwriter_create(&s->jw, loop, NULL))) {
    snprintf(errmsg, errlen, "service: cannot create the journal writer: %s", gy_strerror(rc));
    goto err;
  }
  /* Synchronous, before serving; what it submits (events) waits for the writer's thread. */
  if (s->o.journal && (rc = gy__svc_recover(s, errmsg, errlen))) goto err;
  if ((rc = gy__svc_journal_start(s))) {
    snprintf(errmsg, errlen, "service: cannot start the journal writer's thread");
    goto err;
  }
  gy_rpc_server_opts_t so = {
      .bind = s->o.listen, .max_message = opts->max_message, .health = opts->health};
  if ((rc = gy_rpc_server_create(&s->srv, loop, &so, &s->port, errmsg, errlen))) goto err;
  static const gy_rpc_stream_cbs_t session_cbs = {
      gy__svc_on_session_open, gy__svc_on_session_message, gy__svc_on_session_close};
  static const gy_rpc_stream_cbs_t watch_cbs = {gy__svc_on_watch_open, gy__svc_on_watch_message,
                                                gy__svc_on_watch_close};
  if ((rc = gy_rpc_server_add_unary(s->srv, GY_METHOD_WORKER_JOIN, gy__svc_on_join, s)) ||
      (rc = gy_rpc_server_add_stream(s->srv, GY_METHOD_WORKER_SESSION, &session_cbs, s)) ||
      (rc = gy_rpc_server_add_unary(s->srv, GY_METHOD_WORKER_STORE_SET, gy__svc_on_store_set, s)) ||
      (rc = gy_rpc_server_add_unary(s->srv, GY_METHOD_WORKER_STORE_GET, gy__svc_on_store_get, s)) ||
      (rc = gy_rpc_server_add_unary(s->srv, GY_METHOD_OPERATOR_STATUS, gy__svc_on_status, s)) ||
      (rc = gy_rpc_server_add_unary(s->srv, GY_METHOD_OPERATOR_COMMAND, gy__svc_on_command, s)) ||
      (rc = gy_rpc_server_add_stream(s->srv, GY_METHOD_OPERATOR_WATCH, &watch_cbs, s)) ||
      (rc = gy_rpc_server_add_unary(s->srv, GY_METHOD_OPERATOR_EVENTS, gy__svc_on_events, s)) ||
      (rc = gy_rpc_server_add_unary(s->srv, GY_METHOD_OPERATOR_POLICY_SHOW, gy__svc_on_policy_show,
                                    s)) ||
      (rc =
           gy_rpc_server_add_unary(s->srv, GY_METHOD_OPERATOR_POLICY_SET, gy__svc_on_policy_set, s)) ||
      (rc = gy_rpc_server_add_unary(s->srv, GY_METHOD_OPERATOR_CHECKPOINTS, gy__svc_on_checkpoints,
                                    s)) ||
      (rc = gy_rpc_server_start(s->srv))) {
    snprintf(errmsg, errlen, "service: cannot register methods: %s", gy_strerror(rc));
    goto err;
  }
  uv_timer_init(loop, &s->tick);
  s->tick.data = s;
  s->tick_init = 1;
  uv_timer_start(&s->tick, on_tick, (uint64_t)s->o.tick_ms, (uint64_t)s->o.tick_ms);
  *out = s;
  return 0;
err:
  /* A server that was created must be shut down through the loop: the caller runs the loop
   * until it is gone. Here it never started serving, so the synchronous path is enough. The
   * writer's async handle is closed on the loop too. */
  if (s->jw) gy_jwriter_close(s->jw, NULL, NULL);
  if (s->srv) {
    s->shutting_down = 1;
    gy_rpc_server_shutdown(s->srv, NULL, NULL);
  }
  if (s->srv || s->jw) uv_run(loop, UV_RUN_DEFAULT);
  gy_jwriter_destroy(s->jw);
  if (s->srv) {
    gy_rpc_server_destroy(s->srv);
    s->srv = NULL;
  }
  gy_fleet_destroy(s->fleet);
  gy_run_destroy(s->run);
  gy_repair_destroy(s->repair);
  free(s->tops);
  free(s->hw);
  free(s->vals);
  free(s->tps_names);
  free(s->evlog);
  free(s->ckevals);
  gy_skipset_free(&s->in_force);
  free(s->sessions);
  free(s->fanout);
  free_opts(&s->o);
  free(s);
  return rc;
}

int gy_service_recovered_done(const gy_service_t *s) {
  return s->recovered_done;
}

int gy_service_port(const gy_service_t *s) {
  return s->port;
}
const gy_fleet_t *gy_service_fleet(const gy_service_t *s) {
  return s->fleet;
}
const gy_run_t *gy_service_run(const gy_service_t *s) {
  return s->run;
}

void gy_service_on_done(gy_service_t *s, void (*cb)(void *ud), void *ud) {
  s->done_cb = cb;
  s->done_ud = ud;
}

static void maybe_shutdown_done(gy_service_t *s) {
  if (!s->server_down || s->pending_closes) return;
  void (*cb)(void *) = s->shutdown_cb;
  s->shutdown_cb = NULL;
  if (cb) cb(s->shutdown_ud);
}

static void tick_closed(uv_handle_t *h) {
  gy_service_t *s = h->data;
  s->pending_closes--;
  maybe_shutdown_done(s);
}

static void jw_closed(void *ud) {
  gy_service_t *s = ud;
  s->pending_closes--;
  maybe_shutdown_done(s);
}

static void server_down(void *ud) {
  gy_service_t *s = ud;
  s->server_down = 1;
  maybe_shutdown_done(s);
}

void gy_service_shutdown(gy_service_t *s, void (*done)(void *ud), void *ud) {
  if (s->shutting_down) return;
  s->shutting_down = 1;
  s->shutdown_cb = done;
  s->shutdown_ud = ud;
  while (s->joins) {
    held_join_t *j = s->joins;
    s->joins = j->next;
    gy_rpc_reply(j->rpc, GY_RPC_UNAVAILABLE, "the controller is shutting down", NULL, 0);
    free(j);
  }
  while (s->gets)
    gy__svc_get_release(s->gets, GY_RPC_UNAVAILABLE, "the controller is shutting down", NULL);
  if (s->tick_init) {
    uv_timer_stop(&s->tick);
    s->pending_closes++;
    uv_close((uv_handle_t *)&s->tick, tick_closed);
    s->tick_init = 0;
  }
  if (s->jw) { /* no outcome is heard after this; what is queued is written by destroy */
    s->pending_closes++;
    gy_jwriter_close(s->jw, jw_closed, s);
  }
  gy_rpc_server_shutdown(s->srv, server_down, s);
}

void gy_service_destroy(gy_service_t *s) {
  if (!s) return;
  /* first: writes what is still queued (each tried once) and joins the thread; no outcome
   * reaches the service any more (closed at shutdown) */
  gy_jwriter_destroy(s->jw);
  gy_rpc_server_destroy(s->srv);
  for (size_t i = 0; i < s->nkv; i++) {
    free(s->kv[i].key);
    free(s->kv[i].val);
  }
  free(s->kv);
  free(s->abuf);
  free(s->sessions);
  free(s->fanout);
  gy_fleet_destroy(s->fleet);
  gy_run_destroy(s->run);
  gy_repair_destroy(s->repair);
  free(s->rbuf);
  free(s->tops);
  free(s->hw);
  free(s->vals);
  free(s->tps_names);
  free(s->evlog);
  free(s->ckevals);
  gy_skipset_free(&s->in_force);
  gy_skipset_free(&s->sent);
  free_opts(&s->o);
  free(s);
}
