/*
 * store_ops: the controller's write pattern on the state store, on etcd and on SQLite.
 *
 * One operation is what the controller does on every state transition: one transaction,
 * guarded by its fencing token (compare: the leader key's create_revision == token), that puts
 * the run state (a transition record, ~200 bytes of JSON), appends an event (~300 bytes) and
 * writes a checkpoint manifest (~450 bytes). Operations are issued one at a time (the
 * controller's writes are sequential), each timed from call to return.
 *
 * Figures per back end: ops/s and p50/p99 latency of each of --runs runs (--ops operations
 * each), and their median. Then fail-over: --failover trials of "leader process SIGKILLed ->
 * standby process elected" (both are this binary re-executed as electors, each with its own
 * store handle), with the lease TTL (--ttl) stated; median and worst.
 *
 * etcd is Debian's etcd-server, started here on loopback in a temp folder (default flags:
 * every write fsynced); SQLite is a file in a temp folder (WAL, synchronous=FULL: every commit
 * fsynced). Fatal checks (DIE) are fine here: this is a benchmark, not library code.
 *
 * Usage: store_ops [--ops N] [--runs R] [--ttl S] [--failover K] [--only etcd|sqlite]
 */
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/err.h"
#include "controller/leader.h"
#include "controller/store.h"
#include "tests/lib/etcd_proc.h"

#define DIE(...)                                                                                   \
  do {                                                                                             \
    fprintf(stderr, "store_ops: " __VA_ARGS__);                                                    \
    fputc('\n', stderr);                                                                           \
    exit(1);                                                                                       \
  } while (0)

static char msg[1024];

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double pct(double *v, int n, double p) {
  qsort(v, (size_t)n, sizeof(double), cmp_double);
  int i = (int)(p * (n - 1) + 0.5);
  return v[i];
}

static double median3(double *v, int n) {
  return pct(v, n, 0.5);
}

/* --------------------------------------- write pattern --------------------------------------- */

typedef struct {
  double ops_s, p50_ms, p99_ms;
} run_t;

static run_t run_ops(gy_cstore_t *s, const char *run, int nops) {
  char leader[128], state[128];
  snprintf(leader, sizeof(leader), "/gyro/%s/leader", run);
  snprintf(state, sizeof(state), "/gyro/%s/state", run);
  int64_t token = 0;
  if (gy_cstore_put(s, leader, "bench", 5, 0, &token, 0, msg, sizeof(msg)) < 0) DIE("%s", msg);
  double *lat = malloc(sizeof(double) * (size_t)nops);
  char sv[512], ev[512], cv[640], ek[128], ck[128];
  double t_start = gy_etcd_now();
  for (int i = 0; i < nops; i++) {
    int step = 1000 + i;
    int ls = snprintf(sv, sizeof(sv),
                      "{\"state\":\"TRAIN\",\"prev\":\"RESUME\",\"step\":%d,\"generation\":3,"
                      "\"reason\":\"training restarted from checkpoint %d\",\"token\":%lld,"
                      "\"repairs\":1,\"time\":\"2026-11-23T12:00:00Z\",\"horizon\":%d}",
                      step, step - 50, (long long)token, step + 8);
    int le = snprintf(ev, sizeof(ev),
                      "{\"seq\":%d,\"kind\":\"checkpoint\",\"step\":%d,\"state\":\"TRAIN\","
                      "\"message\":\"checkpoint %d written by every rank (4 files, 10.3 MB), "
                      "crc32c verified; the ring holds 2 snapshots\",\"evidence\":{\"ranks\":4,"
                      "\"bytes\":10800000,\"ms\":412},\"time\":\"2026-11-23T12:00:00Z\"}",
                      i, step, step);
    int lc = snprintf(cv, sizeof(cv),
                      "{\"step\":%d,\"generation\":3,\"layout\":{\"tp\":2,\"dp\":2},\"files\":["
                      "{\"rank\":0,\"path\":\"ckpt/step%08d-r0.gyck\",\"bytes\":2700000,\"crc\":"
                      "\"1f2e3d4c\"},{\"rank\":1,\"path\":\"ckpt/step%08d-r1.gyck\",\"bytes\":"
                      "2700000,\"crc\":\"5a6b7c8d\"},{\"rank\":2,\"path\":\"ckpt/step%08d-r2."
                      "gyck\",\"bytes\":2700000,\"crc\":\"9e0f1a2b\"},{\"rank\":3,\"path\":"
                      "\"ckpt/step%08d-r3.gyck\",\"bytes\":2700000,\"crc\":\"3c4d5e6f\"}]}",
                      step, step, step, step, step);
    snprintf(ek, sizeof(ek), "/gyro/%s/events/%012d", run, i);
    snprintf(ck, sizeof(ck), "/gyro/%s/checkpoints/%012d", run, step);
    gy_cstore_cmp_t c = {
        .key = leader, .target = GY_CSTORE_CMP_CREATE, .op = GY_CSTORE_EQ, .rev = token};
    gy_cstore_op_t ops[3] = {
        {.type = GY_CSTORE_OP_PUT, .key = state, .value = sv, .value_len = (size_t)ls},
        {.type = GY_CSTORE_OP_PUT, .key = ek, .value = ev, .value_len = (size_t)le},
        {.type = GY_CSTORE_OP_PUT, .key = ck, .value = cv, .value_len = (size_t)lc}};
    gy_cstore_txn_result_t r;
    double t0 = gy_etcd_now();
    if (gy_cstore_txn(s, &c, 1, ops, 3, NULL, 0, &r, 10000, msg, sizeof(msg)) < 0)
      DIE("txn: %s", msg);
    lat[i] = (gy_etcd_now() - t0) * 1000.0;
    if (!r.succeeded) DIE("txn: the fencing compare failed");
    gy_cstore_txn_clear(&r);
  }
  double wall = gy_etcd_now() - t_start;
  run_t out = {nops / wall, pct(lat, nops, 0.5), pct(lat, nops, 0.99)};
  free(lat);
  return out;
}

/* ------------------------------------------ fail-over ------------------------------------------
 */

static void el_elected(void *ud, int64_t token) {
  (void)ud;
  printf("elected %lld\n", (long long)token);
  fflush(stdout);
}

static int elector_main(char **argv) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, NULL);
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  gy_cstore_t *s = NULL;
  if (gy_cstore_create(&s, argv[2], NULL, msg, sizeof(msg)) < 0) DIE("elector: %s", msg);
  gy_leader_opts_t o = {
      .store = s, .run = argv[3], .id = argv[4], .ttl_s = atoi(argv[5]), .on_elected = el_elected};
  gy_leader_t *l = NULL;
  if (gy_leader_start(&l, &o, msg, sizeof(msg)) < 0) DIE("elector: %s", msg);
  printf("started\n");
  fflush(stdout);
  int sig = 0;
  sigwait(&set, &sig);
  gy_leader_stop(l);
  gy_cstore_destroy(s);
  return 0;
}

typedef struct {
  pid_t pid;
  int fd; /* the elector's stdout */
  char buf[1024];
  size_t len;
} el_t;

static void spawn(el_t *e, const char *url, const char *run, const char *id, int ttl) {
  int p[2];
  if (pipe(p) != 0) DIE("pipe");
  fflush(stdout);
  pid_t pid = fork();
  if (pid < 0) DIE("fork");
  if (pid == 0) {
    dup2(p[1], STDOUT_FILENO);
    close(p[0]);
    close(p[1]);
    char t[16];
    snprintf(t, sizeof(t), "%d", ttl);
    execl("/proc/self/exe", "store_ops", "--elector", url, run, id, t, (char *)NULL);
    _exit(127);
  }
  close(p[1]);
  memset(e, 0, sizeof(*e));
  e->pid = pid;
  e->fd = p[0];
}

/* Waits (up to timeout_s) for a line starting with word. Lines are split from our own buffer
 * (stdio's would hide a second line already read from the pipe from poll). */
static int wait_for(el_t *e, const char *word, double timeout_s) {
  double end = gy_etcd_now() + timeout_s;
  for (;;) {
    char *nl;
    while ((nl = memchr(e->buf, '\n', e->len))) {
      size_t l = (size_t)(nl - e->buf);
      int hit = !strncmp(e->buf, word, strlen(word));
      memmove(e->buf, nl + 1, e->len - l - 1);
      e->len -= l + 1;
      if (hit) return 1;
    }
    double left = end - gy_etcd_now();
    if (left <= 0 || e->len == sizeof(e->buf)) return 0;
    struct pollfd pf = {e->fd, POLLIN, 0};
    if (poll(&pf, 1, (int)(left * 1000) + 1) <= 0) continue;
    ssize_t got = read(e->fd, e->buf + e->len, sizeof(e->buf) - e->len);
    if (got <= 0) return 0;
    e->len += (size_t)got;
  }
}

static void reap(el_t *e) {
  if (e->pid > 0) {
    kill(e->pid, SIGKILL);
    waitpid(e->pid, NULL, 0);
    e->pid = 0;
  }
  if (e->fd > 0) close(e->fd);
  e->fd = -1;
}

static double failover(const char *url, int trial, int ttl) {
  char run[32];
  snprintf(run, sizeof(run), "failover%d", trial);
  el_t a, b;
  spawn(&a, url, run, "A", ttl);
  if (!wait_for(&a, "elected", 30.0)) DIE("fail-over: the first elector was not elected");
  spawn(&b, url, run, "B", ttl);
  if (!wait_for(&b, "started", 10.0)) DIE("fail-over: the standby did not start");
  usleep(500000); /* the standby campaigned and watches the key */
  double t0 = gy_etcd_now();
  kill(a.pid, SIGKILL);
  waitpid(a.pid, NULL, 0);
  a.pid = 0;
  if (!wait_for(&b, "elected", ttl + 30.0)) DIE("fail-over: the standby was not elected");
  double dt = gy_etcd_now() - t0;
  reap(&a);
  reap(&b);
  return dt;
}

/* ---------------------------------------------- main
 * ---------------------------------------------- */

static void bench(const char *name, const char *url, int nops, int runs, int ttl, int trials) {
  gy_cstore_t *s = NULL;
  if (gy_cstore_create(&s, url, NULL, msg, sizeof(msg)) < 0) DIE("%s", msg);
  /* warm-up: connection, first pages */
  run_ops(s, "warmup", 50);
  double ops[16], p50[16], p99[16];
  for (int r = 0; r < runs; r++) {
    char run[32];
    snprintf(run, sizeof(run), "bench%d", r);
    run_t x = run_ops(s, run, nops);
    ops[r] = x.ops_s;
    p50[r] = x.p50_ms;
    p99[r] = x.p99_ms;
    printf("%-6s run %d: %d txns, %.0f ops/s, p50 %.2f ms, p99 %.2f ms\n", name, r + 1, nops,
           x.ops_s, x.p50_ms, x.p99_ms);
    fflush(stdout);
  }
  gy_cstore_destroy(s);
  double fo[16];
  for (int t = 0; t < trials; t++) {
    fo[t] = failover(url, t, ttl);
    printf("%-6s fail-over %d: leader SIGKILLed -> standby elected in %.2f s (TTL %d s)\n", name,
           t + 1, fo[t], ttl);
    fflush(stdout);
  }
  double worst = 0;
  for (int t = 0; t < trials; t++)
    worst = fo[t] > worst ? fo[t] : worst;
  printf("RESULT %-6s median of %d runs: %.0f ops/s, p50 %.2f ms, p99 %.2f ms; fail-over "
         "(TTL %d s) median %.2f s, worst %.2f s over %d trials\n",
         name, runs, median3(ops, runs), median3(p50, runs), median3(p99, runs), ttl,
         trials ? median3(fo, trials) : 0.0, worst, trials);
  fflush(stdout);
}

/* The temp folder goes on every exit, a failed REQUIRE (exit 1) included. */
static char tmp_dir[64];
static void remove_tmp(void) {
  if (!tmp_dir[0]) return;
  char cmd[100];
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp_dir);
  if (system(cmd) != 0) fprintf(stderr, "cannot remove %s\n", tmp_dir);
  tmp_dir[0] = 0;
}

int main(int argc, char **argv) {
  if (argc == 6 && !strcmp(argv[1], "--elector")) return elector_main(argv);
  int nops = 1000, runs = 3, ttl = 2, trials = 3;
  const char *only = NULL;
  for (int i = 1; i < argc; i++) {
    if (i + 1 < argc && !strcmp(argv[i], "--ops"))
      nops = atoi(argv[++i]);
    else if (i + 1 < argc && !strcmp(argv[i], "--runs"))
      runs = atoi(argv[++i]);
    else if (i + 1 < argc && !strcmp(argv[i], "--ttl"))
      ttl = atoi(argv[++i]);
    else if (i + 1 < argc && !strcmp(argv[i], "--failover"))
      trials = atoi(argv[++i]);
    else if (i + 1 < argc && !strcmp(argv[i], "--only"))
      only = argv[++i];
    else
      DIE("usage: store_ops [--ops N] [--runs R] [--ttl S] [--failover K] [--only etcd|sqlite]");
  }
  if (nops < 10 || runs < 1 || runs > 16 || ttl < 1 || trials < 0 || trials > 16)
    DIE("--ops >= 10, --runs 1..16, --ttl >= 1, --failover 0..16");
  printf("store_ops: %d txns per run (3 puts of ~200/300/450 bytes, fenced), %d runs, "
         "fail-over TTL %d s x %d\n",
         nops, runs, ttl, trials);
  char tmp[] = "/tmp/gyro-store-bench.XXXXXX";
  if (!mkdtemp(tmp)) DIE("mkdtemp");
  snprintf(tmp_dir, sizeof(tmp_dir), "%s", tmp);
  atexit(remove_tmp);
  if (!only || !strcmp(only, "sqlite")) {
    char url[300];
    snprintf(url, sizeof(url), "sqlite:%s/store.db", tmp);
    bench("sqlite", url, nops, runs, ttl, trials);
  }
  if (!only || !strcmp(only, "etcd")) {
    static gy_etcd_proc_t e;
    if (gy_etcd_proc_init(&e) < 0 || gy_etcd_proc_start(&e, NULL) < 0) DIE("cannot start etcd");
    bench("etcd", e.url, nops, runs, ttl, trials);
  }
  remove_tmp();
  return 0;
}
