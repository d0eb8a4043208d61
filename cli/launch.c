/*
 * launch: `gyroctl launch CONFIG`, the whole supervised job on one machine.
 *
 * API: gy_launch_main() (cli/launch.h). In order it: loads the run config (config/run_config.h) for
 * controller.{listen, world}; finds gyro-controller and gyro-worker (--controller-bin /
 * --worker-bin, else next to gyroctl's own binary as ../controller/gyro-controller and
 * ../worker/gyro-worker, else $PATH); makes the run folder (default build/runs/<name>-<time>/);
 * starts the controller (with --http ADDR when given: the dashboard, whose URL the trace prints;
 * stdout and stderr through pipes that are copied into controller.log and turned into the live
 * trace: step records, its events, warnings and errors), waits until it
 * accepts TCP connections, then starts `world` workers (worker K: --controller ADDR --worker-id wK
 * --ordinal K --threads T, T = max(1, cores / world), OMP_NUM_THREADS=T, OMP_WAIT_POLICY=PASSIVE;
 * stdout to worker-K.jsonl, stderr to worker-K.log) and supervises them until the controller exits.
 *
 * State: the controller keeps the run's journal in a SQLite file in the run folder (--store
 * sqlite:RUN_DIR/state.db; --store URL picks another store, --no-store none).
 *
 * Supervision rules: a worker that exits non-zero (or dies of a signal) while the controller
 * still runs is restarted, at most MAX_RESTARTS times per worker; one more failure stops
 * everything with exit 1. A worker that exits 0 is done. The controller exiting 0 means the run
 * is done: the workers get GRACE_MS to exit by themselves. A controller that fails (dies of a
 * signal, or exits other than 0 and 2) is started again from its journal, at most MAX_RESTARTS
 * times, when there is a store; the workers rejoin it. Otherwise a failed controller, SIGINT or
 * SIGTERM stop everything: SIGTERM to every child, SIGKILL GRACE_MS later. The join token
 * reaches the workers in their environment ($GYRO_JOIN_TOKEN), never on a command line.
 *
 * Invariants: this process is single-threaded and uses no gRPC (children are forked and exec'd
 * with a prepared environment, nothing but async-signal-safe calls between fork and exec). The
 * signals it handles (SIGCHLD, SIGINT, SIGTERM) are blocked and read from a signalfd, so the
 * event loop is one poll() over the signalfd and the controller's two pipes. Each child runs in
 * its own process group (a terminal's Ctrl-C reaches only gyroctl, which then stops the children
 * in order) and gets SIGTERM if gyroctl itself dies (PR_SET_PDEATHSIG).
 */
#include "cli/launch.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <netdb.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "config/run_config.h"

extern char **environ;

enum { MAX_RESTARTS = 3, GRACE_MS = 10000, READY_TIMEOUT_MS = 30000 };

typedef struct {
  pid_t pid; /* 0 when not running */
  int restarts;
  int ordinal;
} child_t;

typedef struct {
  const char *config;
  char ctl_bin[PATH_MAX];
  char wrk_bin[PATH_MAX];
  char run_dir[PATH_MAX];
  char addr[300]; /* where workers and gyroctl reach the controller */
  char name[128];
  char *join_token; /* controller.join_token, passed to the workers (owned; NULL: none) */
  int world, tp, threads;
  int64_t steps;
  const char *http; /* --http ADDR, passed to the controller (NULL: its controller.http) */
  char store[PATH_MAX + 16]; /* --store URL passed to the controller ("": none) */
  int ctl_restarts;
  char **wargs; /* extra worker arguments (borrowed from argv) */
  int nwargs;
  char **wenv; /* the workers' environment (owned) */
  child_t ctl;
  child_t *w; /* world entries (owned) */
  int sfd;    /* signalfd for SIGCHLD, SIGINT, SIGTERM */
  int out_fd; /* read end of the controller's stdout, -1 after EOF */
  int err_fd; /* read end of the controller's stderr, -1 after EOF */
  int log_fd; /* controller.log (append) */
  sigset_t oldmask;
  int stopping;          /* stop requested: no restarts, children are being stopped */
  int code;              /* exit code once the run is over */
  double term_at;        /* when to SIGTERM every child still running (0: not scheduled) */
  double kill_at;        /* when to SIGKILL every child still running (0: not scheduled) */
  char line[2][1 << 16]; /* partial lines of stdout, stderr */
  size_t linelen[2];
  /* per-channel moving average of the loss, to flag jumps and drops in the trace */
  char ch_name[16][32];
  double ch_avg[16];
  int ch_seen[16];
  int nch;
} launch_t;

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void launch_usage(FILE *f) {
  fprintf(f, "usage: gyroctl launch CONFIG [options]\n"
             "  runs gyro-controller and controller.world CPU workers on this machine, restarts a\n"
             "  worker that fails (3 times at most), stops everything cleanly on Ctrl-C\n"
             "  --run-dir DIR          logs go here (default build/runs/<run.name>-<time>/)\n"
             "  --controller-bin PATH  gyro-controller to run (default: beside gyroctl's build\n"
             "                         folder, ../controller/gyro-controller, else $PATH)\n"
             "  --worker-bin PATH      gyro-worker to run (default ../worker/gyro-worker, $PATH)\n"
             "  --workers-arg ARG      append ARG to every worker's command line (repeatable)\n"
             "  --http ADDR            serve the dashboard and /metrics on ADDR (HOST:PORT or\n"
             "                         PORT; default: the config's controller.http, if any)\n"
             "  --store URL            the controller's state store (default sqlite:RUN_DIR/\n"
             "                         state.db): a failed controller restarts from it\n"
             "  --no-store             no state store (a failed controller stops the job)\n"
             "  -h, --help\n"
             "exit codes: 0 the run is done (the controller exited 0); 1 the controller failed, a\n"
             "worker failed more than 3 times, or a process could not be started; 2 usage or\n"
             "configuration error; 130/143 stopped by SIGINT/SIGTERM\n");
}

/* ---------------------------------------- setup ---------------------------------------- */

static int is_exec(const char *p) {
  struct stat st;
  return !stat(p, &st) && S_ISREG(st.st_mode) && !access(p, X_OK);
}

/* Finds a binary: given, else DIR/rel for DIR the folder of gyroctl's own binary (from
 * /proc/self/exe, then argv[0]), else name on $PATH. Returns 0 and the path in out. */
static int find_bin(char *out, size_t len, const char *given, const char *self, const char *rel,
                    const char *name) {
  if (given) {
    if (!is_exec(given)) {
      fprintf(stderr, "gyroctl launch: %s is not an executable file\n", given);
      return -1;
    }
    snprintf(out, len, "%s", given);
    return 0;
  }
  char dirs[2][PATH_MAX] = {"", ""};
  ssize_t n = readlink("/proc/self/exe", dirs[0], sizeof(dirs[0]) - 1);
  dirs[0][n > 0 ? n : 0] = '\0';
  if (self && strchr(self, '/')) snprintf(dirs[1], sizeof(dirs[1]), "%s", self);
  for (int i = 0; i < 2; i++) {
    char *slash = strrchr(dirs[i], '/');
    if (!slash) continue;
    *slash = '\0';
    if (snprintf(out, len, "%s/%s", dirs[i], rel) < (int)len && is_exec(out)) return 0;
  }
  const char *path = getenv("PATH");
  while (path && *path) {
    const char *end = strchr(path, ':');
    size_t dl = end ? (size_t)(end - path) : strlen(path);
    if (dl && snprintf(out, len, "%.*s/%s", (int)dl, path, name) < (int)len && is_exec(out))
      return 0;
    path = end ? end + 1 : NULL;
  }
  fprintf(stderr,
          "gyroctl launch: cannot find %s (looked beside gyroctl as %s and on $PATH); "
          "give --%s PATH\n",
          name, rel, strstr(name, "controller") ? "controller-bin" : "worker-bin");
  return -1;
}

static int mkdir_p(const char *dir) {
  char p[PATH_MAX];
  snprintf(p, sizeof(p), "%s", dir);
  for (char *s = p + 1; *s; s++) {
    if (*s != '/') continue;
    *s = '\0';
    if (mkdir(p, 0755) && errno != EEXIST) return -1;
    *s = '/';
  }
  return mkdir(p, 0755) && errno != EEXIST ? -1 : 0;
}

/* host:port of the listen address as a client dials it (a wildcard host becomes loopback). */
static int dial_addr(char *out, size_t len, const char *listen, char *host, size_t hlen, char *port,
                     size_t plen) {
  const char *colon = strrchr(listen, ':');
  if (!colon || !colon[1] || !strcmp(colon + 1, "0")) return -1;
  size_t hl = (size_t)(colon - listen);
  if (hl >= hlen) return -1;
  memcpy(host, listen, hl);
  host[hl] = '\0';
  snprintf(port, plen, "%s", colon + 1);
  if (!hl || !strcmp(host, "0.0.0.0") || !strcmp(host, "*"))
    snprintf(host, hlen, "127.0.0.1");
  else if (!strcmp(host, "[::]"))
    snprintf(host, hlen, "[::1]");
  snprintf(out, len, "%s:%s", host, port);
  if (host[0] == '[') { /* getaddrinfo wants the bare IPv6 literal */
    memmove(host, host + 1, strlen(host));
    host[strcspn(host, "]")] = '\0';
  }
  return 0;
}

/* 1 when something accepts TCP connections at host:port. */
static int tcp_ready(const char *host, const char *port) {
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai = NULL;
  if (getaddrinfo(host, port, &hints, &ai)) return 0;
  int ok = 0;
  for (struct addrinfo *a = ai; a && !ok; a = a->ai_next) {
    int fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    ok = !connect(fd, a->ai_addr, a->ai_addrlen);
    close(fd);
  }
  freeaddrinfo(ai);
  return ok;
}

/* The workers' environment: ours without OMP_NUM_THREADS / OMP_WAIT_POLICY, plus both set. */
/* The workers' environment: ours, with OMP_NUM_THREADS, OMP_WAIT_POLICY and (when there is
 * one) GYRO_JOIN_TOKEN set. The malloc'ed strings are env[k - 1] (OMP_NUM_THREADS) and the
 * token entry; worker_env_free releases them. */
static char **worker_env(int threads, const char *token) {
  size_t n = 0;
  while (environ[n])
    n++;
  char **env = calloc(n + 4, sizeof(char *));
  if (!env) return NULL;
  size_t k = 0;
  for (size_t i = 0; i < n; i++)
    if (strncmp(environ[i], "OMP_NUM_THREADS=", 16) && strncmp(environ[i], "OMP_WAIT_POLICY=", 16) &&
        strncmp(environ[i], "GYRO_JOIN_TOKEN=", 16))
      env[k++] = environ[i];
  char *a = malloc(48), *t = token ? malloc(strlen(token) + 17) : NULL;
  if (!a || (token && !t)) {
    free(a);
    free(t);
    free(env);
    return NULL;
  }
  snprintf(a, 48, "OMP_NUM_THREADS=%d", threads);
  env[k++] = "OMP_WAIT_POLICY=PASSIVE";
  if (t) {
    snprintf(t, strlen(token) + 17, "GYRO_JOIN_TOKEN=%s", token);
    env[k++] = t;
  }
  env[k++] = a;
  env[k] = NULL;
  return env;
}

/* ---------------------------------------- children ---------------------------------------- */

/* Forks and execs argv[0] with envp, stdout on out_fd and stderr on err_fd. Only
 * async-signal-safe calls run in the child. Returns the pid, or -1 (message printed). */
static pid_t spawn(launch_t *L, char *const argv[], char *const envp[], int out_fd, int err_fd) {
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) {
    fprintf(stderr, "gyroctl launch: fork: %s\n", strerror(errno));
    return -1;
  }
  if (pid == 0) {
    setpgid(0, 0);
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent) _exit(127);
    sigprocmask(SIG_SETMASK, &L->oldmask, NULL);
    if (dup2(out_fd, STDOUT_FILENO) < 0 || dup2(err_fd, STDERR_FILENO) < 0) _exit(127);
    int devnull = open("/dev/null", O_RDONLY);
    if (devnull >= 0) dup2(devnull, STDIN_FILENO);
    execve(argv[0], argv, envp);
    static const char msg[] = "gyroctl launch: exec failed\n";
    ssize_t r = write(STDERR_FILENO, msg, sizeof(msg) - 1);
    (void)r;
    _exit(127);
  }
  return pid;
}

static int start_worker(launch_t *L, int k) {
  char out[PATH_MAX + 32], err[PATH_MAX + 32], id[32], ord[32], thr[32];
  snprintf(out, sizeof(out), "%s/worker-%d.jsonl", L->run_dir, k);
  snprintf(err, sizeof(err), "%s/worker-%d.log", L->run_dir, k);
  snprintf(id, sizeof(id), "w%d", k);
  snprintf(ord, sizeof(ord), "%d", k);
  snprintf(thr, sizeof(thr), "%d", L->threads);
  int ofd = open(out, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  int efd = open(err, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  char **argv = calloc((size_t)L->nwargs + 14, sizeof(char *));
  pid_t pid = -1;
  if (ofd < 0 || efd < 0 || !argv) {
    fprintf(stderr, "gyroctl launch: cannot open %s or %s: %s\n", out, err, strerror(errno));
    goto done;
  }
  int n = 0;
  argv[n++] = L->wrk_bin;
  argv[n++] = "--controller";
  argv[n++] = L->addr;
  argv[n++] = "--worker-id";
  argv[n++] = id;
  argv[n++] = "--ordinal";
  argv[n++] = ord;
  argv[n++] = "--threads";
  argv[n++] = thr;
  for (int i = 0; i < L->nwargs; i++)
    argv[n++] = L->wargs[i];
  argv[n] = NULL;
  pid = spawn(L, argv, L->wenv, ofd, efd);
done:
  free(argv);
  if (ofd >= 0) close(ofd);
  if (efd >= 0) close(efd);
  L->w[k].pid = pid > 0 ? pid : 0;
  return pid > 0 ? 0 : -1;
}

static int start_controller(launch_t *L) {
  char log[PATH_MAX + 32];
  snprintf(log, sizeof(log), "%s/controller.log", L->run_dir);
  if (L->log_fd < 0) L->log_fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  int p[2] = {-1, -1}, e[2] = {-1, -1};
  if (L->log_fd < 0 || pipe2(p, O_CLOEXEC) || pipe2(e, O_CLOEXEC)) {
    fprintf(stderr, "gyroctl launch: cannot open %s: %s\n", log, strerror(errno));
    for (int i = 0; i < 2; i++) {
      if (p[i] >= 0) close(p[i]);
      if (e[i] >= 0) close(e[i]);
    }
    return -1;
  }
  char *argv[8] = {L->ctl_bin, "--config", (char *)L->config};
  int n = 3;
  if (L->http) {
    argv[n++] = "--http";
    argv[n++] = (char *)L->http;
  }
  if (L->store[0]) {
    argv[n++] = "--store";
    argv[n++] = L->store;
  }
  argv[n] = NULL;
  pid_t pid = spawn(L, argv, environ, p[1], e[1]);
  close(p[1]);
  close(e[1]);
  if (pid < 0) {
    close(p[0]);
    close(e[0]);
    return -1;
  }
  L->ctl.pid = pid;
  L->out_fd = p[0];
  L->err_fd = e[0];
  return 0;
}

static void read_controller(launch_t *L, int which);

static int any_running(const launch_t *L) {
  if (L->ctl.pid) return 1;
  for (int k = 0; k < L->world; k++)
    if (L->w[k].pid) return 1;
  return 0;
}

static void signal_all(launch_t *L, int sig) {
  if (L->ctl.pid) kill(L->ctl.pid, sig);
  for (int k = 0; k < L->world; k++)
    if (L->w[k].pid) kill(L->w[k].pid, sig);
}

/* Stops everything: SIGTERM now, SIGKILL GRACE_MS later; code is the exit code. */
static void begin_stop(launch_t *L, int code, const char *why) {
  if (L->stopping) return;
  printf("[launch] stopping everything: %s\n", why);
  fflush(stdout);
  L->stopping = 1;
  L->code = code;
  L->term_at = now_ms();
}

static void describe_exit(char *buf, size_t len, int st) {
  if (WIFEXITED(st))
    snprintf(buf, len, "exited with status %d", WEXITSTATUS(st));
  else if (WIFSIGNALED(st))
    snprintf(buf, len, "killed by signal %d (%s)", WTERMSIG(st), strsignal(WTERMSIG(st)));
  else
    snprintf(buf, len, "ended (wait status %d)", st);
}

static void reap(launch_t *L) {
  int st;
  pid_t pid;
  char what[128];
  while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
    describe_exit(what, sizeof(what), st);
    int ok = WIFEXITED(st) && WEXITSTATUS(st) == 0;
    if (pid == L->ctl.pid) {
      L->ctl.pid = 0;
      printf("[launch] controller %s\n", what);
      if (L->stopping) continue;
      if (ok) {
        /* The run is done: the workers were told to stop; give them time to exit. */
        L->stopping = 1;
        L->code = 0;
        L->term_at = now_ms() + GRACE_MS;
      } else if (L->store[0] && !(WIFEXITED(st) && WEXITSTATUS(st) == 2) &&
                 L->ctl_restarts < MAX_RESTARTS) {
        /* Its journal holds the run: a new one goes on from it, the workers rejoin. */
        L->ctl_restarts++;
        printf("[launch] restarting the controller from its journal (%d/%d)\n", L->ctl_restarts,
               MAX_RESTARTS);
        while (L->out_fd >= 0) /* what the dead one wrote last */
          read_controller(L, 0);
        while (L->err_fd >= 0)
          read_controller(L, 1);
        if (start_controller(L)) begin_stop(L, 1, "the controller could not be restarted");
      } else {
        begin_stop(L, 1, "the controller failed");
      }
      continue;
    }
    for (int k = 0; k < L->world; k++) {
      if (L->w[k].pid != pid) continue;
      L->w[k].pid = 0;
      if (L->stopping || ok) {
        printf("[launch] worker %d %s\n", k, what);
      } else if (L->w[k].restarts < MAX_RESTARTS) {
        L->w[k].restarts++;
        printf("[launch] worker %d %s; restarting it (%d/%d), see %s/worker-%d.log\n", k, what,
               L->w[k].restarts, MAX_RESTARTS, L->run_dir, k);
        if (start_worker(L, k)) begin_stop(L, 1, "a worker could not be restarted");
      } else {
        printf("[launch] worker %d %s after %d restarts, see %s/worker-%d.log\n", k, what,
               MAX_RESTARTS, L->run_dir, k);
        begin_stop(L, 1, "a worker keeps failing");
      }
    }
  }
  fflush(stdout);
}

/* ------------------------------------- live trace ------------------------------------- */

static void trace_channels(json_t *rec) {
  json_t *lc = json_object_get(rec, "loss_ch");
  if (json_is_object(lc)) {
    const char *name;
    json_t *v;
    json_object_foreach(lc, name, v) {
      if (json_is_number(v))
        printf("  %s %.3f", name, json_number_value(v));
      else
        printf("  %s -", name);
    }
    return;
  }
  json_t *chs = json_object_get(rec, "channels");
  size_t i;
  json_t *c;
  json_array_foreach(chs, i, c) {
    const char *name = json_string_value(json_object_get(c, "name"));
    json_t *loss = json_object_get(c, "loss");
    double sum = json_number_value(json_object_get(c, "loss_sum"));
    double tok = json_number_value(json_object_get(c, "tokens"));
    if (!name) continue;
    if (json_is_number(loss))
      printf("  %s %.3f", name, json_number_value(loss));
    else if (tok > 0)
      printf("  %s %.3f", name, sum / tok);
    else
      printf("  %s -", name);
  }
}

/* One line of the controller's stderr (JSON log lines): its events, warnings and errors. */
static void trace_log_line(const char *s) {
  json_t *rec = json_loads(s, 0, NULL);
  const char *level = json_string_value(json_object_get(rec, "level"));
  const char *msg = json_string_value(json_object_get(rec, "msg"));
  if (!level || !msg) {
    if (!rec && *s) printf("[controller] %s\n", s); /* not a log line: a crash message? */
  } else if (!strncmp(msg, "event ", 6)) {
    /* "event ID KIND step S: MESSAGE": drop the id */
    const char *rest = strchr(msg + 6, ' ');
    printf("event %s\n", rest ? rest + 1 : msg + 6);
  } else if (!strcmp(level, "warn") || !strcmp(level, "error")) {
    printf("[controller] %s: %s\n", level, msg);
  }
  fflush(stdout);
  json_decref(rec);
}

/* Flags a channel whose loss jumps more than 1.5 nats above (or drops 2.5 below) its moving
 * average, the way an operator would spot it on a curve; returns 1 when something was flagged
 * (the step line is then printed too). The average skips flagged values. */
static int trace_flags(launch_t *L, json_t *rec, int64_t step, int print) {
  json_t *lc = json_object_get(rec, "loss_ch");
  const char *name;
  json_t *v;
  int flagged = 0;
  if (!json_is_object(lc)) return 0;
  json_object_foreach(lc, name, v) {
    if (!json_is_number(v)) continue;
    double x = json_number_value(v);
    int i;
    for (i = 0; i < L->nch && strcmp(L->ch_name[i], name); i++) {
    }
    if (i == L->nch) {
      if (L->nch == 16) continue;
      snprintf(L->ch_name[i], sizeof(L->ch_name[i]), "%s", name);
      L->ch_avg[i] = x;
      L->ch_seen[i] = 0;
      L->nch++;
      if (print) continue;
    }
    int warm = L->ch_seen[i] >= 20;
    int jump = warm && x > L->ch_avg[i] + 1.5, drop = warm && x < L->ch_avg[i] - 2.5;
    if ((jump || drop) && print)
      printf("  !! step %" PRId64 ": %s loss %.3f vs its recent average %.3f: %s\n", step, name, x,
             L->ch_avg[i], jump ? "SPIKE" : "DROP");
    if (jump || drop) {
      flagged = 1;
      continue;
    }
    if (print) continue; /* the printing pass re-reads the same step: no second update */
    L->ch_avg[i] = L->ch_seen[i] ? 0.9 * L->ch_avg[i] + 0.1 * x : x;
    L->ch_seen[i]++;
  }
  return flagged;
}

/* One line of the controller's stdout: steps every 10 (and the first and last), steps with a
 * flagged channel, the rest. */
static void trace_line(launch_t *L, const char *s) {
  json_t *rec = json_loads(s, 0, NULL);
  if (!json_is_object(rec)) {
    json_decref(rec);
    return;
  }
  const char *type = json_string_value(json_object_get(rec, "type"));
  if (type && !strcmp(type, "listening")) {
    const char *a = json_string_value(json_object_get(rec, "address"));
    printf("controller listening on %s\n", a ? a : L->addr);
  } else if (type && !strcmp(type, "http")) {
    const char *url = json_string_value(json_object_get(rec, "url"));
    if (url) printf("  dashboard    %s   (Prometheus: %smetrics)\n", url, url);
  } else if (type && !strcmp(type, "done")) {
    printf("run done at step %" PRId64 "\n",
           (int64_t)json_integer_value(json_object_get(rec, "step")));
  }
  json_t *stepj = json_object_get(rec, "step");
  int64_t step = json_is_integer(stepj) ? json_integer_value(stepj) : -1;
  if (type && !strcmp(type, "step")) {
    int flagged = trace_flags(L, rec, step, 0);
    if (flagged || step == 0 || (step + 1) % 10 == 0 || step + 1 == L->steps) {
      json_t *loss = json_object_get(rec, "loss");
      printf("step %6" PRId64 "  loss ", step);
      if (json_is_number(loss))
        printf("%.4f", json_number_value(loss));
      else
        printf("-");
      trace_channels(rec);
      json_t *tps = json_object_get(rec, "tokens_per_s");
      if (json_is_number(tps)) printf("  tok/s %.0f", json_number_value(tps));
      printf("\n");
      if (flagged) trace_flags(L, rec, step, 1);
    }
  } else if ((type && !strcmp(type, "event")) ||
             (!type && json_is_string(json_object_get(rec, "kind")))) {
    const char *kind = json_string_value(json_object_get(rec, "kind"));
    const char *msg = json_string_value(json_object_get(rec, "message"));
    printf("event %-16s step %-6" PRId64 " %s\n", kind ? kind : "?", step, msg ? msg : "");
  }
  fflush(stdout);
  json_decref(rec);
}

/* Reads the controller's stdout (which = 0) or stderr (1): copies it into controller.log,
 * traces complete lines. */
static void read_controller(launch_t *L, int which) {
  int *fd = which ? &L->err_fd : &L->out_fd;
  char buf[8192], *line = L->line[which];
  size_t *len = &L->linelen[which];
  ssize_t n = read(*fd, buf, sizeof(buf));
  if (n < 0 && (errno == EINTR || errno == EAGAIN)) return;
  if (n <= 0) {
    close(*fd);
    *fd = -1;
    return;
  }
  ssize_t w = write(L->log_fd, buf, (size_t)n);
  (void)w; /* a full disk must not stop the run: the trace goes on */
  for (ssize_t i = 0; i < n; i++) {
    if (buf[i] == '\n') {
      line[*len] = '\0';
      if (which)
        trace_log_line(line);
      else
        trace_line(L, line);
      *len = 0;
    } else if (*len < sizeof(L->line[0]) - 1) {
      line[(*len)++] = buf[i];
    }
  }
}

/* One poll over the signalfd and the controller's pipes; handles what is ready. */
static void poll_once(launch_t *L, int timeout) {
  struct pollfd pf[3] = {{L->sfd, POLLIN, 0}, {L->out_fd, POLLIN, 0}, {L->err_fd, POLLIN, 0}};
  int n = poll(pf, 3, timeout); /* a negative fd is ignored */
  if (n <= 0) return;
  if (pf[0].revents & POLLIN) {
    struct signalfd_siginfo si;
    if (read(L->sfd, &si, sizeof(si)) == sizeof(si)) {
      if (si.ssi_signo == SIGCHLD)
        reap(L);
      else if (!L->stopping)
        begin_stop(L, 128 + (int)si.ssi_signo, strsignal((int)si.ssi_signo));
      else if (L->term_at)
        L->term_at = now_ms(); /* a second Ctrl-C: no grace period */
      else if (L->kill_at)
        L->kill_at = now_ms();
    }
  }
  for (int i = 0; i < 2; i++)
    if (pf[1 + i].fd >= 0 && (pf[1 + i].revents & (POLLIN | POLLHUP | POLLERR)))
      read_controller(L, i);
}

/* ----------------------------------------- main ----------------------------------------- */

static int parse_args(launch_t *L, int argc, char **argv, const char *self) {
  const char *ctl_bin = NULL, *wrk_bin = NULL, *run_dir = NULL;
  int store_given = 0;
  static const struct option opts[] = {{"run-dir", required_argument, 0, 'r'},
                                       {"controller-bin", required_argument, 0, 'c'},
                                       {"worker-bin", required_argument, 0, 'w'},
                                       {"workers-arg", required_argument, 0, 'a'},
                                       {"http", required_argument, 0, 'H'},
                                       {"store", required_argument, 0, 'S'},
                                       {"no-store", no_argument, 0, 'N'},
                                       {"help", no_argument, 0, 'h'},
                                       {0, 0, 0, 0}};
  L->wargs = calloc((size_t)argc, sizeof(char *));
  if (!L->wargs) return 1;
  int c;
  optind = 0;
  while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    switch (c) {
    case 'r':
      run_dir = optarg;
      break;
    case 'c':
      ctl_bin = optarg;
      break;
    case 'w':
      wrk_bin = optarg;
      break;
    case 'a':
      L->wargs[L->nwargs++] = optarg;
      break;
    case 'S':
      snprintf(L->store, sizeof(L->store), "%s", optarg);
      store_given = 1;
      break;
    case 'N':
      L->store[0] = 0;
      store_given = 1;
      break;
    case 'H':
      L->http = optarg;
      break;
    case 'h':
      launch_usage(stdout);
      return -1;
    default:
      launch_usage(stderr);
      return 2;
    }
  }
  if (optind + 1 != argc) {
    fprintf(stderr, "gyroctl launch: want exactly one CONFIG file\n");
    launch_usage(stderr);
    return 2;
  }
  L->config = argv[optind];
  char err[1024] = "";
  gy_run_config_t cfg;
  if (gy_run_config_load(&cfg, L->config, err, sizeof(err))) {
    fprintf(stderr, "gyroctl launch: %s\n", err);
    return 2;
  }
  L->world = cfg.ctl_world;
  L->tp = cfg.ctl_tp;
  L->steps = cfg.steps;
  snprintf(L->name, sizeof(L->name), "%s", cfg.name ? cfg.name : "gyro");
  if (cfg.ctl_join_token && *cfg.ctl_join_token && !(L->join_token = strdup(cfg.ctl_join_token))) {
    gy_run_config_free(&cfg);
    return 1;
  }
  char host[256], port[32];
  int bad = dial_addr(L->addr, sizeof(L->addr), cfg.ctl_listen ? cfg.ctl_listen : "127.0.0.1:7070",
                      host, sizeof(host), port, sizeof(port));
  if (bad)
    fprintf(stderr,
            "gyroctl launch: %s: controller.listen '%s' needs HOST:PORT with a fixed "
            "port\n",
            L->config, cfg.ctl_listen ? cfg.ctl_listen : "");
  gy_run_config_free(&cfg);
  if (bad) return 2;
  if (find_bin(L->ctl_bin, sizeof(L->ctl_bin), ctl_bin, self, "../controller/gyro-controller",
               "gyro-controller") ||
      find_bin(L->wrk_bin, sizeof(L->wrk_bin), wrk_bin, self, "../worker/gyro-worker",
               "gyro-worker"))
    return 2;
  if (run_dir) {
    snprintf(L->run_dir, sizeof(L->run_dir), "%s", run_dir);
  } else {
    char stamp[32];
    time_t t = time(NULL);
    struct tm tm;
    localtime_r(&t, &tm);
    strftime(stamp, sizeof(stamp), "%Y%m%d-%H%M%S", &tm);
    snprintf(L->run_dir, sizeof(L->run_dir), "build/runs/%s-%s", L->name, stamp);
  }
  if (mkdir_p(L->run_dir)) {
    fprintf(stderr, "gyroctl launch: cannot create run folder %s: %s\n", L->run_dir,
            strerror(errno));
    return 1;
  }
  if (!store_given) snprintf(L->store, sizeof(L->store), "sqlite:%s/state.db", L->run_dir);
  cpu_set_t cs;
  int cores = !sched_getaffinity(0, sizeof(cs), &cs) ? CPU_COUNT(&cs) : 0;
  if (cores <= 0) cores = (int)sysconf(_SC_NPROCESSORS_ONLN);
  L->threads = cores / L->world > 1 ? cores / L->world : 1;
  return 0;
}

/* Waits until the controller accepts connections; 0 when it does, else an exit code. */
static int wait_ready(launch_t *L) {
  char host[256], port[32], addr[300];
  dial_addr(addr, sizeof(addr), L->addr, host, sizeof(host), port, sizeof(port));
  double deadline = now_ms() + READY_TIMEOUT_MS;
  while (!tcp_ready(host, port)) {
    poll_once(L, 50);
    if (L->stopping) return L->code ? L->code : 1;
    if (now_ms() > deadline) {
      begin_stop(L, 1, "the controller does not accept connections");
      return 1;
    }
  }
  return 0;
}

int gy_launch_main(int argc, char **argv, const char *self) {
  launch_t *L = calloc(1, sizeof(*L));
  if (!L) return 1;
  L->sfd = L->out_fd = L->err_fd = L->log_fd = -1;
  int code = parse_args(L, argc, argv, self);
  if (code) {
    code = code < 0 ? 0 : code;
    goto out;
  }
  L->w = calloc((size_t)L->world, sizeof(child_t));
  L->wenv = worker_env(L->threads, L->join_token);
  if (!L->w || !L->wenv) {
    fprintf(stderr, "gyroctl launch: out of memory\n");
    code = 1;
    goto out;
  }
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGCHLD);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGTERM);
  sigprocmask(SIG_BLOCK, &mask, &L->oldmask);
  L->sfd = signalfd(-1, &mask, SFD_CLOEXEC);
  if (L->sfd < 0) {
    fprintf(stderr, "gyroctl launch: signalfd: %s\n", strerror(errno));
    code = 1;
    goto out;
  }

  printf("gyroctl launch: run '%s', %d workers (tp %d, dp %d), %d threads each, %" PRId64 " steps\n"
         "  run folder   %s/\n"
         "  controller   %s/controller.log  (%s)\n"
         "  workers      %s/worker-K.jsonl (step records), worker-K.log (logs)\n"
         "  status       gyroctl --controller %s status\n"
         "  follow       gyroctl --controller %s watch --steps\n"
         "  Ctrl-C stops everything.\n",
         L->name, L->world, L->tp, L->world / (L->tp > 0 ? L->tp : 1), L->threads, L->steps,
         L->run_dir, L->run_dir, L->ctl_bin, L->run_dir, L->addr, L->addr);
  fflush(stdout);
  if (start_controller(L)) {
    code = 1;
    goto out;
  }
  if ((code = wait_ready(L)) == 0) {
    for (int k = 0; k < L->world; k++)
      if (start_worker(L, k)) {
        begin_stop(L, 1, "a worker could not be started");
        break;
      }
  }

  /* The event loop: until every child is gone and the controller's stdout is drained. */
  while (any_running(L) || L->out_fd >= 0 || L->err_fd >= 0) {
    double t = now_ms();
    if (L->term_at && t >= L->term_at) {
      L->term_at = 0;
      L->kill_at = t + GRACE_MS;
      signal_all(L, SIGTERM);
    }
    if (L->kill_at && t >= L->kill_at) {
      L->kill_at = 0;
      if (any_running(L))
        printf("[launch] children still running after %d s: SIGKILL\n", GRACE_MS / 1000);
      signal_all(L, SIGKILL);
    }
    double next = L->term_at ? L->term_at : L->kill_at;
    poll_once(L, next ? (int)fmax(0, next - t) + 1 : -1);
  }
  reap(L);
  code = L->code;
  if (code == 0)
    printf("gyroctl launch: the run is done; logs in %s/\n", L->run_dir);
  else
    printf("gyroctl launch: stopped (exit %d); logs in %s/\n", code, L->run_dir);
out:
  if (L->sfd >= 0) close(L->sfd);
  if (L->out_fd >= 0) close(L->out_fd);
  if (L->err_fd >= 0) close(L->err_fd);
  if (L->log_fd >= 0) close(L->log_fd);
  if (L->wenv) {
    for (char **e = L->wenv; *e; e++)
      if (!strncmp(*e, "OMP_NUM_THREADS=", 16)) {
        free(*e);
      } else if (!strncmp(*e, "GYRO_JOIN_TOKEN=", 16)) {
        memset(*e, 0, strlen(*e));
        free(*e);
      }
    free(L->wenv);
  }
  free(L->w);
  free(L->wargs);
  free(L->join_token);
  free(L);
  fflush(stdout);
  return code;
}
