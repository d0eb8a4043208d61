/*
 * svc_operator: the Operator service: unary calls and Watch streams, each behind the operator
 * token when one is configured.
 *
 * API, in order: on_status, on_events, on_checkpoints, on_policy_show, on_policy_set,
 * on_command, on_quarantine, on_watch_open, on_watch_message, on_watch_close.
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

/* Refuses an Operator call whose token is missing or wrong: "VERB: missing or wrong token"
 * (UNAUTHENTICATED, a `refused` event). */
static void refuse_token(gy_service_t *s, gy_rpc_call_t *call, const char *verb) {
  char msg[160];
  snprintf(msg, sizeof(msg), "%s: missing or wrong token", verb);
  gy__svc_refuse_unary(s, call, GY_RPC_UNAUTHENTICATED, GY_EVENT_REFUSED, msg);
}

/* The opening of every unary Operator call but Command: decodes the request (kind) and checks
 * the token (metadata, or the request's `token` field when it has one). Returns 0 with *r
 * decoded (to free with gy_wire_request_free); -1 after replying INVALID_ARGUMENT ("malformed
 * X", a `malformed` event) or UNAUTHENTICATED (refuse_token). */
static int operator_request(gy_service_t *s, gy_rpc_call_t *call, gy_wire_req_kind_t kind,
                            const char *verb, const uint8_t *req, size_t len,
                            gy_wire_request_t *r) {
  if (gy_wire_request_decode(kind, req, len, r)) {
    char msg[160];
    snprintf(msg, sizeof(msg), "malformed %s", gy_wire_request_name(kind));
    gy__svc_refuse_unary(s, call, GY_RPC_INVALID_ARGUMENT, GY_EVENT_MALFORMED, msg);
    return -1;
  }
  if (!operator_ok(s, call, r->token)) {
    gy_wire_request_free(r);
    refuse_token(s, call, verb);
    return -1;
  }
  return 0;
}

/* Encodes the reply r (controller/wire.h) and answers call with it. */
static void reply(gy_rpc_call_t *call, const gy_wire_op_reply_t *r) {
  uint8_t *buf;
  size_t n;
  int rc = gy_wire_reply_encode(r, &buf, &n);
  gy__svc_reply_encoded(call, rc, buf, n);
}

/* ----------------------------------------- Operator ----------------------------------------- */

void gy__svc_on_status(void *ud, gy_rpc_call_t *call, const uint8_t *req, size_t len) {
  gy_service_t *s = ud;
  gy_wire_request_t r;
  if (operator_request(s, call, GY_WIRE_REQ_EMPTY, "Status", req, len, &r)) return;
  gy_wire_request_free(&r);
  size_t n;
  uint8_t *buf = gy__svc_pack_status(s, 0, &n);
  gy__svc_reply_encoded(call, buf ? 0 : GY_ENOMEM, buf, n);
}

/* Unary /gyro.Operator/Events: the audit log kept in memory, events after since_id. */
void gy__svc_on_events(void *ud, gy_rpc_call_t *call, const uint8_t *req, size_t len) {
  gy_service_t *s = ud;
  gy_wire_request_t r;
  if (operator_request(s, call, GY_WIRE_REQ_EVENTS, "Events", req, len, &r)) return;
  uint64_t since = r.since_id;
  gy_wire_request_free(&r);
  uint64_t last = s->event_id;
  uint64_t first = last > EVLOG_MAX ? last - EVLOG_MAX + 1 : 1;
  if (since + 1 > first) first = since + 1;
  size_t n = last >= first ? (size_t)(last - first + 1) : 0;
  gy_wire_op_event_t *ev = n ? calloc(n, sizeof(*ev)) : NULL;
  if (n && !ev) {
    gy_rpc_reply(call, GY_RPC_RESOURCE_EXHAUSTED, "out of memory", NULL, 0);
    return;
  }
  for (size_t i = 0; i < n; i++) {
    const evrec_t *e = &s->evlog[(first + i - 1) % EVLOG_MAX];
    ev[i] = (gy_wire_op_event_t){e->id, e->time, e->step, e->kind, e->msg};
  }
  reply(call, &(gy_wire_op_reply_t){.kind = GY_WIRE_OP_EVENTS_REPLY, .events = ev, .nevents = n});
  free(ev);
}

/* Unary /gyro.Operator/Checkpoints: the committed checkpoints the run knows (oldest first, with
 * clean or suspect), each with its kept evaluation; the best is the clean one with the lowest
 * mean held-out loss over its sources. */
void gy__svc_on_checkpoints(void *ud, gy_rpc_call_t *call, const uint8_t *req, size_t len) {
  gy_service_t *s = ud;
  gy_wire_request_t r;
  if (operator_request(s, call, GY_WIRE_REQ_CHECKPOINTS, "Checkpoints", req, len, &r)) return;
  gy_wire_request_free(&r);
  int n = 0;
  const gy_run_ckpt_t *ck = gy_run_checkpoints(s->run, &n);
  size_t m = n > 0 ? (size_t)n : 1;
  gy_wire_op_checkpoint_t *ci = calloc(m, sizeof(*ci));
  gy_wire_op_source_eval_t *se = calloc(m * GY_FLEET_MAX_CH, sizeof(*se));
  if (!ci || !se) {
    free(ci);
    free(se);
    gy_rpc_reply(call, GY_RPC_RESOURCE_EXHAUSTED, "out of memory", NULL, 0);
    return;
  }
  gy_wire_op_reply_t rep = {.kind = GY_WIRE_OP_CHECKPOINTS_REPLY, .best_step = -1};
  int best = -1;
  for (int i = 0; i < n; i++) {
    ci[i].step = ck[i].step;
    ci[i].clean = ck[i].clean != 0;
    const gy_ckeval_t *e = gy_core_ckeval(s->core, ck[i].step);
    if (!e) continue;
    gy_wire_op_source_eval_t *x = &se[(size_t)i * GY_FLEET_MAX_CH];
    ci[i].has_eval = 1;
    ci[i].nsources = (size_t)e->n;
    ci[i].sources = x;
    double sum = 0;
    for (int k = 0; k < e->n; k++) {
      x[k] = (gy_wire_op_source_eval_t){.source = e->src[k].name,
                                        .loss = e->src[k].loss,
                                        .ppl = e->src[k].ppl,
                                        .tokens = e->src[k].tokens,
                                        .cloze_accuracy = e->src[k].cloze,
                                        .cloze_items = e->src[k].items};
      sum += e->src[k].loss;
    }
    ci[i].mean_loss = e->n ? sum / e->n : NAN;
    if (ck[i].clean && isfinite(ci[i].mean_loss) &&
        (best < 0 || ci[i].mean_loss < ci[best].mean_loss))
      best = i; /* a broken model (NaN, infinite) is never the best */
  }
  if (best >= 0) {
    ci[best].best = 1;
    rep.best_step = ci[best].step;
  }
  rep.ncheckpoints = (size_t)n;
  rep.checkpoints = ci;
  reply(call, &rep);
  free(ci);
  free(se);
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
  reply(call, &(gy_wire_op_reply_t){.kind = GY_WIRE_OP_POLICY_REPLY, .yaml = buf});
  free(buf);
}

void gy__svc_on_policy_show(void *ud, gy_rpc_call_t *call, const uint8_t *req, size_t len) {
  gy_service_t *s = ud;
  gy_wire_request_t r;
  if (operator_request(s, call, GY_WIRE_REQ_EMPTY, "PolicyShow", req, len, &r)) return;
  gy_wire_request_free(&r);
  reply_policy(call, gy_run_policy(s->run));
}

/* Unary /gyro.Operator/PolicySet: the sent YAML is read from memory by gy_policy_parse (the one
 * policy reader); its errors name the request's `name` (the operator's file). A refusal keeps
 * the old policy. */
void gy__svc_on_policy_set(void *ud, gy_rpc_call_t *call, const uint8_t *req, size_t len) {
  gy_service_t *s = ud;
  gy_wire_request_t r;
  if (operator_request(s, call, GY_WIRE_REQ_POLICY_SET, "PolicySet", req, len, &r)) return;
  char msg[800] = "";
  gy_policy_t p;
  int st = GY_RPC_OK;
  const char *name = *r.name ? r.name : "policy";
  gy_policy_default(&p);
  if (gy_policy_parse(&p, name, r.yaml, strlen(r.yaml), msg, sizeof(msg))) {
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
  gy_wire_request_free(&r);
}

void gy__svc_on_command(void *ud, gy_rpc_call_t *call, const uint8_t *req, size_t len) {
  gy_service_t *s = ud;
  gy_wire_command_t r;
  int rc = gy_wire_command_decode(req, len, &r);
  if (rc == GY_ENOMEM) {
    gy_rpc_reply(call, GY_RPC_RESOURCE_EXHAUSTED, "out of memory", NULL, 0);
    return;
  }
  if (rc) {
    gy__svc_refuse_unary(s, call, GY_RPC_INVALID_ARGUMENT, GY_EVENT_MALFORMED,
                         "malformed CommandRequest");
    return;
  }
  if (!operator_ok(s, call, r.token)) {
    gy_wire_command_free(&r);
    refuse_token(s, call, "Command");
    return;
  }
  uint64_t seq = 0;
  int64_t at = 0;
  char why[300];
  rc = gy_core_command(s->core, &r.cmd, &seq, &at, why, sizeof(why));
  gy_wire_command_free(&r);
  if (rc)
    gy_rpc_reply(call, gy__svc_rpc_status(rc), why, NULL, 0);
  else
    reply(call, &(gy_wire_op_reply_t){.kind = GY_WIRE_OP_COMMAND_REPLY, .seq = seq, .at_step = at});
  gy__svc_drain(s);
}

/* An entry of the core's list as the reply's plain struct (strings borrowed from the list). */
static gy_wire_op_qentry_t qentry(const gy_quar_entry_t *e) {
  return (gy_wire_op_qentry_t){.id = e->id,
                               .channel = e->channel,
                               .file = e->file,
                               .offset = e->offset,
                               .length = e->length,
                               .document = e->document,
                               .reason = e->reason,
                               .first_step = e->first_step,
                               .sample = e->sample,
                               .released = e->released,
                               .loss = e->loss,
                               .median = e->median,
                               .threshold = e->threshold,
                               .hits = e->hits,
                               .changed_step = e->changed_step};
}

/* Unary /gyro.Operator/Quarantine: LIST answers a page of the list (ids after after_id, oldest
 * first); ADD and RELEASE go to gy_core_quarantine (validated there, journaled, sent to the
 * workers as a QUARANTINE directive) and answer with the entries they touched. */
void gy__svc_on_quarantine(void *ud, gy_rpc_call_t *call, const uint8_t *req, size_t len) {
  gy_service_t *s = ud;
  gy_wire_quar_req_t r;
  int rc = gy_wire_quar_decode(req, len, &r);
  if (rc == GY_ENOMEM) {
    gy_rpc_reply(call, GY_RPC_RESOURCE_EXHAUSTED, "out of memory", NULL, 0);
    return;
  }
  if (rc) {
    gy__svc_refuse_unary(s, call, GY_RPC_INVALID_ARGUMENT, GY_EVENT_MALFORMED,
                         "malformed QuarantineRequest");
    return;
  }
  if (!operator_ok(s, call, r.token)) {
    gy_wire_quar_free(&r);
    refuse_token(s, call, "Quarantine");
    return;
  }
  const gy_quar_t *q = gy_core_quar(s->core);
  gy_wire_op_reply_t rep = {.kind = GY_WIRE_OP_QUARANTINE_REPLY};
  size_t cap = r.op == 0                      ? GY_WIRE_OP_QUAR_PAGE
               : r.cmd.op == GY_CORE_QUAR_ADD ? r.cmd.nadd
                                              : r.cmd.nrelease;
  if (r.op == 0 && r.limit && r.limit < cap) cap = r.limit;
  gy_wire_op_qentry_t *qe = calloc(cap ? cap : 1, sizeof(*qe));
  uint64_t *ids = calloc(cap ? cap : 1, sizeof(*ids));
  if (!qe || !ids) {
    gy_rpc_reply(call, GY_RPC_RESOURCE_EXHAUSTED, "out of memory", NULL, 0);
    goto out;
  }
  if (r.op == 0) { /* LIST: a page, found by id (the list is sorted by id) */
    size_t n = gy_quar_count(q), lo = 0, hi = n;
    while (lo < hi) {
      size_t mid = (lo + hi) / 2;
      if (gy_quar_at(q, mid)->id <= r.after_id)
        lo = mid + 1;
      else
        hi = mid;
    }
    for (size_t i = lo; i < n && rep.nqentries < cap; i++)
      qe[rep.nqentries++] = qentry(gy_quar_at(q, i));
    if (lo + rep.nqentries < n) rep.qnext_id = gy_quar_at(q, lo + rep.nqentries)->id;
  } else if (r.op == 1 || r.op == 2) {
    char why[600];
    size_t nids = 0;
    rc = gy_core_quarantine(s->core, &r.cmd, ids, &nids, &rep.seq, &rep.at_step, why, sizeof(why));
    if (rc) {
      gy_rpc_reply(call, gy__svc_rpc_status(rc == GY_ENOSPC ? GY_ENOTSUP : rc), why, NULL, 0);
      goto out;
    }
    for (size_t i = 0; i < nids; i++) {
      const gy_quar_entry_t *e = gy_quar_get(q, ids[i]);
      int dup = 0;
      for (size_t k = 0; k < rep.nqentries && !dup; k++)
        dup = qe[k].id == ids[i];
      if (e && !dup) qe[rep.nqentries++] = qentry(e);
    }
  } else {
    gy_rpc_reply(call, GY_RPC_INVALID_ARGUMENT, "quarantine: unknown op (LIST, ADD or RELEASE)",
                 NULL, 0);
    goto out;
  }
  rep.qentries = qe;
  rep.qtotal = gy_quar_count(q);
  rep.qactive = gy_quar_active(q);
  reply(call, &rep);
out:
  free(qe);
  free(ids);
  gy_wire_quar_free(&r);
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
  gy_wire_request_t r;
  if (gy_wire_request_decode(GY_WIRE_REQ_WATCH, msg, len, &r)) {
    gy__svc_eventf(s, GY_EVENT_MALFORMED, "Watch from %s: malformed WatchRequest",
                   gy_rpc_call_peer(call));
    gy_rpc_finish(call, GY_RPC_INVALID_ARGUMENT, "malformed WatchRequest");
    return;
  }
  int ok = operator_ok(s, call, r.token);
  c->steps = r.steps;
  gy_wire_request_free(&r);
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
