/* Gradient check: the analytic gradient of every parameter tensor of the GPT model matches
 * central finite differences, along a random direction per tensor and at the tensor's largest
 * gradient entries, with and without QK-norm and z-loss. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/gpt.h"
#include "tests/test.h"

static uint64_t rng = 12345;
static double urand(void) {
  rng = rng * 6364136223846793005ull + 1442695040888963407ull;
  return (double)(rng >> 11) / 9007199254740992.0;
}

static double loss_at(gy_gpt_t *m, const int *x, const int *y, int B, int T, float z) {
  float l;
  REQUIRE(gy_gpt_forward(m, x, y, B, T, z, &l) == 0);
  return l;
}

static void check_model(int qk_norm, float z) {
  gy_gpt_config_t cfg = {.max_seq_len = 8,
                         .vocab_size = 40,
                         .padded_vocab_size = 64,
                         .num_layers = 2,
                         .num_heads = 2,
                         .channels = 16,
                         .qk_norm = qk_norm};
  int B = 2, T = 8;
  gy_gpt_t *m;
  REQUIRE(gy_gpt_create(&m, &cfg, B) == 0);
  gy_gpt_init_params(m, 7);
  /* Larger weights than the GPT-2 init so every path carries a visible gradient. */
  float *p = gy_gpt_params(m);
  size_t np = gy_gpt_num_params(m);
  for (size_t i = 0; i < np; i++)
    p[i] += (float)(0.2 * (urand() - 0.5));
  int x[16], y[16];
  for (int i = 0; i < B * T; i++) {
    x[i] = (int)(urand() * cfg.vocab_size);
    y[i] = (int)(urand() * cfg.vocab_size);
  }
  float l0;
  REQUIRE(gy_gpt_forward(m, x, y, B, T, z, &l0) == 0);
  REQUIRE(gy_gpt_backward(m) == 0);
  float *g = malloc(np * sizeof(float));
  memcpy(g, gy_gpt_grads(m), np * sizeof(float));

  for (int t = 0; t < GY_T_COUNT; t++) {
    size_t off = gy_gpt_tensor_offset(m, t), n = gy_gpt_tensor_size(m, t);
    if (!n) continue;
    if (t == GY_T_WTE) n = (size_t)cfg.vocab_size * cfg.channels; /* padding rows get no grad */
    /* directional derivative along a random unit direction */
    double *d = malloc(n * sizeof(double));
    double norm = 0;
    for (size_t i = 0; i < n; i++) {
      d[i] = urand() - 0.5;
      norm += d[i] * d[i];
    }
    norm = sqrt(norm);
    double ana = 0;
    for (size_t i = 0; i < n; i++) {
      d[i] /= norm;
      ana += d[i] * g[off + i];
    }
    float *saved = malloc(n * sizeof(float));
    memcpy(saved, p + off, n * sizeof(float));
    double eps = 1e-2;
    for (size_t i = 0; i < n; i++)
      p[off + i] = (float)(saved[i] + eps * d[i]);
    double lp = loss_at(m, x, y, B, T, z);
    for (size_t i = 0; i < n; i++)
      p[off + i] = (float)(saved[i] - eps * d[i]);
    double lm = loss_at(m, x, y, B, T, z);
    memcpy(p + off, saved, n * sizeof(float));
    double num = (lp - lm) / (2 * eps);
    CHECK_MSG(fabs(num - ana) <= 2e-4 + 2e-2 * fabs(ana),
              "qk_norm=%d z=%g tensor %s: directional numeric %.6g analytic %.6g", qk_norm, z,
              gy_gpt_tensor_name(t), num, ana);
    /* the three largest entries, one by one */
    for (int rep = 0; rep < 3; rep++) {
      size_t best = 0;
      for (size_t i = 0; i < n; i++)
        if (fabsf(g[off + i]) > fabsf(g[off + best]) && d[i] != 1e9) best = i;
      double a = g[off + best];
      float s = p[off + best];
      double e = 1e-2;
      p[off + best] = s + (float)e;
      double lp1 = loss_at(m, x, y, B, T, z);
      p[off + best] = s - (float)e;
      double lm1 = loss_at(m, x, y, B, T, z);
      p[off + best] = s;
      double nn = (lp1 - lm1) / (2 * e);
      CHECK_MSG(fabs(nn - a) <= 5e-4 + 5e-2 * fabs(a),
                "qk_norm=%d z=%g tensor %s[%zu]: numeric %.6g analytic %.6g", qk_norm, z,
                gy_gpt_tensor_name(t), best, nn, a);
      g[off + best] = 0; /* next-largest next time */
      d[best] = 1e9;
    }
    free(saved);
    free(d);
  }
  /* padded vocabulary rows never receive gradient */
  const float *gw = gy_gpt_grads(m) + gy_gpt_tensor_offset(m, GY_T_WTE);
  int padded_zero = 1;
  for (size_t i = (size_t)cfg.vocab_size * cfg.channels;
       i < (size_t)cfg.padded_vocab_size * cfg.channels; i++)
    if (gw[i] != 0.0f) padded_zero = 0;
  CHECK(padded_zero);
  free(g);
  gy_gpt_destroy(m);
}

int main(void) {
  check_model(0, 0.0f);
  check_model(1, 0.0f);
  check_model(0, 1e-2f);
  check_model(1, 1e-2f);
  GY_TEST_END();
}
