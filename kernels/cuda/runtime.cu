/*
 * runtime: device discovery, memory, copies and the execution context of gyro's CUDA kernels,
 * plus the error plumbing of common.cuh.
 *
 * API (runtime.h): dtype helpers, gy_cuda_device_count / device_info, gy_cuda_last_error,
 * ctx create/destroy/stream/sync, malloc/free/memset0, upload/download (raw and float<->dtype),
 * convert_f32.
 *
 * Invariants: every CUDA or cuBLAS failure goes through gy__cuda_fail, which logs it with
 * file:line and keeps the text in a thread-local buffer; no function exits. A context owns its
 * stream, its cuBLAS handle and the handle's workspace, and the handle always runs on that
 * stream, so all work of one context is ordered.
 */
#include <stdio.h>
#include <string.h>

#include "kernels/cuda/common.cuh"

extern "C" {
#include "common/log.h"
}

static thread_local char last_error[512];

int gy__cuda_fail(const char *file, int line, int code, const char *what, const char *detail) {
  const char *base = strrchr(file, '/');
  snprintf(last_error, sizeof(last_error), "%s:%d: %s: %s", base ? base + 1 : file, line, what,
           detail);
  gy_log(GY_LOG_ERROR, "cuda", "%s", last_error);
  return code;
}

int gy__cuda_err_code(cudaError_t e) {
  return e == cudaErrorMemoryAllocation ? GY_ENOMEM : GY_EIO;
}

const char *gy__cublas_status_name(cublasStatus_t s) {
  switch (s) {
  case CUBLAS_STATUS_SUCCESS:
    return "CUBLAS_STATUS_SUCCESS";
  case CUBLAS_STATUS_NOT_INITIALIZED:
    return "CUBLAS_STATUS_NOT_INITIALIZED";
  case CUBLAS_STATUS_ALLOC_FAILED:
    return "CUBLAS_STATUS_ALLOC_FAILED";
  case CUBLAS_STATUS_INVALID_VALUE:
    return "CUBLAS_STATUS_INVALID_VALUE";
  case CUBLAS_STATUS_ARCH_MISMATCH:
    return "CUBLAS_STATUS_ARCH_MISMATCH";
  case CUBLAS_STATUS_MAPPING_ERROR:
    return "CUBLAS_STATUS_MAPPING_ERROR";
  case CUBLAS_STATUS_EXECUTION_FAILED:
    return "CUBLAS_STATUS_EXECUTION_FAILED";
  case CUBLAS_STATUS_INTERNAL_ERROR:
    return "CUBLAS_STATUS_INTERNAL_ERROR";
  case CUBLAS_STATUS_NOT_SUPPORTED:
    return "CUBLAS_STATUS_NOT_SUPPORTED";
  default:
    return "cuBLAS error";
  }
}

extern "C" const char *gy_cuda_last_error(void) {
  return last_error;
}

extern "C" size_t gy_cuda_dtype_size(gy_cuda_dtype_t dtype) {
  return dtype == GY_CUDA_BF16 ? 2 : 4;
}

extern "C" const char *gy_cuda_dtype_name(gy_cuda_dtype_t dtype) {
  return dtype == GY_CUDA_BF16 ? "bf16" : "f32";
}

extern "C" int gy_cuda_device_count(void) {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError(); /* clear the sticky "no driver / no device" status */
    return 0;
  }
  return n;
}

extern "C" int gy_cuda_device_info(int dev, char *name, size_t namelen, size_t *total_mem,
                                   int *sm_count) {
  cudaDeviceProp p;
  GY_CUDA_TRY(cudaGetDeviceProperties(&p, dev));
  if (name && namelen) snprintf(name, namelen, "%s", p.name);
  if (total_mem) *total_mem = p.totalGlobalMem;
  if (sm_count) *sm_count = p.multiProcessorCount;
  return 0;
}

/* ---- context ------------------------------------------------------------------------------ */

extern "C" int gy_cuda_ctx_create(gy_cuda_ctx_t **out, int device) {
  *out = NULL;
  gy_cuda_ctx_t *c = (gy_cuda_ctx_t *)calloc(1, sizeof(*c));
  if (!c) return GY_ENOMEM;
  int rc = 0;
  c->device = device;
  c->workspace_bytes = 32u << 20; /* cuBLAS recommends 32 MiB on Hopper */
  cudaError_t e = cudaSetDevice(device);
  if (e == cudaSuccess) e = cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking);
  if (e == cudaSuccess) e = cudaMalloc(&c->workspace, c->workspace_bytes);
  if (e != cudaSuccess) {
    rc = gy__cuda_fail(__FILE__, __LINE__, gy__cuda_err_code(e), "context setup",
                       cudaGetErrorString(e));
    goto err;
  }
  {
    cublasStatus_t s = cublasCreate(&c->blas);
    if (s == CUBLAS_STATUS_SUCCESS) s = cublasSetStream(c->blas, c->stream);
    if (s == CUBLAS_STATUS_SUCCESS)
      s = cublasSetWorkspace(c->blas, c->workspace, c->workspace_bytes);
    /* Fixed reduction orders only: no atomics inside cuBLAS, so a step is reproducible. */
    if (s == CUBLAS_STATUS_SUCCESS) s = cublasSetAtomicsMode(c->blas, CUBLAS_ATOMICS_NOT_ALLOWED);
    if (s != CUBLAS_STATUS_SUCCESS) {
      rc = gy__cuda_fail(__FILE__, __LINE__, GY_EIO, "cuBLAS setup", gy__cublas_status_name(s));
      goto err;
    }
  }
  *out = c;
  return 0;
err:
  gy_cuda_ctx_destroy(c);
  return rc;
}

extern "C" void gy_cuda_ctx_destroy(gy_cuda_ctx_t *c) {
  if (!c) return;
  if (c->stream) cudaStreamSynchronize(c->stream);
  if (c->blas) cublasDestroy(c->blas);
  if (c->workspace) cudaFree(c->workspace);
  if (c->stream) cudaStreamDestroy(c->stream);
  free(c);
}

extern "C" void *gy_cuda_ctx_stream(gy_cuda_ctx_t *ctx) {
  return (void *)ctx->stream;
}

extern "C" int gy_cuda_sync(gy_cuda_ctx_t *ctx) {
  GY_CUDA_TRY(cudaStreamSynchronize(ctx->stream));
  return 0;
}

/* ---- memory --------------------------------------------------------------------------------- */

extern "C" int gy_cuda_malloc(void **ptr, size_t bytes) {
  *ptr = NULL;
  GY_CUDA_TRY(cudaMalloc(ptr, bytes ? bytes : 1));
  return 0;
}

extern "C" void gy_cuda_free(void *ptr) {
  if (ptr) cudaFree(ptr);
}

extern "C" int gy_cuda_memset0(gy_cuda_ctx_t *ctx, void *dptr, size_t bytes) {
  if (!bytes) return 0;
  GY_CUDA_TRY(cudaMemsetAsync(dptr, 0, bytes, ctx->stream));
  return 0;
}

extern "C" int gy_cuda_upload(gy_cuda_ctx_t *ctx, void *dst, const void *src, size_t bytes) {
  if (!bytes) return 0;
  GY_CUDA_TRY(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, ctx->stream));
  GY_CUDA_TRY(cudaStreamSynchronize(ctx->stream));
  return 0;
}

extern "C" int gy_cuda_download(gy_cuda_ctx_t *ctx, void *dst, const void *src, size_t bytes) {
  if (!bytes) return 0;
  GY_CUDA_TRY(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, ctx->stream));
  GY_CUDA_TRY(cudaStreamSynchronize(ctx->stream));
  return 0;
}

extern "C" int gy_cuda_pin(void *p, size_t bytes) {
  if (!p || !bytes) return GY_EINVAL;
  GY_CUDA_TRY(cudaHostRegister(p, bytes, cudaHostRegisterDefault));
  return 0;
}

extern "C" void gy_cuda_unpin(void *p) {
  if (p) cudaHostUnregister(p);
}

/* ---- conversions ---------------------------------------------------------------------------- */

/* ---- kernels ---- */

template <typename D, typename S> __global__ void convert_kernel(D *dst, const S *src, size_t n) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
       i += (size_t)gridDim.x * blockDim.x)
    gy_st(dst, i, gy_ld(src, i));
}

/* ---- launchers ---- */

template <typename D, typename S>
static int convert(gy_cuda_ctx_t *ctx, D *dst, const S *src, size_t n) {
  if (!n) return 0;
  unsigned blocks = gy_ceil_div(n, 256);
  if (blocks > 65535u * 8u) blocks = 65535u * 8u;
  convert_kernel<D, S><<<blocks, 256, 0, ctx->stream>>>(dst, src, n);
  GY_LAUNCH_CHECK("convert");
  return 0;
}

extern "C" int gy_cuda_convert_f32(gy_cuda_ctx_t *ctx, void *dst, gy_cuda_dtype_t dtype,
                                   const float *src, size_t n) {
  if (dtype == GY_CUDA_F32) {
    if (n && dst != (const void *)src)
      GY_CUDA_TRY(cudaMemcpyAsync(dst, src, n * 4, cudaMemcpyDeviceToDevice, ctx->stream));
    return 0;
  }
  return convert(ctx, (__nv_bfloat16 *)dst, src, n);
}

extern "C" int gy_cuda_upload_f32(gy_cuda_ctx_t *ctx, void *dst, gy_cuda_dtype_t dtype,
                                  const float *src, size_t n) {
  if (dtype == GY_CUDA_F32) return gy_cuda_upload(ctx, dst, src, n * 4);
  float *tmp = NULL;
  int rc = gy_cuda_malloc((void **)&tmp, n * 4);
  if (!rc) rc = gy_cuda_upload(ctx, tmp, src, n * 4);
  if (!rc) rc = convert(ctx, (__nv_bfloat16 *)dst, tmp, n);
  if (!rc) rc = gy_cuda_sync(ctx);
  gy_cuda_free(tmp);
  return rc;
}

extern "C" int gy_cuda_download_f32(gy_cuda_ctx_t *ctx, float *dst, const void *src,
                                    gy_cuda_dtype_t dtype, size_t n) {
  if (dtype == GY_CUDA_F32) return gy_cuda_download(ctx, dst, src, n * 4);
  float *tmp = NULL;
  int rc = gy_cuda_malloc((void **)&tmp, n * 4);
  if (!rc) rc = convert(ctx, tmp, (const __nv_bfloat16 *)src, n);
  if (!rc) rc = gy_cuda_download(ctx, dst, tmp, n * 4);
  gy_cuda_free(tmp);
  return rc;
}
