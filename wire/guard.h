/* guard: the per-sample guard's settings (policies/guard_policy.h gy_guard_opts_t, a plain
 * value) as gyro.GuardPolicy, and back: the one conversion, used by the controller (Assignment,
 * SET_GUARD directive) and the agent (what it decodes for the worker). Like wire/hparams.h this
 * header does not include the generated code: the message type is only declared, and the
 * storage an outgoing message needs is an opaque buffer on the caller's stack. */
#ifndef GY_WIRE_GUARD_H
#define GY_WIRE_GUARD_H

#include "policies/guard_policy.h"

struct Gyro__GuardPolicy;

/* Room for one outgoing GuardPolicy and its rules (checked against the generated types). */
typedef struct {
  _Alignas(16) unsigned char bytes[1024];
} gy_wire_guard_msg_t;

/* g as a GuardPolicy that lives in m (valid while m is): every field, the rules in
 * GY_GUARD_STAT_MAP's order. */
struct Gyro__GuardPolicy *gy_wire_guard_out(const gy_guard_opts_t *g, gy_wire_guard_msg_t *m);
/* A decoded GuardPolicy into *out (nothing borrowed). Rules beyond GY_GSTAT_COUNT are ignored,
 * missing ones keep gy_guard_default's; the values are not checked here (gy_guard_check). */
void gy_wire_guard_in(const struct Gyro__GuardPolicy *p, gy_guard_opts_t *out);

#endif
