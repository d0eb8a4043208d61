/*
 * classifier: fused softmax + cross-entropy + z-loss + logits gradient.
 *
 * API (classifier.h): gy_cuda_classifier, gy_cuda_argmax.
 *
 * One block of 512 threads per row. Pass 1: row max over the real vocabulary; pass 2: sum of
 * exp(x - max) (float, block reduction in a fixed order); pass 3 (optional): the gradient written
 * over the logits. The target's logit is read before the first reduction, and both reductions end
 * in __syncthreads, so no thread overwrites a value another thread still has to read.
 */
#include "kernels/cuda/common.cuh"

extern "C" {
#include "kernels/cuda/classifier.h"
}

#define CLS_THREADS 512

/* ---- kernels ------------------------------------------------------------------------------- */

template <typename T>
__global__ void classifier_kernel(T *logits, float *token_losses, float *row_losses,
                                  const int *targets, int V, int Vp, float z_loss, float inv_denom,
                                  int write_dlogits, const uint8_t *keep, int seq_len) {
  __shared__ float red[32];
  size_t n = blockIdx.x;
  T *x = logits + n * Vp;
  int tgt = targets[n];
  float xt = gy_ld(x, tgt);
  float mx = -INFINITY;
  for (int j = threadIdx.x; j < V; j += blockDim.x)
    mx = fmaxf(mx, gy_ld(x, j));
  mx = gy_block_max(mx, red);
  float s = 0.0f;
  for (int j = threadIdx.x; j < V; j += blockDim.x)
    s += expf(gy_ld(x, j) - mx);
  s = gy_block_sum(s, red);
  float logz = mx + logf(s);
  if (threadIdx.x == 0) {
    float ce = logz - xt;
    token_losses[n] = ce;
    if (row_losses) row_losses[n] = ce + z_loss * logz * logz;
  }
  if (!write_dlogits) return;
  /* A masked sample's row is written as plain zeros rather than scaled by a zero weight, so it
   * is exactly zero even if its logits are not finite. */
  int kept = !keep || keep[n / seq_len];
  float zf = 1.0f + 2.0f * z_loss * logz;
  for (int j = threadIdx.x; j < Vp; j += blockDim.x) {
    float d = 0.0f;
    if (kept && j < V) {
      float p = expf(gy_ld(x, j) - logz);
      d = (p * zf - (j == tgt ? 1.0f : 0.0f)) * inv_denom;
    }
    gy_st(x, j, d);
  }
}

/* One block per row: each thread keeps the first best of its strided columns, then a block
 * reduction in shared memory keeps the larger value, the smaller index on a tie, so the result
 * is the first maximum, as the CPU loop `if (row[v] > row[best]) best = v` finds it. */
template <typename T> __global__ void argmax_kernel(const T *logits, int *out, int V, int Vp) {
  __shared__ float sv[CLS_THREADS];
  __shared__ int si[CLS_THREADS];
  const T *x = logits + (size_t)blockIdx.x * Vp;
  float best = -INFINITY;
  int bi = V; /* none yet */
  for (int j = threadIdx.x; j < V; j += blockDim.x) {
    float v = gy_ld(x, j);
    if (v > best || (bi == V && v == best)) { /* NaN compares false: never taken */
      best = v;
      bi = j;
    }
  }
  sv[threadIdx.x] = best;
  si[threadIdx.x] = bi;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) {
      float ov = sv[threadIdx.x + s];
      int oi = si[threadIdx.x + s];
      float mv = sv[threadIdx.x];
      int mi = si[threadIdx.x];
      if (oi < V && (mi == V || ov > mv || (ov == mv && oi < mi))) {
        sv[threadIdx.x] = ov;
        si[threadIdx.x] = oi;
      }
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) out[blockIdx.x] = si[0] < V ? si[0] : 0; /* all NaN: 0, as the CPU */
}

/* ---- launchers ----------------------------------------------------------------------------- */

extern "C" int gy_cuda_classifier(gy_cuda_ctx_t *ctx, gy_cuda_dtype_t dt, void *logits,
                                  float *token_losses, float *row_losses, const int *targets, int N,
                                  int V, int Vp, float z_loss, float denom, int write_dlogits,
                                  const uint8_t *keep, int T) {
  GY_SHAPE_CHECK(N > 0 && V > 0 && Vp >= V && denom > 0 && (!keep || T > 0));
  float inv = 1.0f / denom;
  GY_DISPATCH_DTYPE(dt, classifier_kernel<E><<<(unsigned)N, CLS_THREADS, 0, ctx->stream>>>(
                            (E *)logits, token_losses, row_losses, targets, V, Vp, z_loss, inv,
                            write_dlogits, keep, T));
  GY_LAUNCH_CHECK("classifier");
  return 0;
}

extern "C" int gy_cuda_argmax(gy_cuda_ctx_t *ctx, gy_cuda_dtype_t dt, const void *logits, int *out,
                              int N, int V, int Vp) {
  GY_SHAPE_CHECK(N > 0 && V > 0 && Vp >= V);
  GY_DISPATCH_DTYPE(dt, argmax_kernel<E>
                    <<<(unsigned)N, CLS_THREADS, 0, ctx->stream>>>((const E *)logits, out, V, Vp));
  GY_LAUNCH_CHECK("argmax");
  return 0;
}
