/* gpt_cuda: the GPT-2 model of kernels/gpt.h on one GPU, with the same config, tensor order,
 * layout and semantics, and AdamW on the GPU with the knobs of kernels/optim.h.
 *
 * A trainer swaps the CPU model for this one call for call:
 *   gy_gpt_create          -> gy_gpt_cuda_create (+ device and dtype)
 *   gy_gpt_init_params     -> gy_gpt_init_params on a CPU model, then gy_gpt_cuda_upload_params
 *                             (or gy_gpt_cuda_init_params, which does exactly that)
 *   gy_gpt_forward         -> gy_gpt_cuda_forward (host inputs/targets, host mean loss)
 *   gy_gpt_token_losses    -> gy_gpt_cuda_token_losses (host copy, valid until the next forward)
 *   gy_gpt_backward        -> gy_gpt_cuda_backward
 *   gy_gpt_backward_masked -> gy_gpt_cuda_backward_masked
 *   gy_adamw_create/measure/update/m/v -> gy_adamw_cuda_* (same arguments and statistics)
 *   gy_gpt_params/grads    -> gy_gpt_cuda_download_params / _grads (CPU layout, float) for
 *                             checkpoints and reports; gy_gpt_cuda_upload_params to restore.
 * Parameters, gradients and moments are float in the CPU layout (gy_gpt_tensor_offset of a CPU
 * model with the same config gives the same offsets), so a CPU checkpoint loads on the GPU and
 * back. With dtype bf16, activations and the weights used by the matrix products are bf16
 * (rounded from the float master weights after each update); products accumulate in float.
 *
 * Tensor parallelism (tp_size > 1) follows kernels/gpt.h: the model holds its rank's shard in
 * the CPU shard layout (gy_gpt_cuda_init_params gives the same shard as the CPU model), and the
 * four partial sums per block (the attention and MLP output projections forward, the inputs'
 * gradients of qkv and fc backward; and the QK-norm weights' gradients) go through a
 * caller-supplied sum over device buffers (gy_gpt_cuda_set_tp_allreduce), so the model knows
 * nothing of the network. Data parallelism works through the device gradient buffer
 * (gy_gpt_cuda_device_grads) and the per-layer events (gy_gpt_cuda_wait_layer), e.g. with the
 * NCCL backend of worker/comm.h.
 *
 * Threads: calls may come from any thread, one at a time per model (each makes the model's
 * device current); gy_gpt_cuda_wait_layer may run concurrently with the backward pass.
 *
 * Errors: gyro codes; GY_ENOMEM when the device is out of memory; GY_EIO for a CUDA failure (the
 * text is in gy_cuda_last_error()); GY_EINVAL for a bad shape or token. */
#ifndef GY_GPT_CUDA_H
#define GY_GPT_CUDA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* inside the extern "C" block: gpt.h and optim.h are plain C headers without their own guard */
#include "kernels/cuda/runtime.h"
#include "kernels/gpt.h"
#include "kernels/optim.h"

typedef struct gy_gpt_cuda gy_gpt_cuda_t;
typedef struct gy_adamw_cuda gy_adamw_cuda_t; /* AdamW on the GPU: below */

/* Creates the model on `device` with room for activations of up to max_batch x max_seq_len, in
 * dtype. The callee copies cfg. Parameters start at zero. errmsg (may be NULL) gets the reason of
 * a failure. */
int gy_gpt_cuda_create(gy_gpt_cuda_t **out, const gy_gpt_config_t *cfg, int max_batch,
                       gy_cuda_dtype_t dtype, int device, char *errmsg, size_t errlen);
void gy_gpt_cuda_destroy(gy_gpt_cuda_t *m);

const gy_gpt_config_t *gy_gpt_cuda_config(const gy_gpt_cuda_t *m);
gy_cuda_dtype_t gy_gpt_cuda_dtype(const gy_gpt_cuda_t *m);
size_t gy_gpt_cuda_num_params(const gy_gpt_cuda_t *m);
/* Element count and offset of tensor i, identical to the CPU model's for the same config. */
size_t gy_gpt_cuda_tensor_size(const gy_gpt_cuda_t *m, int i);
size_t gy_gpt_cuda_tensor_offset(const gy_gpt_cuda_t *m, int i);
/* 1 if tensor i is split across the tensor-parallel group (as gy_gpt_tensor_sharded). */
int gy_gpt_cuda_tensor_sharded(const gy_gpt_cuda_t *m, int i);
/* Sums `count` elements of dtype dt at the device pointer buf over the tensor-parallel group, in
 * place; returns 0 or non-zero on failure (the pass then returns GY_ECOMM). The model's stream
 * is synchronised before the call (buf is ready); the sum must be in buf when it returns.
 * Activations are of the model's dtype; the QK-norm weight gradients are float. */
typedef int (*gy_gpt_cuda_allreduce_fn)(void *ctx, void *buf, size_t count, gy_cuda_dtype_t dt);
/* Sets the tensor-parallel sum (required when tp_size > 1: forward and backward return GY_EINVAL
 * without it). */
void gy_gpt_cuda_set_tp_allreduce(gy_gpt_cuda_t *m, gy_gpt_cuda_allreduce_fn fn, void *ctx);
/* Device bytes held by the model (parameters, gradients, activations, scratch). */
size_t gy_gpt_cuda_device_bytes(const gy_gpt_cuda_t *m);
/* The model's execution context (its stream; see kernels/cuda/runtime.h). */
gy_cuda_ctx_t *gy_gpt_cuda_ctx(gy_gpt_cuda_t *m);

/* num_params floats in the CPU layout, host memory; the call returns when the copy is done. */
int gy_gpt_cuda_upload_params(gy_gpt_cuda_t *m, const float *params);
int gy_gpt_cuda_download_params(gy_gpt_cuda_t *m, float *params);
int gy_gpt_cuda_download_grads(gy_gpt_cuda_t *m, float *grads);
/* Replaces the gradients (host floats, CPU layout): for a reduction done on the host. */
int gy_gpt_cuda_upload_grads(gy_gpt_cuda_t *m, const float *grads);
/* gy_gpt_init_params (the same weights, a pure function of seed) computed on the host and
 * uploaded. */
int gy_gpt_cuda_init_params(gy_gpt_cuda_t *m, uint64_t seed);

/* Asynchronous snapshot for a checkpoint: queues copies of the parameters (and, with o, the
 * AdamW moments) into host buffers of num_params floats each, on a copy stream of their own,
 * after everything queued so far; returns at once. The training work queued next (forward,
 * backward) runs while they copy; whatever would overwrite the parameters or moments (the next
 * update, an upload) waits for them on the device. Pin the host buffers (gy_cuda_pin) for a
 * truly asynchronous copy. gy_gpt_cuda_snapshot_wait returns once the host buffers hold the
 * snapshot (at once if none is pending); a new snapshot waits for the previous one. */
int gy_gpt_cuda_snapshot_begin(gy_gpt_cuda_t *m, gy_adamw_cuda_t *o, float *params, float *mm,
                               float *vv);
int gy_gpt_cuda_snapshot_wait(gy_gpt_cuda_t *m);

/* Device buffers (float, CPU layout, num_params): for collectives on the device. */
float *gy_gpt_cuda_device_params(gy_gpt_cuda_t *m);
float *gy_gpt_cuda_device_grads(gy_gpt_cuda_t *m);

/* Forward pass on host inputs/targets [B, T] (tokens < vocab_size), as gy_gpt_forward: per-token
 * cross-entropy (gy_gpt_cuda_token_losses) and the mean of CE + z_loss * log(Z)^2 over the B*T
 * tokens in *mean_loss (summed on the host in double, as the CPU model). targets may be NULL.
 * Returns when the losses are on the host. */
int gy_gpt_cuda_forward(gy_gpt_cuda_t *m, const int *inputs, const int *targets, int B, int T,
                        float z_loss, float *mean_loss);
/* Per-token cross-entropy of the last forward ([B*T], host, valid until the next forward). */
const float *gy_gpt_cuda_token_losses(const gy_gpt_cuda_t *m);
/* The top-1 prediction of each of the last forward's B*T positions (the first index of the
 * largest logit, as the CPU argmax) into out (host, B*T ints): for cloze accuracy. GY_EINVAL
 * after a backward (the logits then hold their gradient). */
int gy_gpt_cuda_argmax(gy_gpt_cuda_t *m, int *out);
/* Backward pass of the last forward (which must have had targets): overwrites the device
 * gradients with the gradient of the mean loss. Returns once all work is queued: the next call
 * on the model's stream (download, optimizer) orders after it. Same as
 * gy_gpt_cuda_backward_masked(m, NULL, 0). */
int gy_gpt_cuda_backward(gy_gpt_cuda_t *m);
/* As gy_gpt_backward_masked (kernels/gpt.h), the same semantics: keep is [B] of the last forward
 * in host memory (1: the sample counts, 0: masked) or NULL (all count); the gradient is that of
 * the mean loss over the kept samples' tokens (denominator T * kept), the masked samples' dlogits
 * rows are exactly zero, and with none kept every gradient is zero while every tensor-parallel
 * sum and grads_ready call still happens as usual. keep is copied to the device before the call
 * returns (the caller keeps ownership). The host token losses of the forward are unchanged. */
int gy_gpt_cuda_backward_masked(gy_gpt_cuda_t *m, const uint8_t *keep, double denom_tokens);

/* Called from gy_gpt_cuda_backward right after the work finishing the gradients of block
 * `layer` (L-1 down to 0; -1 for the embeddings and final norm) has been queued, as
 * gy_gpt_set_grads_ready. The gradients are not ready yet when it runs: a thread that reduces
 * them first calls gy_gpt_cuda_wait_layer(m, layer), which waits on an event recorded at that
 * point of the stream. */
void gy_gpt_cuda_set_grads_ready(gy_gpt_cuda_t *m, gy_gpt_grads_ready_fn fn, void *ctx);
int gy_gpt_cuda_wait_layer(gy_gpt_cuda_t *m, int layer);

/* ---- AdamW on the GPU: the same steps and statistics as gy_adamw_* (kernels/optim.h) ---- */

/* Moments (zeroed) for model m's parameters, on m's device. */
int gy_adamw_cuda_create(gy_adamw_cuda_t **out, gy_gpt_cuda_t *m);
void gy_adamw_cuda_destroy(gy_adamw_cuda_t *o);
/* Moments in the CPU layout (num_params floats each), host memory: for checkpoints. */
int gy_adamw_cuda_download(gy_adamw_cuda_t *o, float *m, float *v);
int gy_adamw_cuda_upload(gy_adamw_cuda_t *o, const float *m, const float *v);
/* As gy_adamw_measure: scales the shallow group's gradients by k->shallow_scale, then returns the
 * squared norms by group and placement and the non-finite flag (one small copy to the host). */
int gy_adamw_cuda_measure(gy_adamw_cuda_t *o, const gy_knobs_t *k, gy_grad_sq_t *sq);
/* As gy_adamw_update: clip with the given norms, AdamW step (skipped when non-finite), stats. */
int gy_adamw_cuda_update(gy_adamw_cuda_t *o, const gy_knobs_t *k, int64_t step, double shallow_norm,
                         double deep_norm, int nonfinite, gy_step_stats_t *st);
/* measure + update, as gy_adamw_step. */
int gy_adamw_cuda_step(gy_adamw_cuda_t *o, const gy_knobs_t *k, int64_t step, gy_step_stats_t *st);

#ifdef __cplusplus
}
#endif

#endif
