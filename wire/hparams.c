/* hparams: the one conversion between gyro.HParams and gy_hparams_t (see hparams.h).
 *
 * API: gy_wire_hparams_in (message -> value), gy_wire_hparams_out (value -> message).
 * Invariants: every field of gyro.HParams is copied both ways, `present` included, so that a
 * value that goes out and comes back in is unchanged; wsd_decay_now is 0 or 1 in a value. */
#include "wire/hparams.h"

#include "proto/gyro.pb-c.h"

void gy_wire_hparams_in(const Gyro__HParams *h, gy_hparams_t *out) {
  if (!h) {
    *out = (gy_hparams_t){0};
    return;
  }
  *out = (gy_hparams_t){.lr_scale = h->lr_scale,
                        .grad_clip = h->grad_clip,
                        .eps = h->eps,
                        .weight_decay = h->weight_decay,
                        .shallow_scale = h->shallow_scale,
                        .shallow_layers = h->shallow_layers,
                        .z_loss = h->z_loss,
                        .beta1 = h->beta1,
                        .beta2 = h->beta2,
                        .present = h->present,
                        .wsd_decay_now = h->wsd_decay_now != 0};
}

void gy_wire_hparams_out(const gy_hparams_t *h, Gyro__HParams *out) {
  out->lr_scale = h->lr_scale;
  out->grad_clip = h->grad_clip;
  out->eps = h->eps;
  out->weight_decay = h->weight_decay;
  out->shallow_scale = h->shallow_scale;
  out->shallow_layers = h->shallow_layers;
  out->z_loss = h->z_loss;
  out->beta1 = h->beta1;
  out->beta2 = h->beta2;
  out->wsd_decay_now = h->wsd_decay_now != 0;
  out->present = h->present;
}
