/*
 * gpt_cuda: the GPT-2 model of kernels/gpt.c on one GPU, and AdamW on the GPU.
 *
 * API (kernels/gpt_cuda.h): create/destroy and accessors; upload/download of parameters and
 * gradients in the CPU layout; init_params; forward (per-token losses to the host); backward and
 * backward_masked (device gradients, per-layer events and callbacks; the mask only reaches the
 * classifier, as on the CPU); gy_adamw_cuda_* (measure, update, step, moments up/down).
 *
 * The pass is the CPU model's, operator for operator (the headers of kernels/cuda/ mirror
 * kernels/ops_cpu.h), in the same order and with the same buffers' roles, so the two can be
 * compared tensor by tensor. Device memory:
 *  - params (float master weights), grads (float), both in the CPU layout (same offsets);
 *  - wc: the weights the operators read — params itself in f32 mode, a bf16 copy in bf16 mode,
 *    refreshed after every upload and every optimizer step;
 *  - one activation allocation carved into per-layer buffers (dtype) and float statistics, sized
 *    for max_batch x max_seq_len; backward scratch after it.
 * Invariants: all work of a model runs on its context's stream, in order; a forward keeps what
 * its backward needs until the next forward; one backward per forward (the logits buffer holds
 * their gradient after it). No atomics anywhere: a step is reproducible on one device.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cuda/common.cuh"

extern "C" {
#include "kernels/cuda/adamw.h"
#include "kernels/cuda/attention.h"
#include "kernels/cuda/classifier.h"
#include "kernels/cuda/embedding.h"
#include "kernels/cuda/gelu.h"
#include "kernels/cuda/layernorm.h"
#include "kernels/cuda/matmul.h"
#include "kernels/cuda/norms.h"
#include "kernels/gpt_cuda.h"
}

typedef struct {
  void *ln1;
  float *ln1_mean, *ln1_rstd;
  void *qkv;
  gy_cuda_attn_acts_t att;
  void *atty, *res2, *ln2;
  float *ln2_mean, *ln2_rstd;
  void *fch, *fchg, *res3;
} layer_acts_t;

struct gy_gpt_cuda {
  gy_gpt_config_t cfg;
  int max_batch;
  gy_cuda_dtype_t dt;
  size_t es; /* bytes per activation element */
  size_t sizes[GY_T_COUNT], offsets[GY_T_COUNT], num_params;
  gy_cuda_ctx_t *ctx;

  float *params, *grads; /* device, owned */
  void *wc;              /* compute weights: params (f32) or an owned bf16 copy */
  char *act;             /* device, owned: activations and scratch */
  size_t act_bytes, dev_bytes;
  layer_acts_t *layers; /* host array of device pointers */
  void *encoded, *lnf, *logits;
  float *lnf_mean, *lnf_rstd, *d_token_losses, *d_row_losses;
  int *d_inputs, *d_targets, *d_plan; /* plan: tokens [N], starts [N+1], positions [N] */
  int *d_argmax;                      /* [N]: gy_gpt_cuda_argmax */
  uint8_t *d_keep;                    /* [max_batch]: gy_gpt_cuda_backward_masked's mask */
  void *dres, *dsmall, *dbig, *dqkv, *attn_scratch;
  float *ln_scratch, *bias_scratch;

  /* host */
  float *h_token_losses, *h_row_losses;
  int *h_plan, *h_count;
  int nuniq;
  cudaEvent_t *events; /* [L+1]: after block l's gradients; [L]: after the embeddings' */
  gy_gpt_grads_ready_fn grads_ready;
  void *grads_ready_ctx;
  /* tensor parallelism (kernels/gpt.h's layout): P ranks, NHl heads and Cl = C/P channels of
   * the attention and 4*Cl of the MLP here; tp_sum sums a device buffer over the group */
  int P, NHl, Cl;
  gy_gpt_cuda_allreduce_fn tp_sum;
  void *tp_ctx;

  int B, T, have_targets;
  int logits_valid; /* the last forward's logits are intact (no backward since) */
  /* asynchronous snapshots (gy_gpt_cuda_snapshot_begin): made on first use */
  cudaStream_t snap_stream;
  cudaEvent_t snap_start, snap_done;
  int snap_pending; /* a snapshot's copies are queued and nobody waited for them yet */
  float z_loss;
};

/* Carves the activation allocation; with base == NULL it only counts bytes. */
static size_t carve(gy_gpt_cuda_t *m, char *base) {
  const gy_gpt_config_t *c = &m->cfg;
  size_t N = (size_t)m->max_batch * c->max_seq_len, C = c->channels, L = c->num_layers;
  size_t T = c->max_seq_len, Vp = c->padded_vocab_size, es = m->es;
  size_t NH = (size_t)m->NHl, Cl = (size_t)m->Cl; /* this rank's heads and attention width */
  size_t bnt = (size_t)m->max_batch * NH * T * (C / c->num_heads);
  size_t off = 0;
#define TAKE(ptr, bytes)                                                                           \
  do {                                                                                             \
    if (base) (ptr) = (decltype(ptr))(base + off);                                                 \
    off += ((bytes) + 255) & ~(size_t)255;                                                         \
  } while (0)
  for (size_t l = 0; l < L; l++) {
    layer_acts_t dummy, *a = base ? &m->layers[l] : &dummy;
    TAKE(a->ln1, N * C * es);
    TAKE(a->ln1_mean, N * 4);
    TAKE(a->ln1_rstd, N * 4);
    TAKE(a->qkv, N * 3 * Cl * es);
    TAKE(a->att.q, bnt * es);
    TAKE(a->att.k, bnt * es);
    TAKE(a->att.v, bnt * es);
    if (c->qk_norm) {
      TAKE(a->att.qraw, bnt * es);
      TAKE(a->att.kraw, bnt * es);
      TAKE(a->att.qmean, N * NH * 4);
      TAKE(a->att.qrstd, N * NH * 4);
      TAKE(a->att.kmean, N * NH * 4);
      TAKE(a->att.krstd, N * NH * 4);
    } else if (base) {
      a->att.qraw = a->att.kraw = NULL;
      a->att.qmean = a->att.qrstd = a->att.kmean = a->att.krstd = NULL;
    }
    TAKE(a->att.att, (size_t)m->max_batch * NH * T * T * es);
    TAKE(a->atty, N * Cl * es);
    TAKE(a->res2, N * C * es);
    TAKE(a->ln2, N * C * es);
    TAKE(a->ln2_mean, N * 4);
    TAKE(a->ln2_rstd, N * 4);
    TAKE(a->fch, N * 4 * Cl * es);
    TAKE(a->fchg, N * 4 * Cl * es);
    TAKE(a->res3, N * C * es);
  }
  TAKE(m->encoded, N * C * es);
  TAKE(m->lnf, N * C * es);
  TAKE(m->lnf_mean, N * 4);
  TAKE(m->lnf_rstd, N * 4);
  TAKE(m->logits, N * Vp * es);
  TAKE(m->d_token_losses, N * 4);
  TAKE(m->d_row_losses, N * 4);
  TAKE(m->d_inputs, N * 4);
  TAKE(m->d_targets, N * 4);
  TAKE(m->d_argmax, N * 4);
  TAKE(m->d_keep, (size_t)m->max_batch);
  TAKE(m->d_plan, (3 * N + 1) * 4);
  TAKE(m->dres, N * C * es);
  TAKE(m->dsmall, N * C * es);
  TAKE(m->dbig, N * 4 * Cl * es);
  TAKE(m->dqkv, N * 3 * Cl * es);
  TAKE(m->ln_scratch, gy_cuda_layernorm_scratch_floats((int)C) * 4);
  TAKE(m->bias_scratch, gy_cuda_matmul_scratch_floats((int)(4 * C)) * 4);
  TAKE(m->attn_scratch,
       gy_cuda_attention_scratch_bytes(m->dt, m->max_batch, (int)T, (int)Cl, (int)NH, c->qk_norm));
#undef TAKE
  return off;
}

extern "C" int gy_gpt_cuda_create(gy_gpt_cuda_t **out, const gy_gpt_config_t *cfg, int max_batch,
                                  gy_cuda_dtype_t dtype, int device, char *errmsg, size_t errlen) {
  *out = NULL;
  int rc = gy_gpt_config_check(cfg, errmsg, errlen);
  if (rc) return rc;
  if (max_batch < 1 || (dtype != GY_CUDA_F32 && dtype != GY_CUDA_BF16)) {
    gy_errmsg(errmsg, errlen, "gpt_cuda: max_batch must be >= 1 and dtype f32 or bf16");
    return GY_EINVAL;
  }
  size_t N = (size_t)max_batch * cfg->max_seq_len;
  if (N > (size_t)1 << 30) {
    gy_errmsg(errmsg, errlen, "gpt_cuda: max_batch x max_seq_len is too large");
    return GY_EINVAL;
  }
  gy_gpt_cuda_t *m = (gy_gpt_cuda_t *)calloc(1, sizeof(*m));
  if (!m) return GY_ENOMEM;
  m->cfg = *cfg;
  m->P = cfg->tp_size > 1 ? cfg->tp_size : 1;
  m->cfg.tp_size = m->P;
  if (m->P == 1) m->cfg.tp_rank = 0;
  m->NHl = cfg->num_heads / m->P;
  m->Cl = cfg->channels / m->P;
  m->max_batch = max_batch;
  m->dt = dtype;
  m->es = gy_cuda_dtype_size(dtype);
  m->num_params = gy_gpt_layout(&m->cfg, m->sizes, m->offsets); /* the CPU model's layout */
  int L = cfg->num_layers;
  m->layers = (layer_acts_t *)calloc((size_t)L, sizeof(layer_acts_t));
  m->events = (cudaEvent_t *)calloc((size_t)L + 1, sizeof(cudaEvent_t));
  m->h_token_losses = (float *)malloc(N * sizeof(float));
  m->h_row_losses = (float *)malloc(N * sizeof(float));
  m->h_plan = (int *)malloc((3 * N + 1) * sizeof(int));
  m->h_count = (int *)malloc(((size_t)cfg->vocab_size + 1) * sizeof(int));
  if (!m->layers || !m->events || !m->h_token_losses || !m->h_row_losses || !m->h_plan ||
      !m->h_count) {
    rc = GY_ENOMEM;
    goto err;
  }
  if ((rc = gy_cuda_ctx_create(&m->ctx, device))) goto err;
  m->act_bytes = carve(m, NULL);
  if ((rc = gy_cuda_malloc((void **)&m->params, m->num_params * 4)) ||
      (rc = gy_cuda_malloc((void **)&m->grads, m->num_params * 4)) ||
      (rc = gy_cuda_malloc((void **)&m->act, m->act_bytes)))
    goto err;
  m->dev_bytes = 2 * m->num_params * 4 + m->act_bytes;
  if (dtype == GY_CUDA_BF16) {
    if ((rc = gy_cuda_malloc(&m->wc, m->num_params * 2))) goto err;
    m->dev_bytes += m->num_params * 2;
  } else {
    m->wc = m->params;
  }
  carve(m, m->act);
  for (int i = 0; i <= L; i++) {
    cudaError_t e = cudaEventCreateWithFlags(&m->events[i], cudaEventDisableTiming);
    if (e != cudaSuccess) {
      m->events[i] = NULL;
      rc = gy__cuda_fail(__FILE__, __LINE__, GY_EIO, "cudaEventCreate", cudaGetErrorString(e));
      goto err;
    }
  }
  if ((rc = gy_cuda_memset0(m->ctx, m->params, m->num_params * 4)) ||
      (rc = gy_cuda_memset0(m->ctx, m->grads, m->num_params * 4)) ||
      (dtype == GY_CUDA_BF16 && (rc = gy_cuda_memset0(m->ctx, m->wc, m->num_params * 2))) ||
      (rc = gy_cuda_sync(m->ctx)))
    goto err;
  *out = m;
  return 0;
err:
  gy_errmsg(errmsg, errlen, "gpt_cuda: %s%s%s (%zu MiB of activations for batch %d)",
            gy_strerror(rc), gy_cuda_last_error()[0] ? ": " : "", gy_cuda_last_error(),
            m->act_bytes >> 20, max_batch);
  gy_gpt_cuda_destroy(m);
  return rc;
}

extern "C" void gy_gpt_cuda_destroy(gy_gpt_cuda_t *m) {
  if (!m) return;
  if (m->ctx) gy_cuda_sync(m->ctx);
  if (m->snap_stream) {
    cudaStreamSynchronize(m->snap_stream);
    cudaStreamDestroy(m->snap_stream);
  }
  if (m->snap_start) cudaEventDestroy(m->snap_start);
  if (m->snap_done) cudaEventDestroy(m->snap_done);
  if (m->events)
    for (int i = 0; i <= m->cfg.num_layers; i++)
      if (m->events[i]) cudaEventDestroy(m->events[i]);
  if (m->wc && m->wc != (void *)m->params) gy_cuda_free(m->wc);
  gy_cuda_free(m->act);
  gy_cuda_free(m->grads);
  gy_cuda_free(m->params);
  gy_cuda_ctx_destroy(m->ctx);
  free(m->h_count);
  free(m->h_plan);
  free(m->h_row_losses);
  free(m->h_token_losses);
  free(m->events);
  free(m->layers);
  free(m);
}

extern "C" const gy_gpt_config_t *gy_gpt_cuda_config(const gy_gpt_cuda_t *m) {
  return &m->cfg;
}
extern "C" gy_cuda_dtype_t gy_gpt_cuda_dtype(const gy_gpt_cuda_t *m) {
  return m->dt;
}
extern "C" size_t gy_gpt_cuda_num_params(const gy_gpt_cuda_t *m) {
  return m->num_params;
}
extern "C" size_t gy_gpt_cuda_tensor_size(const gy_gpt_cuda_t *m, int i) {
  return (i >= 0 && i < GY_T_COUNT) ? m->sizes[i] : 0;
}
extern "C" size_t gy_gpt_cuda_tensor_offset(const gy_gpt_cuda_t *m, int i) {
  return (i >= 0 && i < GY_T_COUNT) ? m->offsets[i] : 0;
}
extern "C" size_t gy_gpt_cuda_device_bytes(const gy_gpt_cuda_t *m) {
  return m->dev_bytes;
}
extern "C" gy_cuda_ctx_t *gy_gpt_cuda_ctx(gy_gpt_cuda_t *m) {
  return m->ctx;
}
extern "C" float *gy_gpt_cuda_device_params(gy_gpt_cuda_t *m) {
  return m->params;
}
extern "C" float *gy_gpt_cuda_device_grads(gy_gpt_cuda_t *m) {
  return m->grads;
}
extern "C" const float *gy_gpt_cuda_token_losses(const gy_gpt_cuda_t *m) {
  return m->h_token_losses;
}
extern "C" void gy_gpt_cuda_set_grads_ready(gy_gpt_cuda_t *m, gy_gpt_grads_ready_fn fn, void *ctx) {
  m->grads_ready = fn;
  m->grads_ready_ctx = ctx;
}

extern "C" void gy_gpt_cuda_set_tp_allreduce(gy_gpt_cuda_t *m, gy_gpt_cuda_allreduce_fn fn,
                                             void *ctx) {
  m->tp_sum = fn;
  m->tp_ctx = ctx;
}

extern "C" int gy_gpt_cuda_tensor_sharded(const gy_gpt_cuda_t *m, int i) {
  return gy_gpt_config_sharded(&m->cfg, i);
}

extern "C" int gy_gpt_cuda_wait_layer(gy_gpt_cuda_t *m, int layer) {
  int L = m->cfg.num_layers;
  if (layer < -1 || layer >= L) return GY_EINVAL;
  GY_CUDA_TRY(cudaEventSynchronize(m->events[layer < 0 ? L : layer]));
  return 0;
}

/* Makes the model's device current on the calling thread (a trainer may call from several
 * threads; the CUDA runtime's current device is per thread). */
static int use_device(const gy_gpt_cuda_t *m) {
  GY_CUDA_TRY(cudaSetDevice(m->ctx->device));
  return 0;
}

/* Refreshes the compute copy from the master weights (bf16 only) and waits. */
static int refresh_compute(gy_gpt_cuda_t *m) {
  int rc = 0;
  if (m->dt == GY_CUDA_BF16)
    rc = gy_cuda_convert_f32(m->ctx, m->wc, m->dt, m->params, m->num_params);
  return rc ? rc : gy_cuda_sync(m->ctx);
}

/* Orders the work queued next on the model's stream after a pending snapshot's copies: what
 * overwrites the parameters or moments must not run before they are read. */
static int snap_fence(gy_gpt_cuda_t *m) {
  if (m->snap_pending) GY_CUDA_TRY(cudaStreamWaitEvent(m->ctx->stream, m->snap_done, 0));
  return 0;
}

extern "C" int gy_gpt_cuda_upload_params(gy_gpt_cuda_t *m, const float *params) {
  int rc = use_device(m);
  if (!rc) rc = snap_fence(m);
  if (!rc) rc = gy_cuda_upload(m->ctx, m->params, params, m->num_params * 4);
  return rc ? rc : refresh_compute(m);
}

extern "C" int gy_gpt_cuda_download_params(gy_gpt_cuda_t *m, float *params) {
  return gy_cuda_download(m->ctx, params, m->params, m->num_params * 4);
}

extern "C" int gy_gpt_cuda_download_grads(gy_gpt_cuda_t *m, float *grads) {
  return gy_cuda_download(m->ctx, grads, m->grads, m->num_params * 4);
}

extern "C" int gy_gpt_cuda_upload_grads(gy_gpt_cuda_t *m, const float *grads) {
  return gy_cuda_upload(m->ctx, m->grads, grads, m->num_params * 4);
}

extern "C" int gy_gpt_cuda_init_params(gy_gpt_cuda_t *m, uint64_t seed) {
  /* the CPU model computes the weights (a pure function of seed); batch 1 keeps it small */
  gy_gpt_t *cpu = NULL;
  int rc = gy_gpt_create(&cpu, &m->cfg, 1);
  if (rc) return rc;
  gy_gpt_init_params(cpu, seed);
  rc = gy_gpt_cuda_upload_params(m, gy_gpt_params(cpu));
  gy_gpt_destroy(cpu);
  return rc;
}

/* Compute weights of tensor i, plus an element offset. */
static inline void *W(gy_gpt_cuda_t *m, int i, size_t off) {
  return (char *)m->wc + (m->offsets[i] + off) * m->es;
}
static inline float *G(gy_gpt_cuda_t *m, int i, size_t off) {
  return m->grads + m->offsets[i] + off;
}

/* Sums n elements of dtype dt at buf over the tensor-parallel group (a no-op without tensor
 * parallelism): the work queued so far is waited for, the caller's function runs the collective
 * and returns with the sum in place. */
static int tp_allreduce(gy_gpt_cuda_t *m, void *buf, size_t n, gy_cuda_dtype_t dt) {
  if (m->P == 1) return 0;
  if (!m->tp_sum) return GY_EINVAL;
  int rc = gy_cuda_sync(m->ctx);
  if (rc) return rc;
  return m->tp_sum(m->tp_ctx, buf, n, dt) ? GY_ECOMM : 0;
}

/* out = inp @ W^T + bias for a row-parallel layer: with tensor parallelism the local product is
 * a partial sum over the group, summed before the (replicated) bias is added. */
static int row_parallel(gy_gpt_cuda_t *m, void *out, const void *inp, const void *w,
                        const void *bias, int N, int Cin, int OC) {
  gy_cuda_ctx_t *x = m->ctx;
  if (m->P == 1) return gy_cuda_matmul_forward(x, m->dt, out, inp, w, bias, N, Cin, OC);
  int rc = gy_cuda_matmul_forward(x, m->dt, out, inp, w, NULL, N, Cin, OC);
  if (!rc) rc = tp_allreduce(m, out, (size_t)N * OC, m->dt);
  if (!rc) rc = gy_cuda_add_bias(x, m->dt, out, bias, N, OC);
  return rc;
}

extern "C" int gy_gpt_cuda_forward(gy_gpt_cuda_t *m, const int *inputs, const int *targets, int B,
                                   int T, float z_loss, float *mean_loss) {
  const gy_gpt_config_t *c = &m->cfg;
  if (B < 1 || B > m->max_batch || T < 1 || T > c->max_seq_len) return GY_EINVAL;
  int N = B * T, C = c->channels, L = c->num_layers, V = c->vocab_size, NH = m->NHl;
  int Vp = c->padded_vocab_size, hs = C / c->num_heads, qk = c->qk_norm, Cl = m->Cl;
  gy_cuda_dtype_t dt = m->dt;
  gy_cuda_ctx_t *x = m->ctx;
  for (int i = 0; i < N; i++) {
    if (inputs[i] < 0 || inputs[i] >= V) return GY_EINVAL;
    if (targets && (targets[i] < 0 || targets[i] >= V)) return GY_EINVAL;
  }
  m->B = 0; /* valid again only when the pass completes */
  m->have_targets = 0;
  m->z_loss = z_loss;
  int rc;
  if ((rc = use_device(m))) return rc;
#define TRY(call)                                                                                  \
  do {                                                                                             \
    if ((rc = (call))) return rc;                                                                  \
  } while (0)
  TRY(gy_cuda_upload(x, m->d_inputs, inputs, (size_t)N * 4));
  if (targets) {
    TRY(gy_cuda_upload(x, m->d_targets, targets, (size_t)N * 4));
    /* the token-embedding gradient's plan: positions grouped by token (see embedding.h) */
    int *tok = m->h_plan, *starts = tok + N, *pos = starts + N + 1;
    m->nuniq = gy_cuda_encoder_plan(inputs, N, V, tok, starts, pos, m->h_count);
    if (m->nuniq < 0) return GY_EINVAL;
    int *dtok = m->d_plan, *dstarts = dtok + N, *dpos = dstarts + N + 1;
    TRY(gy_cuda_upload(x, dtok, tok, (size_t)m->nuniq * 4));
    TRY(gy_cuda_upload(x, dstarts, starts, ((size_t)m->nuniq + 1) * 4));
    TRY(gy_cuda_upload(x, dpos, pos, (size_t)N * 4));
  }

  TRY(gy_cuda_encoder_forward(x, dt, m->encoded, m->d_inputs, W(m, GY_T_WTE, 0), W(m, GY_T_WPE, 0),
                              B, T, C));
  const void *residual = m->encoded;
  for (int l = 0; l < L; l++) {
    layer_acts_t *a = &m->layers[l];
    size_t lC = (size_t)l * C;
    TRY(gy_cuda_layernorm_forward(x, dt, a->ln1, a->ln1_mean, a->ln1_rstd, residual,
                                  W(m, GY_T_LN1W, lC), W(m, GY_T_LN1B, lC), N, C));
    size_t lCl = (size_t)l * Cl;
    TRY(gy_cuda_matmul_forward(x, dt, a->qkv, a->ln1, W(m, GY_T_QKVW, lCl * 3 * C),
                               W(m, GY_T_QKVB, lCl * 3), N, C, 3 * Cl));
    TRY(gy_cuda_attention_forward(
        x, dt, a->atty, &a->att, a->qkv, qk ? W(m, GY_T_QNW, (size_t)l * hs) : NULL,
        qk ? W(m, GY_T_KNW, (size_t)l * hs) : NULL, B, T, Cl, NH, m->attn_scratch));
    TRY(row_parallel(m, m->dsmall, a->atty, W(m, GY_T_ATTPROJW, lC * Cl), W(m, GY_T_ATTPROJB, lC),
                     N, Cl, C));
    TRY(gy_cuda_residual_forward(x, dt, a->res2, residual, m->dsmall, (size_t)N * C));
    TRY(gy_cuda_layernorm_forward(x, dt, a->ln2, a->ln2_mean, a->ln2_rstd, a->res2,
                                  W(m, GY_T_LN2W, lC), W(m, GY_T_LN2B, lC), N, C));
    TRY(gy_cuda_matmul_forward(x, dt, a->fch, a->ln2, W(m, GY_T_FCW, lCl * 4 * C),
                               W(m, GY_T_FCB, lCl * 4), N, C, 4 * Cl));
    TRY(gy_cuda_gelu_forward(x, dt, a->fchg, a->fch, (size_t)N * 4 * Cl));
    TRY(row_parallel(m, m->dsmall, a->fchg, W(m, GY_T_FCPROJW, lC * 4 * Cl), W(m, GY_T_FCPROJB, lC),
                     N, 4 * Cl, C));
    TRY(gy_cuda_residual_forward(x, dt, a->res3, a->res2, m->dsmall, (size_t)N * C));
    residual = a->res3;
  }
  TRY(gy_cuda_layernorm_forward(x, dt, m->lnf, m->lnf_mean, m->lnf_rstd, residual,
                                W(m, GY_T_LNFW, 0), W(m, GY_T_LNFB, 0), N, C));
  TRY(gy_cuda_matmul_forward(x, dt, m->logits, m->lnf, W(m, GY_T_WTE, 0), NULL, N, C, Vp));
  if (targets) {
    TRY(gy_cuda_classifier(x, dt, m->logits, m->d_token_losses, m->d_row_losses, m->d_targets, N, V,
                           Vp, z_loss, (float)N, 0, NULL, T));
    TRY(gy_cuda_download(x, m->h_token_losses, m->d_token_losses, (size_t)N * 4));
    TRY(gy_cuda_download(x, m->h_row_losses, m->d_row_losses, (size_t)N * 4));
    double total = 0.0;
    for (int i = 0; i < N; i++)
      total += m->h_row_losses[i];
    if (mean_loss) *mean_loss = (float)(total / N);
  } else {
    TRY(gy_cuda_sync(x));
    if (mean_loss) *mean_loss = NAN;
  }
  m->B = B;
  m->T = T;
  m->have_targets = targets != NULL;
  m->logits_valid = 1;
  return 0;
}

extern "C" int gy_gpt_cuda_argmax(gy_gpt_cuda_t *m, int *out) {
  if (!m->B || !m->logits_valid || !out) return GY_EINVAL;
  int N = m->B * m->T, rc;
  gy_cuda_ctx_t *x = m->ctx;
  TRY(use_device(m));
  TRY(gy_cuda_argmax(x, m->dt, m->logits, m->d_argmax, N, m->cfg.vocab_size,
                     m->cfg.padded_vocab_size));
  TRY(gy_cuda_download(x, out, m->d_argmax, (size_t)N * sizeof(int)));
  return 0;
}

/* Records the event of `layer` and tells the trainer its gradients are queued. */
static int layer_done(gy_gpt_cuda_t *m, int layer) {
  int L = m->cfg.num_layers;
  GY_CUDA_TRY(cudaEventRecord(m->events[layer < 0 ? L : layer], m->ctx->stream));
  if (m->grads_ready) m->grads_ready(m->grads_ready_ctx, layer);
  return 0;
}

extern "C" int gy_gpt_cuda_backward(gy_gpt_cuda_t *m) {
  return gy_gpt_cuda_backward_masked(m, NULL, 0);
}

extern "C" int gy_gpt_cuda_backward_masked(gy_gpt_cuda_t *m, const uint8_t *keep, double denom_tokens) {
  if (!m->B || !m->have_targets) return GY_EINVAL;
  const gy_gpt_config_t *c = &m->cfg;
  int B = m->B, T = m->T, N = B * T, C = c->channels, L = c->num_layers, NH = m->NHl;
  int V = c->vocab_size, Vp = c->padded_vocab_size, hs = C / c->num_heads, qk = c->qk_norm, rc;
  int Cl = m->Cl;
  gy_cuda_dtype_t dt = m->dt;
  gy_cuda_ctx_t *x = m->ctx;
  size_t es = m->es;
  m->have_targets = 0; /* the logits are about to hold their gradient: one backward per forward */
  m->logits_valid = 0;
  TRY(use_device(m));
  /* The mean runs over the kept tokens (as on the CPU); with none kept every dlogits row is
   * zero and the denominator 1 merely stays finite. The mask goes up before any work is queued
   * (gy_cuda_upload waits), so the caller's array is free again when this returns. */
  int kept = B;
  if (keep) {
    kept = 0;
    for (int b = 0; b < B; b++)
      kept += keep[b] != 0;
    TRY(gy_cuda_upload(x, m->d_keep, keep, (size_t)B));
  }
  float denom = denom_tokens > 0 ? (float)denom_tokens : kept ? (float)(kept * T) : 1.0f;
  TRY(gy_cuda_memset0(x, m->grads, m->num_params * 4));

  /* classifier: the logits are overwritten by their gradient */
  TRY(gy_cuda_classifier(x, dt, m->logits, m->d_token_losses, NULL, m->d_targets, N, V, Vp,
                         m->z_loss, denom, 1, keep ? m->d_keep : NULL, T));
  void *dlnf = m->dsmall;
  TRY(gy_cuda_matmul_backward(x, dt, dlnf, 0, G(m, GY_T_WTE, 0), NULL, m->logits, m->lnf,
                              W(m, GY_T_WTE, 0), N, C, Vp, m->bias_scratch));
  TRY(gy_cuda_memset0(x, m->dres, (size_t)N * C * es));
  TRY(gy_cuda_layernorm_backward(x, dt, m->dres, G(m, GY_T_LNFW, 0), G(m, GY_T_LNFB, 0), dlnf,
                                 m->layers[L - 1].res3, W(m, GY_T_LNFW, 0), m->lnf_mean,
                                 m->lnf_rstd, N, C, m->ln_scratch));

  for (int l = L - 1; l >= 0; l--) {
    layer_acts_t *a = &m->layers[l];
    const void *res_in = l == 0 ? m->encoded : m->layers[l - 1].res3;
    size_t lC = (size_t)l * C, lCl = (size_t)l * Cl;
    /* MLP: fcproj is row-parallel (its input gradient is local), fc column-parallel (its input
     * gradient is a partial sum over the group) */
    TRY(gy_cuda_matmul_backward(x, dt, m->dbig, 0, G(m, GY_T_FCPROJW, lC * 4 * Cl),
                                G(m, GY_T_FCPROJB, lC), m->dres, a->fchg,
                                W(m, GY_T_FCPROJW, lC * 4 * Cl), N, 4 * Cl, C, m->bias_scratch));
    TRY(gy_cuda_gelu_backward(x, dt, m->dbig, a->fch, m->dbig, (size_t)N * 4 * Cl));
    TRY(gy_cuda_matmul_backward(x, dt, m->dsmall, 0, G(m, GY_T_FCW, lCl * 4 * C),
                                G(m, GY_T_FCB, lCl * 4), m->dbig, a->ln2,
                                W(m, GY_T_FCW, lCl * 4 * C), N, C, 4 * Cl, m->bias_scratch));
    TRY(tp_allreduce(m, m->dsmall, (size_t)N * C, dt));
    TRY(gy_cuda_layernorm_backward(x, dt, m->dres, G(m, GY_T_LN2W, lC), G(m, GY_T_LN2B, lC),
                                   m->dsmall, a->res2, W(m, GY_T_LN2W, lC), a->ln2_mean,
                                   a->ln2_rstd, N, C, m->ln_scratch));
    /* attention: attproj row-parallel, qkv column-parallel */
    TRY(gy_cuda_matmul_backward(x, dt, m->dsmall, 0, G(m, GY_T_ATTPROJW, lC * Cl),
                                G(m, GY_T_ATTPROJB, lC), m->dres, a->atty,
                                W(m, GY_T_ATTPROJW, lC * Cl), N, Cl, C, m->bias_scratch));
    TRY(gy_cuda_attention_backward(x, dt, m->dqkv, qk ? G(m, GY_T_QNW, (size_t)l * hs) : NULL,
                                   qk ? G(m, GY_T_KNW, (size_t)l * hs) : NULL, m->dsmall, &a->att,
                                   qk ? W(m, GY_T_QNW, (size_t)l * hs) : NULL,
                                   qk ? W(m, GY_T_KNW, (size_t)l * hs) : NULL, B, T, Cl, NH,
                                   m->attn_scratch));
    if (qk && m->P > 1) {
      /* the QK-norm weights are shared by all heads: sum the local heads' contributions */
      TRY(tp_allreduce(m, G(m, GY_T_QNW, (size_t)l * hs), (size_t)hs, GY_CUDA_F32));
      TRY(tp_allreduce(m, G(m, GY_T_KNW, (size_t)l * hs), (size_t)hs, GY_CUDA_F32));
    }
    TRY(gy_cuda_matmul_backward(x, dt, m->dsmall, 0, G(m, GY_T_QKVW, lCl * 3 * C),
                                G(m, GY_T_QKVB, lCl * 3), m->dqkv, a->ln1,
                                W(m, GY_T_QKVW, lCl * 3 * C), N, C, 3 * Cl, m->bias_scratch));
    TRY(tp_allreduce(m, m->dsmall, (size_t)N * C, dt));
    TRY(gy_cuda_layernorm_backward(x, dt, m->dres, G(m, GY_T_LN1W, lC), G(m, GY_T_LN1B, lC),
                                   m->dsmall, res_in, W(m, GY_T_LN1W, lC), a->ln1_mean, a->ln1_rstd,
                                   N, C, m->ln_scratch));
    TRY(layer_done(m, l));
  }
  int *dtok = m->d_plan, *dstarts = dtok + N, *dpos = dstarts + N + 1;
  TRY(gy_cuda_encoder_backward(x, dt, G(m, GY_T_WTE, 0), G(m, GY_T_WPE, 0), m->dres, dtok, dstarts,
                               dpos, m->nuniq, B, T, C));
  TRY(layer_done(m, -1));
  return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* AdamW */

struct gy_adamw_cuda {
  gy_gpt_cuda_t *model; /* borrowed: must outlive the optimizer */
  float *m, *v;         /* device, owned */
  void *scratch;        /* device, owned */
};

extern "C" int gy_adamw_cuda_create(gy_adamw_cuda_t **out, gy_gpt_cuda_t *model) {
  *out = NULL;
  gy_adamw_cuda_t *o = (gy_adamw_cuda_t *)calloc(1, sizeof(*o));
  if (!o) return GY_ENOMEM;
  o->model = model;
  size_t n = model->num_params;
  int rc;
  if ((rc = gy_cuda_malloc((void **)&o->m, n * 4)) ||
      (rc = gy_cuda_malloc((void **)&o->v, n * 4)) ||
      (rc = gy_cuda_malloc(&o->scratch, gy_cuda_norms_scratch_bytes())) ||
      (rc = gy_cuda_memset0(model->ctx, o->m, n * 4)) ||
      (rc = gy_cuda_memset0(model->ctx, o->v, n * 4)) || (rc = gy_cuda_sync(model->ctx))) {
    gy_adamw_cuda_destroy(o);
    return rc;
  }
  *out = o;
  return 0;
}

extern "C" void gy_adamw_cuda_destroy(gy_adamw_cuda_t *o) {
  if (!o) return;
  gy_cuda_free(o->scratch);
  gy_cuda_free(o->v);
  gy_cuda_free(o->m);
  free(o);
}

extern "C" int gy_adamw_cuda_download(gy_adamw_cuda_t *o, float *m, float *v) {
  size_t n = o->model->num_params * 4;
  int rc = gy_cuda_download(o->model->ctx, m, o->m, n);
  return rc ? rc : gy_cuda_download(o->model->ctx, v, o->v, n);
}

extern "C" int gy_adamw_cuda_upload(gy_adamw_cuda_t *o, const float *m, const float *v) {
  size_t n = o->model->num_params * 4;
  int rc = snap_fence(o->model);
  if (!rc) rc = gy_cuda_upload(o->model->ctx, o->m, m, n);
  return rc ? rc : gy_cuda_upload(o->model->ctx, o->v, v, n);
}

/* Length of the shallow prefix of tensor i (kernels/optim.c's rule). */
static size_t shallow_len(const gy_gpt_cuda_t *m, int i, int shallow_layers) {
  size_t n = m->sizes[i];
  if (i == GY_T_WTE || i == GY_T_WPE) return n;
  if (!gy_gpt_tensor_layered(i)) return 0;
  int L = m->cfg.num_layers;
  int k = shallow_layers < L ? shallow_layers : L;
  return n / (size_t)L * (size_t)k;
}

extern "C" int gy_adamw_cuda_measure(gy_adamw_cuda_t *o, const gy_knobs_t *k, gy_grad_sq_t *sq) {
  gy_gpt_cuda_t *m = o->model;
  memset(sq, 0, sizeof(*sq));
  gy_cuda_seg_t segs[GY_CUDA_MAX_SEGS];
  int n = 0, rc;
  if ((rc = use_device(m))) return rc;
  if (k->shallow_scale != 1.0f) {
    for (int i = 0; i < GY_T_COUNT; i++) {
      size_t s = shallow_len(m, i, k->shallow_layers);
      if (s) segs[n++] = gy_cuda_seg_t{m->offsets[i], s, 0};
    }
    if ((rc = gy_cuda_scale_segs(m->ctx, m->grads, segs, n, k->shallow_scale))) return rc;
  }
  /* groups: 0 shallow replicated, 1 shallow sharded, 2 deep replicated, 3 deep sharded (a
   * tensor-parallel caller sums the sharded ones over its group) */
  n = 0;
  for (int i = 0; i < GY_T_COUNT; i++) {
    size_t s = shallow_len(m, i, k->shallow_layers), total = m->sizes[i];
    int sh = gy_gpt_cuda_tensor_sharded(m, i);
    if (s) segs[n++] = gy_cuda_seg_t{m->offsets[i], s, sh};
    if (total > s) segs[n++] = gy_cuda_seg_t{m->offsets[i] + s, total - s, 2 + sh};
  }
  double g[GY_CUDA_NORM_GROUPS];
  int nf = 0;
  if ((rc = gy_cuda_sq_norms(m->ctx, m->grads, segs, n, g, &nf, o->scratch))) return rc;
  sq->shallow_repl = g[0];
  sq->shallow_shard = g[1];
  sq->deep_repl = g[2];
  sq->deep_shard = g[3];
  sq->nonfinite = nf;
  return 0;
}

extern "C" int gy_adamw_cuda_update(gy_adamw_cuda_t *o, const gy_knobs_t *k, int64_t step,
                                    double shallow_norm, double deep_norm, int nonfinite,
                                    gy_step_stats_t *st) {
  gy_gpt_cuda_t *m = o->model;
  memset(st, 0, sizeof(*st));
  st->shallow = shallow_norm;
  st->deep = deep_norm;
  st->global = sqrt(shallow_norm * shallow_norm + deep_norm * deep_norm);
  st->nonfinite = nonfinite || !isfinite(st->global);
  float lr = gy_sched_lr(&k->sched, step) * k->lr_scale;
  st->lr = lr;
  if (st->nonfinite) return 0; /* a non-finite gradient never reaches the weights */
  float clip = 1.0f;
  if (k->grad_clip > 0 && st->global > k->grad_clip) clip = (float)(k->grad_clip / st->global);
  gy_cuda_seg_t segs[GY_T_COUNT];
  float wd[GY_T_COUNT];
  int n = 0;
  for (int i = 0; i < GY_T_COUNT; i++) {
    if (!m->sizes[i]) continue;
    segs[n] = gy_cuda_seg_t{m->offsets[i], m->sizes[i], 0};
    wd[n++] = gy_gpt_tensor_decayed(i) ? k->weight_decay : 0.0f;
  }
  gy_cuda_adamw_args_t a = {lr, k->beta1, k->beta2, k->eps, clip, step};
  double sq[2];
  int rc = use_device(m);
  if (!rc) rc = snap_fence(m);
  if (rc) return rc;
  rc = gy_cuda_adamw_update(m->ctx, m->params, m->dt == GY_CUDA_BF16 ? m->wc : NULL, m->dt,
                            m->grads, o->m, o->v, segs, wd, n, &a, sq, o->scratch);
  if (rc) return rc;
  st->update_ratio = sq[1] > 0 ? sqrt(sq[0] / sq[1]) : 0.0;
  return 0;
}

extern "C" int gy_adamw_cuda_step(gy_adamw_cuda_t *o, const gy_knobs_t *k, int64_t step,
                                  gy_step_stats_t *st) {
  gy_grad_sq_t sq;
  int rc = gy_adamw_cuda_measure(o, k, &sq);
  if (rc) return rc;
  return gy_adamw_cuda_update(o, k, step, sqrt(sq.shallow_repl + sq.shallow_shard),
                              sqrt(sq.deep_repl + sq.deep_shard), sq.nonfinite, st);
}

/* ---- asynchronous snapshots ---- */

extern "C" int gy_gpt_cuda_snapshot_begin(gy_gpt_cuda_t *m, gy_adamw_cuda_t *o, float *params,
                                          float *mm, float *vv) {
  int rc = use_device(m);
  if (rc) return rc;
  if ((rc = gy_gpt_cuda_snapshot_wait(m))) return rc;
  if (!m->snap_stream) {
    GY_CUDA_TRY(cudaStreamCreateWithFlags(&m->snap_stream, cudaStreamNonBlocking));
    GY_CUDA_TRY(cudaEventCreateWithFlags(&m->snap_start, cudaEventDisableTiming));
    GY_CUDA_TRY(cudaEventCreateWithFlags(&m->snap_done, cudaEventDisableTiming));
  }
  size_t n = m->num_params * 4;
  /* the copies start once everything queued so far (the step's update) is done */
  GY_CUDA_TRY(cudaEventRecord(m->snap_start, m->ctx->stream));
  GY_CUDA_TRY(cudaStreamWaitEvent(m->snap_stream, m->snap_start, 0));
  GY_CUDA_TRY(cudaMemcpyAsync(params, m->params, n, cudaMemcpyDeviceToHost, m->snap_stream));
  if (o && mm && vv) {
    GY_CUDA_TRY(cudaMemcpyAsync(mm, o->m, n, cudaMemcpyDeviceToHost, m->snap_stream));
    GY_CUDA_TRY(cudaMemcpyAsync(vv, o->v, n, cudaMemcpyDeviceToHost, m->snap_stream));
  }
  GY_CUDA_TRY(cudaEventRecord(m->snap_done, m->snap_stream));
  m->snap_pending = 1;
  return 0;
}

extern "C" int gy_gpt_cuda_snapshot_wait(gy_gpt_cuda_t *m) {
  if (!m->snap_pending) return 0;
  m->snap_pending = 0;
  GY_CUDA_TRY(cudaEventSynchronize(m->snap_done));
  return 0;
}
