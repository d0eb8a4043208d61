/* gelu: the elementwise operators of the GPT block on the GPU — GELU (GPT-2 tanh approximation,
 * written as x * sigmoid(2u) exactly as the CPU reference gy_gelu_forward / gy_gelu_backward) and
 * the residual add (gy_residual_forward). All arrays are dtype, on the device. */
#ifndef GY_CUDA_GELU_H
#define GY_CUDA_GELU_H

#include "kernels/cuda/runtime.h"

#ifdef __cplusplus
extern "C" {
#endif

int gy_cuda_gelu_forward(gy_cuda_ctx_t *ctx, gy_cuda_dtype_t dt, void *out, const void *inp,
                         size_t n);
/* dinp = dout * gelu'(inp) (overwrites; dinp may be dout). */
int gy_cuda_gelu_backward(gy_cuda_ctx_t *ctx, gy_cuda_dtype_t dt, void *dinp, const void *inp,
                          const void *dout, size_t n);
/* out = a + b (out may be a or b). */
int gy_cuda_residual_forward(gy_cuda_ctx_t *ctx, gy_cuda_dtype_t dt, void *out, const void *a,
                             const void *b, size_t n);

#ifdef __cplusplus
}
#endif

#endif
