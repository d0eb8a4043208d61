/* guard: gy_guard_opts_t <-> gyro.GuardPolicy (see guard.h).
 *
 * API, in order: out, in. */
#include "wire/guard.h"

#include <stddef.h>

#include "proto/gyro.pb-c.h"

typedef struct {
  Gyro__GuardPolicy msg;
  Gyro__GuardRule rules[GY_GSTAT_COUNT];
  Gyro__GuardRule *ptrs[GY_GSTAT_COUNT];
} guard_msg_t;

_Static_assert(sizeof(guard_msg_t) <= sizeof(((gy_wire_guard_msg_t *)0)->bytes),
               "gy_wire_guard_msg_t is too small for a GuardPolicy");

Gyro__GuardPolicy *gy_wire_guard_out(const gy_guard_opts_t *g, gy_wire_guard_msg_t *m) {
  guard_msg_t *x = (guard_msg_t *)m->bytes;
  gyro__guard_policy__init(&x->msg);
  x->msg.enabled = g->enabled != 0;
  x->msg.window = g->window;
  x->msg.warmup = g->warmup;
  for (int s = 0; s < GY_GSTAT_COUNT; s++) {
    gyro__guard_rule__init(&x->rules[s]);
    x->rules[s].z = g->rule[s].z;
    x->rules[s].floor = g->rule[s].floor;
    x->rules[s].high = g->rule[s].high != 0;
    x->rules[s].low = g->rule[s].low != 0;
    x->ptrs[s] = &x->rules[s];
  }
  x->msg.n_rules = GY_GSTAT_COUNT;
  x->msg.rules = x->ptrs;
  x->msg.max_step_share = g->max_step_share;
  x->msg.budget = g->budget;
  x->msg.quarantine = g->quarantine != 0;
  x->msg.quarantine_max_tokens = g->quarantine_max_tokens;
  x->msg.quarantine_margin = g->quarantine_margin;
  return &x->msg;
}

void gy_wire_guard_in(const Gyro__GuardPolicy *p, gy_guard_opts_t *out) {
  gy_guard_default(out);
  if (!p) return;
  out->enabled = p->enabled != 0;
  out->window = p->window;
  out->warmup = p->warmup;
  for (size_t s = 0; s < p->n_rules && s < GY_GSTAT_COUNT; s++) {
    if (!p->rules[s]) continue;
    out->rule[s].z = p->rules[s]->z;
    out->rule[s].floor = p->rules[s]->floor;
    out->rule[s].high = p->rules[s]->high != 0;
    out->rule[s].low = p->rules[s]->low != 0;
  }
  out->max_step_share = p->max_step_share;
  out->budget = p->budget;
  out->quarantine = p->quarantine != 0;
  out->quarantine_max_tokens = p->quarantine_max_tokens;
  out->quarantine_margin = p->quarantine_margin;
}
