/* matmul: dense layers on the GPU through cuBLAS (row-major, as the CPU reference
 * gy_matmul_forward / gy_matmul_backward in kernels/ops_cpu.h):
 *   out[N,OC] = inp[N,C] @ W[OC,C]^T + bias[OC].
 * inp, W, bias, out, dout and dinp are dtype; the weight and bias gradients are float (cuBLAS
 * writes float results from bf16 inputs, accumulating in float). Products accumulate in float in
 * both modes; fp32 mode does not use TF32. All pointers are device pointers. */
#ifndef GY_CUDA_MATMUL_H
#define GY_CUDA_MATMUL_H

#include "kernels/cuda/runtime.h"

#ifdef __cplusplus
extern "C" {
#endif

#define GY_CUDA_BIAS_CHUNKS 128

/* bias may be NULL. */
int gy_cuda_matmul_forward(gy_cuda_ctx_t *ctx, gy_cuda_dtype_t dt, void *out, const void *inp,
                           const void *weight, const void *bias, int N, int C, int OC);

/* out[N,OC] += bias[OC] on every row (dtype), queued on the stream: the bias of a row-parallel
 * layer, added after its partial sums are summed over the tensor-parallel group. */
int gy_cuda_add_bias(gy_cuda_ctx_t *ctx, gy_cuda_dtype_t dt, void *out, const void *bias, int N,
                     int OC);

/* Floats of scratch the bias gradient needs (GY_CUDA_BIAS_CHUNKS * OC). */
size_t gy_cuda_matmul_scratch_floats(int OC);

/* dinp (+)= dout @ W (skipped when dinp is NULL; accumulate_dinp 0 overwrites it, 1 adds);
 * dweight += dout^T @ inp; dbias += column sums of dout (dbias may be NULL). */
int gy_cuda_matmul_backward(gy_cuda_ctx_t *ctx, gy_cuda_dtype_t dt, void *dinp, int accumulate_dinp,
                            float *dweight, float *dbias, const void *dout, const void *inp,
                            const void *weight, int N, int C, int OC, float *scratch);

/* Column-major GEMM, C = alpha op(A) op(B) + beta C, with A and B of dtype, C of dtype or float
 * (c_f32), float accumulation; batched with element strides when batch > 1. The building block of
 * the dense layers and of attention. trans_a/trans_b: 0 or 1. */
int gy_cuda_gemm(gy_cuda_ctx_t *ctx, gy_cuda_dtype_t dt, int trans_a, int trans_b, int m, int n,
                 int k, float alpha, const void *A, int lda, long long stride_a, const void *B,
                 int ldb, long long stride_b, float beta, void *C, int c_f32, int ldc,
                 long long stride_c, int batch);

#ifdef __cplusplus
}
#endif

#endif
