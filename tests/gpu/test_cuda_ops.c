/* test_cuda_ops: every CUDA operator of kernels/cuda/ against its CPU reference
 * (kernels/ops_cpu.h, kernels/optim.h), in f32 and bf16.
 *
 * Inputs are random; in bf16 mode they are rounded to bf16 before both sides see them, so only the
 * GPU's own rounding (bf16 outputs and intermediates) and summation order differ. An element
 * passes when |gpu - cpu| <= tol * max|cpu| + eps * |cpu|, with (tol, eps) stated per operator and
 * dtype in the tables below; a NaN anywhere fails.
 *
 * Without a GPU (or in a build without CUDA kernels) it prints "skipped: no GPU" and exits 77,
 * which ctest reports as a skip. */
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
#include "kernels/cuda/adamw.h"
#include "kernels/cuda/attention.h"
#include "kernels/cuda/classifier.h"
#include "kernels/cuda/embedding.h"
#include "kernels/cuda/gelu.h"
#include "kernels/cuda/layernorm.h"
#include "kernels/cuda/matmul.h"
#include "kernels/cuda/norms.h"
#include "kernels/cuda/runtime.h"
#include "kernels/gpt.h"
#include "kernels/gpt_cuda.h"
#include "kernels/ops_cpu.h"
#include "kernels/optim.h"

static gy_cuda_ctx_t *ctx;
static uint64_t rng = 0x9E3779B97F4A7C15ull;

static float frand(void) { /* uniform in [-1, 1) */
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return (float)((rng >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}

/* Round to the nearest bf16 (ties to even), as __float2bfloat16_rn does. */
static float bf16_round(float x) {
  uint32_t u;
  memcpy(&u, &x, 4);
  if ((u & 0x7f800000u) == 0x7f800000u) return x;
  u += 0x7fffu + ((u >> 16) & 1u);
  u &= 0xffff0000u;
  memcpy(&x, &u, 4);
  return x;
}

/* n random floats times scale (plus offset), rounded for dt. Caller frees. */
static float *rnd(size_t n, float scale, float offset, gy_cuda_dtype_t dt) {
  float *x = malloc(n * sizeof(float));
  REQUIRE(x);
  for (size_t i = 0; i < n; i++) {
    x[i] = frand() * scale + offset;
    if (dt == GY_CUDA_BF16) x[i] = bf16_round(x[i]);
  }
  return x;
}

/* Device copy of host floats, in dt. */
static void *dev(const float *h, size_t n, gy_cuda_dtype_t dt) {
  void *d = NULL;
  REQUIRE(gy_cuda_malloc(&d, n * gy_cuda_dtype_size(dt)) == 0);
  REQUIRE(gy_cuda_upload_f32(ctx, d, dt, h, n) == 0);
  return d;
}
static void *dev_zero(size_t bytes) {
  void *d = NULL;
  REQUIRE(gy_cuda_malloc(&d, bytes) == 0);
  REQUIRE(gy_cuda_memset0(ctx, d, bytes) == 0);
  return d;
}
static int *dev_ints(const int *h, size_t n) {
  void *d = NULL;
  REQUIRE(gy_cuda_malloc(&d, n * sizeof(int)) == 0);
  REQUIRE(gy_cuda_upload(ctx, d, h, n * sizeof(int)) == 0);
  return d;
}
/* Host copy of a device array of dt. Caller frees. */
static float *host(const void *d, size_t n, gy_cuda_dtype_t dt) {
  float *h = malloc(n * sizeof(float));
  REQUIRE(h);
  REQUIRE(gy_cuda_download_f32(ctx, h, d, dt, n) == 0);
  return h;
}

/* The comparison rule of this file. */
static void compare(const char *what, gy_cuda_dtype_t dt, const float *got, const float *ref,
                    size_t n, double tol, double eps) {
  double scale = 0.0, worst = 0.0, werr = 0.0;
  size_t bad = 0, wi = 0;
  for (size_t i = 0; i < n; i++)
    if (fabs(ref[i]) > scale) scale = fabs(ref[i]);
  for (size_t i = 0; i < n; i++) {
    double err = fabs((double)got[i] - (double)ref[i]);
    double lim = tol * scale + eps * fabs(ref[i]);
    if (!(err <= lim)) {
      bad++;
      if (!(err - lim <= worst)) {
        worst = isnan(err) ? INFINITY : err - lim;
        wi = i;
      }
    }
    if (err > werr) werr = err;
  }
  CHECK_MSG(bad == 0,
            "%s [%s]: %zu of %zu outside %.1e*max|ref| + %.1e*|ref| (max|ref| %.3g; e.g. [%zu] "
            "gpu %.8g cpu %.8g)",
            what, gy_cuda_dtype_name(dt), bad, n, tol, eps, scale, wi, got[wi], ref[wi]);
  printf("  %-26s %-4s max |err| %.3g  (max|ref| %.3g, tol %.0e, eps %.0e)\n", what,
         gy_cuda_dtype_name(dt), werr, scale, tol, eps);
}

/* Per-operator tolerances: {tol, eps} for f32 and for bf16. */
typedef struct {
  double tol, eps;
} tl_t;
#define TL(dt, f32tol, f32eps, bftol, bfeps)                                                       \
  ((dt) == GY_CUDA_F32 ? (tl_t){(f32tol), (f32eps)} : (tl_t){(bftol), (bfeps)})

/* ---- encoder ---- */
static void test_encoder(gy_cuda_dtype_t dt) {
  int B = 3, T = 17, C = 40, V = 50, Vp = 64, N = B * T;
  float *wte = rnd((size_t)Vp * C, 1, 0, dt), *wpe = rnd((size_t)T * C, 1, 0, dt);
  int inp[3 * 17];
  for (int i = 0; i < N; i++)
    inp[i] = (i * 7) % 11; /* repeated tokens: the backward must sum them */
  float *ref = malloc(sizeof(float) * N * C);
  gy_encoder_forward(ref, inp, wte, wpe, B, T, C);
  void *dwte_w = dev(wte, (size_t)Vp * C, dt), *dwpe_w = dev(wpe, (size_t)T * C, dt);
  int *dinp = dev_ints(inp, N);
  void *dout = dev_zero((size_t)N * C * 4);
  CHECK(gy_cuda_encoder_forward(ctx, dt, dout, dinp, dwte_w, dwpe_w, B, T, C) == 0);
  float *got = host(dout, (size_t)N * C, dt);
  tl_t t = TL(dt, 0, 1e-6, 0, 8e-3);
  compare("encoder_forward", dt, got, ref, (size_t)N * C, t.tol, t.eps);

  /* backward: accumulate into non-zero gradients */
  float *g = rnd((size_t)N * C, 1, 0, dt);
  float *gwte = rnd((size_t)Vp * C, 1, 0, GY_CUDA_F32),
        *gwpe = rnd((size_t)T * C, 1, 0, GY_CUDA_F32);
  float *d_gwte = dev(gwte, (size_t)Vp * C, GY_CUDA_F32),
        *d_gwpe = dev(gwpe, (size_t)T * C, GY_CUDA_F32);
  gy_encoder_backward(gwte, gwpe, g, inp, B, T, C);
  int tok[3 * 17], starts[3 * 17 + 1], pos[3 * 17], count[51];
  int nu = gy_cuda_encoder_plan(inp, N, V, tok, starts, pos, count);
  CHECK_EQ_INT(nu, 11);
  int *dtok = dev_ints(tok, nu), *dst = dev_ints(starts, nu + 1), *dpos = dev_ints(pos, N);
  void *dg = dev(g, (size_t)N * C, dt);
  CHECK(gy_cuda_encoder_backward(ctx, dt, d_gwte, d_gwpe, dg, dtok, dst, dpos, nu, B, T, C) == 0);
  float *got_wte = host(d_gwte, (size_t)Vp * C, GY_CUDA_F32);
  float *got_wpe = host(d_gwpe, (size_t)T * C, GY_CUDA_F32);
  t = TL(dt, 1e-6, 1e-5, 1e-6, 1e-5);
  compare("encoder_backward dwte", dt, got_wte, gwte, (size_t)Vp * C, t.tol, t.eps);
  compare("encoder_backward dwpe", dt, got_wpe, gwpe, (size_t)T * C, t.tol, t.eps);
  int badtok[2] = {3, 50};
  CHECK(gy_cuda_encoder_plan(badtok, 2, V, tok, starts, pos, count) == GY_EINVAL);
  /* a bad shape is refused, not launched */
  CHECK(gy_cuda_encoder_forward(ctx, dt, dout, dinp, dwte_w, dwpe_w, 0, T, C) == GY_EINVAL);
  gy_cuda_free(dwte_w), gy_cuda_free(dwpe_w), gy_cuda_free(dinp), gy_cuda_free(dout);
  gy_cuda_free(d_gwte), gy_cuda_free(d_gwpe), gy_cuda_free(dtok), gy_cuda_free(dst);
  gy_cuda_free(dpos), gy_cuda_free(dg);
  free(wte), free(wpe), free(ref), free(got), free(g), free(gwte), free(gwpe), free(got_wte);
  free(got_wpe);
}

/* ---- layernorm ---- */
static void test_layernorm(gy_cuda_dtype_t dt, int N, int C, int with_bias) {
  float *x = rnd((size_t)N * C, 2, 0.5f, dt), *w = rnd(C, 1, 1, dt), *b = rnd(C, 1, 0, dt);
  float *ref = malloc(sizeof(float) * N * C), *mean = malloc(sizeof(float) * N),
        *rstd = malloc(sizeof(float) * N);
  gy_layernorm_forward(ref, mean, rstd, x, w, with_bias ? b : NULL, N, C);
  void *dx = dev(x, (size_t)N * C, dt), *dw = dev(w, C, dt), *db = dev(b, C, dt);
  void *dout = dev_zero((size_t)N * C * 4);
  float *dmean = dev_zero((size_t)N * 4), *drstd = dev_zero((size_t)N * 4);
  CHECK(gy_cuda_layernorm_forward(ctx, dt, dout, dmean, drstd, dx, dw, with_bias ? db : NULL, N,
                                  C) == 0);
  float *got = host(dout, (size_t)N * C, dt);
  float *gmean = host(dmean, N, GY_CUDA_F32), *grstd = host(drstd, N, GY_CUDA_F32);
  tl_t t = TL(dt, 1e-6, 1e-5, 2e-3, 8e-3);
  compare("layernorm_forward", dt, got, ref, (size_t)N * C, t.tol, t.eps);
  compare("layernorm_forward mean", dt, gmean, mean, N, 1e-6, 1e-5);
  compare("layernorm_forward rstd", dt, grstd, rstd, N, 1e-6, 1e-5);

  /* backward, accumulating into non-zero dinp / dweight / dbias */
  float *dy = rnd((size_t)N * C, 1, 0, dt);
  float *dinp = rnd((size_t)N * C, 1, 0, dt), *gw = rnd(C, 1, 0, GY_CUDA_F32),
        *gb = rnd(C, 1, 0, GY_CUDA_F32);
  void *d_dy = dev(dy, (size_t)N * C, dt), *d_dinp = dev(dinp, (size_t)N * C, dt);
  float *d_gw = dev(gw, C, GY_CUDA_F32), *d_gb = dev(gb, C, GY_CUDA_F32);
  float *scratch = malloc(sizeof(float) * 2 * GY_OPS_CHUNKS * C);
  gy_layernorm_backward(dinp, gw, with_bias ? gb : NULL, dy, x, w, mean, rstd, N, C, scratch);
  float *dscr = dev_zero(gy_cuda_layernorm_scratch_floats(C) * 4);
  /* the GPU uses its own statistics (checked above) */
  CHECK(gy_cuda_layernorm_backward(ctx, dt, d_dinp, d_gw, with_bias ? d_gb : NULL, d_dy, dx, dw,
                                   dmean, drstd, N, C, dscr) == 0);
  float *g_dinp = host(d_dinp, (size_t)N * C, dt), *g_gw = host(d_gw, C, GY_CUDA_F32),
        *g_gb = host(d_gb, C, GY_CUDA_F32);
  t = TL(dt, 1e-5, 1e-4, 1e-2, 1e-2);
  compare("layernorm_backward dinp", dt, g_dinp, dinp, (size_t)N * C, t.tol, t.eps);
  t = TL(dt, 1e-5, 1e-4, 2e-3, 2e-3);
  compare("layernorm_backward dweight", dt, g_gw, gw, C, t.tol, t.eps);
  compare("layernorm_backward dbias", dt, g_gb, gb, C, t.tol, t.eps);
  gy_cuda_free(dx), gy_cuda_free(dw), gy_cuda_free(db), gy_cuda_free(dout), gy_cuda_free(dmean);
  gy_cuda_free(drstd), gy_cuda_free(d_dy), gy_cuda_free(d_dinp), gy_cuda_free(d_gw);
  gy_cuda_free(d_gb), gy_cuda_free(dscr);
  free(x), free(w), free(b), free(ref), free(mean), free(rstd), free(got), free(gmean);
  free(grstd), free(dy), free(dinp), free(gw), free(gb), free(scratch), free(g_dinp), free(g_gw);
  free(g_gb);
}

/* ---- matmul ---- */
static void test_matmul(gy_cuda_dtype_t dt) {
  int N = 70, C = 48, OC = 96;
  float *x = rnd((size_t)N * C, 1, 0, dt), *w = rnd((size_t)OC * C, 0.2f, 0, dt),
        *b = rnd(OC, 1, 0, dt);
  float *ref = malloc(sizeof(float) * N * OC);
  gy_matmul_forward(ref, x, w, b, N, C, OC);
  void *dx = dev(x, (size_t)N * C, dt), *dw = dev(w, (size_t)OC * C, dt), *db = dev(b, OC, dt);
  void *dout = dev_zero((size_t)N * OC * 4);
  CHECK(gy_cuda_matmul_forward(ctx, dt, dout, dx, dw, db, N, C, OC) == 0);
  float *got = host(dout, (size_t)N * OC, dt);
  tl_t t = TL(dt, 1e-6, 1e-5, 2e-3, 8e-3);
  compare("matmul_forward", dt, got, ref, (size_t)N * OC, t.tol, t.eps);
  /* a row-parallel layer's split form: the product, then the bias on its own */
  CHECK(gy_cuda_matmul_forward(ctx, dt, dout, dx, dw, NULL, N, C, OC) == 0);
  CHECK(gy_cuda_add_bias(ctx, dt, dout, db, N, OC) == 0);
  free(got);
  got = host(dout, (size_t)N * OC, dt);
  compare("matmul_forward + add_bias", dt, got, ref, (size_t)N * OC, t.tol, t.eps);

  float *dy = rnd((size_t)N * OC, 1, 0, dt), *dinp = rnd((size_t)N * C, 1, 0, dt);
  float *gw = rnd((size_t)OC * C, 1, 0, GY_CUDA_F32), *gb = rnd(OC, 1, 0, GY_CUDA_F32);
  void *d_dy = dev(dy, (size_t)N * OC, dt), *d_dinp = dev(dinp, (size_t)N * C, dt);
  float *d_gw = dev(gw, (size_t)OC * C, GY_CUDA_F32), *d_gb = dev(gb, OC, GY_CUDA_F32);
  float *scratch = malloc(sizeof(float) * GY_OPS_CHUNKS * OC);
  gy_matmul_backward(dinp, gw, gb, dy, x, w, N, C, OC, scratch);
  float *dscr = dev_zero(gy_cuda_matmul_scratch_floats(OC) * 4);
  CHECK(gy_cuda_matmul_backward(ctx, dt, d_dinp, 1, d_gw, d_gb, d_dy, dx, dw, N, C, OC, dscr) == 0);
  float *g_dinp = host(d_dinp, (size_t)N * C, dt), *g_gw = host(d_gw, (size_t)OC * C, GY_CUDA_F32);
  float *g_gb = host(d_gb, OC, GY_CUDA_F32);
  t = TL(dt, 1e-6, 1e-5, 2e-3, 8e-3);
  compare("matmul_backward dinp (+=)", dt, g_dinp, dinp, (size_t)N * C, t.tol, t.eps);
  t = TL(dt, 1e-6, 1e-5, 1e-5, 1e-5);
  compare("matmul_backward dweight", dt, g_gw, gw, (size_t)OC * C, t.tol, t.eps);
  compare("matmul_backward dbias", dt, g_gb, gb, OC, t.tol, t.eps);
  gy_cuda_free(dx), gy_cuda_free(dw), gy_cuda_free(db), gy_cuda_free(dout), gy_cuda_free(d_dy);
  gy_cuda_free(d_dinp), gy_cuda_free(d_gw), gy_cuda_free(d_gb), gy_cuda_free(dscr);
  free(x), free(w), free(b), free(ref), free(got), free(dy), free(dinp), free(gw), free(gb);
  free(scratch), free(g_dinp), free(g_gw), free(g_gb);
}

/* ---- attention ---- */
static void test_attention(gy_cuda_dtype_t dt, int qk) {
  int B = 2, T = 37, C = 64, NH = 4, hs = C / NH;
  size_t N = (size_t)B * T, bnt = (size_t)B * NH * T * hs, att_n = (size_t)B * NH * T * T;
  float *qkv = rnd(N * 3 * C, 1.0f, 0, dt), *qnw = rnd(hs, 0.5f, 1, dt),
        *knw = rnd(hs, 0.5f, 1, dt);
  /* CPU */
  gy_attn_acts_t a = {0};
  a.q = malloc(bnt * 4), a.k = malloc(bnt * 4), a.v = malloc(bnt * 4), a.att = malloc(att_n * 4);
  if (qk) {
    a.qraw = malloc(bnt * 4), a.kraw = malloc(bnt * 4);
    a.qmean = malloc(N * NH * 4), a.qrstd = malloc(N * NH * 4);
    a.kmean = malloc(N * NH * 4), a.krstd = malloc(N * NH * 4);
  }
  float *ref = malloc(N * C * 4);
  gy_attention_forward(ref, &a, qkv, qk ? qnw : NULL, qk ? knw : NULL, B, T, C, NH);
  /* GPU */
  size_t es = gy_cuda_dtype_size(dt);
  gy_cuda_attn_acts_t g = {0};
  g.q = dev_zero(bnt * es), g.k = dev_zero(bnt * es), g.v = dev_zero(bnt * es);
  g.att = dev_zero(att_n * es);
  if (qk) {
    g.qraw = dev_zero(bnt * es), g.kraw = dev_zero(bnt * es);
    g.qmean = dev_zero(N * NH * 4), g.qrstd = dev_zero(N * NH * 4);
    g.kmean = dev_zero(N * NH * 4), g.krstd = dev_zero(N * NH * 4);
  }
  void *d_qkv = dev(qkv, N * 3 * C, dt), *d_qnw = dev(qnw, hs, dt), *d_knw = dev(knw, hs, dt);
  void *d_out = dev_zero(N * C * es);
  void *scr = dev_zero(gy_cuda_attention_scratch_bytes(dt, B, T, C, NH, qk));
  CHECK(gy_cuda_attention_forward(ctx, dt, d_out, &g, d_qkv, qk ? d_qnw : NULL, qk ? d_knw : NULL,
                                  B, T, C, NH, scr) == 0);
  float *got = host(d_out, N * C, dt), *gatt = host(g.att, att_n, dt);
  const char *nm = qk ? "attention+qknorm" : "attention";
  char what[64];
  /* bf16: the scores are stored in bf16 before the softmax (as llm.c does), so a probability
   * carries up to ~1% error from its score's rounding */
  tl_t t = TL(dt, 1e-6, 1e-4, 2e-2, 3e-2);
  snprintf(what, sizeof(what), "%s forward", nm);
  compare(what, dt, got, ref, N * C, t.tol, t.eps);
  snprintf(what, sizeof(what), "%s probs", nm);
  compare(what, dt, gatt, a.att, att_n, t.tol, t.eps);

  float *dy = rnd(N * C, 1, 0, dt);
  float *dqkv = malloc(N * 3 * C * 4), *dqnw = calloc(hs, 4), *dknw = calloc(hs, 4);
  float *scratch = malloc(gy_attention_scratch_floats(B, T, C, NH) * 4);
  gy_attention_backward(dqkv, qk ? dqnw : NULL, qk ? dknw : NULL, dy, &a, qk ? qnw : NULL,
                        qk ? knw : NULL, B, T, C, NH, scratch);
  void *d_dy = dev(dy, N * C, dt), *d_dqkv = dev_zero(N * 3 * C * es);
  float *d_dqnw = dev_zero(hs * 4), *d_dknw = dev_zero(hs * 4);
  CHECK(gy_cuda_attention_backward(ctx, dt, d_dqkv, qk ? d_dqnw : NULL, qk ? d_dknw : NULL, d_dy,
                                   &g, qk ? d_qnw : NULL, qk ? d_knw : NULL, B, T, C, NH,
                                   scr) == 0);
  float *g_dqkv = host(d_dqkv, N * 3 * C, dt);
  t = TL(dt, 1e-5, 1e-3, 4e-2, 5e-2);
  snprintf(what, sizeof(what), "%s backward dqkv", nm);
  compare(what, dt, g_dqkv, dqkv, N * 3 * C, t.tol, t.eps);
  if (qk) {
    float *gq = host(d_dqnw, hs, GY_CUDA_F32), *gk = host(d_dknw, hs, GY_CUDA_F32);
    compare("attention backward dqnw", dt, gq, dqnw, hs, t.tol, t.eps);
    compare("attention backward dknw", dt, gk, dknw, hs, t.tol, t.eps);
    free(gq), free(gk);
  }
  gy_cuda_free(g.q), gy_cuda_free(g.k), gy_cuda_free(g.v), gy_cuda_free(g.att);
  gy_cuda_free(g.qraw), gy_cuda_free(g.kraw), gy_cuda_free(g.qmean), gy_cuda_free(g.qrstd);
  gy_cuda_free(g.kmean), gy_cuda_free(g.krstd), gy_cuda_free(d_qkv), gy_cuda_free(d_qnw);
  gy_cuda_free(d_knw), gy_cuda_free(d_out), gy_cuda_free(scr), gy_cuda_free(d_dy);
  gy_cuda_free(d_dqkv), gy_cuda_free(d_dqnw), gy_cuda_free(d_dknw);
  free(a.q), free(a.k), free(a.v), free(a.att), free(a.qraw), free(a.kraw), free(a.qmean);
  free(a.qrstd), free(a.kmean), free(a.krstd), free(qkv), free(qnw), free(knw), free(ref);
  free(got), free(gatt), free(dy), free(dqkv), free(dqnw), free(dknw), free(scratch);
  free(g_dqkv);
}

/* ---- gelu, residual ---- */
static void test_elementwise(gy_cuda_dtype_t dt) {
  size_t n = 10007;
  float *x = rnd(n, 4, 0, dt), *y = rnd(n, 1, 0, dt);
  float *ref = malloc(n * 4), *dref = malloc(n * 4), *rref = malloc(n * 4);
  gy_gelu_forward(ref, x, n);
  gy_gelu_backward(dref, x, y, n);
  gy_residual_forward(rref, x, y, n);
  void *dx = dev(x, n, dt), *dy = dev(y, n, dt), *dout = dev_zero(n * 4);
  CHECK(gy_cuda_gelu_forward(ctx, dt, dout, dx, n) == 0);
  float *got = host(dout, n, dt);
  tl_t t = TL(dt, 1e-7, 1e-5, 1e-6, 8e-3);
  compare("gelu_forward", dt, got, ref, n, t.tol, t.eps);
  free(got);
  CHECK(gy_cuda_gelu_backward(ctx, dt, dy, dx, dy, n) == 0); /* in place */
  got = host(dy, n, dt);
  compare("gelu_backward (in place)", dt, got, dref, n, t.tol, t.eps);
  free(got);
  REQUIRE(gy_cuda_upload_f32(ctx, dy, dt, y, n) == 0);
  CHECK(gy_cuda_residual_forward(ctx, dt, dout, dx, dy, n) == 0);
  got = host(dout, n, dt);
  t = TL(dt, 0, 1e-7, 0, 8e-3);
  compare("residual_forward", dt, got, rref, n, t.tol, t.eps);
  gy_cuda_free(dx), gy_cuda_free(dy), gy_cuda_free(dout);
  free(x), free(y), free(ref), free(dref), free(rref), free(got);
}

/* ---- classifier ---- */
static void test_classifier(gy_cuda_dtype_t dt, float z) {
  int N = 37, V = 1000, Vp = 1024;
  float *lg = rnd((size_t)N * Vp, 4, 0, dt);
  int *tg = malloc(N * sizeof(int));
  for (int i = 0; i < N; i++)
    tg[i] = (i * 131) % V;
  float *tl = malloc(N * 4), *dl = malloc((size_t)N * Vp * 4);
  double total = gy_crossentropy_forward(tl, dl, lg, tg, N, V, Vp, z, (float)N, NULL, 1);
  void *d_lg = dev(lg, (size_t)N * Vp, dt);
  int *d_tg = dev_ints(tg, N);
  float *d_tl = dev_zero(N * 4), *d_rl = dev_zero(N * 4);
  CHECK(gy_cuda_classifier(ctx, dt, d_lg, d_tl, d_rl, d_tg, N, V, Vp, z, (float)N, 0, NULL, 1) ==
        0);
  float *g_tl = host(d_tl, N, GY_CUDA_F32), *g_rl = host(d_rl, N, GY_CUDA_F32);
  double gtotal = 0;
  for (int i = 0; i < N; i++)
    gtotal += g_rl[i];
  compare("classifier token losses", dt, g_tl, tl, N, 1e-6, 1e-5);
  CHECK_MSG(fabs(gtotal - total) <= 1e-5 * fabs(total), "classifier loss sum %.9g vs %.9g", gtotal,
            total);
  CHECK(gy_cuda_classifier(ctx, dt, d_lg, d_tl, NULL, d_tg, N, V, Vp, z, (float)N, 1, NULL, 1) ==
        0);
  float *g_dl = host(d_lg, (size_t)N * Vp, dt);
  tl_t t = TL(dt, 1e-6, 1e-4, 1e-4, 8e-3);
  compare(z > 0 ? "classifier dlogits (z-loss)" : "classifier dlogits", dt, g_dl, dl,
          (size_t)N * Vp, t.tol, t.eps);
  /* A per-sample mask (samples of one row each, here): the masked rows' gradient is exactly zero
   * on both sides, the kept rows' is scaled by the kept count. */
  uint8_t *keep = malloc((size_t)N);
  REQUIRE(keep);
  int kept = 0;
  for (int i = 0; i < N; i++) {
    keep[i] = i % 3 != 0;
    kept += keep[i];
  }
  gy_crossentropy_forward(tl, dl, lg, tg, N, V, Vp, z, (float)kept, keep, 1);
  void *d_keep = dev_zero((size_t)N);
  REQUIRE(gy_cuda_upload(ctx, d_keep, keep, (size_t)N) == 0);
  REQUIRE(gy_cuda_upload_f32(ctx, d_lg, dt, lg, (size_t)N * Vp) == 0);
  CHECK(gy_cuda_classifier(ctx, dt, d_lg, d_tl, NULL, d_tg, N, V, Vp, z, (float)kept, 1, d_keep,
                           1) == 0);
  free(g_dl);
  g_dl = host(d_lg, (size_t)N * Vp, dt);
  compare("classifier dlogits (masked)", dt, g_dl, dl, (size_t)N * Vp, t.tol, t.eps);
  int masked_zero = 1;
  for (int i = 0; i < N; i += 3)
    for (int j = 0; j < Vp; j++)
      if (g_dl[(size_t)i * Vp + j] != 0.0f) masked_zero = 0;
  CHECK(masked_zero);
  gy_cuda_free(d_keep), free(keep);
  gy_cuda_free(d_lg), gy_cuda_free(d_tg), gy_cuda_free(d_tl), gy_cuda_free(d_rl);
  free(lg), free(tg), free(tl), free(dl), free(g_tl), free(g_rl), free(g_dl);
}

/* ---- norms, non-finite ---- */
static void test_norms(void) {
  size_t n = 100003;
  float *x = rnd(n, 3, 0, GY_CUDA_F32);
  float *dx = dev(x, n, GY_CUDA_F32);
  void *scr = dev_zero(gy_cuda_norms_scratch_bytes());
  gy_cuda_seg_t segs[3] = {{0, 1000, 0}, {1000, 50000, 2}, {51000, n - 51000, 0}};
  double ref[4] = {0, 0, 0, 0}, got[4];
  for (int s = 0; s < 3; s++)
    for (size_t i = segs[s].offset; i < segs[s].offset + segs[s].count; i++)
      ref[segs[s].group] += (double)x[i] * x[i];
  int nf = -1;
  CHECK(gy_cuda_sq_norms(ctx, dx, segs, 3, got, &nf, scr) == 0);
  CHECK_EQ_INT(nf, 0);
  for (int g = 0; g < 4; g++)
    CHECK_MSG(fabs(got[g] - ref[g]) <= 1e-12 * ref[g] + 1e-12, "group %d: %.17g vs %.17g", g,
              got[g], ref[g]);
  printf("  sq_norms                   groups %.6g %.6g (rel err <= 1e-12)\n", got[0], got[2]);
  /* scaling a segment scales its group's square by scale^2, exactly for a power of two */
  CHECK(gy_cuda_scale_segs(ctx, dx, segs, 1, 2.0f) == 0);
  double got2[4];
  CHECK(gy_cuda_sq_norms(ctx, dx, segs, 1, got2, &nf, scr) == 0);
  double seg0 = 0;
  for (size_t i = 0; i < 1000; i++)
    seg0 += (double)x[i] * x[i];
  CHECK_MSG(fabs(got2[0] - 4 * seg0) <= 1e-12 * seg0, "scaled: %.17g vs %.17g", got2[0], 4 * seg0);
  /* one NaN, one Inf, anywhere: detected in one call */
  float bad[2] = {NAN, INFINITY};
  for (int k = 0; k < 2; k++) {
    REQUIRE(gy_cuda_upload(ctx, dx + 77777, &bad[k], 4) == 0);
    CHECK(gy_cuda_sq_norms(ctx, dx, segs, 3, got, &nf, scr) == 0);
    CHECK_EQ_INT(nf, 1);
    CHECK(gy_cuda_any_nonfinite(ctx, GY_CUDA_F32, dx, n, &nf, scr) == 0);
    CHECK_EQ_INT(nf, 1);
  }
  REQUIRE(gy_cuda_upload(ctx, dx, x, n * 4) == 0);
  CHECK(gy_cuda_any_nonfinite(ctx, GY_CUDA_F32, dx, n, &nf, scr) == 0);
  CHECK_EQ_INT(nf, 0);
  /* bf16 non-finite detection */
  void *hb = dev(x, n, GY_CUDA_BF16);
  CHECK(gy_cuda_any_nonfinite(ctx, GY_CUDA_BF16, hb, n, &nf, scr) == 0);
  CHECK_EQ_INT(nf, 0);
  REQUIRE(gy_cuda_upload_f32(ctx, (char *)hb + 2 * 5, GY_CUDA_BF16, &bad[0], 1) == 0);
  CHECK(gy_cuda_any_nonfinite(ctx, GY_CUDA_BF16, hb, n, &nf, scr) == 0);
  CHECK_EQ_INT(nf, 1);
  /* bad segment tables are refused */
  gy_cuda_seg_t badseg = {0, 10, 7};
  CHECK(gy_cuda_sq_norms(ctx, dx, &badseg, 1, got, &nf, scr) == GY_EINVAL);
  gy_cuda_free(dx), gy_cuda_free(scr), gy_cuda_free(hb);
  free(x);
}

/* ---- AdamW through the model-level optimizer (shallow scale, norms, clip, decay) ---- */
static void test_adamw(gy_cuda_dtype_t dt) {
  gy_gpt_config_t cfg = {.max_seq_len = 8,
                         .vocab_size = 30,
                         .padded_vocab_size = 32,
                         .num_layers = 3,
                         .num_heads = 2,
                         .channels = 16,
                         .qk_norm = 1};
  gy_gpt_t *cpu = NULL;
  gy_gpt_cuda_t *gm = NULL;
  gy_adamw_t *co = NULL;
  gy_adamw_cuda_t *go = NULL;
  char err[256] = "";
  REQUIRE(gy_gpt_create(&cpu, &cfg, 1) == 0);
  REQUIRE(gy_gpt_cuda_create(&gm, &cfg, 1, dt, 0, err, sizeof(err)) == 0);
  REQUIRE(gy_adamw_create(&co, gy_gpt_num_params(cpu)) == 0);
  REQUIRE(gy_adamw_cuda_create(&go, gm) == 0);
  size_t n = gy_gpt_num_params(cpu);
  CHECK_EQ_INT(gy_gpt_cuda_num_params(gm), n);
  gy_knobs_t k;
  gy_knobs_default(&k);
  k.shallow_scale = 0.5f;
  k.shallow_layers = 1;
  k.grad_clip = 0.5f; /* the random gradients' norm is far above: clipping is exercised */
  k.eps = 1e-6f;
  k.sched.warmup = 2;
  float *p = gy_gpt_params(cpu), *g = gy_gpt_grads(cpu);
  for (size_t i = 0; i < n; i++)
    p[i] = frand();
  REQUIRE(gy_gpt_cuda_upload_params(gm, p) == 0);
  float *got = malloc(n * 4), *gm_m = malloc(n * 4), *gm_v = malloc(n * 4);
  for (int step = 0; step < 3; step++) {
    for (size_t i = 0; i < n; i++)
      g[i] = frand() * 0.1f;
    REQUIRE(gy_gpt_cuda_upload_grads(gm, g) == 0);
    gy_step_stats_t cs, gs;
    gy_adamw_step(co, cpu, &k, step, &cs);
    CHECK(gy_adamw_cuda_step(go, &k, step, &gs) == 0);
    CHECK_MSG(fabs(gs.global - cs.global) <= 1e-9 * cs.global, "global norm %.12g vs %.12g",
              gs.global, cs.global);
    CHECK_MSG(fabs(gs.shallow - cs.shallow) <= 1e-9 * cs.shallow, "shallow %.12g vs %.12g",
              gs.shallow, cs.shallow);
    CHECK_MSG(fabs(gs.update_ratio - cs.update_ratio) <= 1e-5 * cs.update_ratio,
              "update ratio %.9g vs %.9g", gs.update_ratio, cs.update_ratio);
    CHECK(gs.lr == cs.lr && !gs.nonfinite && !cs.nonfinite);
  }
  REQUIRE(gy_gpt_cuda_download_params(gm, got) == 0);
  REQUIRE(gy_adamw_cuda_download(go, gm_m, gm_v) == 0);
  compare("adamw params (3 steps)", dt, got, p, n, 1e-7, 1e-6);
  compare("adamw m", dt, gm_m, gy_adamw_m(co), n, 1e-7, 1e-5);
  compare("adamw v", dt, gm_v, gy_adamw_v(co), n, 1e-7, 1e-5);
  /* a NaN gradient skips the step on both sides */
  g[5] = NAN;
  REQUIRE(gy_gpt_cuda_upload_grads(gm, g) == 0);
  gy_step_stats_t gs;
  CHECK(gy_adamw_cuda_step(go, &k, 3, &gs) == 0);
  CHECK_EQ_INT(gs.nonfinite, 1);
  float *after = malloc(n * 4);
  REQUIRE(gy_gpt_cuda_download_params(gm, after) == 0);
  CHECK(memcmp(after, got, n * 4) == 0);
  free(after), free(got), free(gm_m), free(gm_v);
  gy_adamw_cuda_destroy(go);
  gy_adamw_destroy(co);
  gy_gpt_cuda_destroy(gm);
  gy_gpt_destroy(cpu);
}

int main(void) {
  int ndev = gy_cuda_device_count();
  if (ndev < 1) {
    printf("skipped: no GPU\n");
    return 77;
  }
  char name[256] = "";
  gy_cuda_device_info(0, name, sizeof(name), NULL, NULL);
  printf("device 0: %s\n", name);
  REQUIRE(gy_cuda_ctx_create(&ctx, 0) == 0);
  for (int d = 0; d < 2; d++) {
    gy_cuda_dtype_t dt = d ? GY_CUDA_BF16 : GY_CUDA_F32;
    test_encoder(dt);
    test_layernorm(dt, 300, 72, 1);
    test_layernorm(dt, 64, 16, 0);
    test_matmul(dt);
    test_attention(dt, 0);
    test_attention(dt, 1);
    test_elementwise(dt);
    test_classifier(dt, 0.0f);
    test_classifier(dt, 1e-2f);
    test_adamw(dt);
  }
  test_norms();
  CHECK(gy_cuda_sync(ctx) == 0);
  gy_cuda_ctx_destroy(ctx);
  GY_TEST_END();
}

#endif
