/* test_controller_proto: the controller's wire protocol without any worker binary. Starts
 * gyro-controller (from GY_BUILD_DIR) on a small config (world 2), then acts as two workers with
 * gy_rpc client calls and protobuf-c messages: held joins and their assignments, sessions,
 * grants following the slowest rank, a CHECKPOINT directive at the frozen horizon for both
 * ranks, acks and grants resuming, a checkpoint of step 4 reported by both ranks and committed
 * (StatusReply.committed_step), an operator ROLLBACK (refused to an uncommitted step; to step 4
 * with a skip range: both ranks get it at the same at_step with to_step 4, ack, and the next
 * grant is 4 + window), the store, Status/Watch with the operator token, health, and bad input
 * (malformed Join, wrong generation Hello, unknown method, duplicate worker id, missing token)
 * after which the controller still answers. The run goes to its end and the controller exits 0
 * with one stdout step line per aggregated step carrying rank 0's loss (steps 4..11 twice). A
 * second controller checks a lost worker (stream closed -> DEGRADED), SIGTERM (exit 0) and a bad
 * config (exit 2). */
#include <errno.h>
#include <ftw.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/err.h"
#include "common/rpc.h"
#include "proto/gyro.pb-c.h"
#include "tests/test.h"

#define TOKEN "sekret"
#define STEPS 16

static char tmpdir[256];

static int rm_one(const char *p, const struct stat *st, int fl, struct FTW *ftw) {
  (void)st, (void)fl, (void)ftw;
  return remove(p);
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

static void write_file(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  REQUIRE(f);
  fputs(text, f);
  fclose(f);
}

/* ------------------------------------ the controller process ------------------------------------
 */

typedef struct {
  pid_t pid;
  int port;
  char out[300], err[300];
} ctl_t;

static void ctl_start(ctl_t *c, const char *cfg, const char *tag) {
  const char *bd = getenv("GY_BUILD_DIR");
  REQUIRE(bd);
  char bin[512];
  snprintf(bin, sizeof(bin), "%s/controller/gyro-controller", bd);
  snprintf(c->out, sizeof(c->out), "%s/%s.out", tmpdir, tag);
  snprintf(c->err, sizeof(c->err), "%s/%s.err", tmpdir, tag);
  c->pid = fork();
  REQUIRE(c->pid >= 0);
  if (c->pid == 0) {
    if (!freopen(c->out, "w", stdout) || !freopen(c->err, "w", stderr)) _exit(127);
    execl(bin, bin, "--config", cfg, "--grace-ms", "300", (char *)NULL);
    _exit(127);
  }
  c->port = 0;
  for (double t0 = now_s(); now_s() - t0 < 60 && !c->port;) {
    FILE *f = fopen(c->out, "r");
    char line[512];
    while (f && fgets(line, sizeof(line), f)) {
      json_t *j = json_loads(line, 0, NULL);
      if (j && !strcmp(json_string_value(json_object_get(j, "type")) ?: "", "listening"))
        c->port = (int)json_integer_value(json_object_get(j, "port"));
      json_decref(j);
    }
    if (f) fclose(f);
    if (!c->port) sleep_ms(20);
  }
  REQUIRE(c->port > 0);
}

/* Waits up to timeout_s for the controller to exit; returns its exit status (-1: still up). */
static int ctl_wait(ctl_t *c, double timeout_s) {
  for (double t0 = now_s(); now_s() - t0 < timeout_s;) {
    int st;
    pid_t r = waitpid(c->pid, &st, WNOHANG);
    if (r == c->pid) return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    sleep_ms(20);
  }
  return -1;
}

/* ------------------------------------------ client helpers
 * ------------------------------------------ */

static gy_rpc_client_t *cli;

static int call(const char *method, int with_token, const ProtobufCMessage *req, void **resp,
                size_t *rlen, int *status) {
  uint8_t buf[4096];
  size_t n = req ? protobuf_c_message_pack(req, buf) : 0;
  char err[256];
  *resp = NULL;
  *rlen = 0;
  *status = -1;
  int rc = gy_rpc_unary(cli, method, with_token ? "authorization" : NULL,
                        with_token ? "Bearer " TOKEN : NULL, buf, n, 5000, resp, rlen, status, err,
                        sizeof(err));
  if (rc == 0) *status = 0;
  return rc;
}

typedef struct {
  const char *id;
  int ordinal;
  Gyro__Assignment *as;
  int status;
  volatile int done;
} join_t;

static void *join_thread(void *arg) {
  join_t *j = arg;
  Gyro__JoinRequest r = GYRO__JOIN_REQUEST__INIT;
  r.worker_id = (char *)j->id;
  r.ordinal = j->ordinal;
  r.host = "localhost";
  r.pid = 4242;
  void *resp;
  size_t n;
  call("/gyro.Worker/Join", 0, &r.base, &resp, &n, &j->status);
  if (j->status == 0) j->as = gyro__assignment__unpack(NULL, n, resp);
  free(resp);
  j->done = 1;
  return NULL;
}

/* A session stream: received ControllerMsgs are queued for the test thread. */
typedef struct msg {
  uint8_t *b;
  size_t n;
  struct msg *next;
} msg_t;

typedef struct {
  gy_rpc_cstream_t *st;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  msg_t *head, *tail;
  int closed, close_status;
  int64_t horizon; /* newest grant seen by next_msg */
} sess_t;

static void s_on_message(void *ud, const uint8_t *b, size_t n) {
  sess_t *s = ud;
  msg_t *m = calloc(1, sizeof(*m));
  m->b = malloc(n ? n : 1);
  memcpy(m->b, b, n);
  m->n = n;
  pthread_mutex_lock(&s->mu);
  if (s->tail)
    s->tail->next = m;
  else
    s->head = m;
  s->tail = m;
  pthread_cond_broadcast(&s->cv);
  pthread_mutex_unlock(&s->mu);
}

static void s_on_close(void *ud, int status, const char *details) {
  (void)details;
  sess_t *s = ud;
  pthread_mutex_lock(&s->mu);
  s->closed = 1;
  s->close_status = status;
  pthread_cond_broadcast(&s->cv);
  pthread_mutex_unlock(&s->mu);
}

static void stream_open(sess_t *s, const char *method, int with_token) {
  memset(s, 0, sizeof(*s));
  pthread_mutex_init(&s->mu, NULL);
  pthread_cond_init(&s->cv, NULL);
  static const gy_rpc_cstream_cbs_t cbs = {s_on_message, s_on_close};
  char err[256];
  REQUIRE(gy_rpc_cstream_open(cli, method, with_token ? "authorization" : NULL,
                              with_token ? "Bearer " TOKEN : NULL, &cbs, s, &s->st, err,
                              sizeof(err)) == 0);
}

static void sess_open(sess_t *s) {
  stream_open(s, "/gyro.Worker/Session", 0);
}

static void sess_send(sess_t *s, const Gyro__WorkerMsg *wm) {
  uint8_t buf[4096];
  size_t n = gyro__worker_msg__pack(wm, buf);
  CHECK(gy_rpc_cstream_send(s->st, buf, n) == 0);
}

/* Next raw message within timeout_ms (NULL: none); the caller frees it and its bytes. */
static msg_t *next_raw(sess_t *s, int timeout_ms) {
  struct timespec dl;
  clock_gettime(CLOCK_REALTIME, &dl);
  dl.tv_sec += timeout_ms / 1000;
  dl.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
  if (dl.tv_nsec >= 1000000000L) dl.tv_sec++, dl.tv_nsec -= 1000000000L;
  pthread_mutex_lock(&s->mu);
  while (!s->head && !s->closed)
    if (pthread_cond_timedwait(&s->cv, &s->mu, &dl) == ETIMEDOUT) break;
  msg_t *m = s->head;
  if (m) {
    s->head = m->next;
    if (!s->head) s->tail = NULL;
  }
  pthread_mutex_unlock(&s->mu);
  return m;
}

/* Next ControllerMsg within timeout_ms (NULL: none); the caller frees it. */
static Gyro__ControllerMsg *next_msg(sess_t *s, int timeout_ms) {
  msg_t *m = next_raw(s, timeout_ms);
  if (!m) return NULL;
  Gyro__ControllerMsg *cm = gyro__controller_msg__unpack(NULL, m->n, m->b);
  CHECK(cm != NULL);
  free(m->b);
  free(m);
  if (cm && cm->msg_case == GYRO__CONTROLLER_MSG__MSG_GRANT) s->horizon = cm->grant->horizon;
  return cm;
}

/* Waits for a grant with exactly horizon h (older grants are skipped); 1 if it came. */
static int wait_grant(sess_t *s, int64_t h) {
  for (;;) {
    Gyro__ControllerMsg *m = next_msg(s, 5000);
    if (!m) return 0;
    int kind = m->msg_case;
    int64_t got = kind == GYRO__CONTROLLER_MSG__MSG_GRANT ? m->grant->horizon : -1;
    gyro__controller_msg__free_unpacked(m, NULL);
    if (kind != GYRO__CONTROLLER_MSG__MSG_GRANT) return 0;
    if (got == h) return 1;
    if (got > h) return 0;
  }
}

static void sess_close(sess_t *s) {
  gy_rpc_cstream_close(s->st);
  while (s->head) {
    msg_t *m = s->head;
    s->head = m->next;
    free(m->b);
    free(m);
  }
  pthread_mutex_destroy(&s->mu);
  pthread_cond_destroy(&s->cv);
}

static void hello(sess_t *s, const Gyro__Assignment *as, uint64_t gen) {
  Gyro__Hello h = GYRO__HELLO__INIT;
  h.session_id = as->session_id;
  h.generation = gen;
  h.rank = as->rank;
  Gyro__WorkerMsg wm = GYRO__WORKER_MSG__INIT;
  wm.msg_case = GYRO__WORKER_MSG__MSG_HELLO;
  wm.hello = &h;
  sess_send(s, &wm);
}

static double loss_of(int rank, int64_t step) {
  return 3.0 / (double)(step + 2) + 0.125 * rank;
}

/* A StepReport; ckpt >= 0: the rank wrote the checkpoint of step ckpt since its last report. */
static void report_ck(sess_t *s, int rank, int64_t step, int64_t ckpt) {
  Gyro__ChannelStat c0 = GYRO__CHANNEL_STAT__INIT, c1 = GYRO__CHANNEL_STAT__INIT;
  c0.name = "web";
  c0.loss_sum = 100.0 * loss_of(rank, step);
  c0.tokens = 100;
  c1.name = "code";
  c1.loss_sum = 3.0;
  c1.tokens = 4;
  Gyro__ChannelStat *chs[2] = {&c0, &c1};
  Gyro__StepReport r = GYRO__STEP_REPORT__INIT;
  r.generation = 1;
  r.rank = rank;
  r.step = step;
  r.loss = loss_of(rank, step);
  r.n_channels = 2;
  r.channels = chs;
  r.grad_norm = 0.5;
  r.tokens_per_s = 1234.5;
  r.step_ms = 7;
  r.has_checkpoint = ckpt >= 0;
  r.checkpoint_step = ckpt;
  /* rank 1 has a GPU that logs Xid 79 (fallen off the bus) from step 3 on: one "hardware"
   * event, however many reports repeat the count */
  Gyro__GpuHealth gpu = GYRO__GPU_HEALTH__INIT;
  if (rank == 1) {
    gpu.index = 1;
    gpu.name = "H100";
    gpu.has_temp = 1;
    gpu.temp_c = 71;
    gpu.has_xid = 1;
    gpu.xid_count = step >= 3;
    gpu.last_xid = step >= 3 ? 79 : 0;
    r.gpu = &gpu;
  }
  Gyro__WorkerMsg wm = GYRO__WORKER_MSG__INIT;
  wm.msg_case = GYRO__WORKER_MSG__MSG_REPORT;
  wm.report = &r;
  sess_send(s, &wm);
}

static void report(sess_t *s, int rank, int64_t step) {
  report_ck(s, rank, step, -1);
}

static void ack(sess_t *s, int rank, uint64_t seq, int64_t step) {
  Gyro__DirectiveAck a = GYRO__DIRECTIVE_ACK__INIT;
  a.generation = 1;
  a.seq = seq;
  a.rank = rank;
  a.step = step;
  a.ok = 1;
  Gyro__WorkerMsg wm = GYRO__WORKER_MSG__INIT;
  wm.msg_case = GYRO__WORKER_MSG__MSG_ACK;
  wm.ack = &a;
  sess_send(s, &wm);
}

static Gyro__StatusReply *status(void) {
  Gyro__Empty e = GYRO__EMPTY__INIT;
  void *resp;
  size_t n;
  int st;
  call("/gyro.Operator/Status", 1, &e.base, &resp, &n, &st);
  Gyro__StatusReply *r = st == 0 ? gyro__status_reply__unpack(NULL, n, resp) : NULL;
  free(resp);
  return r;
}

/* Joins w0 (no ordinal) and w1 (ordinal 1) in threads; checks that the first is held. */
static void form_gang(join_t *j) {
  pthread_t t[2];
  j[0] = (join_t){.id = "w0", .ordinal = -1};
  j[1] = (join_t){.id = "w1", .ordinal = 1};
  REQUIRE(pthread_create(&t[1], NULL, join_thread, &j[1]) == 0);
  sleep_ms(300);
  CHECK(!j[1].done); /* held until the world is reached */
  REQUIRE(pthread_create(&t[0], NULL, join_thread, &j[0]) == 0);
  pthread_join(t[0], NULL);
  pthread_join(t[1], NULL);
  REQUIRE(j[0].as && j[1].as);
}

/* ------------------------------------------------ tests
 * ------------------------------------------------ */

static void test_protocol(const char *cfg) {
  ctl_t c;
  ctl_start(&c, cfg, "ctl1");
  char target[64];
  snprintf(target, sizeof(target), "127.0.0.1:%d", c.port);
  char err[256];
  REQUIRE(gy_rpc_client_create(&cli, target, err, sizeof(err)) == 0);

  /* health, unknown method */
  void *resp;
  size_t n;
  int st;
  call("/grpc.health.v1.Health/Check", 0, NULL, &resp, &n, &st);
  CHECK_EQ_INT(st, GY_RPC_OK);
  CHECK(n == 2 && ((uint8_t *)resp)[0] == 0x08 && ((uint8_t *)resp)[1] == 0x01);
  free(resp);
  call("/gyro.Worker/Nope", 0, NULL, &resp, &n, &st);
  CHECK_EQ_INT(st, GY_RPC_UNIMPLEMENTED);
  free(resp);

  /* Status before the gang: INIT; without the token: UNAUTHENTICATED */
  Gyro__StatusReply *sr = status();
  REQUIRE(sr);
  CHECK(!strcmp(sr->state, "INIT"));
  CHECK_EQ_INT(sr->world, 2);
  CHECK_EQ_INT(sr->steps_total, STEPS);
  gyro__status_reply__free_unpacked(sr, NULL);
  Gyro__Empty e = GYRO__EMPTY__INIT;
  call("/gyro.Operator/Status", 0, &e.base, &resp, &n, &st);
  CHECK_EQ_INT(st, GY_RPC_UNAUTHENTICATED);
  free(resp);

  /* malformed bytes to Join: INVALID_ARGUMENT, and the controller still answers */
  static const uint8_t junk[] = {0x0a, 0xff, 0xff, 0xff, 0x0f, 0x01};
  gy_rpc_unary(cli, "/gyro.Worker/Join", NULL, NULL, junk, sizeof(junk), 5000, &resp, &n, &st, err,
               sizeof(err));
  CHECK_EQ_INT(st, GY_RPC_INVALID_ARGUMENT);
  free(resp);
  /* and to every unary Operator call: INVALID_ARGUMENT naming the message, before any token
   * check (the bytes are not a request at all) */
  static const struct {
    const char *method, *type;
  } ops[] = {{"/gyro.Operator/Status", "Empty"},
             {"/gyro.Operator/Events", "EventsRequest"},
             {"/gyro.Operator/Checkpoints", "CheckpointsRequest"},
             {"/gyro.Operator/PolicyShow", "Empty"},
             {"/gyro.Operator/PolicySet", "PolicySetRequest"},
             {"/gyro.Operator/Command", "CommandRequest"}};
  for (size_t k = 0; k < sizeof(ops) / sizeof(ops[0]); k++) {
    char want[96];
    snprintf(want, sizeof(want), "malformed %s", ops[k].type);
    err[0] = '\0';
    gy_rpc_unary(cli, ops[k].method, NULL, NULL, junk, sizeof(junk), 5000, &resp, &n, &st, err,
                 sizeof(err));
    CHECK_MSG(st == GY_RPC_INVALID_ARGUMENT && strstr(err, want), "%s: status %d, '%s'",
              ops[k].method, st, err);
    free(resp);
  }
  sr = status();
  CHECK(sr != NULL);
  if (sr) gyro__status_reply__free_unpacked(sr, NULL);

  /* the gang forms */
  join_t j[2];
  form_gang(j);
  Gyro__Assignment *a0 = j[0].as, *a1 = j[1].as;
  CHECK_EQ_INT(a0->rank, 0);
  CHECK_EQ_INT(a1->rank, 1); /* its ordinal */
  CHECK_EQ_INT(a0->generation, 1);
  CHECK_EQ_INT(a1->generation, 1);
  CHECK_EQ_INT(a0->world, 2);
  CHECK_EQ_INT(a0->start_step, 0);
  CHECK_EQ_INT(a0->heartbeat_ms, 200);
  CHECK(!strcmp(a0->rdzv_prefix, "g1"));
  CHECK(strstr(a0->config_yaml, "world: 2") != NULL);
  CHECK(a0->config_dir[0] == '/');
  CHECK(strcmp(a0->session_id, a1->session_id) != 0);

  /* the same worker id again before its session opened (its process restarted to restore the
   * start step): the same assignment */
  join_t again = {.id = "w0", .ordinal = -1};
  join_thread(&again);
  CHECK_EQ_INT(again.status, 0);
  CHECK(again.as && again.as->rank == 0 && again.as->generation == 1 &&
        !strcmp(again.as->session_id, a0->session_id));
  if (again.as) gyro__assignment__free_unpacked(again.as, NULL);

  /* a wrong-generation Hello: FAILED_PRECONDITION */
  sess_t bad;
  sess_open(&bad);
  hello(&bad, a0, 7);
  CHECK(next_msg(&bad, 5000) == NULL);
  CHECK(bad.closed);
  CHECK_EQ_INT(bad.close_status, GY_RPC_FAILED_PRECONDITION);
  sess_close(&bad);

  /* sessions: the first grant right after Hello */
  sess_t s0, s1;
  sess_open(&s0);
  sess_open(&s1);
  hello(&s0, a0, 1);
  hello(&s1, a1, 1);
  CHECK(wait_grant(&s0, 4));
  CHECK(wait_grant(&s1, 4));

  /* another worker once the gang is complete: FAILED_PRECONDITION (the same id is not
   * refused: test_rejoin) */
  join_t extra = {.id = "w9", .ordinal = -1};
  join_thread(&extra);
  CHECK_EQ_INT(extra.status, GY_RPC_FAILED_PRECONDITION);

  /* grants follow the slowest rank */
  for (int s = 0; s < 4; s++)
    report(&s0, 0, s);
  Gyro__ControllerMsg *m = next_msg(&s0, 400);
  CHECK(m == NULL); /* rank 1 has not reported: no grant */
  if (m) gyro__controller_msg__free_unpacked(m, NULL);
  report(&s1, 1, 0);
  CHECK(wait_grant(&s0, 5));
  CHECK(wait_grant(&s1, 5));
  for (int s = 1; s < 4; s++)
    report(&s1, 1, s);
  CHECK(wait_grant(&s0, 8));
  CHECK(wait_grant(&s1, 8));

  /* CHECKPOINT: without the token refused; with it, at_step = the frozen horizon 8 */
  Gyro__CommandRequest cr = GYRO__COMMAND_REQUEST__INIT;
  cr.kind = GYRO__DIRECTIVE__KIND__CHECKPOINT;
  call("/gyro.Operator/Command", 0, &cr.base, &resp, &n, &st);
  CHECK_EQ_INT(st, GY_RPC_UNAUTHENTICATED);
  free(resp);
  call("/gyro.Operator/Command", 1, &cr.base, &resp, &n, &st);
  CHECK_EQ_INT(st, GY_RPC_OK);
  Gyro__CommandReply *rep = st == 0 ? gyro__command_reply__unpack(NULL, n, resp) : NULL;
  free(resp);
  REQUIRE(rep);
  CHECK_EQ_INT(rep->seq, 1);
  CHECK_EQ_INT(rep->at_step, 8);
  gyro__command_reply__free_unpacked(rep, NULL);
  /* both ranks wrote the checkpoint of step 4 (before running step 4) */
  for (int s = 4; s < 8; s++)
    report_ck(&s0, 0, s, s == 4 ? 4 : -1);
  for (int s = 4; s < 7; s++)
    report_ck(&s1, 1, s, s == 4 ? 4 : -1);
  m = next_msg(&s0, 300);
  CHECK(m == NULL); /* rank 1 is not at 8 yet: no directive, no grant */
  if (m) gyro__controller_msg__free_unpacked(m, NULL);
  report(&s1, 1, 7);
  sess_t *ss[2] = {&s0, &s1};
  for (int r = 0; r < 2; r++) {
    m = next_msg(ss[r], 5000);
    REQUIRE(m);
    CHECK_EQ_INT(m->msg_case, GYRO__CONTROLLER_MSG__MSG_DIRECTIVE);
    if (m->msg_case == GYRO__CONTROLLER_MSG__MSG_DIRECTIVE) {
      CHECK_EQ_INT(m->directive->seq, 1);
      CHECK_EQ_INT(m->directive->at_step, 8);
      CHECK_EQ_INT(m->directive->generation, 1);
      CHECK_EQ_INT(m->directive->kind, GYRO__DIRECTIVE__KIND__CHECKPOINT);
    }
    gyro__controller_msg__free_unpacked(m, NULL);
  }
  ack(&s0, 0, 1, 8);
  m = next_msg(&s0, 300);
  CHECK(m == NULL); /* rank 1 has not acked */
  if (m) gyro__controller_msg__free_unpacked(m, NULL);
  ack(&s1, 1, 1, 8);
  CHECK(wait_grant(&s0, 12));
  CHECK(wait_grant(&s1, 12));

  sr = status();
  REQUIRE(sr);
  CHECK(!strcmp(sr->state, "TRAIN"));
  CHECK_EQ_INT(sr->step, 7);
  CHECK_EQ_INT(sr->horizon, 12);
  CHECK_EQ_INT(sr->committed_step, 8); /* the CHECKPOINT both ranks acked ok: on disk everywhere */
  CHECK_EQ_INT(sr->generation, 1);
  CHECK_EQ_INT(sr->n_ranks, 2);
  CHECK(sr->loss == loss_of(0, 7));
  CHECK_EQ_INT(sr->n_channels, 2);
  if (sr->n_ranks == 2) {
    CHECK(!strcmp(sr->ranks[1]->worker_id, "w1"));
    CHECK_EQ_INT(sr->ranks[1]->steps_done, 8);
    CHECK(sr->ranks[0]->alive);
  }
  gyro__status_reply__free_unpacked(sr, NULL);

  /* the store: a missing key times out; a held get is answered by the set */
  Gyro__StoreGetRequest gr = GYRO__STORE_GET_REQUEST__INIT;
  gr.key = "g1/none";
  gr.timeout_ms = 200;
  double t0 = now_s();
  call("/gyro.Worker/StoreGet", 0, &gr.base, &resp, &n, &st);
  CHECK_EQ_INT(st, GY_RPC_DEADLINE_EXCEEDED);
  CHECK(now_s() - t0 >= 0.15);
  free(resp);
  Gyro__StoreSetRequest set = GYRO__STORE_SET_REQUEST__INIT;
  set.key = "g1/rank0";
  set.value.data = (uint8_t *)"\x00\x01\x02";
  set.value.len = 3;
  call("/gyro.Worker/StoreSet", 0, &set.base, &resp, &n, &st);
  CHECK_EQ_INT(st, GY_RPC_OK);
  free(resp);
  gr.key = "g1/rank0";
  gr.timeout_ms = 1000;
  call("/gyro.Worker/StoreGet", 0, &gr.base, &resp, &n, &st);
  CHECK_EQ_INT(st, GY_RPC_OK);
  Gyro__StoreValue *sv = st == 0 ? gyro__store_value__unpack(NULL, n, resp) : NULL;
  CHECK(sv && sv->value.len == 3 && sv->value.data[2] == 2);
  if (sv) gyro__store_value__free_unpacked(sv, NULL);
  free(resp);

  /* ROLLBACK: to a step with no committed checkpoint refused; to 4 (committed) accepted */
  Gyro__SkipRange skr = GYRO__SKIP_RANGE__INIT;
  skr.first = 1000;
  skr.last = 1010;
  Gyro__SkipRange *skp[1] = {&skr};
  Gyro__CommandRequest rb = GYRO__COMMAND_REQUEST__INIT;
  rb.kind = GYRO__DIRECTIVE__KIND__ROLLBACK;
  rb.to_step = 6;
  call("/gyro.Operator/Command", 1, &rb.base, &resp, &n, &st);
  CHECK_EQ_INT(st, GY_RPC_FAILED_PRECONDITION);
  free(resp);
  rb.to_step = 4;
  rb.n_skip = 1;
  rb.skip = skp;
  call("/gyro.Operator/Command", 1, &rb.base, &resp, &n, &st);
  CHECK_EQ_INT(st, GY_RPC_OK);
  rep = st == 0 ? gyro__command_reply__unpack(NULL, n, resp) : NULL;
  free(resp);
  REQUIRE(rep);
  CHECK_EQ_INT(rep->seq, 2);
  CHECK_EQ_INT(rep->at_step, 12);
  gyro__command_reply__free_unpacked(rep, NULL);
  for (int s = 8; s < 12; s++)
    report(&s0, 0, s);
  for (int s = 8; s < 11; s++)
    report(&s1, 1, s);
  m = next_msg(&s0, 300);
  CHECK(m == NULL); /* rank 1 is not at 12 yet */
  if (m) gyro__controller_msg__free_unpacked(m, NULL);
  report(&s1, 1, 11);
  for (int r = 0; r < 2; r++) {
    m = next_msg(ss[r], 5000);
    REQUIRE(m);
    CHECK_EQ_INT(m->msg_case, GYRO__CONTROLLER_MSG__MSG_DIRECTIVE);
    if (m->msg_case == GYRO__CONTROLLER_MSG__MSG_DIRECTIVE) {
      const Gyro__Directive *d = m->directive;
      CHECK_EQ_INT(d->kind, GYRO__DIRECTIVE__KIND__ROLLBACK);
      CHECK_EQ_INT(d->seq, 2);
      CHECK_EQ_INT(d->at_step, 12);
      CHECK_EQ_INT(d->to_step, 4);
      CHECK_EQ_INT(d->generation, 1);
      CHECK(d->n_skip == 1 && d->skip[0]->first == 1000 && d->skip[0]->last == 1010);
      CHECK(d->reason && strstr(d->reason, "operator"));
      CHECK(d->hparams == NULL);
    }
    gyro__controller_msg__free_unpacked(m, NULL);
  }
  ack(&s0, 0, 2, 4);
  m = next_msg(&s0, 300);
  CHECK(m == NULL); /* rank 1 has not acked */
  if (m) gyro__controller_msg__free_unpacked(m, NULL);
  ack(&s1, 1, 2, 4);
  CHECK(wait_grant(&s0, 8)); /* 4 + window */
  CHECK(wait_grant(&s1, 8));
  sr = status();
  REQUIRE(sr);
  CHECK(!strcmp(sr->state, "TRAIN"));
  CHECK_EQ_INT(sr->step, 3);
  CHECK_EQ_INT(sr->horizon, 8);
  CHECK_EQ_INT(sr->committed_step, 4);
  if (sr->n_ranks == 2) CHECK_EQ_INT(sr->ranks[1]->steps_done, 4);
  gyro__status_reply__free_unpacked(sr, NULL);

  /* train to the end from step 4: every grant honoured, the run goes DONE and the controller
   * exits 0 */
  for (int64_t s = 4; s < STEPS; s++) {
    for (int r = 0; r < 2; r++) {
      while (ss[r]->horizon <= s) {
        m = next_msg(ss[r], 5000);
        REQUIRE(m);
        gyro__controller_msg__free_unpacked(m, NULL);
      }
      report(ss[r], r, s);
    }
  }
  int code = ctl_wait(&c, 10);
  CHECK_EQ_INT(code, 0);
  sess_close(&s0);
  sess_close(&s1);
  gyro__assignment__free_unpacked(a0, NULL);
  gyro__assignment__free_unpacked(a1, NULL);
  gy_rpc_client_destroy(cli);
  cli = NULL;
  if (code < 0) {
    kill(c.pid, SIGKILL);
    waitpid(c.pid, NULL, 0);
  }

  /* stdout: one step line per step, with rank 0's figures */
  FILE *f = fopen(c.out, "r");
  REQUIRE(f);
  char line[4096];
  int nsteps = 0, done = 0;
  /* steps 0..11, then 4..15 again after the rollback to 4 applied at 12 */
  const int nexpect = 12 + (STEPS - 4);
  while (fgets(line, sizeof(line), f)) {
    json_t *o = json_loads(line, 0, NULL);
    CHECK_MSG(o != NULL, "not JSON: %s", line);
    if (!o) continue;
    const char *type = json_string_value(json_object_get(o, "type"));
    if (type && !strcmp(type, "step")) {
      int64_t s = json_integer_value(json_object_get(o, "step"));
      CHECK_EQ_INT(s, nsteps < 12 ? nsteps : nsteps - 8);
      CHECK(json_real_value(json_object_get(o, "loss")) == loss_of(0, s));
      json_t *lc = json_object_get(o, "loss_ch");
      CHECK(json_real_value(json_object_get(lc, "code")) == 0.75);
      CHECK_NEAR(json_real_value(json_object_get(lc, "web")), loss_of(0, s), 1e-15);
      CHECK(json_real_value(json_object_get(o, "tokens_per_s")) == 1234.5);
      nsteps++;
    }
    if (type && !strcmp(type, "done")) done = 1;
    json_decref(o);
  }
  fclose(f);
  CHECK_EQ_INT(nsteps, nexpect);
  CHECK(done);
  /* stderr: events as JSON lines, among them the refusals */
  f = fopen(c.err, "r");
  REQUIRE(f);
  int nrefused = 0, formed = 0, committed = 0, rolled = 0, hardware = 0;
  while (fgets(line, sizeof(line), f)) {
    json_t *o = json_loads(line, 0, NULL);
    CHECK_MSG(o != NULL, "not JSON: %s", line);
    const char *msg = o ? json_string_value(json_object_get(o, "msg")) : NULL;
    if (msg && (strstr(msg, " refused ") || strstr(msg, " malformed "))) nrefused++;
    if (msg && strstr(msg, " gang_formed ")) formed = 1;
    if (msg && strstr(msg, " checkpoint_committed step 4:")) committed = 1;
    if (msg && strstr(msg, " rollback step 4:")) rolled = 1;
    if (msg && strstr(msg, " hardware ") && strstr(msg, "rank 1 GPU 1 (H100)") &&
        strstr(msg, "1 new Xid error(s), last Xid 79"))
      hardware++;
    json_decref(o);
  }
  fclose(f);
  CHECK(formed);
  CHECK(committed);
  CHECK(rolled);
  CHECK_EQ_INT(hardware, 1);
  CHECK_MSG(nrefused >= 6, "%d refusal events", nrefused);
}

/* A second run: Watch, a lost worker (its stream closes), SIGTERM. */
static void test_lost_and_signal(const char *cfg) {
  ctl_t c;
  ctl_start(&c, cfg, "ctl2");
  char target[64], err[256];
  snprintf(target, sizeof(target), "127.0.0.1:%d", c.port);
  REQUIRE(gy_rpc_client_create(&cli, target, err, sizeof(err)) == 0);
  /* Watch: refused without the token; with it, a StatusReply first, then events and steps */
  sess_t w, wbad;
  stream_open(&wbad, "/gyro.Operator/Watch", 0);
  Gyro__WatchRequest wr = GYRO__WATCH_REQUEST__INIT;
  wr.steps = 1;
  uint8_t wb[64];
  size_t wn = gyro__watch_request__pack(&wr, wb);
  CHECK(gy_rpc_cstream_send(wbad.st, wb, wn) == 0);
  CHECK(next_raw(&wbad, 5000) == NULL);
  CHECK_EQ_INT(wbad.close_status, GY_RPC_UNAUTHENTICATED);
  sess_close(&wbad);
  stream_open(&w, "/gyro.Operator/Watch", 1);
  CHECK(gy_rpc_cstream_send(w.st, wb, wn) == 0);
  msg_t *raw = next_raw(&w, 5000);
  REQUIRE(raw);
  Gyro__WatchMsg *wm = gyro__watch_msg__unpack(NULL, raw->n, raw->b);
  CHECK(wm && wm->msg_case == GYRO__WATCH_MSG__MSG_STATUS && !strcmp(wm->status->state, "INIT"));
  if (wm) gyro__watch_msg__free_unpacked(wm, NULL);
  free(raw->b);
  free(raw);

  join_t j[2];
  form_gang(j);
  sess_t s0, s1;
  sess_open(&s0);
  sess_open(&s1);
  hello(&s0, j[0].as, 1);
  hello(&s1, j[1].as, 1);
  CHECK(wait_grant(&s0, 4));
  CHECK(wait_grant(&s1, 4));
  report(&s0, 0, 0);
  report(&s1, 1, 0);
  CHECK(wait_grant(&s0, 5));
  sess_close(&s1); /* rank 1's stream goes away */
  int formed = 0, step0 = 0, lost_ev = 0;
  for (double t0 = now_s(); now_s() - t0 < 5 && !lost_ev;) {
    raw = next_raw(&w, 5000);
    if (!raw) break;
    wm = gyro__watch_msg__unpack(NULL, raw->n, raw->b);
    CHECK(wm != NULL);
    if (wm && wm->msg_case == GYRO__WATCH_MSG__MSG_EVENT) {
      formed |= !strcmp(wm->event->kind, "gang_formed");
      lost_ev |= !strcmp(wm->event->kind, "worker_lost");
      CHECK(wm->event->id > 0 && wm->event->time > 1e9);
    }
    if (wm && wm->msg_case == GYRO__WATCH_MSG__MSG_STATUS && wm->status->step == 0)
      step0 = wm->status->loss == loss_of(0, 0);
    if (wm) gyro__watch_msg__free_unpacked(wm, NULL);
    free(raw->b);
    free(raw);
  }
  CHECK(formed);
  CHECK(step0);
  CHECK(lost_ev);
  int degraded = 0;
  for (double t0 = now_s(); now_s() - t0 < 5 && !degraded;) {
    Gyro__StatusReply *sr = status();
    if (sr) {
      degraded = !strcmp(sr->state, "DEGRADED");
      if (degraded && sr->n_ranks == 2) CHECK(!sr->ranks[1]->alive && sr->ranks[0]->alive);
      gyro__status_reply__free_unpacked(sr, NULL);
    }
    if (!degraded) sleep_ms(50);
  }
  CHECK(degraded);
  /* no grants after the loss; a command is refused */
  report(&s0, 0, 1);
  Gyro__CommandRequest cr = GYRO__COMMAND_REQUEST__INIT;
  cr.kind = GYRO__DIRECTIVE__KIND__PAUSE;
  void *resp;
  size_t n;
  int st;
  call("/gyro.Operator/Command", 1, &cr.base, &resp, &n, &st);
  CHECK_EQ_INT(st, GY_RPC_FAILED_PRECONDITION);
  free(resp);
  kill(c.pid, SIGTERM);
  int code = ctl_wait(&c, 10);
  CHECK_EQ_INT(code, 0);
  if (code < 0) {
    kill(c.pid, SIGKILL);
    waitpid(c.pid, NULL, 0);
  }
  sess_close(&s0);
  sess_close(&w);
  gyro__assignment__free_unpacked(j[0].as, NULL);
  gyro__assignment__free_unpacked(j[1].as, NULL);
  gy_rpc_client_destroy(cli);
  cli = NULL;
  FILE *f = fopen(c.err, "r");
  char line[4096];
  int lost = 0;
  while (f && fgets(line, sizeof(line), f))
    lost |= strstr(line, "worker_lost") != NULL;
  if (f) fclose(f);
  CHECK(lost);
}

/* A worker whose Join ran past its deadline while the controller held it joins again, and is
 * not refused (the controller heard the call end and let the held join go, or the newer join
 * superseded it: either way the gang forms); later a worker's process restarts while the controller
 * still has its session open: the newcomer with its id is not refused either, the rank is lost at
 * once and the gang re-forms (the old sessions end with ABORTED), generation 2. */
static void test_rejoin(const char *cfg) {
  ctl_t c;
  ctl_start(&c, cfg, "ctl3");
  char target[64], err[256];
  snprintf(target, sizeof(target), "127.0.0.1:%d", c.port);
  REQUIRE(gy_rpc_client_create(&cli, target, err, sizeof(err)) == 0);
  join_t gone = {.id = "w0", .ordinal = -1};
  join_thread(&gone); /* held until its client's deadline (5 s) passes */
  CHECK_EQ_INT(gone.status, GY_RPC_DEADLINE_EXCEEDED);
  join_t j[2];
  form_gang(j); /* w0 joins again: the held join is superseded, not a refusal */
  CHECK_EQ_INT(j[0].as->generation, 1);
  sess_t s0, s1;
  sess_open(&s0);
  sess_open(&s1);
  hello(&s0, j[0].as, 1);
  hello(&s1, j[1].as, 1);
  CHECK(wait_grant(&s0, 4));
  CHECK(wait_grant(&s1, 4));
  /* w1's process restarts: its new process joins while the old session is still open */
  pthread_t t1;
  join_t again[2] = {{.id = "w0", .ordinal = -1}, {.id = "w1", .ordinal = 1}};
  REQUIRE(pthread_create(&t1, NULL, join_thread, &again[1]) == 0);
  for (double t0 = now_s(); now_s() - t0 < 4 && !s1.closed;)
    next_raw(&s1, 100);
  CHECK(s1.closed);
  CHECK_EQ_INT(s1.close_status, GY_RPC_ABORTED);
  join_thread(&again[0]); /* the survivor joins again: the gang re-forms */
  pthread_join(t1, NULL);
  CHECK_EQ_INT(again[0].status, 0);
  CHECK_EQ_INT(again[1].status, 0);
  CHECK(again[0].as && again[0].as->generation == 2);
  CHECK(again[1].as && again[1].as->generation == 2 && again[1].as->rank == 1);
  kill(c.pid, SIGTERM);
  int code = ctl_wait(&c, 10);
  CHECK_EQ_INT(code, 0);
  if (code < 0) {
    kill(c.pid, SIGKILL);
    waitpid(c.pid, NULL, 0);
  }
  sess_close(&s0);
  sess_close(&s1);
  for (int i = 0; i < 2; i++) {
    gyro__assignment__free_unpacked(j[i].as, NULL);
    if (again[i].as) gyro__assignment__free_unpacked(again[i].as, NULL);
  }
  gy_rpc_client_destroy(cli);
  cli = NULL;
  FILE *f = fopen(c.err, "r");
  char line[4096];
  int lost = 0;
  while (f && fgets(line, sizeof(line), f))
    lost |= strstr(line, "its earlier process is gone") != NULL;
  if (f) fclose(f);
  CHECK(lost);
}

static void test_bad_config(void) {
  char path[300];
  snprintf(path, sizeof(path), "%s/bad.yaml", tmpdir);
  write_file(path, "model: {vocab: 256}\n"
                   "data: {channels: [{name: a, train: a.bin}]}\n"
                   "controller: {world: 0}\n");
  const char *bd = getenv("GY_BUILD_DIR");
  char cmd[1024];
  snprintf(cmd, sizeof(cmd), "%s/controller/gyro-controller --config %s 2>%s/bad.err", bd, path,
           tmpdir);
  int st = system(cmd);
  CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 2);
  snprintf(cmd, sizeof(cmd), "%s/controller/gyro-controller --config %s/missing.yaml 2>/dev/null",
           bd, tmpdir);
  st = system(cmd);
  CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 2);
}

int main(void) {
  snprintf(tmpdir, sizeof(tmpdir), "/tmp/gy-ctlproto-XXXXXX");
  REQUIRE(mkdtemp(tmpdir));
  char cfg[300];
  snprintf(cfg, sizeof(cfg), "%s/run.yaml", tmpdir);
  char text[1024];
  snprintf(text, sizeof(text),
           "run: {name: proto, steps: %d}\n"
           "model: {vocab: 256}\n"
           "data: {channels: [{name: web, train: web.bin}, {name: code, train: code.bin}]}\n"
           "controller:\n"
           "  listen: \"127.0.0.1:0\"\n"
           "  world: 2\n"
           "  window: 4\n"
           "  heartbeat_ms: 200\n"
           "  lost_after_ms: 5000\n"
           "  operator_token: \"" TOKEN "\"\n",
           STEPS);
  write_file(cfg, text);
  test_protocol(cfg);
  test_lost_and_signal(cfg);
  test_rejoin(cfg);
  test_bad_config();
  nftw(tmpdir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
  GY_TEST_END();
}
