/* knobs: every optimizer knob the controller may turn between two steps, the learning-rate
 * schedule's parameters, gyro's defaults and their range check. Shared by the run config
 * (config/run_config.h) and the optimizer (kernels/optim.h). */
#ifndef GY_CONFIG_KNOBS_H
#define GY_CONFIG_KNOBS_H

#include <stddef.h>

typedef enum { GY_SCHED_CONSTANT = 0, GY_SCHED_COSINE = 1, GY_SCHED_WSD = 2 } gy_sched_kind_t;

/* Learning-rate schedule: a pure function of the step. */
typedef struct {
  gy_sched_kind_t kind;
  float lr;          /* peak learning rate */
  int warmup;        /* linear warm-up steps from lr/warmup to lr */
  int total_steps;   /* cosine: length of the decay; steps beyond stay at the floor */
  float min_lr_frac; /* floor, as a fraction of lr */
  int decay_start;   /* WSD: first step of the decay phase */
  int decay_steps;   /* WSD: length of the (linear) decay phase */
} gy_sched_t;

/* Every knob the controller may turn between two steps. */
typedef struct {
  float lr_scale;  /* multiplies the scheduled learning rate */
  float grad_clip; /* global gradient-norm clip; 0 disables */
  float beta1, beta2;
  float eps; /* AdamW epsilon */
  float weight_decay;
  float shallow_scale; /* multiplies gradients of the shallow group */
  int shallow_layers;  /* shallow group = embeddings + the first shallow_layers blocks */
  float z_loss;        /* coefficient of log(Z)^2 */
  gy_sched_t sched;
} gy_knobs_t;

/* Fills knobs with gyro's defaults (lr 3e-4 cosine, clip 1, eps 1e-8, ...). */
void gy_knobs_default(gy_knobs_t *k);
/* Checks ranges; 0 or GY_ERANGE with the offending knob named in errmsg. */
int gy_knobs_check(const gy_knobs_t *k, char *errmsg, size_t errlen);

#endif
