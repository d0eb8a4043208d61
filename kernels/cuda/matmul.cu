/*
 * matmul: dense layers through cuBLAS (cublasGemmEx / cublasGemmStridedBatchedEx), the bias add
 * and the bias gradient.
 *
 * API (matmul.h): gy_cuda_gemm, gy_cuda_matmul_forward, gy_cuda_add_bias,
 * gy_cuda_matmul_scratch_floats, gy_cuda_matmul_backward.
 *
 * Row-major products are computed as their column-major transposes (cuBLAS is column-major): a
 * row-major [R, K] matrix is a column-major K x R one. So out[N,OC] = inp @ W^T is, column-major,
 * out^T (OC x N) = W^T-as-stored (op T of the C x OC matrix W) times inp (C x N). Every GEMM uses
 * CUBLAS_COMPUTE_32F (float accumulation, no TF32) and cuBLAS atomics are disabled on the
 * context's handle, so results are reproducible. The bias gradient is a column sum in two fixed
 * stages (chunks of rows, then the chunks in order): no atomics.
 */
#include "kernels/cuda/common.cuh"

extern "C" {
#include "kernels/cuda/matmul.h"
}

/* ---- kernels ------------------------------------------------------------------------------- */

template <typename T> __global__ void add_bias_kernel(T *out, const T *bias, size_t N, int OC) {
  size_t n = N * (size_t)OC;
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
       i += (size_t)gridDim.x * blockDim.x)
    gy_st(out, i, gy_ld(out, i) + gy_ld(bias, i % OC));
}

/* grid (ceil(OC/256), CHUNKS) */
template <typename T>
__global__ void bias_partial_kernel(float *part, const T *dout, int N, int OC) {
  int j = blockIdx.x * blockDim.x + threadIdx.x, k = blockIdx.y;
  if (j >= OC) return;
  int n0 = (int)((long long)N * k / GY_CUDA_BIAS_CHUNKS);
  int n1 = (int)((long long)N * (k + 1) / GY_CUDA_BIAS_CHUNKS);
  float s = 0.0f;
  for (int n = n0; n < n1; n++)
    s += gy_ld(dout, (size_t)n * OC + j);
  part[(size_t)k * OC + j] = s;
}

__global__ void bias_final_kernel(float *dbias, const float *part, int OC) {
  int j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= OC) return;
  float s = 0.0f;
  for (int k = 0; k < GY_CUDA_BIAS_CHUNKS; k++)
    s += part[(size_t)k * OC + j];
  dbias[j] += s;
}

/* ---- launchers ----------------------------------------------------------------------------- */

extern "C" int gy_cuda_gemm(gy_cuda_ctx_t *ctx, gy_cuda_dtype_t dt, int trans_a, int trans_b, int m,
                            int n, int k, float alpha, const void *A, int lda, long long stride_a,
                            const void *B, int ldb, long long stride_b, float beta, void *C,
                            int c_f32, int ldc, long long stride_c, int batch) {
  GY_SHAPE_CHECK(m > 0 && n > 0 && k > 0 && batch > 0);
  cudaDataType_t ab = dt == GY_CUDA_BF16 ? CUDA_R_16BF : CUDA_R_32F;
  cudaDataType_t ct = c_f32 ? CUDA_R_32F : ab;
  cublasOperation_t ta = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  cublasOperation_t tb = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  if (batch == 1) {
    GY_CUBLAS_TRY(cublasGemmEx(ctx->blas, ta, tb, m, n, k, &alpha, A, ab, lda, B, ab, ldb, &beta, C,
                               ct, ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  } else {
    GY_CUBLAS_TRY(cublasGemmStridedBatchedEx(
        ctx->blas, ta, tb, m, n, k, &alpha, A, ab, lda, stride_a, B, ab, ldb, stride_b, &beta, C,
        ct, ldc, stride_c, batch, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  }
  return 0;
}

extern "C" int gy_cuda_matmul_forward(gy_cuda_ctx_t *ctx, gy_cuda_dtype_t dt, void *out,
                                      const void *inp, const void *weight, const void *bias, int N,
                                      int C, int OC) {
  GY_SHAPE_CHECK(N > 0 && C > 0 && OC > 0);
  /* column-major: out^T (OC x N) = op_T(W: C x OC) * inp (C x N) */
  int rc =
      gy_cuda_gemm(ctx, dt, 1, 0, OC, N, C, 1.0f, weight, C, 0, inp, C, 0, 0.0f, out, 0, OC, 0, 1);
  if (rc) return rc;
  return bias ? gy_cuda_add_bias(ctx, dt, out, bias, N, OC) : 0;
}

extern "C" int gy_cuda_add_bias(gy_cuda_ctx_t *ctx, gy_cuda_dtype_t dt, void *out, const void *bias,
                                int N, int OC) {
  GY_SHAPE_CHECK(N > 0 && OC > 0 && out && bias);
  size_t n = (size_t)N * OC;
  unsigned blocks = gy_ceil_div(n, 256);
  if (blocks > 65535u * 16u) blocks = 65535u * 16u;
  GY_DISPATCH_DTYPE(dt, add_bias_kernel<E>
                    <<<blocks, 256, 0, ctx->stream>>>((E *)out, (const E *)bias, (size_t)N, OC));
  GY_LAUNCH_CHECK("add_bias");
  return 0;
}

extern "C" size_t gy_cuda_matmul_scratch_floats(int OC) {
  return (size_t)GY_CUDA_BIAS_CHUNKS * (size_t)OC;
}

extern "C" int gy_cuda_matmul_backward(gy_cuda_ctx_t *ctx, gy_cuda_dtype_t dt, void *dinp,
                                       int accumulate_dinp, float *dweight, float *dbias,
                                       const void *dout, const void *inp, const void *weight, int N,
                                       int C, int OC, float *scratch) {
  GY_SHAPE_CHECK(N > 0 && C > 0 && OC > 0 && (!dbias || scratch));
  int rc;
  /* dinp^T (C x N) = W (C x OC) * dout^T (OC x N) */
  if (dinp && (rc = gy_cuda_gemm(ctx, dt, 0, 0, C, N, OC, 1.0f, weight, C, 0, dout, OC, 0,
                                 accumulate_dinp ? 1.0f : 0.0f, dinp, 0, C, 0, 1)))
    return rc;
  /* dweight^T (C x OC) += inp^T-as-stored (C x N) * op_T(dout^T: OC x N) */
  if ((rc = gy_cuda_gemm(ctx, dt, 0, 1, C, OC, N, 1.0f, inp, C, 0, dout, OC, 0, 1.0f, dweight, 1, C,
                         0, 1)))
    return rc;
  if (dbias) {
    dim3 g(gy_ceil_div((size_t)OC, 256), GY_CUDA_BIAS_CHUNKS);
    GY_DISPATCH_DTYPE(dt, bias_partial_kernel<E>
                      <<<g, 256, 0, ctx->stream>>>(scratch, (const E *)dout, N, OC));
    GY_LAUNCH_CHECK("bias_partial");
    bias_final_kernel<<<gy_ceil_div((size_t)OC, 256), 256, 0, ctx->stream>>>(dbias, scratch, OC);
    GY_LAUNCH_CHECK("bias_final");
  }
  return 0;
}
