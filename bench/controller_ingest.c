/*
 * controller_ingest: how many step reports a gyro-controller ingests per second, and how fast
 * it turns "every rank reported step s" into "the grant for s + window".
 *
 * Two modes:
 *   throughput (default): a closed loop; every rank reports each step as soon as its grant
 *     allows (up to `window` reports in flight per rank). Measures the rate the controller
 *     sustains; its latency figures include the queue this loop builds on purpose.
 *   paced (--step-ms T): ranks behave like real workers with a step time of T ms. The report of
 *     step s is due at T0 + (s + 1) * T for every rank; a rank sends it when it is due and it
 *     holds a grant covering s (s < horizon), else it parks until the grant comes (counted as a
 *     stall). Offered load = ranks / T reports per second; nothing queues unless the
 *     controller falls behind. Reports are sent by one pacer thread per client channel.
 *
 * The bench starts gyro-controller itself (a config of world N, a tiny model nobody trains,
 * lost_after_ms long enough that no simulated rank is declared lost), then simulates N ranks
 * from this one process: each joins (/gyro.Worker/Join, one blocking call per rank on its own
 * thread, since the controller answers only when all N have joined), opens its session stream
 * (/gyro.Worker/Session), says Hello and from then on sends a StepReport (three channels, four
 * worst samples: the size of a real worker's report) for every step its grant allows, as fast
 * as the grants come. Ranks are spread over --clients gRPC channels; each channel's callbacks
 * run on its own completion-queue thread, which is where reports are sent from.
 *
 * Measured, after --warmup seconds, over --seconds seconds:
 *   - reports/s: reports sent in the interval / its length. The loop is closed (a rank sends
 *     only what its grant covers, and a grant needs every rank's report), so this is the rate
 *     the controller sustains, not the rate it is offered.
 *   - grant latency of step s: from the moment the last rank's report of step s was sent to
 *     the moment the grant with horizon > s + window (the grant that lets step s + window run)
 *     was received by that same last rank ("last": the figure, one clock, one rank),
 *     by the first rank to get it ("first") and by every rank ("all"); p50 and p99 over the
 *     steps whose last report was sent in the interval. "Last" is the rank whose count of step
 *     s came last (counted just before its send).
 *   - controller CPU: its user + system time over the interval (/proc/PID/stat), in cores and
 *     in microseconds per report.
 *
 * Invariants: per-rank state is touched only by the callbacks of its channel (one thread);
 * per-step counters are atomics indexed by step (MAX_STEPS of them: a run that would go past is
 * cut there). Fatal checks (CHECK) are fine here: this is a benchmark, not library code.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/err.h"
#include "common/rpc.h"
#include "proto/contract.h"
#include "wire/agent_wire.h"

#define CHECK(cond, ...)                                                                           \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      fprintf(stderr, "controller_ingest: " __VA_ARGS__);                                          \
      fputc('\n', stderr);                                                                         \
      exit(1);                                                                                     \
    }                                                                                              \
  } while (0)

enum { MAX_STEPS = 1 << 20 };

typedef struct {
  int idx;
  gy_rpc_client_t *cl;
  _Atomic(gy_rpc_cstream_t *) s;
  uint64_t gen;
  int rank;
  char session[128];
  int64_t done;            /* steps reported (the sender's thread only) */
  _Atomic int64_t horizon; /* newest grant (written by the channel's callback thread) */
  int64_t parked_step;     /* paced: the step this rank last counted a stall for */
  int closed;
} sim_t;

static struct {
  int n, window, clients;
  const char *addr;
  sim_t *sims;
  atomic_int *sent;        /* ranks that sent step s */
  atomic_llong *t_sent;    /* latest send time of step s (ns) */
  atomic_int *granted;     /* ranks that received a grant covering s + window */
  atomic_llong *t_first;   /* first such receipt (ns) */
  atomic_llong *t_all;     /* last such receipt (ns) */
  atomic_int *last_rank;   /* the rank whose report of s was counted last */
  atomic_llong *t_last;    /* when that rank sent it (ns) */
  atomic_llong *t_at_last; /* when the grant covering s + window reached that rank (ns) */
  double step_ms;          /* paced mode: the simulated step time (0: throughput mode) */
  int64_t start_step;
  int64_t t0_pace;     /* paced mode: the step clock's origin (ns) */
  atomic_llong stalls; /* paced mode: (rank, step) pairs that waited for a grant */
  atomic_llong total_sent;
  atomic_int closed;
  atomic_int close_status;
  atomic_int stop;
} B;

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void atomic_max(atomic_llong *a, long long v) {
  long long cur = atomic_load(a);
  while (cur < v && !atomic_compare_exchange_weak(a, &cur, v)) {
  }
}

/* ------------------------------------ one simulated rank ------------------------------------ */

static void send_report(sim_t *r, gy_rpc_cstream_t *s, int64_t step) {
  static const char *names[3] = {"zh", "en", "code"};
  gy_agent_channel_t ch[3];
  gy_agent_sample_t top[4];
  for (int c = 0; c < 3; c++)
    ch[c] = (gy_agent_channel_t){names[c], 1500.0 + step * 0.01 + c, 384, 0};
  for (int k = 0; k < 4; k++)
    top[k] =
        (gy_agent_sample_t){(uint64_t)step * 8 + (uint64_t)k, names[k % 3], 5.0f - 0.1f * (float)k};
  gy_agent_report_t rep = {.step = step,
                           .loss = 3.9 - step * 1e-4,
                           .channels = ch,
                           .nchannels = 3,
                           .grad_norm = 0.8,
                           .grad_norm_shallow = 0.5,
                           .grad_norm_deep = 0.6,
                           .update_ratio = 1e-3,
                           .lr = 1e-3,
                           .step_ms = 10.0,
                           .tokens_per_s = 100000.0,
                           .top = top,
                           .ntop = 4};
  uint8_t *buf;
  size_t len;
  CHECK(!gy_wire_agent_report_encode(r->gen, r->rank, &rep, &buf, &len), "report not encoded");
  /* Counted before the send: the grant it may complete cannot arrive before the count. */
  int64_t t = now_ns();
  atomic_fetch_add(&B.total_sent, 1);
  if (step < MAX_STEPS) {
    atomic_max(&B.t_sent[step], t);
    if (atomic_fetch_add(&B.sent[step], 1) == B.n - 1) {
      atomic_store(&B.t_last[step], t);
      atomic_store(&B.last_rank[step], r->idx);
    }
  }
  gy_rpc_cstream_send(s, buf, len);
  free(buf);
}

static void on_grant(sim_t *r, gy_rpc_cstream_t *s, int64_t h) {
  int64_t old = atomic_load(&r->horizon);
  if (h <= old) return;
  int64_t t = now_ns();
  /* This grant is the first for this rank to cover steps s with s + window < h. */
  int64_t lo = old - B.window, hi = h - B.window - 1;
  if (lo < 0) lo = 0;
  for (int64_t st = lo; st <= hi && st < MAX_STEPS; st++) {
    int before = atomic_fetch_add(&B.granted[st], 1);
    if (before == 0) atomic_store(&B.t_first[st], t);
    atomic_max(&B.t_all[st], t);
    if (atomic_load(&B.last_rank[st]) == r->idx) atomic_store(&B.t_at_last[st], t);
  }
  atomic_store(&r->horizon, h);
  if (atomic_load(&B.stop) || B.step_ms > 0) return; /* paced: the pacer sends */
  while (r->done < h)
    send_report(r, s, r->done++);
}

/* Paced mode: the sender of the ranks of client channel `arg` (ranks idx % clients == arg). */
static void *pacer(void *arg) {
  int k = (int)(intptr_t)arg;
  int64_t period = (int64_t)(B.step_ms * 1e6);
  while (!atomic_load(&B.stop)) {
    int64_t now = now_ns();
    int64_t due = B.start_step + (now - B.t0_pace) / period; /* steps < due are due */
    for (int i = k; i < B.n; i += B.clients) {
      sim_t *r = &B.sims[i];
      gy_rpc_cstream_t *s = atomic_load(&r->s);
      int64_t h = atomic_load(&r->horizon);
      while (r->done < due && r->done < h)
        send_report(r, s, r->done++);
      if (r->done < due && r->done >= h && r->parked_step != r->done) {
        r->parked_step = r->done;
        atomic_fetch_add(&B.stalls, 1);
      }
    }
    /* Sleep until the next step is due; poll parked ranks every 0.2 ms meanwhile. */
    int64_t next = B.t0_pace + (due - B.start_step + 1) * period;
    int64_t wait = next - now_ns();
    if (wait > 200000) wait = 200000;
    if (wait > 0) {
      struct timespec ts = {0, (long)wait};
      nanosleep(&ts, NULL);
    }
  }
  return NULL;
}

static void sim_on_message(void *ud, const uint8_t *msg, size_t len) {
  sim_t *r = ud;
  gy_rpc_cstream_t *s = atomic_load(&r->s);
  gy_wire_agent_ctl_t m;
  if (!s || gy_wire_agent_ctl_decode(msg, len, &m)) return;
  if (m.kind == GY_WIRE_AGENT_CTL_GRANT) {
    on_grant(r, s, m.horizon);
  } else if (m.kind == GY_WIRE_AGENT_CTL_DIRECTIVE) {
    uint8_t *buf;
    size_t n;
    if (!gy_wire_agent_ack_encode(r->gen, r->rank, m.dir.seq, r->done, 1, "", 0, &buf, &n)) {
      gy_rpc_cstream_send(s, buf, n);
      free(buf);
    }
  }
  gy_wire_agent_ctl_free(&m);
}

static void sim_on_close(void *ud, int status, const char *details) {
  sim_t *r = ud;
  r->closed = 1;
  if (!atomic_load(&B.stop) && atomic_fetch_add(&B.closed, 1) == 0) {
    atomic_store(&B.close_status, status);
    fprintf(stderr, "controller_ingest: rank %d's session ended early: status %d %s\n", r->rank,
            status, details ? details : "");
  }
}

/* Joins (blocks until the gang forms), opens the session and says hello. */
static void *sim_start(void *arg) {
  sim_t *r = arg;
  char err[512] = "", id[32];
  snprintf(id, sizeof(id), "sim-%d", r->idx);
  gy_wire_agent_join_t jr = {
      .worker_id = id, .ordinal = r->idx, .join_token = "", .host = "bench", .pid = getpid()};
  uint8_t *buf;
  size_t len;
  CHECK(!gy_wire_agent_join_encode(&jr, &buf, &len), "join not encoded");
  void *resp = NULL;
  size_t rlen = 0;
  int st = 0;
  int rc = gy_rpc_unary(r->cl, GY_METHOD_WORKER_JOIN, NULL, NULL, buf, len, 120000, &resp, &rlen,
                        &st, err, sizeof(err));
  free(buf);
  CHECK(!rc, "rank %d: Join failed: status %d %s", r->idx, st, err);
  gy_wire_agent_assignment_t dec;
  CHECK(!gy_wire_agent_assignment_decode(resp, rlen, &dec), "rank %d: Assignment does not decode",
        r->idx);
  const gy_agent_assignment_t *a = &dec.asg;
  r->gen = a->generation;
  r->rank = a->rank;
  r->done = a->start_step;
  atomic_store(&r->horizon, a->start_step);
  r->parked_step = -1;
  B.start_step = a->start_step;
  snprintf(r->session, sizeof(r->session), "%s", a->session_id);
  gy_wire_agent_assignment_free(&dec);
  free(resp);
  gy_rpc_cstream_cbs_t cbs = {.on_message = sim_on_message, .on_close = sim_on_close};
  gy_rpc_cstream_t *s = NULL;
  rc = gy_rpc_cstream_open(r->cl, GY_METHOD_WORKER_SESSION, NULL, NULL, &cbs, r, &s, err,
                           sizeof(err));
  CHECK(!rc, "rank %d: Session: %s", r->idx, err);
  atomic_store(&r->s, s);
  CHECK(!gy_wire_agent_hello_encode(r->session, r->gen, r->rank, &buf, &len), "hello not encoded");
  CHECK(!gy_rpc_cstream_send(s, buf, len), "rank %d: hello not sent", r->idx);
  free(buf);
  return NULL;
}

/* ------------------------------------------ driver ------------------------------------------ */

static int free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t al = sizeof(a);
  CHECK(fd >= 0 && !bind(fd, (struct sockaddr *)&a, sizeof(a)) &&
            !getsockname(fd, (struct sockaddr *)&a, &al),
        "cannot find a free port: %s", strerror(errno));
  close(fd);
  return ntohs(a.sin_port);
}

static int tcp_ready(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET,
                          .sin_port = htons((uint16_t)port),
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  int ok = fd >= 0 && !connect(fd, (struct sockaddr *)&a, sizeof(a));
  if (fd >= 0) close(fd);
  return ok;
}

/* user + system CPU seconds of pid. */
static double cpu_seconds(pid_t pid) {
  char path[64], buf[2048];
  snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
  FILE *f = fopen(path, "r");
  if (!f) return 0;
  size_t n = fread(buf, 1, sizeof(buf) - 1, f);
  fclose(f);
  buf[n] = '\0';
  char *p = strrchr(buf, ')');
  unsigned long ut = 0, stt = 0;
  if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &stt) != 2)
    return 0;
  return (double)(ut + stt) / (double)sysconf(_SC_CLK_TCK);
}

static int cmp_ll(const void *a, const void *b) {
  long long x = *(const long long *)a, y = *(const long long *)b;
  return x < y ? -1 : x > y;
}

static double pct_ms(long long *v, size_t n, double p) {
  if (!n) return 0;
  size_t i = (size_t)(p * (double)(n - 1) + 0.5);
  return (double)v[i] / 1e6;
}

static void find_controller(char *out, size_t len, const char *self) {
  char exe[4096];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  if (n <= 0)
    snprintf(exe, sizeof(exe), "%s", self);
  else
    exe[n] = '\0';
  char *slash = strrchr(exe, '/');
  if (slash) *slash = '\0';
  snprintf(out, len, "%s/../controller/gyro-controller", slash ? exe : ".");
}

static void usage(FILE *f) {
  fprintf(f,
          "usage: controller_ingest [--ranks N] [--seconds S] [--warmup S] [--window W]\n"
          "                         [--clients C] [--step-ms T] [--controller-bin PATH] [--json]\n"
          "  simulated ranks stream step reports to a gyro-controller this bench starts;\n"
          "  prints reports/s sustained and the grant latency (p50/p99). Without --step-ms\n"
          "  every rank reports as fast as its grants allow (throughput); with it every rank\n"
          "  reports one step per T ms, as a worker with that step time would (paced)\n");
}

int main(int argc, char **argv) {
  int n = 1000, window = 4, clients = 4, json = 0;
  double seconds = 10, warmup = 2, step_ms = 0;
  char ctl_bin[4200] = "";
  static const struct option opts[] = {
      {"ranks", required_argument, 0, 'n'},   {"seconds", required_argument, 0, 's'},
      {"warmup", required_argument, 0, 'w'},  {"window", required_argument, 0, 'W'},
      {"clients", required_argument, 0, 'c'}, {"controller-bin", required_argument, 0, 'b'},
      {"step-ms", required_argument, 0, 'T'}, {"json", no_argument, 0, 'j'},
      {"help", no_argument, 0, 'h'},          {0, 0, 0, 0}};
  int c;
  while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    switch (c) {
    case 'n':
      n = atoi(optarg);
      break;
    case 's':
      seconds = atof(optarg);
      break;
    case 'w':
      warmup = atof(optarg);
      break;
    case 'W':
      window = atoi(optarg);
      break;
    case 'c':
      clients = atoi(optarg);
      break;
    case 'b':
      snprintf(ctl_bin, sizeof(ctl_bin), "%s", optarg);
      break;
    case 'j':
      json = 1;
      break;
    case 'T':
      step_ms = atof(optarg);
      break;
    case 'h':
      usage(stdout);
      return 0;
    default:
      usage(stderr);
      return 2;
    }
  }
  if (n < 1 || n > 65536 || window < 1 || clients < 1 || clients > n || seconds <= 0 ||
      warmup < 0 || step_ms < 0 || (step_ms > 0 && step_ms < 0.01) || optind != argc) {
    usage(stderr);
    return 2;
  }
  if (!ctl_bin[0]) find_controller(ctl_bin, sizeof(ctl_bin), argv[0]);
  CHECK(!access(ctl_bin, X_OK), "%s is not executable (give --controller-bin)", ctl_bin);
  signal(SIGPIPE, SIG_IGN);

  /* A config of world N with a tiny model: the controller never trains, only parses it. */
  char dir[] = "/tmp/gyro-ingest.XXXXXX";
  CHECK(mkdtemp(dir), "mkdtemp: %s", strerror(errno));
  char cfg[4300], log[4300], addr[64];
  snprintf(cfg, sizeof(cfg), "%s/ingest.yaml", dir);
  snprintf(log, sizeof(log), "%s/controller.log", dir);
  int port = free_port();
  snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
  FILE *f = fopen(cfg, "w");
  CHECK(f, "cannot write %s", cfg);
  fprintf(f,
          "run: {name: ingest, steps: 2000000000}\n"
          "model: {layers: 1, channels: 16, heads: 1, context: 16, vocab: 256}\n"
          "train: {batch: 1}\n"
          "data:\n"
          "  channels:\n"
          "    - {name: zh, train: [zh.bin], val: zh-val.bin}\n"
          "    - {name: en, train: [en.bin], val: en-val.bin}\n"
          "    - {name: code, train: [code.bin], val: code-val.bin}\n"
          "eval: {every: 0}\n"
          "controller: {listen: '%s', world: %d, tp: 1, window: %d, heartbeat_ms: 1000,\n"
          "             lost_after_ms: 3600000}\n",
          addr, n, window);
  fclose(f);

  pid_t ctl = fork();
  CHECK(ctl >= 0, "fork: %s", strerror(errno));
  if (ctl == 0) {
    int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || dup2(fd, 1) < 0 || dup2(fd, 2) < 0) _exit(127);
    execl(ctl_bin, ctl_bin, "--config", cfg, (char *)NULL);
    _exit(127);
  }
  for (int i = 0; i < 300 && !tcp_ready(port); i++) {
    int st;
    CHECK(waitpid(ctl, &st, WNOHANG) == 0, "the controller exited at start; see %s", log);
    usleep(20000);
  }
  CHECK(tcp_ready(port), "the controller does not listen on %s; see %s", addr, log);

  B.n = n;
  B.window = window;
  B.clients = clients;
  B.addr = addr;
  B.sims = calloc((size_t)n, sizeof(sim_t));
  B.sent = calloc(MAX_STEPS, sizeof(atomic_int));
  B.t_sent = calloc(MAX_STEPS, sizeof(atomic_llong));
  B.granted = calloc(MAX_STEPS, sizeof(atomic_int));
  B.t_first = calloc(MAX_STEPS, sizeof(atomic_llong));
  B.t_all = calloc(MAX_STEPS, sizeof(atomic_llong));
  B.last_rank = malloc(MAX_STEPS * sizeof(atomic_int));
  B.t_last = calloc(MAX_STEPS, sizeof(atomic_llong));
  B.t_at_last = calloc(MAX_STEPS, sizeof(atomic_llong));
  B.step_ms = step_ms;
  CHECK(B.sims && B.sent && B.t_sent && B.granted && B.t_first && B.t_all && B.last_rank &&
            B.t_last && B.t_at_last,
        "out of memory");
  for (int64_t i = 0; i < MAX_STEPS; i++)
    atomic_init(&B.last_rank[i], -1);
  gy_rpc_client_t **cls = calloc((size_t)clients, sizeof(*cls));
  char err[512];
  for (int i = 0; i < clients; i++)
    CHECK(!gy_rpc_client_create(&cls[i], addr, err, sizeof(err)), "client: %s", err);

  /* Join: every call is held until the gang is complete, so each rank needs its own thread. */
  int64_t t_join = now_ns();
  pthread_t *th = calloc((size_t)n, sizeof(pthread_t));
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, 256 * 1024);
  for (int i = 0; i < n; i++) {
    B.sims[i].idx = i;
    B.sims[i].cl = cls[i % clients];
    CHECK(!pthread_create(&th[i], &attr, sim_start, &B.sims[i]), "pthread_create %d", i);
  }
  for (int i = 0; i < n; i++)
    pthread_join(th[i], NULL);
  double join_s = (double)(now_ns() - t_join) / 1e9;
  pthread_t *pacers = NULL;
  if (step_ms > 0) {
    B.t0_pace = now_ns();
    pacers = calloc((size_t)clients, sizeof(pthread_t));
    CHECK(pacers, "out of memory");
    for (int i = 0; i < clients; i++)
      CHECK(!pthread_create(&pacers[i], NULL, pacer, (void *)(intptr_t)i), "pacer %d", i);
  }

  /* Warm up, then measure. */
  usleep((useconds_t)(warmup * 1e6));
  int64_t t0 = now_ns();
  long long sent0 = atomic_load(&B.total_sent);
  double cpu0 = cpu_seconds(ctl);
  usleep((useconds_t)(seconds * 1e6));
  int64_t t1 = now_ns();
  long long sent1 = atomic_load(&B.total_sent);
  double cpu1 = cpu_seconds(ctl);
  long long stalls1 = atomic_load(&B.stalls);
  atomic_store(&B.stop, 1);
  if (pacers)
    for (int i = 0; i < clients; i++)
      pthread_join(pacers[i], NULL);
  usleep(200000); /* let in-flight grants land */

  double dt = (double)(t1 - t0) / 1e9;
  double rate = (double)(sent1 - sent0) / dt;
  long long *lat_first = malloc(MAX_STEPS * sizeof(long long));
  long long *lat_all = malloc(MAX_STEPS * sizeof(long long));
  long long *lat_last = malloc(MAX_STEPS * sizeof(long long));
  CHECK(lat_first && lat_all && lat_last, "out of memory");
  size_t nl = 0, steps_in = 0;
  for (int64_t s = 0; s < MAX_STEPS; s++) {
    if (atomic_load(&B.sent[s]) != n) continue;
    long long ts = atomic_load(&B.t_sent[s]);
    if (ts < t0 || ts > t1) continue;
    steps_in++;
    if (atomic_load(&B.granted[s]) != n) continue;
    lat_first[nl] = atomic_load(&B.t_first[s]) - ts;
    lat_all[nl] = atomic_load(&B.t_all[s]) - ts;
    /* the figure: the last rank's report of s -> the grant for s + window at it */
    lat_last[nl] = atomic_load(&B.t_at_last[s]) - atomic_load(&B.t_last[s]);
    nl++;
  }
  qsort(lat_first, nl, sizeof(long long), cmp_ll);
  qsort(lat_all, nl, sizeof(long long), cmp_ll);
  qsort(lat_last, nl, sizeof(long long), cmp_ll);
  double offered = step_ms > 0 ? n * 1000.0 / step_ms : 0;
  double cores = (cpu1 - cpu0) / dt;
  double us_per_report = sent1 > sent0 ? (cpu1 - cpu0) * 1e6 / (double)(sent1 - sent0) : 0;
  if (json)
    printf("{\"mode\": \"%s\", \"ranks\": %d, \"window\": %d, \"clients\": %d, "
           "\"step_ms\": %.3f, \"offered_per_s\": %.0f, \"join_s\": %.3f, \"seconds\": %.2f, "
           "\"reports_per_s\": %.0f, \"steps_per_s\": %.1f, \"latency_last_p50_ms\": %.3f, "
           "\"latency_last_p99_ms\": %.3f, \"latency_first_p50_ms\": %.3f, "
           "\"latency_first_p99_ms\": %.3f, \"latency_all_p50_ms\": %.3f, "
           "\"latency_all_p99_ms\": %.3f, \"latency_samples\": %zu, \"stalls\": %lld, "
           "\"controller_cores\": %.2f, \"controller_us_per_report\": %.2f, "
           "\"early_closes\": %d}\n",
           step_ms > 0 ? "paced" : "throughput", n, window, clients, step_ms, offered, join_s, dt,
           rate, (double)steps_in / dt, pct_ms(lat_last, nl, 0.5), pct_ms(lat_last, nl, 0.99),
           pct_ms(lat_first, nl, 0.5), pct_ms(lat_first, nl, 0.99), pct_ms(lat_all, nl, 0.5),
           pct_ms(lat_all, nl, 0.99), nl, stalls1, cores, us_per_report, atomic_load(&B.closed));
  else
    printf("%s mode  ranks %d  window %d  clients %d  gang formed in %.2f s\n"
           "reports/s %.0f  (steps/s %.1f over %.1f s; offered %.0f/s, step %.3f ms)\n"
           "grant latency, last report of s sent -> grant for s+%d received:\n"
           "  by that last rank: p50 %.3f ms  p99 %.3f ms\n"
           "  by the first rank: p50 %.3f ms  p99 %.3f ms\n"
           "  by all ranks:      p50 %.3f ms  p99 %.3f ms   (%zu steps)\n"
           "stalls (rank-steps that waited for a grant, paced mode) %lld\n"
           "controller CPU %.2f cores, %.2f us per report\n",
           step_ms > 0 ? "paced" : "throughput", n, window, clients, join_s, rate,
           (double)steps_in / dt, dt, offered, step_ms, window, pct_ms(lat_last, nl, 0.5),
           pct_ms(lat_last, nl, 0.99), pct_ms(lat_first, nl, 0.5), pct_ms(lat_first, nl, 0.99),
           pct_ms(lat_all, nl, 0.5), pct_ms(lat_all, nl, 0.99), nl, stalls1, cores, us_per_report);
  int code = atomic_load(&B.closed) ? 1 : 0;
  if (code)
    fprintf(stderr, "controller_ingest: %d sessions ended early; see %s\n", atomic_load(&B.closed),
            log);

  /* Tear down: the controller first (the streams end with it), then the clients. */
  kill(ctl, SIGTERM);
  int st;
  for (int i = 0; i < 500 && waitpid(ctl, &st, WNOHANG) == 0; i++)
    usleep(10000);
  if (waitpid(ctl, &st, WNOHANG) == 0) {
    kill(ctl, SIGKILL);
    waitpid(ctl, &st, 0);
  }
  for (int i = 0; i < n; i++)
    gy_rpc_cstream_close(atomic_load(&B.sims[i].s));
  for (int i = 0; i < clients; i++)
    gy_rpc_client_destroy(cls[i]);
  if (!code) {
    unlink(log);
    unlink(cfg);
    rmdir(dir);
  }
  free(lat_first);
  free(lat_all);
  free(lat_last);
  free(pacers);
  free(B.last_rank);
  free(B.t_last);
  free(B.t_at_last);
  free(th);
  free(cls);
  free(B.sims);
  free(B.sent);
  free(B.t_sent);
  free(B.granted);
  free(B.t_first);
  free(B.t_all);
  return code;
}
