/* common.cuh: what every CUDA operator file shares (device side, C++ only).
 *
 * - Checks: GY_CUDA_TRY / GY_CUBLAS_TRY / GY_LAUNCH_CHECK log the failing call with file:line
 *   (gy_log, component "cuda"), keep the text for gy_cuda_last_error() and return a gyro error
 *   code from the enclosing function. Nothing here ever exits the process (CONVENTIONS.md §5):
 *   a worker that hits a CUDA error reports it to the controller.
 * - The context (stream, cuBLAS handle) every launcher takes.
 * - Element access for the two activation types (float, __nv_bfloat16): loads widen to float,
 *   stores round to nearest; all arithmetic is done in float.
 * - Warp and block reductions (warp shuffles; a block is a multiple of 32 threads).
 */
#ifndef GY_CUDA_COMMON_CUH
#define GY_CUDA_COMMON_CUH

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "kernels/cuda/runtime.h"

/* ---- errors ---------------------------------------------------------------------------- */

/* Records and logs a failure of `what` at file:line; returns `code`. */
int gy__cuda_fail(const char *file, int line, int code, const char *what, const char *detail);
/* cudaErrorMemoryAllocation maps to GY_ENOMEM, anything else to GY_EIO. */
int gy__cuda_err_code(cudaError_t e);
const char *gy__cublas_status_name(cublasStatus_t s);

#define GY_CUDA_TRY(call)                                                                          \
  do {                                                                                             \
    cudaError_t gy_e_ = (call);                                                                    \
    if (gy_e_ != cudaSuccess)                                                                      \
      return gy__cuda_fail(__FILE__, __LINE__, gy__cuda_err_code(gy_e_), #call,                    \
                           cudaGetErrorString(gy_e_));                                             \
  } while (0)

#define GY_CUBLAS_TRY(call)                                                                        \
  do {                                                                                             \
    cublasStatus_t gy_s_ = (call);                                                                 \
    if (gy_s_ != CUBLAS_STATUS_SUCCESS)                                                            \
      return gy__cuda_fail(__FILE__, __LINE__,                                                     \
                           gy_s_ == CUBLAS_STATUS_ALLOC_FAILED ? GY_ENOMEM : GY_EIO, #call,        \
                           gy__cublas_status_name(gy_s_));                                         \
  } while (0)

/* After a <<<>>> launch: a bad configuration is reported at once (cudaGetLastError); errors
 * inside the kernel surface at the next synchronising call. */
#define GY_LAUNCH_CHECK(name) GY_CUDA_TRY(cudaGetLastError())

/* Shape assertion in a launcher: a clear GY_EINVAL instead of a wild kernel. */
#define GY_SHAPE_CHECK(cond)                                                                       \
  do {                                                                                             \
    if (!(cond)) return gy__cuda_fail(__FILE__, __LINE__, GY_EINVAL, "shape check", #cond);        \
  } while (0)

/* ---- context ----------------------------------------------------------------------------- */

struct gy_cuda_ctx {
  int device;
  cudaStream_t stream; /* owned */
  cublasHandle_t blas; /* owned, bound to stream */
  void *workspace;     /* cuBLAS workspace, owned */
  size_t workspace_bytes;
};

/* ---- element access ------------------------------------------------------------------------ */

__device__ __forceinline__ float gy_ld(const float *p, size_t i) {
  return p[i];
}
__device__ __forceinline__ float gy_ld(const __nv_bfloat16 *p, size_t i) {
  return __bfloat162float(p[i]);
}
__device__ __forceinline__ void gy_st(float *p, size_t i, float x) {
  p[i] = x;
}
__device__ __forceinline__ void gy_st(__nv_bfloat16 *p, size_t i, float x) {
  p[i] = __float2bfloat16_rn(x);
}

/* ---- reductions ---------------------------------------------------------------------------- */

__device__ __forceinline__ float gy_warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1)
    v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ double gy_warp_sum_d(double v) {
  for (int o = 16; o > 0; o >>= 1)
    v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float gy_warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1)
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

/* Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the result.
 * `shared` holds 32 floats. The order of the additions is fixed, so the result is reproducible. */
__device__ __forceinline__ float gy_block_sum(float v, float *shared) {
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  v = gy_warp_sum(v);
  __syncthreads(); /* shared may still be read by a previous call */
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  v = lane < nwarps ? shared[lane] : 0.0f;
  return gy_warp_sum(v);
}
__device__ __forceinline__ float gy_block_max(float v, float *shared) {
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  v = gy_warp_max(v);
  __syncthreads();
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  v = lane < nwarps ? shared[lane] : -INFINITY;
  return gy_warp_max(v);
}
__device__ __forceinline__ double gy_block_sum_d(double v, double *shared) {
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  v = gy_warp_sum_d(v);
  __syncthreads();
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  v = lane < nwarps ? shared[lane] : 0.0;
  return gy_warp_sum_d(v);
}

static inline unsigned gy_ceil_div(size_t a, size_t b) {
  return (unsigned)((a + b - 1) / b);
}

/* Runs the statements given with `E` bound to the element type of dtype (float or __nv_bfloat16).
 */
#define GY_DISPATCH_DTYPE(dtype, ...)                                                              \
  do {                                                                                             \
    if ((dtype) == GY_CUDA_BF16) {                                                                 \
      typedef __nv_bfloat16 E;                                                                     \
      __VA_ARGS__;                                                                                 \
    } else {                                                                                       \
      typedef float E;                                                                             \
      __VA_ARGS__;                                                                                 \
    }                                                                                              \
  } while (0)

#endif
