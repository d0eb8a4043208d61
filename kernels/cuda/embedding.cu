/*
 * embedding: encoder forward (token + position embedding) and its deterministic backward.
 *
 * API (embedding.h): gy_cuda_encoder_forward, gy_cuda_encoder_plan (host), and
 * gy_cuda_encoder_backward.
 *
 * Invariants: no atomics. The position-embedding gradient is one thread per (t, c) summing over
 * b in order; the token-embedding gradient is one thread per (distinct token, c) summing that
 * token's positions in ascending order (the host-built plan), so a step is reproducible.
 */
#include "kernels/cuda/common.cuh"

extern "C" {
#include "kernels/cuda/embedding.h"
}

/* ---- kernels ------------------------------------------------------------------------------- */

template <typename T>
__global__ void encoder_forward_kernel(T *out, const int *inp, const T *wte, const T *wpe, int B,
                                       int T_, int C) {
  size_t n = (size_t)B * T_ * C;
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
       i += (size_t)gridDim.x * blockDim.x) {
    size_t bt = i / C;
    int c = (int)(i % C), t = (int)(bt % T_);
    float x = gy_ld(wte, (size_t)inp[bt] * C + c) + gy_ld(wpe, (size_t)t * C + c);
    gy_st(out, i, x);
  }
}

/* grid (T, ceil(C/256)): thread (t, c) sums dout[b, t, c] over b. */
template <typename T>
__global__ void wpe_backward_kernel(float *dwpe, const T *dout, int B, int T_, int C) {
  int c = blockIdx.y * blockDim.x + threadIdx.x, t = blockIdx.x;
  if (c >= C) return;
  float s = 0.0f;
  for (int b = 0; b < B; b++)
    s += gy_ld(dout, ((size_t)b * T_ + t) * C + c);
  dwpe[(size_t)t * C + c] += s;
}

/* grid (nuniq, ceil(C/256)): thread (u, c) sums dout over the positions of token tokens[u]. */
template <typename T>
__global__ void wte_backward_kernel(float *dwte, const T *dout, const int *tokens,
                                    const int *starts, const int *positions, int C) {
  int c = blockIdx.y * blockDim.x + threadIdx.x, u = blockIdx.x;
  if (c >= C) return;
  float s = 0.0f;
  for (int i = starts[u]; i < starts[u + 1]; i++)
    s += gy_ld(dout, (size_t)positions[i] * C + c);
  dwte[(size_t)tokens[u] * C + c] += s;
}

/* ---- launchers ----------------------------------------------------------------------------- */

extern "C" int gy_cuda_encoder_forward(gy_cuda_ctx_t *ctx, gy_cuda_dtype_t dt, void *out,
                                       const int *inp, const void *wte, const void *wpe, int B,
                                       int T, int C) {
  GY_SHAPE_CHECK(B > 0 && T > 0 && C > 0);
  size_t n = (size_t)B * T * C;
  unsigned blocks = gy_ceil_div(n, 256);
  if (blocks > 65535u * 16u) blocks = 65535u * 16u;
  GY_DISPATCH_DTYPE(dt, encoder_forward_kernel<E><<<blocks, 256, 0, ctx->stream>>>(
                            (E *)out, inp, (const E *)wte, (const E *)wpe, B, T, C));
  GY_LAUNCH_CHECK("encoder_forward");
  return 0;
}

extern "C" int gy_cuda_encoder_plan(const int *inp, int N, int V, int *tokens, int *starts,
                                    int *positions, int *count) {
  for (int i = 0; i < N; i++)
    if (inp[i] < 0 || inp[i] >= V) return GY_EINVAL;
  for (int v = 0; v <= V; v++)
    count[v] = 0;
  for (int i = 0; i < N; i++)
    count[inp[i] + 1]++;
  for (int v = 0; v < V; v++) /* count[v] becomes the first slot of token v */
    count[v + 1] += count[v];
  int nuniq = 0;
  for (int v = 0; v < V; v++) {
    if (count[v + 1] == count[v]) continue;
    tokens[nuniq] = v;
    starts[nuniq] = count[v];
    nuniq++;
  }
  starts[nuniq] = N;
  for (int i = 0; i < N; i++) /* ascending i: positions of a token stay in order */
    positions[count[inp[i]]++] = i;
  return nuniq;
}

extern "C" int gy_cuda_encoder_backward(gy_cuda_ctx_t *ctx, gy_cuda_dtype_t dt, float *dwte,
                                        float *dwpe, const void *dout, const int *d_tokens,
                                        const int *d_starts, const int *d_positions, int nuniq,
                                        int B, int T, int C) {
  GY_SHAPE_CHECK(B > 0 && T > 0 && C > 0 && nuniq >= 0 && nuniq <= B * T);
  GY_SHAPE_CHECK(C <= 65535 * 256);
  dim3 gp((unsigned)T, gy_ceil_div((size_t)C, 256));
  GY_DISPATCH_DTYPE(dt, wpe_backward_kernel<E>
                    <<<gp, 256, 0, ctx->stream>>>(dwpe, (const E *)dout, B, T, C));
  GY_LAUNCH_CHECK("wpe_backward");
  if (nuniq > 0) {
    dim3 gt((unsigned)nuniq, gy_ceil_div((size_t)C, 256));
    GY_DISPATCH_DTYPE(dt, wte_backward_kernel<E><<<gt, 256, 0, ctx->stream>>>(
                              dwte, (const E *)dout, d_tokens, d_starts, d_positions, C));
    GY_LAUNCH_CHECK("wte_backward");
  }
  return 0;
}
