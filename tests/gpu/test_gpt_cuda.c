/* test_gpt_cuda: the GPT model on the GPU (kernels/gpt_cuda.h) against the CPU model
 * (kernels/gpt.h) on the same checkpoint-like parameters and batch, in f32 and bf16, with and
 * without QK-norm: loss, per-token losses and every gradient tensor; the layout; the CPU <-> GPU
 * parameter round trip; an AdamW step on both sides; the error paths; and that a few bf16 steps
 * on one batch lower its loss.
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

static void run(gy_cuda_dtype_t dt, int qk) {
  printf("dtype %s, qk_norm %d\n", gy_cuda_dtype_name(dt), qk);
  gy_gpt_config_t cfg = {.max_seq_len = 32,
                         .vocab_size = 100,
                         .padded_vocab_size = 128,
                         .num_layers = 2,
                         .num_heads = 4,
                         .channels = 64,
                         .qk_norm = qk};
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
  /* checkpoint-like parameters: GPT-2 init, then every tensor perturbed so that biases and norm
   * weights are not at their initial 0 / 1 (a trained model's are not) */
  gy_gpt_init_params(cpu, 7);
  float *p = gy_gpt_params(cpu);
  for (int i = 0; i < GY_T_COUNT; i++) {
    size_t off = gy_gpt_tensor_offset(cpu, i), sz = gy_gpt_tensor_size(cpu, i);
    if (i == GY_T_WTE) sz = (size_t)cfg.vocab_size * cfg.channels; /* padded rows stay zero */
    for (size_t j = 0; j < sz; j++)
      p[off + j] += 0.02f * frand();
  }
  REQUIRE(gy_gpt_cuda_upload_params(gpu, p) == 0);
  float *back = malloc(n * 4);
  REQUIRE(back);
  REQUIRE(gy_gpt_cuda_download_params(gpu, back) == 0);
  CHECK(memcmp(back, p, n * 4) == 0); /* bitwise: the master weights are float */

  int *in = malloc(sizeof(int) * N), *tg = malloc(sizeof(int) * N);
  for (int i = 0; i < N; i++) {
    in[i] = (int)((frand() + 1.0f) * 0.5f * (cfg.vocab_size - 1));
    tg[i] = (int)((frand() + 1.0f) * 0.5f * (cfg.vocab_size - 1));
  }
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
    const float *lc = gy_gpt_logits(cpu);
    int checked = 0, wrong = 0;
    for (int r = 0; r < N && rc == 0; r++) {
      const float *row = lc + (size_t)r * cfg.padded_vocab_size;
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

int main(void) {
  if (gy_cuda_device_count() < 1) {
    printf("skipped: no GPU\n");
    return 77;
  }
  /* tensor parallelism is refused with a reason */
  gy_gpt_config_t tp = {.max_seq_len = 8,
                        .vocab_size = 10,
                        .padded_vocab_size = 16,
                        .num_layers = 1,
                        .num_heads = 2,
                        .channels = 8,
                        .tp_size = 2};
  gy_gpt_cuda_t *m = NULL;
  char err[256] = "";
  CHECK(gy_gpt_cuda_create(&m, &tp, 1, GY_CUDA_F32, 0, err, sizeof(err)) == GY_ENOTSUP);
  CHECK(m == NULL && strstr(err, "tensor parallelism") != NULL);
  tp.tp_size = 0;
  tp.num_heads = 3; /* does not divide channels */
  CHECK(gy_gpt_cuda_create(&m, &tp, 1, GY_CUDA_F32, 0, err, sizeof(err)) == GY_EINVAL);
  CHECK(strstr(err, "num_heads") != NULL);

  for (int d = 0; d < 2; d++)
    for (int qk = 0; qk < 2; qk++)
      run(d ? GY_CUDA_BF16 : GY_CUDA_F32, qk);
  learns();
  GY_TEST_END();
}

#endif
