/*
 * gyro-worker: the worker process. For now it runs standalone: one process that trains on the
 * run config's channels and prints one JSON object per step on stdout (events and logs on
 * stderr). The supervised mode (controller over gRPC) is built on the same engine.
 *
 * Exit codes: 0 done, 1 runtime failure, 2 bad usage or configuration.
 */
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/log.h"
#include "kernels/llmc_io.h"
#include "worker/config.h"
#include "worker/train.h"

static volatile sig_atomic_t stop_requested = 0;
static void on_signal(int sig) {
  (void)sig;
  stop_requested = 1;
}

static void usage(FILE *f) {
  fprintf(f,
          "usage: gyro-worker --standalone --config FILE [options]\n"
          "  --steps N            train until N steps are done (default: run.steps)\n"
          "  --resume FILE        restore a checkpoint file first\n"
          "  --threads N          CPU threads (default: run.threads, 0 = all cores)\n"
          "  --export-llmc FILE   at the end, write the model as an llm.c model file\n"
          "  --eval-only          evaluate held-out perplexity once and exit\n"
          "  --quiet-steps        print eval and checkpoint records only\n"
          "parallel training (one process per rank; every rank prints the same records):\n"
          "  --rank R --world W   this process's rank of W (default 0 of 1)\n"
          "  --tp T               tensor-parallel group size (divides W; data-parallel = W/T)\n"
          "  --rdzv file:DIR      rendezvous store: a fresh folder all ranks can reach\n"
          "  --backend gloo|nccl  collectives (default gloo)\n"
          "  --comm-timeout MS    a dead or hung peer fails a collective after MS (30000)\n"
          "  --no-overlap         reduce gradients after the backward pass, not during it\n"
          "  -h, --help\n");
}

static json_t *num_or_null(double v) {
  return isfinite(v) ? json_real(v) : json_null();
}

static void emit_step(const gy_trainer_t *tr, gy_data_t *d, const gy_step_report_t *r) {
  (void)tr;
  json_t *o = json_object();
  json_object_set_new(o, "type", json_string("step"));
  json_object_set_new(o, "step", json_integer(r->step));
  json_object_set_new(o, "loss", num_or_null(r->loss));
  json_t *lc = json_object(), *tc = json_object();
  for (int c = 0; c < gy_data_nchannels(d); c++) {
    const char *n = gy_data_channel_name(d, c);
    json_object_set_new(lc, n, r->ch_tokens[c] ? num_or_null(r->ch_loss_sum[c] / r->ch_tokens[c])
                                               : json_null());
    json_object_set_new(tc, n, json_integer((json_int_t)r->ch_tokens[c]));
  }
  json_object_set_new(o, "loss_ch", lc);
  json_object_set_new(o, "tokens_ch", tc);
  json_object_set_new(o, "grad_norm", num_or_null(r->opt.global));
  json_object_set_new(o, "grad_norm_shallow", num_or_null(r->opt.shallow));
  json_object_set_new(o, "grad_norm_deep", num_or_null(r->opt.deep));
  json_object_set_new(o, "nonfinite", json_boolean(r->opt.nonfinite));
  json_object_set_new(o, "update_ratio", num_or_null(r->opt.update_ratio));
  json_object_set_new(o, "lr", json_real(r->opt.lr));
  json_object_set_new(o, "step_ms", json_real(r->step_ms));
  json_object_set_new(o, "tokens_per_s", json_real(r->tokens_per_s));
  json_t *top = json_array();
  for (int i = 0; i < r->ntop; i++)
    json_array_append_new(top, json_pack("{s:I, s:s, s:o}", "id", (json_int_t)r->top[i].id,
                                         "channel", gy_data_channel_name(d, r->top[i].channel),
                                         "loss", num_or_null(r->top[i].loss)));
  json_object_set_new(o, "top", top);
  gy_json_emit(o);
}

static void emit_eval(int64_t step, gy_data_t *d, const gy_eval_report_t *e) {
  json_t *o = json_object(), *vl = json_object(), *pp = json_object(), *ug = json_object();
  json_object_set_new(o, "type", json_string("eval"));
  json_object_set_new(o, "step", json_integer(step));
  for (int c = 0; c < e->nchannels; c++) {
    const char *n = gy_data_channel_name(d, c);
    json_object_set_new(vl, n, num_or_null(e->val_loss[c]));
    json_object_set_new(pp, n, num_or_null(e->ppl[c]));
    json_object_set_new(ug, n, num_or_null(e->unigram[c]));
  }
  json_object_set_new(o, "val_loss", vl);
  json_object_set_new(o, "ppl", pp);
  json_object_set_new(o, "unigram", ug);
  gy_json_emit(o);
}

int main(int argc, char **argv) {
  const char *config = NULL, *resume = NULL, *export_llmc = NULL;
  int standalone = 0, eval_only = 0, quiet = 0;
  int64_t steps = -1;
  int threads = -1;
  gy_parallel_t par = {.rank = 0, .world = 1, .tp = 1, .backend = "gloo", .timeout_ms = 30000};
  static const struct option opts[] = {{"standalone", no_argument, 0, 'S'},
                                       {"config", required_argument, 0, 'c'},
                                       {"steps", required_argument, 0, 'n'},
                                       {"resume", required_argument, 0, 'r'},
                                       {"threads", required_argument, 0, 't'},
                                       {"export-llmc", required_argument, 0, 'x'},
                                       {"eval-only", no_argument, 0, 'e'},
                                       {"quiet-steps", no_argument, 0, 'q'},
                                       {"help", no_argument, 0, 'h'},
                                       {"rank", required_argument, 0, 'R'},
                                       {"world", required_argument, 0, 'W'},
                                       {"tp", required_argument, 0, 'P'},
                                       {"rdzv", required_argument, 0, 'Z'},
                                       {"backend", required_argument, 0, 'B'},
                                       {"comm-timeout", required_argument, 0, 'O'},
                                       {"no-overlap", no_argument, 0, 'N'},
                                       {0, 0, 0, 0}};
  int c;
  char *end;
  while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    switch (c) {
    case 'S': standalone = 1; break;
    case 'c': config = optarg; break;
    case 'n':
      steps = strtoll(optarg, &end, 10);
      if (*end || steps < 0) {
        fprintf(stderr, "gyro-worker: --steps wants a non-negative integer, got '%s'\n", optarg);
        return 2;
      }
      break;
    case 'r': resume = optarg; break;
    case 't':
      threads = (int)strtol(optarg, &end, 10);
      if (*end || threads < 0) {
        fprintf(stderr, "gyro-worker: --threads wants a non-negative integer, got '%s'\n", optarg);
        return 2;
      }
      break;
    case 'x': export_llmc = optarg; break;
    case 'e': eval_only = 1; break;
    case 'q': quiet = 1; break;
    case 'h': usage(stdout); return 0;
    case 'R':
    case 'W':
    case 'P':
    case 'O': {
      long v = strtol(optarg, &end, 10);
      if (*end || v < (c == 'R' ? 0 : 1) || v > 1000000) {
        fprintf(stderr, "gyro-worker: --%s wants a %s integer, got '%s'\n",
                c == 'R' ? "rank" : c == 'W' ? "world" : c == 'P' ? "tp" : "comm-timeout",
                c == 'R' ? "non-negative" : "positive", optarg);
        return 2;
      }
      if (c == 'R') par.rank = (int)v;
      else if (c == 'W') par.world = (int)v;
      else if (c == 'P') par.tp = (int)v;
      else par.timeout_ms = (int)v;
      break;
    }
    case 'Z': par.rdzv = optarg; break;
    case 'B':
      if (strcmp(optarg, "gloo") && strcmp(optarg, "nccl")) {
        fprintf(stderr, "gyro-worker: --backend wants gloo or nccl, got '%s'\n", optarg);
        return 2;
      }
      par.backend = optarg;
      break;
    case 'N': par.no_overlap = 1; break;
    default: usage(stderr); return 2;
    }
  }
  if (!standalone || !config || optind != argc) {
    if (!standalone) fprintf(stderr, "gyro-worker: only --standalone mode exists in this build\n");
    usage(stderr);
    return 2;
  }
  char err[1024] = "";
  gy_run_config_t cfg;
  int rc = gy_run_config_load(&cfg, config, err, sizeof(err));
  if (rc) {
    fprintf(stderr, "gyro-worker: %s\n", err);
    return 2;
  }
  if (threads >= 0) cfg.threads = threads;
  if (steps < 0) steps = cfg.steps;
  gy_trainer_t *tr = NULL;
  if (par.rank >= par.world || par.world % par.tp) {
    fprintf(stderr, "gyro-worker: --rank %d --world %d --tp %d: rank must be < world and tp must "
            "divide world\n", par.rank, par.world, par.tp);
    gy_run_config_free(&cfg);
    return 2;
  }
  if (par.world > 1 && !par.rdzv) {
    fprintf(stderr, "gyro-worker: --world %d needs --rdzv file:DIR\n", par.world);
    gy_run_config_free(&cfg);
    return 2;
  }
  rc = gy_trainer_create_parallel(&tr, &cfg, &par, err, sizeof(err));
  if (rc) {
    fprintf(stderr, "gyro-worker: %s\n", err);
    gy_run_config_free(&cfg);
    return rc == GY_ECONFIG || rc == GY_EINVAL ? 2 : 1;
  }
  int exit_code = 0;
  gy_data_t *d = gy_trainer_data(tr);
  if (resume && (rc = gy_trainer_restore_file(tr, resume, err, sizeof(err)))) {
    fprintf(stderr, "gyro-worker: cannot resume: %s\n", err);
    exit_code = 1;
    goto out;
  }
  gy_log(GY_LOG_INFO, "worker", "run '%s': %zu parameters, starting at step %" PRId64 " of %" PRId64,
         cfg.name, gy_gpt_num_params(gy_trainer_model(tr)), gy_trainer_step_count(tr), steps);
  signal(SIGINT, on_signal);
  signal(SIGTERM, on_signal);
  gy_eval_report_t ev;
  if (eval_only) {
    if ((rc = gy_trainer_eval(tr, &ev)) == 0) emit_eval(gy_trainer_step_count(tr), d, &ev);
    goto out;
  }
  while (gy_trainer_step_count(tr) < steps && !stop_requested) {
    gy_step_report_t r;
    if ((rc = gy_trainer_step(tr, &r))) {
      fprintf(stderr, "gyro-worker: rank %d: step %" PRId64 " failed: %s\n", par.rank,
              gy_trainer_step_count(tr),
              gy_trainer_last_error(tr)[0] ? gy_trainer_last_error(tr) : gy_strerror(rc));
      exit_code = 1;
      goto out;
    }
    if (!quiet) emit_step(tr, d, &r);
    int64_t done = gy_trainer_step_count(tr);
    if (cfg.eval_every > 0 && (done % cfg.eval_every == 0 || done == steps)) {
      if ((rc = gy_trainer_eval(tr, &ev)) == 0) emit_eval(done, d, &ev);
    }
    if (cfg.ckpt_every > 0 && (done % cfg.ckpt_every == 0 || done == steps)) {
      if ((rc = gy_trainer_checkpoint(tr, err, sizeof(err)))) {
        fprintf(stderr, "gyro-worker: checkpoint failed: %s\n", err);
        exit_code = 1;
        goto out;
      }
      char path[4096];
      gy_trainer_ckpt_path(tr, done, path, sizeof(path));
      gy_json_emit(json_pack("{s:s, s:I, s:s}", "type", "checkpoint", "step", (json_int_t)done,
                             "path", path));
    }
  }
  if (stop_requested) gy_log(GY_LOG_WARN, "worker", "stopped by signal at step %" PRId64,
                             gy_trainer_step_count(tr));
out:
  if (gy_trainer_flush(tr, err, sizeof(err))) {
    fprintf(stderr, "gyro-worker: checkpoint write failed: %s\n", err);
    exit_code = 1;
  }
  if (!exit_code && export_llmc &&
      (rc = gy_llmc_save(gy_trainer_model(tr), export_llmc, err, sizeof(err)))) {
    fprintf(stderr, "gyro-worker: export failed: %s\n", err);
    exit_code = 1;
  }
  gy_trainer_destroy(tr);
  gy_run_config_free(&cfg);
  return exit_code;
}
