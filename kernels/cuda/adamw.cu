/*
 * adamw: one fused AdamW step over a segmented parameter buffer.
 *
 * API (adamw.h): gy_cuda_adamw_update.
 *
 * One launch: grid (ADAM_BLOCKS, nseg); each thread updates its elements with the CPU reference's
 * float formulas (same order of operations; nvcc may contract a*b+c into an FMA, which is why the
 * test allows a small relative tolerance), writes the compute copy, and sums update^2 and param^2
 * in double. Per-block sums land in fixed slots; a single-thread kernel adds them in order. The
 * bias corrections are computed on the host in double exactly as the CPU does.
 */
#include <math.h>

#include "kernels/cuda/common.cuh"

extern "C" {
#include "kernels/cuda/adamw.h"
}

#define ADAM_BLOCKS 128
#define ADAM_THREADS 256

typedef struct {
  size_t offset[GY_CUDA_MAX_SEGS], count[GY_CUDA_MAX_SEGS];
  float wd[GY_CUDA_MAX_SEGS];
  int n;
} adam_table_t;

/* ---- kernels ------------------------------------------------------------------------------- */

template <typename T>
__global__ void adamw_kernel(float *params, T *compute, const float *grads, float *mm, float *vv,
                             adam_table_t tab, float lr, float b1, float b2, float bc1, float bc2,
                             float eps, float clip, double *part_u, double *part_p) {
  __shared__ double red[32];
  int sgi = blockIdx.y;
  size_t off = tab.offset[sgi], n = tab.count[sgi];
  float wd = tab.wd[sgi];
  double us = 0.0, ps = 0.0;
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
       i += (size_t)gridDim.x * blockDim.x) {
    size_t j = off + i;
    float p = params[j];
    float g = grads[j] * clip;
    float m = b1 * mm[j] + (1.0f - b1) * g;
    float v = b2 * vv[j] + (1.0f - b2) * g * g;
    mm[j] = m;
    vv[j] = v;
    float mhat = m / bc1, vhat = v / bc2;
    float upd = lr * (mhat / (sqrtf(vhat) + eps) + wd * p);
    p -= upd;
    params[j] = p;
    if (compute) gy_st(compute, j, p);
    us += (double)upd * upd;
    ps += (double)p * p;
  }
  if (!part_u) return; /* uniform across the block: no thread skips a barrier alone */
  us = gy_block_sum_d(us, red);
  ps = gy_block_sum_d(ps, red);
  if (threadIdx.x == 0) {
    size_t slot = (size_t)sgi * gridDim.x + blockIdx.x;
    part_u[slot] = us;
    part_p[slot] = ps;
  }
}

__global__ void adamw_final_kernel(const double *part_u, const double *part_p, size_t nslots,
                                   double *out) {
  if (threadIdx.x != 0 || blockIdx.x != 0) return;
  double u = 0.0, p = 0.0;
  for (size_t i = 0; i < nslots; i++) {
    u += part_u[i];
    p += part_p[i];
  }
  out[0] = u;
  out[1] = p;
}

/* ---- launchers ----------------------------------------------------------------------------- */

extern "C" int gy_cuda_adamw_update(gy_cuda_ctx_t *ctx, float *params, void *compute,
                                    gy_cuda_dtype_t dt, const float *grads, float *m, float *v,
                                    const gy_cuda_seg_t *segs, const float *weight_decay, int nseg,
                                    const gy_cuda_adamw_args_t *a, double *sq, void *scratch) {
  GY_SHAPE_CHECK(nseg >= 0 && nseg <= GY_CUDA_MAX_SEGS && (!sq || scratch));
  if (sq) sq[0] = sq[1] = 0.0;
  if (nseg == 0) return 0;
  adam_table_t tab;
  memset(&tab, 0, sizeof(tab));
  for (int i = 0; i < nseg; i++) {
    tab.offset[i] = segs[i].offset;
    tab.count[i] = segs[i].count;
    tab.wd[i] = weight_decay[i];
  }
  tab.n = nseg;
  double t = (double)a->step + 1.0;
  float bc1 = (float)(1.0 - pow(a->beta1, t)), bc2 = (float)(1.0 - pow(a->beta2, t));
  /* scratch: part_u [MAX_SEGS*BLOCKS], part_p [same], out [2] */
  size_t slots = (size_t)GY_CUDA_MAX_SEGS * ADAM_BLOCKS;
  double *part_u = sq ? (double *)scratch : NULL;
  double *part_p = sq ? part_u + slots : NULL;
  double *out = sq ? part_p + slots : NULL;
  dim3 g(ADAM_BLOCKS, (unsigned)nseg);
  if (dt == GY_CUDA_BF16) {
    adamw_kernel<__nv_bfloat16><<<g, ADAM_THREADS, 0, ctx->stream>>>(
        params, (__nv_bfloat16 *)compute, grads, m, v, tab, a->lr, a->beta1, a->beta2, bc1, bc2,
        a->eps, a->clip, part_u, part_p);
  } else {
    /* in float mode the compute weights are the master weights: nothing to copy */
    adamw_kernel<float><<<g, ADAM_THREADS, 0, ctx->stream>>>(params, NULL, grads, m, v, tab, a->lr,
                                                             a->beta1, a->beta2, bc1, bc2, a->eps,
                                                             a->clip, part_u, part_p);
  }
  GY_LAUNCH_CHECK("adamw");
  if (!sq) return 0;
  adamw_final_kernel<<<1, 32, 0, ctx->stream>>>(part_u, part_p, (size_t)nseg * ADAM_BLOCKS, out);
  GY_LAUNCH_CHECK("adamw_final");
  double h[2];
  GY_CUDA_TRY(cudaMemcpyAsync(h, out, sizeof(h), cudaMemcpyDeviceToHost, ctx->stream));
  GY_CUDA_TRY(cudaStreamSynchronize(ctx->stream));
  sq[0] = h[0];
  sq[1] = h[1];
  return 0;
}
