/* optim: AdamW with run-time knobs, gradient norms and clipping, learning-rate schedules. */
#ifndef GY_OPTIM_H
#define GY_OPTIM_H

#include <stddef.h>
#include <stdint.h>

#include "config/knobs.h"
#include "kernels/gpt.h"

/* Learning rate at step (0-based), before lr_scale. */
float gy_sched_lr(const gy_sched_t *s, int64_t step);

typedef struct {
  double global;       /* L2 norm of all gradients (after the shallow scale, before clipping) */
  double shallow;      /* L2 norm of the shallow group's gradients (same point) */
  double deep;         /* L2 norm of the rest */
  int nonfinite;       /* 1 if any gradient is NaN or Inf */
  double update_ratio; /* ||update|| / ||params|| of the step taken (0 if skipped) */
  float lr;            /* learning rate applied */
} gy_step_stats_t;

/* AdamW state: first and second moments, one float per parameter. */
typedef struct gy_adamw gy_adamw_t;
int gy_adamw_create(gy_adamw_t **out, size_t num_params);
void gy_adamw_destroy(gy_adamw_t *o);
float *gy_adamw_m(gy_adamw_t *o);
float *gy_adamw_v(gy_adamw_t *o);
/* Applies the shallow scale to the gradients, measures norms, clips, and takes one AdamW step
 * (t = step + 1 for bias correction). A non-finite gradient skips the update (parameters and
 * moments unchanged) and reports nonfinite = 1. Deterministic for a fixed thread count. */
void gy_adamw_step(gy_adamw_t *o, gy_gpt_t *m, const gy_knobs_t *k, int64_t step,
                   gy_step_stats_t *stats);

/* The two halves of gy_adamw_step, for tensor- and data-parallel training, where the norms
 * need a reduction over the group between them:
 * measure: applies the shallow scale to the gradients and returns squared norms split by group
 * (shallow/deep) and by placement (replicated tensors, identical on every tensor-parallel rank,
 * vs sharded ones, whose squares must be summed over the group), and the non-finite flag;
 * update: clips with the given global norm and takes the AdamW step (skipped when nonfinite). */
typedef struct {
  double shallow_repl, shallow_shard, deep_repl, deep_shard;
  int nonfinite;
} gy_grad_sq_t;
void gy_adamw_measure(gy_gpt_t *m, const gy_knobs_t *k, gy_grad_sq_t *sq);
void gy_adamw_update(gy_adamw_t *o, gy_gpt_t *m, const gy_knobs_t *k, int64_t step,
                     double shallow_norm, double deep_norm, int nonfinite, gy_step_stats_t *st);

/* Norm helpers, exposed for tests: squared L2 norms of the shallow and deep groups. */
void gy_grad_sq_norms(gy_gpt_t *m, int shallow_layers, double *shallow_sq, double *deep_sq,
                      int *nonfinite);

#endif
