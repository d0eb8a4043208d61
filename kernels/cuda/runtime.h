/* runtime: the device side of gyro's CUDA kernels as seen from C — device discovery, device
 * memory, host<->device copies (with float<->bf16 conversion), and the context (stream + cuBLAS
 * handle) every operator launcher takes. No CUDA header is needed to use it.
 *
 * Errors are gyro codes (common/err.h): GY_ENOMEM for an allocation the device refused, GY_EIO
 * for any other CUDA or cuBLAS failure, GY_EINVAL for a bad shape. Every failure is logged with
 * file:line and kept for gy_cuda_last_error(); nothing exits the process. */
#ifndef GY_CUDA_RUNTIME_H
#define GY_CUDA_RUNTIME_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Activation and compute-weight type. Master weights, gradients and optimizer moments are always
 * float. */
typedef enum { GY_CUDA_F32 = 0, GY_CUDA_BF16 = 1 } gy_cuda_dtype_t;

/* Bytes per element of dtype. */
size_t gy_cuda_dtype_size(gy_cuda_dtype_t dtype);
const char *gy_cuda_dtype_name(gy_cuda_dtype_t dtype);

/* Number of visible GPUs; 0 when there is no driver, no device, or the runtime fails (never an
 * error: a machine without a GPU is a normal case). */
int gy_cuda_device_count(void);
/* Name of device dev ("NVIDIA H100 80GB HBM3"), total memory and SM count; 0 or GY_EIO. */
int gy_cuda_device_info(int dev, char *name, size_t namelen, size_t *total_mem, int *sm_count);

/* Text of the last failure on this thread ("file:line: call: reason"), "" if none. */
const char *gy_cuda_last_error(void);

/* Execution context: a device, a non-blocking stream and a cuBLAS handle bound to it.
 * Opaque; create/destroy follow CONVENTIONS.md §2. */
typedef struct gy_cuda_ctx gy_cuda_ctx_t;
int gy_cuda_ctx_create(gy_cuda_ctx_t **out, int device);
void gy_cuda_ctx_destroy(gy_cuda_ctx_t *ctx);
/* The context's cudaStream_t, as a pointer (for NCCL or events on the same stream). */
void *gy_cuda_ctx_stream(gy_cuda_ctx_t *ctx);
/* Waits for everything queued on the context's stream; reports errors raised by kernels. */
int gy_cuda_sync(gy_cuda_ctx_t *ctx);

/* Device memory. gy_cuda_free(NULL) is a no-op. */
int gy_cuda_malloc(void **ptr, size_t bytes);
void gy_cuda_free(void *ptr);
int gy_cuda_memset0(gy_cuda_ctx_t *ctx, void *dptr, size_t bytes);

/* Copies on the context's stream; they return once the copy is complete. */
int gy_cuda_upload(gy_cuda_ctx_t *ctx, void *dst, const void *src, size_t bytes);
int gy_cuda_download(gy_cuda_ctx_t *ctx, void *dst, const void *src, size_t bytes);
/* Page-locks n bytes of host memory at p (cudaHostRegister) so that copies to and from it run
 * asynchronously at full speed; gy_cuda_unpin(p) undoes it. Copies work on unpinned memory too,
 * only slower and staged by the driver. */
int gy_cuda_pin(void *p, size_t bytes);
void gy_cuda_unpin(void *p);
/* Host floats -> device array of dtype (rounded to nearest for bf16), and back. */
int gy_cuda_upload_f32(gy_cuda_ctx_t *ctx, void *dst, gy_cuda_dtype_t dtype, const float *src,
                       size_t n);
int gy_cuda_download_f32(gy_cuda_ctx_t *ctx, float *dst, const void *src, gy_cuda_dtype_t dtype,
                         size_t n);
/* Device float array -> device array of dtype (a copy for float), queued on the stream. */
int gy_cuda_convert_f32(gy_cuda_ctx_t *ctx, void *dst, gy_cuda_dtype_t dtype, const float *src,
                        size_t n);

#ifdef __cplusplus
}
#endif

#endif
