/* gpt: a GPT-2-style decoder on the CPU (forward, backward, per-token and per-sample loss). */
#ifndef GY_GPT_H
#define GY_GPT_H

#include <stddef.h>
#include <stdint.h>

#include "config/model.h"

/* Tensor parallelism (Megatron-style). With tp_size P > 1 a model holds one shard: the heads
 * NH/P of its rank (rows of qkvw/qkvb, columns of attprojw) and a 1/P slice of the MLP width
 * (rows of fcw/fcb, columns of fcprojw); every other tensor is replicated. The partial sums of
 * the attention output and MLP output projections (forward) and of the inputs' gradients of
 * qkv and fc (backward) are summed over the group through a caller-supplied function, so the
 * model itself knows nothing of the network. */
typedef int (*gy_gpt_allreduce_fn)(void *ctx, float *buf, size_t count);

/* Parameter tensors, in llm.c's order (the first 16), then gyro's optional ones. Every tensor
 * whose name starts with a layer prefix is stored [L, ...]: layer l's slice is contiguous. */
typedef enum {
  GY_T_WTE,      /* [Vp, C] */
  GY_T_WPE,      /* [T_max, C] */
  GY_T_LN1W,     /* [L, C] */
  GY_T_LN1B,     /* [L, C] */
  GY_T_QKVW,     /* [L, 3C, C] */
  GY_T_QKVB,     /* [L, 3C] */
  GY_T_ATTPROJW, /* [L, C, C] */
  GY_T_ATTPROJB, /* [L, C] */
  GY_T_LN2W,     /* [L, C] */
  GY_T_LN2B,     /* [L, C] */
  GY_T_FCW,      /* [L, 4C, C] */
  GY_T_FCB,      /* [L, 4C] */
  GY_T_FCPROJW,  /* [L, C, 4C] */
  GY_T_FCPROJB,  /* [L, C] */
  GY_T_LNFW,     /* [C] */
  GY_T_LNFB,     /* [C] */
  GY_T_QNW,      /* [L, C/NH], present (non-zero size) only with qk_norm */
  GY_T_KNW,      /* [L, C/NH], present only with qk_norm */
  GY_T_COUNT
} gy_gpt_tensor_t;

#define GY_GPT_LLMC_TENSORS 16

typedef struct gy_gpt gy_gpt_t;

/* Static name of tensor i ("wte", "wpe", "ln1w", ...). */
const char *gy_gpt_tensor_name(int i);

/* Creates a model with parameters, gradients and room for activations of up to B x T_max.
 * The callee copies cfg. Parameters start at zero: call gy_gpt_init_params. */
int gy_gpt_create(gy_gpt_t **out, const gy_gpt_config_t *cfg, int max_batch);
void gy_gpt_destroy(gy_gpt_t *m);

const gy_gpt_config_t *gy_gpt_config(const gy_gpt_t *m);
size_t gy_gpt_num_params(const gy_gpt_t *m);
/* Whole parameter / gradient buffer (num_params floats, tensors back to back in enum order). */
float *gy_gpt_params(gy_gpt_t *m);
float *gy_gpt_grads(gy_gpt_t *m);
/* Element count and offset (in floats) of tensor i; a tensor the config lacks has size 0. */
size_t gy_gpt_tensor_size(const gy_gpt_t *m, int i);
size_t gy_gpt_tensor_offset(const gy_gpt_t *m, int i);
/* 1 if tensor i is stored per layer ([L, ...]), 0 otherwise. */
int gy_gpt_tensor_layered(int i);
/* 1 if tensor i is split across the tensor-parallel group (0 when tp_size <= 1). */
int gy_gpt_tensor_sharded(const gy_gpt_t *m, int i);
/* The same for config c, and the sizes and offsets (in floats) of every tensor of c (a shard's
 * when c->tp_size > 1) into sizes[GY_T_COUNT] and offsets[GY_T_COUNT]; returns the parameter
 * count. For other implementations of this model (kernels/gpt_cuda.h), which share its layout. */
int gy_gpt_config_sharded(const gy_gpt_config_t *c, int i);
size_t gy_gpt_layout(const gy_gpt_config_t *c, size_t *sizes, size_t *offsets);
/* Sets the tensor-parallel sum (required when tp_size > 1; forward/backward return GY_ECOMM
 * when it fails). */
void gy_gpt_set_tp_allreduce(gy_gpt_t *m, gy_gpt_allreduce_fn fn, void *ctx);
/* Copies this rank's shard out of full-model parameters `full` (laid out for the same config
 * with tp_size 1). */
void gy_gpt_shard_from_full(gy_gpt_t *m, const float *full);
/* Called after the backward pass finished the gradients of block `layer` (L-1 down to 0), and
 * with layer = -1 once the embeddings' gradients are done: lets data-parallel gradient
 * reduction of finished layers overlap the rest of the backward pass. */
typedef void (*gy_gpt_grads_ready_fn)(void *ctx, int layer);
void gy_gpt_set_grads_ready(gy_gpt_t *m, gy_gpt_grads_ready_fn fn, void *ctx);

/* 1 if AdamW applies weight decay to tensor i (matrices only: no embeddings, norms, biases). */
int gy_gpt_tensor_decayed(int i);

/* GPT-2 initialisation (normal 0.02, residual projections scaled by 1/sqrt(2L), norms at 1),
 * a pure function of seed; a tensor-parallel shard gets its slice of the same full model. */
void gy_gpt_init_params(gy_gpt_t *m, uint64_t seed);

/* Forward pass on inputs/targets [B, T] (tokens < V). Computes per-token cross-entropy into
 * token_losses [B*T] and the mean loss (cross-entropy plus z_loss * log(Z)^2, averaged over all
 * B*T tokens) which it returns in *mean_loss. targets may be NULL (inference: no loss).
 * Returns 0, or GY_EINVAL for a bad shape or token. */
int gy_gpt_forward(gy_gpt_t *m, const int *inputs, const int *targets, int B, int T, float z_loss,
                   float *mean_loss);
/* Per-token cross-entropy of the last forward pass ([B*T], read-only, valid until the next). */
const float *gy_gpt_token_losses(const gy_gpt_t *m);
/* Logits of the last forward pass ([B*T, padded_vocab_size], row-major; columns >= vocab_size
 * are the padded rows' products), read-only, valid until the next forward or backward (the
 * backward pass overwrites them with their gradient). */
const float *gy_gpt_logits(const gy_gpt_t *m);
/* Backward pass of the last forward (which must have had targets): writes (overwrites) the
 * gradient of the mean loss into the gradient buffer. Same as gy_gpt_backward_masked(m, NULL, 0).
 */
int gy_gpt_backward(gy_gpt_t *m);
/* Backward pass with a per-sample loss mask. keep is [B] of the last forward (1: the sample
 * counts, 0: it is masked; the caller keeps ownership) or NULL (every sample counts). Writes the
 * gradient of the mean loss (cross-entropy plus z_loss * log(Z)^2) over the kept samples' tokens
 * only: the denominator is T * (number of kept samples), as PyTorch's ignore_index with mean
 * reduction. The masked samples' rows of dlogits are exactly zero, so a masked sample contributes
 * exactly nothing to any gradient (samples of a batch are independent). With no sample kept every
 * gradient is zero, but the pass still runs in full: every tensor-parallel sum and every
 * grads_ready call happens exactly as usual, so data- and tensor-parallel peers stay in lockstep.
 * The denominator is local: data-parallel ranks that mask different counts must weigh their
 * gradients themselves. The last forward's token losses are unchanged (the mask touches only
 * the gradient). keep == NULL and all ones give bitwise the gradients of gy_gpt_backward. */
/* denom_tokens > 0 replaces the denominator of the mean (T * kept samples): a data-parallel rank
 * passes the gang's kept tokens / dp, so that the average of the ranks' gradients is the gradient
 * of the mean over every kept token of the gang, whatever each rank masked. */
int gy_gpt_backward_masked(gy_gpt_t *m, const uint8_t *keep, double denom_tokens);

#endif
