/* classifier: the fused output head on the GPU — softmax, cross-entropy, z-loss, per-token losses
 * and the logits' gradient, one row at a time, in place (CPU reference: gy_crossentropy_forward in
 * kernels/ops_cpu.h). logits [N, Vp] are dtype; columns >= V are padding (ignored by the softmax,
 * zero gradient). No probability matrix is ever stored: a row's probabilities live only while its
 * block handles it. Also the row-wise argmax (top-1 prediction) for evaluation. */
#ifndef GY_CUDA_CLASSIFIER_H
#define GY_CUDA_CLASSIFIER_H

#include <stdint.h>

#include "kernels/cuda/runtime.h"

#ifdef __cplusplus
extern "C" {
#endif

/* For each row n (targets: device ints in [0, V)):
 *   logZ = log sum_{j<V} exp(logits[n,j]);  token_losses[n] = logZ - logits[n, target];
 *   row_losses[n] = token_losses[n] + z_loss * logZ^2  (row_losses may be NULL);
 * and with write_dlogits, logits[n,:] is overwritten by d(mean loss)/dlogits =
 *   (softmax * (1 + 2 z_loss logZ) - onehot(target)) / denom, zero on the padding.
 * keep (device, may be NULL: every row counts) holds one flag per T consecutive rows (a sample):
 * the dlogits rows of a sample whose flag is 0 are exactly zero. The losses cover every row. */
int gy_cuda_classifier(gy_cuda_ctx_t *ctx, gy_cuda_dtype_t dt, void *logits, float *token_losses,
                       float *row_losses, const int *targets, int N, int V, int Vp, float z_loss,
                       float denom, int write_dlogits, const uint8_t *keep, int T);

/* out[n] = the first j < V with the largest logits[n, j] (NaN never wins), for each of the N
 * rows: the model's top-1 prediction, for cloze accuracy (CPU reference: the argmax loop of
 * worker/train.c's cloze count). out: N device ints. */
int gy_cuda_argmax(gy_cuda_ctx_t *ctx, gy_cuda_dtype_t dt, const void *logits, int *out, int N,
                   int V, int Vp);

#ifdef __cplusplus
}
#endif

#endif
