/*
 * optim: AdamW, gradient norms and clipping, the shallow-layer gradient scale, and learning-rate
 * schedules (constant, cosine with warm-up, WSD: warm-up / stable / decay).
 *
 * Every knob is read from a gy_knobs_t at each step, so the controller can change any of them
 * between two steps. Sums over parameters run over fixed chunks added in order, in double, so
 * norms and updates are bitwise reproducible for a fixed thread count.
 *
 * The shallow group is the token and position embeddings plus the first `shallow_layers`
 * blocks: because block tensors are stored [L, ...], that is a prefix of each block tensor.
 */
#include "kernels/optim.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"

#define SUM_CHUNKS 64

struct gy_adamw {
  size_t n;
  float *m, *v;
};

float gy_sched_lr(const gy_sched_t *s, int64_t step) {
  double lr = s->lr, floor_lr = s->lr * s->min_lr_frac;
  if (s->warmup > 0 && step < s->warmup) return (float)(lr * (double)(step + 1) / s->warmup);
  switch (s->kind) {
  case GY_SCHED_CONSTANT:
    return (float)lr;
  case GY_SCHED_COSINE: {
    int64_t span = s->total_steps - s->warmup;
    if (span <= 0) return (float)lr;
    double frac = (double)(step - s->warmup) / (double)span;
    if (frac > 1.0) frac = 1.0;
    return (float)(floor_lr + 0.5 * (1.0 + cos(M_PI * frac)) * (lr - floor_lr));
  }
  case GY_SCHED_WSD: {
    if (step < s->decay_start) return (float)lr;
    if (s->decay_steps <= 0) return (float)floor_lr;
    double frac = (double)(step - s->decay_start) / (double)s->decay_steps;
    if (frac > 1.0) frac = 1.0;
    return (float)(lr - frac * (lr - floor_lr));
  }
  }
  return (float)lr;
}

int gy_adamw_create(gy_adamw_t **out, size_t num_params) {
  *out = NULL;
  gy_adamw_t *o = calloc(1, sizeof(*o));
  if (!o) return GY_ENOMEM;
  o->n = num_params;
  o->m = calloc(num_params ? num_params : 1, sizeof(float));
  o->v = calloc(num_params ? num_params : 1, sizeof(float));
  if (!o->m || !o->v) {
    gy_adamw_destroy(o);
    return GY_ENOMEM;
  }
  *out = o;
  return 0;
}

void gy_adamw_destroy(gy_adamw_t *o) {
  if (!o) return;
  free(o->m);
  free(o->v);
  free(o);
}

float *gy_adamw_m(gy_adamw_t *o) {
  return o->m;
}
float *gy_adamw_v(gy_adamw_t *o) {
  return o->v;
}

/* Length of the shallow prefix of tensor i. */
static size_t shallow_len(gy_gpt_t *m, int i, int shallow_layers) {
  size_t n = gy_gpt_tensor_size(m, i);
  if (i == GY_T_WTE || i == GY_T_WPE) return n;
  if (!gy_gpt_tensor_layered(i)) return 0;
  int L = gy_gpt_config(m)->num_layers;
  int k = shallow_layers < L ? shallow_layers : L;
  return n / (size_t)L * (size_t)k;
}

/* Sum of squares in double over fixed chunks, and a non-finite flag. */
static double sumsq(const float *x, size_t n, int *nonfinite) {
  double part[SUM_CHUNKS];
  int bad[SUM_CHUNKS];
#pragma omp parallel for schedule(static)
  for (int k = 0; k < SUM_CHUNKS; k++) {
    size_t i0 = n * k / SUM_CHUNKS, i1 = n * (k + 1) / SUM_CHUNKS;
    double s = 0.0;
    int b = 0;
    for (size_t i = i0; i < i1; i++) {
      float g = x[i];
      if (!isfinite(g)) b = 1;
      s += (double)g * g;
    }
    part[k] = s;
    bad[k] = b;
  }
  double s = 0.0;
  for (int k = 0; k < SUM_CHUNKS; k++) {
    s += part[k];
    if (bad[k]) *nonfinite = 1;
  }
  return s;
}

void gy_grad_sq_norms(gy_gpt_t *m, int shallow_layers, double *shallow_sq, double *deep_sq,
                      int *nonfinite) {
  float *g = gy_gpt_grads(m);
  double sh = 0.0, dp = 0.0;
  int nf = 0;
  for (int i = 0; i < GY_T_COUNT; i++) {
    size_t off = gy_gpt_tensor_offset(m, i), n = gy_gpt_tensor_size(m, i);
    size_t s = shallow_len(m, i, shallow_layers);
    sh += sumsq(g + off, s, &nf);
    dp += sumsq(g + off + s, n - s, &nf);
  }
  *shallow_sq = sh;
  *deep_sq = dp;
  *nonfinite = nf;
}

void gy_adamw_measure(gy_gpt_t *m, const gy_knobs_t *k, gy_grad_sq_t *sq) {
  float *g = gy_gpt_grads(m);
  memset(sq, 0, sizeof(*sq));
  if (k->shallow_scale != 1.0f) {
    float sc = k->shallow_scale;
    for (int i = 0; i < GY_T_COUNT; i++) {
      float *gi = g + gy_gpt_tensor_offset(m, i);
      size_t s = shallow_len(m, i, k->shallow_layers);
#pragma omp parallel for schedule(static)
      for (size_t j = 0; j < s; j++)
        gi[j] *= sc;
    }
  }
  int nf = 0;
  for (int i = 0; i < GY_T_COUNT; i++) {
    size_t off = gy_gpt_tensor_offset(m, i), n = gy_gpt_tensor_size(m, i);
    size_t s = shallow_len(m, i, k->shallow_layers);
    double sh = sumsq(g + off, s, &nf), dp = sumsq(g + off + s, n - s, &nf);
    if (gy_gpt_tensor_sharded(m, i)) {
      sq->shallow_shard += sh;
      sq->deep_shard += dp;
    } else {
      sq->shallow_repl += sh;
      sq->deep_repl += dp;
    }
  }
  sq->nonfinite = nf;
}

void gy_adamw_step(gy_adamw_t *o, gy_gpt_t *m, const gy_knobs_t *k, int64_t step,
                   gy_step_stats_t *st) {
  gy_grad_sq_t sq;
  gy_adamw_measure(m, k, &sq);
  gy_adamw_update(o, m, k, step, sqrt(sq.shallow_repl + sq.shallow_shard),
                  sqrt(sq.deep_repl + sq.deep_shard), sq.nonfinite, st);
}

void gy_adamw_update(gy_adamw_t *o, gy_gpt_t *m, const gy_knobs_t *k, int64_t step,
                     double shallow_norm, double deep_norm, int nonfinite, gy_step_stats_t *st) {
  float *p = gy_gpt_params(m), *g = gy_gpt_grads(m);
  memset(st, 0, sizeof(*st));
  st->shallow = shallow_norm;
  st->deep = deep_norm;
  st->global = sqrt(shallow_norm * shallow_norm + deep_norm * deep_norm);
  st->nonfinite = nonfinite || !isfinite(st->global);
  float lr = gy_sched_lr(&k->sched, step) * k->lr_scale;
  st->lr = lr;
  if (st->nonfinite) return; /* a non-finite gradient never reaches the weights */

  float clip = 1.0f;
  if (k->grad_clip > 0 && st->global > k->grad_clip) clip = (float)(k->grad_clip / st->global);
  double t = (double)step + 1.0;
  float bc1 = (float)(1.0 - pow(k->beta1, t)), bc2 = (float)(1.0 - pow(k->beta2, t));
  float b1 = k->beta1, b2 = k->beta2, eps = k->eps;
  double upd_sq = 0.0, par_sq = 0.0;
  for (int i = 0; i < GY_T_COUNT; i++) {
    size_t off = gy_gpt_tensor_offset(m, i), n = gy_gpt_tensor_size(m, i);
    if (!n) continue;
    float wd = gy_gpt_tensor_decayed(i) ? k->weight_decay : 0.0f;
    float *pi = p + off, *gi = g + off, *mi = o->m + off, *vi = o->v + off;
    double upart[SUM_CHUNKS], ppart[SUM_CHUNKS];
#pragma omp parallel for schedule(static)
    for (int c = 0; c < SUM_CHUNKS; c++) {
      size_t j0 = n * c / SUM_CHUNKS, j1 = n * (c + 1) / SUM_CHUNKS;
      double us = 0.0, ps = 0.0;
      for (size_t j = j0; j < j1; j++) {
        float gj = gi[j] * clip;
        float mj = b1 * mi[j] + (1.0f - b1) * gj;
        float vj = b2 * vi[j] + (1.0f - b2) * gj * gj;
        mi[j] = mj;
        vi[j] = vj;
        float mhat = mj / bc1, vhat = vj / bc2;
        float upd = lr * (mhat / (sqrtf(vhat) + eps) + wd * pi[j]);
        pi[j] -= upd;
        us += (double)upd * upd;
        ps += (double)pi[j] * pi[j];
      }
      upart[c] = us;
      ppart[c] = ps;
    }
    for (int c = 0; c < SUM_CHUNKS; c++) {
      upd_sq += upart[c];
      par_sq += ppart[c];
    }
  }
  st->update_ratio = par_sq > 0 ? sqrt(upd_sq / par_sq) : 0.0;
}
