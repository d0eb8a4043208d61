/*
 * gpt: a GPT-2-style decoder on the CPU.
 *
 * Parameters live in one buffer, tensors back to back in gy_gpt_tensor_t order, which for the
 * first 16 tensors is exactly llm.c's order and layout (weights [out, in], row-major), so an
 * llm.c model file maps onto the buffer's first bytes. Tensors of the blocks are stored
 * [L, ...], so the first k blocks of every tensor form one contiguous prefix: the shallow group
 * the optimizer scales is a set of prefixes.
 *
 * API: create/destroy, accessors, init_params, forward (per-token losses), backward (writes the
 * gradient of the mean loss), backward_masked (the same over the kept samples only: the mask
 * zeroes the masked samples' dlogits rows and changes the denominator, nothing else, so every
 * later operator and every collective runs as in an unmasked pass).
 *
 * Invariants: activations are sized for max_batch x max_seq_len; a forward pass keeps what its
 * backward needs until the next forward. Forward and backward are deterministic for a fixed
 * thread count (see ops_cpu.c).
 */
#include "kernels/gpt.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "kernels/ops_cpu.h"

static const char *tensor_names[GY_T_COUNT] = {
    "wte",  "wpe", "ln1w", "ln1b",    "qkvw",    "qkvb", "attprojw", "attprojb", "ln2w",
    "ln2b", "fcw", "fcb",  "fcprojw", "fcprojb", "lnfw", "lnfb",     "qnw",      "knw"};

typedef struct {
  float *ln1, *ln1_mean, *ln1_rstd; /* [N,C], [N], [N] */
  float *qkv;                       /* [N,3C] */
  gy_attn_acts_t att;
  float *atty; /* [N,C] */
  float *res2; /* [N,C] */
  float *ln2, *ln2_mean, *ln2_rstd;
  float *fch, *fchg; /* [N,4C] */
  float *res3;       /* [N,C] */
} layer_acts_t;

struct gy_gpt {
  gy_gpt_config_t cfg;
  int max_batch;
  size_t sizes[GY_T_COUNT], offsets[GY_T_COUNT];
  size_t num_params;
  float *params, *grads;

  /* activations */
  void *act_mem;
  layer_acts_t *layers;
  float *encoded; /* [N,C] */
  float *lnf, *lnf_mean, *lnf_rstd;
  float *logits;         /* [N,Vp], reused for dlogits in backward */
  float *token_losses;   /* [N] */
  int *inputs, *targets; /* copies of the last forward's batch */
  /* backward scratch */
  float *dres, *dbig, *dqkv, *dsmall, *chunks, *attn_scratch;

  int P, Cl, NHl; /* tensor-parallel size; local channels and heads */
  gy_gpt_allreduce_fn tp_sum;
  void *tp_ctx;
  gy_gpt_grads_ready_fn grads_ready;
  void *grads_ready_ctx;

  int B, T; /* shape of the last forward, 0 if none */
  int have_targets;
  float z_loss;
};

const char *gy_gpt_tensor_name(int i) {
  return (i >= 0 && i < GY_T_COUNT) ? tensor_names[i] : "?";
}

int gy_gpt_tensor_layered(int i) {
  return !(i == GY_T_WTE || i == GY_T_WPE || i == GY_T_LNFW || i == GY_T_LNFB);
}

int gy_gpt_tensor_decayed(int i) {
  return i == GY_T_QKVW || i == GY_T_ATTPROJW || i == GY_T_FCW || i == GY_T_FCPROJW;
}

static int tp_of(const gy_gpt_config_t *c) {
  return c->tp_size > 1 ? c->tp_size : 1;
}

size_t gy_gpt_layout(const gy_gpt_config_t *c, size_t *s, size_t *offsets) {
  size_t L = c->num_layers, C = c->channels, Vp = c->padded_vocab_size, T = c->max_seq_len;
  size_t hs = C / c->num_heads, Cl = C / (size_t)tp_of(c);
  s[GY_T_WTE] = Vp * C;
  s[GY_T_WPE] = T * C;
  s[GY_T_LN1W] = L * C;
  s[GY_T_LN1B] = L * C;
  s[GY_T_QKVW] = L * 3 * Cl * C;
  s[GY_T_QKVB] = L * 3 * Cl;
  s[GY_T_ATTPROJW] = L * C * Cl;
  s[GY_T_ATTPROJB] = L * C;
  s[GY_T_LN2W] = L * C;
  s[GY_T_LN2B] = L * C;
  s[GY_T_FCW] = L * 4 * Cl * C;
  s[GY_T_FCB] = L * 4 * Cl;
  s[GY_T_FCPROJW] = L * C * 4 * Cl;
  s[GY_T_FCPROJB] = L * C;
  s[GY_T_LNFW] = C;
  s[GY_T_LNFB] = C;
  s[GY_T_QNW] = c->qk_norm ? L * hs : 0;
  s[GY_T_KNW] = c->qk_norm ? L * hs : 0;
  size_t off = 0;
  for (int i = 0; i < GY_T_COUNT; i++) {
    offsets[i] = off;
    off += s[i];
  }
  return off;
}

static void compute_sizes(gy_gpt_t *m) {
  m->num_params = gy_gpt_layout(&m->cfg, m->sizes, m->offsets);
}

/* Carves activation buffers out of one allocation; with base == NULL it only counts. */
static size_t carve(gy_gpt_t *m, float *base) {
  const gy_gpt_config_t *c = &m->cfg;
  size_t N = (size_t)m->max_batch * c->max_seq_len, C = c->channels, L = c->num_layers;
  size_t T = c->max_seq_len, Vp = c->padded_vocab_size;
  size_t NH = (size_t)m->NHl, Cl = (size_t)m->Cl, hs = C / c->num_heads;
  size_t bnt = (size_t)m->max_batch * NH * T * hs;
  size_t off = 0;
#define TAKE(ptr, n)                                                                               \
  do {                                                                                             \
    if (base) (ptr) = base + off;                                                                  \
    off += ((n) + 15) & ~(size_t)15;                                                               \
  } while (0)
  for (size_t l = 0; l < L; l++) {
    layer_acts_t *a = base ? &m->layers[l] : NULL;
    layer_acts_t dummy;
    if (!a) a = &dummy;
    TAKE(a->ln1, N * C);
    TAKE(a->ln1_mean, N);
    TAKE(a->ln1_rstd, N);
    TAKE(a->qkv, N * 3 * Cl);
    TAKE(a->att.q, bnt);
    TAKE(a->att.k, bnt);
    TAKE(a->att.v, bnt);
    if (c->qk_norm) {
      TAKE(a->att.qraw, bnt);
      TAKE(a->att.kraw, bnt);
      TAKE(a->att.qmean, N * NH);
      TAKE(a->att.qrstd, N * NH);
      TAKE(a->att.kmean, N * NH);
      TAKE(a->att.krstd, N * NH);
    } else if (base) {
      a->att.qraw = a->att.kraw = a->att.qmean = a->att.qrstd = a->att.kmean = a->att.krstd = NULL;
    }
    TAKE(a->att.att, (size_t)m->max_batch * NH * T * T);
    TAKE(a->atty, N * Cl);
    TAKE(a->res2, N * C);
    TAKE(a->ln2, N * C);
    TAKE(a->ln2_mean, N);
    TAKE(a->ln2_rstd, N);
    TAKE(a->fch, N * 4 * Cl);
    TAKE(a->fchg, N * 4 * Cl);
    TAKE(a->res3, N * C);
  }
  TAKE(m->encoded, N * C);
  TAKE(m->lnf, N * C);
  TAKE(m->lnf_mean, N);
  TAKE(m->lnf_rstd, N);
  TAKE(m->logits, N * Vp);
  TAKE(m->token_losses, N);
  TAKE(m->dres, N * C);
  TAKE(m->dbig, N * 4 * Cl);
  TAKE(m->dqkv, N * 3 * Cl);
  TAKE(m->dsmall, N * C);
  size_t maxoc = 4 * C > Vp ? 4 * C : Vp;
  TAKE(m->chunks, 2 * (size_t)GY_OPS_CHUNKS * maxoc);
  TAKE(m->attn_scratch, gy_attention_scratch_floats(m->max_batch, (int)T, (int)Cl, (int)NH));
#undef TAKE
  return off;
}

int gy_gpt_create(gy_gpt_t **out, const gy_gpt_config_t *cfg, int max_batch) {
  *out = NULL;
  if (gy_gpt_config_check(cfg, NULL, 0) || max_batch < 1) return GY_EINVAL;
  gy_gpt_t *m = calloc(1, sizeof(*m));
  if (!m) return GY_ENOMEM;
  m->cfg = *cfg;
  m->max_batch = max_batch;
  m->P = tp_of(cfg);
  m->cfg.tp_size = m->P;
  if (m->P == 1) m->cfg.tp_rank = 0;
  m->Cl = cfg->channels / m->P;
  m->NHl = cfg->num_heads / m->P;
  compute_sizes(m);
  size_t nact = carve(m, NULL);
  size_t N = (size_t)max_batch * cfg->max_seq_len;
  m->params = calloc(m->num_params, sizeof(float));
  m->grads = calloc(m->num_params, sizeof(float));
  m->layers = calloc((size_t)cfg->num_layers, sizeof(layer_acts_t));
  m->act_mem = malloc(nact * sizeof(float));
  m->inputs = malloc(N * sizeof(int));
  m->targets = malloc(N * sizeof(int));
  if (!m->params || !m->grads || !m->layers || !m->act_mem || !m->inputs || !m->targets) goto err;
  carve(m, m->act_mem);
  *out = m;
  return 0;
err:
  gy_gpt_destroy(m);
  return GY_ENOMEM;
}

void gy_gpt_destroy(gy_gpt_t *m) {
  if (!m) return;
  free(m->targets);
  free(m->inputs);
  free(m->act_mem);
  free(m->layers);
  free(m->grads);
  free(m->params);
  free(m);
}

const gy_gpt_config_t *gy_gpt_config(const gy_gpt_t *m) {
  return &m->cfg;
}
size_t gy_gpt_num_params(const gy_gpt_t *m) {
  return m->num_params;
}
float *gy_gpt_params(gy_gpt_t *m) {
  return m->params;
}
float *gy_gpt_grads(gy_gpt_t *m) {
  return m->grads;
}
size_t gy_gpt_tensor_size(const gy_gpt_t *m, int i) {
  return (i >= 0 && i < GY_T_COUNT) ? m->sizes[i] : 0;
}
size_t gy_gpt_tensor_offset(const gy_gpt_t *m, int i) {
  return (i >= 0 && i < GY_T_COUNT) ? m->offsets[i] : 0;
}
int gy_gpt_config_sharded(const gy_gpt_config_t *c, int i) {
  if (tp_of(c) <= 1) return 0;
  return i == GY_T_QKVW || i == GY_T_QKVB || i == GY_T_ATTPROJW || i == GY_T_FCW || i == GY_T_FCB ||
         i == GY_T_FCPROJW;
}
int gy_gpt_tensor_sharded(const gy_gpt_t *m, int i) {
  return gy_gpt_config_sharded(&m->cfg, i);
}

void gy_gpt_set_tp_allreduce(gy_gpt_t *m, gy_gpt_allreduce_fn fn, void *ctx) {
  m->tp_sum = fn;
  m->tp_ctx = ctx;
}

void gy_gpt_set_grads_ready(gy_gpt_t *m, gy_gpt_grads_ready_fn fn, void *ctx) {
  m->grads_ready = fn;
  m->grads_ready_ctx = ctx;
}

/* Copies columns [c0, c0+ncols) of a [rows, src_cols] row-major matrix into a dense
 * [rows, ncols] one. */
static void take_cols(float *dst, const float *src, size_t rows, size_t src_cols, size_t c0,
                      size_t ncols) {
  for (size_t r = 0; r < rows; r++)
    memcpy(dst + r * ncols, src + r * src_cols + c0, ncols * 4);
}

void gy_gpt_shard_from_full(gy_gpt_t *m, const float *full) {
  gy_gpt_config_t fc = m->cfg;
  fc.tp_size = 1;
  fc.tp_rank = 0;
  size_t fsz[GY_T_COUNT], foff[GY_T_COUNT];
  gy_gpt_layout(&fc, fsz, foff);
  size_t L = fc.num_layers, C = fc.channels, Cl = (size_t)m->Cl, r = (size_t)m->cfg.tp_rank;
  for (int i = 0; i < GY_T_COUNT; i++) {
    float *d = m->params + m->offsets[i];
    const float *s = full + foff[i];
    if (!gy_gpt_tensor_sharded(m, i)) {
      memcpy(d, s, fsz[i] * sizeof(float));
      continue;
    }
    for (size_t l = 0; l < L; l++) {
      switch (i) {
      case GY_T_QKVW: /* rows: q, k, v parts, each [C, C]; take rows r*Cl.. of each part */
        for (size_t part = 0; part < 3; part++)
          memcpy(d + (l * 3 + part) * Cl * C, s + (l * 3 * C + part * C + r * Cl) * C,
                 Cl * C * sizeof(float));
        break;
      case GY_T_QKVB:
        for (size_t part = 0; part < 3; part++)
          memcpy(d + (l * 3 + part) * Cl, s + l * 3 * C + part * C + r * Cl, Cl * sizeof(float));
        break;
      case GY_T_ATTPROJW: /* [C, C] -> columns r*Cl.. */
        take_cols(d + l * C * Cl, s + l * C * C, C, C, r * Cl, Cl);
        break;
      case GY_T_FCW: /* [4C, C] -> rows r*4Cl.. */
        memcpy(d + l * 4 * Cl * C, s + (l * 4 * C + r * 4 * Cl) * C, 4 * Cl * C * sizeof(float));
        break;
      case GY_T_FCB:
        memcpy(d + l * 4 * Cl, s + l * 4 * C + r * 4 * Cl, 4 * Cl * sizeof(float));
        break;
      case GY_T_FCPROJW: /* [C, 4C] -> columns r*4Cl.. */
        take_cols(d + l * C * 4 * Cl, s + l * C * 4 * C, C, 4 * C, r * 4 * Cl, 4 * Cl);
        break;
      }
    }
  }
}

const float *gy_gpt_token_losses(const gy_gpt_t *m) {
  return m->token_losses;
}

const float *gy_gpt_logits(const gy_gpt_t *m) {
  return m->logits;
}

/* splitmix64 and Box-Muller: a reproducible normal stream from a seed. */
static uint64_t splitmix64(uint64_t *s) {
  uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

static void fill_normal(float *x, size_t n, float std, uint64_t *s) {
  for (size_t i = 0; i < n; i += 2) {
    double u1 = ((splitmix64(s) >> 11) + 1.0) * (1.0 / 9007199254740993.0);
    double u2 = (splitmix64(s) >> 11) * (1.0 / 9007199254740992.0);
    double r = sqrt(-2.0 * log(u1));
    x[i] = (float)(r * cos(2.0 * M_PI * u2) * std);
    if (i + 1 < n) x[i + 1] = (float)(r * sin(2.0 * M_PI * u2) * std);
  }
}

/* Initialises the full (unsharded) parameters of c into params. */
static void init_full(const gy_gpt_config_t *c, float *params, uint64_t seed) {
  size_t sizes[GY_T_COUNT], offsets[GY_T_COUNT];
  size_t total = gy_gpt_layout(c, sizes, offsets);
  uint64_t s = seed ^ 0x6779726full; /* "gyro" */
  float resid_std = 0.02f / sqrtf(2.0f * c->num_layers);
  memset(params, 0, total * sizeof(float));
  for (int i = 0; i < GY_T_COUNT; i++) {
    float *p = params + offsets[i];
    size_t n = sizes[i];
    switch (i) {
    case GY_T_WTE:
      /* padded rows stay zero, as in llm.c */
      fill_normal(p, (size_t)c->vocab_size * c->channels, 0.02f, &s);
      break;
    case GY_T_WPE:
      fill_normal(p, n, 0.01f, &s);
      break;
    case GY_T_QKVW:
    case GY_T_FCW:
      fill_normal(p, n, 0.02f, &s);
      break;
    case GY_T_ATTPROJW:
    case GY_T_FCPROJW:
      fill_normal(p, n, resid_std, &s);
      break;
    case GY_T_LN1W:
    case GY_T_LN2W:
    case GY_T_LNFW:
    case GY_T_QNW:
    case GY_T_KNW:
      for (size_t j = 0; j < n; j++)
        p[j] = 1.0f;
      break;
    default: /* biases */
      break;
    }
  }
}

void gy_gpt_init_params(gy_gpt_t *m, uint64_t seed) {
  if (m->P == 1) {
    init_full(&m->cfg, m->params, seed);
    return;
  }
  gy_gpt_config_t fc = m->cfg;
  fc.tp_size = 1;
  fc.tp_rank = 0;
  size_t sz[GY_T_COUNT], off[GY_T_COUNT];
  size_t total = gy_gpt_layout(&fc, sz, off);
  float *full = malloc(total * sizeof(float));
  if (!full) { /* cannot happen for any model that fits; keep the shard zeroed and loud */
    memset(m->params, 0, m->num_params * sizeof(float));
    return;
  }
  init_full(&fc, full, seed);
  gy_gpt_shard_from_full(m, full);
  free(full);
}

#define P(i) (m->params + m->offsets[i])
#define G(i) (m->grads + m->offsets[i])

/* Sums buf over the tensor-parallel group (a no-op without tensor parallelism). */
static int tp_allreduce(gy_gpt_t *m, float *buf, size_t n) {
  if (m->P == 1) return 0;
  if (!m->tp_sum) return GY_EINVAL;
  return m->tp_sum(m->tp_ctx, buf, n) ? GY_ECOMM : 0;
}

static void add_bias(float *out, const float *bias, int N, int OC) {
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; n++) {
    float *o = out + (size_t)n * OC;
    for (int j = 0; j < OC; j++)
      o[j] += bias[j];
  }
}

/* out = inp @ W^T (+ bias): with tensor parallelism the local product is a partial sum over
 * the group, summed before the (replicated) bias is added. */
static int row_parallel(gy_gpt_t *m, float *out, const float *inp, const float *w,
                        const float *bias, int N, int Cin, int OC) {
  if (m->P == 1) {
    gy_matmul_forward(out, inp, w, bias, N, Cin, OC);
    return 0;
  }
  gy_matmul_forward(out, inp, w, NULL, N, Cin, OC);
  int rc = tp_allreduce(m, out, (size_t)N * OC);
  if (rc) return rc;
  add_bias(out, bias, N, OC);
  return 0;
}

int gy_gpt_forward(gy_gpt_t *m, const int *inputs, const int *targets, int B, int T, float z_loss,
                   float *mean_loss) {
  const gy_gpt_config_t *c = &m->cfg;
  if (B < 1 || B > m->max_batch || T < 1 || T > c->max_seq_len) return GY_EINVAL;
  int N = B * T, C = c->channels, L = c->num_layers, V = c->vocab_size;
  int Vp = c->padded_vocab_size, hs = C / c->num_heads, Cl = m->Cl, NHl = m->NHl;
  for (int i = 0; i < N; i++) {
    if (inputs[i] < 0 || inputs[i] >= V) return GY_EINVAL;
    if (targets && (targets[i] < 0 || targets[i] >= V)) return GY_EINVAL;
  }
  memcpy(m->inputs, inputs, sizeof(int) * N);
  if (targets) memcpy(m->targets, targets, sizeof(int) * N);
  m->B = 0; /* valid again only when the pass completes */
  m->have_targets = 0;
  m->z_loss = z_loss;
  int rc;

  gy_encoder_forward(m->encoded, inputs, P(GY_T_WTE), P(GY_T_WPE), B, T, C);
  const float *residual = m->encoded;
  for (int l = 0; l < L; l++) {
    layer_acts_t *a = &m->layers[l];
    gy_layernorm_forward(a->ln1, a->ln1_mean, a->ln1_rstd, residual, P(GY_T_LN1W) + l * C,
                         P(GY_T_LN1B) + l * C, N, C);
    gy_matmul_forward(a->qkv, a->ln1, P(GY_T_QKVW) + (size_t)l * 3 * Cl * C,
                      P(GY_T_QKVB) + (size_t)l * 3 * Cl, N, C, 3 * Cl);
    gy_attention_forward(a->atty, &a->att, a->qkv, c->qk_norm ? P(GY_T_QNW) + l * hs : NULL,
                         c->qk_norm ? P(GY_T_KNW) + l * hs : NULL, B, T, Cl, NHl);
    if ((rc = row_parallel(m, m->dsmall, a->atty, P(GY_T_ATTPROJW) + (size_t)l * C * Cl,
                           P(GY_T_ATTPROJB) + (size_t)l * C, N, Cl, C)))
      return rc;
    gy_residual_forward(a->res2, residual, m->dsmall, (size_t)N * C);
    gy_layernorm_forward(a->ln2, a->ln2_mean, a->ln2_rstd, a->res2, P(GY_T_LN2W) + l * C,
                         P(GY_T_LN2B) + l * C, N, C);
    gy_matmul_forward(a->fch, a->ln2, P(GY_T_FCW) + (size_t)l * 4 * Cl * C,
                      P(GY_T_FCB) + (size_t)l * 4 * Cl, N, C, 4 * Cl);
    gy_gelu_forward(a->fchg, a->fch, (size_t)N * 4 * Cl);
    if ((rc = row_parallel(m, m->dsmall, a->fchg, P(GY_T_FCPROJW) + (size_t)l * 4 * Cl * C,
                           P(GY_T_FCPROJB) + (size_t)l * C, N, 4 * Cl, C)))
      return rc;
    gy_residual_forward(a->res3, a->res2, m->dsmall, (size_t)N * C);
    residual = a->res3;
  }
  gy_layernorm_forward(m->lnf, m->lnf_mean, m->lnf_rstd, residual, P(GY_T_LNFW), P(GY_T_LNFB), N,
                       C);
  gy_matmul_forward(m->logits, m->lnf, P(GY_T_WTE), NULL, N, C, Vp);
  if (targets) {
    double total = gy_crossentropy_forward(m->token_losses, NULL, m->logits, targets, N, V, Vp,
                                           z_loss, (float)N, NULL, T);
    if (mean_loss) *mean_loss = (float)(total / N);
  } else if (mean_loss) {
    *mean_loss = NAN;
  }
  m->B = B;
  m->T = T;
  m->have_targets = targets != NULL;
  return 0;
}

int gy_gpt_backward(gy_gpt_t *m) {
  return gy_gpt_backward_masked(m, NULL, 0);
}

int gy_gpt_backward_masked(gy_gpt_t *m, const uint8_t *keep, double denom_tokens) {
  if (!m->B || !m->have_targets) return GY_EINVAL;
  const gy_gpt_config_t *c = &m->cfg;
  int B = m->B, T = m->T, N = B * T, C = c->channels, L = c->num_layers;
  int V = c->vocab_size, Vp = c->padded_vocab_size, hs = C / c->num_heads;
  int Cl = m->Cl, NHl = m->NHl, rc;
  /* The mean runs over the kept tokens. With none kept the denominator is moot (every dlogits
   * row is written as zero) and 1 merely keeps it finite. */
  int kept = B;
  if (keep) {
    kept = 0;
    for (int b = 0; b < B; b++)
      kept += keep[b] != 0;
  }
  float denom = denom_tokens > 0 ? (float)denom_tokens : kept ? (float)(kept * T) : 1.0f;
  memset(m->grads, 0, m->num_params * sizeof(float));
  m->have_targets = 0; /* the logits are about to hold their gradient: one backward per forward */

  /* classifier: logits are overwritten by their gradient; the token losses are recomputed from
   * the same logits, so they keep the forward's values whatever the mask */
  gy_crossentropy_forward(m->token_losses, m->logits, m->logits, m->targets, N, V, Vp, m->z_loss,
                          denom, keep, T);
  float *dlnf = m->dsmall;
  memset(dlnf, 0, sizeof(float) * N * C);
  gy_matmul_backward(dlnf, G(GY_T_WTE), NULL, m->logits, m->lnf, P(GY_T_WTE), N, C, Vp, m->chunks);
  memset(m->dres, 0, sizeof(float) * N * C);
  const float *last = m->layers[L - 1].res3;
  gy_layernorm_backward(m->dres, G(GY_T_LNFW), G(GY_T_LNFB), dlnf, last, P(GY_T_LNFW), m->lnf_mean,
                        m->lnf_rstd, N, C, m->chunks);

  for (int l = L - 1; l >= 0; l--) {
    layer_acts_t *a = &m->layers[l];
    const float *res_in = l == 0 ? m->encoded : m->layers[l - 1].res3;
    /* MLP: fcproj is row-parallel (its input gradient is local), fc column-parallel (its input
     * gradient is a partial sum over the group) */
    memset(m->dbig, 0, sizeof(float) * N * 4 * Cl);
    gy_matmul_backward(m->dbig, G(GY_T_FCPROJW) + (size_t)l * 4 * Cl * C,
                       G(GY_T_FCPROJB) + (size_t)l * C, m->dres, a->fchg,
                       P(GY_T_FCPROJW) + (size_t)l * 4 * Cl * C, N, 4 * Cl, C, m->chunks);
    gy_gelu_backward(m->dbig, a->fch, m->dbig, (size_t)N * 4 * Cl);
    memset(m->dsmall, 0, sizeof(float) * N * C);
    gy_matmul_backward(m->dsmall, G(GY_T_FCW) + (size_t)l * 4 * Cl * C,
                       G(GY_T_FCB) + (size_t)l * 4 * Cl, m->dbig, a->ln2,
                       P(GY_T_FCW) + (size_t)l * 4 * Cl * C, N, C, 4 * Cl, m->chunks);
    if ((rc = tp_allreduce(m, m->dsmall, (size_t)N * C))) return rc;
    gy_layernorm_backward(m->dres, G(GY_T_LN2W) + l * C, G(GY_T_LN2B) + l * C, m->dsmall, a->res2,
                          P(GY_T_LN2W) + l * C, a->ln2_mean, a->ln2_rstd, N, C, m->chunks);
    /* attention: attproj row-parallel, qkv column-parallel */
    memset(m->dsmall, 0, sizeof(float) * N * Cl);
    gy_matmul_backward(m->dsmall, G(GY_T_ATTPROJW) + (size_t)l * C * Cl,
                       G(GY_T_ATTPROJB) + (size_t)l * C, m->dres, a->atty,
                       P(GY_T_ATTPROJW) + (size_t)l * C * Cl, N, Cl, C, m->chunks);
    gy_attention_backward(m->dqkv, c->qk_norm ? G(GY_T_QNW) + l * hs : NULL,
                          c->qk_norm ? G(GY_T_KNW) + l * hs : NULL, m->dsmall, &a->att,
                          c->qk_norm ? P(GY_T_QNW) + l * hs : NULL,
                          c->qk_norm ? P(GY_T_KNW) + l * hs : NULL, B, T, Cl, NHl, m->attn_scratch);
    if (c->qk_norm && m->P > 1) {
      /* the QK-norm weights are shared by all heads: sum the local heads' contributions */
      if ((rc = tp_allreduce(m, G(GY_T_QNW) + l * hs, (size_t)hs))) return rc;
      if ((rc = tp_allreduce(m, G(GY_T_KNW) + l * hs, (size_t)hs))) return rc;
    }
    memset(m->dsmall, 0, sizeof(float) * N * C);
    gy_matmul_backward(m->dsmall, G(GY_T_QKVW) + (size_t)l * 3 * Cl * C,
                       G(GY_T_QKVB) + (size_t)l * 3 * Cl, m->dqkv, a->ln1,
                       P(GY_T_QKVW) + (size_t)l * 3 * Cl * C, N, C, 3 * Cl, m->chunks);
    if ((rc = tp_allreduce(m, m->dsmall, (size_t)N * C))) return rc;
    gy_layernorm_backward(m->dres, G(GY_T_LN1W) + l * C, G(GY_T_LN1B) + l * C, m->dsmall, res_in,
                          P(GY_T_LN1W) + l * C, a->ln1_mean, a->ln1_rstd, N, C, m->chunks);
    if (m->grads_ready) m->grads_ready(m->grads_ready_ctx, l);
  }
  gy_encoder_backward(G(GY_T_WTE), G(GY_T_WPE), m->dres, m->inputs, B, T, C);
  if (m->grads_ready) m->grads_ready(m->grads_ready_ctx, -1);
  return 0;
}
