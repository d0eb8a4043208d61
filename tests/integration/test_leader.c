/* test_leader: leader election over both back ends, with real processes.
 *
 * For SQLite (one file) and etcd (a real server on loopback):
 *  1. elector A (a child process: this binary re-executed with --elector) leads;
 *  2. elector B (another process) stays standby while A lives;
 *  3. A is SIGKILLed: B leads within the stated bound (TTL + 0.6 s; checked against TTL + 3 s to
 *     stay robust on a loaded machine), measured, and B's fencing token is larger than A's;
 *  4. B resigns (SIGTERM: it revokes its lease): C (in this process, its own store handle)
 *     leads at once, far below B's 10 s TTL;
 *  5. C's lease is revoked by someone else: C is deposed, then re-elected with a larger token;
 *  6. etcd only: etcd is frozen (SIGSTOP) under leader C: C calls on_deposed within TTL + 2 s
 *     (keep-alives fail past the TTL, so it stops acting before etcd could elect another), and
 *     leads again, with a larger token, once etcd runs again. */
#include <fcntl.h>
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
#include "tests/test.h"

static char msg[1024];

/* ------------------------------------- elector process ------------------------------------- */

static void child_elected(void *ud, int64_t token) {
  (void)ud;
  printf("elected %lld\n", (long long)token);
  fflush(stdout);
}

static void child_deposed(void *ud, int64_t token, const char *why) {
  (void)ud;
  printf("deposed %lld %s\n", (long long)token, why);
  fflush(stdout);
}

/* --elector URL RUN ID TTL: campaigns until SIGTERM (then resigns and exits 0). */
static int elector_main(char **argv) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, NULL);
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  gy_cstore_t *s = NULL;
  if (gy_cstore_create(&s, argv[2], NULL, msg, sizeof(msg)) < 0) {
    fprintf(stderr, "elector: %s\n", msg);
    return 2;
  }
  gy_leader_opts_t o = {.store = s,
                        .run = argv[3],
                        .id = argv[4],
                        .ttl_s = atoi(argv[5]),
                        .on_elected = child_elected,
                        .on_deposed = child_deposed};
  gy_leader_t *l = NULL;
  if (gy_leader_start(&l, &o, msg, sizeof(msg)) < 0) {
    fprintf(stderr, "elector: %s\n", msg);
    return 2;
  }
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
  int fd; /* the child's stdout */
  char buf[4096];
  size_t len;
} child_t;

static child_t *children[8];

static void kill_children(void) {
  for (int i = 0; i < 8; i++) {
    if (children[i] && children[i]->pid > 0) {
      kill(children[i]->pid, SIGKILL);
      waitpid(children[i]->pid, NULL, 0);
      children[i]->pid = 0;
    }
  }
}

static void spawn(child_t *c, const char *url, const char *run, const char *id, int ttl) {
  int p[2];
  REQUIRE(pipe(p) == 0);
  fflush(stdout);
  fflush(stderr);
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    dup2(p[1], STDOUT_FILENO);
    close(p[0]);
    close(p[1]);
    char ttls[16];
    snprintf(ttls, sizeof(ttls), "%d", ttl);
    execl("/proc/self/exe", "test_leader", "--elector", url, run, id, ttls, (char *)NULL);
    _exit(127);
  }
  close(p[1]);
  memset(c, 0, sizeof(*c));
  c->pid = pid;
  c->fd = p[0];
  for (int i = 0; i < 8; i++)
    if (!children[i]) {
      children[i] = c;
      break;
    }
}

/* Reads the child's next line within timeout_s into line; 0 on success, -1 on timeout/EOF. */
static int next_line(child_t *c, char *line, size_t n, double timeout_s) {
  double end = gy_etcd_now() + timeout_s;
  for (;;) {
    char *nl = memchr(c->buf, '\n', c->len);
    if (nl) {
      size_t l = (size_t)(nl - c->buf);
      snprintf(line, n, "%.*s", (int)l, c->buf);
      memmove(c->buf, nl + 1, c->len - l - 1);
      c->len -= l + 1;
      return 0;
    }
    double left = end - gy_etcd_now();
    if (left <= 0) return -1;
    struct pollfd pf = {c->fd, POLLIN, 0};
    if (poll(&pf, 1, (int)(left * 1000) + 1) <= 0) continue;
    ssize_t got = read(c->fd, c->buf + c->len, sizeof(c->buf) - 1 - c->len);
    if (got <= 0) return -1;
    c->len += (size_t)got;
  }
}

/* Waits for a line starting with word; returns its number (the token) or -1. */
static long long wait_word(child_t *c, const char *word, double timeout_s) {
  double end = gy_etcd_now() + timeout_s;
  char line[512];
  while (gy_etcd_now() < end) {
    if (next_line(c, line, sizeof(line), end - gy_etcd_now()) < 0) return -1;
    printf("   [pid %d] %s\n", (int)c->pid, line);
    size_t wl = strlen(word);
    if (!strncmp(line, word, wl) && (line[wl] == ' ' || !line[wl]))
      return line[wl] ? atoll(line + wl + 1) : 0;
  }
  return -1;
}

/* ------------------------------------- in-process elector ------------------------------------- */

typedef struct {
  pthread_mutex_t mu;
  int elected, deposed;
  int64_t token, deposed_token;
  double t_elected, t_deposed;
} probe_t;

static void p_elected(void *ud, int64_t token) {
  probe_t *p = ud;
  pthread_mutex_lock(&p->mu);
  p->elected++;
  p->token = token;
  p->t_elected = gy_etcd_now();
  pthread_mutex_unlock(&p->mu);
  printf("   [in-process] elected %lld\n", (long long)token);
}

static void p_deposed(void *ud, int64_t token, const char *why) {
  probe_t *p = ud;
  pthread_mutex_lock(&p->mu);
  p->deposed++;
  p->deposed_token = token;
  p->t_deposed = gy_etcd_now();
  pthread_mutex_unlock(&p->mu);
  printf("   [in-process] deposed %lld: %s\n", (long long)token, why);
}

static int probe_wait(probe_t *p, int *field, int want, double timeout_s) {
  double end = gy_etcd_now() + timeout_s;
  for (;;) {
    pthread_mutex_lock(&p->mu);
    int v = *field;
    pthread_mutex_unlock(&p->mu);
    if (v >= want) return 1;
    if (gy_etcd_now() > end) return 0;
    usleep(10000);
  }
}

/* ------------------------------------------- scenario -------------------------------------------
 */

static void scenario(const char *name, const char *url, gy_etcd_proc_t *etcd) {
  printf("== leader election on %s\n", name);
  const int ttl = 2;
  child_t a, b;
  spawn(&a, url, "r1", "A", ttl);
  long long ta = wait_word(&a, "elected", 20.0);
  CHECK_MSG(ta > 0, "A was not elected");
  spawn(&b, url, "r1", "B", 10);
  CHECK(wait_word(&b, "started", 10.0) == 0);
  /* B must not lead while A lives */
  char line[512];
  int b_led = 0;
  double end = gy_etcd_now() + 1.5;
  while (gy_etcd_now() < end) {
    if (next_line(&b, line, sizeof(line), end - gy_etcd_now()) < 0) break;
    if (!strncmp(line, "elected", 7)) b_led = 1;
  }
  CHECK_MSG(!b_led, "B led while A was alive");

  /* kill A: B takes over once A's lease expires */
  double t0 = gy_etcd_now();
  kill(a.pid, SIGKILL);
  waitpid(a.pid, NULL, 0);
  a.pid = 0;
  long long tb = wait_word(&b, "elected", ttl + 10.0);
  double takeover = gy_etcd_now() - t0;
  CHECK_MSG(tb > ta, "B's token %lld not above A's %lld", tb, ta);
  CHECK_MSG(takeover <= ttl + 3.0, "takeover %.2f s with a %d s TTL", takeover, ttl);
  CHECK_MSG(takeover >= ttl / 3.0, "takeover %.2f s: faster than a lease can expire", takeover);
  printf("   TAKEOVER %s: leader SIGKILLed -> standby elected in %.2f s (TTL %d s); "
         "tokens %lld -> %lld\n",
         name, takeover, ttl, ta, tb);

  /* C (in this process) waits as standby; B resigns: C leads at once */
  gy_cstore_t *sc = NULL, *so = NULL;
  REQUIRE(gy_cstore_create(&sc, url, NULL, msg, sizeof(msg)) == 0);
  REQUIRE(gy_cstore_create(&so, url, NULL, msg, sizeof(msg)) == 0);
  probe_t pc;
  memset(&pc, 0, sizeof(pc));
  pthread_mutex_init(&pc.mu, NULL);
  gy_leader_opts_t o = {.store = sc,
                        .run = "r1",
                        .id = "C",
                        .ttl_s = ttl,
                        .on_elected = p_elected,
                        .on_deposed = p_deposed,
                        .ud = &pc};
  gy_leader_t *lc = NULL;
  REQUIRE(gy_leader_start(&lc, &o, msg, sizeof(msg)) == 0);
  usleep(500000);
  CHECK_EQ_INT(gy_leader_is_leader(lc, NULL), 0);
  t0 = gy_etcd_now();
  kill(b.pid, SIGTERM);
  CHECK(wait_word(&b, "deposed", 10.0) == tb);
  waitpid(b.pid, NULL, 0);
  b.pid = 0;
  CHECK(probe_wait(&pc, &pc.elected, 1, 8.0));
  double handover = pc.t_elected - t0;
  int64_t tc = 0;
  CHECK(gy_leader_is_leader(lc, &tc) && tc > tb);
  CHECK_MSG(handover < 5.0, "handover after a resignation took %.2f s (B's TTL is 10 s)", handover);
  printf("   HANDOVER %s: leader resigned -> standby elected in %.3f s; token %lld\n", name,
         handover, (long long)tc);
  gy_cstore_kv_t kv;
  CHECK_EQ_INT(gy_cstore_get(so, "/gyro/r1/leader", &kv, NULL, 0, msg, sizeof(msg)), 0);
  CHECK(!strcmp((char *)kv.value, "C") && kv.create_revision == tc);
  gy_cstore_kv_clear(&kv);

  /* someone revokes C's lease: C is deposed, then leads again with a larger token */
  int64_t lease = gy_leader_lease(lc);
  CHECK(lease != 0);
  CHECK_EQ_INT(gy_cstore_lease_revoke(so, lease, 0, msg, sizeof(msg)), 0);
  CHECK(probe_wait(&pc, &pc.deposed, 1, ttl + 3.0));
  CHECK(probe_wait(&pc, &pc.elected, 2, 10.0));
  int64_t tc2 = 0;
  CHECK(gy_leader_is_leader(lc, &tc2) && tc2 > tc);
  printf("   lease revoked under the leader: deposed, re-elected with token %lld\n",
         (long long)tc2);

  if (etcd) {
    /* etcd frozen: the leader must stop acting within about a TTL */
    t0 = gy_etcd_now();
    kill(etcd->pid, SIGSTOP);
    int dep = probe_wait(&pc, &pc.deposed, 2, ttl + 4.0);
    double stop_after = (dep ? pc.t_deposed : gy_etcd_now()) - t0;
    kill(etcd->pid, SIGCONT);
    CHECK_MSG(dep, "leader still acting %.2f s after etcd froze (TTL %d s)", stop_after, ttl);
    CHECK_MSG(stop_after <= ttl + 2.0, "leader stopped %.2f s after etcd froze", stop_after);
    printf("   etcd frozen under the leader: on_deposed after %.2f s (TTL %d s)\n", stop_after,
           ttl);
    CHECK(probe_wait(&pc, &pc.elected, 3, 20.0));
    int64_t tc3 = 0;
    CHECK(gy_leader_is_leader(lc, &tc3) && tc3 > tc2);
  }
  gy_leader_stop(lc);
  CHECK(probe_wait(&pc, &pc.deposed, etcd ? 3 : 2, 1.0));
  /* resigned: the key is gone */
  CHECK_EQ_INT(gy_cstore_get(so, "/gyro/r1/leader", &kv, NULL, 0, msg, sizeof(msg)), GY_ENOENT);
  gy_cstore_destroy(sc);
  gy_cstore_destroy(so);
  close(a.fd);
  close(b.fd);
  for (int i = 0; i < 8; i++)
    if (children[i] == &a || children[i] == &b) children[i] = NULL;
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
  atexit(kill_children);
  /* bad options */
  gy_leader_t *l = NULL;
  gy_leader_opts_t bad = {.run = "r", .id = "x"};
  CHECK_EQ_INT(gy_leader_start(&l, &bad, msg, sizeof(msg)), GY_EINVAL);
  CHECK(strstr(msg, "missing store") != NULL);

  char tmp[] = "/tmp/gyro-leader.XXXXXX";
  REQUIRE(mkdtemp(tmp) != NULL);
  snprintf(tmp_dir, sizeof(tmp_dir), "%s", tmp);
  atexit(remove_tmp);
  char url[300];
  snprintf(url, sizeof(url), "sqlite:%s/store.db", tmp);
  gy_cstore_t *s = NULL;
  REQUIRE(gy_cstore_create(&s, url, NULL, msg, sizeof(msg)) == 0);
  gy_leader_opts_t slash = {.store = s, .run = "a/b", .id = "x"};
  CHECK_EQ_INT(gy_leader_start(&l, &slash, msg, sizeof(msg)), GY_EINVAL);
  CHECK(strstr(msg, "'a/b'") != NULL);
  gy_cstore_destroy(s);

  scenario("sqlite", url, NULL);

  static gy_etcd_proc_t e;
  REQUIRE(gy_etcd_proc_init(&e) == 0);
  REQUIRE(gy_etcd_proc_start(&e, NULL) == 0);
  scenario("etcd", e.url, &e);

  remove_tmp();
  GY_TEST_END();
}
