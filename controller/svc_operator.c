/*
 * svc_operator: the Operator service: unary calls and Watch streams, each behind the operator
 * token when one is configured.
 *
 * API, in order: on_status, on_events, on_checkpoints, on_policy_show, on_policy_set,
 * on_command, on_watch_open, on_watch_message, on_watch_close.
 *
 * /gyro.Operator/Events lists evlog, the ring of the last EVLOG_MAX events;
 * /gyro.Operator/Checkpoints lists the committed checkpoints with their kept evaluations;
 * /gyro.Operator/PolicyShow formats the run's policy, /gyro.Operator/PolicySet reads the sent
 * YAML from memory with gy_policy_parse (errors name the operator's file) and hands it to
 * gy_run_set_policy. A Command of kind ROLLBACK goes to gy_fleet_rollback with the request's
 * to_step and skip ranges (reason "operator rollback"); one with `newest` or `skip_steps`
 * (gyroctl skip) goes to the newest committed checkpoint (`newest`) with its step ranges
 * converted to sample ids as ask_fleet (svc_repair.c) converts a decision's window (reason
 * "operator skip"). A command the fleet accepts is told to the run state machine too
 * (operator_to_run).
 *
 * Invariants:
 * - A Watch stream is in s->watchers from its accepted request (active) until it closes; a
 *   stream's later requests are ignored.
 * - A refused call is answered once, and told by an event.
 */
#include "controller/service_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/err.h"
#include "config/policy_file.h"
#include "controller/wire.h"

/* Operator calls: when a token is configured, metadata "authorization: Bearer TOKEN" or the
 * request's token field must carry it. */
static int operator_ok(gy_service_t *s, gy_rpc_call_t *call, const char *req_token) {
  const char *tok = s->o.operator_token;
  if (!tok || !*tok) return 1;
  /* Constant-time comparisons (gy_rpc_token_equal): the time of a refusal says nothing about
   * how much of the token was right. Neither token is ever logged. */
  const char *md = gy_rpc_call_metadata(call, "authorization");
  int ok = md && !strncmp(md, "Bearer ", 7) && gy_rpc_token_equal(md + 7, tok);
  return ok || (req_token && *req_token && gy_rpc_token_equal(req_token, tok));
}

/* The opening of every unary Operator call: unpacks the request (desc: its type) and checks
 * the token (metadata, or the request's `token` field when it has one). Returns the message, to
 * free with protobuf_c_message_free_unpacked; NULL after replying INVALID_ARGUMENT ("malformed
 * X", a `malformed` event) or UNAUTHENTICATED ("VERB: missing or wrong token", a `refused`
 * event). */
static ProtobufCMessage *operator_request(gy_service_t *s, gy_rpc_call_t *call,
                                          const ProtobufCMessageDescriptor *desc, const char *verb,
                                          const uint8_t *req, size_t len) {
  ProtobufCMessage *m = protobuf_c_message_unpack(desc, NULL, len, req);
  char msg[160];
  if (!m) {
    snprintf(msg, sizeof(msg), "malformed %s", desc->short_name);
    gy__svc_refuse_unary(s, call, GY_RPC_INVALID_ARGUMENT, GY_EVENT_MALFORMED, msg);
    return NULL;
  }
  const ProtobufCFieldDescriptor *f =
      protobuf_c_message_descriptor_get_field_by_name(desc, "token");
  const char *token = NULL;
  if (f && f->type == PROTOBUF_C_TYPE_STRING && f->label != PROTOBUF_C_LABEL_REPEATED)
    token = *(const char *const *)((const char *)m + f->offset);
  if (!operator_ok(s, call, token)) {
    protobuf_c_message_free_unpacked(m, NULL);
    snprintf(msg, sizeof(msg), "%s: missing or wrong token", verb);
    gy__svc_refuse_unary(s, call, GY_RPC_UNAUTHENTICATED, GY_EVENT_REFUSED, msg);
    return NULL;
  }
  return m;
}

/* ----------------------------------------- Operator ----------------------------------------- */

void gy__svc_on_status(void *ud, gy_rpc_call_t *call, const uint8_t *req, size_t len) {
  gy_service_t *s = ud;
  ProtobufCMessage *e = operator_request(s, call, &gyro__empty__descriptor, "Status", req, len);
  if (!e) return;
  protobuf_c_message_free_unpacked(e, NULL);
  size_t n;
  uint8_t *buf = gy__svc_pack_status(s, 0, &n);
  if (!buf) {
    gy_rpc_reply(call, GY_RPC_RESOURCE_EXHAUSTED, "out of memory", NULL, 0);
    return;
  }
  gy_rpc_reply(call, GY_RPC_OK, NULL, buf, n);
  free(buf);
}

/* Unary /gyro.Operator/Events: the audit log kept in memory, events after since_id. */
void gy__svc_on_events(void *ud, gy_rpc_call_t *call, const uint8_t *req, size_t len) {
  gy_service_t *s = ud;
  Gyro__EventsRequest *r = (Gyro__EventsRequest *)operator_request(
      s, call, &gyro__events_request__descriptor, "Events", req, len);
  if (!r) return;
  uint64_t since = r->since_id;
  gyro__events_request__free_unpacked(r, NULL);
  uint64_t last = s->event_id;
  uint64_t first = last > EVLOG_MAX ? last - EVLOG_MAX + 1 : 1;
  if (since + 1 > first) first = since + 1;
  size_t n = last >= first ? (size_t)(last - first + 1) : 0;
  Gyro__Event *ev = n ? calloc(n, sizeof(*ev)) : NULL;
  Gyro__Event **evp = n ? calloc(n, sizeof(*evp)) : NULL;
  if (n && (!ev || !evp)) {
    free(ev);
    free(evp);
    gy_rpc_reply(call, GY_RPC_RESOURCE_EXHAUSTED, "out of memory", NULL, 0);
    return;
  }
  for (size_t i = 0; i < n; i++) {
    const evrec_t *e = &s->evlog[(first + i - 1) % EVLOG_MAX];
    gyro__event__init(&ev[i]);
    ev[i].id = e->id;
    ev[i].time = e->time;
    ev[i].step = e->step;
    ev[i].kind = (char *)e->kind;
    ev[i].message = (char *)e->msg;
    evp[i] = &ev[i];
  }
  Gyro__EventsReply er = GYRO__EVENTS_REPLY__INIT;
  er.n_events = n;
  er.events = evp;
  gy__svc_reply_msg(call, &er.base);
  free(ev);
  free(evp);
}

/* Unary /gyro.Operator/Checkpoints: the committed checkpoints the run knows (oldest first, with
 * clean or suspect), each with its kept evaluation; the best is the clean one with the lowest
 * mean held-out loss over its sources. */
void gy__svc_on_checkpoints(void *ud, gy_rpc_call_t *call, const uint8_t *req, size_t len) {
  gy_service_t *s = ud;
  ProtobufCMessage *r =
      operator_request(s, call, &gyro__checkpoints_request__descriptor, "Checkpoints", req, len);
  if (!r) return;
  protobuf_c_message_free_unpacked(r, NULL);
  int n = 0;
  const gy_run_ckpt_t *ck = gy_run_checkpoints(s->run, &n);
  size_t m = n > 0 ? (size_t)n : 1;
  Gyro__CheckpointInfo *ci = calloc(m, sizeof(*ci));
  Gyro__CheckpointInfo **cip = calloc(m, sizeof(*cip));
  Gyro__SourceEval *se = calloc(m * GY_FLEET_MAX_CH, sizeof(*se));
  Gyro__SourceEval **sep = calloc(m * GY_FLEET_MAX_CH, sizeof(*sep));
  if (!ci || !cip || !se || !sep) {
    free(ci);
    free(cip);
    free(se);
    free(sep);
    gy_rpc_reply(call, GY_RPC_RESOURCE_EXHAUSTED, "out of memory", NULL, 0);
    return;
  }
  Gyro__CheckpointsReply rep = GYRO__CHECKPOINTS_REPLY__INIT;
  rep.best_step = -1;
  int best = -1;
  for (int i = 0; i < n; i++) {
    gyro__checkpoint_info__init(&ci[i]);
    cip[i] = &ci[i];
    ci[i].step = ck[i].step;
    ci[i].clean = ck[i].clean != 0;
    const gy_ckeval_t *e = gy_core_ckeval(s->core, ck[i].step);
    if (!e) continue;
    ci[i].has_eval = 1;
    ci[i].n_sources = (size_t)e->n;
    ci[i].sources = &sep[(size_t)i * GY_FLEET_MAX_CH];
    double sum = 0;
    for (int k = 0; k < e->n; k++) {
      Gyro__SourceEval *x = &se[(size_t)i * GY_FLEET_MAX_CH + (size_t)k];
      gyro__source_eval__init(x);
      x->source = (char *)e->src[k].name;
      x->loss = e->src[k].loss;
      x->ppl = e->src[k].ppl;
      x->tokens = e->src[k].tokens;
      x->cloze_accuracy = e->src[k].cloze;
      x->cloze_items = e->src[k].items;
      ci[i].sources[k] = x;
      sum += e->src[k].loss;
    }
    ci[i].mean_loss = e->n ? sum / e->n : NAN;
    if (ck[i].clean && e->n && (best < 0 || ci[i].mean_loss < ci[best].mean_loss)) best = i;
  }
  if (best >= 0) {
    ci[best].best = 1;
    rep.best_step = ci[best].step;
  }
  rep.n_checkpoints = (size_t)n;
  rep.checkpoints = cip;
  gy__svc_reply_msg(call, &rep.base);
  free(ci);
  free(cip);
  free(se);
  free(sep);
}

/* Replies the run's policy as YAML (gy_policy_format). */
static void reply_policy(gy_rpc_call_t *call, const gy_policy_t *p) {
  size_t need = gy_policy_format(p, NULL, 0);
  char *buf = malloc(need + 1);
  if (!buf) {
    gy_rpc_reply(call, GY_RPC_RESOURCE_EXHAUSTED, "out of memory", NULL, 0);
    return;
  }
  gy_policy_format(p, buf, need + 1);
  Gyro__PolicyReply pr = GYRO__POLICY_REPLY__INIT;
  pr.yaml = buf;
  gy__svc_reply_msg(call, &pr.base);
  free(buf);
}

void gy__svc_on_policy_show(void *ud, gy_rpc_call_t *call, const uint8_t *req, size_t len) {
  gy_service_t *s = ud;
  ProtobufCMessage *e = operator_request(s, call, &gyro__empty__descriptor, "PolicyShow", req, len);
  if (!e) return;
  protobuf_c_message_free_unpacked(e, NULL);
  reply_policy(call, gy_run_policy(s->run));
}

/* Unary /gyro.Operator/PolicySet: the sent YAML is read from memory by gy_policy_parse (the one
 * policy reader); its errors name the request's `name` (the operator's file). A refusal keeps
 * the old policy. */
void gy__svc_on_policy_set(void *ud, gy_rpc_call_t *call, const uint8_t *req, size_t len) {
  gy_service_t *s = ud;
  Gyro__PolicySetRequest *r = (Gyro__PolicySetRequest *)operator_request(
      s, call, &gyro__policy_set_request__descriptor, "PolicySet", req, len);
  if (!r) return;
  char msg[800] = "";
  gy_policy_t p;
  int st = GY_RPC_OK;
  const char *name = r->name && *r->name ? r->name : "policy";
  gy_policy_default(&p);
  if (gy_policy_parse(&p, name, r->yaml, strlen(r->yaml), msg, sizeof(msg))) {
    st = GY_RPC_INVALID_ARGUMENT;
  } else if (gy_core_set_policy(s->core, &p)) {
    snprintf(msg, sizeof(msg), "%s: %s", name, gy_core_errmsg(s->core));
    st = GY_RPC_INVALID_ARGUMENT;
  }
  if (st) {
    gy__svc_eventf(s, GY_EVENT_POLICY_REFUSED, "policy set from %s refused: %s",
                   gy_rpc_call_peer(call), msg);
    gy_rpc_reply(call, st, msg, NULL, 0);
  } else {
    gy__svc_eventf(s, GY_EVENT_POLICY_SET, "policy replaced from %s (%s)", name,
                   gy_rpc_call_peer(call));
    reply_policy(call, gy_run_policy(s->run));
  }
  gyro__policy_set_request__free_unpacked(r, NULL);
}

void gy__svc_on_command(void *ud, gy_rpc_call_t *call, const uint8_t *req, size_t len) {
  gy_service_t *s = ud;
  Gyro__CommandRequest *r = (Gyro__CommandRequest *)operator_request(
      s, call, &gyro__command_request__descriptor, "Command", req, len);
  if (!r) return;
  gy_core_cmd_t cmd = {.kind = (int)r->kind, .to_step = r->to_step, .newest = r->newest};
  gy_wire_hparams_in(r->hparams, &cmd.hp);
  gy_fleet_skip_t *sk = malloc((r->n_skip + r->n_skip_steps + 1) * sizeof(*sk));
  if (!sk) {
    gyro__command_request__free_unpacked(r, NULL);
    gy_rpc_reply(call, GY_RPC_RESOURCE_EXHAUSTED, "out of memory", NULL, 0);
    return;
  }
  for (size_t i = 0; i < r->n_skip; i++)
    sk[i] = (gy_fleet_skip_t){r->skip[i]->first, r->skip[i]->last};
  for (size_t i = 0; i < r->n_skip_steps; i++)
    sk[r->n_skip + i] = (gy_fleet_skip_t){r->skip_steps[i]->first, r->skip_steps[i]->last};
  cmd.skip = sk;
  cmd.nskip = r->n_skip;
  cmd.skip_steps = sk + r->n_skip;
  cmd.nskip_steps = r->n_skip_steps;
  gyro__command_request__free_unpacked(r, NULL);
  uint64_t seq = 0;
  int64_t at = 0;
  char why[300];
  int rc = gy_core_command(s->core, &cmd, &seq, &at, why, sizeof(why));
  free(sk);
  if (rc) {
    gy_rpc_reply(call, gy__svc_rpc_status(rc), why, NULL, 0);
  } else {
    Gyro__CommandReply cr = GYRO__COMMAND_REPLY__INIT;
    cr.seq = seq;
    cr.at_step = at;
    gy__svc_reply_msg(call, &cr.base);
  }
  gy__svc_drain(s);
}

void gy__svc_on_watch_open(void *ud, gy_rpc_call_t *call) {
  (void)ud;
  gy__svc_open_stream(call, CALL_WATCH);
}

void gy__svc_on_watch_message(void *ud, gy_rpc_call_t *call, const uint8_t *msg, size_t len) {
  gy_service_t *s = ud;
  call_t *c = gy_rpc_call_data(call);
  if (!c || c->active) return; /* a server stream has one request; later ones are ignored */
  Gyro__WatchRequest *r = gyro__watch_request__unpack(NULL, len, msg);
  if (!r) {
    gy__svc_eventf(s, GY_EVENT_MALFORMED, "Watch from %s: malformed WatchRequest",
                   gy_rpc_call_peer(call));
    gy_rpc_finish(call, GY_RPC_INVALID_ARGUMENT, "malformed WatchRequest");
    return;
  }
  int ok = operator_ok(s, call, r->token);
  c->steps = r->steps;
  gyro__watch_request__free_unpacked(r, NULL);
  if (!ok) {
    gy__svc_eventf(s, GY_EVENT_REFUSED, "Watch from %s: missing or wrong token",
                   gy_rpc_call_peer(call));
    gy_rpc_finish(call, GY_RPC_UNAUTHENTICATED, "Watch: missing or wrong token");
    return;
  }
  c->active = 1;
  c->next = s->watchers;
  if (s->watchers) s->watchers->prev = c;
  s->watchers = c;
  /* the current status first, so a watcher knows where the run stands */
  size_t n;
  uint8_t *buf = gy__svc_pack_status(s, 1, &n);
  if (buf) gy_rpc_send(call, buf, n);
  free(buf);
}

void gy__svc_on_watch_close(void *ud, gy_rpc_call_t *call, int status) {
  gy_service_t *s = ud;
  (void)status;
  call_t *c = gy_rpc_call_data(call);
  if (!c) return;
  gy_rpc_call_set_data(call, NULL);
  if (c->active) {
    if (c->prev)
      c->prev->next = c->next;
    else
      s->watchers = c->next;
    if (c->next) c->next->prev = c->prev;
  }
  free(c);
}
