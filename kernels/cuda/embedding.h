/* embedding: token + learned position embeddings on the GPU (forward and a deterministic
 * backward). CPU reference: gy_encoder_forward / gy_encoder_backward (kernels/ops_cpu.h).
 * Pointers named d_* or described as device arrays live on the GPU; activations are of the
 * given dtype, gradients float. */
#ifndef GY_CUDA_EMBEDDING_H
#define GY_CUDA_EMBEDDING_H

#include "kernels/cuda/runtime.h"

#ifdef __cplusplus
extern "C" {
#endif

/* out[b,t,:] = wte[inp[b,t],:] + wpe[t,:]; inp is a device int array [B*T] (tokens < Vp),
 * out [B*T, C], wte [Vp, C], wpe [T_max, C] (all dtype). */
int gy_cuda_encoder_forward(gy_cuda_ctx_t *ctx, gy_cuda_dtype_t dt, void *out, const int *inp,
                            const void *wte, const void *wpe, int B, int T, int C);

/* The backward pass sums, for each token, the gradients of the positions holding it. To keep the
 * sum's order fixed (no atomics), the positions are grouped by token on the host first:
 * gy_cuda_encoder_plan fills tokens[nuniq] (the distinct tokens, ascending), starts[nuniq+1]
 * and positions[N] (positions of tokens[u] are positions[starts[u] .. starts[u+1]), ascending).
 * count is caller scratch of V+1 ints. Returns nuniq, or GY_EINVAL for a token outside [0, V). */
int gy_cuda_encoder_plan(const int *inp, int N, int V, int *tokens, int *starts, int *positions,
                         int *count);

/* dwte[tok,:] += sum of dout over the positions of tok; dwpe[t,:] += sum over b of dout[b,t,:].
 * d_tokens, d_starts, d_positions: the plan, uploaded (device). dwte, dwpe: float, device. */
int gy_cuda_encoder_backward(gy_cuda_ctx_t *ctx, gy_cuda_dtype_t dt, float *dwte, float *dwpe,
                             const void *dout, const int *d_tokens, const int *d_starts,
                             const int *d_positions, int nuniq, int B, int T, int C);

#ifdef __cplusplus
}
#endif

#endif
