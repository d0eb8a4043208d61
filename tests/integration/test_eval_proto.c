/* test_eval_proto: the controller's side of held-out evaluations, without a worker binary.
 * Starts gyro-controller (world 1, an operator token) and acts as the worker with gy_rpc calls:
 * an EvalReport of checkpoint 2, then the step report that commits checkpoint 2: Checkpoints
 * lists it with the figures and as the best; a newer evaluation of the same checkpoint replaces
 * them; Checkpoints without the token is UNAUTHENTICATED. Then every malformed EvalReport is
 * refused (the session ends with INVALID_ARGUMENT, or FAILED_PRECONDITION for another
 * generation; the worker re-joins each time) and the controller still answers and keeps the
 * good figures: wrong generation, rank out of range, negative step, a checkpoint's evaluation
 * of another step, 17 sources, an empty, non-UTF-8, control-character or too long name, a name
 * twice, a negative loss, a zero perplexity, a NaN or above-1 cloze accuracy. Last, on a fresh
 * controller: a NaN held-out loss and perplexity is a broken model, not a malformed message:
 * the session stays open and the run rolls back to the newest clean checkpoint. */
#include <errno.h>
#include <ftw.h>
#include <jansson.h>
#include <math.h>
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

#define TOKEN "evaltoken"

static char tmpdir[256];
static gy_rpc_client_t *cli;

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

/* Starts the controller on cfg; returns its pid, its port in *port. */
static pid_t ctl_start(const char *cfg, int *port) {
  const char *bd = getenv("GY_BUILD_DIR");
  REQUIRE(bd);
  char bin[512], out[300], err[300];
  snprintf(bin, sizeof(bin), "%s/controller/gyro-controller", bd);
  snprintf(out, sizeof(out), "%s/ctl.out", tmpdir);
  snprintf(err, sizeof(err), "%s/ctl.err", tmpdir);
  /* a second controller must not be taken for the first: its port is read from a fresh file */
  unlink(out);
  unlink(err);
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    if (!freopen(out, "w", stdout) || !freopen(err, "w", stderr)) _exit(127);
    execl(bin, bin, "--config", cfg, "--grace-ms", "300", (char *)NULL);
    _exit(127);
  }
  *port = 0;
  for (double t0 = now_s(); now_s() - t0 < 60 && !*port;) {
    FILE *f = fopen(out, "r");
    char line[512];
    while (f && fgets(line, sizeof(line), f)) {
      json_t *j = json_loads(line, 0, NULL);
      if (j && !strcmp(json_string_value(json_object_get(j, "type")) ?: "", "listening"))
        *port = (int)json_integer_value(json_object_get(j, "port"));
      json_decref(j);
    }
    if (f) fclose(f);
    if (!*port) sleep_ms(20);
  }
  REQUIRE(*port > 0);
  return pid;
}

/* A unary call; returns the gRPC status (0: OK, the reply in *resp, *rlen). */
static int call(const char *method, int with_token, const ProtobufCMessage *req, void **resp,
                size_t *rlen) {
  uint8_t buf[4096];
  size_t n = req ? protobuf_c_message_pack(req, buf) : 0;
  char err[256];
  int status = -1;
  *resp = NULL;
  *rlen = 0;
  int rc = gy_rpc_unary(cli, method, with_token ? "authorization" : NULL,
                        with_token ? "Bearer " TOKEN : NULL, buf, n, 5000, resp, rlen, &status, err,
                        sizeof(err));
  return rc == 0 ? 0 : status;
}

static Gyro__Assignment *join(void) {
  Gyro__JoinRequest r = GYRO__JOIN_REQUEST__INIT;
  r.worker_id = "w0";
  r.ordinal = 0;
  r.host = "localhost";
  r.pid = 4242;
  void *resp;
  size_t n;
  Gyro__Assignment *as = NULL;
  for (double t0 = now_s(); !as && now_s() - t0 < 10;) { /* the loss may not be told yet */
    if (call("/gyro.Worker/Join", 0, &r.base, &resp, &n) == 0)
      as = gyro__assignment__unpack(NULL, n, resp);
    else
      sleep_ms(50);
    free(resp);
  }
  REQUIRE(as);
  return as;
}

/* A session: it only records its end (the messages the controller sends are not looked at). */
typedef struct {
  gy_rpc_cstream_t *st;
  pthread_mutex_t mu;
  int closed, status;
} sess_t;

static void s_on_message(void *ud, const uint8_t *b, size_t n) {
  (void)ud, (void)b, (void)n;
}

static void s_on_close(void *ud, int status, const char *details) {
  (void)details;
  sess_t *s = ud;
  pthread_mutex_lock(&s->mu);
  s->closed = 1;
  s->status = status;
  pthread_mutex_unlock(&s->mu);
}

static void send_msg(sess_t *s, const Gyro__WorkerMsg *wm) {
  uint8_t buf[8192];
  size_t n = gyro__worker_msg__pack(wm, buf);
  CHECK(gy_rpc_cstream_send(s->st, buf, n) == 0);
}

static void sess_open(sess_t *s, const Gyro__Assignment *as) {
  memset(s, 0, sizeof(*s));
  pthread_mutex_init(&s->mu, NULL);
  static const gy_rpc_cstream_cbs_t cbs = {s_on_message, s_on_close};
  char err[256];
  REQUIRE(gy_rpc_cstream_open(cli, "/gyro.Worker/Session", NULL, NULL, &cbs, s, &s->st, err,
                              sizeof(err)) == 0);
  Gyro__Hello h = GYRO__HELLO__INIT;
  h.session_id = as->session_id;
  h.generation = as->generation;
  h.rank = as->rank;
  Gyro__WorkerMsg wm = GYRO__WORKER_MSG__INIT;
  wm.msg_case = GYRO__WORKER_MSG__MSG_HELLO;
  wm.hello = &h;
  send_msg(s, &wm);
}

/* Waits up to ms for the session's end; its status, or -1 while it is open. */
static int sess_end(sess_t *s, int ms) {
  for (double t0 = now_s(); now_s() - t0 < ms / 1e3; sleep_ms(10)) {
    pthread_mutex_lock(&s->mu);
    int c = s->closed, st = s->status;
    pthread_mutex_unlock(&s->mu);
    if (c) return st;
  }
  return -1;
}

static void sess_close(sess_t *s) {
  gy_rpc_cstream_close(s->st);
  pthread_mutex_destroy(&s->mu);
}

/* The figures of one source. */
typedef struct {
  const char *name;
  double loss, ppl, cloze;
  uint32_t items;
} src_t;

static void send_eval(sess_t *s, uint64_t gen, int rank, int64_t step, int ckpt, int64_t ckstep,
                      const src_t *src, int n) {
  Gyro__SourceEval se[32], *sep[32];
  for (int i = 0; i < n; i++) {
    gyro__source_eval__init(&se[i]);
    se[i].source = (char *)src[i].name;
    se[i].loss = src[i].loss;
    se[i].ppl = src[i].ppl;
    se[i].tokens = 1024;
    se[i].cloze_accuracy = src[i].cloze;
    se[i].cloze_items = src[i].items;
    sep[i] = &se[i];
  }
  Gyro__EvalReport r = GYRO__EVAL_REPORT__INIT;
  r.generation = gen;
  r.rank = rank;
  r.step = step;
  r.n_sources = (size_t)n;
  r.sources = sep;
  r.has_checkpoint = ckpt;
  r.checkpoint_step = ckstep;
  Gyro__WorkerMsg wm = GYRO__WORKER_MSG__INIT;
  wm.msg_case = GYRO__WORKER_MSG__MSG_EVAL;
  wm.eval = &r;
  send_msg(s, &wm);
}

static void report(sess_t *s, uint64_t gen, int64_t step, int64_t ckpt) {
  Gyro__ChannelStat c0 = GYRO__CHANNEL_STAT__INIT;
  c0.name = "web";
  c0.loss_sum = 300.0 / (double)(step + 2);
  c0.tokens = 100;
  Gyro__ChannelStat *chs[1] = {&c0};
  Gyro__StepReport r = GYRO__STEP_REPORT__INIT;
  r.generation = gen;
  r.step = step;
  r.loss = 3.0 / (double)(step + 2);
  r.n_channels = 1;
  r.channels = chs;
  r.grad_norm = 0.5;
  r.tokens_per_s = 1000;
  r.step_ms = 5;
  r.has_checkpoint = ckpt >= 0;
  r.checkpoint_step = ckpt;
  Gyro__WorkerMsg wm = GYRO__WORKER_MSG__INIT;
  wm.msg_case = GYRO__WORKER_MSG__MSG_REPORT;
  wm.report = &r;
  send_msg(s, &wm);
}

/* Checkpoints with the token; NULL on failure. */
static Gyro__CheckpointsReply *checkpoints(void) {
  Gyro__CheckpointsRequest q = GYRO__CHECKPOINTS_REQUEST__INIT;
  void *resp;
  size_t n;
  Gyro__CheckpointsReply *r = NULL;
  if (call("/gyro.Operator/Checkpoints", 1, &q.base, &resp, &n) == 0)
    r = gyro__checkpoints_reply__unpack(NULL, n, resp);
  free(resp);
  return r;
}

/* Polls Checkpoints until checkpoint `step` has an evaluation whose web loss is `loss`. */
static Gyro__CheckpointsReply *wait_eval(int64_t step, double loss) {
  for (double t0 = now_s(); now_s() - t0 < 5; sleep_ms(20)) {
    Gyro__CheckpointsReply *r = checkpoints();
    for (size_t i = 0; r && i < r->n_checkpoints; i++) {
      const Gyro__CheckpointInfo *c = r->checkpoints[i];
      if (c->step == step && c->has_eval && c->n_sources && c->sources[0]->loss == loss) return r;
    }
    if (r) gyro__checkpoints_reply__free_unpacked(r, NULL);
  }
  return NULL;
}

/* Events with the token (since_id 0); NULL on failure. */
static Gyro__EventsReply *events(void) {
  Gyro__EventsRequest q = GYRO__EVENTS_REQUEST__INIT;
  void *resp;
  size_t n;
  Gyro__EventsReply *r = NULL;
  if (call("/gyro.Operator/Events", 1, &q.base, &resp, &n) == 0)
    r = gyro__events_reply__unpack(NULL, n, resp);
  free(resp);
  return r;
}

/* A NaN held-out loss and perplexity (the model's parameters are broken) on a fresh
 * controller: the session stays open and the run rolls back to checkpoint 2 at once. */
static void test_nonfinite(const char *cfg) {
  int port;
  pid_t pid = ctl_start(cfg, &port);
  char target[64], err[256];
  snprintf(target, sizeof(target), "127.0.0.1:%d", port);
  gy_rpc_client_destroy(cli);
  REQUIRE(gy_rpc_client_create(&cli, target, err, sizeof(err)) == 0);
  Gyro__Assignment *as = join();
  uint64_t gen = as->generation;
  sess_t s;
  sess_open(&s, as);
  report(&s, gen, 0, -1);
  report(&s, gen, 1, -1);
  report(&s, gen, 2, 2); /* checkpoint 2 committed */
  report(&s, gen, 3, -1);
  src_t broken[1] = {{"web", NAN, NAN, 0.25, 512}};
  send_eval(&s, gen, 0, 3, 0, -1, broken, 1);
  CHECK_EQ_INT(sess_end(&s, 500), -1); /* not malformed: the session goes on */
  int rolled = 0;
  for (double t0 = now_s(); !rolled && now_s() - t0 < 10; sleep_ms(50)) {
    Gyro__EventsReply *r = events();
    for (size_t i = 0; r && i < r->n_events; i++)
      rolled |= !strcmp(r->events[i]->kind, "rollback") &&
                strstr(r->events[i]->message, "checkpoint 2") != NULL &&
                strstr(r->events[i]->message, "ppl/web") != NULL;
    if (r) gyro__events_reply__free_unpacked(r, NULL);
  }
  CHECK_MSG(rolled, "no rollback to checkpoint 2 on a NaN held-out perplexity");
  sess_close(&s);
  gyro__assignment__free_unpacked(as, NULL);
  gy_rpc_client_destroy(cli);
  cli = NULL;
  kill(pid, SIGTERM);
  int wst;
  waitpid(pid, &wst, 0);
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  snprintf(tmpdir, sizeof(tmpdir), "/tmp/gy-evalproto-XXXXXX");
  REQUIRE(mkdtemp(tmpdir));
  char cfg[300], text[1024];
  snprintf(cfg, sizeof(cfg), "%s/run.yaml", tmpdir);
  snprintf(text, sizeof(text),
           "run: {name: evalproto, steps: 40}\n"
           "model: {vocab: 256}\n"
           "data: {channels: [{name: web, train: web.bin}, {name: code, train: code.bin}]}\n"
           "controller: {listen: \"127.0.0.1:0\", world: 1, window: 4, heartbeat_ms: 200,\n"
           "             lost_after_ms: 5000, operator_token: \"" TOKEN "\"}\n");
  FILE *f = fopen(cfg, "w");
  REQUIRE(f);
  fputs(text, f);
  fclose(f);
  int port;
  pid_t pid = ctl_start(cfg, &port);
  char target[64], err[256];
  snprintf(target, sizeof(target), "127.0.0.1:%d", port);
  REQUIRE(gy_rpc_client_create(&cli, target, err, sizeof(err)) == 0);

  /* ---- the good path: an evaluation of checkpoint 2, then its commit */
  Gyro__Assignment *as = join();
  uint64_t gen = as->generation;
  sess_t s;
  sess_open(&s, as);
  report(&s, gen, 0, -1);
  report(&s, gen, 1, -1);
  src_t good[2] = {{"web", 2.5, exp(2.5), 0.25, 512}, {"code", 1.5, exp(1.5), 0.5, 512}};
  send_eval(&s, gen, 0, 2, 1, 2, good, 2);
  report(&s, gen, 2, 2); /* checkpoint 2 is on disk: committed (world 1) */
  Gyro__CheckpointsReply *r = wait_eval(2, 2.5);
  REQUIRE(r);
  CHECK_EQ_INT(r->n_checkpoints, 1);
  CHECK_EQ_INT(r->best_step, 2);
  const Gyro__CheckpointInfo *c = r->checkpoints[0];
  CHECK(c->clean && c->best && c->n_sources == 2);
  CHECK(!strcmp(c->sources[1]->source, "code") && c->sources[1]->cloze_accuracy == 0.5 &&
        c->sources[1]->cloze_items == 512 && c->sources[1]->tokens == 1024);
  CHECK(fabs(c->mean_loss - 2.0) < 1e-12);
  gyro__checkpoints_reply__free_unpacked(r, NULL);
  /* a newer evaluation of the same checkpoint replaces the figures */
  good[0].loss = 2.25;
  good[0].ppl = exp(2.25);
  send_eval(&s, gen, 0, 2, 1, 2, good, 2);
  r = wait_eval(2, 2.25);
  CHECK(r != NULL);
  if (r) gyro__checkpoints_reply__free_unpacked(r, NULL);
  /* an evaluation that is no checkpoint's is accepted and listed nowhere */
  send_eval(&s, gen, 0, 3, 0, -1, good, 2);
  CHECK_EQ_INT(sess_end(&s, 300), -1);
  {
    Gyro__CheckpointsRequest q = GYRO__CHECKPOINTS_REQUEST__INIT;
    void *resp;
    size_t n;
    CHECK_EQ_INT(call("/gyro.Operator/Checkpoints", 0, &q.base, &resp, &n), GY_RPC_UNAUTHENTICATED);
    free(resp);
  }

  /* ---- malformed evaluations: the session ends, the worker joins again */
  char longname[64], many[17][8];
  memset(longname, 'x', 40);
  longname[40] = 0;
  src_t s17[17];
  for (int i = 0; i < 17; i++) {
    snprintf(many[i], sizeof(many[i]), "s%d", i);
    s17[i] = (src_t){many[i], 1, exp(1), 0.5, 10};
  }
  struct {
    const char *what;
    int gen_off, rank, ckpt;
    int64_t step, ckstep;
    src_t src[2];
    int n;
    int want;
  } bad[] = {
      {"another generation",
       1,
       0,
       0,
       5,
       -1,
       {{"web", 1, 2.7, 0.5, 10}},
       1,
       GY_RPC_FAILED_PRECONDITION},
      {"rank out of range", 0, 1, 0, 5, -1, {{"web", 1, 2.7, 0.5, 10}}, 1, GY_RPC_INVALID_ARGUMENT},
      {"negative step", 0, 0, 0, -1, -1, {{"web", 1, 2.7, 0.5, 10}}, 1, GY_RPC_INVALID_ARGUMENT},
      {"checkpoint of another step",
       0,
       0,
       1,
       6,
       4,
       {{"web", 1, 2.7, 0.5, 10}},
       1,
       GY_RPC_INVALID_ARGUMENT},
      {"17 sources", 0, 0, 0, 5, -1, {{0}}, 17, GY_RPC_INVALID_ARGUMENT},
      {"empty name", 0, 0, 0, 5, -1, {{"", 1, 2.7, 0.5, 10}}, 1, GY_RPC_INVALID_ARGUMENT},
      {"non-UTF-8 name", 0, 0, 0, 5, -1, {{"w\xff", 1, 2.7, 0.5, 10}}, 1, GY_RPC_INVALID_ARGUMENT},
      {"control character",
       0,
       0,
       0,
       5,
       -1,
       {{"w\x01", 1, 2.7, 0.5, 10}},
       1,
       GY_RPC_INVALID_ARGUMENT},
      {"name too long", 0, 0, 0, 5, -1, {{longname, 1, 2.7, 0.5, 10}}, 1, GY_RPC_INVALID_ARGUMENT},
      {"a name twice",
       0,
       0,
       0,
       5,
       -1,
       {{"web", 1, 2.7, 0.5, 10}, {"web", 1, 2.7, 0.5, 10}},
       2,
       GY_RPC_INVALID_ARGUMENT},
      {"negative loss", 0, 0, 0, 5, -1, {{"web", -1, 2.7, 0.5, 10}}, 1, GY_RPC_INVALID_ARGUMENT},
      {"zero perplexity", 0, 0, 0, 5, -1, {{"web", 1, 0, 0.5, 10}}, 1, GY_RPC_INVALID_ARGUMENT},
      {"NaN cloze accuracy",
       0,
       0,
       0,
       5,
       -1,
       {{"web", 1, 2.7, NAN, 10}},
       1,
       GY_RPC_INVALID_ARGUMENT},
      {"cloze accuracy 1.5",
       0,
       0,
       0,
       5,
       -1,
       {{"web", 1, 2.7, 1.5, 10}},
       1,
       GY_RPC_INVALID_ARGUMENT},
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    if (i) { /* the previous refusal ended the session: the worker is lost, it joins again */
      gyro__assignment__free_unpacked(as, NULL);
      as = join();
      gen = as->generation;
      sess_open(&s, as);
    }
    send_eval(&s, gen + (uint64_t)bad[i].gen_off, bad[i].rank, bad[i].step, bad[i].ckpt,
              bad[i].ckstep, bad[i].n == 17 ? s17 : bad[i].src, bad[i].n);
    int st = sess_end(&s, 5000);
    CHECK_MSG(st == bad[i].want, "%s: status %d, want %d", bad[i].what, st, bad[i].want);
    sess_close(&s);
  }
  /* the controller still answers, with the good figures */
  r = wait_eval(2, 2.25);
  CHECK(r && r->best_step == 2);
  if (r) gyro__checkpoints_reply__free_unpacked(r, NULL);
  gyro__assignment__free_unpacked(as, NULL);
  gy_rpc_client_destroy(cli);
  cli = NULL;
  kill(pid, SIGTERM);
  int wst;
  waitpid(pid, &wst, 0);
  char log[400];
  snprintf(log, sizeof(log),
           "grep -c ' malformed step [-0-9]*: session from .*evaluation' %s/ctl.err", tmpdir);
  FILE *p = popen(log, "r");
  int nmal = 0;
  if (p && fscanf(p, "%d", &nmal) != 1) nmal = 0;
  if (p) pclose(p);
  CHECK_MSG(nmal >= 13, "%d malformed events, want one per refusal but the stale generation", nmal);
  test_nonfinite(cfg);
  nftw(tmpdir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
  GY_TEST_END();
}
