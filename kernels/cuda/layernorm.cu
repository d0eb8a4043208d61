/*
 * layernorm: LayerNorm forward and backward.
 *
 * API (layernorm.h): gy_cuda_layernorm_forward, gy_cuda_layernorm_scratch_floats,
 * gy_cuda_layernorm_backward.
 *
 * Forward: one warp per row, two passes (mean, then variance of the centred values) like the CPU
 * reference, in float. Backward: one warp per row for the input gradient; the weight and bias
 * gradients are column sums done in two fixed stages (GY_CUDA_LN_CHUNKS row chunks, one thread
 * per (chunk, column); then the chunks added in order), so no atomics and a reproducible result.
 */
#include "kernels/cuda/common.cuh"

extern "C" {
#include "kernels/cuda/layernorm.h"
}

/* ---- kernels ------------------------------------------------------------------------------- */

/* block of 256 threads = 8 warps = 8 rows */
template <typename T>
__global__ void layernorm_forward_kernel(T *out, float *mean, float *rstd, const T *inp,
                                         const T *weight, const T *bias, int N, int C) {
  int lane = threadIdx.x & 31;
  int n = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (n >= N) return;
  const T *x = inp + (size_t)n * C;
  float s = 0.0f;
  for (int c = lane; c < C; c += 32)
    s += gy_ld(x, c);
  float m = gy_warp_sum(s) / C;
  float v = 0.0f;
  for (int c = lane; c < C; c += 32) {
    float d = gy_ld(x, c) - m;
    v += d * d;
  }
  v = gy_warp_sum(v) / C;
  float r = 1.0f / sqrtf(v + 1e-5f);
  T *o = out + (size_t)n * C;
  for (int c = lane; c < C; c += 32) {
    float y = (gy_ld(x, c) - m) * r * gy_ld(weight, c);
    if (bias) y += gy_ld(bias, c);
    gy_st(o, c, y);
  }
  if (lane == 0) {
    mean[n] = m;
    rstd[n] = r;
  }
}

/* input gradient: one warp per row */
template <typename T>
__global__ void layernorm_backward_dinp_kernel(T *dinp, const T *dout, const T *inp,
                                               const T *weight, const float *mean,
                                               const float *rstd, int N, int C) {
  int lane = threadIdx.x & 31;
  int n = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (n >= N) return;
  const T *x = inp + (size_t)n * C, *dy = dout + (size_t)n * C;
  T *dx = dinp + (size_t)n * C;
  float m = mean[n], s = rstd[n];
  float dmean = 0.0f, dnormmean = 0.0f;
  for (int c = lane; c < C; c += 32) {
    float norm = (gy_ld(x, c) - m) * s;
    float dn = gy_ld(weight, c) * gy_ld(dy, c);
    dmean += dn;
    dnormmean += dn * norm;
  }
  dmean = gy_warp_sum(dmean) / C;
  dnormmean = gy_warp_sum(dnormmean) / C;
  for (int c = lane; c < C; c += 32) {
    float norm = (gy_ld(x, c) - m) * s;
    float dn = gy_ld(weight, c) * gy_ld(dy, c);
    gy_st(dx, c, gy_ld(dx, c) + (dn - dmean - norm * dnormmean) * s);
  }
}

/* grid (ceil(C/256), CHUNKS): partial column sums of norm * dy and dy over one row chunk */
template <typename T>
__global__ void layernorm_backward_partial_kernel(float *pw, float *pb, const T *dout, const T *inp,
                                                  const float *mean, const float *rstd, int N,
                                                  int C) {
  int c = blockIdx.x * blockDim.x + threadIdx.x, k = blockIdx.y;
  if (c >= C) return;
  int n0 = (int)((long long)N * k / GY_CUDA_LN_CHUNKS);
  int n1 = (int)((long long)N * (k + 1) / GY_CUDA_LN_CHUNKS);
  float w = 0.0f, b = 0.0f;
  for (int n = n0; n < n1; n++) {
    float dy = gy_ld(dout, (size_t)n * C + c);
    float norm = (gy_ld(inp, (size_t)n * C + c) - mean[n]) * rstd[n];
    w += norm * dy;
    b += dy;
  }
  pw[(size_t)k * C + c] = w;
  pb[(size_t)k * C + c] = b;
}

__global__ void layernorm_backward_final_kernel(float *dweight, float *dbias, const float *pw,
                                                const float *pb, int C) {
  int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  float w = 0.0f, b = 0.0f;
  for (int k = 0; k < GY_CUDA_LN_CHUNKS; k++) {
    w += pw[(size_t)k * C + c];
    b += pb[(size_t)k * C + c];
  }
  dweight[c] += w;
  if (dbias) dbias[c] += b;
}

/* ---- launchers ----------------------------------------------------------------------------- */

extern "C" int gy_cuda_layernorm_forward(gy_cuda_ctx_t *ctx, gy_cuda_dtype_t dt, void *out,
                                         float *mean, float *rstd, const void *inp,
                                         const void *weight, const void *bias, int N, int C) {
  GY_SHAPE_CHECK(N > 0 && C > 0);
  unsigned blocks = gy_ceil_div((size_t)N, 8);
  GY_DISPATCH_DTYPE(dt, layernorm_forward_kernel<E>
                    <<<blocks, 256, 0, ctx->stream>>>((E *)out, mean, rstd, (const E *)inp,
                                                      (const E *)weight, (const E *)bias, N, C));
  GY_LAUNCH_CHECK("layernorm_forward");
  return 0;
}

extern "C" size_t gy_cuda_layernorm_scratch_floats(int C) {
  return 2 * (size_t)GY_CUDA_LN_CHUNKS * (size_t)C;
}

extern "C" int gy_cuda_layernorm_backward(gy_cuda_ctx_t *ctx, gy_cuda_dtype_t dt, void *dinp,
                                          float *dweight, float *dbias, const void *dout,
                                          const void *inp, const void *weight, const float *mean,
                                          const float *rstd, int N, int C, float *scratch) {
  GY_SHAPE_CHECK(N > 0 && C > 0 && scratch);
  unsigned rows = gy_ceil_div((size_t)N, 8);
  GY_DISPATCH_DTYPE(dt, layernorm_backward_dinp_kernel<E>
                    <<<rows, 256, 0, ctx->stream>>>((E *)dinp, (const E *)dout, (const E *)inp,
                                                    (const E *)weight, mean, rstd, N, C));
  GY_LAUNCH_CHECK("layernorm_backward_dinp");
  float *pw = scratch, *pb = scratch + (size_t)GY_CUDA_LN_CHUNKS * C;
  dim3 g(gy_ceil_div((size_t)C, 256), GY_CUDA_LN_CHUNKS);
  GY_DISPATCH_DTYPE(dt, layernorm_backward_partial_kernel<E><<<g, 256, 0, ctx->stream>>>(
                            pw, pb, (const E *)dout, (const E *)inp, mean, rstd, N, C));
  GY_LAUNCH_CHECK("layernorm_backward_partial");
  layernorm_backward_final_kernel<<<gy_ceil_div((size_t)C, 256), 256, 0, ctx->stream>>>(
      dweight, dbias, pw, pb, C);
  GY_LAUNCH_CHECK("layernorm_backward_final");
  return 0;
}
