/* etcd_proc.h: starts a throwaway etcd (Debian's etcd-server) for tests and benchmarks.
 *
 * The server listens on 127.0.0.1 only, on free ports, with its data in a fresh folder under
 * /tmp. The child gets PR_SET_PDEATHSIG(SIGKILL), so it dies with the test even when the test
 * crashes or ctest kills it on a timeout; gy_etcd_proc_cleanup (registered with atexit by
 * gy_etcd_proc_start) kills it and removes the folder on every normal exit, REQUIRE included.
 * Header-only: every function is static. */
#ifndef GY_TESTS_ETCD_PROC_H
#define GY_TESTS_ETCD_PROC_H

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "controller/store.h"

#define GY_ETCD_PROC_MAX 4

typedef struct {
  pid_t pid;
  int client_port, peer_port;
  char dir[128];      /* the temp folder (data in dir/data, log in dir/etcd.log) */
  char url[64];       /* etcd://127.0.0.1:PORT */
  char endpoint[64];  /* 127.0.0.1:PORT */
  const char *scheme; /* "http" or "https" */
  char tls_args[4][300];
} gy_etcd_proc_t;

static gy_etcd_proc_t *gy_etcd_procs[GY_ETCD_PROC_MAX];

/* A loopback port that was free a moment ago, picked at random below the kernel's ephemeral
 * range (as tests/lib/common.sh's free_port: a port from that range, bound again later, could
 * meanwhile become some connection's source port); any free port where that range starts at
 * 20000 or lower. -1 if none was found. */
static int gy_free_port(void) {
  int low = 0;
  FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");
  if (f) {
    if (fscanf(f, "%d", &low) != 1) low = 0;
    fclose(f);
  }
  static unsigned seed;
  if (!seed) seed = (unsigned)getpid() ^ (unsigned)time(NULL) ^ 0x9e3779b9u;
  for (int i = 0; i < 500; i++) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    struct sockaddr_in a;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (low > 20000)
      a.sin_port = htons((uint16_t)(20000 + rand_r(&seed) % (unsigned)(low - 20000)));
    socklen_t len = sizeof(a);
    int port = -1;
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
      port = ntohs(a.sin_port);
    close(fd);
    if (port > 0) return port;
  }
  return -1;
}

static double gy_etcd_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Starts (or restarts, on the same folder and ports) the server; 0 once it answers. */
static int gy_etcd_proc_spawn(gy_etcd_proc_t *e) {
  char data[200], logf[200], curl[96], purl[96], cluster[128];
  snprintf(data, sizeof(data), "%s/data", e->dir);
  snprintf(logf, sizeof(logf), "%s/etcd.log", e->dir);
  snprintf(curl, sizeof(curl), "%s://127.0.0.1:%d", e->scheme, e->client_port);
  snprintf(purl, sizeof(purl), "http://127.0.0.1:%d", e->peer_port);
  snprintf(cluster, sizeof(cluster), "t=%s", purl);
  pid_t parent = getpid();
  fflush(stdout); /* or the child's freopen would print the parent's buffered lines again */
  fflush(stderr);
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(1);
    FILE *f = freopen(logf, "a", stdout);
    (void)f;
    dup2(STDOUT_FILENO, STDERR_FILENO);
    const char *argv[24];
    int n = 0;
    argv[n++] = "etcd";
    argv[n++] = "--name=t";
    char a1[256], a2[128], a3[128], a4[128], a5[128], a6[160];
    snprintf(a1, sizeof(a1), "--data-dir=%s", data);
    snprintf(a2, sizeof(a2), "--listen-client-urls=%s", curl);
    snprintf(a3, sizeof(a3), "--advertise-client-urls=%s", curl);
    snprintf(a4, sizeof(a4), "--listen-peer-urls=%s", purl);
    snprintf(a5, sizeof(a5), "--initial-advertise-peer-urls=%s", purl);
    snprintf(a6, sizeof(a6), "--initial-cluster=%s", cluster);
    argv[n++] = a1;
    argv[n++] = a2;
    argv[n++] = a3;
    argv[n++] = a4;
    argv[n++] = a5;
    argv[n++] = a6;
    for (int i = 0; i < 4; i++)
      if (e->tls_args[i][0]) argv[n++] = e->tls_args[i];
    argv[n] = NULL;
    execvp("etcd", (char *const *)argv);
    fprintf(stderr, "cannot run etcd: %s\n", strerror(errno));
    _exit(127);
  }
  e->pid = pid;
  return 0;
}

/* Waits until a store on the server answers (up to timeout_s); opts may carry TLS. */
static int gy_etcd_proc_wait(gy_etcd_proc_t *e, const gy_cstore_opts_t *opts, double timeout_s) {
  double end = gy_etcd_now() + timeout_s;
  gy_cstore_t *s = NULL;
  char msg[512];
  if (gy_cstore_create(&s, e->url, opts, msg, sizeof(msg)) < 0) {
    fprintf(stderr, "etcd_proc: %s\n", msg);
    return -1;
  }
  int ok = -1;
  while (gy_etcd_now() < end) {
    int64_t rev;
    if (gy_cstore_revision(s, &rev, 500, msg, sizeof(msg)) == 0) {
      ok = 0;
      break;
    }
    int st;
    if (waitpid(e->pid, &st, WNOHANG) == e->pid) {
      fprintf(stderr, "etcd_proc: etcd exited during start-up (log: %s/etcd.log)\n", e->dir);
      e->pid = 0;
      break;
    }
    usleep(50000);
  }
  if (ok < 0) fprintf(stderr, "etcd_proc: etcd not answering: %s\n", msg);
  gy_cstore_destroy(s);
  return ok;
}

static void gy_etcd_proc_kill(gy_etcd_proc_t *e) {
  if (e->pid > 0) {
    kill(e->pid, SIGCONT);
    kill(e->pid, SIGKILL);
    waitpid(e->pid, NULL, 0);
    e->pid = 0;
  }
}

static void gy_etcd_proc_cleanup_all(void) {
  for (int i = 0; i < GY_ETCD_PROC_MAX; i++) {
    gy_etcd_proc_t *e = gy_etcd_procs[i];
    if (!e) continue;
    gy_etcd_proc_kill(e);
    if (e->dir[0]) {
      char cmd[200];
      snprintf(cmd, sizeof(cmd), "rm -rf '%s'", e->dir);
      if (system(cmd) != 0) fprintf(stderr, "etcd_proc: cannot remove %s\n", e->dir);
    }
    gy_etcd_procs[i] = NULL;
  }
}

/* Prepares e (a temp folder, free ports) without starting it: the caller may add TLS
 * arguments (tls_args) and set scheme first. */
static int gy_etcd_proc_init(gy_etcd_proc_t *e) {
  memset(e, 0, sizeof(*e));
  snprintf(e->dir, sizeof(e->dir), "/tmp/gyro-etcd.XXXXXX");
  if (!mkdtemp(e->dir)) return -1;
  e->client_port = gy_free_port();
  e->peer_port = gy_free_port();
  while (e->peer_port == e->client_port)
    e->peer_port = gy_free_port();
  if (e->client_port <= 0 || e->peer_port <= 0) return -1;
  e->scheme = "http";
  snprintf(e->endpoint, sizeof(e->endpoint), "127.0.0.1:%d", e->client_port);
  snprintf(e->url, sizeof(e->url), "etcd://127.0.0.1:%d", e->client_port);
  static int registered;
  if (!registered) {
    atexit(gy_etcd_proc_cleanup_all);
    registered = 1;
  }
  for (int i = 0; i < GY_ETCD_PROC_MAX; i++) {
    if (!gy_etcd_procs[i]) {
      gy_etcd_procs[i] = e;
      return 0;
    }
  }
  return -1;
}

/* Starts e (after gy_etcd_proc_init) and waits until it answers. */
static int gy_etcd_proc_start(gy_etcd_proc_t *e, const gy_cstore_opts_t *opts) {
  if (gy_etcd_proc_spawn(e) < 0) return -1;
  return gy_etcd_proc_wait(e, opts, 20.0);
}

#endif
