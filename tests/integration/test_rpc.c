/* test_rpc: a real gy_rpc server on a libuv loop (main thread) and clients (a driver thread)
 * over 127.0.0.1. Unary echo (bytes, empty), a handler answering later from a timer, unknown
 * method, oversized message, deadline, metadata, health check, concurrent unary callers, a
 * 10,000-message bidi echo in order (rate printed), server-side finish with a status, client
 * close seen by the server, a dead port, and server shutdown with streams open. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#include "common/err.h"
#include "common/rpc.h"
#include "tests/test.h"

#define STREAM_N 10000

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Polls cond every millisecond for up to ms; returns whether it became true. */
#define WAIT_FOR(cond, ms)                                                                         \
  ({                                                                                               \
    double t_end_ = now_s() + (ms) / 1000.0;                                                       \
    while (!(cond) && now_s() < t_end_) {                                                          \
      struct timespec d_ = {0, 1000000};                                                           \
      nanosleep(&d_, NULL);                                                                        \
    }                                                                                              \
    (cond);                                                                                        \
  })

/* ------------------------------------ server side ------------------------------------ */

static uv_loop_t loop;
static gy_rpc_server_t *server;
static int port;
static uv_async_t ctl; /* the driver asks the loop to shut the server down */
static atomic_int server_done;
static atomic_int echo_calls;
static atomic_int srv_open, srv_close, srv_close_ok, srv_close_cancelled, srv_close_other;
static atomic_int srv_send_after_finish; /* gy_rpc_send after finish returned GY_ECOMM */
static atomic_int srv_msgs;
static atomic_int held_cancelled; /* /t.T/Hold: the held call's client went away */

static void echo_cb(void *ud, gy_rpc_call_t *call, const uint8_t *req, size_t len) {
  (void)ud;
  atomic_fetch_add(&echo_calls, 1);
  gy_rpc_reply(call, GY_RPC_OK, NULL, req, len);
}

typedef struct {
  uv_timer_t t;
  gy_rpc_call_t *call;
  size_t len;
  uint8_t buf[64];
} later_t;

static void later_closed(uv_handle_t *h) {
  free(h->data);
}
static void later_fire(uv_timer_t *t) {
  later_t *l = t->data;
  gy_rpc_reply(l->call, GY_RPC_OK, NULL, l->buf, l->len);
  uv_close((uv_handle_t *)&l->t, later_closed);
}

/* Replies after ud milliseconds (a held call). */
static void later_cb(void *ud, gy_rpc_call_t *call, const uint8_t *req, size_t len) {
  later_t *l = calloc(1, sizeof(*l));
  if (!l) {
    gy_rpc_reply(call, GY_RPC_INTERNAL, "oom", NULL, 0);
    return;
  }
  l->call = call;
  l->len = len < sizeof(l->buf) ? len : sizeof(l->buf);
  memcpy(l->buf, req, l->len);
  uv_timer_init(&loop, &l->t);
  l->t.data = l;
  uv_update_time(&loop); /* the loop's cached time may be old when the call comes in */
  uv_timer_start(&l->t, later_fire, (uint64_t)(uintptr_t)ud, 0);
}

/* /t.T/Hold: holds the call until its client goes away, then releases it. */
static void hold_cancelled(void *ud, gy_rpc_call_t *call) {
  (void)ud;
  atomic_fetch_add(&held_cancelled, 1);
  gy_rpc_reply(call, GY_RPC_CANCELLED, "gone", NULL, 0);
}
static void hold_cb(void *ud, gy_rpc_call_t *call, const uint8_t *req, size_t len) {
  (void)ud, (void)req, (void)len;
  gy_rpc_call_on_cancel(call, hold_cancelled, NULL);
}

static void md_cb(void *ud, gy_rpc_call_t *call, const uint8_t *req, size_t len) {
  (void)ud, (void)req, (void)len;
  const char *v = gy_rpc_call_metadata(call, "authorization");
  const char *peer = gy_rpc_call_peer(call);
  if (strcmp(gy_rpc_call_method(call), "/t.T/Md") != 0 || !peer || !strstr(peer, "127.0.0.1"))
    gy_rpc_reply(call, GY_RPC_INTERNAL, "bad method or peer", NULL, 0);
  else if (!v)
    gy_rpc_reply(call, GY_RPC_UNAUTHENTICATED, "no authorization", NULL, 0);
  else
    gy_rpc_reply(call, GY_RPC_OK, NULL, v, strlen(v));
}

static void st_open(void *ud, gy_rpc_call_t *call) {
  (void)ud;
  int *n = calloc(1, sizeof(int));
  gy_rpc_call_set_data(call, n);
  atomic_fetch_add(&srv_open, 1);
}

static void st_message(void *ud, gy_rpc_call_t *call, const uint8_t *msg, size_t len) {
  (void)ud;
  int *n = gy_rpc_call_data(call);
  if (n) (*n)++;
  atomic_fetch_add(&srv_msgs, 1);
  if (len == 3 && memcmp(msg, "bye", 3) == 0) {
    gy_rpc_send(call, "last", 4);
    gy_rpc_finish(call, GY_RPC_OK, "done");
    if (gy_rpc_send(call, "x", 1) == GY_ECOMM) atomic_fetch_add(&srv_send_after_finish, 1);
  } else if (len == 4 && memcmp(msg, "fail", 4) == 0) {
    gy_rpc_finish(call, GY_RPC_FAILED_PRECONDITION, "bad hello");
  } else {
    gy_rpc_send(call, msg, len);
  }
}

static void st_close(void *ud, gy_rpc_call_t *call, int status) {
  (void)ud;
  free(gy_rpc_call_data(call));
  /* the outcome first, then the total the test waits on: once it sees the total, the outcome
   * is there too */
  if (status == GY_RPC_OK)
    atomic_fetch_add(&srv_close_ok, 1);
  else if (status == GY_RPC_CANCELLED)
    atomic_fetch_add(&srv_close_cancelled, 1);
  else
    atomic_fetch_add(&srv_close_other, 1);
  atomic_fetch_add(&srv_close, 1);
}

static void on_server_done(void *ud) {
  (void)ud;
  atomic_store(&server_done, 1);
  uv_close((uv_handle_t *)&ctl, NULL);
}

static void on_ctl(uv_async_t *h) {
  (void)h;
  gy_rpc_server_shutdown(server, on_server_done, NULL);
}

/* ------------------------------------ client side ------------------------------------ */

typedef struct {
  atomic_int nmsg;
  atomic_int order_bad;
  atomic_int closed;
  atomic_int after_close; /* callbacks after on_close */
  int status;
  char details[128];
  char last[16];
} cli_t;

static void cli_message(void *ud, const uint8_t *msg, size_t len) {
  cli_t *c = ud;
  if (atomic_load(&c->closed)) atomic_fetch_add(&c->after_close, 1);
  int n = atomic_load(&c->nmsg);
  if (len == 100) { /* a numbered message of the echo test */
    uint32_t idx;
    memcpy(&idx, msg, 4);
    if ((int)idx != n) atomic_fetch_add(&c->order_bad, 1);
  }
  size_t k = len < sizeof(c->last) - 1 ? len : sizeof(c->last) - 1;
  memcpy(c->last, msg, k);
  c->last[k] = '\0';
  atomic_fetch_add(&c->nmsg, 1);
}

static void cli_close(void *ud, int status, const char *details) {
  cli_t *c = ud;
  if (atomic_load(&c->closed)) atomic_fetch_add(&c->after_close, 1);
  c->status = status;
  snprintf(c->details, sizeof(c->details), "%s", details ? details : "");
  atomic_store(&c->closed, 1);
}

static const gy_rpc_cstream_cbs_t cli_cbs = {cli_message, cli_close};

typedef struct {
  gy_rpc_client_t *c;
  atomic_int ok;
} conc_t;

static void *conc_thread(void *arg) {
  conc_t *ct = arg;
  for (int i = 0; i < 500; i++) {
    char req[32], err[128];
    int n = snprintf(req, sizeof(req), "req-%d", i);
    void *resp = NULL;
    size_t rlen = 0;
    int st = -1;
    int rc = gy_rpc_unary(ct->c, "/t.T/Echo", NULL, NULL, req, (size_t)n, 5000, &resp, &rlen, &st,
                          err, sizeof(err));
    if (rc == 0 && rlen == (size_t)n && memcmp(resp, req, rlen) == 0) atomic_fetch_add(&ct->ok, 1);
    free(resp);
  }
  return NULL;
}

static void *driver(void *arg) {
  (void)arg;
  char target[64], err[256];
  snprintf(target, sizeof(target), "127.0.0.1:%d", port);
  gy_rpc_client_t *c = NULL;
  REQUIRE(gy_rpc_client_create(&c, target, err, sizeof(err)) == 0);
  void *resp = NULL;
  size_t rlen = 0;
  int st = -1, rc;

  /* Unary echo: bytes (with a NUL inside) and an empty message. */
  const uint8_t bytes[] = {1, 2, 0, 255, 7};
  rc = gy_rpc_unary(c, "/t.T/Echo", NULL, NULL, bytes, sizeof(bytes), 5000, &resp, &rlen, &st, err,
                    sizeof(err));
  CHECK_MSG(rc == 0, "echo: %d %s", rc, err);
  CHECK_EQ_INT(st, GY_RPC_OK);
  CHECK(rlen == sizeof(bytes) && resp && memcmp(resp, bytes, rlen) == 0);
  free(resp);
  rc = gy_rpc_unary(c, "/t.T/Echo", NULL, NULL, NULL, 0, 5000, &resp, &rlen, &st, err, sizeof(err));
  CHECK_EQ_INT(rc, 0);
  CHECK(resp == NULL && rlen == 0);

  /* A handler that holds the call and answers from a timer 50 ms later. */
  double t0 = now_s();
  rc =
      gy_rpc_unary(c, "/t.T/Later", NULL, NULL, "hi", 2, 5000, &resp, &rlen, &st, err, sizeof(err));
  double dt = now_s() - t0;
  CHECK_EQ_INT(rc, 0);
  CHECK(rlen == 2 && resp && memcmp(resp, "hi", 2) == 0);
  CHECK_MSG(dt >= 0.045, "later answered after %.3f s", dt);
  free(resp);

  /* Unknown method. */
  rc = gy_rpc_unary(c, "/t.T/Nope", NULL, NULL, "x", 1, 5000, &resp, &rlen, &st, err, sizeof(err));
  CHECK_EQ_INT(rc, GY_ECOMM);
  CHECK_EQ_INT(st, GY_RPC_UNIMPLEMENTED);
  CHECK_MSG(strstr(err, "/t.T/Nope") != NULL, "details: %s", err);

  /* Oversized: the server accepts 64 KiB, the client sends 100 KiB; the handler never runs. */
  int before = atomic_load(&echo_calls);
  size_t big = 100 * 1024;
  uint8_t *bigbuf = calloc(1, 5u << 20);
  REQUIRE(bigbuf);
  rc = gy_rpc_unary(c, "/t.T/Echo", NULL, NULL, bigbuf, big, 5000, &resp, &rlen, &st, err,
                    sizeof(err));
  CHECK_EQ_INT(rc, GY_ECOMM);
  CHECK_MSG(st == GY_RPC_RESOURCE_EXHAUSTED, "oversized: status %d (%s)", st, err);
  CHECK_EQ_INT(atomic_load(&echo_calls), before);
  /* Over the client's own 4 MiB limit: refused locally with the same status. */
  rc = gy_rpc_unary(c, "/t.T/Echo", NULL, NULL, bigbuf, 5u << 20, 5000, &resp, &rlen, &st, err,
                    sizeof(err));
  CHECK_EQ_INT(rc, GY_ECOMM);
  CHECK_MSG(st == GY_RPC_RESOURCE_EXHAUSTED, "client-side oversized: status %d (%s)", st, err);
  free(bigbuf);
  /* The server is still fine. */
  rc = gy_rpc_unary(c, "/t.T/Echo", NULL, NULL, "ok", 2, 5000, &resp, &rlen, &st, err, sizeof(err));
  CHECK_EQ_INT(rc, 0);
  free(resp);

  /* Deadline: the handler answers after 2 s, the caller waits 100 ms (the margins are for a
   * loaded machine: gRPC's timer and this thread's wake-up can run late). */
  t0 = now_s();
  rc = gy_rpc_unary(c, "/t.T/Slow", NULL, NULL, "s", 1, 100, &resp, &rlen, &st, err, sizeof(err));
  dt = now_s() - t0;
  CHECK_EQ_INT(rc, GY_ETIMEDOUT);
  CHECK_EQ_INT(st, GY_RPC_DEADLINE_EXCEEDED);
  CHECK_MSG(dt < 1.5, "deadline took %.3f s", dt);

  /* A held call whose client's deadline passes: the handler hears of it (once) and releases
   * the call; the server goes on serving. */
  rc = gy_rpc_unary(c, "/t.T/Hold", NULL, NULL, "h", 1, 100, &resp, &rlen, &st, err, sizeof(err));
  CHECK_EQ_INT(st, GY_RPC_DEADLINE_EXCEEDED);
  for (t0 = now_s(); now_s() - t0 < 10 && !atomic_load(&held_cancelled);)
    usleep(10000);
  CHECK_EQ_INT(atomic_load(&held_cancelled), 1);

  /* Metadata reaches the handler; its absence is seen too. */
  rc = gy_rpc_unary(c, "/t.T/Md", "authorization", "Bearer s3cret", "", 0, 5000, &resp, &rlen, &st,
                    err, sizeof(err));
  CHECK_MSG(rc == 0, "md: %d %s", rc, err);
  CHECK(rlen == 13 && resp && memcmp(resp, "Bearer s3cret", 13) == 0);
  free(resp);
  rc = gy_rpc_unary(c, "/t.T/Md", NULL, NULL, "", 0, 5000, &resp, &rlen, &st, err, sizeof(err));
  CHECK_EQ_INT(rc, GY_ECOMM);
  CHECK_EQ_INT(st, GY_RPC_UNAUTHENTICATED);
  CHECK_MSG(strcmp(err, "no authorization") == 0, "details: %s", err);

  /* Health check: HealthCheckResponse{status: SERVING}. */
  rc = gy_rpc_unary(c, "/grpc.health.v1.Health/Check", NULL, NULL, "", 0, 5000, &resp, &rlen, &st,
                    err, sizeof(err));
  CHECK_EQ_INT(rc, 0);
  CHECK(rlen == 2 && resp && ((uint8_t *)resp)[0] == 0x08 && ((uint8_t *)resp)[1] == 0x01);
  free(resp);

  /* Concurrent unary callers on one client. */
  conc_t ct = {.c = c};
  pthread_t th[4];
  t0 = now_s();
  for (int i = 0; i < 4; i++)
    pthread_create(&th[i], NULL, conc_thread, &ct);
  for (int i = 0; i < 4; i++)
    pthread_join(th[i], NULL);
  dt = now_s() - t0;
  CHECK_EQ_INT(atomic_load(&ct.ok), 2000);
  printf("unary: 2000 calls from 4 threads in %.3f s (%.0f calls/s)\n", dt, 2000 / dt);

  /* Bidi echo of STREAM_N messages, in order; then "bye": the server sends "last" and finishes
   * OK with details "done". */
  static cli_t s1;
  gy_rpc_cstream_t *cs = NULL;
  rc = gy_rpc_cstream_open(c, "/t.T/Chat", NULL, NULL, &cli_cbs, &s1, &cs, err, sizeof(err));
  REQUIRE(rc == 0);
  uint8_t msg[100];
  memset(msg, 'm', sizeof(msg));
  t0 = now_s();
  for (uint32_t i = 0; i < STREAM_N; i++) {
    memcpy(msg, &i, 4);
    if (gy_rpc_cstream_send(cs, msg, sizeof(msg)) != 0) {
      CHECK(!"cstream_send failed");
      break;
    }
  }
  CHECK(WAIT_FOR(atomic_load(&s1.nmsg) == STREAM_N, 15000));
  dt = now_s() - t0;
  printf("stream: %d messages of %zu bytes echoed in %.3f s (%.0f messages/s each way)\n", STREAM_N,
         sizeof(msg), dt, STREAM_N / dt);
  CHECK_EQ_INT(atomic_load(&s1.order_bad), 0);
  CHECK_EQ_INT(gy_rpc_cstream_send(cs, "bye", 3), 0);
  CHECK(WAIT_FOR(atomic_load(&s1.closed), 5000));
  CHECK_EQ_INT(s1.status, GY_RPC_OK);
  CHECK_MSG(strcmp(s1.details, "done") == 0, "details '%s'", s1.details);
  CHECK_MSG(strcmp(s1.last, "last") == 0, "last message '%s'", s1.last);
  CHECK_EQ_INT(atomic_load(&s1.nmsg), STREAM_N + 1);
  CHECK(WAIT_FOR(atomic_load(&srv_close) == 1, 5000));
  CHECK_EQ_INT(atomic_load(&srv_close_ok), 1);
  CHECK_EQ_INT(atomic_load(&srv_send_after_finish), 1);
  CHECK_EQ_INT(gy_rpc_cstream_send(cs, "more", 4), GY_ECOMM);
  gy_rpc_cstream_close(cs);
  CHECK_EQ_INT(atomic_load(&s1.after_close), 0);

  /* Server-side finish with an error status. */
  static cli_t s2;
  rc = gy_rpc_cstream_open(c, "/t.T/Chat", NULL, NULL, &cli_cbs, &s2, &cs, err, sizeof(err));
  REQUIRE(rc == 0);
  gy_rpc_cstream_send(cs, "fail", 4);
  CHECK(WAIT_FOR(atomic_load(&s2.closed), 5000));
  CHECK_EQ_INT(s2.status, GY_RPC_FAILED_PRECONDITION);
  CHECK_MSG(strcmp(s2.details, "bad hello") == 0, "details '%s'", s2.details);
  gy_rpc_cstream_close(cs);
  CHECK(WAIT_FOR(atomic_load(&srv_close) == 2, 5000));
  CHECK_EQ_INT(atomic_load(&srv_close_other), 1);

  /* Client close: the server's on_close runs with CANCELLED; the client's on_close ran once. */
  static cli_t s3;
  rc = gy_rpc_cstream_open(c, "/t.T/Chat", NULL, NULL, &cli_cbs, &s3, &cs, err, sizeof(err));
  REQUIRE(rc == 0);
  gy_rpc_cstream_send(cs, "ping-ping-ping", 14);
  CHECK(WAIT_FOR(atomic_load(&s3.nmsg) == 1, 5000));
  gy_rpc_cstream_close(cs);
  CHECK_EQ_INT(atomic_load(&s3.closed), 1);
  CHECK(WAIT_FOR(atomic_load(&srv_close) == 3, 5000));
  CHECK_EQ_INT(atomic_load(&srv_close_cancelled), 1);

  /* A stream to an unknown method ends UNIMPLEMENTED. */
  static cli_t s4;
  rc = gy_rpc_cstream_open(c, "/t.T/NoStream", NULL, NULL, &cli_cbs, &s4, &cs, err, sizeof(err));
  REQUIRE(rc == 0);
  CHECK(WAIT_FOR(atomic_load(&s4.closed), 5000));
  CHECK_EQ_INT(s4.status, GY_RPC_UNIMPLEMENTED);
  gy_rpc_cstream_close(cs);

  /* A dead port: UNAVAILABLE well within the deadline. */
  gy_rpc_client_t *dead = NULL;
  REQUIRE(gy_rpc_client_create(&dead, "127.0.0.1:1", err, sizeof(err)) == 0);
  t0 = now_s();
  rc = gy_rpc_unary(dead, "/t.T/Echo", NULL, NULL, "x", 1, 3000, &resp, &rlen, &st, err,
                    sizeof(err));
  dt = now_s() - t0;
  CHECK_EQ_INT(rc, GY_ECOMM);
  CHECK_EQ_INT(st, GY_RPC_UNAVAILABLE);
  CHECK_MSG(dt < 2.5, "dead port took %.3f s", dt);
  gy_rpc_client_destroy(dead);

  /* Shutdown with three streams open: every on_close runs on both sides, nothing hangs. The
   * last stream is left for gy_rpc_client_destroy to close. */
  static cli_t sh[3];
  gy_rpc_cstream_t *shs[3];
  int opened = atomic_load(&srv_open), closed = atomic_load(&srv_close);
  for (int i = 0; i < 3; i++) {
    REQUIRE(gy_rpc_cstream_open(c, "/t.T/Chat", NULL, NULL, &cli_cbs, &sh[i], &shs[i], err,
                                sizeof(err)) == 0);
    gy_rpc_cstream_send(shs[i], "hello-hello", 11);
  }
  for (int i = 0; i < 3; i++)
    CHECK(WAIT_FOR(atomic_load(&sh[i].nmsg) == 1, 5000));
  CHECK_EQ_INT(atomic_load(&srv_open), opened + 3);
  uv_async_send(&ctl);
  CHECK(WAIT_FOR(atomic_load(&server_done), 5000));
  CHECK_EQ_INT(atomic_load(&srv_close), closed + 3);
  for (int i = 0; i < 3; i++) {
    CHECK(WAIT_FOR(atomic_load(&sh[i].closed), 5000));
    CHECK_MSG(sh[i].status != GY_RPC_OK, "stream %d closed with %d", i, sh[i].status);
    printf("after shutdown: stream %d closed with status %d (%s)\n", i, sh[i].status,
           sh[i].details);
  }
  CHECK_EQ_INT(gy_rpc_cstream_send(shs[0], "late", 4), GY_ECOMM);
  gy_rpc_cstream_close(shs[0]);
  gy_rpc_cstream_close(shs[1]);
  gy_rpc_client_destroy(c);
  for (int i = 0; i < 3; i++)
    CHECK_EQ_INT(atomic_load(&sh[i].after_close), 0);
  return NULL;
}

int main(void) {
  char err[256];
  REQUIRE(uv_loop_init(&loop) == 0);
  gy_rpc_server_opts_t opts = {.bind = "127.0.0.1:0", .max_message = 64 * 1024, .health = 1};
  int rc = gy_rpc_server_create(&server, &loop, &opts, &port, err, sizeof(err));
  REQUIRE(rc == 0);
  CHECK(port > 0);
  REQUIRE(gy_rpc_server_add_unary(server, "/t.T/Echo", echo_cb, NULL) == 0);
  REQUIRE(gy_rpc_server_add_unary(server, "/t.T/Later", later_cb, (void *)(uintptr_t)50) == 0);
  REQUIRE(gy_rpc_server_add_unary(server, "/t.T/Slow", later_cb, (void *)(uintptr_t)2000) == 0);
  REQUIRE(gy_rpc_server_add_unary(server, "/t.T/Md", md_cb, NULL) == 0);
  REQUIRE(gy_rpc_server_add_unary(server, "/t.T/Hold", hold_cb, NULL) == 0);
  CHECK_EQ_INT(gy_rpc_server_add_unary(server, "/t.T/Echo", echo_cb, NULL), GY_EINVAL);
  gy_rpc_stream_cbs_t cbs = {st_open, st_message, st_close};
  REQUIRE(gy_rpc_server_add_stream(server, "/t.T/Chat", &cbs, NULL) == 0);
  REQUIRE(uv_async_init(&loop, &ctl, on_ctl) == 0);
  REQUIRE(gy_rpc_server_start(server) == 0);

  /* A second server on the same port cannot bind. */
  gy_rpc_server_t *other = NULL;
  char bind[64];
  snprintf(bind, sizeof(bind), "127.0.0.1:%d", port);
  gy_rpc_server_opts_t o2 = {.bind = bind};
  CHECK(gy_rpc_server_create(&other, &loop, &o2, NULL, err, sizeof(err)) != 0);
  CHECK(other == NULL);
  CHECK_MSG(strstr(err, bind) != NULL, "bind error: %s", err);

  pthread_t th;
  REQUIRE(pthread_create(&th, NULL, driver, NULL) == 0);
  uv_run(&loop, UV_RUN_DEFAULT);
  pthread_join(th, NULL);
  gy_rpc_server_destroy(server);
  CHECK_EQ_INT(uv_loop_close(&loop), 0);
  CHECK_EQ_INT(atomic_load(&srv_open), atomic_load(&srv_close));
  GY_TEST_END();
}
