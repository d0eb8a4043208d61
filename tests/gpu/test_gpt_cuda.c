/* test_gpt_cuda: the GPT model on the GPU (kernels/gpt_cuda.h) against the CPU model
 * (kernels/gpt.h) on the same checkpoint-like parameters and batch, in f32 and bf16, with and
 * without QK-norm: loss, per-token losses and every gradient tensor; the layout; the CPU <-> GPU
 * parameter round trip; an AdamW step on both sides; the error paths; and that a few bf16 steps
 * on one batch lower its loss; and tensor parallelism: two shards (tp 2) on the same GPU, one
 * thread each, their partial sums added on the host by the test, against the full CPU model
 * (loss, per-token losses, every gradient tensor against the matching slice of the full
 * gradients, and the gradient norm assembled from the shards' groups); and the per-sample loss
 * mask (gy_gpt_cuda_backward_masked against gy_gpt_backward_masked: every gradient tensor under
 * the rules below, the forward's host token losses untouched, and with no sample kept every
 * gradient exactly zero after the usual grads_ready calls).
 *
 * Tolerances (stated per quantity):
 *  f32:  mean loss |d| <= 1e-5 * loss; token losses |d| <= 1e-5 * max + 1e-4 * |ref|;
 *        every gradient tensor, per element |d| <= 1e-4 * max|ref| + 2e-3 * |ref|;
 *        parameters after one AdamW step |d| <= 1e-6 * max|ref| + 1e-5 * |ref|;
 *        top-1 predictions equal on every row whose best logit leads by > 1e-4 * max|logit|
 *        (at least half the rows).
 *  bf16: mean loss |d| <= 1e-2 * loss; token losses relative L2 error <= 3e-2;
 *        every gradient tensor relative L2 error ||gpu - cpu|| / ||cpu|| <= 8e-2 (bf16 keeps 8
 *        bits of mantissa in every activation, so elementwise bounds mean nothing for small
 *        entries; the tensor-wide error is what training sees); top-1 predictions equal on
 *        every row whose best logit leads by > 3e-2 * max|logit|.
 *
 * Without a GPU (or in a build without CUDA kernels) it prints "skipped: no GPU" and exits 77. */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/test.h"

#ifndef GY_HAVE_CUDA_KERNELS
int main(void) {
  printf("skipped: no GPU (this build has no CUDA kernels)\n");
  return 77;
}
#else

#include "common/err.h"
#include "kernels/gpt.h"
#include "kernels/gpt_cuda.h"
#include "kernels/optim.h"

static uint64_t rng = 0x243F6A8885A308D3ull;

static float frand(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return (float)((rng >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}

static int ready_calls;
static void on_ready(void *ctx, int layer) {
  (void)ctx;
  (void)layer;
  ready_calls++;
}

/* Elementwise rule. */
static void cmp_elem(const char *what, const float *got, const float *ref, size_t n, double tol,
                     double eps) {
  double scale = 0.0, werr = 0.0;
  size_t bad = 0, wi = 0;
  for (size_t i = 0; i < n; i++)
    if (fabs(ref[i]) > scale) scale = fabs(ref[i]);
  for (size_t i = 0; i < n; i++) {
    double err = fabs((double)got[i] - ref[i]);
    if (!(err <= tol * scale + eps * fabs(ref[i]))) {
      if (!bad) wi = i;
      bad++;
    }
    if (err > werr || isnan(err)) werr = err;
  }
  CHECK_MSG(bad == 0, "%s: %zu of %zu outside %.0e*max + %.0e*|ref| (max %.3g; [%zu] %.8g vs %.8g)",
            what, bad, n, tol, eps, scale, wi, got[wi], ref[wi]);
  printf("  %-14s max |err| %-10.3g max|ref| %.3g\n", what, werr, scale);
}

/* Relative L2 rule. */
static void cmp_l2(const char *what, const float *got, const float *ref, size_t n, double bound) {
  double d = 0.0, r = 0.0;
  for (size_t i = 0; i < n; i++) {
    double e = (double)got[i] - ref[i];
    d += e * e;
    r += (double)ref[i] * ref[i];
  }
  double rel = r > 0 ? sqrt(d / r) : sqrt(d);
  CHECK_MSG(rel <= bound, "%s: relative L2 error %.3g > %.0e", what, rel, bound);
  printf("  %-14s rel L2 err %.3g\n", what, rel);
}

/* The model both comparisons use: 2 layers, width 64, 4 heads, context 32, vocabulary 100. */
static gy_gpt_config_t small_config(int qk) {
  return (gy_gpt_config_t){.max_seq_len = 32,
                           .vocab_size = 100,
                           .padded_vocab_size = 128,
                           .num_layers = 2,
                           .num_heads = 4,
                           .channels = 64,
                           .qk_norm = qk};
}

/* Checkpoint-like parameters: GPT-2 init, then every tensor perturbed so that biases and norm
 * weights are not at their initial 0 / 1 (a trained model's are not). */
static void checkpoint_like(gy_gpt_t *m, uint64_t seed) {
  const gy_gpt_config_t *c = gy_gpt_config(m);
  gy_gpt_init_params(m, seed);
  float *p = gy_gpt_params(m);
  for (int i = 0; i < GY_T_COUNT; i++) {
    size_t off = gy_gpt_tensor_offset(m, i), sz = gy_gpt_tensor_size(m, i);
    if (i == GY_T_WTE) sz = (size_t)c->vocab_size * c->channels; /* padded rows stay zero */
    for (size_t j = 0; j < sz; j++)
      p[off + j] += 0.02f * frand();
  }
}

/* N random inputs and targets below V (malloc'ed). */
static void random_batch(int **in, int **tg, int N, int V) {
  *in = malloc(sizeof(int) * N);
  *tg = malloc(sizeof(int) * N);
  REQUIRE(*in && *tg);
  for (int i = 0; i < N; i++) {
    (*in)[i] = (int)((frand() + 1.0f) * 0.5f * (V - 1));
    (*tg)[i] = (int)((frand() + 1.0f) * 0.5f * (V - 1));
  }
}

static void run(gy_cuda_dtype_t dt, int qk) {
  printf("dtype %s, qk_norm %d\n", gy_cuda_dtype_name(dt), qk);
  gy_gpt_config_t cfg = small_config(qk);
  int B = 4, T = 32, N = B * T;
  float z = 1e-3f;
  gy_gpt_t *cpu = NULL;
  gy_gpt_cuda_t *gpu = NULL;
  char err[256] = "";
  REQUIRE(gy_gpt_create(&cpu, &cfg, B) == 0);
  int rc = gy_gpt_cuda_create(&gpu, &cfg, B, dt, 0, err, sizeof(err));
  CHECK_MSG(rc == 0, "create: %s", err);
  if (rc) {
    gy_gpt_destroy(cpu);
    return;
  }
  /* layout: the same tensors at the same offsets */
  size_t n = gy_gpt_num_params(cpu);
  CHECK_EQ_INT(gy_gpt_cuda_num_params(gpu), n);
  for (int i = 0; i < GY_T_COUNT; i++) {
    CHECK_EQ_INT(gy_gpt_cuda_tensor_size(gpu, i), gy_gpt_tensor_size(cpu, i));
    CHECK_EQ_INT(gy_gpt_cuda_tensor_offset(gpu, i), gy_gpt_tensor_offset(cpu, i));
  }
  checkpoint_like(cpu, 7);
  float *p = gy_gpt_params(cpu);
  REQUIRE(gy_gpt_cuda_upload_params(gpu, p) == 0);
  float *back = malloc(n * 4);
  REQUIRE(back);
  REQUIRE(gy_gpt_cuda_download_params(gpu, back) == 0);
  CHECK(memcmp(back, p, n * 4) == 0); /* bitwise: the master weights are float */

  int *in, *tg;
  random_batch(&in, &tg, N, cfg.vocab_size);
  float lc = 0, lg = 0;
  REQUIRE(gy_gpt_forward(cpu, in, tg, B, T, z, &lc) == 0);
  rc = gy_gpt_cuda_forward(gpu, in, tg, B, T, z, &lg);
  CHECK_MSG(rc == 0, "forward: %s", gy_cuda_last_error());
  double lbound = dt == GY_CUDA_F32 ? 1e-5 : 1e-2;
  CHECK_MSG(fabs(lg - lc) <= lbound * fabs(lc), "loss gpu %.8g cpu %.8g", lg, lc);
  printf("  loss           gpu %.7f cpu %.7f\n", lg, lc);
  if (dt == GY_CUDA_F32)
    cmp_elem("token losses", gy_gpt_cuda_token_losses(gpu), gy_gpt_token_losses(cpu), N, 1e-5,
             1e-4);
  else
    cmp_l2("token losses", gy_gpt_cuda_token_losses(gpu), gy_gpt_token_losses(cpu), N, 3e-2);

  /* top-1 predictions (cloze accuracy): the GPU's argmax is the CPU's first maximum on every
   * row whose best logit leads the second by more than the dtype's rounding */
  {
    int *top1 = malloc(sizeof(int) * N);
    REQUIRE(top1);
    rc = gy_gpt_cuda_argmax(gpu, top1);
    CHECK_MSG(rc == 0, "argmax: %s", gy_cuda_last_error());
    const float *logits = gy_gpt_logits(cpu);
    int checked = 0, wrong = 0;
    for (int r = 0; r < N && rc == 0; r++) {
      const float *row = logits + (size_t)r * cfg.padded_vocab_size;
      int best = 0;
      for (int v = 1; v < cfg.vocab_size; v++)
        if (row[v] > row[best]) best = v;
      float second = -INFINITY, mx = 0;
      for (int v = 0; v < cfg.vocab_size; v++) {
        if (v != best && row[v] > second) second = row[v];
        if (fabsf(row[v]) > mx) mx = fabsf(row[v]);
      }
      double margin = dt == GY_CUDA_F32 ? 1e-4 * mx + 1e-6 : 3e-2 * mx + 1e-3;
      if (row[best] - second <= margin) continue;
      checked++;
      if (top1[r] != best) {
        if (wrong++ < 5) CHECK_MSG(0, "argmax row %d: gpu %d cpu %d", r, top1[r], best);
      }
    }
    CHECK_MSG(wrong == 0, "argmax: %d of %d rows differ", wrong, checked);
    if (dt == GY_CUDA_F32) CHECK_MSG(checked >= N / 2, "argmax: only %d of %d rows", checked, N);
    printf("  top-1          %d of %d rows compared, all equal\n", checked, N);
    free(top1);
  }

  ready_calls = 0;
  gy_gpt_cuda_set_grads_ready(gpu, on_ready, NULL);
  REQUIRE(gy_gpt_backward(cpu) == 0);
  rc = gy_gpt_cuda_backward(gpu);
  CHECK_MSG(rc == 0, "backward: %s", gy_cuda_last_error());
  CHECK_EQ_INT(ready_calls, cfg.num_layers + 1);
  {
    int dummy[1];
    CHECK(gy_gpt_cuda_argmax(gpu, dummy) == GY_EINVAL); /* the logits hold their gradient now */
  }
  for (int l = -1; l < cfg.num_layers; l++)
    CHECK(gy_gpt_cuda_wait_layer(gpu, l) == 0);
  CHECK(gy_gpt_cuda_wait_layer(gpu, cfg.num_layers) == GY_EINVAL);
  float *gg = malloc(n * 4);
  REQUIRE(gg);
  REQUIRE(gy_gpt_cuda_download_grads(gpu, gg) == 0);
  const float *gc = gy_gpt_grads(cpu);
  for (int i = 0; i < GY_T_COUNT; i++) {
    size_t off = gy_gpt_tensor_offset(cpu, i), sz = gy_gpt_tensor_size(cpu, i);
    if (!sz) continue;
    if (dt == GY_CUDA_F32)
      cmp_elem(gy_gpt_tensor_name(i), gg + off, gc + off, sz, 1e-4, 2e-3);
    else
      cmp_l2(gy_gpt_tensor_name(i), gg + off, gc + off, sz, 8e-2);
  }
  /* padded vocabulary rows get no gradient */
  size_t pad0 = gy_gpt_tensor_offset(cpu, GY_T_WTE) + (size_t)cfg.vocab_size * cfg.channels;
  size_t padn = (size_t)(cfg.padded_vocab_size - cfg.vocab_size) * cfg.channels;
  int padzero = 1;
  for (size_t j = 0; j < padn; j++)
    if (gg[pad0 + j] != 0.0f) padzero = 0;
  CHECK(padzero);
  /* one backward per forward */
  CHECK(gy_gpt_cuda_backward(gpu) == GY_EINVAL);

  /* one AdamW step on each side (f32 only: in bf16 the gradients differ by design) */
  if (dt == GY_CUDA_F32) {
    gy_knobs_t k;
    gy_knobs_default(&k);
    k.shallow_scale = 0.7f;
    gy_adamw_t *co = NULL;
    gy_adamw_cuda_t *go = NULL;
    REQUIRE(gy_adamw_create(&co, n) == 0);
    REQUIRE(gy_adamw_cuda_create(&go, gpu) == 0);
    /* both sides step from the CPU's gradients, so only the optimizer is compared */
    REQUIRE(gy_gpt_cuda_upload_grads(gpu, gc) == 0);
    gy_step_stats_t cs, gs;
    gy_adamw_step(co, cpu, &k, 0, &cs);
    CHECK(gy_adamw_cuda_step(go, &k, 0, &gs) == 0);
    CHECK_MSG(fabs(gs.global - cs.global) <= 1e-9 * cs.global, "grad norm %.12g vs %.12g",
              gs.global, cs.global);
    REQUIRE(gy_gpt_cuda_download_params(gpu, back) == 0);
    cmp_elem("params+adamw", back, gy_gpt_params(cpu), n, 1e-6, 1e-5);
    gy_adamw_cuda_destroy(go);
    gy_adamw_destroy(co);
  }

  /* inference: no targets, no loss, no backward */
  float li = 0;
  CHECK(gy_gpt_cuda_forward(gpu, in, NULL, B, T, 0, &li) == 0);
  CHECK(isnan(li));
  CHECK(gy_gpt_cuda_backward(gpu) == GY_EINVAL);
  /* bad input is refused before any work */
  in[3] = cfg.vocab_size;
  CHECK(gy_gpt_cuda_forward(gpu, in, tg, B, T, z, &li) == GY_EINVAL);
  in[3] = 0;
  CHECK(gy_gpt_cuda_forward(gpu, in, tg, B + 1, T, z, &li) == GY_EINVAL);
  CHECK(gy_gpt_cuda_forward(gpu, in, tg, B, T + 1, z, &li) == GY_EINVAL);
  /* a smaller batch and sequence than the maximum work */
  CHECK(gy_gpt_cuda_forward(gpu, in, tg, 2, 16, z, &li) == 0);
  CHECK(gy_gpt_cuda_backward(gpu) == 0);

  free(gg), free(back), free(in), free(tg);
  gy_gpt_cuda_destroy(gpu);
  gy_gpt_destroy(cpu);
}

/* The per-sample loss mask: the GPU's masked backward against the CPU's, on the same parameters,
 * batch and mask; then with every sample masked. */
static void masked_run(gy_cuda_dtype_t dt, int qk) {
  printf("masked backward, dtype %s, qk_norm %d\n", gy_cuda_dtype_name(dt), qk);
  gy_gpt_config_t cfg = small_config(qk);
  int B = 4, T = 32, N = B * T;
  float z = 1e-3f;
  gy_gpt_t *cpu = NULL;
  gy_gpt_cuda_t *gpu = NULL;
  char err[256] = "";
  REQUIRE(gy_gpt_create(&cpu, &cfg, B) == 0);
  int rc = gy_gpt_cuda_create(&gpu, &cfg, B, dt, 0, err, sizeof(err));
  CHECK_MSG(rc == 0, "create: %s", err);
  if (rc) {
    gy_gpt_destroy(cpu);
    return;
  }
  checkpoint_like(cpu, 5);
  REQUIRE(gy_gpt_cuda_upload_params(gpu, gy_gpt_params(cpu)) == 0);
  int *in, *tg;
  random_batch(&in, &tg, N, cfg.vocab_size);
  size_t n = gy_gpt_num_params(cpu);
  float *gg = malloc(n * 4), *tl = malloc((size_t)N * 4);
  REQUIRE(gg && tl);

  const uint8_t keep[4] = {0, 1, 1, 0};
  float lc = 0, lg = 0;
  REQUIRE(gy_gpt_forward(cpu, in, tg, B, T, z, &lc) == 0);
  rc = gy_gpt_cuda_forward(gpu, in, tg, B, T, z, &lg);
  CHECK_MSG(rc == 0, "forward: %s", gy_cuda_last_error());
  memcpy(tl, gy_gpt_cuda_token_losses(gpu), (size_t)N * 4);
  REQUIRE(gy_gpt_backward_masked(cpu, keep, 0) == 0);
  ready_calls = 0;
  gy_gpt_cuda_set_grads_ready(gpu, on_ready, NULL);
  rc = gy_gpt_cuda_backward_masked(gpu, keep, 0);
  CHECK_MSG(rc == 0, "masked backward: %s", gy_cuda_last_error());
  CHECK_EQ_INT(ready_calls, cfg.num_layers + 1);
  REQUIRE(gy_gpt_cuda_download_grads(gpu, gg) == 0);
  CHECK(memcmp(tl, gy_gpt_cuda_token_losses(gpu), (size_t)N * 4) == 0);
  const float *gc = gy_gpt_grads(cpu);
  for (int i = 0; i < GY_T_COUNT; i++) {
    size_t off = gy_gpt_tensor_offset(cpu, i), sz = gy_gpt_tensor_size(cpu, i);
    if (!sz) continue;
    char name[64];
    snprintf(name, sizeof(name), "%s/masked", gy_gpt_tensor_name(i));
    if (dt == GY_CUDA_F32)
      cmp_elem(name, gg + off, gc + off, sz, 1e-4, 2e-3);
    else
      cmp_l2(name, gg + off, gc + off, sz, 8e-2);
  }

  /* no sample kept: exactly zero gradients, over the ones just computed, every layer reported */
  const uint8_t none[4] = {0, 0, 0, 0};
  rc = gy_gpt_cuda_forward(gpu, in, tg, B, T, z, &lg);
  CHECK_MSG(rc == 0, "forward: %s", gy_cuda_last_error());
  ready_calls = 0;
  rc = gy_gpt_cuda_backward_masked(gpu, none, 0);
  CHECK_MSG(rc == 0, "all-masked backward: %s", gy_cuda_last_error());
  CHECK_EQ_INT(ready_calls, cfg.num_layers + 1);
  REQUIRE(gy_gpt_cuda_download_grads(gpu, gg) == 0);
  size_t nonzero = 0;
  for (size_t j = 0; j < n; j++)
    nonzero += gg[j] != 0.0f;
  CHECK_MSG(nonzero == 0, "all masked: %zu gradient entries are not zero", nonzero);
  gy_gpt_cuda_set_grads_ready(gpu, NULL, NULL);

  free(gg), free(tl), free(in), free(tg);
  gy_gpt_cuda_destroy(gpu);
  gy_gpt_destroy(cpu);
}

/* A few bf16 AdamW steps on one batch lower its loss (the whole GPU path, end to end). */
static void learns(void) {
  gy_gpt_config_t cfg = {.max_seq_len = 64,
                         .vocab_size = 200,
                         .padded_vocab_size = 256,
                         .num_layers = 2,
                         .num_heads = 4,
                         .channels = 128};
  int B = 4, T = 64, N = B * T;
  gy_gpt_cuda_t *m = NULL;
  gy_adamw_cuda_t *o = NULL;
  char err[256] = "";
  REQUIRE(gy_gpt_cuda_create(&m, &cfg, B, GY_CUDA_BF16, 0, err, sizeof(err)) == 0);
  REQUIRE(gy_gpt_cuda_init_params(m, 1) == 0);
  REQUIRE(gy_adamw_cuda_create(&o, m) == 0);
  int *in = malloc(sizeof(int) * N), *tg = malloc(sizeof(int) * N);
  for (int i = 0; i < N; i++) {
    in[i] = (i * 37) % cfg.vocab_size;
    tg[i] = (i * 37 + 1) % cfg.vocab_size;
  }
  gy_knobs_t k;
  gy_knobs_default(&k);
  k.sched.kind = GY_SCHED_CONSTANT;
  k.sched.warmup = 0;
  k.sched.lr = 3e-3f;
  float first = 0, last = 0;
  for (int s = 0; s < 40; s++) {
    float l = 0;
    gy_step_stats_t st;
    REQUIRE(gy_gpt_cuda_forward(m, in, tg, B, T, 0, &l) == 0);
    REQUIRE(gy_gpt_cuda_backward(m) == 0);
    REQUIRE(gy_adamw_cuda_step(o, &k, s, &st) == 0);
    CHECK(!st.nonfinite);
    if (s == 0) first = l;
    last = l;
  }
  printf("bf16 training on one batch: loss %.4f -> %.4f\n", first, last);
  CHECK_MSG(last < 0.6f * first, "loss %.4f -> %.4f", first, last);
  free(in), free(tg);
  gy_adamw_cuda_destroy(o);
  gy_gpt_cuda_destroy(m);
}

/* ---- tensor parallelism: two shards on one GPU, summed on the host by the test ---- */

enum { TP = 2 };

/* The ranks meet in a barrier that a rank leaving (its forward or backward ended, perhaps early
 * on an error) breaks, so a failure on one side is reported instead of hanging the other. */
typedef struct {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int waiting, gen, left;
  float *host[TP], *sum[TP]; /* per rank: its downloaded part, and the sum it uploads */
  size_t cap;
  gy_gpt_cuda_t *m[TP];
  int calls[TP], failed;
} tp_group_t;

/* 0 when every rank arrived; -1 when a rank left before it could. */
static int tp_meet(tp_group_t *g) {
  pthread_mutex_lock(&g->mu);
  int gen = g->gen;
  if (!g->left && ++g->waiting == TP) {
    g->waiting = 0;
    g->gen++;
    pthread_cond_broadcast(&g->cv);
  }
  while (gen == g->gen && !g->left)
    pthread_cond_wait(&g->cv, &g->mu);
  int rc = gen == g->gen ? -1 : 0;
  pthread_mutex_unlock(&g->mu);
  return rc;
}

static void tp_leave(tp_group_t *g) {
  pthread_mutex_lock(&g->mu);
  g->left = 1;
  pthread_cond_broadcast(&g->cv);
  pthread_mutex_unlock(&g->mu);
}

typedef struct {
  tp_group_t *g;
  int r;
  const int *in, *tg;
  int B, T;
  float z, loss;
  int rc_fwd, rc_bwd;
} tp_rank_t;

/* The test's sum over the group: download, wait for the other rank, add in rank order (both get
 * the same bits), wait again (nobody overwrites a part still being read), upload. */
static int tp_sum_test(void *ctx, void *buf, size_t n, gy_cuda_dtype_t dt) {
  tp_rank_t *rk = ctx;
  tp_group_t *g = rk->g;
  int r = rk->r, rc = 0;
  g->calls[r]++;
  if (n > g->cap) rc = GY_EINVAL;
  if (!rc) rc = gy_cuda_download_f32(gy_gpt_cuda_ctx(g->m[r]), g->host[r], buf, dt, n);
  if (rc) g->failed = 1;
  if (tp_meet(g)) return GY_EIO;
  if (!g->failed)
    for (size_t i = 0; i < n; i++) {
      float s = 0.0f;
      for (int k = 0; k < TP; k++)
        s += g->host[k][i];
      g->sum[r][i] = s;
    }
  if (tp_meet(g) || g->failed) return GY_EIO;
  return gy_cuda_upload_f32(gy_gpt_cuda_ctx(g->m[r]), buf, dt, g->sum[r], n);
}

static void *tp_rank_main(void *arg) {
  tp_rank_t *rk = arg;
  rk->rc_fwd = gy_gpt_cuda_forward(rk->g->m[rk->r], rk->in, rk->tg, rk->B, rk->T, rk->z, &rk->loss);
  if (!rk->rc_fwd) rk->rc_bwd = gy_gpt_cuda_backward(rk->g->m[rk->r]);
  if (!rk->rc_fwd && !rk->rc_bwd) rk->rc_bwd = gy_cuda_sync(gy_gpt_cuda_ctx(rk->g->m[rk->r]));
  tp_leave(rk->g);
  return NULL;
}

static void tp_run(gy_cuda_dtype_t dt, int qk) {
  printf("tensor parallel %d, dtype %s, qk_norm %d\n", TP, gy_cuda_dtype_name(dt), qk);
  gy_gpt_config_t cfg = small_config(qk);
  int B = 4, T = 32, N = B * T;
  float z = 1e-3f;
  gy_gpt_t *full = NULL, *shard[TP] = {NULL};
  REQUIRE(gy_gpt_create(&full, &cfg, B) == 0);
  checkpoint_like(full, 11);
  float *p = gy_gpt_params(full);
  int *in, *tg;
  random_batch(&in, &tg, N, cfg.vocab_size);
  float lc = 0;
  REQUIRE(gy_gpt_forward(full, in, tg, B, T, z, &lc) == 0);
  REQUIRE(gy_gpt_backward(full) == 0);

  tp_group_t g = {.cap = (size_t)N * cfg.channels};
  REQUIRE(pthread_mutex_init(&g.mu, NULL) == 0);
  REQUIRE(pthread_cond_init(&g.cv, NULL) == 0);
  tp_rank_t rk[TP];
  char err[256] = "";
  int ok = 1;
  for (int r = 0; r < TP; r++) {
    gy_gpt_config_t sc = cfg;
    sc.tp_size = TP;
    sc.tp_rank = r;
    g.host[r] = malloc(g.cap * 4);
    g.sum[r] = malloc(g.cap * 4);
    REQUIRE(g.host[r] && g.sum[r]);
    REQUIRE(gy_gpt_create(&shard[r], &sc, 1) == 0);
    gy_gpt_shard_from_full(shard[r], p);
    int rc = gy_gpt_cuda_create(&g.m[r], &sc, B, dt, 0, err, sizeof(err));
    CHECK_MSG(rc == 0, "create shard %d: %s", r, err);
    if (rc) {
      ok = 0;
      continue;
    }
    /* the shard's layout is the CPU shard's */
    CHECK_EQ_INT(gy_gpt_cuda_num_params(g.m[r]), gy_gpt_num_params(shard[r]));
    for (int i = 0; i < GY_T_COUNT; i++) {
      CHECK_EQ_INT(gy_gpt_cuda_tensor_size(g.m[r], i), gy_gpt_tensor_size(shard[r], i));
      CHECK_EQ_INT(gy_gpt_cuda_tensor_offset(g.m[r], i), gy_gpt_tensor_offset(shard[r], i));
      CHECK_EQ_INT(gy_gpt_cuda_tensor_sharded(g.m[r], i), gy_gpt_tensor_sharded(shard[r], i));
    }
    REQUIRE(gy_gpt_cuda_upload_params(g.m[r], gy_gpt_params(shard[r])) == 0);
    rk[r] = (tp_rank_t){.g = &g, .r = r, .in = in, .tg = tg, .B = B, .T = T, .z = z};
  }
  if (ok) {
    /* without its sum a shard refuses to run */
    float l;
    CHECK(gy_gpt_cuda_forward(g.m[0], in, tg, B, T, z, &l) == GY_EINVAL);
    pthread_t th[TP];
    for (int r = 0; r < TP; r++) {
      gy_gpt_cuda_set_tp_allreduce(g.m[r], tp_sum_test, &rk[r]);
      REQUIRE(pthread_create(&th[r], NULL, tp_rank_main, &rk[r]) == 0);
    }
    for (int r = 0; r < TP; r++)
      pthread_join(th[r], NULL);
    double lbound = dt == GY_CUDA_F32 ? 1e-5 : 1e-2;
    for (int r = 0; r < TP; r++) {
      CHECK_MSG(rk[r].rc_fwd == 0 && rk[r].rc_bwd == 0, "rank %d: forward %d backward %d: %s", r,
                rk[r].rc_fwd, rk[r].rc_bwd, gy_cuda_last_error());
      CHECK_MSG(fabs(rk[r].loss - lc) <= lbound * fabs(lc), "rank %d loss %.8g cpu %.8g", r,
                rk[r].loss, lc);
      /* 2 forward + 2 backward sums per block, + 2 for the QK-norm weights */
      CHECK_EQ_INT(g.calls[r], cfg.num_layers * (4 + (qk ? 2 : 0)));
    }
    printf("  loss           rank 0 %.7f rank 1 %.7f cpu %.7f\n", rk[0].loss, rk[1].loss, lc);
    if (dt == GY_CUDA_F32)
      cmp_elem("token losses", gy_gpt_cuda_token_losses(g.m[1]), gy_gpt_token_losses(full), N, 1e-5,
               1e-4);
    else
      cmp_l2("token losses", gy_gpt_cuda_token_losses(g.m[1]), gy_gpt_token_losses(full), N, 3e-2);
    /* every rank's gradients against its slice of the full model's (sliced by the CPU shard) */
    double sq_shards[4] = {0}, sq_repl0 = 0;
    for (int r = 0; r < TP; r++) {
      size_t n = gy_gpt_num_params(shard[r]);
      float *gg = malloc(n * 4);
      REQUIRE(gg);
      REQUIRE(gy_gpt_cuda_download_grads(g.m[r], gg) == 0);
      gy_gpt_shard_from_full(shard[r], gy_gpt_grads(full));
      const float *ref = gy_gpt_params(shard[r]);
      for (int i = 0; i < GY_T_COUNT; i++) {
        size_t off = gy_gpt_tensor_offset(shard[r], i), sz = gy_gpt_tensor_size(shard[r], i);
        if (!sz) continue;
        char name[64];
        snprintf(name, sizeof(name), "%s/%d", gy_gpt_tensor_name(i), r);
        if (dt == GY_CUDA_F32)
          cmp_elem(name, gg + off, ref + off, sz, 1e-4, 2e-3);
        else
          cmp_l2(name, gg + off, ref + off, sz, 8e-2);
      }
      /* the norm groups: sharded parts add up over the ranks, replicated ones are equal */
      gy_adamw_cuda_t *o = NULL;
      REQUIRE(gy_adamw_cuda_create(&o, g.m[r]) == 0);
      gy_knobs_t k;
      gy_knobs_default(&k);
      gy_grad_sq_t sq;
      CHECK(gy_adamw_cuda_measure(o, &k, &sq) == 0);
      sq_shards[0] += sq.shallow_shard;
      sq_shards[1] += sq.deep_shard;
      if (r == 0) sq_repl0 = sq.shallow_repl + sq.deep_repl;
      sq_shards[2] = sq.shallow_repl + sq.deep_repl;
      gy_adamw_cuda_destroy(o);
      free(gg);
    }
    if (dt == GY_CUDA_F32) {
      gy_grad_sq_t fsq;
      gy_knobs_t k;
      gy_knobs_default(&k);
      gy_adamw_measure(full, &k, &fsq);
      double want = fsq.shallow_repl + fsq.deep_repl;
      double got = sq_repl0 + sq_shards[0] + sq_shards[1];
      CHECK_MSG(fabs(got - want) <= 1e-4 * want, "squared gradient norm %.10g vs %.10g", got, want);
      CHECK_MSG(fabs(sq_shards[2] - sq_repl0) <= 1e-6 * sq_repl0,
                "replicated squares differ between ranks: %.10g vs %.10g", sq_shards[2], sq_repl0);
      printf("  grad norm^2    shards %.8g full %.8g\n", got, want);
    }
  }
  for (int r = 0; r < TP; r++) {
    gy_gpt_cuda_destroy(g.m[r]);
    gy_gpt_destroy(shard[r]);
    free(g.host[r]);
    free(g.sum[r]);
  }
  pthread_cond_destroy(&g.cv);
  pthread_mutex_destroy(&g.mu);
  free(in), free(tg);
  gy_gpt_destroy(full);
}

int main(void) {
  if (gy_cuda_device_count() < 1) {
    printf("skipped: no GPU\n");
    return 77;
  }
  /* bad configurations are refused with a reason */
  gy_gpt_config_t bad = {.max_seq_len = 8,
                         .vocab_size = 10,
                         .padded_vocab_size = 16,
                         .num_layers = 1,
                         .num_heads = 3, /* does not divide channels */
                         .channels = 8};
  gy_gpt_cuda_t *m = NULL;
  char err[256] = "";
  CHECK(gy_gpt_cuda_create(&m, &bad, 1, GY_CUDA_F32, 0, err, sizeof(err)) == GY_EINVAL);
  CHECK(m == NULL && strstr(err, "num_heads") != NULL);
  bad.num_heads = 2;
  bad.tp_size = 4; /* does not divide the heads */
  CHECK(gy_gpt_cuda_create(&m, &bad, 1, GY_CUDA_F32, 0, err, sizeof(err)) == GY_EINVAL);
  CHECK(m == NULL && strstr(err, "tp_size") != NULL);

  for (int d = 0; d < 2; d++)
    for (int qk = 0; qk < 2; qk++)
      run(d ? GY_CUDA_BF16 : GY_CUDA_F32, qk);
  for (int d = 0; d < 2; d++)
    for (int qk = 0; qk < 2; qk++)
      masked_run(d ? GY_CUDA_BF16 : GY_CUDA_F32, qk);
  learns();
  for (int d = 0; d < 2; d++)
    for (int qk = 0; qk < 2; qk++)
      tp_run(d ? GY_CUDA_BF16 : GY_CUDA_F32, qk);
  GY_TEST_END();
}

#endif
