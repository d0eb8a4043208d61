/*
 * gyro-controller: serves one training run's control plane (controller/service.h).
 *
 *   gyro-controller --config FILE [--listen ADDR] [--grace-ms N] [--log-level LEVEL] [--stats]
 *                   [--tls-cert F --tls-key F [--tls-ca F] [--tls-client-auth[=true|false]]]
 *                   [--join-token-file F] [--operator-token-file F]
 *
 * TLS: --tls-* override controller.tls.* of the config one by one; client auth defaults to on
 * when a CA is given (mutual TLS). The files are read and checked before serving. Tokens, first
 * found wins: --*-token-file, then $GYRO_JOIN_TOKEN / $GYRO_OPERATOR_TOKEN, then the config's
 * *_token_file, then its inline *_token (which every worker receives with the config: a warning
 * says so). Tokens are never printed.
 *
 * Reads the run config (config/run_config.h: the run, and its `controller:` section) and the repair
 * policy it names (controller.policy; none: the built-in default), binds, prints
 * {"type":"listening","address":ADDR,"port":PORT} on stdout, then one {"type":"step",...} line
 * per aggregated step; events go to stderr as JSON log lines. Stops on SIGINT/SIGTERM. When the
 * run is DONE it waits --grace-ms (default 1000) so that workers receive their last messages,
 * prints {"type":"done","step":...} and exits. With --stats it prints, just before exiting,
 * {"type":"stats","cpu_user_s":U,"cpu_sys_s":S,"wall_s":W,"steps":N}: its own CPU time (every
 * thread, getrusage), its wall time and the steps aggregated (bench/controller_cost.sh).
 *
 * Surfaces: --http ADDR (or controller.http) serves /metrics, /healthz, /readyz, the dashboard
 * and its /api/ endpoints on ADDR ("HOST:PORT", or "PORT" on loopback; controller/http.h) and
 * prints {"type":"http","address":ADDR,"port":PORT,"url":URL} after the listening line;
 * --webhook URL (or controller.webhook_url) posts alerts there (controller/alert.h). The flags
 * win.
 *
 * State store: --store URL ("sqlite:PATH" on one machine, "etcd://HOST:PORT[,HOST:PORT...]"
 * for a cluster; controller/store.h) keeps the run's journal (controller/journal.h) under
 * /gyro/<run>/ (--run NAME, default run.name): events, committed checkpoints, skips in force,
 * and each rollback's intent before its directive is sent. A controller started on a store that
 * holds the run goes on from it. With a store, controllers elect a leader over a lease
 * (--lease-ttl S, default 5; controller/leader.h): a standby waits, serving nothing, until the
 * leader's lease ends, then reads the journal and serves; a leader that loses its lease exits
 * at once (status 3) so that it never acts beside its successor. etcd options: --store-ca,
 * --store-cert, --store-key (TLS), --store-user and --store-password-file (authentication).
 *
 * Exit status: 0 the run is done, or stopped by a signal; 1 cannot serve (bind failure, out of
 * memory, store unreachable); 2 usage, bad config or bad policy file; 3 lost the leadership.
 */
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "common/err.h"
#include "common/log.h"
#include "common/rpc.h"
#include "controller/http.h"
#include "controller/journal.h"
#include "controller/leader.h"
#include "controller/store.h"
#include "controller/service.h"
#include "config/policy_file.h"
#include "policies/policy.h"
#include "config/run_config.h"

typedef struct {
  uv_loop_t *loop;
  gy_service_t *svc;
  uv_signal_t sigint, sigterm;
  uv_timer_t grace;
  int grace_ms;
  int stopping;
} app_t;

static void usage(FILE *f) {
  fprintf(f, "usage: gyro-controller --config FILE [--listen ADDR] [--grace-ms N] "
             "[--log-level debug|info|warn|error] [--stats]\n"
             "         [--tls-cert FILE --tls-key FILE [--tls-ca FILE] "
             "[--tls-client-auth[=true|false]]]\n"
             "         [--join-token-file FILE] [--operator-token-file FILE]\n"
             "         [--http HOST:PORT|PORT] [--webhook URL]\n"
             "         [--store sqlite:PATH|etcd://HOST:PORT[,...] [--run NAME] [--lease-ttl S]\n"
             "          [--store-ca F] [--store-cert F --store-key F] [--store-user U "
             "--store-password-file F]]\n"
             "  tokens also from $GYRO_JOIN_TOKEN and $GYRO_OPERATOR_TOKEN\n");
}

/* One token: the file flag, else the environment, else the config's file, else its inline
 * value. *out is malloc'ed (NULL: no token). Returns 0 or 2 (the exit status) after printing
 * why, naming the source and never the token. */
static int pick_token(const char *name, const char *flag_file, const char *env,
                      const char *cfg_file, const char *cfg_inline, char **out) {
  char errmsg[600];
  const char *val = NULL, *src = NULL;
  *out = NULL;
  if (flag_file || (!getenv(env) && cfg_file)) {
    const char *f = flag_file ? flag_file : cfg_file;
    if (gy_rpc_token_read_file(f, out, errmsg, sizeof(errmsg))) {
      fprintf(stderr, "gyro-controller: %s: %s\n", name, errmsg);
      return 2;
    }
    return 0;
  }
  if (getenv(env) && *getenv(env)) {
    val = getenv(env);
    src = env;
  } else if (cfg_inline) {
    val = cfg_inline;
    src = name;
    gy_log(GY_LOG_WARN, "controller",
           "%s is written in the run config, which every worker receives with its assignment: "
           "prefer %s_file or $%s",
           name, name, env);
  }
  if (!val) return 0;
  if (gy_rpc_token_check(src, val, errmsg, sizeof(errmsg))) {
    fprintf(stderr, "gyro-controller: %s\n", errmsg);
    return 2;
  }
  if (!(*out = strdup(val))) {
    fprintf(stderr, "gyro-controller: out of memory\n");
    return 1;
  }
  return 0;
}

static void free_secret(char *s) {
  if (s) memset(s, 0, strlen(s));
  free(s);
}

/* --tls-client-auth[=true|false]: 1, 0, or -1 for anything else. */
static int parse_bool_arg(const char *a) {
  if (!a || !strcmp(a, "true") || !strcmp(a, "1") || !strcmp(a, "yes")) return 1;
  if (!strcmp(a, "false") || !strcmp(a, "0") || !strcmp(a, "no")) return 0;
  return -1;
}

/* Reads a whole file into a NUL-terminated buffer (caller frees); NULL with errmsg on error. */
static char *read_text(const char *path, char *errmsg, size_t errlen) {
  FILE *f = fopen(path, "rb");
  char *buf = NULL;
  if (!f) goto err;
  if (fseek(f, 0, SEEK_END) != 0) goto err;
  long n = ftell(f);
  if (n < 0 || fseek(f, 0, SEEK_SET) != 0) goto err;
  buf = malloc((size_t)n + 1);
  if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n) goto err;
  buf[n] = 0;
  fclose(f);
  return buf;
err:
  snprintf(errmsg, errlen, "%s: cannot read the config file", path);
  free(buf);
  if (f) fclose(f);
  return NULL;
}

/* ------------------------------------ store and leadership ------------------------------------ */

typedef struct {
  const char *url, *run, *ca, *cert, *key, *user, *password_file;
  int ttl;
} store_args_t;

static volatile sig_atomic_t elected = 0, standby_signal = 0, resigning = 0;

static void on_elected(void *ud, int64_t token) {
  (void)ud;
  gy_log(GY_LOG_INFO, "controller", "elected leader (fencing token %lld)", (long long)token);
  elected = 1;
}

/* A leader that lost its lease must not act one moment longer beside its successor. */
static void on_deposed(void *ud, int64_t token, const char *why) {
  (void)ud;
  if (resigning) return; /* our own gy_leader_stop */
  gy_log(GY_LOG_ERROR, "controller", "lost the leadership (token %lld): %s; exiting",
         (long long)token, why ? why : "");
  fflush(stdout);
  fflush(stderr);
  _exit(3);
}

/* The service's fence: this controller still leads when the leader key exists with the
 * create revision (token) it won. When the store cannot answer (an etcd outage), the lease
 * still protects the leadership for a TTL after the last confirmation: the fence holds that
 * long (the elector deposes this controller by then if its keep-alives keep failing). A key
 * that is another's or gone, or an unconfirmed leadership older than the TTL, means it must not
 * act: it exits at once (status 3). It runs on the service's writer thread (service.h: fence),
 * never on the loop thread, and only there: confirmed_ms needs no lock. */
typedef struct {
  gy_cstore_t *store;
  gy_leader_t *leader;
  int ttl_ms;
  int64_t confirmed_ms; /* monotonic time of the last confirmation */
} fence_t;

static int64_t mono_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int fence_check(void *ud) {
  fence_t *f = ud;
  int64_t token = 0, t0 = mono_now_ms();
  char err[256] = "";
  gy_cstore_kv_t kv = {0};
  int lead = gy_leader_is_leader(f->leader, &token);
  int rc =
      lead ? gy_cstore_get(f->store, gy_leader_key(f->leader), &kv, NULL, 2000, err, sizeof(err))
           : GY_ENOENT;
  int ok = lead && !rc && kv.create_revision == token;
  gy_cstore_kv_clear(&kv);
  if (ok) {
    f->confirmed_ms = t0;
    return 1;
  }
  /* unreachable store: still ours while the lease confirmed before the call surely lasts (a
   * keep-alive every TTL/3 leaves at least 2/3 TTL) */
  if (lead && rc && rc != GY_ENOENT && t0 - f->confirmed_ms < f->ttl_ms) {
    gy_log(GY_LOG_WARN, "controller", "fence: the store does not answer (%s); the lease holds",
           err);
    return 1;
  }
  gy_log(GY_LOG_ERROR, "controller",
         "fence: this controller no longer leads (token %lld; %s): exiting before it acts",
         (long long)token,
         !lead                    ? "deposed"
         : rc == GY_ENOENT || !rc ? "the leader key is another's or gone"
                                  : err);
  fflush(stdout);
  fflush(stderr);
  _exit(3);
  return 0;
}

static void on_standby_signal(int sig) {
  standby_signal = sig;
}

/* Opens the store and its journal, then waits to lead. Returns 0 (leading), or the exit
 * status after printing why. */
static int store_open(const store_args_t *st, const char *run_name, gy_cstore_t **store,
                      gy_journal_t **journal, gy_leader_t **leader) {
  char errmsg[512] = "", *password = NULL, id[300], host[256] = "?";
  if (st->password_file &&
      gy_rpc_token_read_file(st->password_file, &password, errmsg, sizeof(errmsg))) {
    fprintf(stderr, "gyro-controller: --store-password-file: %s\n", errmsg);
    return 2;
  }
  gy_cstore_opts_t so = {.ca_file = st->ca,
                         .cert_file = st->cert,
                         .key_file = st->key,
                         .username = st->user,
                         .password = password};
  int rc = gy_cstore_create(store, st->url, &so, errmsg, sizeof(errmsg));
  free_secret(password);
  if (rc) {
    fprintf(stderr, "gyro-controller: --store %s: %s\n", st->url, errmsg);
    return rc == GY_EINVAL || rc == GY_ECONFIG ? 2 : 1;
  }
  const char *run = st->run ? st->run : run_name;
  if (gy_journal_open(journal, *store, run, errmsg, sizeof(errmsg))) {
    fprintf(stderr, "gyro-controller: --run: %s\n", errmsg);
    return 2;
  }
  gethostname(host, sizeof(host) - 1);
  snprintf(id, sizeof(id), "%s:%d", host, (int)getpid());
  gy_leader_opts_t lo = {.store = *store,
                         .run = run,
                         .id = id,
                         .ttl_s = st->ttl,
                         .on_elected = on_elected,
                         .on_deposed = on_deposed};
  void (*old_int)(int) = signal(SIGINT, on_standby_signal);
  void (*old_term)(int) = signal(SIGTERM, on_standby_signal);
  if (gy_leader_start(leader, &lo, errmsg, sizeof(errmsg))) {
    fprintf(stderr, "gyro-controller: leader election on %s: %s\n", st->url, errmsg);
    return 1;
  }
  int said = 0;
  while (!elected && !standby_signal) {
    if (!said++)
      gy_log(GY_LOG_INFO, "controller", "standby: waiting for the leadership of run %s on %s", run,
             st->url);
    struct timespec ts = {0, 50 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  signal(SIGINT, old_int);
  signal(SIGTERM, old_term);
  if (!elected) {
    gy_log(GY_LOG_INFO, "controller", "signal %d while standing by: stopping", (int)standby_signal);
    return 0 - 1; /* the caller exits 0 */
  }
  return 0;
}

static void close_cb(uv_handle_t *h) {
  (void)h;
}

static void service_down(void *ud) {
  app_t *a = ud;
  uv_close((uv_handle_t *)&a->sigint, close_cb);
  uv_close((uv_handle_t *)&a->sigterm, close_cb);
  uv_close((uv_handle_t *)&a->grace, close_cb);
}

static void stop(app_t *a) {
  if (a->stopping) return;
  a->stopping = 1;
  uv_timer_stop(&a->grace);
  gy_service_shutdown(a->svc, service_down, a);
}

static void on_signal(uv_signal_t *h, int signum) {
  app_t *a = h->data;
  gy_log(GY_LOG_INFO, "controller", "signal %d: stopping", signum);
  stop(a);
}

static void on_grace(uv_timer_t *t) {
  app_t *a = t->data;
  const gy_fleet_t *f = gy_service_fleet(a->svc);
  gy_json_emit(json_pack("{s:s, s:I, s:s}", "type", "done", "step",
                         (json_int_t)(gy_fleet_last_step(f) + 1), "state",
                         gy_fleet_state_name(gy_fleet_state(f))));
  stop(a);
}

static void on_done(void *ud) {
  app_t *a = ud;
  uv_timer_start(&a->grace, on_grace, (uint64_t)a->grace_ms, 0);
}

int main(int argc, char **argv) {
  const char *config = NULL, *listen = NULL;
  const char *tls_cert = NULL, *tls_key = NULL, *tls_ca = NULL;
  const char *join_file = NULL, *op_file = NULL;
  const char *http = NULL, *webhook = NULL;
  int tls_client_auth = -1; /* -1: not given */
  char *join_token = NULL, *op_token = NULL;
  int grace_ms = 1000, stats = 0;
  store_args_t st = {.ttl = 5};
  gy_cstore_t *store = NULL;
  gy_journal_t *journal = NULL;
  gy_leader_t *leader = NULL;
  struct timespec t_start;
  clock_gettime(CLOCK_MONOTONIC, &t_start);
  static const struct option longopts[] = {{"config", required_argument, NULL, 'c'},
                                           {"listen", required_argument, NULL, 'l'},
                                           {"grace-ms", required_argument, NULL, 'g'},
                                           {"log-level", required_argument, NULL, 'L'},
                                           {"stats", no_argument, NULL, 'S'},
                                           {"tls-cert", required_argument, NULL, 'T'},
                                           {"tls-key", required_argument, NULL, 'K'},
                                           {"tls-ca", required_argument, NULL, 'A'},
                                           {"tls-client-auth", optional_argument, NULL, 'U'},
                                           {"join-token-file", required_argument, NULL, 'J'},
                                           {"operator-token-file", required_argument, NULL, 'O'},
                                           {"http", required_argument, NULL, 'H'},
                                           {"webhook", required_argument, NULL, 'W'},
                                           {"store", required_argument, NULL, 1000},
                                           {"run", required_argument, NULL, 1001},
                                           {"lease-ttl", required_argument, NULL, 1002},
                                           {"store-ca", required_argument, NULL, 1003},
                                           {"store-cert", required_argument, NULL, 1004},
                                           {"store-key", required_argument, NULL, 1005},
                                           {"store-user", required_argument, NULL, 1006},
                                           {"store-password-file", required_argument, NULL, 1007},
                                           {"help", no_argument, NULL, 'h'},
                                           {NULL, 0, NULL, 0}};
  int ch;
  while ((ch = getopt_long(argc, argv, "c:l:h", longopts, NULL)) != -1) {
    switch (ch) {
    case 'c':
      config = optarg;
      break;
    case 1000:
      st.url = optarg;
      break;
    case 1001:
      st.run = optarg;
      break;
    case 1002: {
      char *end;
      long v = strtol(optarg, &end, 10);
      if (*end || v < 1 || v > 3600) {
        fprintf(stderr, "gyro-controller: --lease-ttl: expected seconds in 1..3600, got '%s'\n",
                optarg);
        return 2;
      }
      st.ttl = (int)v;
      break;
    }
    case 1003:
      st.ca = optarg;
      break;
    case 1004:
      st.cert = optarg;
      break;
    case 1005:
      st.key = optarg;
      break;
    case 1006:
      st.user = optarg;
      break;
    case 1007:
      st.password_file = optarg;
      break;
    case 'l':
      listen = optarg;
      break;
    case 'g': {
      char *end;
      long v = strtol(optarg, &end, 10);
      if (*end || v < 0 || v > 600000) {
        fprintf(stderr, "gyro-controller: --grace-ms: '%s' is not a number in [0, 600000]\n",
                optarg);
        return 2;
      }
      grace_ms = (int)v;
      break;
    }
    case 'L':
      if (!strcmp(optarg, "debug"))
        gy_log_set_level(GY_LOG_DEBUG);
      else if (!strcmp(optarg, "info"))
        gy_log_set_level(GY_LOG_INFO);
      else if (!strcmp(optarg, "warn"))
        gy_log_set_level(GY_LOG_WARN);
      else if (!strcmp(optarg, "error"))
        gy_log_set_level(GY_LOG_ERROR);
      else {
        fprintf(stderr, "gyro-controller: --log-level: unknown level '%s'\n", optarg);
        return 2;
      }
      break;
    case 'S':
      stats = 1;
      break;
    case 'T':
      tls_cert = optarg;
      break;
    case 'K':
      tls_key = optarg;
      break;
    case 'A':
      tls_ca = optarg;
      break;
    case 'U':
      if ((tls_client_auth = parse_bool_arg(optarg)) < 0) {
        fprintf(stderr, "gyro-controller: --tls-client-auth: '%s' is not true or false\n", optarg);
        return 2;
      }
      break;
    case 'J':
      join_file = optarg;
      break;
    case 'O':
      op_file = optarg;
      break;
    case 'H':
      http = optarg;
      break;
    case 'W':
      webhook = optarg;
      break;
    case 'h':
      usage(stdout);
      return 0;
    default:
      usage(stderr);
      return 2;
    }
  }
  if (!config || optind != argc) {
    usage(stderr);
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);

  char errmsg[512] = "";
  gy_run_config_t cfg;
  if (gy_run_config_load(&cfg, config, errmsg, sizeof(errmsg)) != 0) {
    fprintf(stderr, "gyro-controller: %s\n", errmsg);
    return 2;
  }
  /* TLS: the flags override the config's controller.tls one by one. */
  gy_rpc_server_tls_t tls = {
      .cert = tls_cert ? tls_cert : cfg.ctl_tls_cert,
      .key = tls_key ? tls_key : cfg.ctl_tls_key,
      .ca = tls_ca ? tls_ca : cfg.ctl_tls_ca,
      .client_auth = tls_client_auth >= 0 ? tls_client_auth
                     : tls_ca             ? 1
                                          : cfg.ctl_tls_client_auth,
  };
  if (tls.cert || tls.key || tls.ca) {
    if (gy_rpc_server_tls_default(&tls, errmsg, sizeof(errmsg)) != 0) {
      fprintf(stderr, "gyro-controller: TLS: %s\n", errmsg);
      gy_run_config_free(&cfg);
      return 2;
    }
    gy_log(GY_LOG_INFO, "controller", "TLS on: %s",
           tls.client_auth ? "clients must present a certificate signed by the CA (mutual TLS)"
                           : "client certificates are not required");
  } else if (tls_client_auth > 0) {
    fprintf(stderr, "gyro-controller: --tls-client-auth needs --tls-cert, --tls-key and "
                    "--tls-ca\n");
    gy_run_config_free(&cfg);
    return 2;
  }
  gy_policy_t policy;
  gy_policy_default(&policy);
  if (cfg.ctl_policy && gy_policy_load(&policy, cfg.ctl_policy, errmsg, sizeof(errmsg)) != 0) {
    fprintf(stderr, "gyro-controller: controller.policy: %s\n", errmsg);
    gy_run_config_free(&cfg);
    return 2;
  }
  gy_fleet_skip_t *skip = NULL;
  if (cfg.nskip > 0 && !(skip = calloc((size_t)cfg.nskip, sizeof(*skip)))) {
    fprintf(stderr, "gyro-controller: out of memory\n");
    gy_run_config_free(&cfg);
    return 1;
  }
  for (int i = 0; i < cfg.nskip; i++)
    skip[i] = (gy_fleet_skip_t){cfg.skip[i].first, cfg.skip[i].last};
  int rc = 1;
  char *text = read_text(config, errmsg, sizeof(errmsg));
  char dirbuf[PATH_MAX], absdir[PATH_MAX];
  snprintf(dirbuf, sizeof(dirbuf), "%s", config);
  const char *dir = dirname(dirbuf);
  if (!realpath(dir, absdir)) snprintf(absdir, sizeof(absdir), "%s", dir);
  if (!text) {
    fprintf(stderr, "gyro-controller: %s\n", errmsg);
    free(skip);
    gy_run_config_free(&cfg);
    return 2;
  }

  int trc;
  if ((trc = pick_token("controller.join_token", join_file, "GYRO_JOIN_TOKEN",
                        cfg.ctl_join_token_file, cfg.ctl_join_token, &join_token)) ||
      (trc = pick_token("controller.operator_token", op_file, "GYRO_OPERATOR_TOKEN",
                        cfg.ctl_operator_token_file, cfg.ctl_operator_token, &op_token))) {
    free_secret(join_token);
    free(text);
    free(skip);
    gy_run_config_free(&cfg);
    return trc;
  }

  app_t a;
  memset(&a, 0, sizeof(a));
  a.loop = uv_default_loop();
  a.grace_ms = grace_ms;
  /* The HTTP surface and the alert webhook: the telemetry record both read, the server bound
   * before the gRPC one so that a bad address stops everything before any worker is served. */
  gy_telemetry_t *tm = NULL;
  gy_alert_t *alert = NULL;
  gy_http_t *http_srv = NULL;
  fence_t fence = {0};
  if (st.url) {
    int src = store_open(&st, cfg.name, &store, &journal, &leader);
    if (src) {
      rc = src < 0 ? 0 : src;
      goto out;
    }
    fence = (fence_t){store, leader, st.ttl * 2000 / 3, mono_now_ms()};
  } else if (st.run || st.ca || st.cert || st.key || st.user || st.password_file) {
    fprintf(stderr, "gyro-controller: --run and --store-* need --store\n");
    rc = 2;
    goto out;
  }
  const char *http_addr = http ? http : cfg.ctl_http;
  const char *hook = webhook ? webhook : cfg.ctl_webhook_url;
  if (http_addr || hook) {
    char host[256];
    int port;
    gy_telemetry_opts_t to = {
        .run_name = cfg.name, .world = cfg.ctl_world, .tp = cfg.ctl_tp, .steps = cfg.steps};
    if (http_addr &&
        gy_http_parse_addr(http_addr, host, sizeof(host), &port, errmsg, sizeof(errmsg))) {
      fprintf(stderr, "gyro-controller: %s: %s\n", http ? "--http" : "controller.http", errmsg);
      rc = 2;
      goto out;
    }
    if (gy_telemetry_create(&tm, &to, errmsg, sizeof(errmsg))) {
      fprintf(stderr, "gyro-controller: %s\n", errmsg);
      goto out;
    }
    gy_alert_opts_t ao = {.url = hook, .run_name = cfg.name, .telemetry = tm};
    if (hook && gy_alert_create(&alert, &ao, errmsg, sizeof(errmsg))) {
      fprintf(stderr, "gyro-controller: %s: %s\n", webhook ? "--webhook" : "controller.webhook_url",
              errmsg);
      rc = 2;
      goto out;
    }
    gy_http_opts_t ho = {.addr = http_addr, .telemetry = tm};
    if (http_addr && gy_http_create(&http_srv, &ho, errmsg, sizeof(errmsg))) {
      fprintf(stderr, "gyro-controller: cannot serve HTTP on %s: %s\n", http_addr, errmsg);
      goto out;
    }
  }
  /* the run config's channels and shards: what an operator's quarantine may name */
  gy_core_channel_t chans[GY_FLEET_MAX_CH];
  int nchans = cfg.data.nchannels < GY_FLEET_MAX_CH ? cfg.data.nchannels : GY_FLEET_MAX_CH;
  for (int i = 0; i < nchans; i++)
    chans[i] = (gy_core_channel_t){.name = cfg.data.channels[i].name,
                                   .files = (const char *const *)cfg.data.channels[i].files,
                                   .nfiles = cfg.data.channels[i].nfiles};
  gy_service_opts_t so = {
      .listen = listen           ? listen
                : cfg.ctl_listen ? cfg.ctl_listen
                                 : "127.0.0.1:7070",
      .run_name = cfg.name,
      .world = cfg.ctl_world,
      .tp = cfg.ctl_tp,
      .window = cfg.ctl_window,
      .heartbeat_ms = cfg.ctl_heartbeat_ms,
      .lost_after_ms = cfg.ctl_lost_after_ms,
      .hang_floor_ms = cfg.ctl_hang_floor_ms,
      .hang_factor = cfg.ctl_hang_factor,
      .reform_alert_ms = cfg.ctl_reform_alert_ms,
      .steps = cfg.steps,
      .join_token = join_token,
      .operator_token = op_token,
      .config_yaml = text,
      .config_dir = absdir,
      .health = 1,
      .emit_steps = 1,
      .policy = &policy,
      .batch = cfg.batch,
      .base_lr_scale = cfg.knobs.lr_scale,
      .base_grad_clip = cfg.knobs.grad_clip,
      .base_eps = cfg.knobs.eps,
      .skip = skip,
      .nskip = cfg.nskip,
      .telemetry = tm,
      .alert = alert,
      .journal = journal,
      .fence = leader ? fence_check : NULL,
      .fence_ud = &fence,
      .fence_every_ms = st.ttl * 1000 / 3,
      .channels = chans,
      .nchannels = nchans,
  };
  if (gy_service_create(&a.svc, a.loop, &so, errmsg, sizeof(errmsg)) != 0) {
    fprintf(stderr, "gyro-controller: cannot serve on %s: %s\n", so.listen, errmsg);
    goto out;
  }
  gy_service_on_done(a.svc, on_done, &a);
  uv_signal_init(a.loop, &a.sigint);
  uv_signal_init(a.loop, &a.sigterm);
  uv_timer_init(a.loop, &a.grace);
  a.sigint.data = a.sigterm.data = a.grace.data = &a;
  uv_signal_start(&a.sigint, on_signal, SIGINT);
  uv_signal_start(&a.sigterm, on_signal, SIGTERM);
  /* the address as bound: "HOST:0" becomes "HOST:PORT" */
  char addr[300];
  const char *colon = strrchr(so.listen, ':');
  snprintf(addr, sizeof(addr), "%.*s:%d", colon ? (int)(colon - so.listen) : (int)strlen(so.listen),
           so.listen, gy_service_port(a.svc));
  gy_json_emit(json_pack("{s:s, s:s, s:i}", "type", "listening", "address", addr, "port",
                         gy_service_port(a.svc)));
  if (http_srv) {
    char host[256], haddr[300];
    int hport;
    gy_http_parse_addr(http_addr, host, sizeof(host), &hport, errmsg, sizeof(errmsg));
    hport = gy_http_port(http_srv);
    int wild = !strcmp(host, "0.0.0.0") || !strcmp(host, "::");
    snprintf(haddr, sizeof(haddr), strchr(host, ':') ? "[%s]:%d" : "%s:%d",
             wild ? "127.0.0.1" : host, hport);
    char url[320];
    snprintf(url, sizeof(url), "http://%s/", haddr);
    gy_telemetry_set_ready(tm, 1, "serving");
    gy_json_emit(json_pack("{s:s, s:s, s:i, s:s}", "type", "http", "address", haddr, "port", hport,
                           "url", url));
  }
  gy_log(GY_LOG_INFO, "controller", "run %s: world %d, tp %d, window %d, steps %lld, on port %d",
         cfg.name, cfg.ctl_world, cfg.ctl_tp, cfg.ctl_window, (long long)cfg.steps,
         gy_service_port(a.svc));
  if (gy_service_recovered_done(a.svc)) { /* a restart after the end: nothing left to do */
    gy_log(GY_LOG_INFO, "controller", "the journal says run %s is done: exiting", cfg.name);
    gy_json_emit(json_pack("{s:s, s:I, s:s}", "type", "done", "step", (json_int_t)cfg.steps,
                           "state", "DONE"));
    stop(&a);
  }
  uv_run(a.loop, UV_RUN_DEFAULT);
  int64_t steps_done = gy_fleet_last_step(gy_service_fleet(a.svc)) + 1 -
                       gy_fleet_start_step(gy_service_fleet(a.svc));
  gy_service_destroy(a.svc);
  rc = 0;
  if (stats) {
    struct rusage ru;
    struct timespec t_end;
    getrusage(RUSAGE_SELF, &ru);
    clock_gettime(CLOCK_MONOTONIC, &t_end);
    gy_json_emit(json_pack(
        "{s:s, s:f, s:f, s:f, s:I}", "type", "stats", "cpu_user_s",
        (double)ru.ru_utime.tv_sec + 1e-6 * (double)ru.ru_utime.tv_usec, "cpu_sys_s",
        (double)ru.ru_stime.tv_sec + 1e-6 * (double)ru.ru_stime.tv_usec, "wall_s",
        (double)(t_end.tv_sec - t_start.tv_sec) + 1e-9 * (double)(t_end.tv_nsec - t_start.tv_nsec),
        "steps", (json_int_t)(steps_done > 0 ? steps_done : 0)));
  }
out:
  resigning = 1;
  gy_leader_stop(leader); /* resigns: a standby leads at once */
  gy_journal_close(journal);
  gy_cstore_destroy(store);
  gy_http_destroy(http_srv); /* its threads read tm: first */
  gy_alert_destroy(alert);   /* flushes what is queued (3 s at most) */
  gy_telemetry_destroy(tm);
  uv_loop_close(a.loop);
  free_secret(join_token);
  free_secret(op_token);
  gy_rpc_server_tls_default(NULL, NULL, 0);
  free(text);
  free(skip);
  gy_run_config_free(&cfg);
  return rc;
}
