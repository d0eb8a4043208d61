/*
 * bench/guard_cost: what the per-sample guard adds to a training step. In one process, on the
 * same batch: the median time of a CPU training step of the demo's model (forward, masked
 * backward, AdamW) and the median time of the guard's own work for that step (the content
 * statistics of every sample, and the verdicts against warmed-up channel baselines of the
 * default window), and their ratio.
 *
 *   guard_cost [--shard FILE] [--batch 8] [--seq 128] [--layers 4] [--channels 128]
 *              [--steps 10] [--threads N] [--json]
 *
 * The samples are windows of FILE (an llm.c token shard, e.g. data/shards/en/train_000.bin);
 * without one, bytes of printable text made up by the program.
 */
#include <getopt.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cblas.h>

#include "kernels/gpt.h"
#include "kernels/optim.h"
#include "worker/guard.h"
#include "worker/shard.h"

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp_d(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof(double), cmp_d);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

int main(int argc, char **argv) {
  int B = 8, T = 128, L = 4, C = 128, steps = 10, threads = 0, json = 0;
  const char *shard = NULL;
  static const struct option opts[] = {
      {"shard", 1, 0, 's'},   {"batch", 1, 0, 'b'},    {"seq", 1, 0, 'T'},
      {"layers", 1, 0, 'L'},  {"channels", 1, 0, 'C'}, {"steps", 1, 0, 'n'},
      {"threads", 1, 0, 't'}, {"json", 0, 0, 'j'},     {0, 0, 0, 0}};
  int c;
  while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (c) {
    case 's':
      shard = optarg;
      break;
    case 'b':
      B = atoi(optarg);
      break;
    case 'T':
      T = atoi(optarg);
      break;
    case 'L':
      L = atoi(optarg);
      break;
    case 'C':
      C = atoi(optarg);
      break;
    case 'n':
      steps = atoi(optarg);
      break;
    case 't':
      threads = atoi(optarg);
      break;
    case 'j':
      json = 1;
      break;
    default:
      fprintf(stderr, "usage: guard_cost [--shard FILE] [--batch N] [--seq N] [--layers N] "
                      "[--channels N] [--steps N] [--threads N] [--json]\n");
      return 2;
    }
  }
  if (threads > 0) {
    omp_set_num_threads(threads);
    openblas_set_num_threads(threads);
  }
  /* the samples: windows of the shard, or made-up text */
  size_t ntok = (size_t)(B * 64 + 1) * (size_t)(T + 1);
  uint16_t *text = malloc(ntok * sizeof(uint16_t));
  gy_shard_t sh;
  char err[512];
  if (shard) {
    if (gy_shard_open(&sh, shard, err, sizeof(err))) {
      fprintf(stderr, "guard_cost: %s\n", err);
      return 1;
    }
    if (sh.ntokens < ntok) ntok = sh.ntokens;
    memcpy(text, sh.tokens, ntok * sizeof(uint16_t));
    gy_shard_close(&sh);
  } else {
    const char *s = "The controller keeps a training run on course, every step. ";
    for (size_t i = 0; i < ntok; i++)
      text[i] = (uint8_t)s[i % strlen(s)];
  }
  gy_gpt_config_t cfg = {.max_seq_len = T,
                         .vocab_size = 256,
                         .padded_vocab_size = 256,
                         .num_layers = L,
                         .num_heads = 4,
                         .channels = C,
                         .tp_size = 1};
  gy_gpt_t *m;
  gy_adamw_t *opt;
  if (gy_gpt_create(&m, &cfg, B) || gy_adamw_create(&opt, gy_gpt_num_params(m))) return 1;
  gy_gpt_init_params(m, 1337);
  int *in = malloc(sizeof(int) * (size_t)B * T), *tg = malloc(sizeof(int) * (size_t)B * T);
  for (int b = 0; b < B; b++)
    for (int i = 0; i < T; i++) {
      in[b * T + i] = text[(size_t)b * (T + 1) + i];
      tg[b * T + i] = text[(size_t)b * (T + 1) + i + 1];
    }
  gy_knobs_t k;
  gy_knobs_default(&k);
  uint8_t *keep = malloc((size_t)B);
  memset(keep, 1, (size_t)B);
  /* a guard warmed up on three channels, like a run's */
  gy_guard_opts_t go;
  gy_guard_default(&go);
  gy_guard_t *g;
  if (gy_guard_create(&g, &go, 3)) return 1;
  float(*st)[GY_GSTAT_COUNT] = malloc(sizeof(*st) * (size_t)B);
  int *ch = malloc(sizeof(int) * (size_t)B);
  gy_guard_verdict_t *v = malloc(sizeof(*v) * (size_t)B);
  for (int w = 0; w < 64; w++) {
    for (int b = 0; b < B; b++) {
      size_t at = ((size_t)(w * B + b) % 64) * (size_t)(T + 1);
      gy_guard_content(text + at, T + 1, 256, st[b]);
      st[b][GY_GSTAT_LOSS] = 2.5f + 0.01f * (float)((w * 7 + b) % 13);
      ch[b] = (w * B + b) % 3;
    }
    gy_guard_judge(g, B, ch, (const float(*)[GY_GSTAT_COUNT])st, v);
  }
  double *ts = malloc(sizeof(double) * (size_t)(steps + 1));
  double *tg_ = malloc(sizeof(double) * 1000);
  for (int s = 0; s <= steps; s++) { /* the first step warms up: not counted */
    double t0 = now_s();
    float loss;
    gy_grad_sq_t sq;
    gy_step_stats_t stats;
    gy_gpt_forward(m, in, tg, B, T, 0, &loss);
    gy_gpt_backward_masked(m, keep, 0);
    gy_adamw_measure(m, &k, &sq);
    gy_adamw_update(opt, m, &k, s, sqrt(sq.shallow_repl + sq.shallow_shard),
                    sqrt(sq.deep_repl + sq.deep_shard), sq.nonfinite, &stats);
    if (s) ts[s - 1] = now_s() - t0;
  }
  const float *tl = gy_gpt_token_losses(m);
  for (int r = 0; r < 1000; r++) {
    double t0 = now_s();
    for (int b = 0; b < B; b++) {
      gy_guard_content(text + (size_t)b * (T + 1), T + 1, 256, st[b]);
      double sum = 0;
      for (int i = 0; i < T; i++)
        sum += tl[b * T + i];
      st[b][GY_GSTAT_LOSS] = (float)(sum / T);
      ch[b] = b % 3;
    }
    gy_guard_judge(g, B, ch, (const float(*)[GY_GSTAT_COUNT])st, v);
    tg_[r] = now_s() - t0;
  }
  double step_ms = 1e3 * median(ts, steps), guard_ms = 1e3 * median(tg_, 1000);
  if (json)
    printf("{\"batch\":%d,\"seq\":%d,\"layers\":%d,\"channels\":%d,\"step_ms\":%.3f,"
           "\"guard_ms\":%.4f,\"share\":%.5f}\n",
           B, T, L, C, step_ms, guard_ms, guard_ms / step_ms);
  else
    printf("step %.2f ms (median of %d), guard %.4f ms (median of 1000): %.3f%% of the step\n",
           step_ms, steps, guard_ms, 100 * guard_ms / step_ms);
  gy_guard_destroy(g);
  gy_adamw_destroy(opt);
  gy_gpt_destroy(m);
  return 0;
}
