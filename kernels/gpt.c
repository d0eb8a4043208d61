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
 * gradient of the mean loss).
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
    "wte",  "wpe",  "ln1w", "ln1b", "qkvw",    "qkvb",    "attprojw", "attprojb", "ln2w",
    "ln2b", "fcw",  "fcb",  "fcprojw", "fcprojb", "lnfw", "lnfb",     "qnw",      "knw"};

typedef struct {
  float *ln1, *ln1_mean, *ln1_rstd; /* [N,C], [N], [N] */
  float *qkv;                       /* [N,3C] */
  gy_attn_acts_t att;
  float *atty;                      /* [N,C] */
  float *res2;                      /* [N,C] */
  float *ln2, *ln2_mean, *ln2_rstd;
  float *fch, *fchg;                /* [N,4C] */
  float *res3;                      /* [N,C] */
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
  float *encoded;                   /* [N,C] */
  float *lnf, *lnf_mean, *lnf_rstd;
  float *logits;                    /* [N,Vp], reused for dlogits in backward */
  float *token_losses;              /* [N] */
  int *inputs, *targets;            /* copies of the last forward's batch */
  /* backward scratch */
  float *dres, *dbig, *dqkv, *dsmall, *chunks, *attn_scratch;

  int B, T;                         /* shape of the last forward, 0 if none */
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

int gy_gpt_config_check(const gy_gpt_config_t *c, char *errmsg, size_t errlen) {
  const char *why = NULL;
  if (c->num_layers < 1) why = "num_layers must be >= 1";
  else if (c->channels < 1) why = "channels must be >= 1";
  else if (c->num_heads < 1 || c->channels % c->num_heads) why = "num_heads must divide channels";
  else if (c->max_seq_len < 1) why = "max_seq_len must be >= 1";
  else if (c->vocab_size < 2 || c->vocab_size > 65536) why = "vocab_size must be in [2, 65536]";
  else if (c->padded_vocab_size < c->vocab_size) why = "padded_vocab_size must be >= vocab_size";
  if (why) {
    if (errmsg) snprintf(errmsg, errlen, "model config: %s", why);
    return GY_EINVAL;
  }
  return 0;
}

static void compute_sizes(gy_gpt_t *m) {
  const gy_gpt_config_t *c = &m->cfg;
  size_t L = c->num_layers, C = c->channels, Vp = c->padded_vocab_size, T = c->max_seq_len;
  size_t hs = C / c->num_heads;
  size_t *s = m->sizes;
  s[GY_T_WTE] = Vp * C;
  s[GY_T_WPE] = T * C;
  s[GY_T_LN1W] = L * C;
  s[GY_T_LN1B] = L * C;
  s[GY_T_QKVW] = L * 3 * C * C;
  s[GY_T_QKVB] = L * 3 * C;
  s[GY_T_ATTPROJW] = L * C * C;
  s[GY_T_ATTPROJB] = L * C;
  s[GY_T_LN2W] = L * C;
  s[GY_T_LN2B] = L * C;
  s[GY_T_FCW] = L * 4 * C * C;
  s[GY_T_FCB] = L * 4 * C;
  s[GY_T_FCPROJW] = L * C * 4 * C;
  s[GY_T_FCPROJB] = L * C;
  s[GY_T_LNFW] = C;
  s[GY_T_LNFB] = C;
  s[GY_T_QNW] = c->qk_norm ? L * hs : 0;
  s[GY_T_KNW] = c->qk_norm ? L * hs : 0;
  size_t off = 0;
  for (int i = 0; i < GY_T_COUNT; i++) {
    m->offsets[i] = off;
    off += s[i];
  }
  m->num_params = off;
}

/* Carves activation buffers out of one allocation; with base == NULL it only counts. */
static size_t carve(gy_gpt_t *m, float *base) {
  const gy_gpt_config_t *c = &m->cfg;
  size_t N = (size_t)m->max_batch * c->max_seq_len, C = c->channels, L = c->num_layers;
  size_t NH = c->num_heads, T = c->max_seq_len, hs = C / NH, Vp = c->padded_vocab_size;
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
    TAKE(a->qkv, N * 3 * C);
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
    TAKE(a->atty, N * C);
    TAKE(a->res2, N * C);
    TAKE(a->ln2, N * C);
    TAKE(a->ln2_mean, N);
    TAKE(a->ln2_rstd, N);
    TAKE(a->fch, N * 4 * C);
    TAKE(a->fchg, N * 4 * C);
    TAKE(a->res3, N * C);
  }
  TAKE(m->encoded, N * C);
  TAKE(m->lnf, N * C);
  TAKE(m->lnf_mean, N);
  TAKE(m->lnf_rstd, N);
  TAKE(m->logits, N * Vp);
  TAKE(m->token_losses, N);
  TAKE(m->dres, N * C);
  TAKE(m->dbig, N * 4 * C);
  TAKE(m->dqkv, N * 3 * C);
  TAKE(m->dsmall, N * C);
  size_t maxoc = 4 * C > Vp ? 4 * C : Vp;
  TAKE(m->chunks, 2 * (size_t)GY_OPS_CHUNKS * maxoc);
  TAKE(m->attn_scratch, gy_attention_scratch_floats(m->max_batch, (int)T, (int)C, (int)NH));
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
const float *gy_gpt_token_losses(const gy_gpt_t *m) {
  return m->token_losses;
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

void gy_gpt_init_params(gy_gpt_t *m, uint64_t seed) {
  const gy_gpt_config_t *c = &m->cfg;
  uint64_t s = seed ^ 0x6779726full; /* "gyro" */
  float resid_std = 0.02f / sqrtf(2.0f * c->num_layers);
  memset(m->params, 0, m->num_params * sizeof(float));
  for (int i = 0; i < GY_T_COUNT; i++) {
    float *p = m->params + m->offsets[i];
    size_t n = m->sizes[i];
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
      for (size_t j = 0; j < n; j++) p[j] = 1.0f;
      break;
    default: /* biases */
      break;
    }
  }
}

#define P(i) (m->params + m->offsets[i])
#define G(i) (m->grads + m->offsets[i])

int gy_gpt_forward(gy_gpt_t *m, const int *inputs, const int *targets, int B, int T, float z_loss,
                   float *mean_loss) {
  const gy_gpt_config_t *c = &m->cfg;
  if (B < 1 || B > m->max_batch || T < 1 || T > c->max_seq_len) return GY_EINVAL;
  int N = B * T, C = c->channels, L = c->num_layers, NH = c->num_heads, V = c->vocab_size;
  int Vp = c->padded_vocab_size, hs = C / NH;
  for (int i = 0; i < N; i++) {
    if (inputs[i] < 0 || inputs[i] >= V) return GY_EINVAL;
    if (targets && (targets[i] < 0 || targets[i] >= V)) return GY_EINVAL;
  }
  memcpy(m->inputs, inputs, sizeof(int) * N);
  if (targets) memcpy(m->targets, targets, sizeof(int) * N);
  m->B = B;
  m->T = T;
  m->have_targets = targets != NULL;
  m->z_loss = z_loss;

  gy_encoder_forward(m->encoded, inputs, P(GY_T_WTE), P(GY_T_WPE), B, T, C);
  const float *residual = m->encoded;
  for (int l = 0; l < L; l++) {
    layer_acts_t *a = &m->layers[l];
    gy_layernorm_forward(a->ln1, a->ln1_mean, a->ln1_rstd, residual, P(GY_T_LN1W) + l * C,
                         P(GY_T_LN1B) + l * C, N, C);
    gy_matmul_forward(a->qkv, a->ln1, P(GY_T_QKVW) + (size_t)l * 3 * C * C,
                      P(GY_T_QKVB) + (size_t)l * 3 * C, N, C, 3 * C);
    gy_attention_forward(a->atty, &a->att, a->qkv, c->qk_norm ? P(GY_T_QNW) + l * hs : NULL,
                         c->qk_norm ? P(GY_T_KNW) + l * hs : NULL, B, T, C, NH);
    gy_matmul_forward(m->dsmall, a->atty, P(GY_T_ATTPROJW) + (size_t)l * C * C,
                      P(GY_T_ATTPROJB) + (size_t)l * C, N, C, C);
    gy_residual_forward(a->res2, residual, m->dsmall, (size_t)N * C);
    gy_layernorm_forward(a->ln2, a->ln2_mean, a->ln2_rstd, a->res2, P(GY_T_LN2W) + l * C,
                         P(GY_T_LN2B) + l * C, N, C);
    gy_matmul_forward(a->fch, a->ln2, P(GY_T_FCW) + (size_t)l * 4 * C * C,
                      P(GY_T_FCB) + (size_t)l * 4 * C, N, C, 4 * C);
    gy_gelu_forward(a->fchg, a->fch, (size_t)N * 4 * C);
    gy_matmul_forward(m->dsmall, a->fchg, P(GY_T_FCPROJW) + (size_t)l * 4 * C * C,
                      P(GY_T_FCPROJB) + (size_t)l * C, N, 4 * C, C);
    gy_residual_forward(a->res3, a->res2, m->dsmall, (size_t)N * C);
    residual = a->res3;
  }
  gy_layernorm_forward(m->lnf, m->lnf_mean, m->lnf_rstd, residual, P(GY_T_LNFW), P(GY_T_LNFB), N,
                       C);
  gy_matmul_forward(m->logits, m->lnf, P(GY_T_WTE), NULL, N, C, Vp);
  if (targets) {
    double total = gy_crossentropy_forward(m->token_losses, NULL, m->logits, targets, N, V, Vp,
                                           z_loss, (float)N);
    if (mean_loss) *mean_loss = (float)(total / N);
  } else if (mean_loss) {
    *mean_loss = NAN;
  }
  return 0;
}

int gy_gpt_backward(gy_gpt_t *m) {
  if (!m->B || !m->have_targets) return GY_EINVAL;
  const gy_gpt_config_t *c = &m->cfg;
  int B = m->B, T = m->T, N = B * T, C = c->channels, L = c->num_layers, NH = c->num_heads;
  int V = c->vocab_size, Vp = c->padded_vocab_size, hs = C / NH;
  memset(m->grads, 0, m->num_params * sizeof(float));

  /* classifier: logits are overwritten by their gradient */
  gy_crossentropy_forward(m->token_losses, m->logits, m->logits, m->targets, N, V, Vp, m->z_loss,
                          (float)N);
  float *dlnf = m->dsmall;
  memset(dlnf, 0, sizeof(float) * N * C);
  gy_matmul_backward(dlnf, G(GY_T_WTE), NULL, m->logits, m->lnf, P(GY_T_WTE), N, C, Vp, m->chunks);
  memset(m->dres, 0, sizeof(float) * N * C);
  const float *last = m->layers[L - 1].res3;
  gy_layernorm_backward(m->dres, G(GY_T_LNFW), G(GY_T_LNFB), dlnf, last, P(GY_T_LNFW),
                        m->lnf_mean, m->lnf_rstd, N, C, m->chunks);

  for (int l = L - 1; l >= 0; l--) {
    layer_acts_t *a = &m->layers[l];
    const float *res_in = l == 0 ? m->encoded : m->layers[l - 1].res3;
    /* MLP */
    memset(m->dbig, 0, sizeof(float) * N * 4 * C);
    gy_matmul_backward(m->dbig, G(GY_T_FCPROJW) + (size_t)l * 4 * C * C,
                       G(GY_T_FCPROJB) + (size_t)l * C, m->dres, a->fchg,
                       P(GY_T_FCPROJW) + (size_t)l * 4 * C * C, N, 4 * C, C, m->chunks);
    gy_gelu_backward(m->dbig, a->fch, m->dbig, (size_t)N * 4 * C);
    memset(m->dsmall, 0, sizeof(float) * N * C);
    gy_matmul_backward(m->dsmall, G(GY_T_FCW) + (size_t)l * 4 * C * C,
                       G(GY_T_FCB) + (size_t)l * 4 * C, m->dbig, a->ln2,
                       P(GY_T_FCW) + (size_t)l * 4 * C * C, N, C, 4 * C, m->chunks);
    gy_layernorm_backward(m->dres, G(GY_T_LN2W) + l * C, G(GY_T_LN2B) + l * C, m->dsmall, a->res2,
                          P(GY_T_LN2W) + l * C, a->ln2_mean, a->ln2_rstd, N, C, m->chunks);
    /* attention */
    memset(m->dsmall, 0, sizeof(float) * N * C);
    gy_matmul_backward(m->dsmall, G(GY_T_ATTPROJW) + (size_t)l * C * C,
                       G(GY_T_ATTPROJB) + (size_t)l * C, m->dres, a->atty,
                       P(GY_T_ATTPROJW) + (size_t)l * C * C, N, C, C, m->chunks);
    gy_attention_backward(m->dqkv, c->qk_norm ? G(GY_T_QNW) + l * hs : NULL,
                          c->qk_norm ? G(GY_T_KNW) + l * hs : NULL, m->dsmall, &a->att,
                          c->qk_norm ? P(GY_T_QNW) + l * hs : NULL,
                          c->qk_norm ? P(GY_T_KNW) + l * hs : NULL, B, T, C, NH, m->attn_scratch);
    memset(m->dsmall, 0, sizeof(float) * N * C);
    gy_matmul_backward(m->dsmall, G(GY_T_QKVW) + (size_t)l * 3 * C * C,
                       G(GY_T_QKVB) + (size_t)l * 3 * C, m->dqkv, a->ln1,
                       P(GY_T_QKVW) + (size_t)l * 3 * C * C, N, C, 3 * C, m->chunks);
    gy_layernorm_backward(m->dres, G(GY_T_LN1W) + l * C, G(GY_T_LN1B) + l * C, m->dsmall, res_in,
                          P(GY_T_LN1W) + l * C, a->ln1_mean, a->ln1_rstd, N, C, m->chunks);
  }
  gy_encoder_backward(G(GY_T_WTE), G(GY_T_WPE), m->dres, m->inputs, B, T, C);
  m->have_targets = 0; /* the logits now hold their gradient: one backward per forward */
  return 0;
}
