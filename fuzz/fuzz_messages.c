/* fuzz_messages: every message gyro decodes, from arbitrary bytes, through the wire layer's
 * decoders: the requests the controller accepts (controller/wire.c: decoded and converted as
 * the services convert them, then put through the validation the controller runs — the fleet,
 * controller/fleet.c, refuses what is out of range; a PolicySet's YAML goes to
 * gy_policy_parse, from memory, as in the operator service), what the agent receives
 * (wire/agent_wire.c: Assignment, ControllerMsg, StoreValue) and every reply gyroctl reads
 * (wire/operator_wire.c, with its JSON; then encoded again by the controller's encoder,
 * controller/wire.c, from the same plain struct, and decoded to the same view). Session
 * messages decode through a small arena as the service's, or through malloc, by the frame's
 * length; a report's samples, masked samples (their regions into a quarantine list,
 * controller/quarantine.c) and GPU health and an evaluation's sources are read as the service
 * reads them; a QuarantineRequest's regions go into a quarantine list and a QUARANTINE directive
 * through the fleet.
 *
 * Input: byte 0 picks the request type (its value modulo the number of types), the rest is the
 * message. For Worker session messages the rest is a sequence of frames [rank byte][length u16
 * little-endian][WorkerMsg bytes], fed in order from the session of rank (byte % world) of a
 * fleet whose gang (world 2) has formed and said Hello, so that reports, heartbeats and acks
 * reach the checks behind the generation and rank ones.
 *
 * Properties: no crash, leak or undefined behaviour; every event text the fleet produces, and
 * every string the status shows (worker ids, hosts, channel names), is valid UTF-8: they go
 * into JSON log lines and into protobuf string fields of replies. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "controller/fleet.h"
#include "controller/quarantine.h"
#include "controller/wire.h"
#include "fuzz/fuzz_util.h"
#include "config/policy_file.h"
#include "policies/policy.h"
#include "proto/contract.h"
#include "wire/agent_wire.h"
#include "wire/operator_wire.h"

enum {
  T_JOIN,
  T_SESSION,
  T_COMMAND,
  T_STORE_SET,
  T_STORE_GET,
  T_EVENTS,
  T_POLICY_SET,
  T_WATCH,
  T_EMPTY,
  T_ASSIGNMENT, /* what the agent receives */
  T_CONTROLLER_MSG,
  T_STORE_VALUE,
  T_STATUS_REPLY, /* what gyroctl receives */
  T_COMMAND_REPLY,
  T_EVENTS_REPLY,
  T_CHECKPOINTS_REPLY,
  T_POLICY_REPLY,
  T_WATCH_MSG,
  T_QUARANTINE,       /* a QuarantineRequest (the controller) */
  T_QUARANTINE_REPLY, /* what gyroctl receives */
  T_COUNT
};

#define WORLD 2

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  atexit(fuzz_temp_cleanup);
  return 0;
}

static void check_str(const char *what, const char *s) {
  if (s && !fuzz_utf8_ok(s, strlen(s))) fuzz_fail("%s is not UTF-8: %s", what, s);
}

/* Checks and clears the fleet's actions; ASSIGN session ids go to sess[rank]. */
static void drain(gy_fleet_t *f, char sess[WORLD][GY_FLEET_SESSION_MAX]) {
  size_t n;
  const gy_fleet_action_t *a = gy_fleet_actions(f, &n);
  for (size_t i = 0; i < n; i++) {
    if (a[i].kind == GY_FLEET_ACT_EVENT) check_str("event text", a[i].msg);
    if (a[i].kind == GY_FLEET_ACT_DIRECTIVE) check_str("directive reason", a[i].msg);
    if (a[i].kind == GY_FLEET_ACT_ASSIGN && sess && a[i].rank >= 0 && a[i].rank < WORLD)
      memcpy(sess[a[i].rank], a[i].session_id, GY_FLEET_SESSION_MAX);
  }
  gy_fleet_actions_clear(f);
}

static void check_status(const gy_fleet_t *f) {
  for (int r = 0; r < gy_fleet_nmembers(f); r++) {
    const gy_fleet_member_t *m = gy_fleet_member(f, r);
    if (!m) continue;
    check_str("worker id", m->worker_id);
    check_str("host", m->host);
  }
  const gy_fleet_step_t *h = gy_fleet_history(f, gy_fleet_last_step(f));
  for (int c = 0; h && c < h->nch; c++)
    check_str("channel name", h->ch[c].name);
}

static gy_fleet_t *new_fleet(void) {
  gy_fleet_opts_t o = {
      .world = WORLD, .tp = 1, .window = 4, .steps = 100, .lost_after_ms = 10000, .seed = 42};
  gy_fleet_t *f = NULL;
  if (gy_fleet_create(&f, &o)) fuzz_fail("gy_fleet_create");
  return f;
}

/* A fleet whose gang formed: two workers joined and said Hello. */
static gy_fleet_t *formed_fleet(char sess[WORLD][GY_FLEET_SESSION_MAX]) {
  gy_fleet_t *f = new_fleet();
  for (int r = 0; r < WORLD; r++) {
    char id[16];
    snprintf(id, sizeof(id), "w%d", r);
    gy_fleet_join_t j = {.worker_id = id, .ordinal = r, .host = "h", .pid = 1 + r};
    if (gy_fleet_join(f, 0, &j, (uint64_t)r + 1)) fuzz_fail("join: %s", gy_fleet_errmsg(f));
  }
  drain(f, sess);
  for (int r = 0; r < WORLD; r++)
    if (gy_fleet_hello(f, 1, sess[r], gy_fleet_generation(f), r))
      fuzz_fail("hello: %s", gy_fleet_errmsg(f));
  drain(f, NULL);
  return f;
}

/* The same mapping as svc_session.c's gy__svc_on_join (gy_wire_join). */
static void do_join(const uint8_t *p, size_t n) {
  gy_wire_join_req_t jr;
  if (gy_wire_join_decode(p, n, &jr)) return;
  gy_fleet_t *f = new_fleet();
  gy_fleet_join(f, 0, &jr.join, 1);
  drain(f, NULL);
  gy_fleet_join_t other = {.worker_id = "other", .ordinal = -1, .host = "h", .pid = 2};
  gy_fleet_join(f, 1, &other, 2);
  drain(f, NULL);
  check_status(f);
  gy_fleet_destroy(f);
  gy_wire_join_free(&jr);
}

/* Every entry of q: its strings UTF-8, and its journal record read back to the same entry. */
static void check_quar(gy_quar_t *q) {
  for (size_t i = 0; i < gy_quar_count(q); i++) {
    const gy_quar_entry_t *e = gy_quar_at(q, i);
    check_str("quarantine channel", e->channel);
    check_str("quarantine file", e->file);
    check_str("quarantine reason", e->reason);
    char *t = gy_quar_to_json(e);
    if (!t) fuzz_fail("an entry has no JSON record");
    gy_quar_entry_t back;
    if (gy_quar_from_json(q, t, &back) || back.id != e->id || back.offset != e->offset ||
        back.length != e->length || back.file != e->file || back.rev != e->rev)
      fuzz_fail("a quarantine record does not read back: %s", t);
    free(t);
  }
}

/* A report's masked samples as the core keeps them (core_guard.c): strings checked, regions
 * into a quarantine list. */
static void masked(const gy_wire_worker_msg_t *wm, gy_quar_t *q) {
  gy_wire_masked_t mk;
  gy_wire_masked(wm, &mk);
  for (size_t i = 0; i < mk.in.nmasked; i++) {
    const gy_core_masked_t *x = &mk.in.masked[i];
    (void)strlen(x->channel);
    (void)strlen(x->reason);
    if (!x->file || !x->region_length) continue;
    char why[256];
    gy_quar_add_t a = {.channel = x->channel,
                       .file = x->file,
                       .offset = x->region_offset,
                       .length = x->region_length,
                       .document = x->document,
                       .reason = x->reason,
                       .step = (int64_t)i,
                       .sample = x->id,
                       .loss = x->loss};
    if (gy_quar_add(q, &a, NULL, why, sizeof(why)) < 0) check_str("quarantine refusal", why);
    if (i % 5 == 4) gy_quar_release(q, gy_quar_count(q), (int64_t)i);
  }
}

/* The same mapping as svc_session.c's session_msg: the report with rank 0's samples
 * (gy_wire_samples), its masked samples (gy_wire_masked) and its GPU health read, an
 * evaluation's sources (gy_wire_eval). */
static gy_quar_t *g_quar;
static void session_msg(gy_fleet_t *f, int64_t now, int *bound, int stream,
                        const gy_wire_worker_msg_t *wm) {
  if (!bound[stream]) {
    if (wm->kind != GY_WIRE_WORKER_HELLO) return;
    if (!gy_fleet_hello(f, now, wm->session_id, wm->generation, wm->rank)) bound[stream] = 1;
    return;
  }
  switch (wm->kind) {
  case GY_WIRE_WORKER_REPORT: {
    gy_core_sample_t s[2 * GY_WIRE_TOPK_MAX];
    size_t ntop, nbottom;
    gy_wire_samples(wm, s, GY_WIRE_TOPK_MAX, &ntop, &nbottom);
    for (size_t i = 0; i < ntop; i++)
      (void)(s[i].channel && strlen(s[i].channel));
    for (size_t i = 0; i < nbottom; i++)
      (void)(s[GY_WIRE_TOPK_MAX + i].channel && strlen(s[GY_WIRE_TOPK_MAX + i].channel));
    if (wm->has_gpu) (void)strlen(wm->gpu.name);
    if (!gy_fleet_report(f, now, stream, &wm->report) && stream == 0) masked(wm, g_quar);
    break;
  }
  case GY_WIRE_WORKER_EVAL: {
    gy_wire_eval_t ev;
    gy_wire_eval(wm, &ev);
    for (size_t i = 0; i < ev.in.nsources && i < GY_FLEET_MAX_CH; i++)
      (void)strlen(ev.in.source[i]);
    break;
  }
  case GY_WIRE_WORKER_HEARTBEAT:
    if (!gy_fleet_heartbeat(f, now, stream, wm->generation, wm->rank))
      gy_fleet_progress(f, now, stream, &wm->progress);
    gy_fleet_tick(f, now + 100000); /* the hang rule on hostile progress figures */
    break;
  case GY_WIRE_WORKER_ACK:
    gy_fleet_ack(f, now, stream, wm->generation, wm->seq, wm->rank, wm->ok, wm->error,
                 wm->checkpoint_bytes);
    break;
  case GY_WIRE_WORKER_HELLO:
    gy_fleet_hello(f, now, wm->session_id, wm->generation, wm->rank);
    break;
  default:
    break;
  }
}

/* A small bump arena as the service's (what does not fit goes to malloc), so that the session
 * decoder runs through a caller's allocator as in the controller. */
typedef struct {
  size_t used;
  _Alignas(16) uint8_t mem[2048];
} arena_t;
static void *arena_alloc(void *ud, size_t n) {
  arena_t *a = ud;
  size_t need = (n + 15) & ~(size_t)15;
  if (need >= n && need <= sizeof(a->mem) - a->used) {
    void *r = a->mem + a->used;
    a->used += need;
    return r;
  }
  return malloc(n);
}
static void arena_free(void *ud, void *p) {
  arena_t *a = ud;
  if ((uint8_t *)p >= a->mem && (uint8_t *)p < a->mem + sizeof(a->mem)) return;
  free(p);
}

static void do_session(const uint8_t *p, size_t n) {
  static arena_t arena;
  const gy_wire_alloc_t alloc = {arena_alloc, arena_free, &arena};
  char sess[WORLD][GY_FLEET_SESSION_MAX];
  memset(sess, 0, sizeof(sess));
  gy_fleet_t *f = formed_fleet(sess);
  int bound[WORLD] = {1, 1};
  int64_t now = 2;
  if (gy_quar_create(&g_quar, 64)) fuzz_fail("gy_quar_create");
  while (n >= 3) {
    int stream = p[0] % WORLD;
    size_t len = (size_t)p[1] | (size_t)p[2] << 8;
    p += 3;
    n -= 3;
    if (len > n) len = n;
    gy_wire_worker_msg_t wm;
    arena.used = 0;
    int rc = (len & 1) ? gy_wire_session_decode_with(p, len, &alloc, &wm)
                       : gy_wire_session_decode(p, len, &wm);
    p += len;
    n -= len;
    if (rc) continue;
    session_msg(f, now++, bound, stream, &wm);
    gy_wire_session_free(&wm);
    drain(f, NULL);
    /* an operator command now and then, so that directives and acks meet */
    if ((now & 7) == 0) {
      uint64_t seq;
      int64_t at;
      gy_fleet_command(f, now, (int)(now >> 3) % 7, NULL, &seq, &at);
      drain(f, NULL);
    }
  }
  gy_fleet_tick(f, now + 20000);
  drain(f, NULL);
  check_status(f);
  check_quar(g_quar);
  gy_quar_destroy(g_quar);
  g_quar = NULL;
  gy_fleet_destroy(f);
}

/* The same mapping as svc_operator.c's gy__svc_on_quarantine (gy_core_quarantine's checks and
 * list changes, then the QUARANTINE directive through the fleet). */
static void do_quarantine(const uint8_t *p, size_t n) {
  gy_wire_quar_req_t r;
  if (gy_wire_quar_decode(p, n, &r)) return;
  char sess[WORLD][GY_FLEET_SESSION_MAX];
  gy_fleet_t *f = formed_fleet(sess);
  gy_quar_t *q;
  if (gy_quar_create(&q, 16)) fuzz_fail("gy_quar_create");
  gy_fleet_qentry_t qe[GY_CORE_QUAR_CMD_MAX + 1];
  int nq = 0;
  char why[256];
  if (r.cmd.op == GY_CORE_QUAR_ADD) {
    for (size_t i = 0; i < r.cmd.nadd; i++) {
      const gy_core_quar_region_t *x = &r.cmd.add[i];
      gy_quar_add_t a = {.channel = x->channel,
                         .file = x->file,
                         .offset = x->offset,
                         .length = x->length,
                         .document = -1,
                         .reason = x->reason,
                         .operator_ = 1};
      uint64_t id;
      int rc = gy_quar_add(q, &a, &id, why, sizeof(why));
      if (rc < 0) {
        check_str("quarantine refusal", why);
        continue;
      }
      const gy_quar_entry_t *e = gy_quar_get(q, id);
      if (!e) fuzz_fail("an added region has no entry");
      qe[nq++] = (gy_fleet_qentry_t){e->channel, e->file, e->offset, e->length, 0};
    }
  } else {
    for (size_t i = 0; i < r.cmd.nrelease; i++)
      gy_quar_release(q, r.cmd.release[i], 0);
  }
  check_quar(q);
  uint64_t seq;
  int64_t at;
  gy_fleet_qdir_t qd = {.entries = qe, .nentries = nq};
  if (nq && !gy_fleet_quarantine(f, 3, GY_DIR_QUARANTINE, &qd, &seq, &at)) {
    size_t na;
    const gy_fleet_action_t *a = gy_fleet_actions(f, &na);
    for (size_t i = 0; i < na; i++) { /* the directive encodes */
      if (a[i].kind != GY_FLEET_ACT_DIRECTIVE) continue;
      uint8_t small[64], *b;
      size_t blen;
      if (!gy_wire_ctl_encode(&a[i], small, sizeof(small), &b, &blen) && b != small) free(b);
    }
  }
  drain(f, NULL);
  gy_quar_destroy(q);
  gy_fleet_destroy(f);
  gy_wire_quar_free(&r);
}

/* The same mapping as svc_operator.c's gy__svc_on_command (without the step-to-sample
 * conversion of `newest`/skip_steps, which needs the service's skip set). */
static void do_command(const uint8_t *p, size_t n) {
  gy_wire_command_t r;
  if (gy_wire_command_decode(p, n, &r)) return;
  char sess[WORLD][GY_FLEET_SESSION_MAX];
  gy_fleet_t *f = formed_fleet(sess);
  uint64_t seq;
  int64_t at;
  if (r.kind == GY_DIR_ROLLBACK)
    gy_fleet_rollback(f, 3, r.to_step, r.skip, r.nskip, &r.hparams, "operator rollback", &seq, &at);
  else
    gy_fleet_command(f, 3, r.kind, &r.hparams, &seq, &at);
  drain(f, NULL);
  check_status(f);
  gy_fleet_destroy(f);
  gy_wire_command_free(&r);
}

static void do_policy_set(const uint8_t *p, size_t n) {
  gy_wire_request_t r;
  if (gy_wire_request_decode(GY_WIRE_REQ_POLICY_SET, p, n, &r)) return;
  const char *yaml = r.yaml;
  gy_policy_t pol;
  gy_policy_default(&pol);
  char errmsg[512];
  /* from memory, as the operator service reads it */
  if (gy_policy_parse(&pol, "policy", yaml, strlen(yaml), errmsg, sizeof(errmsg)) == 0 &&
      gy_policy_check(&pol, errmsg, sizeof(errmsg)))
    fuzz_fail("an accepted policy fails its check: %s", errmsg);
  gy_wire_request_free(&r);
}

/* A request that carries plain fields only: decoded and freed. */
static void do_request(gy_wire_req_kind_t kind, const uint8_t *p, size_t n) {
  gy_wire_request_t r;
  if (gy_wire_request_decode(kind, p, n, &r)) return;
  (void)strlen(r.key);
  gy_wire_request_free(&r);
}

/* What the agent receives, decoded as the agent decodes it. */
static void do_agent(int type, const uint8_t *p, size_t n) {
  if (type == T_ASSIGNMENT) {
    gy_wire_agent_assignment_t a;
    if (gy_wire_agent_assignment_decode(p, n, &a)) return;
    for (int i = 0; i < a.asg.nskip; i++)
      (void)(a.asg.skip[2 * i] < a.asg.skip[2 * i + 1]);
    (void)strlen(a.asg.config_yaml);
    for (int i = 0; i < a.asg.nquar; i++)
      (void)(strlen(a.asg.quar[i].channel) + strlen(a.asg.quar[i].file));
    gy_wire_agent_assignment_free(&a);
  } else if (type == T_CONTROLLER_MSG) {
    gy_wire_agent_ctl_t m;
    if (gy_wire_agent_ctl_decode(p, n, &m)) return;
    for (int i = 0; i < m.dir.nskip; i++)
      (void)(m.dir.skip[i].first < m.dir.skip[i].last);
    (void)strlen(m.dir.reason);
    for (int i = 0; i < m.dir.nquar; i++)
      (void)(strlen(m.dir.quar[i].channel) + strlen(m.dir.quar[i].file));
    gy_wire_agent_ctl_free(&m);
  } else {
    void *v;
    size_t vlen;
    if (!gy_wire_agent_store_value_decode(p, n, &v, &vlen)) free(v);
  }
}

/* What gyroctl receives, decoded and turned into JSON as gyroctl prints it. */
static void do_reply(gy_wire_op_reply_kind_t kind, const uint8_t *p, size_t n) {
  gy_wire_op_reply_t r;
  if (gy_wire_op_reply_decode(kind, p, n, &r)) return;
  json_t *j = gy_wire_op_reply_json(&r);
  char *s = json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(10));
  free(s);
  json_decref(j);
  for (size_t i = 0; i < r.nevents && kind == GY_WIRE_OP_EVENTS_REPLY; i++)
    json_decref(gy_wire_op_event_json(&r, i));
  for (size_t i = 0; i < r.status.nranks; i++)
    (void)strlen(r.status.ranks[i].worker_id);
  for (size_t i = 0; i < r.ncheckpoints; i++)
    for (size_t k = 0; k < r.checkpoints[i].nsources; k++)
      (void)strlen(r.checkpoints[i].sources[k].source);
  /* the controller encodes the same plain struct: it decodes back to the same view */
  uint8_t *b;
  size_t blen;
  if (!gy_wire_reply_encode(&r, &b, &blen)) {
    gy_wire_op_reply_t back;
    if (gy_wire_op_reply_decode(kind, b, blen, &back)) fuzz_fail("a re-encoded reply fails");
    if (back.nevents != r.nevents || back.ncheckpoints != r.ncheckpoints ||
        back.status.nranks != r.status.nranks || back.watch != r.watch || back.seq != r.seq ||
        back.nqentries != r.nqentries || back.qnext_id != r.qnext_id || strcmp(back.yaml, r.yaml))
      fuzz_fail("a re-encoded reply differs");
    gy_wire_op_reply_free(&back);
    free(b);
  }
  gy_wire_op_reply_free(&r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1 || size > 256 * 1024) return -1;
  const uint8_t *p = data + 1;
  size_t n = size - 1;
  switch (data[0] % T_COUNT) {
  case T_JOIN:
    do_join(p, n);
    break;
  case T_SESSION:
    do_session(p, n);
    break;
  case T_COMMAND:
    do_command(p, n);
    break;
  case T_STORE_SET:
    do_request(GY_WIRE_REQ_STORE_SET, p, n);
    break;
  case T_STORE_GET:
    do_request(GY_WIRE_REQ_STORE_GET, p, n);
    break;
  case T_EVENTS:
    do_request(GY_WIRE_REQ_EVENTS, p, n);
    break;
  case T_POLICY_SET:
    do_policy_set(p, n);
    break;
  case T_WATCH:
    do_request(GY_WIRE_REQ_WATCH, p, n);
    break;
  case T_EMPTY:
    do_request(GY_WIRE_REQ_EMPTY, p, n);
    break;
  case T_ASSIGNMENT:
  case T_CONTROLLER_MSG:
  case T_STORE_VALUE:
    do_agent(data[0] % T_COUNT, p, n);
    break;
  case T_STATUS_REPLY:
  case T_COMMAND_REPLY:
  case T_EVENTS_REPLY:
  case T_CHECKPOINTS_REPLY:
  case T_POLICY_REPLY:
  case T_WATCH_MSG:
    do_reply((gy_wire_op_reply_kind_t)(data[0] % T_COUNT - T_STATUS_REPLY), p, n);
    break;
  case T_QUARANTINE:
    do_quarantine(p, n);
    break;
  case T_QUARANTINE_REPLY:
    do_reply(GY_WIRE_OP_QUARANTINE_REPLY, p, n);
    break;
  }
  return 0;
}
