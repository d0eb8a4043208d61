/* attention: causal multi-head self-attention on the GPU, as the CPU reference
 * gy_attention_forward / gy_attention_backward (kernels/ops_cpu.h): qkv [B,T,3C] -> per-head
 * q, k, v [B,NH,T,hs] (q and k optionally LayerNorm-ed per head, no bias, weights qnw/knw [hs]),
 * probabilities att [B,NH,T,T] = causal softmax(q k^T / sqrt(hs)), out [B,T,C] = att v.
 * The products are cuBLAS strided-batched GEMMs (one batch entry per (b, head)); the softmax and
 * its backward are warp-per-row kernels. Activations are dtype, norm statistics and weight
 * gradients float; everything on the device. */
#ifndef GY_CUDA_ATTENTION_H
#define GY_CUDA_ATTENTION_H

#include "kernels/cuda/runtime.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
  void *q, *k, *v;      /* [B,NH,T,hs] (after qk-norm) */
  void *qraw, *kraw;    /* [B,NH,T,hs] before qk-norm (qk-norm only, else NULL) */
  float *qmean, *qrstd; /* [B*NH*T] (qk-norm only) */
  float *kmean, *krstd;
  void *att; /* [B,NH,T,T] */
} gy_cuda_attn_acts_t;

/* Bytes of scratch forward and backward need (one buffer serves both). */
size_t gy_cuda_attention_scratch_bytes(gy_cuda_dtype_t dt, int B, int T, int C, int NH,
                                       int qk_norm);

/* qnw/knw (dtype, [hs]) are NULL without qk-norm. */
int gy_cuda_attention_forward(gy_cuda_ctx_t *ctx, gy_cuda_dtype_t dt, void *out,
                              const gy_cuda_attn_acts_t *a, const void *qkv, const void *qnw,
                              const void *knw, int B, int T, int C, int NH, void *scratch);

/* dqkv [B,T,3C] is overwritten; dqnw/dknw (float [hs]) accumulate (qk-norm only). */
int gy_cuda_attention_backward(gy_cuda_ctx_t *ctx, gy_cuda_dtype_t dt, void *dqkv, float *dqnw,
                               float *dknw, const void *dout, const gy_cuda_attn_acts_t *a,
                               const void *qnw, const void *knw, int B, int T, int C, int NH,
                               void *scratch);

#ifdef __cplusplus
}
#endif

#endif
