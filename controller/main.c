/*
 * gyro-controller: serves one training run's control plane (controller/service.h).
 *
 *   gyro-controller --config FILE [--listen ADDR] [--grace-ms N] [--log-level LEVEL] [--stats]
 *
 * Reads the run config (worker/config.h: the run, and its `controller:` section) and the repair
 * policy it names (controller.policy; none: the built-in default), binds, prints
 * {"type":"listening","address":ADDR,"port":PORT} on stdout, then one {"type":"step",...} line
 * per aggregated step; events go to stderr as JSON log lines. Stops on SIGINT/SIGTERM. When the
 * run is DONE it waits --grace-ms (default 1000) so that workers receive their last messages,
 * prints {"type":"done","step":...} and exits. With --stats it prints, just before exiting,
 * {"type":"stats","cpu_user_s":U,"cpu_sys_s":S,"wall_s":W,"steps":N}: its own CPU time (every
 * thread, getrusage), its wall time and the steps aggregated (bench/controller_cost.sh).
 *
 * Exit status: 0 the run is done, or stopped by a signal; 1 cannot serve (bind failure, out of
 * memory); 2 usage, bad config or bad policy file.
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
#include <uv.h>

#include "common/err.h"
#include "common/log.h"
#include "controller/service.h"
#include "policies/policy.h"
#include "worker/config.h"

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
             "[--log-level debug|info|warn|error] [--stats]\n");
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
  int grace_ms = 1000, stats = 0;
  struct timespec t_start;
  clock_gettime(CLOCK_MONOTONIC, &t_start);
  static const struct option longopts[] = {{"config", required_argument, NULL, 'c'},
                                           {"listen", required_argument, NULL, 'l'},
                                           {"grace-ms", required_argument, NULL, 'g'},
                                           {"log-level", required_argument, NULL, 'L'},
                                           {"stats", no_argument, NULL, 'S'},
                                           {"help", no_argument, NULL, 'h'},
                                           {NULL, 0, NULL, 0}};
  int ch;
  while ((ch = getopt_long(argc, argv, "c:l:h", longopts, NULL)) != -1) {
    switch (ch) {
    case 'c':
      config = optarg;
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

  app_t a;
  memset(&a, 0, sizeof(a));
  a.loop = uv_default_loop();
  a.grace_ms = grace_ms;
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
      .steps = cfg.steps,
      .join_token = cfg.ctl_join_token,
      .operator_token = cfg.ctl_operator_token,
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
  gy_log(GY_LOG_INFO, "controller", "run %s: world %d, tp %d, window %d, steps %lld, on port %d",
         cfg.name, cfg.ctl_world, cfg.ctl_tp, cfg.ctl_window, (long long)cfg.steps,
         gy_service_port(a.svc));
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
  uv_loop_close(a.loop);
  free(text);
  free(skip);
  gy_run_config_free(&cfg);
  return rc;
}
