/* layernorm: LayerNorm over the last dimension on the GPU (epsilon 1e-5, as the CPU reference
 * gy_layernorm_forward / gy_layernorm_backward in kernels/ops_cpu.h). inp/out/weight/bias are
 * dtype; mean, rstd, weight and bias gradients are float. All pointers are device pointers. */
#ifndef GY_CUDA_LAYERNORM_H
#define GY_CUDA_LAYERNORM_H

#include "kernels/cuda/runtime.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Row partition of the weight/bias gradient reduction (fixed, so sums are reproducible). */
#define GY_CUDA_LN_CHUNKS 128

/* out[n,:] = (inp[n,:] - mean) * rstd * weight (+ bias); bias may be NULL. Rows N, width C. */
int gy_cuda_layernorm_forward(gy_cuda_ctx_t *ctx, gy_cuda_dtype_t dt, void *out, float *mean,
                              float *rstd, const void *inp, const void *weight, const void *bias,
                              int N, int C);

/* Floats of scratch gy_cuda_layernorm_backward needs (2 * GY_CUDA_LN_CHUNKS * C). */
size_t gy_cuda_layernorm_scratch_floats(int C);

/* dinp += d(inp); dweight += sum over rows; dbias += sum over rows (dbias may be NULL). */
int gy_cuda_layernorm_backward(gy_cuda_ctx_t *ctx, gy_cuda_dtype_t dt, void *dinp, float *dweight,
                               float *dbias, const void *dout, const void *inp, const void *weight,
                               const float *mean, const float *rstd, int N, int C, float *scratch);

#ifdef __cplusplus
}
#endif

#endif
