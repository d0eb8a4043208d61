/* hparams: the run-time hyper-parameters a Command asks for and a Directive carries
 * (gyro.HParams), as one plain C value, and the one conversion between it and the message.
 * The fleet (gy_fleet_hparams_t), the agent (gy_agent_hparams_t) and gyroctl all use this type,
 * so a field added to gyro.HParams is added here and converted in one place.
 *
 * This header does not include the generated protobuf-c code: the message type is only
 * declared, so that the pure modules that hold a gy_hparams_t never see Gyro__ types. */
#ifndef GY_WIRE_HPARAMS_H
#define GY_WIRE_HPARAMS_H

#include <stdint.h>

/* Presence bits of gy_hparams_t.present: 1 << (field number in gyro.HParams - 1). */
enum {
  GY_HP_LR_SCALE = 1u << 0,
  GY_HP_GRAD_CLIP = 1u << 1,
  GY_HP_EPS = 1u << 2,
  GY_HP_WEIGHT_DECAY = 1u << 3,
  GY_HP_SHALLOW_SCALE = 1u << 4,
  GY_HP_SHALLOW_LAYERS = 1u << 5,
  GY_HP_Z_LOSS = 1u << 6,
  GY_HP_BETA1 = 1u << 7,
  GY_HP_BETA2 = 1u << 8,
  GY_HP_WSD_DECAY_NOW = 1u << 9, /* switch to WSD and start its decay at the step applied */
};

/* Only the fields whose bit is set in `present` are meant; the others are 0. */
typedef struct {
  uint32_t present; /* which fields below are set */
  float lr_scale, grad_clip, eps, weight_decay, shallow_scale;
  int32_t shallow_layers;
  float z_loss, beta1, beta2;
  int wsd_decay_now; /* 1 when the field is true: switch the schedule to WSD and start its decay */
} gy_hparams_t;

struct Gyro__HParams;

/* gy_wire_hparams_in: a decoded HParams (NULL: the message had none) as a gy_hparams_t (all zero,
 * nothing present, when NULL). Nothing is borrowed from h. */
void gy_wire_hparams_in(const struct Gyro__HParams *h, gy_hparams_t *out);
/* gy_wire_hparams_out: h into an HParams the caller initialised (GYRO__HPARAMS__INIT, on its
 * stack); every field is written. */
void gy_wire_hparams_out(const gy_hparams_t *h, struct Gyro__HParams *out);

#endif
