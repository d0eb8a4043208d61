/*
 * bench/train_cpu: speed of one CPU training step (forward, backward, AdamW) for a fixed GPT
 * model, next to this machine's own single-precision GEMM rate measured by the same program.
 *
 *   train_cpu [--layers 6] [--channels 384] [--heads 6] [--seq 256] [--batch 8] [--steps 10]
 *             [--threads N] [--dp N] [--json]
 *
 * Model FLOPs per step = 6 * N * tokens + 12 * L * C * T * tokens, where N counts every
 * parameter used in a matrix product (all but the position embedding) and the second term is
 * attention (QK^T and PV, forward and backward, computed on the full T x T square as the CPU
 * kernels do). GEMM peak = best of sgemm on the model's own shapes and a 2048^3 square.
 * Reports medians over the measured steps.
 *
 * --dp N forks N data-parallel ranks (threads split between them) that average gradients over
 * Gloo every step, each on its own batch: tokens/s counts the global batch, and scaling
 * efficiency = tokens/s(DP=N) / tokens/s(DP=1, all threads), measured in the same run.
 */
#include <cblas.h>
#include <getopt.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sys/wait.h>
#include <unistd.h>

#include "kernels/gpt.h"
#include "kernels/optim.h"
#include "worker/comm.h"

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

/* GFLOP/s of out[M,N] = A[M,K] @ B[N,K]^T, median of reps. */
static double gemm_rate(int M, int N, int K, int reps) {
  float *a = malloc(sizeof(float) * (size_t)M * K), *b = malloc(sizeof(float) * (size_t)N * K);
  float *c = malloc(sizeof(float) * (size_t)M * N);
  for (size_t i = 0; i < (size_t)M * K; i++)
    a[i] = (float)((i * 7) % 13) * 0.01f;
  for (size_t i = 0; i < (size_t)N * K; i++)
    b[i] = (float)((i * 5) % 11) * 0.01f;
  double t[64];
  for (int r = 0; r < reps + 1; r++) {
    double t0 = now_s();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, a, K, b, K, 0.0f, c, N);
    double dt = now_s() - t0;
    if (r > 0) t[r - 1] = 2.0 * M * N * K / dt / 1e9;
  }
  free(a);
  free(b);
  free(c);
  return median(t, reps);
}

/* Median ms/step of `steps` training steps (after 2 warm-up steps); with comm, gradients are
 * averaged over it each step. */
static double run_steps(const gy_gpt_config_t *cfg, int B, int T, int steps, int rank,
                        gy_comm_t *comm, size_t *nparams) {
  gy_gpt_t *m;
  gy_adamw_t *opt;
  if (gy_gpt_create(&m, cfg, B) || gy_adamw_create(&opt, gy_gpt_num_params(m))) {
    fprintf(stderr, "train_cpu: out of memory\n");
    exit(1);
  }
  *nparams = gy_gpt_num_params(m);
  gy_gpt_init_params(m, 1);
  gy_knobs_t k;
  gy_knobs_default(&k);
  int N = B * T;
  int *x = malloc(sizeof(int) * (N + 1));
  uint64_t s = 42 + (uint64_t)rank;
  for (int i = 0; i < N + 1; i++) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    x[i] = (int)((s >> 33) % 256);
  }
  double *ms = malloc(sizeof(double) * steps);
  float loss = 0;
  for (int i = -2; i < steps; i++) {
    double t0 = now_s();
    gy_gpt_forward(m, x, x + 1, B, T, 0.0f, &loss);
    gy_gpt_backward(m);
    if (comm &&
        comm->ops->allreduce(comm, gy_gpt_grads(m), gy_gpt_num_params(m), GY_DT_F32, GY_OP_AVG)) {
      fprintf(stderr, "train_cpu: all-reduce failed: %s\n", comm->errmsg);
      exit(1);
    }
    gy_step_stats_t st;
    gy_adamw_step(opt, m, &k, i + 2, &st);
    double dt = now_s() - t0;
    if (i >= 0) ms[i] = dt * 1e3;
  }
  double med = median(ms, steps);
  free(ms);
  free(x);
  gy_adamw_destroy(opt);
  gy_gpt_destroy(m);
  return med;
}

/* Forks dp ranks with threads/dp threads each; returns rank 0's median ms/step. */
static double run_dp(const gy_gpt_config_t *cfg, int B, int T, int steps, int dp, int threads) {
  char dir[] = "/tmp/gyro-bench.XXXXXX";
  if (!mkdtemp(dir)) return -1;
  char out[300];
  snprintf(out, sizeof(out), "%s/result", dir);
  pid_t pids[64];
  for (int r = 0; r < dp; r++) {
    pids[r] = fork();
    if (pids[r] == 0) {
      int th = threads / dp > 0 ? threads / dp : 1;
      omp_set_num_threads(th);
      openblas_set_num_threads(th);
      char err[512], spec[300];
      snprintf(spec, sizeof(spec), "file:%s", dir);
      gy_store_t *store;
      gy_comm_groups_t g;
      gy_comm_opts_t o = {.backend = "gloo",
                          .rank = r,
                          .world = dp,
                          .tp = 1,
                          .prefix = "bench",
                          .timeout_ms = 60000};
      if (gy_store_open(&store, spec, err, sizeof(err))) _exit(1);
      o.store = store;
      if (gy_comm_groups_create(&g, &o, err, sizeof(err))) {
        fprintf(stderr, "train_cpu: rank %d: %s\n", r, err);
        _exit(1);
      }
      size_t np;
      double ms = run_steps(cfg, B, T, steps, r, g.dp, &np);
      if (r == 0) {
        FILE *f = fopen(out, "w");
        if (f) {
          fprintf(f, "%.6f\n", ms);
          fclose(f);
        }
      }
      gy_comm_groups_destroy(&g);
      gy_store_destroy(store);
      _exit(0);
    }
  }
  int ok = 1;
  for (int r = 0; r < dp; r++) {
    int st;
    waitpid(pids[r], &st, 0);
    if (!WIFEXITED(st) || WEXITSTATUS(st)) ok = 0;
  }
  double ms = -1;
  FILE *f = fopen(out, "r");
  if (ok && f && fscanf(f, "%lf", &ms) != 1) ms = -1;
  if (f) fclose(f);
  char cmd[400];
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
  if (system(cmd)) { /* best effort */
  }
  return ms;
}

int main(int argc, char **argv) {
  int L = 6, C = 384, NH = 6, T = 256, B = 8, steps = 10, threads = 0, json = 0, dp = 1;
  static const struct option opts[] = {{"layers", 1, 0, 'l'},  {"channels", 1, 0, 'c'},
                                       {"heads", 1, 0, 'H'},   {"seq", 1, 0, 's'},
                                       {"batch", 1, 0, 'b'},   {"steps", 1, 0, 'n'},
                                       {"threads", 1, 0, 't'}, {"json", 0, 0, 'j'},
                                       {"dp", 1, 0, 'd'},      {0, 0, 0, 0}};
  int o;
  while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (o) {
    case 'l':
      L = atoi(optarg);
      break;
    case 'c':
      C = atoi(optarg);
      break;
    case 'H':
      NH = atoi(optarg);
      break;
    case 's':
      T = atoi(optarg);
      break;
    case 'b':
      B = atoi(optarg);
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
    case 'd':
      dp = atoi(optarg);
      break;
    default:
      fprintf(stderr, "usage: train_cpu [--layers L] [--channels C] [--heads H] [--seq T] "
                      "[--batch B] [--steps N] [--threads N] [--dp N] [--json]\n");
      return 2;
    }
  }
  if (steps < 1 || steps > 64) steps = 10;
  if (threads <= 0) threads = omp_get_num_procs();
  omp_set_num_threads(threads);
  openblas_set_num_threads(threads);

  gy_gpt_config_t cfg = {.max_seq_len = T,
                         .vocab_size = 256,
                         .padded_vocab_size = 256,
                         .num_layers = L,
                         .num_heads = NH,
                         .channels = C,
                         .qk_norm = 0};
  char err[256];
  if (gy_gpt_config_check(&cfg, err, sizeof(err))) {
    fprintf(stderr, "train_cpu: %s\n", err);
    return 2;
  }
  if (dp < 1 || dp > 64) dp = 1;
  size_t np = 0;
  double step_ms = run_steps(&cfg, B, T, steps, 0, NULL, &np);
  double dp_ms = dp > 1 ? run_dp(&cfg, B, T, steps, dp, threads) : 0;

  double nparams = (double)np - (double)T * C; /* wpe is a lookup */
  int N = B * T;
  double tokens = (double)N;
  double flops = 6.0 * nparams * tokens + 12.0 * L * C * T * tokens;
  double gflops = flops / (step_ms / 1e3) / 1e9;
  double g1 = gemm_rate(N, 4 * C, C, 5), g2 = gemm_rate(N, C, 4 * C, 5);
  double g3 = gemm_rate(2048, 2048, 2048, 3);
  double peak = fmax(g1, fmax(g2, g3));
  if (json) {
    printf("{\"layers\":%d,\"channels\":%d,\"heads\":%d,\"seq\":%d,\"batch\":%d,\"threads\":%d,"
           "\"params\":%zu,\"step_ms\":%.2f,\"tokens_per_s\":%.1f,\"model_gflops\":%.2f,"
           "\"gemm_gflops\":%.2f,\"fraction_of_gemm\":%.3f}\n",
           L, C, NH, T, B, threads, np, step_ms, tokens / (step_ms / 1e3), gflops, peak,
           gflops / peak);
  } else {
    printf("model: L=%d C=%d heads=%d T=%d B=%d, %zu parameters, %d threads\n", L, C, NH, T, B, np,
           threads);
    printf("step: %.1f ms (median of %d), %.0f tokens/s, %.1f GFLOP/s achieved\n", step_ms, steps,
           tokens / (step_ms / 1e3), gflops);
    printf("sgemm: %.1f GFLOP/s (%dx%dx%d), %.1f (%dx%dx%d), %.1f (2048^3); peak %.1f\n", g1, N,
           4 * C, C, g2, N, C, 4 * C, g3, peak);
    printf("end to end: %.0f%% of this machine's GEMM rate\n", 100.0 * gflops / peak);
  }
  if (dp > 1) {
    if (dp_ms <= 0) {
      fprintf(stderr, "train_cpu: the data-parallel run failed\n");
      return 1;
    }
    double tps1 = tokens / (step_ms / 1e3), tpsn = dp * tokens / (dp_ms / 1e3);
    if (json)
      printf("{\"dp\":%d,\"threads_per_rank\":%d,\"step_ms\":%.2f,\"tokens_per_s\":%.1f,"
             "\"scaling_efficiency\":%.3f}\n",
             dp, threads / dp > 0 ? threads / dp : 1, dp_ms, tpsn, tpsn / tps1);
    else
      printf("DP=%d (Gloo, %d thread(s) per rank, batch %d per rank): %.1f ms/step, %.0f tokens/s, "
             "scaling efficiency %.2f vs DP=1 with %d threads\n",
             dp, threads / dp > 0 ? threads / dp : 1, B, dp_ms, tpsn, tpsn / tps1, threads);
  }
  return 0;
}
