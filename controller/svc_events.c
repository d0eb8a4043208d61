/*
 * svc_events: what the service tells: events, the status, aggregated steps.
 *
 * API, in order: emit_event, eventf, io_event, pack_status, io_step, io_eval.
 *
 * The io_* functions are the core's io (controller/io.h) for what it tells.
 *
 * An event goes to the ring evlog (for /gyro.Operator/Events), the telemetry, the journal (a
 * best-effort write submitted to the writer's thread, in order with the other writes), a
 * JSON log line on stderr and every active Watch stream. An aggregated step goes to the
 * telemetry and the straggler check, a JSON line on stdout (when emit_steps) and, as a
 * StatusReply, to the Watch streams that asked for steps. Events and the status are
 * wire/operator_wire.h's plain structs, encoded by controller/wire.h. The state a StatusReply says
 * is the run's when it says more, else the fleet's (status_state).
 *
 * Invariants:
 * - Event ids count up from 1 (after a restart, on from the journal's); event id i is kept at
 *   evlog[(i - 1) % EVLOG_MAX].
 */
#include "controller/service_internal.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"

/* The run's state as StatusReply says it: the run's when it says more (halted, or a repair or
 * suspicion, while a gang trains or is paused; without a gang, DEGRADED or INIT says more than a
 * repair waiting for one), else the fleet's. */
static const char *status_state(gy_service_t *s) {
  gy_run_state_t run_st = gy_run_state(s->run);
  gy_fleet_state_t fs = gy_fleet_state(s->fleet);
  int run_says =
      (fs == GY_FLEET_TRAIN || fs == GY_FLEET_PAUSED) &&
      (run_st == GY_RUN_HALTED || run_st == GY_RUN_SPIKE_SUSPECTED || run_st == GY_RUN_ROLLBACK ||
       run_st == GY_RUN_SKIP_WINDOW || run_st == GY_RUN_RESUME);
  return run_says ? gy_run_state_name(run_st) : gy_fleet_state_name(fs);
}

/* Tells the telemetry record (if any) the state, generation and whether a gang holds. */
static void tm_state(gy_service_t *s) {
  if (!s->o.telemetry || !s->fleet || !s->run) return;
  gy_fleet_state_t fs = gy_fleet_state(s->fleet);
  gy_telemetry_state(s->o.telemetry, status_state(s), gy_fleet_generation(s->fleet),
                     fs == GY_FLEET_TRAIN || fs == GY_FLEET_PAUSED || fs == GY_FLEET_STOPPING);
}

/* Emits an event: a JSON log line on stderr and a WatchMsg to every active watcher. */
void gy__svc_emit_event(gy_service_t *s, gy_event_kind_t kind, int64_t step, const char *msg) {
  const char *name = gy_event_kind_name(kind); /* the wire form */
  uint64_t id = ++s->event_id;
  double t = gy__svc_wall_s();
  if (s->evlog) {
    evrec_t *e = &s->evlog[(id - 1) % EVLOG_MAX];
    e->id = id;
    e->time = t;
    e->step = step;
    snprintf(e->kind, sizeof(e->kind), "%s", name);
    snprintf(e->msg, sizeof(e->msg), "%s", msg);
  }
  gy_telemetry_event(s->o.telemetry, id, t, step, kind, msg);
  gy__svc_journal_event(s, id, t, step, name, msg); /* on the writer's thread */
  tm_state(s);
  gy_log(gy_event_kind_info(kind)->level == GY_EVENT_LEVEL_WARN ? GY_LOG_WARN : GY_LOG_INFO,
         "controller", "event %llu %s step %lld: %s", (unsigned long long)id, name, (long long)step,
         msg);
  if (!s->watchers) return;
  gy_wire_op_event_t ev = {id, t, step, name, msg};
  gy_wire_op_reply_t wm = {
      .kind = GY_WIRE_OP_WATCH_MSG, .watch = GY_WIRE_OP_WATCH_EVENT, .events = &ev, .nevents = 1};
  uint8_t *buf;
  size_t n;
  if (gy_wire_reply_encode(&wm, &buf, &n)) return;
  for (call_t *w = s->watchers; w; w = w->next)
    gy_rpc_send(w->rpc, buf, n);
  free(buf);
}

void gy__svc_eventf(gy_service_t *s, gy_event_kind_t kind, const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  gy__svc_emit_event(s, kind, gy_fleet_last_step(s->fleet), msg);
}

/* ------------------------------------------ status ------------------------------------------ */

/* The core's events. */
void gy__svc_io_event(void *ud, gy_event_kind_t kind, int64_t step, const char *msg) {
  gy__svc_emit_event(ud, kind, step, msg);
}

/* Builds the StatusReply of the current state and encodes it (as a WatchMsg when as_watch);
 * NULL when out of memory. */
uint8_t *gy__svc_pack_status(gy_service_t *s, int as_watch, size_t *len) {
  const gy_fleet_t *f = s->fleet;
  gy_wire_op_status_t st = {.run = s->o.run_name,
                            .state = status_state(s),
                            .step = gy_fleet_last_step(f),
                            .horizon = gy_fleet_horizon(f),
                            .generation = gy_fleet_generation(f),
                            .world = s->o.world,
                            .tp = s->o.tp,
                            .steps_total = s->o.steps,
                            .committed_step =
                                gy_fleet_ncommitted(f) ? gy_fleet_committed(f, 0) : -1};
  const gy_fleet_step_t *h = gy_fleet_history(f, st.step);
  gy_wire_op_channel_t chs[GY_FLEET_MAX_CH];
  if (h) {
    st.loss = h->loss;
    st.grad_norm = h->grad_norm;
    st.tokens_per_s = h->tokens_per_s;
    for (int c = 0; c < h->nch; c++)
      chs[c] = (gy_wire_op_channel_t){h->ch[c].name, h->ch[c].loss_sum, h->ch[c].tokens};
    st.nchannels = (size_t)h->nch;
    st.channels = chs;
  }
  int nm = gy_fleet_nmembers(f);
  gy_wire_op_rank_t *rs = nm ? calloc((size_t)nm, sizeof(*rs)) : NULL;
  uint8_t *buf = NULL;
  *len = 0;
  if (nm && !rs) return NULL;
  int64_t now = gy__svc_now_ms(s);
  for (int r = 0; r < nm; r++) {
    const gy_fleet_member_t *m = gy_fleet_member(f, r);
    rs[r] = (gy_wire_op_rank_t){.rank = r,
                                .worker_id = m->worker_id,
                                .host = m->host,
                                .pid = m->pid,
                                .steps_done = m->steps_done,
                                .tokens_per_s = m->tokens_per_s,
                                .last_report_age_ms = (double)(now - m->last_seen_ms),
                                .alive = m->alive};
  }
  st.nranks = (size_t)nm;
  st.ranks = rs;
  gy_wire_op_reply_t r = {.kind = as_watch ? GY_WIRE_OP_WATCH_MSG : GY_WIRE_OP_STATUS_REPLY,
                          .watch = GY_WIRE_OP_WATCH_STATUS,
                          .status = st};
  if (gy_wire_reply_encode(&r, &buf, len)) buf = NULL;
  free(rs);
  return buf;
}

/* A rank's throughput as its last report said (NaN once lost): the telemetry's and the
 * straggler check's per-rank figure. */
static double member_rate(const void *fleet, int rank) {
  const gy_fleet_member_t *m = gy_fleet_member(fleet, rank);
  return m && m->alive ? m->tokens_per_s : NAN;
}

/* One aggregated step into the telemetry record and the straggler check (O(channels + ranks)). */
static void tm_step(gy_service_t *s, int64_t step, const gy_fleet_step_t *h) {
  int nranks = gy_fleet_nmembers(s->fleet);
  if (s->o.telemetry) {
    const char *names[GY_FLEET_MAX_CH];
    double loss[GY_FLEET_MAX_CH];
    for (int c = 0; c < h->nch; c++) {
      names[c] = h->ch[c].name;
      loss[c] = h->ch[c].tokens ? h->ch[c].loss_sum / (double)h->ch[c].tokens : NAN;
    }
    gy_telemetry_step_t ts = {.step = step,
                              .loss = h->loss,
                              .nch = h->nch,
                              .ch_name = names,
                              .ch_loss = loss,
                              .grad_norm = h->grad_norm,
                              .grad_norm_shallow = h->grad_norm_shallow,
                              .grad_norm_deep = h->grad_norm_deep,
                              .lr = h->lr,
                              .tokens_per_s = h->tokens_per_s,
                              .step_ms = h->step_ms,
                              .nonfinite = h->nonfinite,
                              .nranks = nranks,
                              .rank_rate = member_rate,
                              .rank_ud = s->fleet};
    gy_telemetry_step(s->o.telemetry, &ts);
    tm_state(s);
  }
}

/* One aggregated step: a JSON line on stdout and a StatusReply to watchers that want steps. */
void gy__svc_io_step(void *ud, int64_t step) {
  gy_service_t *s = ud;
  const gy_fleet_step_t *h = gy_fleet_history(s->fleet, step);
  if (!h) return;
  tm_step(s, step, h);
  if (s->o.emit_steps) {
    json_t *o = json_object(), *lc = json_object(), *tc = json_object();
    json_object_set_new(o, "type", json_string("step"));
    json_object_set_new(o, "step", json_integer(step));
    json_object_set_new(o, "loss", gy__svc_num(h->loss));
    for (int c = 0; c < h->nch; c++) {
      json_object_set_new(lc, h->ch[c].name,
                          h->ch[c].tokens ? gy__svc_num(h->ch[c].loss_sum / (double)h->ch[c].tokens)
                                          : json_null());
      json_object_set_new(tc, h->ch[c].name, json_integer((json_int_t)h->ch[c].tokens));
    }
    json_object_set_new(o, "loss_ch", lc);
    json_object_set_new(o, "tokens_ch", tc);
    json_object_set_new(o, "grad_norm", gy__svc_num(h->grad_norm));
    json_object_set_new(o, "grad_norm_shallow", gy__svc_num(h->grad_norm_shallow));
    json_object_set_new(o, "grad_norm_deep", gy__svc_num(h->grad_norm_deep));
    json_object_set_new(o, "nonfinite", json_boolean(h->nonfinite));
    json_object_set_new(o, "lr", gy__svc_num(h->lr));
    json_object_set_new(o, "tokens_per_s", gy__svc_num(h->tokens_per_s));
    json_object_set_new(o, "step_ms", gy__svc_num(h->step_ms));
    gy_json_emit(o);
  }
  int want = 0;
  for (call_t *w = s->watchers; w; w = w->next)
    want |= w->steps;
  if (!want) return;
  size_t n;
  uint8_t *buf = gy__svc_pack_status(s, 1, &n);
  if (!buf) return;
  for (call_t *w = s->watchers; w; w = w->next)
    if (w->steps) gy_rpc_send(w->rpc, buf, n);
  free(buf);
}

/* A held-out evaluation: a JSON line on stdout (when emit_steps). */
void gy__svc_io_eval(void *ud, const gy_ckeval_t *e, int checkpoint) {
  gy_service_t *s = ud;
  if (!s->o.emit_steps) return;
  json_t *o = gy_core_ckeval_json(e);
  if (!o) return;
  json_object_set_new(o, "type", json_string("eval"));
  json_object_set_new(o, "checkpoint", json_boolean(checkpoint));
  gy_json_emit(o);
}
