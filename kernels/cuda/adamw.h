/* adamw: the AdamW update on the GPU, with the run-time knobs of kernels/optim.h (CPU reference:
 * gy_adamw_update): gradients scaled by `clip` (the global-norm clip factor, computed by the
 * caller), bias-corrected moments, epsilon, decoupled weight decay per segment, learning rate
 * already multiplied by lr_scale. Master weights, gradients and moments are float; after the step
 * the bf16 compute copy of the weights (if any) is refreshed. All arrays are device memory. */
#ifndef GY_CUDA_ADAMW_H
#define GY_CUDA_ADAMW_H

#include <stdint.h>

#include "kernels/cuda/norms.h"
#include "kernels/cuda/runtime.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
  float lr; /* learning rate applied (schedule x lr_scale) */
  float beta1, beta2, eps;
  float clip;   /* gradient multiplier (1 when no clipping) */
  int64_t step; /* 0-based: bias correction uses t = step + 1 */
} gy_cuda_adamw_args_t;

/* One step over `nseg` segments of params/grads/m/v (segment `group` is ignored; weight_decay[i]
 * is segment i's decay). compute (dtype, may be NULL) receives the updated weights rounded to
 * dtype (for bf16 compute). If sq (host, 2 doubles) is non-NULL it receives sum(update^2) and
 * sum(param^2) after the step, reduced in a fixed order (the call then waits for them).
 * scratch: gy_cuda_norms_scratch_bytes() bytes. */
int gy_cuda_adamw_update(gy_cuda_ctx_t *ctx, float *params, void *compute, gy_cuda_dtype_t dt,
                         const float *grads, float *m, float *v, const gy_cuda_seg_t *segs,
                         const float *weight_decay, int nseg, const gy_cuda_adamw_args_t *a,
                         double *sq, void *scratch);

#ifdef __cplusplus
}
#endif

#endif
