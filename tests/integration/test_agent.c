/* libgyro-agent against a small scripted controller (a real gRPC server from common/rpc.h on a
 * libuv loop in this process; the agent runs in a second thread as a trainer would):
 *  - join: rank, world, config and start step arrive; the JoinRequest carries id and ordinal;
 *  - grants: the agent never answers GO at or past the horizon; parked, it heartbeats;
 *  - directives come at exactly their at_step, before the grant; a repeated seq is ignored;
 *    acks reach the controller with the step;
 *  - the rendezvous store: set, get, get of a missing key times out, check;
 *  - the controller ends the session (as if it died): the agent trains on to its horizon,
 *    parks, rejoins with steps_done and the old generation, and goes on in the new one;
 *  - a rejoin answered with another rank returns GY_AGENT_REASSIGNED. */
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#include "agent/agent.h"
#include "common/err.h"
#include "common/rpc.h"
#include "proto/gyro.pb-c.h"
#include "tests/test.h"

#define TOTAL 12
#define MAXKV 16

/* ------------------------------- the scripted controller ------------------------------- */

typedef struct {
  uv_loop_t loop;
  uv_async_t stop;
  uv_timer_t tick; /* every 10 ms: held StoreGets, delayed actions */
  gy_rpc_server_t *srv;
  int port;
  /* state, loop thread only (the agent thread reads the results after the loop ended) */
  uint64_t gen;
  int joins;
  int64_t join_steps_done[4];
  uint64_t join_prev_gen[4];
  int join_ordinal;
  char join_id[64];
  atomic_int phase; /* 2: the reassignment script (set by the trainer thread) */
  int phase2_joins;
  gy_rpc_call_t *session;
  int hellos, heartbeats, reports, acks;
  int bad; /* messages of the wrong generation, failed acks (CHECK is for the main thread) */
  int64_t report_steps[64];
  uint64_t ack_seq[8];
  int64_t ack_step[8];
  double park_until; /* send the directives when this time passes (0: not armed) */
  int killed;        /* the session was ended once */
  char *keys[MAXKV];
  char *vals[MAXKV];
  int nkv;
  struct {
    gy_rpc_call_t *call;
    char *key;
    double deadline;
  } held[8];
  int nheld;
} ctl_t;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void send_ctl(ctl_t *c, const Gyro__ControllerMsg *m) {
  size_t n = gyro__controller_msg__get_packed_size(m);
  uint8_t buf[512];
  if (n > sizeof(buf)) abort(); /* the loop thread leaves CHECK/REQUIRE to the others */
  gyro__controller_msg__pack(m, buf);
  if (c->session) gy_rpc_send(c->session, buf, n);
}

static void send_grant(ctl_t *c, int64_t horizon) {
  Gyro__Grant g = GYRO__GRANT__INIT;
  g.generation = c->gen;
  g.horizon = horizon;
  Gyro__ControllerMsg m = GYRO__CONTROLLER_MSG__INIT;
  m.msg_case = GYRO__CONTROLLER_MSG__MSG_GRANT;
  m.grant = &g;
  send_ctl(c, &m);
}

static void send_directive(ctl_t *c, uint64_t seq, int64_t at, int kind, float lr_scale) {
  Gyro__HParams hp = GYRO__HPARAMS__INIT;
  hp.lr_scale = lr_scale;
  hp.present = 1u << 0;
  Gyro__Directive d = GYRO__DIRECTIVE__INIT;
  d.generation = c->gen;
  d.seq = seq;
  d.at_step = at;
  d.kind = kind;
  if (kind == GY_DIRECTIVE_SET_HPARAMS) d.hparams = &hp;
  Gyro__ControllerMsg m = GYRO__CONTROLLER_MSG__INIT;
  m.msg_case = GYRO__CONTROLLER_MSG__MSG_DIRECTIVE;
  m.directive = &d;
  send_ctl(c, &m);
}

static void reply_msg(gy_rpc_call_t *call, const ProtobufCMessage *m) {
  uint8_t buf[1024];
  size_t n = protobuf_c_message_get_packed_size(m);
  if (n > sizeof(buf)) abort(); /* the loop thread leaves CHECK/REQUIRE to the others */
  protobuf_c_message_pack(m, buf);
  gy_rpc_reply(call, GY_RPC_OK, NULL, buf, n);
}

static void on_join(void *ud, gy_rpc_call_t *call, const uint8_t *req, size_t len) {
  ctl_t *c = ud;
  Gyro__JoinRequest *j = gyro__join_request__unpack(NULL, len, req);
  if (!j) {
    gy_rpc_reply(call, GY_RPC_INVALID_ARGUMENT, "bad JoinRequest", NULL, 0);
    return;
  }
  if (c->joins < 4) {
    c->join_steps_done[c->joins] = j->steps_done;
    c->join_prev_gen[c->joins] = j->generation;
  }
  c->joins++;
  c->join_ordinal = j->ordinal;
  snprintf(c->join_id, sizeof(c->join_id), "%s", j->worker_id);
  if (strcmp(j->join_token, "secret")) {
    gy_rpc_reply(call, GY_RPC_UNAUTHENTICATED, "bad join token", NULL, 0);
    gyro__join_request__free_unpacked(j, NULL);
    return;
  }
  c->gen++;
  char sess[32], prefix[32];
  snprintf(sess, sizeof(sess), "s%" PRIu64, c->gen);
  snprintf(prefix, sizeof(prefix), "g%" PRIu64, c->gen);
  Gyro__Assignment a = GYRO__ASSIGNMENT__INIT;
  a.generation = c->gen;
  a.rank = 1;
  if (c->phase == 2 && ++c->phase2_joins > 1) a.rank = 0; /* the rejoin: another rank */
  a.world = 2;
  a.tp = 1;
  a.config_yaml = "run: {steps: 12}\n";
  a.config_dir = "/tmp";
  a.session_id = sess;
  a.start_step = j->steps_done;
  a.rdzv_prefix = prefix;
  a.heartbeat_ms = 50;
  gyro__join_request__free_unpacked(j, NULL);
  reply_msg(call, &a.base);
}

static int kv_find(ctl_t *c, const char *key) {
  for (int i = 0; i < c->nkv; i++)
    if (!strcmp(c->keys[i], key)) return i;
  return -1;
}

static void answer_get(gy_rpc_call_t *call, ctl_t *c, int i) {
  Gyro__StoreValue v = GYRO__STORE_VALUE__INIT;
  v.value.data = (uint8_t *)c->vals[i];
  v.value.len = strlen(c->vals[i]);
  reply_msg(call, &v.base);
}

static void on_store_set(void *ud, gy_rpc_call_t *call, const uint8_t *req, size_t len) {
  ctl_t *c = ud;
  Gyro__StoreSetRequest *r = gyro__store_set_request__unpack(NULL, len, req);
  if (!r || c->nkv == MAXKV) {
    gy_rpc_reply(call, GY_RPC_INVALID_ARGUMENT, "bad StoreSetRequest", NULL, 0);
    if (r) gyro__store_set_request__free_unpacked(r, NULL);
    return;
  }
  c->keys[c->nkv] = strdup(r->key);
  c->vals[c->nkv] = strndup((const char *)r->value.data, r->value.len);
  c->nkv++;
  gyro__store_set_request__free_unpacked(r, NULL);
  Gyro__Empty e = GYRO__EMPTY__INIT;
  reply_msg(call, &e.base);
}

static void on_store_get(void *ud, gy_rpc_call_t *call, const uint8_t *req, size_t len) {
  ctl_t *c = ud;
  Gyro__StoreGetRequest *r = gyro__store_get_request__unpack(NULL, len, req);
  if (!r) {
    gy_rpc_reply(call, GY_RPC_INVALID_ARGUMENT, "bad StoreGetRequest", NULL, 0);
    return;
  }
  int i = kv_find(c, r->key);
  if (i >= 0)
    answer_get(call, c, i);
  else if (r->timeout_ms <= 0 || c->nheld == 8)
    gy_rpc_reply(call, GY_RPC_DEADLINE_EXCEEDED, "no such key", NULL, 0);
  else {
    c->held[c->nheld].call = call;
    c->held[c->nheld].key = strdup(r->key);
    c->held[c->nheld].deadline = now_s() + r->timeout_ms / 1000.0;
    c->nheld++;
  }
  gyro__store_get_request__free_unpacked(r, NULL);
}

static void s_open(void *ud, gy_rpc_call_t *call) {
  (void)ud;
  (void)call;
}

static void s_message(void *ud, gy_rpc_call_t *call, const uint8_t *msg, size_t len) {
  ctl_t *c = ud;
  Gyro__WorkerMsg *m = gyro__worker_msg__unpack(NULL, len, msg);
  if (!m) {
    gy_rpc_finish(call, GY_RPC_INVALID_ARGUMENT, "bad WorkerMsg");
    return;
  }
  switch (m->msg_case) {
  case GYRO__WORKER_MSG__MSG_HELLO:
    c->hellos++;
    if (m->hello->generation != c->gen) c->bad++;
    c->session = call;
    /* generation 1: up to step 5, then a park; generation 2: to the end */
    send_grant(c, c->phase == 2 ? 2 : c->gen == 1 ? 5 : TOTAL);
    break;
  case GYRO__WORKER_MSG__MSG_REPORT:
    if (m->report->generation != c->gen) c->bad++;
    if (c->reports < 64) c->report_steps[c->reports] = m->report->step;
    c->reports++;
    if (m->report->step == 4) c->park_until = now_s() + 0.3;
    if (c->phase == 2) {
      if (m->report->step == 1) gy_rpc_finish(call, GY_RPC_UNAVAILABLE, "controller going away");
      break;
    }
    if (m->report->step == 7 && !c->killed) {
      /* the controller "dies": the worker still holds a grant up to 10 */
      c->killed = 1;
      gy_rpc_finish(call, GY_RPC_UNAVAILABLE, "controller going away");
    }
    break;
  case GYRO__WORKER_MSG__MSG_ACK:
    if (c->acks < 8) {
      c->ack_seq[c->acks] = m->ack->seq;
      c->ack_step[c->acks] = m->ack->step;
    }
    c->acks++;
    if (!m->ack->ok) c->bad++;
    if (c->acks == 2) send_grant(c, 10);
    break;
  case GYRO__WORKER_MSG__MSG_HEARTBEAT:
    c->heartbeats++;
    break;
  default:
    break;
  }
  gyro__worker_msg__free_unpacked(m, NULL);
}

static void s_close(void *ud, gy_rpc_call_t *call, int status) {
  ctl_t *c = ud;
  (void)status;
  if (c->session == call) c->session = NULL;
}

static void on_tick(uv_timer_t *t) {
  ctl_t *c = t->data;
  double now = now_s();
  if (c->park_until > 0 && now >= c->park_until) {
    c->park_until = 0;
    /* one repeated: the agent must hand each out once, at its at_step */
    send_directive(c, 1, 5, GY_DIRECTIVE_CHECKPOINT, 0);
    send_directive(c, 1, 5, GY_DIRECTIVE_CHECKPOINT, 0);
    send_directive(c, 2, 5, GY_DIRECTIVE_SET_HPARAMS, 0.5f);
  }
  for (int i = 0; i < c->nheld;) {
    int k = kv_find(c, c->held[i].key);
    if (k >= 0 || now >= c->held[i].deadline) {
      if (k >= 0)
        answer_get(c->held[i].call, c, k);
      else
        gy_rpc_reply(c->held[i].call, GY_RPC_DEADLINE_EXCEEDED, "no such key", NULL, 0);
      free(c->held[i].key);
      c->held[i] = c->held[--c->nheld];
      continue;
    }
    i++;
  }
}

static void on_shutdown_done(void *ud) {
  ctl_t *c = ud;
  uv_close((uv_handle_t *)&c->tick, NULL);
  uv_close((uv_handle_t *)&c->stop, NULL);
}

static void on_stop(uv_async_t *h) {
  ctl_t *c = h->data;
  uv_timer_stop(&c->tick);
  gy_rpc_server_shutdown(c->srv, on_shutdown_done, c);
}

/* ------------------------------------- the "trainer" ----------------------------------- */

typedef struct {
  ctl_t *ctl;
  int go_at_or_past_horizon; /* never */
  int directives;
  uint64_t dir_seq[8];
  int64_t dir_step[8];
  int dir_kind[8];
  float dir_lr;
  int64_t final_step;
  int final_rc;
  uint64_t final_gen;
  int reassigned_rc, reassigned_rank;
  int64_t reassigned_step;
} trainer_t;

static void *trainer_main(void *arg) {
  trainer_t *t = arg;
  char addr[64];
  /* a dead address first: the agent must move on to the live one */
  snprintf(addr, sizeof(addr), "127.0.0.1:1,127.0.0.1:%d", t->ctl->port);
  gy_agent_t *a = NULL;
  gy_agent_opts_t o = {.controllers = addr,
                       .worker_id = "w-test",
                       .ordinal = 1,
                       .join_token = "secret",
                       .rpc_timeout_ms = 2000};
  REQUIRE(gy_agent_create(&a, &o) == 0);
  gy_agent_assignment_t asg;
  int rc = gy_agent_join(a, &asg, 10000);
  REQUIRE(rc == 0);
  CHECK_EQ_INT(asg.rank, 1);
  CHECK_EQ_INT(asg.world, 2);
  CHECK_EQ_INT(asg.generation, 1);
  CHECK_EQ_INT(asg.start_step, 0);
  CHECK(!strcmp(asg.rdzv_prefix, "g1"));
  CHECK(strstr(asg.config_yaml, "steps: 12") != NULL);
  CHECK_EQ_INT(gy_agent_join(a, &asg, 100), GY_EBUSY);

  /* rendezvous store */
  gy_store_t *st = gy_agent_store(a);
  void *v = NULL;
  size_t n = 0;
  CHECK_EQ_INT(st->ops->set(st, "g1/world/0", "addr-0", 6), 0);
  CHECK_EQ_INT(st->ops->get(st, "g1/world/0", &v, &n, 1000), 0);
  CHECK(n == 6 && v && !memcmp(v, "addr-0", 6));
  free(v);
  double t0 = now_s();
  CHECK_EQ_INT(st->ops->get(st, "g1/world/9", &v, &n, 300), GY_ETIMEDOUT);
  double dt = now_s() - t0;
  CHECK_MSG(dt > 0.25 && dt < 3.0, "missing key waited %.3f s", dt);
  CHECK_EQ_INT(st->ops->get(st, "../etc", &v, &n, 0), GY_EINVAL);
  const char *keys[2] = {"g1/world/0", "g1/world/9"};
  CHECK_EQ_INT(st->ops->check(st, keys, 1), 1);
  CHECK_EQ_INT(st->ops->check(st, keys, 2), 0);

  int64_t step = 0;
  CHECK_EQ_INT(gy_agent_wait_grant(a, 3, &(gy_agent_directive_t){0}), GY_EINVAL);
  while (step < TOTAL) {
    gy_agent_directive_t d;
    rc = gy_agent_wait_grant(a, step, &d);
    if (rc == GY_AGENT_DIRECTIVE) {
      if (t->directives < 8) {
        t->dir_seq[t->directives] = d.seq;
        t->dir_step[t->directives] = step;
        t->dir_kind[t->directives] = d.kind;
      }
      t->directives++;
      CHECK_EQ_INT(d.at_step, step);
      if (d.kind == GY_DIRECTIVE_SET_HPARAMS) {
        CHECK(d.hparams.present == GY_HP_LR_SCALE);
        t->dir_lr = d.hparams.lr_scale;
      }
      CHECK_EQ_INT(gy_agent_ack(a, d.seq, step, 1, NULL, 0), 0);
      continue;
    }
    if (rc != GY_AGENT_GO) break;
    /* the grants of this script: 5 in generation 1 until both directives are acked, then 10;
     * TOTAL in generation 2 */
    const gy_agent_assignment_t *cur = gy_agent_assignment(a);
    int64_t limit = cur->generation == 1 ? (t->directives >= 2 ? 10 : 5) : TOTAL;
    if (step >= limit) t->go_at_or_past_horizon++;
    gy_agent_report_t r = {.step = step, .loss = 5.0 - 0.1 * step};
    gy_agent_channel_t ch = {"en", 3.0, 100, 0};
    r.channels = &ch;
    r.nchannels = 1;
    CHECK_EQ_INT(gy_agent_report(a, &r), 0);
    step++;
  }
  t->final_rc = rc;
  t->final_step = step;
  t->final_gen = gy_agent_assignment(a)->generation;
  gy_agent_destroy(a);

  /* a rejoin answered with another rank: the process must restart */
  t->ctl->phase = 2; /* read by the loop thread only after this agent's first call */
  REQUIRE(gy_agent_create(&a, &o) == 0);
  REQUIRE(gy_agent_join(a, &asg, 10000) == 0);
  CHECK_EQ_INT(asg.rank, 1);
  int64_t s = asg.start_step;
  gy_agent_directive_t d;
  while ((rc = gy_agent_wait_grant(a, s, &d)) == GY_AGENT_GO) {
    gy_agent_report(a, &(gy_agent_report_t){.step = s});
    s++;
  }
  t->reassigned_rc = rc;
  t->reassigned_step = s;
  if (gy_agent_assignment(a)) t->reassigned_rank = gy_agent_assignment(a)->rank;
  CHECK(strstr(gy_agent_errmsg(a), "must restart") != NULL);
  gy_agent_destroy(a);
  uv_async_send(&t->ctl->stop);
  return NULL;
}

int main(void) {
  ctl_t c;
  memset(&c, 0, sizeof(c));
  REQUIRE(uv_loop_init(&c.loop) == 0);
  char err[256];
  gy_rpc_server_opts_t so = {.bind = "127.0.0.1:0"};
  REQUIRE(gy_rpc_server_create(&c.srv, &c.loop, &so, &c.port, err, sizeof(err)) == 0);
  gy_rpc_server_add_unary(c.srv, "/gyro.Worker/Join", on_join, &c);
  gy_rpc_server_add_unary(c.srv, "/gyro.Worker/StoreSet", on_store_set, &c);
  gy_rpc_server_add_unary(c.srv, "/gyro.Worker/StoreGet", on_store_get, &c);
  gy_rpc_stream_cbs_t cbs = {s_open, s_message, s_close};
  gy_rpc_server_add_stream(c.srv, "/gyro.Worker/Session", &cbs, &c);
  REQUIRE(gy_rpc_server_start(c.srv) == 0);
  uv_timer_init(&c.loop, &c.tick);
  c.tick.data = &c;
  uv_timer_start(&c.tick, on_tick, 10, 10);
  uv_async_init(&c.loop, &c.stop, on_stop);
  c.stop.data = &c;

  trainer_t t;
  memset(&t, 0, sizeof(t));
  t.ctl = &c;
  pthread_t th;
  REQUIRE(pthread_create(&th, NULL, trainer_main, &t) == 0);
  uv_run(&c.loop, UV_RUN_DEFAULT);
  pthread_join(th, NULL);
  gy_rpc_server_destroy(c.srv);
  uv_loop_close(&c.loop);

  /* the trainer's view */
  CHECK_EQ_INT(t.final_rc, GY_AGENT_GO);
  CHECK_EQ_INT(t.final_step, TOTAL);
  CHECK_EQ_INT(t.final_gen, 2);
  CHECK_EQ_INT(t.go_at_or_past_horizon, 0);
  CHECK_EQ_INT(t.directives, 2); /* the repeated seq 1 was ignored */
  CHECK_EQ_INT(t.dir_seq[0], 1);
  CHECK_EQ_INT(t.dir_seq[1], 2);
  CHECK_EQ_INT(t.dir_step[0], 5);
  CHECK_EQ_INT(t.dir_step[1], 5);
  CHECK_EQ_INT(t.dir_kind[0], GY_DIRECTIVE_CHECKPOINT);
  CHECK_EQ_INT(t.dir_kind[1], GY_DIRECTIVE_SET_HPARAMS);
  CHECK_NEAR(t.dir_lr, 0.5, 1e-9);
  CHECK_EQ_INT(t.reassigned_rc, GY_AGENT_REASSIGNED);
  CHECK_EQ_INT(t.reassigned_step, 2);
  CHECK_EQ_INT(t.reassigned_rank, 0);
  /* the controller's view */
  CHECK_EQ_INT(c.bad, 0);
  CHECK_EQ_INT(c.join_ordinal, 1);
  CHECK(!strcmp(c.join_id, "w-test"));
  CHECK_EQ_INT(c.join_steps_done[0], 0);
  CHECK_EQ_INT(c.join_prev_gen[0], 0);
  CHECK_EQ_INT(c.join_steps_done[1], 10); /* parked at its horizon, then rejoined */
  CHECK_EQ_INT(c.join_prev_gen[1], 1);
  CHECK_EQ_INT(c.acks, 2);
  CHECK_EQ_INT(c.ack_step[0], 5);
  CHECK_EQ_INT(c.ack_step[1], 5);
  CHECK_MSG(c.heartbeats >= 2, "%d heartbeats while parked 300 ms at 50 ms", c.heartbeats);
  /* reports: 0..7 in generation 1 (8, 9 were trained without a session), 10, 11 in 2 */
  CHECK_MSG(c.reports >= 10, "%d reports", c.reports);
  if (c.reports >= 10) {
    for (int i = 0; i < 8; i++)
      CHECK_EQ_INT(c.report_steps[i], i);
    CHECK_EQ_INT(c.report_steps[8], 10);
    CHECK_EQ_INT(c.report_steps[9], 11);
  }
  for (int i = 0; i < c.nkv; i++) {
    free(c.keys[i]);
    free(c.vals[i]);
  }
  GY_TEST_END();
}
