/* ROLLBACK directives end to end on the worker side, against a scripted controller (a real gRPC
 * server from common/rpc.h on a libuv loop in this process, no controller logic):
 *
 * The script, run twice: first with an in-process trainer thread that drives libgyro-agent the
 * way gyro-worker does (it checks what the agent hands out), then with a real gyro-worker
 * process (--controller, world 1, a small model on the shipped channels, checkpoint every 4):
 *  1. grant 12; after the report of step 11, ROLLBACK seq 1 at 12 to step 8, skipping the ids
 *     that steps 8 and 9 trained on (from the reports' top lists: top_k = batch), sent twice;
 *  2. on its ack (step 8): seq 1 once more (must be ignored), then grant 14;
 *  3. after the report of step 13: ROLLBACK seq 2 at 14 to step 6 (no checkpoint there: refused,
 *     the worker stays at 14) and seq 3 at 14 to step 12 with wsd_decay_now, no skip;
 *  4. on the ack of seq 3 (step 12): grant 16, the end of the run.
 * Checked: the steps run 0..11, 8..13, 12..15; the re-run of 8..11 trains none of the skipped
 * ids and its losses differ from the first run's; the re-run of 12, 13 (restored exactly, same
 * samples, same learning rate at 12) reproduces the losses bit for bit, and the learning rate
 * of step 13 shows the WSD decay; the acks are (1, 8, ok), (2, 14, refused), (3, 12, ok) and no
 * other; the checkpoints reported through StepReport are 4, 8, 12 in that order (and 16, the
 * final one, from gyro-worker), the 12 only from the new timeline (the one written before the
 * rollback is forgotten); the agent refuses wait_grant at the old step after a rollback and parks
 * at to_step until the next grant. The worker's own records show the directives with their fields
 * and the checkpoint files. */
#include <errno.h>
#include <ftw.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "agent/agent.h"
#include "common/err.h"
#include "common/rpc.h"
#include "proto/gyro.pb-c.h"
#include "tests/test.h"
#include "worker/data.h"

#define TOTAL 16
#define BATCH 4
#define MAXREC 64

extern char **environ;

typedef struct {
  int64_t step;
  double loss, lr;
  int nids;
  uint64_t ids[16];
  int has_ckpt;
  int64_t ckpt;
  int timeline; /* ok rollback acks before this report */
} rec_t;

/* ------------------------------------- files ------------------------------------------- */

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st;
  (void)flag;
  (void)ftw;
  return remove(path);
}

/* Prints up to 4000 bytes of a file to stderr. */
static void dump(const char *path) {
  char buf[4001];
  FILE *f = fopen(path, "r");
  if (!f) return;
  size_t n = fread(buf, 1, sizeof(buf) - 1, f);
  fclose(f);
  buf[n] = 0;
  fprintf(stderr, "%s:\n%s\n", path, buf);
}

/* ------------------------------- the scripted controller ------------------------------- */

typedef struct {
  uv_loop_t loop;
  uv_async_t stop;
  uv_timer_t tick;
  gy_rpc_server_t *srv;
  int port;
  const char *config_yaml, *config_dir;
  /* loop thread only while running; the main thread reads it afterwards */
  gy_rpc_call_t *session;
  int joins, hellos, heartbeats, bad, stopping;
  rec_t rec[MAXREC];
  int nrec;
  uint64_t skip_ids[16];
  int nskip;
  int rb1_sent, rb2_sent, timeline;
  int acks;
  uint64_t ack_seq[8];
  int64_t ack_step[8];
  int ack_ok[8];
  char ack_err[8][256];
  atomic_int granted_after_rb1, granted_after_rb3; /* read by the trainer thread */
  /* the worker process (part 2) */
  pid_t pid;
  int exited, status, timed_out;
  double deadline;
} ctl_t;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void send_ctl(ctl_t *c, const Gyro__ControllerMsg *m) {
  size_t n = gyro__controller_msg__get_packed_size(m);
  uint8_t buf[4096];
  if (n > sizeof(buf)) abort(); /* the loop thread leaves CHECK/REQUIRE to the others */
  gyro__controller_msg__pack(m, buf);
  if (c->session) gy_rpc_send(c->session, buf, n);
}

static void send_grant(ctl_t *c, int64_t horizon) {
  Gyro__Grant g = GYRO__GRANT__INIT;
  g.generation = 1;
  g.horizon = horizon;
  Gyro__ControllerMsg m = GYRO__CONTROLLER_MSG__INIT;
  m.msg_case = GYRO__CONTROLLER_MSG__MSG_GRANT;
  m.grant = &g;
  send_ctl(c, &m);
}

/* ROLLBACK seq at `at` to `to`; skip: one range per id in ids; wsd: set wsd_decay_now. */
static void send_rollback(ctl_t *c, uint64_t seq, int64_t at, int64_t to, const uint64_t *ids,
                          int nids, int wsd, const char *reason) {
  Gyro__SkipRange r[16], *rp[16];
  for (int i = 0; i < nids && i < 16; i++) {
    gyro__skip_range__init(&r[i]);
    r[i].first = ids[i];
    r[i].last = ids[i] + 1;
    rp[i] = &r[i];
  }
  Gyro__HParams hp = GYRO__HPARAMS__INIT;
  hp.wsd_decay_now = wsd != 0;
  hp.present = wsd ? 1u << 9 : 0;
  Gyro__Directive d = GYRO__DIRECTIVE__INIT;
  d.generation = 1;
  d.seq = seq;
  d.at_step = at;
  d.kind = GYRO__DIRECTIVE__KIND__ROLLBACK;
  d.hparams = &hp;
  d.to_step = to;
  d.n_skip = (size_t)(nids < 16 ? nids : 16);
  d.skip = rp;
  d.reason = (char *)reason;
  Gyro__ControllerMsg m = GYRO__CONTROLLER_MSG__INIT;
  m.msg_case = GYRO__CONTROLLER_MSG__MSG_DIRECTIVE;
  m.directive = &d;
  send_ctl(c, &m);
}

static void send_rb1(ctl_t *c) {
  send_rollback(c, 1, 12, 8, c->skip_ids, c->nskip, 0, "loss spike at step 9");
}

static void on_join(void *ud, gy_rpc_call_t *call, const uint8_t *req, size_t len) {
  ctl_t *c = ud;
  Gyro__JoinRequest *j = gyro__join_request__unpack(NULL, len, req);
  if (!j) {
    gy_rpc_reply(call, GY_RPC_INVALID_ARGUMENT, "bad JoinRequest", NULL, 0);
    return;
  }
  c->joins++;
  gyro__join_request__free_unpacked(j, NULL);
  Gyro__Assignment a = GYRO__ASSIGNMENT__INIT;
  a.generation = 1;
  a.rank = 0;
  a.world = 1;
  a.tp = 1;
  a.config_yaml = (char *)c->config_yaml;
  a.config_dir = (char *)c->config_dir;
  a.session_id = "s1";
  a.start_step = 0;
  a.rdzv_prefix = "g1";
  a.heartbeat_ms = 100;
  size_t n = gyro__assignment__get_packed_size(&a);
  uint8_t *buf = malloc(n);
  if (!buf) abort();
  gyro__assignment__pack(&a, buf);
  gy_rpc_reply(call, GY_RPC_OK, NULL, buf, n);
  free(buf);
}

/* A world-1 gang needs no rendezvous, but answer anyway. */
static void on_store(void *ud, gy_rpc_call_t *call, const uint8_t *req, size_t len) {
  (void)ud;
  (void)req;
  (void)len;
  gy_rpc_reply(call, GY_RPC_DEADLINE_EXCEEDED, "no such key", NULL, 0);
}

static void s_open(void *ud, gy_rpc_call_t *call) {
  (void)ud;
  (void)call;
}

static void on_report(ctl_t *c, const Gyro__StepReport *r) {
  if (r->generation != 1) c->bad++;
  if (c->nrec < MAXREC) {
    rec_t *x = &c->rec[c->nrec++];
    x->step = r->step;
    x->loss = r->loss;
    x->lr = r->lr;
    x->nids = (int)(r->n_top < 16 ? r->n_top : 16);
    for (int i = 0; i < x->nids; i++)
      x->ids[i] = r->top[i]->id;
    x->has_ckpt = r->has_checkpoint;
    x->ckpt = r->checkpoint_step;
    x->timeline = c->timeline;
  }
  if (!c->rb1_sent && (r->step == 8 || r->step == 9))
    for (size_t i = 0; i < r->n_top && c->nskip < 16; i++)
      c->skip_ids[c->nskip++] = r->top[i]->id;
  if (!c->rb1_sent && r->step == 11) {
    c->rb1_sent = 1;
    send_rb1(c);
    send_rb1(c); /* a repeat while pending: handed out once */
  }
  if (c->timeline == 1 && !c->rb2_sent && r->step == 13) {
    c->rb2_sent = 1;
    send_rollback(c, 2, 14, 6, NULL, 0, 0, "to a step without a checkpoint");
    send_rollback(c, 3, 14, 12, NULL, 0, 1, "escalate: decay now");
  }
}

static void on_ack(ctl_t *c, const Gyro__DirectiveAck *k) {
  if (k->generation != 1) c->bad++;
  if (c->acks < 8) {
    c->ack_seq[c->acks] = k->seq;
    c->ack_step[c->acks] = k->step;
    c->ack_ok[c->acks] = k->ok;
    snprintf(c->ack_err[c->acks], sizeof(c->ack_err[0]), "%s", k->error ? k->error : "");
  }
  c->acks++;
  if (k->seq == 1 && k->ok) {
    c->timeline = 1;
    send_rb1(c); /* applied already: ignored, or the run would loop */
    c->granted_after_rb1 = 1;
    send_grant(c, 14);
  } else if (k->seq == 3 && k->ok) {
    c->timeline = 2;
    c->granted_after_rb3 = 1;
    send_grant(c, TOTAL);
  }
}

static void s_message(void *ud, gy_rpc_call_t *call, const uint8_t *msg, size_t len) {
  ctl_t *c = ud;
  Gyro__WorkerMsg *m = gyro__worker_msg__unpack(NULL, len, msg);
  if (!m) {
    c->bad++;
    gy_rpc_finish(call, GY_RPC_INVALID_ARGUMENT, "bad WorkerMsg");
    return;
  }
  switch (m->msg_case) {
  case GYRO__WORKER_MSG__MSG_HELLO:
    c->hellos++;
    c->session = call;
    send_grant(c, 12);
    break;
  case GYRO__WORKER_MSG__MSG_REPORT:
    on_report(c, m->report);
    break;
  case GYRO__WORKER_MSG__MSG_ACK:
    on_ack(c, m->ack);
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

static void on_shutdown_done(void *ud) {
  ctl_t *c = ud;
  uv_close((uv_handle_t *)&c->tick, NULL);
  uv_close((uv_handle_t *)&c->stop, NULL);
}

static void stop_loop(ctl_t *c) {
  if (c->stopping) return;
  c->stopping = 1;
  uv_timer_stop(&c->tick);
  gy_rpc_server_shutdown(c->srv, on_shutdown_done, c);
}

static void on_stop(uv_async_t *h) {
  stop_loop(h->data);
}

/* Part 2: ends the loop when the worker process has exited (or is killed at the deadline). */
static void on_tick(uv_timer_t *t) {
  ctl_t *c = t->data;
  if (c->pid <= 0 || c->exited) return;
  int st;
  pid_t p = waitpid(c->pid, &st, WNOHANG);
  if (p == c->pid) {
    c->exited = 1;
    c->status = st;
    stop_loop(c);
  } else if (now_s() > c->deadline) {
    c->timed_out = 1;
    kill(c->pid, SIGKILL);
  }
}

static void ctl_start(ctl_t *c) {
  char err[256];
  REQUIRE(uv_loop_init(&c->loop) == 0);
  gy_rpc_server_opts_t so = {.bind = "127.0.0.1:0"};
  REQUIRE(gy_rpc_server_create(&c->srv, &c->loop, &so, &c->port, err, sizeof(err)) == 0);
  gy_rpc_server_add_unary(c->srv, "/gyro.Worker/Join", on_join, c);
  gy_rpc_server_add_unary(c->srv, "/gyro.Worker/StoreSet", on_store, c);
  gy_rpc_server_add_unary(c->srv, "/gyro.Worker/StoreGet", on_store, c);
  gy_rpc_stream_cbs_t cbs = {s_open, s_message, s_close};
  gy_rpc_server_add_stream(c->srv, "/gyro.Worker/Session", &cbs, c);
  REQUIRE(gy_rpc_server_start(c->srv) == 0);
  uv_timer_init(&c->loop, &c->tick);
  c->tick.data = c;
  uv_timer_start(&c->tick, on_tick, 20, 20);
  uv_async_init(&c->loop, &c->stop, on_stop);
  c->stop.data = c;
}

static void ctl_end(ctl_t *c) {
  gy_rpc_server_destroy(c->srv);
  uv_loop_close(&c->loop);
}

/* ------------------------------------ the controller's view ----------------------------- */

static const rec_t *find_rec(const ctl_t *c, int timeline, int64_t step) {
  for (int i = 0; i < c->nrec; i++)
    if (c->rec[i].timeline == timeline && c->rec[i].step == step) return &c->rec[i];
  return NULL;
}

/* Everything both parts must show at the controller. */
static void check_controller(const ctl_t *c, const char *part) {
  fprintf(stderr, "-- %s: %d reports, %d acks, %d heartbeats\n", part, c->nrec, c->acks,
          c->heartbeats);
  CHECK_EQ_INT(c->bad, 0);
  CHECK_EQ_INT(c->joins, 1);
  CHECK_EQ_INT(c->hellos, 1);
  /* the steps: 0..11, then 8..13, then 12..15 */
  static const int64_t want[] = {0,  1, 2, 3,  4,  5,  6,  7,  8,  9,  10,
                                 11, 8, 9, 10, 11, 12, 13, 12, 13, 14, 15};
  int nwant = (int)(sizeof(want) / sizeof(want[0]));
  CHECK_MSG(c->nrec == nwant, "%s: %d reports, want %d", part, c->nrec, nwant);
  for (int i = 0; i < c->nrec && i < nwant; i++)
    CHECK_MSG(c->rec[i].step == want[i], "%s: report #%d is step %" PRId64 ", want %" PRId64, part,
              i, c->rec[i].step, want[i]);
  /* the skipped ids: those of steps 8 and 9 of the first run, all of them */
  CHECK_EQ_INT(c->nskip, 2 * BATCH);
  for (int s = 8; s <= 11; s++) {
    const rec_t *a = find_rec(c, 0, s), *b = find_rec(c, 1, s);
    CHECK_MSG(a && b, "%s: step %d not run twice", part, s);
    if (!a || !b) continue;
    CHECK_EQ_INT(b->nids, BATCH);
    for (int i = 0; i < b->nids; i++)
      for (int k = 0; k < c->nskip; k++)
        CHECK_MSG(b->ids[i] != c->skip_ids[k], "%s: re-run step %d trained skipped id %" PRIu64,
                  part, s, b->ids[i]);
    CHECK_MSG(a->loss != b->loss, "%s: step %d: same loss %.9g with other samples", part, s,
              a->loss);
  }
  /* the restore of 12 is exact: 12 and 13 again give the same losses; the WSD decay starts
   * at 12 from the learning rate it had, so 12's rate is the same and 13's another */
  for (int s = 12; s <= 13; s++) {
    const rec_t *a = find_rec(c, 1, s), *b = find_rec(c, 2, s);
    CHECK_MSG(a && b, "%s: step %d not run twice", part, s);
    if (!a || !b) continue;
    CHECK_MSG(a->loss == b->loss, "%s: step %d: loss %.17g, then %.17g after restoring 12", part, s,
              a->loss, b->loss);
    if (s == 12)
      CHECK_MSG(a->lr == b->lr, "%s: lr of step 12 %.9g vs %.9g", part, a->lr, b->lr);
    else
      CHECK_MSG(b->lr != a->lr, "%s: lr of step 13 %.9g after the WSD switch as before", part,
                b->lr);
  }
  /* acks: (1, 8, ok), (2, 14, refused), (3, 12, ok), nothing else */
  CHECK_EQ_INT(c->acks, 3);
  if (c->acks == 3) {
    CHECK_EQ_INT(c->ack_seq[0], 1);
    CHECK_EQ_INT(c->ack_step[0], 8);
    CHECK(c->ack_ok[0]);
    CHECK_EQ_INT(c->ack_seq[1], 2);
    CHECK_EQ_INT(c->ack_step[1], 14);
    CHECK(!c->ack_ok[1]);
    CHECK_MSG(strstr(c->ack_err[1], "6") != NULL, "%s: refusal '%s'", part, c->ack_err[1]);
    CHECK_EQ_INT(c->ack_seq[2], 3);
    CHECK_EQ_INT(c->ack_step[2], 12);
    CHECK(c->ack_ok[2]);
  }
  /* checkpoints reported: 4, 8, then 12 of the new timeline only */
  int64_t ck[8];
  int nck = 0, ck12_timeline = -1;
  for (int i = 0; i < c->nrec; i++) {
    if (!c->rec[i].has_ckpt) continue;
    if (nck < 8) ck[nck] = c->rec[i].ckpt;
    nck++;
    if (c->rec[i].ckpt == 12) ck12_timeline = c->rec[i].timeline;
  }
  /* gyro-worker also writes the last step's checkpoint (16) before that step's report, which
   * carries it (the controller commits the final checkpoint); the test's own trainer thread
   * does not checkpoint at the end */
  int nck_want = strcmp(part, "gyro-worker") == 0 ? 4 : 3;
  CHECK_MSG(nck == nck_want, "%s: %d checkpoints reported, want %d", part, nck, nck_want);
  if (nck == nck_want) {
    CHECK_EQ_INT(ck[0], 4);
    CHECK_EQ_INT(ck[1], 8);
    CHECK_EQ_INT(ck[2], 12);
    if (nck_want == 4) CHECK_EQ_INT(ck[3], 16);
  }
  CHECK_MSG(ck12_timeline >= 1, "%s: checkpoint 12 reported in timeline %d", part, ck12_timeline);
}

/* --------------------------- part 1: a trainer thread on the agent ---------------------- */

typedef struct {
  ctl_t *ctl;
  int directives;
  int go_before_grant; /* GO at to_step before the controller granted the new timeline */
  int old_step_refused;
  int final_rc;
  int64_t final_step;
} trainer_t;

static void *trainer_main(void *arg) {
  trainer_t *t = arg;
  char addr[64];
  snprintf(addr, sizeof(addr), "127.0.0.1:%d", t->ctl->port);
  gy_agent_t *a = NULL;
  gy_agent_opts_t o = {.controllers = addr, .worker_id = "rb-thread", .ordinal = -1};
  REQUIRE(gy_agent_create(&a, &o) == 0);
  gy_agent_assignment_t asg;
  REQUIRE(gy_agent_join(a, &asg, 10000) == 0);
  gy_skiplist_t sl;
  gy_skiplist_init(&sl);
  int64_t step = 0, ckpt = -1; /* a checkpoint taken and not reported yet */
  atomic_int *wait_flag = NULL;
  int rc;
  while (step < TOTAL) {
    gy_agent_directive_t d;
    rc = gy_agent_wait_grant(a, step, &d);
    if (rc == GY_AGENT_DIRECTIVE) {
      t->directives++;
      CHECK_EQ_INT(d.kind, GY_DIRECTIVE_ROLLBACK);
      CHECK_EQ_INT(d.at_step, step);
      CHECK(!strcmp(gy_directive_kind_name(d.kind), "rollback"));
      if (d.seq == 1) {
        CHECK_EQ_INT(d.to_step, 8);
        CHECK_EQ_INT(d.nskip, 2 * BATCH);
        for (int i = 0; i < d.nskip; i++) {
          CHECK_EQ_INT(d.skip[i].first, (uint64_t)(8 * BATCH + i));
          CHECK_EQ_INT(d.skip[i].last, (uint64_t)(8 * BATCH + i + 1));
        }
        CHECK_EQ_INT(d.hparams.present, 0);
      } else if (d.seq == 2) {
        CHECK_EQ_INT(d.to_step, 6);
        CHECK_EQ_INT(d.nskip, 0);
        CHECK(d.skip == NULL);
        /* what the worker does without a checkpoint of 6: refuse, stay */
        CHECK_EQ_INT(gy_agent_ack(a, d.seq, step, 0, "no checkpoint of step 6", 0), 0);
        continue;
      } else if (d.seq == 3) {
        CHECK_EQ_INT(d.to_step, 12);
        CHECK_EQ_INT(d.hparams.present, GY_HP_WSD_DECAY_NOW);
        CHECK_EQ_INT(d.hparams.wsd_decay_now, 1);
      }
      for (int i = 0; i < d.nskip; i++)
        REQUIRE(gy_skiplist_add(&sl, d.skip[i].first, d.skip[i].last) == 0);
      if (ckpt > d.to_step) ckpt = -1; /* the abandoned timeline's */
      CHECK_EQ_INT(gy_agent_ack(a, d.seq, d.to_step, 1, NULL, 0), 0);
      /* the reason stays readable until the next wait_grant */
      CHECK(!strcmp(d.reason, d.seq == 1 ? "loss spike at step 9" : "escalate: decay now"));
      int64_t old = step;
      step = d.to_step;
      CHECK_EQ_INT(gy_agent_wait_grant(a, old, &d), GY_EINVAL);
      t->old_step_refused++;
      wait_flag = d.seq == 1 ? &t->ctl->granted_after_rb1 : &t->ctl->granted_after_rb3;
      continue;
    }
    if (rc != GY_AGENT_GO) break;
    if (wait_flag && !*wait_flag) t->go_before_grant++;
    wait_flag = NULL;
    /* a "model" whose loss depends on the samples and, after a rollback, repeats exactly;
     * the learning rate: cosine-like, then lower once seq 3 is applied */
    uint64_t ids[BATCH];
    double sum = 0;
    gy_agent_sample_t top[BATCH];
    for (int b = 0; b < BATCH; b++) {
      ids[b] = gy_skiplist_map(&sl, (uint64_t)step * BATCH + (uint64_t)b);
      sum += (double)ids[b];
      top[b] = (gy_agent_sample_t){ids[b], "en", 1.0f};
    }
    int decayed = t->ctl->granted_after_rb3;
    double lr = decayed && step > 12 ? 1e-3 / (double)step : 1e-3;
    gy_agent_channel_t ch = {"en", 3.0, 100, 0};
    gy_agent_report_t r = {.step = step,
                           .loss = 5.0 - 0.01 * (double)step + 1e-4 * sum,
                           .channels = &ch,
                           .nchannels = 1,
                           .lr = lr,
                           .top = top,
                           .ntop = BATCH,
                           .has_checkpoint = ckpt >= 0,
                           .checkpoint_step = ckpt};
    CHECK_EQ_INT(gy_agent_report(a, &r), 0);
    ckpt = -1;
    step++;
    if (step % 4 == 0) ckpt = step; /* checkpoint.every 4 */
  }
  t->final_rc = rc;
  t->final_step = step;
  gy_skiplist_free(&sl);
  gy_agent_destroy(a);
  uv_async_send(&t->ctl->stop);
  return NULL;
}

static void part_thread(void) {
  static ctl_t c; /* large: not on the stack */
  memset(&c, 0, sizeof(c));
  c.config_yaml = "run: {steps: 16}\n";
  c.config_dir = "/tmp";
  ctl_start(&c);
  trainer_t t;
  memset(&t, 0, sizeof(t));
  t.ctl = &c;
  pthread_t th;
  REQUIRE(pthread_create(&th, NULL, trainer_main, &t) == 0);
  uv_run(&c.loop, UV_RUN_DEFAULT);
  pthread_join(th, NULL);
  ctl_end(&c);
  CHECK_EQ_INT(t.final_rc, GY_AGENT_GO);
  CHECK_EQ_INT(t.final_step, TOTAL);
  CHECK_EQ_INT(t.directives, 3); /* seq 1 came three times */
  CHECK_EQ_INT(t.old_step_refused, 2);
  CHECK_EQ_INT(t.go_before_grant, 0);
  check_controller(&c, "agent thread");
}

/* --------------------------- part 2: a gyro-worker process ------------------------------ */

static const char *str_of(json_t *j) {
  const char *s = json_string_value(j);
  return s ? s : "";
}

/* The worker's stdout records of one type, in order (a new reference). */
static json_t *records(const char *path, const char *type) {
  json_t *out = json_array();
  FILE *f = fopen(path, "r");
  if (!f) return out;
  char line[65536];
  while (fgets(line, sizeof(line), f)) {
    json_t *o = json_loads(line, 0, NULL);
    if (o && json_is_object(o) && !strcmp(str_of(json_object_get(o, "type")), type))
      json_array_append(out, o);
    json_decref(o);
  }
  fclose(f);
  return out;
}

static void part_worker(void) {
  const char *build = getenv("GY_BUILD_DIR");
  REQUIRE(build != NULL);
  char data[4096], worker[4096];
  const char *dd = getenv("GY_DATA_DIR"), *src = getenv("GY_SOURCE_DIR");
  if (dd && dd[0])
    snprintf(data, sizeof(data), "%s", dd);
  else
    snprintf(data, sizeof(data), "%s/data/shards", src ? src : ".");
  setenv("GY_DATA_DIR", data, 1); /* the config below refers to it */
  static const char *chans[] = {"zh", "en", "code"};
  for (int i = 0; i < 3; i++) {
    char p[4200];
    snprintf(p, sizeof(p), "%s/%s/train_000.bin", data, chans[i]);
    if (access(p, R_OK)) {
      fprintf(stderr,
              "FAIL: prepared shards missing in %s (run: bash scripts/prep-data.sh build "
              "data/shards)\n",
              data);
      exit(1);
    }
  }
  snprintf(worker, sizeof(worker), "%s/worker/gyro-worker", build);
  REQUIRE(access(worker, X_OK) == 0);

  char dir[] = "/tmp/gy-test-rollback-XXXXXX";
  REQUIRE(mkdtemp(dir) != NULL);
  static const char yaml[] =
      "run: {name: rollback, seed: 1234, steps: 16, threads: 1}\n"
      "model: {layers: 2, channels: 64, heads: 4, context: 64, vocab: 256}\n"
      "train: {batch: 4, top_k: 4}\n"
      "optimizer: {lr: 3.0e-3, weight_decay: 0.0, grad_clip: 1.0}\n"
      "schedule: {kind: cosine, warmup: 2, min_lr_frac: 0.1}\n"
      "data:\n"
      "  channels:\n"
      "    - {name: zh, train: ['${GY_DATA_DIR}/zh/train_000.bin'], val: "
      "'${GY_DATA_DIR}/zh/val.bin'}\n"
      "    - {name: en, train: ['${GY_DATA_DIR}/en/train_000.bin'], val: "
      "'${GY_DATA_DIR}/en/val.bin'}\n"
      "    - {name: code, train: ['${GY_DATA_DIR}/code/train_000.bin'], val: "
      "'${GY_DATA_DIR}/code/val.bin'}\n"
      "eval: {every: 0, sequences: 8}\n"
      "checkpoint: {dir: ckpt, every: 4, keep_in_memory: 2, keep: 100}\n";
  static ctl_t c;
  memset(&c, 0, sizeof(c));
  c.config_yaml = yaml;
  c.config_dir = dir;
  ctl_start(&c);

  char addr[64], out[4200], errf[4200];
  snprintf(out, sizeof(out), "%s/worker.jsonl", dir);
  snprintf(errf, sizeof(errf), "%s/worker.err", dir);
  snprintf(addr, sizeof(addr), "127.0.0.1:%d", c.port);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&fa, 2, errf, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  char *argv[] = {worker, "--controller", addr, "--worker-id", "rb-w0", "--threads", "1", NULL};
  int rc = posix_spawn(&c.pid, worker, &fa, NULL, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  REQUIRE(rc == 0);
  c.deadline = now_s() + 120;
  uv_run(&c.loop, UV_RUN_DEFAULT);
  ctl_end(&c);

  CHECK(!c.timed_out);
  CHECK_MSG(c.exited && WIFEXITED(c.status) && WEXITSTATUS(c.status) == 0,
            "gyro-worker ended with status 0x%x", c.status);
  if (!(c.exited && WIFEXITED(c.status) && WEXITSTATUS(c.status) == 0)) dump(errf);
  check_controller(&c, "gyro-worker");
  /* WSD from step 12: linear from step 12's rate to the cosine floor (lr 3e-3 * 0.1) over the 4
   * steps left */
  const rec_t *r12 = find_rec(&c, 2, 12), *r13 = find_rec(&c, 2, 13);
  if (r12 && r13) CHECK_NEAR(r13->lr, r12->lr - 0.25 * (r12->lr - 3e-4), 1e-7);

  /* the worker's own records */
  json_t *steps = records(out, "step"), *dirs = records(out, "directive"),
         *ckpts = records(out, "checkpoint");
  CHECK_EQ_INT(json_array_size(steps), 22);
  /* its losses are the ones the controller received */
  for (size_t i = 0; i < json_array_size(steps) && i < (size_t)c.nrec; i++) {
    json_t *s = json_array_get(steps, i);
    CHECK_EQ_INT(json_integer_value(json_object_get(s, "step")), c.rec[i].step);
    CHECK(json_real_value(json_object_get(s, "loss")) == c.rec[i].loss);
  }
  CHECK_EQ_INT(json_array_size(dirs), 3);
  if (json_array_size(dirs) == 3) {
    json_t *d1 = json_array_get(dirs, 0), *d2 = json_array_get(dirs, 1),
           *d3 = json_array_get(dirs, 2);
    CHECK(!strcmp(str_of(json_object_get(d1, "kind")), "rollback"));
    CHECK_EQ_INT(json_integer_value(json_object_get(d1, "seq")), 1);
    CHECK_EQ_INT(json_integer_value(json_object_get(d1, "at_step")), 12);
    CHECK_EQ_INT(json_integer_value(json_object_get(d1, "to_step")), 8);
    CHECK(json_is_true(json_object_get(d1, "ok")));
    CHECK(!strcmp(str_of(json_object_get(d1, "reason")), "loss spike at step 9"));
    json_t *sk = json_object_get(d1, "skip");
    CHECK_EQ_INT(json_array_size(sk), 2 * BATCH);
    for (size_t i = 0; i < json_array_size(sk) && i < 16; i++) {
      json_t *r = json_array_get(sk, i);
      CHECK_EQ_INT(json_integer_value(json_array_get(r, 0)), (json_int_t)c.skip_ids[i]);
      CHECK_EQ_INT(json_integer_value(json_array_get(r, 1)), (json_int_t)c.skip_ids[i] + 1);
    }
    CHECK_EQ_INT(json_integer_value(json_object_get(d2, "seq")), 2);
    CHECK(json_is_false(json_object_get(d2, "ok")));
    const char *e2 = json_string_value(json_object_get(d2, "error"));
    CHECK_MSG(e2 && strstr(e2, "step 6"), "refusal: %s", e2 ? e2 : "(none)");
    CHECK_EQ_INT(json_integer_value(json_object_get(d3, "seq")), 3);
    CHECK_EQ_INT(json_integer_value(json_object_get(d3, "to_step")), 12);
    CHECK(json_is_true(json_object_get(d3, "ok")));
  }
  /* checkpoints written: 4, 8, 12 (then forgotten), 12 again, 16 */
  static const int64_t want_ck[] = {4, 8, 12, 12, 16};
  CHECK_EQ_INT(json_array_size(ckpts), 5);
  for (size_t i = 0; i < json_array_size(ckpts) && i < 5; i++)
    CHECK_EQ_INT(json_integer_value(json_object_get(json_array_get(ckpts, i), "step")), want_ck[i]);
  for (int s = 4; s <= 16; s += 4) {
    char p[4200];
    snprintf(p, sizeof(p), "%s/ckpt/step_%08d.rank0.gyck", dir, s);
    CHECK_MSG(access(p, R_OK) == 0, "%s missing", p);
  }
  json_decref(steps);
  json_decref(dirs);
  json_decref(ckpts);
  if (gy_test_failures) dump(errf);
  nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  part_thread();
  part_worker();
  GY_TEST_END();
}
