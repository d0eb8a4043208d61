/*
 * knobs: gyro's default optimizer knobs and their range check (config/knobs.h). Pure: no
 * allocation, no I/O.
 */
#include "config/knobs.h"

#include <stdio.h>
#include <string.h>

#include "common/err.h"

void gy_knobs_default(gy_knobs_t *k) {
  memset(k, 0, sizeof(*k));
  k->lr_scale = 1.0f;
  k->grad_clip = 1.0f;
  k->beta1 = 0.9f;
  k->beta2 = 0.95f;
  k->eps = 1e-8f;
  k->weight_decay = 0.1f;
  k->shallow_scale = 1.0f;
  k->shallow_layers = 1;
  k->z_loss = 0.0f;
  k->sched.kind = GY_SCHED_COSINE;
  k->sched.lr = 3e-4f;
  k->sched.warmup = 100;
  k->sched.total_steps = 1000;
  k->sched.min_lr_frac = 0.1f;
  k->sched.decay_start = 800;
  k->sched.decay_steps = 200;
}

int gy_knobs_check(const gy_knobs_t *k, char *errmsg, size_t errlen) {
  const char *bad = NULL;
#define RANGE(cond, name)                                                                          \
  if (!bad && !(cond)) bad = name;
  RANGE(k->lr_scale > 0 && k->lr_scale <= 1000, "lr_scale must be in (0, 1000]");
  RANGE(k->grad_clip >= 0 && k->grad_clip <= 1e6, "grad_clip must be in [0, 1e6]");
  RANGE(k->beta1 >= 0 && k->beta1 < 1, "beta1 must be in [0, 1)");
  RANGE(k->beta2 >= 0 && k->beta2 < 1, "beta2 must be in [0, 1)");
  RANGE(k->eps > 0 && k->eps <= 1, "eps must be in (0, 1]");
  RANGE(k->weight_decay >= 0 && k->weight_decay <= 10, "weight_decay must be in [0, 10]");
  RANGE(k->shallow_scale >= 0 && k->shallow_scale <= 1000, "shallow_scale must be in [0, 1000]");
  RANGE(k->shallow_layers >= 0, "shallow_layers must be >= 0");
  RANGE(k->z_loss >= 0 && k->z_loss <= 1, "z_loss must be in [0, 1]");
  RANGE(k->sched.kind >= GY_SCHED_CONSTANT && k->sched.kind <= GY_SCHED_WSD,
        "schedule kind must be constant, cosine or wsd");
  RANGE(k->sched.lr > 0 && k->sched.lr <= 10, "lr must be in (0, 10]");
  RANGE(k->sched.warmup >= 0, "warmup must be >= 0");
  RANGE(k->sched.total_steps >= 0, "total_steps must be >= 0");
  RANGE(k->sched.min_lr_frac >= 0 && k->sched.min_lr_frac <= 1, "min_lr_frac must be in [0, 1]");
  RANGE(k->sched.decay_start >= 0, "decay_start must be >= 0");
  RANGE(k->sched.decay_steps >= 0, "decay_steps must be >= 0");
#undef RANGE
  /* NaN fails every comparison above, so it is refused too. */
  if (bad) {
    if (errmsg) snprintf(errmsg, errlen, "knobs: %s", bad);
    return GY_ERANGE;
  }
  return 0;
}
