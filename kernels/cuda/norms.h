/* norms: gradient norms by group, the shallow-group scale and non-finite detection on the GPU,
 * for a flat float buffer described by segments (CPU reference: gy_grad_sq_norms and
 * gy_adamw_measure in kernels/optim.h). Each call costs at most one small device-to-host copy for
 * the whole buffer, never one per tensor. */
#ifndef GY_CUDA_NORMS_H
#define GY_CUDA_NORMS_H

#include "kernels/cuda/runtime.h"

#ifdef __cplusplus
extern "C" {
#endif

#define GY_CUDA_MAX_SEGS 64
#define GY_CUDA_NORM_GROUPS 4

/* A run of `count` floats at `offset` counted in group `group` (0 .. GY_CUDA_NORM_GROUPS-1). */
typedef struct {
  size_t offset, count;
  int group;
} gy_cuda_seg_t;

/* Bytes of device scratch gy_cuda_sq_norms needs. */
size_t gy_cuda_norms_scratch_bytes(void);

/* sq[g] = sum of x^2 over the segments of group g, in double, in a fixed order (reproducible);
 * *nonfinite = 1 if any value is NaN or Inf. sq (GY_CUDA_NORM_GROUPS doubles) and nonfinite are
 * host pointers; the call waits for the result. nseg <= GY_CUDA_MAX_SEGS. */
int gy_cuda_sq_norms(gy_cuda_ctx_t *ctx, const float *x, const gy_cuda_seg_t *segs, int nseg,
                     double *sq, int *nonfinite, void *scratch);

/* x[seg] *= scale for every segment (queued, no wait). */
int gy_cuda_scale_segs(gy_cuda_ctx_t *ctx, float *x, const gy_cuda_seg_t *segs, int nseg,
                       float scale);

/* *nonfinite (host) = 1 if any of the n values of x (dtype) is NaN or Inf; waits for the result.
 * scratch: gy_cuda_norms_scratch_bytes() bytes of device memory. */
int gy_cuda_any_nonfinite(gy_cuda_ctx_t *ctx, gy_cuda_dtype_t dt, const void *x, size_t n,
                          int *nonfinite, void *scratch);

#ifdef __cplusplus
}
#endif

#endif
