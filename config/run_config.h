/* run_config: the run configuration (YAML) of a run: workers, the controller and gyroctl launch
 * read it. See examples/ and the README's configuration reference. Relative paths are resolved
 * against the config file's folder. */
#ifndef GY_CONFIG_RUN_CONFIG_H
#define GY_CONFIG_RUN_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "config/data_opts.h"
#include "config/knobs.h"
#include "config/model.h"

/* run.device and run.dtype */
enum { GY_DEVICE_CPU = 0, GY_DEVICE_CUDA = 1 };
enum { GY_DTYPE_FP32 = 0, GY_DTYPE_BF16 = 1 };

typedef struct {
  /* run */
  char *name;    /* run.name (default "gyro") */
  uint64_t seed; /* run.seed (default 1337) */
  int64_t steps; /* run.steps: steps to train (default 1000) */
  int threads;   /* run.threads: CPU threads, 0 = all cores (default 0) */
  int device;    /* run.device: GY_DEVICE_CPU (default) or GY_DEVICE_CUDA */
  int dtype;     /* run.dtype: GY_DTYPE_FP32 (default on cpu, the only one there) or
                    GY_DTYPE_BF16 (default on cuda) */
  /* model */
  gy_gpt_config_t model; /* model.{layers,channels,heads,context,vocab,qk_norm} */
  char *init_from;       /* model.init_from: llm.c model file to start from (optional) */
  /* train */
  int batch;        /* train.batch: sequences per step per data-parallel rank (default 8) */
  int seq_len;      /* train.seq_len: T (default model.context) */
  int top_k;        /* train.top_k: worst samples reported per step (default 4) */
  int log_samples;  /* train.log_samples: every step record lists this rank's samples (id,
                       channel, the sample index whose tokens it held, masked) */
  gy_knobs_t knobs; /* optimizer.* and schedule.* */
  /* schedule.boost: {from, to, factor}: the scheduled learning rate is multiplied by factor in
   * steps [from, to) — a stretch where it is far too high, as after a mistaken re-warm-up. It
   * belongs to the run's configuration, not to the optimizer state: a rollback replays it, and
   * only the controller's knob changes (lr_scale) can tame it. factor 0: no boost. */
  int64_t lr_boost_from, lr_boost_to;
  float lr_boost_factor;
  /* data */
  gy_data_opts_t data; /* data.channels[], data.corrupt[], eval.sequences */
  gy_range_t *skip;    /* data.skip: [{from, to}] initial skip list */
  int nskip;
  /* eval */
  int eval_every; /* eval.every: held-out perplexity every N steps, 0 = never (default 100) */
  /* checkpoint */
  char *ckpt_dir;          /* checkpoint.dir (default "checkpoints" beside the config) */
  int ckpt_every;          /* checkpoint.every: steps, 0 = never (default 0) */
  int ckpt_keep_in_memory; /* checkpoint.keep_in_memory: snapshots kept in host memory (default 2)
                            */
  int ckpt_keep;           /* checkpoint.keep: newest files kept on disk (default 5) */
  /* controller (read by gyro-controller and gyroctl launch; workers ignore it) */
  char *ctl_listen;      /* controller.listen: address to serve (default "127.0.0.1:7070") */
  int ctl_world;         /* controller.world: workers in the gang (default 1) */
  int ctl_tp;            /* controller.tp: tensor-parallel size, divides world (default 1) */
  int ctl_window;        /* controller.window: grant horizon ahead of the slowest rank (4) */
  int ctl_heartbeat_ms;  /* controller.heartbeat_ms: parked workers report this often (1000) */
  int ctl_lost_after_ms; /* controller.lost_after_ms: silence that declares a worker lost (10000) */
  /* controller.hang_floor_ms, controller.hang_factor: a rank whose own work inside one step
   * (outside collectives) lasts longer than max(floor, factor x its recent step time) is hung
   * and replaced (60000, 20; floor 0: off) */
  int ctl_hang_floor_ms, ctl_hang_factor;
  /* controller.reform_alert_ms: a gang that lost a worker and has not re-formed within this is
   * told: a reform_stalled event and alert (300000; 0: never) */
  int ctl_reform_alert_ms;
  char *ctl_join_token;     /* controller.join_token: workers must present it (NULL: none) */
  char *ctl_operator_token; /* controller.operator_token: gyroctl must present it (NULL: none) */
  char *ctl_policy;         /* controller.policy: repair policy file (NULL: the built-in default) */
  /* controller.join_token_file / operator_token_file: files holding the tokens (NULL: none;
   * read by gyro-controller; exclusive with the inline keys) */
  char *ctl_join_token_file, *ctl_operator_token_file;
  /* controller.tls: PEM files of the controller's certificate, key and client CA (all NULL:
   * plaintext); client_auth: clients must present a certificate signed by ca (mutual TLS) */
  char *ctl_tls_cert, *ctl_tls_key, *ctl_tls_ca;
  int ctl_tls_client_auth;
  /* controller.http: address of the metrics and dashboard server ("HOST:PORT" or "PORT" on
   * loopback; NULL: none); controller.webhook_url: alert webhook (NULL: none) */
  char *ctl_http, *ctl_webhook_url;
} gy_run_config_t;

/* Loads path. Unknown keys, wrong types and out-of-range values are refused: GY_ECONFIG with
 * "FILE:LINE: key 'a.b': problem" in errmsg. On error *cfg holds nothing to free. */
int gy_run_config_load(gy_run_config_t *cfg, const char *path, char *errmsg, size_t errlen);
/* The same, resolving relative paths against base_dir instead of path's folder. */
int gy_run_config_load_dir(gy_run_config_t *cfg, const char *path, const char *base_dir,
                           char *errmsg, size_t errlen);
/* The same from len bytes of YAML text in memory (the config a worker receives from the
 * controller); messages name it `name`, and relative paths start from base_dir (required for
 * relative paths: text has no folder). */
int gy_run_config_parse(gy_run_config_t *cfg, const char *name, const char *text, size_t len,
                        const char *base_dir, char *errmsg, size_t errlen);
/* Frees what load allocated. */
void gy_run_config_free(gy_run_config_t *cfg);
/* Hash of what a checkpoint must agree with (model shape, seq_len, channel names and files). */
uint64_t gy_run_config_hash(const gy_run_config_t *cfg);

#endif
