/*
 * attention: causal multi-head self-attention from cuBLAS batched GEMMs and softmax kernels.
 *
 * API (attention.h): gy_cuda_attention_scratch_bytes, gy_cuda_attention_forward,
 * gy_cuda_attention_backward.
 *
 * Forward: permute qkv into q, k, v; optional per-head LayerNorm of q and k; S = scale q k^T
 * (GEMM, scale in alpha, as the CPU reference); causal softmax in place (S becomes att); y = att v
 * into scratch; permute y back to [B,T,C]. Backward mirrors it: dO permuted; dP = dO v^T;
 * dv = att^T dO; dS = att * (dP - rowsum(att * dP)) * scale in place; dq = dS k; dk = dS^T q;
 * qk-norm backward; permute into dqkv.
 *
 * GEMMs (row-major math in column-major cuBLAS; per (b, head) matrices are contiguous T x hs or
 * T x T blocks, so one strided-batched call covers all B*NH of them):
 *   S^T = op_T(k) q          -> gemm(T, N, m=T,  n=T, k=hs, A=k, B=q)
 *   y^T = v att^T            -> gemm(N, N, m=hs, n=T, k=T,  A=v, B=att)
 *   dP^T = op_T(v) dO        -> gemm(T, N, m=T,  n=T, k=hs, A=v, B=dO)
 *   dv^T = dO op_T(att)      -> gemm(N, T, m=hs, n=T, k=T,  A=dO, B=att)
 *   dq^T = k dS^T            -> gemm(N, N, m=hs, n=T, k=T,  A=k, B=dS)
 *   dk^T = q op_T(dS^T)      -> gemm(N, T, m=hs, n=T, k=T,  A=q, B=dS)
 * Entries above the diagonal are written as zeros, so the full-square GEMMs need no masking.
 */
#include "kernels/cuda/common.cuh"

extern "C" {
#include "kernels/cuda/attention.h"
#include "kernels/cuda/layernorm.h"
#include "kernels/cuda/matmul.h"
}

/* ---- kernels ------------------------------------------------------------------------------- */

/* qkv [B,T,3,NH,hs] -> q, k, v [B,NH,T,hs]; one thread per element of q. */
template <typename T>
__global__ void permute_kernel(T *q, T *k, T *v, const T *qkv, int B, int T_, int NH, int hs) {
  size_t n = (size_t)B * NH * T_ * hs;
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
       i += (size_t)gridDim.x * blockDim.x) {
    int d = (int)(i % hs);
    size_t r = i / hs;
    int t = (int)(r % T_);
    r /= T_;
    int h = (int)(r % NH), b = (int)(r / NH);
    size_t C = (size_t)NH * hs;
    size_t src = ((size_t)b * T_ + t) * 3 * C + (size_t)h * hs + d;
    q[i] = qkv[src];
    k[i] = qkv[src + C];
    v[i] = qkv[src + 2 * C];
  }
}

/* the inverse: dq, dk, dv [B,NH,T,hs] -> dqkv [B,T,3C] */
template <typename T>
__global__ void permute_back_kernel(T *dqkv, const T *dq, const T *dk, const T *dv, int B, int T_,
                                    int NH, int hs) {
  size_t n = (size_t)B * NH * T_ * hs;
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
       i += (size_t)gridDim.x * blockDim.x) {
    int d = (int)(i % hs);
    size_t r = i / hs;
    int t = (int)(r % T_);
    r /= T_;
    int h = (int)(r % NH), b = (int)(r / NH);
    size_t C = (size_t)NH * hs;
    size_t dst = ((size_t)b * T_ + t) * 3 * C + (size_t)h * hs + d;
    dqkv[dst] = dq[i];
    dqkv[dst + C] = dk[i];
    dqkv[dst + 2 * C] = dv[i];
  }
}

/* y [B,NH,T,hs] <-> out [B,T,C]; to_bthc 1: y -> out, 0: out -> y */
template <typename T>
__global__ void heads_kernel(T *y, T *out, int B, int T_, int NH, int hs, int to_bthc) {
  size_t n = (size_t)B * NH * T_ * hs;
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
       i += (size_t)gridDim.x * blockDim.x) {
    int d = (int)(i % hs);
    size_t r = i / hs;
    int t = (int)(r % T_);
    r /= T_;
    int h = (int)(r % NH), b = (int)(r / NH);
    size_t o = ((size_t)b * T_ + t) * NH * hs + (size_t)h * hs + d;
    if (to_bthc)
      out[o] = y[i];
    else
      y[i] = out[o];
  }
}

/* Causal softmax in place over rows of [rows, T] (row r is query t = r % T): one warp per row.
 * Each lane reads and writes only its own columns, and the writes come after both reductions. */
template <typename T> __global__ void softmax_forward_kernel(T *att, size_t rows, int T_) {
  int lane = threadIdx.x & 31;
  size_t r = (size_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (r >= rows) return;
  int t = (int)(r % T_);
  T *x = att + r * T_;
  float mx = -INFINITY;
  for (int j = lane; j <= t; j += 32)
    mx = fmaxf(mx, gy_ld(x, j));
  mx = gy_warp_max(mx);
  float sum = 0.0f;
  for (int j = lane; j <= t; j += 32)
    sum += expf(gy_ld(x, j) - mx);
  sum = gy_warp_sum(sum);
  float inv = 1.0f / sum;
  for (int j = lane; j < T_; j += 32)
    gy_st(x, j, j <= t ? expf(gy_ld(x, j) - mx) * inv : 0.0f);
}

/* dS = P * (dP - sum_j P dP) * scale, in place on dP; zeros above the diagonal. */
template <typename T>
__global__ void softmax_backward_kernel(T *dp, const T *att, size_t rows, int T_, float scale) {
  int lane = threadIdx.x & 31;
  size_t r = (size_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (r >= rows) return;
  int t = (int)(r % T_);
  const T *p = att + r * T_;
  T *d = dp + r * T_;
  float dot = 0.0f;
  for (int j = lane; j <= t; j += 32)
    dot += gy_ld(p, j) * gy_ld(d, j);
  dot = gy_warp_sum(dot);
  for (int j = lane; j < T_; j += 32)
    gy_st(d, j, j <= t ? gy_ld(p, j) * (gy_ld(d, j) - dot) * scale : 0.0f);
}

/* ---- launchers ----------------------------------------------------------------------------- */

static unsigned blocks_for(size_t n) {
  unsigned b = gy_ceil_div(n ? n : 1, 256);
  return b > 65535u * 16u ? 65535u * 16u : b;
}

static size_t align256(size_t x) {
  return (x + 255) & ~(size_t)255;
}

/* Scratch layout (bytes): 6 arrays of [B,NH,T,hs] (y or dO, dq, dk, dv, dqraw, dkraw), one
 * [B,NH,T,T] (dP), then the qk-norm LayerNorm backward scratch (floats). */
extern "C" size_t gy_cuda_attention_scratch_bytes(gy_cuda_dtype_t dt, int B, int T, int C, int NH,
                                                  int qk_norm) {
  size_t es = gy_cuda_dtype_size(dt), bnt = (size_t)B * T * C;
  size_t bytes = (qk_norm ? 6 : 4) * align256(bnt * es);
  bytes += align256((size_t)B * NH * T * T * es);
  if (qk_norm) bytes += align256(gy_cuda_layernorm_scratch_floats(C / NH) * 4);
  return bytes;
}

extern "C" int gy_cuda_attention_forward(gy_cuda_ctx_t *ctx, gy_cuda_dtype_t dt, void *out,
                                         const gy_cuda_attn_acts_t *a, const void *qkv,
                                         const void *qnw, const void *knw, int B, int T, int C,
                                         int NH, void *scratch) {
  GY_SHAPE_CHECK(B > 0 && T > 0 && NH > 0 && C % NH == 0 && scratch);
  int hs = C / NH, qk_norm = qnw != NULL, rc;
  GY_SHAPE_CHECK(!qk_norm || (knw && a->qraw && a->kraw && a->qmean && a->kmean));
  size_t bnt = (size_t)B * NH * T * hs, rows = (size_t)B * NH * T;
  void *y = scratch; /* [B,NH,T,hs] */
  GY_DISPATCH_DTYPE(dt, permute_kernel<E><<<blocks_for(bnt), 256, 0, ctx->stream>>>(
                            (E *)(qk_norm ? a->qraw : a->q), (E *)(qk_norm ? a->kraw : a->k),
                            (E *)a->v, (const E *)qkv, B, T, NH, hs));
  GY_LAUNCH_CHECK("attention_permute");
  if (qk_norm) {
    if ((rc = gy_cuda_layernorm_forward(ctx, dt, a->q, a->qmean, a->qrstd, a->qraw, qnw, NULL,
                                        (int)rows, hs)))
      return rc;
    if ((rc = gy_cuda_layernorm_forward(ctx, dt, a->k, a->kmean, a->krstd, a->kraw, knw, NULL,
                                        (int)rows, hs)))
      return rc;
  }
  float scale = 1.0f / sqrtf((float)hs);
  long long sq = (long long)T * hs, ss = (long long)T * T;
  if ((rc = gy_cuda_gemm(ctx, dt, 1, 0, T, T, hs, scale, a->k, hs, sq, a->q, hs, sq, 0.0f, a->att,
                         0, T, ss, B * NH)))
    return rc;
  GY_DISPATCH_DTYPE(dt, softmax_forward_kernel<E>
                    <<<gy_ceil_div(rows, 8), 256, 0, ctx->stream>>>((E *)a->att, rows, T));
  GY_LAUNCH_CHECK("softmax_forward");
  if ((rc = gy_cuda_gemm(ctx, dt, 0, 0, hs, T, T, 1.0f, a->v, hs, sq, a->att, T, ss, 0.0f, y, 0, hs,
                         sq, B * NH)))
    return rc;
  GY_DISPATCH_DTYPE(dt, heads_kernel<E>
                    <<<blocks_for(bnt), 256, 0, ctx->stream>>>((E *)y, (E *)out, B, T, NH, hs, 1));
  GY_LAUNCH_CHECK("attention_unpermute");
  return 0;
}

extern "C" int gy_cuda_attention_backward(gy_cuda_ctx_t *ctx, gy_cuda_dtype_t dt, void *dqkv,
                                          float *dqnw, float *dknw, const void *dout,
                                          const gy_cuda_attn_acts_t *a, const void *qnw,
                                          const void *knw, int B, int T, int C, int NH,
                                          void *scratch) {
  GY_SHAPE_CHECK(B > 0 && T > 0 && NH > 0 && C % NH == 0 && scratch);
  int hs = C / NH, qk_norm = qnw != NULL, rc;
  GY_SHAPE_CHECK(!qk_norm || (knw && dqnw && dknw));
  size_t es = gy_cuda_dtype_size(dt);
  size_t bnt = (size_t)B * NH * T * hs, rows = (size_t)B * NH * T;
  char *s = (char *)scratch;
  void *dO = s;
  void *dq = s + align256(bnt * es);
  void *dk = s + 2 * align256(bnt * es);
  void *dv = s + 3 * align256(bnt * es);
  char *rest = s + 4 * align256(bnt * es);
  void *dqraw = NULL, *dkraw = NULL;
  if (qk_norm) {
    dqraw = rest;
    dkraw = rest + align256(bnt * es);
    rest += 2 * align256(bnt * es);
  }
  void *dp = rest;
  float *lnscratch = (float *)(rest + align256(rows * T * es));

  GY_DISPATCH_DTYPE(dt, heads_kernel<E><<<blocks_for(bnt), 256, 0, ctx->stream>>>(
                            (E *)dO, (E *)dout, B, T, NH, hs, 0));
  GY_LAUNCH_CHECK("attention_dout_permute");
  long long sq = (long long)T * hs, ss = (long long)T * T;
  float scale = 1.0f / sqrtf((float)hs);
  if ((rc = gy_cuda_gemm(ctx, dt, 1, 0, T, T, hs, 1.0f, a->v, hs, sq, dO, hs, sq, 0.0f, dp, 0, T,
                         ss, B * NH)))
    return rc;
  if ((rc = gy_cuda_gemm(ctx, dt, 0, 1, hs, T, T, 1.0f, dO, hs, sq, a->att, T, ss, 0.0f, dv, 0, hs,
                         sq, B * NH)))
    return rc;
  GY_DISPATCH_DTYPE(dt, softmax_backward_kernel<E><<<gy_ceil_div(rows, 8), 256, 0, ctx->stream>>>(
                            (E *)dp, (const E *)a->att, rows, T, scale));
  GY_LAUNCH_CHECK("softmax_backward");
  if ((rc = gy_cuda_gemm(ctx, dt, 0, 0, hs, T, T, 1.0f, a->k, hs, sq, dp, T, ss, 0.0f, dq, 0, hs,
                         sq, B * NH)))
    return rc;
  if ((rc = gy_cuda_gemm(ctx, dt, 0, 1, hs, T, T, 1.0f, a->q, hs, sq, dp, T, ss, 0.0f, dk, 0, hs,
                         sq, B * NH)))
    return rc;
  const void *dqsrc = dq, *dksrc = dk;
  if (qk_norm) {
    if ((rc = gy_cuda_memset0(ctx, dqraw, bnt * es)) ||
        (rc = gy_cuda_memset0(ctx, dkraw, bnt * es)))
      return rc;
    if ((rc = gy_cuda_layernorm_backward(ctx, dt, dqraw, dqnw, NULL, dq, a->qraw, qnw, a->qmean,
                                         a->qrstd, (int)rows, hs, lnscratch)))
      return rc;
    if ((rc = gy_cuda_layernorm_backward(ctx, dt, dkraw, dknw, NULL, dk, a->kraw, knw, a->kmean,
                                         a->krstd, (int)rows, hs, lnscratch)))
      return rc;
    dqsrc = dqraw;
    dksrc = dkraw;
  }
  GY_DISPATCH_DTYPE(
      dt, permute_back_kernel<E><<<blocks_for(bnt), 256, 0, ctx->stream>>>(
              (E *)dqkv, (const E *)dqsrc, (const E *)dksrc, (const E *)dv, B, T, NH, hs));
  GY_LAUNCH_CHECK("attention_permute_back");
  return 0;
}
