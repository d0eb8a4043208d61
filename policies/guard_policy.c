/*
 * guard_policy: the guard's settings: names of the figures, the shipped default (identical to the
 * `guard:` section of examples/policies/default.yaml) and the range checks.
 */
#include "policies/guard_policy.h"

#include <stdio.h>
#include <string.h>

#include "common/err.h"

static const char *const stat_names[] = {
#define GY_GUARD_STAT_STR(n, s, u) s,
    GY_GUARD_STAT_MAP(GY_GUARD_STAT_STR)
#undef GY_GUARD_STAT_STR
};

const char *gy_guard_stat_name(int s) {
  return s >= 0 && s < GY_GSTAT_COUNT ? stat_names[s] : "?";
}

void gy_guard_default(gy_guard_opts_t *o) {
  memset(o, 0, sizeof(*o));
  o->enabled = 1;
  o->window = 256;
  o->warmup = 8;
  o->rule[GY_GSTAT_LOSS] = (gy_guard_rule_t){.z = 6, .floor = 1.5, .high = 1, .low = 1};
  o->rule[GY_GSTAT_ENTROPY] = (gy_guard_rule_t){.z = 6, .floor = 2.5, .high = 1, .low = 1};
  o->rule[GY_GSTAT_REPEAT] = (gy_guard_rule_t){.z = 6, .floor = 0.5, .high = 1};
  o->rule[GY_GSTAT_NONTEXT] = (gy_guard_rule_t){.z = 6, .floor = 0.1, .high = 1};
  o->rule[GY_GSTAT_HIGHBYTE] = (gy_guard_rule_t){.z = 6, .floor = 0.35, .high = 1};
  o->rule[GY_GSTAT_MARKUP] = (gy_guard_rule_t){.z = 6, .floor = 0.15, .high = 1};
  o->max_step_share = 0.25;
  o->budget = 0.005;
  o->quarantine = 1;
  o->quarantine_max_tokens = 65536;
  o->quarantine_margin = 1024;
}

int gy_guard_check(const gy_guard_opts_t *o, char *errmsg, size_t errlen) {
  if (o->window < 8 || o->window > GY_GUARD_MAX_WINDOW) {
    snprintf(errmsg, errlen, "guard.window %d out of range [8, %d]", o->window,
             GY_GUARD_MAX_WINDOW);
    return GY_ECONFIG;
  }
  if (o->warmup < 1 || o->warmup > o->window) {
    snprintf(errmsg, errlen, "guard.warmup %d out of range [1, window %d]", o->warmup, o->window);
    return GY_ECONFIG;
  }
  for (int s = 0; s < GY_GSTAT_COUNT; s++) {
    const gy_guard_rule_t *r = &o->rule[s];
    if (!(r->z >= 0 && r->z <= 1e6)) {
      snprintf(errmsg, errlen, "guard.rules.%s.z must be in [0, 1e6]", stat_names[s]);
      return GY_ECONFIG;
    }
    if (!(r->floor > 0 && r->floor <= 1e6)) {
      snprintf(errmsg, errlen, "guard.rules.%s.floor must be in (0, 1e6]", stat_names[s]);
      return GY_ECONFIG;
    }
  }
  if (!(o->max_step_share > 0 && o->max_step_share <= 1)) {
    snprintf(errmsg, errlen, "guard.max_step_share must be in (0, 1]");
    return GY_ECONFIG;
  }
  if (!(o->budget >= 0 && o->budget <= 1)) {
    snprintf(errmsg, errlen, "guard.budget must be in [0, 1]");
    return GY_ECONFIG;
  }
  if (o->quarantine_max_tokens < 1 || o->quarantine_max_tokens > (1ull << 40) ||
      o->quarantine_margin > (1ull << 40)) {
    snprintf(errmsg, errlen,
             "guard.quarantine.max_tokens must be in [1, 2^40] and guard.quarantine.margin in "
             "[0, 2^40]");
    return GY_ECONFIG;
  }
  return 0;
}

int gy_guard_equal(const gy_guard_opts_t *a, const gy_guard_opts_t *b) {
  if (a->enabled != b->enabled || a->window != b->window || a->warmup != b->warmup ||
      a->max_step_share != b->max_step_share || a->budget != b->budget ||
      a->quarantine != b->quarantine || a->quarantine_max_tokens != b->quarantine_max_tokens ||
      a->quarantine_margin != b->quarantine_margin)
    return 0;
  for (int s = 0; s < GY_GSTAT_COUNT; s++) {
    const gy_guard_rule_t *x = &a->rule[s], *y = &b->rule[s];
    if (x->z != y->z || x->floor != y->floor || x->high != y->high || x->low != y->low) return 0;
  }
  return 1;
}
