/*
 * ops_cpu: CPU operators of the GPT model.
 *
 * Matrix products go to BLAS (OpenBLAS built with OpenMP, so a BLAS call made inside one of
 * our parallel regions runs on the calling thread). Everything else is an OpenMP loop with a
 * static schedule. Reductions over rows (LayerNorm weight gradients, bias gradients) are done
 * in GY_OPS_CHUNKS fixed row chunks whose partial sums are added in chunk order, so the result
 * does not depend on how threads are scheduled: with a fixed thread count (BLAS blocking
 * depends on it) every call is bitwise reproducible.
 *
 * API, in the order of a forward pass: encoder, layernorm, matmul, attention, gelu, residual,
 * crossentropy; each with its backward. Backward operators accumulate into gradients, except
 * where a comment says "overwrites".
 */
#include "kernels/ops_cpu.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------------------------ */
/* embeddings */

void gy_encoder_forward(float *out, const int *inp, const float *wte, const float *wpe, int B,
                        int T, int C) {
#pragma omp parallel for schedule(static)
  for (int bt = 0; bt < B * T; bt++) {
    int t = bt % T;
    const float *we = wte + (size_t)inp[bt] * C;
    const float *pe = wpe + (size_t)t * C;
    float *o = out + (size_t)bt * C;
    for (int c = 0; c < C; c++)
      o[c] = we[c] + pe[c];
  }
}

void gy_encoder_backward(float *dwte, float *dwpe, const float *dout, const int *inp, int B, int T,
                         int C) {
  /* Threads own disjoint column ranges, and walk rows in order: no races, fixed order. */
#pragma omp parallel
  {
    int nth = omp_get_num_threads(), th = omp_get_thread_num();
    int c0 = (int)((long)C * th / nth), c1 = (int)((long)C * (th + 1) / nth);
    for (int bt = 0; bt < B * T; bt++) {
      int t = bt % T;
      const float *d = dout + (size_t)bt * C;
      float *we = dwte + (size_t)inp[bt] * C;
      float *pe = dwpe + (size_t)t * C;
      for (int c = c0; c < c1; c++) {
        we[c] += d[c];
        pe[c] += d[c];
      }
    }
  }
}

/* ------------------------------------------------------------------------------------------ */
/* LayerNorm */

void gy_layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                          const float *weight, const float *bias, int N, int C) {
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; n++) {
    const float *x = inp + (size_t)n * C;
    float m = 0.0f;
    for (int c = 0; c < C; c++)
      m += x[c];
    m /= C;
    float v = 0.0f;
    for (int c = 0; c < C; c++) {
      float d = x[c] - m;
      v += d * d;
    }
    v /= C;
    float s = 1.0f / sqrtf(v + 1e-5f);
    float *o = out + (size_t)n * C;
    for (int c = 0; c < C; c++) {
      float y = (x[c] - m) * s * weight[c];
      o[c] = bias ? y + bias[c] : y;
    }
    mean[n] = m;
    rstd[n] = s;
  }
}

void gy_layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                           const float *inp, const float *weight, const float *mean,
                           const float *rstd, int N, int C, float *scratch) {
  float *pw = scratch;                             /* [CHUNKS, C] partial dweight */
  float *pb = scratch + (size_t)GY_OPS_CHUNKS * C; /* [CHUNKS, C] partial dbias */
#pragma omp parallel for schedule(static)
  for (int k = 0; k < GY_OPS_CHUNKS; k++) {
    int n0 = (int)((long)N * k / GY_OPS_CHUNKS), n1 = (int)((long)N * (k + 1) / GY_OPS_CHUNKS);
    float *w = pw + (size_t)k * C, *b = pb + (size_t)k * C;
    memset(w, 0, sizeof(float) * C);
    memset(b, 0, sizeof(float) * C);
    for (int n = n0; n < n1; n++) {
      const float *x = inp + (size_t)n * C, *dy = dout + (size_t)n * C;
      float *dx = dinp + (size_t)n * C;
      float m = mean[n], s = rstd[n];
      float dmean = 0.0f, dnormmean = 0.0f;
      for (int c = 0; c < C; c++) {
        float norm = (x[c] - m) * s;
        float dn = weight[c] * dy[c];
        dmean += dn;
        dnormmean += dn * norm;
      }
      dmean /= C;
      dnormmean /= C;
      for (int c = 0; c < C; c++) {
        float norm = (x[c] - m) * s;
        float dn = weight[c] * dy[c];
        w[c] += norm * dy[c];
        b[c] += dy[c];
        dx[c] += (dn - dmean - norm * dnormmean) * s;
      }
    }
  }
#pragma omp parallel for schedule(static)
  for (int c = 0; c < C; c++) {
    float sw = 0.0f, sb = 0.0f;
    for (int k = 0; k < GY_OPS_CHUNKS; k++) {
      sw += pw[(size_t)k * C + c];
      sb += pb[(size_t)k * C + c];
    }
    dweight[c] += sw;
    if (dbias) dbias[c] += sb;
  }
}

/* ------------------------------------------------------------------------------------------ */
/* dense layers */

void gy_matmul_forward(float *out, const float *inp, const float *weight, const float *bias, int N,
                       int C, int OC) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, OC, C, 1.0f, inp, C, weight, C, 0.0f, out,
              OC);
  if (bias) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
      float *o = out + (size_t)n * OC;
      for (int j = 0; j < OC; j++)
        o[j] += bias[j];
    }
  }
}

void gy_matmul_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                        const float *inp, const float *weight, int N, int C, int OC,
                        float *scratch) {
  if (dinp)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, C, OC, 1.0f, dout, OC, weight, C,
                1.0f, dinp, C);
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OC, C, N, 1.0f, dout, OC, inp, C, 1.0f,
              dweight, C);
  if (!dbias) return;
#pragma omp parallel for schedule(static)
  for (int k = 0; k < GY_OPS_CHUNKS; k++) {
    int n0 = (int)((long)N * k / GY_OPS_CHUNKS), n1 = (int)((long)N * (k + 1) / GY_OPS_CHUNKS);
    float *p = scratch + (size_t)k * OC;
    memset(p, 0, sizeof(float) * OC);
    for (int n = n0; n < n1; n++) {
      const float *d = dout + (size_t)n * OC;
      for (int j = 0; j < OC; j++)
        p[j] += d[j];
    }
  }
#pragma omp parallel for schedule(static)
  for (int j = 0; j < OC; j++) {
    float s = 0.0f;
    for (int k = 0; k < GY_OPS_CHUNKS; k++)
      s += scratch[(size_t)k * OC + j];
    dbias[j] += s;
  }
}

/* ------------------------------------------------------------------------------------------ */
/* causal self-attention */

size_t gy_attention_scratch_floats(int B, int T, int C, int NH) {
  int hs = C / NH;
  size_t bnt = (size_t)B * NH * T * hs;
  return 5 * bnt + (size_t)omp_get_max_threads() * T * T + 2 * (size_t)GY_OPS_CHUNKS * hs;
}

void gy_attention_forward(float *out, gy_attn_acts_t *a, const float *qkv, const float *qnw,
                          const float *knw, int B, int T, int C, int NH) {
  int hs = C / NH;
  int qk_norm = qnw != NULL;
  float *qdst = qk_norm ? a->qraw : a->q;
  float *kdst = qk_norm ? a->kraw : a->k;
  /* [B,T,3C] -> [B,NH,T,hs] */
#pragma omp parallel for collapse(2) schedule(static)
  for (int b = 0; b < B; b++) {
    for (int t = 0; t < T; t++) {
      const float *row = qkv + ((size_t)b * T + t) * 3 * C;
      for (int h = 0; h < NH; h++) {
        size_t o = (((size_t)b * NH + h) * T + t) * hs;
        memcpy(qdst + o, row + h * hs, sizeof(float) * hs);
        memcpy(kdst + o, row + C + h * hs, sizeof(float) * hs);
        memcpy(a->v + o, row + 2 * C + h * hs, sizeof(float) * hs);
      }
    }
  }
  if (qk_norm) {
    gy_layernorm_forward(a->q, a->qmean, a->qrstd, a->qraw, qnw, NULL, B * NH * T, hs);
    gy_layernorm_forward(a->k, a->kmean, a->krstd, a->kraw, knw, NULL, B * NH * T, hs);
  }
  float scale = 1.0f / sqrtf((float)hs);
#pragma omp parallel for schedule(static)
  for (int bh = 0; bh < B * NH; bh++) {
    int b = bh / NH, h = bh % NH;
    const float *q = a->q + (size_t)bh * T * hs;
    const float *k = a->k + (size_t)bh * T * hs;
    const float *v = a->v + (size_t)bh * T * hs;
    float *att = a->att + (size_t)bh * T * T;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, hs, scale, q, hs, k, hs, 0.0f, att,
                T);
    for (int t = 0; t < T; t++) {
      float *row = att + (size_t)t * T;
      float mx = row[0];
      for (int j = 1; j <= t; j++)
        mx = row[j] > mx ? row[j] : mx;
      float sum = 0.0f;
      for (int j = 0; j <= t; j++) {
        row[j] = expf(row[j] - mx);
        sum += row[j];
      }
      float inv = 1.0f / sum;
      for (int j = 0; j <= t; j++)
        row[j] *= inv;
      for (int j = t + 1; j < T; j++)
        row[j] = 0.0f;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hs, T, 1.0f, att, T, v, hs, 0.0f,
                out + (size_t)b * T * C + (size_t)h * hs, C);
  }
}

void gy_attention_backward(float *dqkv, float *dqnw, float *dknw, const float *dout,
                           const gy_attn_acts_t *a, const float *qnw, const float *knw, int B,
                           int T, int C, int NH, float *scratch) {
  int hs = C / NH;
  int qk_norm = qnw != NULL;
  size_t bnt = (size_t)B * NH * T * hs;
  float *dq = scratch, *dk = scratch + bnt, *dv = scratch + 2 * bnt;
  float *dqraw = scratch + 3 * bnt, *dkraw = scratch + 4 * bnt;
  float *dps = scratch + 5 * bnt;
  float *lnscratch = dps + (size_t)omp_get_max_threads() * T * T;
  float scale = 1.0f / sqrtf((float)hs);
#pragma omp parallel for schedule(static)
  for (int bh = 0; bh < B * NH; bh++) {
    int b = bh / NH, h = bh % NH;
    float *dp = dps + (size_t)omp_get_thread_num() * T * T;
    const float *q = a->q + (size_t)bh * T * hs;
    const float *k = a->k + (size_t)bh * T * hs;
    const float *v = a->v + (size_t)bh * T * hs;
    const float *att = a->att + (size_t)bh * T * T;
    const float *dO = dout + (size_t)b * T * C + (size_t)h * hs;
    /* dP = dO V^T ; dV = P^T dO */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, hs, 1.0f, dO, C, v, hs, 0.0f, dp, T);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, hs, T, 1.0f, att, T, dO, C, 0.0f,
                dv + (size_t)bh * T * hs, hs);
    /* softmax backward, in place: dS = P * (dP - sum(P * dP)) * scale */
    for (int t = 0; t < T; t++) {
      const float *p = att + (size_t)t * T;
      float *d = dp + (size_t)t * T;
      float dot = 0.0f;
      for (int j = 0; j <= t; j++)
        dot += p[j] * d[j];
      for (int j = 0; j <= t; j++)
        d[j] = p[j] * (d[j] - dot) * scale;
      for (int j = t + 1; j < T; j++)
        d[j] = 0.0f;
    }
    /* dQ = dS K ; dK = dS^T Q */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hs, T, 1.0f, dp, T, k, hs, 0.0f,
                dq + (size_t)bh * T * hs, hs);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, hs, T, 1.0f, dp, T, q, hs, 0.0f,
                dk + (size_t)bh * T * hs, hs);
  }
  const float *dqsrc = dq, *dksrc = dk;
  if (qk_norm) {
    memset(dqraw, 0, sizeof(float) * bnt);
    memset(dkraw, 0, sizeof(float) * bnt);
    gy_layernorm_backward(dqraw, dqnw, NULL, dq, a->qraw, qnw, a->qmean, a->qrstd, B * NH * T, hs,
                          lnscratch);
    gy_layernorm_backward(dkraw, dknw, NULL, dk, a->kraw, knw, a->kmean, a->krstd, B * NH * T, hs,
                          lnscratch);
    dqsrc = dqraw;
    dksrc = dkraw;
  }
  /* [B,NH,T,hs] -> [B,T,3C], overwriting dqkv */
#pragma omp parallel for collapse(2) schedule(static)
  for (int b = 0; b < B; b++) {
    for (int t = 0; t < T; t++) {
      float *row = dqkv + ((size_t)b * T + t) * 3 * C;
      for (int h = 0; h < NH; h++) {
        size_t o = (((size_t)b * NH + h) * T + t) * hs;
        memcpy(row + h * hs, dqsrc + o, sizeof(float) * hs);
        memcpy(row + C + h * hs, dksrc + o, sizeof(float) * hs);
        memcpy(row + 2 * C + h * hs, dv + o, sizeof(float) * hs);
      }
    }
  }
}

/* ------------------------------------------------------------------------------------------ */
/* GELU, tanh approximation (GPT-2), written as x * sigmoid(2u) (the same function:
 * 0.5 * (1 + tanh(u)) = sigmoid(2u)), because expf is several times cheaper than tanhf. */

#define GY_GELU_S 0.7978845608028654f /* sqrt(2/pi) */

void gy_gelu_forward(float *out, const float *inp, size_t n) {
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < n; i++) {
    float x = inp[i];
    float u = GY_GELU_S * (x + 0.044715f * x * x * x);
    out[i] = x / (1.0f + expf(-2.0f * u));
  }
}

void gy_gelu_backward(float *dinp, const float *inp, const float *dout, size_t n) {
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < n; i++) {
    float x = inp[i];
    float u = GY_GELU_S * (x + 0.044715f * x * x * x);
    float s = 1.0f / (1.0f + expf(-2.0f * u));
    float du = GY_GELU_S * (1.0f + 3.0f * 0.044715f * x * x);
    float g = s + x * s * (1.0f - s) * 2.0f * du;
    dinp[i] = g * dout[i];
  }
}

void gy_residual_forward(float *out, const float *a, const float *b, size_t n) {
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < n; i++)
    out[i] = a[i] + b[i];
}

/* ------------------------------------------------------------------------------------------ */
/* classifier */

double gy_crossentropy_forward(float *token_losses, float *dlogits, const float *logits,
                               const int *targets, int N, int V, int Vp, float z_loss, float denom,
                               const uint8_t *keep, int T) {
  double *full = targets ? malloc(sizeof(double) * (size_t)N) : NULL;
  if (targets && !full) return NAN;
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; n++) {
    const float *lg = logits + (size_t)n * Vp;
    float mx = lg[0];
    for (int j = 1; j < V; j++)
      mx = lg[j] > mx ? lg[j] : mx;
    double sum = 0.0;
    for (int j = 0; j < V; j++)
      sum += exp((double)(lg[j] - mx));
    double logz = (double)mx + log(sum);
    if (!targets) continue;
    int tgt = targets[n];
    double ce = logz - (double)lg[tgt];
    token_losses[n] = (float)ce;
    full[n] = ce + (double)z_loss * logz * logz;
    if (dlogits && keep && !keep[n / T]) {
      /* A masked sample's rows are written as zeros, not scaled by a zero weight: 0 * inf would
       * be NaN, and the guard that masked it may have done so because its logits blew up. */
      memset(dlogits + (size_t)n * Vp, 0, sizeof(float) * (size_t)Vp);
    } else if (dlogits) {
      float *d = dlogits + (size_t)n * Vp;
      float zf = 1.0f + 2.0f * z_loss * (float)logz;
      float inv = 1.0f / denom;
      for (int j = 0; j < V; j++) {
        float p = (float)exp((double)lg[j] - logz);
        d[j] = (p * zf - (j == tgt ? 1.0f : 0.0f)) * inv;
      }
      for (int j = V; j < Vp; j++)
        d[j] = 0.0f;
    }
  }
  double total = 0.0;
  if (targets) {
    for (int n = 0; n < N; n++)
      total += full[n];
    free(full);
  }
  return total;
}
