/*
 * norms: segmented sums of squares (by group), segment scaling, non-finite detection.
 *
 * API (norms.h): gy_cuda_norms_scratch_bytes, gy_cuda_sq_norms, gy_cuda_scale_segs,
 * gy_cuda_any_nonfinite.
 *
 * One launch covers every segment: grid (NORM_BLOCKS, nseg), each block strides through its
 * segment, sums squares in double and reduces them in a fixed order into its own slot; a second,
 * single-thread kernel adds the slots in slot order into per-group totals and ORs the non-finite
 * flags. No atomics, so the norms are reproducible; the host reads GY_CUDA_NORM_GROUPS doubles and
 * one int per call. The segment table travels as a kernel argument (by value).
 */
#include "kernels/cuda/common.cuh"

extern "C" {
#include "kernels/cuda/norms.h"
}

#define NORM_BLOCKS 128
#define NORM_THREADS 256

typedef struct {
  gy_cuda_seg_t s[GY_CUDA_MAX_SEGS];
  int n;
} seg_table_t;

/* scratch layout: partial sums [MAX_SEGS * NORM_BLOCKS] doubles, flags [same] ints, result
 * [GROUPS] doubles + 1 int */
#define SLOTS ((size_t)GY_CUDA_MAX_SEGS * NORM_BLOCKS)

/* ---- kernels ------------------------------------------------------------------------------- */

__global__ void sq_partial_kernel(const float *x, seg_table_t segs, double *part, int *flags) {
  __shared__ double red[32];
  __shared__ int bad_any;
  const gy_cuda_seg_t sg = segs.s[blockIdx.y];
  if (threadIdx.x == 0) bad_any = 0;
  __syncthreads();
  double s = 0.0;
  int bad = 0;
  const float *p = x + sg.offset;
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < sg.count;
       i += (size_t)gridDim.x * blockDim.x) {
    float g = p[i];
    if (!isfinite(g)) bad = 1;
    s += (double)g * (double)g;
  }
  if (bad) bad_any = 1; /* benign race: every writer stores 1 */
  s = gy_block_sum_d(s, red);
  if (threadIdx.x == 0) {
    size_t slot = (size_t)blockIdx.y * gridDim.x + blockIdx.x;
    part[slot] = s;
    flags[slot] = bad_any;
  }
}

__global__ void sq_final_kernel(const double *part, const int *flags, seg_table_t segs, int nblk,
                                double *out, int *nonfinite) {
  if (threadIdx.x != 0 || blockIdx.x != 0) return;
  double g[GY_CUDA_NORM_GROUPS] = {0, 0, 0, 0};
  int bad = 0;
  for (int k = 0; k < segs.n; k++) {
    for (int b = 0; b < nblk; b++) {
      g[segs.s[k].group] += part[(size_t)k * nblk + b];
      bad |= flags[(size_t)k * nblk + b];
    }
  }
  for (int i = 0; i < GY_CUDA_NORM_GROUPS; i++)
    out[i] = g[i];
  *nonfinite = bad;
}

__global__ void scale_kernel(float *x, seg_table_t segs, float scale) {
  const gy_cuda_seg_t sg = segs.s[blockIdx.y];
  float *p = x + sg.offset;
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < sg.count;
       i += (size_t)gridDim.x * blockDim.x)
    p[i] *= scale;
}

template <typename T> __global__ void nonfinite_kernel(const T *x, size_t n, int *flags) {
  __shared__ int bad_any;
  if (threadIdx.x == 0) bad_any = 0;
  __syncthreads();
  int bad = 0;
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
       i += (size_t)gridDim.x * blockDim.x)
    if (!isfinite(gy_ld(x, i))) bad = 1;
  if (bad) bad_any = 1;
  __syncthreads();
  if (threadIdx.x == 0) flags[blockIdx.x] = bad_any;
}

__global__ void flags_or_kernel(const int *flags, int n, int *out) {
  if (threadIdx.x != 0 || blockIdx.x != 0) return;
  int bad = 0;
  for (int i = 0; i < n; i++)
    bad |= flags[i];
  *out = bad;
}

/* ---- launchers ----------------------------------------------------------------------------- */

extern "C" size_t gy_cuda_norms_scratch_bytes(void) {
  /* also what adamw.cu uses: two double slots per block, and a little for the results */
  return 2 * SLOTS * sizeof(double) + SLOTS * sizeof(int) + 512;
}

static int make_table(seg_table_t *t, const gy_cuda_seg_t *segs, int nseg) {
  if (nseg < 0 || nseg > GY_CUDA_MAX_SEGS) return GY_EINVAL;
  memset(t, 0, sizeof(*t));
  for (int i = 0; i < nseg; i++) {
    if (segs[i].group < 0 || segs[i].group >= GY_CUDA_NORM_GROUPS) return GY_EINVAL;
    t->s[i] = segs[i];
  }
  t->n = nseg;
  return 0;
}

extern "C" int gy_cuda_sq_norms(gy_cuda_ctx_t *ctx, const float *x, const gy_cuda_seg_t *segs,
                                int nseg, double *sq, int *nonfinite, void *scratch) {
  seg_table_t t;
  GY_SHAPE_CHECK(make_table(&t, segs, nseg) == 0 && scratch);
  double *part = (double *)scratch;
  int *flags = (int *)(part + SLOTS);
  double *out = (double *)((char *)scratch + ((SLOTS * (sizeof(double) + sizeof(int)) + 7) & ~7));
  int *nf = (int *)(out + GY_CUDA_NORM_GROUPS);
  for (int i = 0; i < GY_CUDA_NORM_GROUPS; i++)
    sq[i] = 0.0;
  *nonfinite = 0;
  if (nseg == 0) return 0;
  dim3 g(NORM_BLOCKS, (unsigned)nseg);
  sq_partial_kernel<<<g, NORM_THREADS, 0, ctx->stream>>>(x, t, part, flags);
  GY_LAUNCH_CHECK("sq_partial");
  sq_final_kernel<<<1, 32, 0, ctx->stream>>>(part, flags, t, NORM_BLOCKS, out, nf);
  GY_LAUNCH_CHECK("sq_final");
  struct {
    double sq[GY_CUDA_NORM_GROUPS];
    int nf;
  } host;
  /* out and nf are adjacent: one copy */
  GY_CUDA_TRY(cudaMemcpyAsync(&host, out, GY_CUDA_NORM_GROUPS * sizeof(double) + sizeof(int),
                              cudaMemcpyDeviceToHost, ctx->stream));
  GY_CUDA_TRY(cudaStreamSynchronize(ctx->stream));
  for (int i = 0; i < GY_CUDA_NORM_GROUPS; i++)
    sq[i] = host.sq[i];
  *nonfinite = host.nf != 0;
  return 0;
}

extern "C" int gy_cuda_scale_segs(gy_cuda_ctx_t *ctx, float *x, const gy_cuda_seg_t *segs, int nseg,
                                  float scale) {
  seg_table_t t;
  GY_SHAPE_CHECK(make_table(&t, segs, nseg) == 0);
  if (nseg == 0) return 0;
  dim3 g(NORM_BLOCKS, (unsigned)nseg);
  scale_kernel<<<g, NORM_THREADS, 0, ctx->stream>>>(x, t, scale);
  GY_LAUNCH_CHECK("scale_segs");
  return 0;
}

extern "C" int gy_cuda_any_nonfinite(gy_cuda_ctx_t *ctx, gy_cuda_dtype_t dt, const void *x,
                                     size_t n, int *nonfinite, void *scratch) {
  GY_SHAPE_CHECK(scratch);
  *nonfinite = 0;
  if (!n) return 0;
  int *flags = (int *)scratch, *out = flags + NORM_BLOCKS;
  GY_DISPATCH_DTYPE(dt, nonfinite_kernel<E>
                    <<<NORM_BLOCKS, NORM_THREADS, 0, ctx->stream>>>((const E *)x, n, flags));
  GY_LAUNCH_CHECK("nonfinite");
  flags_or_kernel<<<1, 32, 0, ctx->stream>>>(flags, NORM_BLOCKS, out);
  GY_LAUNCH_CHECK("flags_or");
  int h = 0;
  GY_CUDA_TRY(cudaMemcpyAsync(&h, out, sizeof(int), cudaMemcpyDeviceToHost, ctx->stream));
  GY_CUDA_TRY(cudaStreamSynchronize(ctx->stream));
  *nonfinite = h != 0;
  return 0;
}
