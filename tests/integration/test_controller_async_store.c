/* test_controller_async_store: nothing the store does blocks the controller's loop.
 *
 * 1. The journal writer (controller/jwriter.h) on a SQLite journal whose write lock another
 *    connection holds: a must-write waits on the writer's thread while a loop timer keeps
 *    firing; once the lock goes, it is written and the outcomes come back in submit order; a
 *    must-write that fails three times is retried with back-off (off the loop) and written at
 *    the fourth try; a write that never succeeds does not hold destroy, and its done never runs
 *    after close.
 * 2. The service with a fence that blocks on the writer's thread (a store that does not
 *    answer): the worker's Join (an ASSIGN action, fenced) is not answered before the fence
 *    answers, while a Status call is answered meanwhile; once the fence answers, the Join is.
 * Waits are on conditions with generous bounds. */
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "common/err.h"
#include "common/rpc.h"
#include "controller/journal.h"
#include "controller/jwriter.h"
#include "controller/service.h"
#include "controller/store.h"
#include "proto/gyro.pb-c.h"
#include "tests/test.h"

static char msg[1024];

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ------------------------------------- 1. the writer ------------------------------------- */

typedef struct {
  int tag;
  gy_journal_t *j;
  int fail_first; /* the stub fails this many tries, then succeeds (-1: always fails) */
  int tries;
} op_t;

static int order[8], norder;
static int rcs[8], tries[8];

static int run_ckpt(void *p, char *err, size_t len) {
  op_t *op = p;
  return gy_journal_checkpoint(op->j, 10, 1, err, len);
}

static int run_event(void *p, char *err, size_t len) {
  op_t *op = p;
  (void)err;
  (void)len;
  return gy_journal_event(op->j, 1, 1.0, 10, "test", "an event behind the manifest");
}

static int run_stub(void *p, char *err, size_t len) {
  op_t *op = p;
  if (op->fail_first < 0 || op->tries++ < op->fail_first) {
    snprintf(err, len, "the stub store does not answer");
    return GY_ETIMEDOUT;
  }
  return 0;
}

static void on_done(void *ud, void *p, const gy_jwriter_result_t *r) {
  (void)ud;
  op_t *op = p;
  if (norder < 8) {
    rcs[norder] = r->rc;
    tries[norder] = r->tries;
    order[norder++] = op->tag;
  }
}

static void closed_cb(void *ud) {
  *(int *)ud = 1;
}

typedef struct {
  sqlite3 *db;
  int ticks, ticks_locked, unlocked, closed;
  gy_jwriter_t *w;
  double t0;
} wctx_t;

static void on_tick1(uv_timer_t *t) {
  wctx_t *c = t->data;
  c->ticks++;
  /* the loop runs while the manifest waits for the lock: 30 ticks, then the lock goes */
  if (!c->unlocked && c->ticks >= 30) {
    c->ticks_locked = norder == 0 ? c->ticks : -1;
    CHECK(sqlite3_exec(c->db, "COMMIT", NULL, NULL, NULL) == SQLITE_OK);
    c->unlocked = 1;
  }
  if ((c->unlocked && norder >= 3) || now_s() - c->t0 > 120) {
    /* a write that never succeeds: destroy cuts its retries short, done never runs */
    op_t *d = calloc(1, sizeof(*d));
    *d = (op_t){.tag = 4, .fail_first = -1};
    gy_jwriter_req_t rd = {"stuck record", 1, run_stub, free, on_done, NULL};
    CHECK(gy_jwriter_submit(c->w, &rd, d) == 0);
    gy_jwriter_close(c->w, closed_cb, &c->closed);
    uv_close((uv_handle_t *)t, NULL);
  }
}

static void test_writer(const char *dir) {
  char url[600], path[512];
  snprintf(path, sizeof(path), "%s/w.db", dir);
  snprintf(url, sizeof(url), "sqlite:%s", path);
  gy_cstore_t *store = NULL;
  gy_journal_t *j = NULL;
  REQUIRE(gy_cstore_create(&store, url, NULL, msg, sizeof(msg)) == 0);
  REQUIRE(gy_journal_open(&j, store, "w", msg, sizeof(msg)) == 0);
  /* another connection holds the write lock */
  sqlite3 *db = NULL;
  REQUIRE(sqlite3_open(path, &db) == SQLITE_OK);
  REQUIRE(sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) == SQLITE_OK);

  uv_loop_t loop;
  uv_loop_init(&loop);
  gy_jwriter_t *w = NULL;
  gy_jwriter_opts_t wo = {.give_up_ms = 120000, .backoff_min_ms = 10, .backoff_max_ms = 50};
  REQUIRE(gy_jwriter_create(&w, &loop, &wo) == 0);
  REQUIRE(gy_jwriter_start(w) == 0);
  op_t *a = calloc(1, sizeof(*a)), *b = calloc(1, sizeof(*b)), *c = calloc(1, sizeof(*c));
  *a = (op_t){.tag = 1, .j = j};
  *b = (op_t){.tag = 2, .j = j};
  *c = (op_t){.tag = 3, .fail_first = 3};
  gy_jwriter_req_t ra = {"checkpoint manifest", 1, run_ckpt, free, on_done, NULL};
  gy_jwriter_req_t rb = {"event", 0, run_event, free, on_done, NULL};
  gy_jwriter_req_t rc = {"stub record", 1, run_stub, free, on_done, NULL};
  CHECK(gy_jwriter_submit(w, &ra, a) == 0);
  CHECK(gy_jwriter_submit(w, &rb, b) == 0);
  CHECK(gy_jwriter_submit(w, &rc, c) == 0);

  wctx_t ctx = {.db = db, .w = w, .t0 = now_s()};
  uv_timer_t tick;
  uv_timer_init(&loop, &tick);
  tick.data = &ctx;
  uv_timer_start(&tick, on_tick1, 10, 10);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_MSG(ctx.ticks_locked >= 30, "the loop ticked %d times before the manifest was written",
            ctx.ticks_locked);
  CHECK_EQ_INT(norder, 3);
  CHECK_EQ_INT(order[0], 1); /* in submit order */
  CHECK_EQ_INT(order[1], 2);
  CHECK_EQ_INT(order[2], 3);
  CHECK_EQ_INT(rcs[0], 0);
  CHECK_EQ_INT(rcs[1], 0);
  CHECK_EQ_INT(rcs[2], 0);
  CHECK_EQ_INT(tries[2], 4); /* retried off the loop */

  CHECK(ctx.closed);
  double t = now_s();
  gy_jwriter_destroy(w);
  CHECK_MSG(now_s() - t < 60, "destroy took %.1f s", now_s() - t);
  CHECK_EQ_INT(norder, 3);
  CHECK(uv_loop_close(&loop) == 0);

  /* the manifest is in the journal */
  gy_journal_state_t st;
  REQUIRE(gy_journal_load(j, &st, 16, msg, sizeof(msg)) == 0);
  CHECK(st.nckpts == 1 && st.ckpts[0].step == 10);
  gy_journal_state_free(&st);
  sqlite3_close(db);
  gy_journal_close(j);
  gy_cstore_destroy(store);
}

/* ------------------------------ 2. the service and the fence ------------------------------ */

static atomic_int fence_entered, fence_release, fence_calls;

static pthread_mutex_t fence_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t fence_cv = PTHREAD_COND_INITIALIZER;

/* Lets the hanging fence answer. */
static void release_fence(void) {
  pthread_mutex_lock(&fence_mu);
  atomic_store(&fence_release, 1);
  pthread_cond_broadcast(&fence_cv);
  pthread_mutex_unlock(&fence_mu);
}

/* A store that does not answer until the test says so (runs on the service's writer thread):
 * it waits for release_fence(), 120 s at most. */
static int slow_fence(void *ud) {
  (void)ud;
  atomic_fetch_add(&fence_calls, 1);
  atomic_store(&fence_entered, 1);
  struct timespec until;
  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_sec += 120;
  pthread_mutex_lock(&fence_mu);
  while (!atomic_load(&fence_release))
    if (pthread_cond_timedwait(&fence_cv, &fence_mu, &until)) break;
  pthread_mutex_unlock(&fence_mu);
  return 1;
}

typedef struct {
  int port;
  atomic_int join_done, join_status, status_done, status_rc;
  atomic_int joined_before_release;
  pthread_t join_th, status_th;
  int status_started;
  gy_service_t *svc;
  int stopping;
  double t0;
} sctx_t;

static void *join_main(void *arg) {
  sctx_t *c = arg;
  char target[64], err[256];
  snprintf(target, sizeof(target), "127.0.0.1:%d", c->port);
  gy_rpc_client_t *cli = NULL;
  int st = -1;
  if (!gy_rpc_client_create(&cli, target, err, sizeof(err))) {
    Gyro__JoinRequest r = GYRO__JOIN_REQUEST__INIT;
    r.worker_id = "w0";
    r.host = "localhost";
    r.pid = 4242;
    size_t n = gyro__join_request__get_packed_size(&r), rn = 0;
    uint8_t *buf = malloc(n ? n : 1);
    gyro__join_request__pack(&r, buf);
    void *resp = NULL;
    int rc = gy_rpc_unary(cli, "/gyro.Worker/Join", NULL, NULL, buf, n, 120000, &resp, &rn, &st,
                          err, sizeof(err));
    if (rc) st = st ? st : -1;
    if (!atomic_load(&fence_release)) atomic_store(&c->joined_before_release, 1);
    free(resp);
    free(buf);
  }
  gy_rpc_client_destroy(cli);
  atomic_store(&c->join_status, st);
  atomic_store(&c->join_done, 1);
  return NULL;
}

static void *status_main(void *arg) {
  sctx_t *c = arg;
  char target[64], err[256];
  snprintf(target, sizeof(target), "127.0.0.1:%d", c->port);
  gy_rpc_client_t *cli = NULL;
  int rc = -1, st = -1;
  if (!gy_rpc_client_create(&cli, target, err, sizeof(err))) {
    uint8_t empty[1] = {0}; /* an Empty message: no bytes */
    size_t rn = 0;
    void *resp = NULL;
    rc = gy_rpc_unary(cli, "/gyro.Operator/Status", NULL, NULL, empty, 0, 60000, &resp, &rn, &st,
                      err, sizeof(err));
    free(resp);
  }
  gy_rpc_client_destroy(cli);
  atomic_store(&c->status_rc, rc);
  atomic_store(&c->status_done, 1);
  return NULL;
}

static void svc_down(void *ud) {
  (void)ud;
}

static void on_tick2(uv_timer_t *t) {
  sctx_t *c = t->data;
  /* while the fence hangs on the writer's thread, the loop answers a Status call */
  if (atomic_load(&fence_entered) && !c->status_started) {
    c->status_started = 1;
    pthread_create(&c->status_th, NULL, status_main, c);
  }
  if (atomic_load(&c->status_done) && !atomic_load(&fence_release)) {
    CHECK_MSG(!atomic_load(&c->join_done), "the Join was answered before the fence");
    release_fence();
  }
  if (!c->stopping &&
      ((atomic_load(&c->join_done) && atomic_load(&fence_release)) || now_s() - c->t0 > 150)) {
    c->stopping = 1;
    release_fence();
    uv_timer_stop(t);
    uv_close((uv_handle_t *)t, NULL);
    gy_service_shutdown(c->svc, svc_down, NULL);
  }
}

static void test_service_fence(const char *dir) {
  char url[512];
  snprintf(url, sizeof(url), "sqlite:%s/s.db", dir);
  gy_cstore_t *store = NULL;
  gy_journal_t *j = NULL;
  REQUIRE(gy_cstore_create(&store, url, NULL, msg, sizeof(msg)) == 0);
  REQUIRE(gy_journal_open(&j, store, "svc", msg, sizeof(msg)) == 0);
  uv_loop_t loop;
  uv_loop_init(&loop);
  gy_service_opts_t so = {.listen = "127.0.0.1:0",
                          .world = 1,
                          .tp = 1,
                          .window = 2,
                          .heartbeat_ms = 1000,
                          .lost_after_ms = 60000,
                          .steps = 10,
                          .journal = j,
                          .fence = slow_fence,
                          .fence_every_ms = 1};
  sctx_t c = {.t0 = now_s()};
  REQUIRE(gy_service_create(&c.svc, &loop, &so, msg, sizeof(msg)) == 0);
  c.port = gy_service_port(c.svc);
  pthread_create(&c.join_th, NULL, join_main, &c);
  uv_timer_t tick;
  uv_timer_init(&loop, &tick);
  tick.data = &c;
  uv_timer_start(&tick, on_tick2, 10, 10);
  uv_run(&loop, UV_RUN_DEFAULT);
  pthread_join(c.join_th, NULL);
  if (c.status_started) pthread_join(c.status_th, NULL);
  CHECK_MSG(c.status_started && atomic_load(&c.status_done), "no Status call was made");
  CHECK_EQ_INT(atomic_load(&c.status_rc), 0); /* answered while the fence hung */
  CHECK(!atomic_load(&c.joined_before_release));
  CHECK_EQ_INT(atomic_load(&c.join_status), 0); /* assigned once the fence answered */
  CHECK(atomic_load(&fence_calls) >= 1);
  gy_service_destroy(c.svc);
  CHECK(uv_loop_close(&loop) == 0);
  /* the events went to the journal from the writer's thread */
  gy_journal_state_t st;
  REQUIRE(gy_journal_load(j, &st, 64, msg, sizeof(msg)) == 0);
  CHECK_MSG(st.nevents >= 1, "%zu events in the journal", st.nevents);
  gy_journal_state_free(&st);
  gy_journal_close(j);
  gy_cstore_destroy(store);
}

int main(void) {
  char dir[] = "/tmp/gy_async_store_XXXXXX";
  REQUIRE(mkdtemp(dir));
  test_writer(dir);
  test_service_fence(dir);
  char cmd[600];
  snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
  if (system(cmd)) fprintf(stderr, "cannot remove %s\n", dir);
  GY_TEST_END();
}
