/*
 * gelu: GELU forward/backward and the residual add, grid-stride elementwise kernels.
 *
 * API (gelu.h): gy_cuda_gelu_forward, gy_cuda_gelu_backward, gy_cuda_residual_forward.
 *
 * The math is the CPU reference's, in float, with expf (the build has no fast-math); each element
 * is read before it is written by the same thread, so in-place calls are safe.
 */
#include "kernels/cuda/common.cuh"

extern "C" {
#include "kernels/cuda/gelu.h"
}

#define GELU_S 0.7978845608028654f /* sqrt(2/pi) */

/* ---- kernels ------------------------------------------------------------------------------- */

template <typename T> __global__ void gelu_forward_kernel(T *out, const T *inp, size_t n) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
       i += (size_t)gridDim.x * blockDim.x) {
    float x = gy_ld(inp, i);
    float u = GELU_S * (x + 0.044715f * x * x * x);
    gy_st(out, i, x / (1.0f + expf(-2.0f * u)));
  }
}

template <typename T>
__global__ void gelu_backward_kernel(T *dinp, const T *inp, const T *dout, size_t n) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
       i += (size_t)gridDim.x * blockDim.x) {
    float x = gy_ld(inp, i);
    float u = GELU_S * (x + 0.044715f * x * x * x);
    float s = 1.0f / (1.0f + expf(-2.0f * u));
    float du = GELU_S * (1.0f + 3.0f * 0.044715f * x * x);
    float g = s + x * s * (1.0f - s) * 2.0f * du;
    gy_st(dinp, i, g * gy_ld(dout, i));
  }
}

template <typename T> __global__ void residual_kernel(T *out, const T *a, const T *b, size_t n) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
       i += (size_t)gridDim.x * blockDim.x)
    gy_st(out, i, gy_ld(a, i) + gy_ld(b, i));
}

/* ---- launchers ----------------------------------------------------------------------------- */

static unsigned blocks_for(size_t n) {
  unsigned b = gy_ceil_div(n ? n : 1, 256);
  return b > 65535u * 16u ? 65535u * 16u : b;
}

extern "C" int gy_cuda_gelu_forward(gy_cuda_ctx_t *ctx, gy_cuda_dtype_t dt, void *out,
                                    const void *inp, size_t n) {
  if (!n) return 0;
  GY_DISPATCH_DTYPE(dt, gelu_forward_kernel<E>
                    <<<blocks_for(n), 256, 0, ctx->stream>>>((E *)out, (const E *)inp, n));
  GY_LAUNCH_CHECK("gelu_forward");
  return 0;
}

extern "C" int gy_cuda_gelu_backward(gy_cuda_ctx_t *ctx, gy_cuda_dtype_t dt, void *dinp,
                                     const void *inp, const void *dout, size_t n) {
  if (!n) return 0;
  GY_DISPATCH_DTYPE(dt, gelu_backward_kernel<E><<<blocks_for(n), 256, 0, ctx->stream>>>(
                            (E *)dinp, (const E *)inp, (const E *)dout, n));
  GY_LAUNCH_CHECK("gelu_backward");
  return 0;
}

extern "C" int gy_cuda_residual_forward(gy_cuda_ctx_t *ctx, gy_cuda_dtype_t dt, void *out,
                                        const void *a, const void *b, size_t n) {
  if (!n) return 0;
  GY_DISPATCH_DTYPE(dt, residual_kernel<E><<<blocks_for(n), 256, 0, ctx->stream>>>(
                            (E *)out, (const E *)a, (const E *)b, n));
  GY_LAUNCH_CHECK("residual");
  return 0;
}
