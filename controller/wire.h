/* wire: the controller's translations of worker messages (protobuf-c, proto/gyro.proto) into
 * the inputs of its pure modules. One place, so that the service and the fuzz harness that
 * feeds the fleet hostile messages run the same code.
 *
 * gy_wire_step_report: a StepReport as the fleet's gy_fleet_report_t. The channel arrays live
 * in `ch` (the caller's, for as long as `out` is used); more channels than GY_FLEET_MAX_CH make
 * out->nch GY_FLEET_MAX_CH + 1, which the fleet refuses with a message. */
#ifndef GY_CONTROLLER_WIRE_H
#define GY_CONTROLLER_WIRE_H

#include <stdint.h>

#include "controller/core.h"
#include "controller/fleet.h"
#include "proto/gyro.pb-c.h"

typedef struct {
  const char *name[GY_FLEET_MAX_CH];
  double loss_sum[GY_FLEET_MAX_CH];
  uint64_t tokens[GY_FLEET_MAX_CH];
} gy_wire_channels_t;

void gy_wire_step_report(const Gyro__StepReport *r, gy_wire_channels_t *ch, gy_fleet_report_t *out);

/* gy_wire_join: a JoinRequest as the fleet's join (its strings borrowed from jr). */
void gy_wire_join(const Gyro__JoinRequest *jr, gy_fleet_join_t *out);

/* gy_wire_hparams_in: an HParams (a Command's; NULL: none) as the fleet's knobs (all zero and
 * nothing present when NULL). gy_wire_hparams_out: the fleet's knobs into an HParams the caller
 * initialised (GYRO__HPARAMS__INIT), as a directive carries them. */
void gy_wire_hparams_in(const Gyro__HParams *h, gy_fleet_hparams_t *out);
void gy_wire_hparams_out(const gy_fleet_hparams_t *h, Gyro__HParams *out);

/* gy_wire_samples: a StepReport's top and bottom samples as the core's: at most max of each,
 * the top into out[0, *ntop), the bottom into out[max, max + *nbottom) (out holds 2 * max;
 * channels borrowed from r). */
void gy_wire_samples(const Gyro__StepReport *r, gy_core_sample_t *out, size_t max, size_t *ntop,
                     size_t *nbottom);

/* gy_wire_eval: an EvalReport as the core's input (arrays in `out`, names borrowed from r);
 * more sources than GY_FLEET_MAX_CH are counted, not copied (the core refuses them). */
typedef struct {
  gy_core_eval_in_t in;
  const char *source[GY_FLEET_MAX_CH];
  double loss[GY_FLEET_MAX_CH], ppl[GY_FLEET_MAX_CH], cloze[GY_FLEET_MAX_CH];
  uint64_t tokens[GY_FLEET_MAX_CH], items[GY_FLEET_MAX_CH];
} gy_wire_eval_t;
void gy_wire_eval(const Gyro__EvalReport *r, gy_wire_eval_t *out);

#endif
