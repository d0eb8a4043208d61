/*
 * service: the controller's gRPC side (see service.h), and the composition root of its files.
 * The decisions are the core's (controller/core.h: fleet, run, repair coordinator, the
 * journal's write-ahead order), which acts only through its io table (controller/io.h); the
 * service is that io: streams, the journal writer's thread, a libuv timer, the clocks.
 * Everything runs on the loop thread: gy_rpc calls the handlers there, the liveness timer fires
 * there, so no lock is needed. The one exception is the store: the journal's writes and the
 * fence check run on the writer's thread (jw, controller/jwriter.h), which works only on what
 * the core copied into each record and tells the outcome back on the loop; nothing on the
 * loop thread waits for the store (the recovery at create excepted: it runs before serving).
 *
 * API, in order: create (core + recovery from the journal + server + timer), recovered_done,
 * port, fleet, run, on_done, shutdown, destroy. Also the helpers the svc_*.c files share:
 * now_ms, wall_s, rpc_status, num, refuse_unary, reply_encoded; and the io's clocks, alert,
 * done and timer.
 *
 * One file per concern; struct gy_service and the gy__svc_* calls between the files are in
 * service_internal.h:
 * - svc_session.c: Worker Join and Session streams; the io's assign, send and close.
 * - svc_rendezvous.c: StoreSet and StoreGet, the workers' rendezvous store (held gets).
 * - svc_operator.c: the Operator's unary calls (Status, Command, Events, Checkpoints,
 *   PolicyShow, PolicySet) and its Watch streams.
 * - svc_events.c: events (and their ring, evlog), the status, aggregated steps, evaluations
 *   (the io's event, step and eval).
 * - svc_gpu.c: GPU reports (a new hardware fault is an event and an alert).
 * - svc_journal.c: the io's journal and fence on the writer's thread, and the journal's load
 *   at create (the core recovers from what it holds).
 *
 * Flow: a handler decodes the message (controller/wire.h; a decode failure is INVALID_ARGUMENT
 * and an event; session messages decode into a per-service arena, so a StepReport costs no
 * malloc), checks tokens, feeds the core the input, answers the call (the reply encoded by
 * controller/wire.h), then gy_core_drain() carries out what followed through the io.
 *
 * Invariants:
 * - Every held unary call (joins, store gets) is in exactly one list and is answered exactly
 *   once: by the core (io assign, or a refusal), by a key arriving, by its timer, or at
 *   shutdown.
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

void gy__svc_reply_encoded(gy_rpc_call_t *call, int rc, uint8_t *buf, size_t len) {
  if (rc) {
    gy_rpc_reply(call, GY_RPC_RESOURCE_EXHAUSTED, "out of memory", NULL, 0);
    return;
  }
  gy_rpc_reply(call, GY_RPC_OK, NULL, buf, len);
  free(buf);
}

/* --------------------------------------------- API ---------------------------------------------
 */

/* ------------------------------------------- the io ------------------------------------------ */

static int64_t io_now(void *ud) {
  return gy__svc_now_ms(ud);
}

/* Monotonic milliseconds, read now (the loop's cached time can be old after a stop). */
static int64_t io_mono(void *ud) {
  (void)ud;
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static double io_wall(void *ud) {
  (void)ud;
  return gy__svc_wall_s();
}

static void io_alert(void *ud, const char *cls, int64_t step, const char *msg) {
  gy_service_t *s = ud;
  gy_alert_post(s->o.alert, cls, step, msg);
}

static void io_done(void *ud) {
  gy_service_t *s = ud;
  if (s->done_cb) s->done_cb(s->done_ud);
}

static void on_tick(uv_timer_t *t) {
  gy_service_t *s = t->data;
  gy_core_tick(s->core);
  gy__svc_drain(s);
}

static int io_timer(void *ud, int64_t period_ms) {
  gy_service_t *s = ud;
  if (s->tick_init) return GY_EBUSY;
  uv_timer_init(s->loop, &s->tick);
  s->tick.data = s;
  s->tick_init = 1;
  uv_timer_start(&s->tick, on_tick, (uint64_t)period_ms, (uint64_t)period_ms);
  return 0;
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
  s->o.channels = NULL; /* the core keeps its own copy */
  s->o.nchannels = 0;
  if (!s->o.tick_ms) s->o.tick_ms = 100;
  if (!s->o.listen || !s->o.run_name || (opts->join_token && !s->o.join_token) ||
      (opts->operator_token && !s->o.operator_token) || (opts->config_yaml && !s->o.config_yaml) ||
      (opts->config_dir && !s->o.config_dir))
    goto err;
  s->sessions = calloc((size_t)opts->world, sizeof(*s->sessions));
  s->fanout = calloc((size_t)opts->world, sizeof(*s->fanout));
  s->evlog = calloc(EVLOG_MAX, sizeof(*s->evlog));
  if (!s->sessions || !s->fanout || !s->evlog) goto err;
  s->arena_alloc = (gy_wire_alloc_t){arena_alloc, arena_free, s};
  s->t0_ms = (int64_t)uv_now(loop);
  s->io = (gy_io_t){.ud = s,
                    .now_ms = io_now,
                    .mono_ms = io_mono,
                    .wall_s = io_wall,
                    .send = gy__svc_io_send,
                    .assign = gy__svc_io_assign,
                    .dismiss = gy__svc_io_dismiss,
                    .close = gy__svc_io_close,
                    .event = gy__svc_io_event,
                    .step = gy__svc_io_step,
                    .eval = gy__svc_io_eval,
                    .alert = io_alert,
                    .done = io_done,
                    .journal = gy__svc_io_journal,
                    .fence = gy__svc_io_fence,
                    .timer = io_timer};
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  gy_core_opts_t co = {.world = opts->world,
                       .tp = opts->tp,
                       .window = opts->window,
                       .lost_after_ms = opts->lost_after_ms,
                       .hang_floor_ms = opts->hang_floor_ms,
                       .hang_factor = opts->hang_factor,
                       .reform_alert_ms = opts->reform_alert_ms,
                       .steps = opts->steps,
                       .seed = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)ts.tv_sec ^
                               ((uint64_t)getpid() << 40),
                       .policy = opts->policy,
                       .batch = opts->batch,
                       .base_lr_scale = opts->base_lr_scale,
                       .base_grad_clip = opts->base_grad_clip,
                       .base_eps = opts->base_eps,
                       .skip = opts->skip,
                       .nskip = opts->nskip,
                       .journal = opts->journal != NULL,
                       .fence = opts->fence != NULL,
                       .fence_every_ms = opts->fence_every_ms,
                       .telemetry = opts->telemetry,
                       .channels = opts->channels,
                       .nchannels = opts->nchannels,
                       .quarantine_max = opts->quarantine_max};
  if ((rc = gy_core_create(&s->core, &co, &s->io, errmsg, errlen))) goto err;
  s->fleet = gy_core_fleet(s->core);
  s->run = gy_core_run(s->core);
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
      (rc = gy_rpc_server_add_unary(s->srv, GY_METHOD_OPERATOR_POLICY_SET, gy__svc_on_policy_set,
                                    s)) ||
      (rc = gy_rpc_server_add_unary(s->srv, GY_METHOD_OPERATOR_CHECKPOINTS, gy__svc_on_checkpoints,
                                    s)) ||
      (rc = gy_rpc_server_add_unary(s->srv, GY_METHOD_OPERATOR_QUARANTINE, gy__svc_on_quarantine,
                                    s)) ||
      (rc = gy_rpc_server_start(s->srv))) {
    snprintf(errmsg, errlen, "service: cannot register methods: %s", gy_strerror(rc));
    goto err;
  }
  if ((rc = gy_core_start(s->core, s->o.tick_ms))) goto err;
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
  gy_core_destroy(s->core);
  free(s->hw);
  free(s->evlog);
  free(s->sessions);
  free(s->fanout);
  free_opts(&s->o);
  free(s);
  return rc;
}

int gy_service_recovered_done(const gy_service_t *s) {
  return gy_core_recovered_done(s->core);
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
  free(s->sessions);
  free(s->fanout);
  gy_core_destroy(s->core);
  free(s->hw);
  free(s->evlog);
  free_opts(&s->o);
  free(s);
}
