/* ops_cpu: the CPU reference operators of the GPT model (BLAS for matrix products, OpenMP for
 * the rest). Every reduction runs over a fixed partition of the rows, so results are bitwise
 * reproducible for a fixed thread count. Backward operators accumulate (+=) into gradients. */
#ifndef GY_OPS_CPU_H
#define GY_OPS_CPU_H

#include <stddef.h>
#include <stdint.h>

/* ---- embeddings ---- */
void gy_encoder_forward(float *out, const int *inp, const float *wte, const float *wpe, int B,
                        int T, int C);
void gy_encoder_backward(float *dwte, float *dwpe, const float *dout, const int *inp, int B, int T,
                         int C);

/* ---- LayerNorm over the last dimension (bias may be NULL) ---- */
void gy_layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                          const float *weight, const float *bias, int N, int C);
/* scratch: at least 2 * GY_OPS_CHUNKS * C floats. dbias may be NULL. */
void gy_layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                           const float *inp, const float *weight, const float *mean,
                           const float *rstd, int N, int C, float *scratch);

/* ---- dense layers: out[N,OC] = inp[N,C] @ W[OC,C]^T + bias ---- */
void gy_matmul_forward(float *out, const float *inp, const float *weight, const float *bias, int N,
                       int C, int OC);
/* dinp += dout @ W; dweight += dout^T @ inp; dbias += column sums of dout (scratch: at least
 * GY_OPS_CHUNKS * OC floats; dbias may be NULL). */
void gy_matmul_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                        const float *inp, const float *weight, int N, int C, int OC,
                        float *scratch);

/* ---- causal self-attention ----
 * qkv [B,T,3C] -> q,k,v [B,NH,T,hs] (q and k optionally LayerNorm-ed per head with weights
 * qnw/knw [hs]); att [B,NH,T,T] softmax probabilities; out [B,T,C]. */
typedef struct {
  float *q, *k, *v;     /* [B,NH,T,hs] after qk-norm */
  float *qraw, *kraw;   /* [B,NH,T,hs] before qk-norm (only with qk-norm) */
  float *qmean, *qrstd; /* [B*NH*T] (only with qk-norm) */
  float *kmean, *krstd;
  float *att; /* [B,NH,T,T] */
} gy_attn_acts_t;

void gy_attention_forward(float *out, gy_attn_acts_t *a, const float *qkv, const float *qnw,
                          const float *knw, int B, int T, int C, int NH);
/* dqkv is overwritten; dqnw/dknw accumulate (qk-norm only). scratch: at least
 * 3*B*NH*T*hs + omp_max_threads * (T*T) + 2*GY_OPS_CHUNKS*hs floats. */
void gy_attention_backward(float *dqkv, float *dqnw, float *dknw, const float *dout,
                           const gy_attn_acts_t *a, const float *qnw, const float *knw, int B,
                           int T, int C, int NH, float *scratch);
size_t gy_attention_scratch_floats(int B, int T, int C, int NH);

/* ---- GELU (tanh approximation) ---- */
void gy_gelu_forward(float *out, const float *inp, size_t n);
/* dinp = dout * gelu'(inp) (overwrites) */
void gy_gelu_backward(float *dinp, const float *inp, const float *dout, size_t n);

/* ---- elementwise ---- */
void gy_residual_forward(float *out, const float *a, const float *b, size_t n);

/* ---- classifier: logits [N,Vp] -> per-token cross-entropy, z-loss, and dlogits ----
 * Columns >= V are padding: ignored by the softmax, zero gradient. Returns the sum over rows
 * of (CE + z_loss * logZ^2). With targets == NULL, only losses are skipped (returns 0).
 * If dlogits != NULL it receives d(mean loss)/dlogits with mean over `denom` tokens.
 * keep (may be NULL: every row counts) masks the gradient per sample: it holds one flag per T
 * consecutive rows, and the dlogits rows of a sample whose flag is 0 are exactly zero (denom is
 * the caller's: the number of kept tokens). Token losses and the returned sum cover every row,
 * kept or not. */
double gy_crossentropy_forward(float *token_losses, float *dlogits, const float *logits,
                               const int *targets, int N, int V, int Vp, float z_loss, float denom,
                               const uint8_t *keep, int T);

#define GY_OPS_CHUNKS 16

#endif
