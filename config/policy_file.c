/*
 * policy_file: the repair policy's YAML (a file, or text sent by `gyroctl policy set`) into a
 * gy_policy_t (policies/policy.h), over the shared schema look-ups of common/yamlcfg.h.
 *
 * API: gy_policy_load (a file), gy_policy_parse (text in memory). The schema is written at the
 * top of policies/policy.c; gy_policy_format writes what these read back.
 *
 * Invariants: every value is range-checked here with the bounds gy_policy_check uses, which
 * then runs as a safety net; on any error the caller's policy is untouched.
 */
#include "config/policy_file.h"

#include <stdio.h>
#include <string.h>

#include "common/err.h"
#include "common/yamlcfg.h"

#define MAX_WINDOW GY_POLICY_MAX_WINDOW
#define MAX_STEPS GY_POLICY_MAX_STEPS

typedef struct {
  gy_yaml_t *y;
  char *errmsg;
  size_t errlen;
} ctx_t;

/* c's document and error buffer as the shared schema reader of common/yamlcfg.h. */
#define RD(c) (&(gy_yread_t){.y = (c)->y, .errmsg = (c)->errmsg, .errlen = (c)->errlen})

/* Optional int map.name in [min, max]; *out keeps its value when absent. */
static int get_int(ctx_t *c, gy_ynode_t map, const char *prefix, const char *name, int64_t min,
                   int64_t max, int *out) {
  return gy_yread_i32(RD(c), map, prefix, name, min, max, out, NULL);
}

/* Optional number in [min, max] (min open when min_open); *present says whether it was given. */
static int get_double(ctx_t *c, gy_ynode_t map, const char *prefix, const char *name, double min,
                      int min_open, double max, double *out, int *present) {
  if (present) *present = gy_yaml_get(c->y, map, name) != 0;
  return gy_yread_double(RD(c), map, prefix, name, min, min_open, max, 0, out);
}

static int parse_detect(ctx_t *c, gy_ynode_t m, gy_policy_t *p) {
  static const char *const fields[] = {"window", "warmup", "z",       "min_delta", "min_rel",
                                       "jump",   "drop",   "on_fire", "sustain",   NULL};
  static const char *const on_fire[] = {"spike", "alert", NULL};
  const char *kinds[GY_SERIES_NKINDS + 1];
  int rc;
  for (int k = 0; k < GY_SERIES_NKINDS; k++)
    kinds[k] = gy_series_kind_name((gy_series_kind_t)k);
  kinds[GY_SERIES_NKINDS] = NULL;
  if ((rc = gy_yread_map(RD(c), m, "detect")) || (rc = gy_yread_keys(RD(c), m, "detect", kinds)))
    return rc;
  for (int k = 0; k < GY_SERIES_NKINDS; k++) {
    gy_ynode_t d = gy_yaml_get(c->y, m, gy_series_kind_name((gy_series_kind_t)k));
    if (!d) continue;
    char pre[64];
    snprintf(pre, sizeof(pre), "detect.%s", gy_series_kind_name((gy_series_kind_t)k));
    if ((rc = gy_yread_map(RD(c), d, pre)) || (rc = gy_yread_keys(RD(c), d, pre, fields)))
      return rc;
    gy_policy_detect_t *o = &p->detect[k];
    if ((rc = get_int(c, d, pre, "window", 2, MAX_WINDOW, &o->window)) ||
        (rc = get_int(c, d, pre, "warmup", 1, MAX_WINDOW, &o->warmup)) ||
        (rc = get_double(c, d, pre, "z", 0, 1, 1e6, &o->z, NULL)) ||
        (rc = get_double(c, d, pre, "min_delta", 0, 0, 1e12, &o->min_delta, NULL)) ||
        (rc = get_double(c, d, pre, "min_rel", 0, 0, 1e6, &o->min_rel, NULL)) ||
        (rc = gy_yread_bool(RD(c), d, pre, "jump", &o->jump)) ||
        (rc = gy_yread_bool(RD(c), d, pre, "drop", &o->drop)) ||
        (rc = gy_yread_enum(RD(c), d, pre, "on_fire", on_fire, &o->alert_only)) ||
        (rc = get_int(c, d, pre, "sustain", 1, 10000, &o->sustain)))
      return rc;
    char why[200];
    if (gy_policy_detect_check(o, why, sizeof(why)))
      return gy_yaml_error(c->y, d, pre, c->errmsg, c->errlen, "%s", why);
  }
  return 0;
}

static int parse_rung(ctx_t *c, gy_ynode_t item, int i, gy_policy_rung_t *g) {
  static const char *const keys[] = {"skip", "knobs", NULL};
  static const char *const skip_keys[] = {"samples", "window", NULL};
  static const char *const win_keys[] = {"before", "after", NULL};
  static const char *const knob_keys[] = {
      "grad_clip_factor", "eps_factor", "shallow_scale", "shallow_layers",
      "lr_scale_factor",  "wsd_decay",  "z_loss",        NULL};
  char pre[64], sub[96];
  int rc;
  snprintf(pre, sizeof(pre), "ladder[%d]", i);
  memset(g, 0, sizeof(*g));
  if ((rc = gy_yread_map(RD(c), item, pre)) || (rc = gy_yread_keys(RD(c), item, pre, keys)))
    return rc;
  gy_ynode_t skip = gy_yaml_get(c->y, item, "skip");
  if (skip) {
    snprintf(sub, sizeof(sub), "%s.skip", pre);
    if ((rc = gy_yread_map(RD(c), skip, sub)) ||
        (rc = gy_yread_keys(RD(c), skip, sub, skip_keys)) ||
        (rc = gy_yread_bool(RD(c), skip, sub, "samples", &g->skip_samples)))
      return rc;
    gy_ynode_t w = gy_yaml_get(c->y, skip, "window");
    if (w) {
      snprintf(sub, sizeof(sub), "%s.skip.window", pre);
      if ((rc = gy_yread_map(RD(c), w, sub)) || (rc = gy_yread_keys(RD(c), w, sub, win_keys)) ||
          (rc = get_int(c, w, sub, "before", 0, 100000, &g->before)) ||
          (rc = get_int(c, w, sub, "after", 0, 100000, &g->after)))
        return rc;
      g->skip_window = 1;
    }
  }
  gy_ynode_t kn = gy_yaml_get(c->y, item, "knobs");
  if (kn) {
    gy_policy_knobs_t *k = &g->knobs;
    int has;
    snprintf(sub, sizeof(sub), "%s.knobs", pre);
    if ((rc = gy_yread_map(RD(c), kn, sub)) || (rc = gy_yread_keys(RD(c), kn, sub, knob_keys)))
      return rc;
    if ((rc = get_double(c, kn, sub, "grad_clip_factor", 0, 1, 1e6, &k->grad_clip_factor, &has)))
      return rc;
    if (has) k->set |= GY_KNOB_GRAD_CLIP;
    if ((rc = get_double(c, kn, sub, "eps_factor", 0, 1, 1e6, &k->eps_factor, &has))) return rc;
    if (has) k->set |= GY_KNOB_EPS;
    if ((rc = get_double(c, kn, sub, "lr_scale_factor", 0, 1, 1e6, &k->lr_scale_factor, &has)))
      return rc;
    if (has) k->set |= GY_KNOB_LR_SCALE;
    if ((rc = get_double(c, kn, sub, "z_loss", 0, 0, 1, &k->z_loss, &has))) return rc;
    if (has) k->set |= GY_KNOB_Z_LOSS;
    int wsd = 0;
    if ((rc = gy_yread_bool(RD(c), kn, sub, "wsd_decay", &wsd))) return rc;
    if (wsd) k->set |= GY_KNOB_WSD_DECAY;
    gy_ynode_t ss = gy_yaml_get(c->y, kn, "shallow_scale");
    gy_ynode_t sl = gy_yaml_get(c->y, kn, "shallow_layers");
    if (!ss != !sl) {
      snprintf(sub, sizeof(sub), "%s.knobs.%s", pre, ss ? "shallow_layers" : "shallow_scale");
      return gy_yaml_error(c->y, kn, sub, c->errmsg, c->errlen,
                           "required key is missing: shallow_scale and shallow_layers go together");
    }
    if (ss) {
      if ((rc = get_double(c, kn, sub, "shallow_scale", 0, 0, 1e6, &k->shallow_scale, NULL)) ||
          (rc = get_int(c, kn, sub, "shallow_layers", 0, 4096, &k->shallow_layers)))
        return rc;
      k->set |= GY_KNOB_SHALLOW;
    }
  }
  if (!g->skip_samples && !g->skip_window && !g->knobs.set)
    return gy_yaml_error(c->y, item, pre, c->errmsg, c->errlen,
                         "this rung does nothing: give it a skip (samples or window) or knobs");
  return 0;
}

/* The `guard:` section into p->guard: every key optional (absent keys keep the default). */
static int parse_guard(ctx_t *c, gy_ynode_t g, gy_guard_opts_t *o) {
  static const char *const keys[] = {"enabled", "window",     "warmup", "max_step_share",
                                     "budget",  "quarantine", "rules",  NULL};
  static const char *const qkeys[] = {"enabled", "max_tokens", "margin", NULL};
  static const char *const rkeys[] = {"z", "floor", "high", "low", NULL};
  const char *stats[GY_GSTAT_COUNT + 1];
  int rc;
  for (int s = 0; s < GY_GSTAT_COUNT; s++)
    stats[s] = gy_guard_stat_name(s);
  stats[GY_GSTAT_COUNT] = NULL;
  if ((rc = gy_yread_map(RD(c), g, "guard")) || (rc = gy_yread_keys(RD(c), g, "guard", keys)) ||
      (rc = gy_yread_bool(RD(c), g, "guard", "enabled", &o->enabled)) ||
      (rc = get_int(c, g, "guard", "window", 8, GY_GUARD_MAX_WINDOW, &o->window)) ||
      (rc = get_int(c, g, "guard", "warmup", 1, GY_GUARD_MAX_WINDOW, &o->warmup)) ||
      (rc = get_double(c, g, "guard", "max_step_share", 0, 1, 1, &o->max_step_share, NULL)) ||
      (rc = get_double(c, g, "guard", "budget", 0, 0, 1, &o->budget, NULL)))
    return rc;
  gy_ynode_t w = gy_yaml_get(c->y, g, "warmup");
  if (o->warmup > o->window)
    return gy_yaml_error(c->y, w ? w : g, "guard.warmup", c->errmsg, c->errlen,
                         "%d is more than guard.window (%d)", o->warmup, o->window);
  gy_ynode_t q = gy_yaml_get(c->y, g, "quarantine");
  if (q) {
    int64_t mt = (int64_t)o->quarantine_max_tokens, mg = (int64_t)o->quarantine_margin;
    if ((rc = gy_yread_map(RD(c), q, "guard.quarantine")) ||
        (rc = gy_yread_keys(RD(c), q, "guard.quarantine", qkeys)) ||
        (rc = gy_yread_bool(RD(c), q, "guard.quarantine", "enabled", &o->quarantine)) ||
        (rc = gy_yread_int(RD(c), q, "guard.quarantine", "max_tokens", 1, (int64_t)1 << 40, &mt,
                           NULL)) ||
        (rc = gy_yread_int(RD(c), q, "guard.quarantine", "margin", 0, (int64_t)1 << 40, &mg, NULL)))
      return rc;
    o->quarantine_max_tokens = (uint64_t)mt;
    o->quarantine_margin = (uint64_t)mg;
  }
  gy_ynode_t rules = gy_yaml_get(c->y, g, "rules");
  if (!rules) return 0;
  if ((rc = gy_yread_map(RD(c), rules, "guard.rules")) ||
      (rc = gy_yread_keys(RD(c), rules, "guard.rules", stats)))
    return rc;
  for (int s = 0; s < GY_GSTAT_COUNT; s++) {
    gy_ynode_t r = gy_yaml_get(c->y, rules, stats[s]);
    if (!r) continue;
    char pre[64];
    snprintf(pre, sizeof(pre), "guard.rules.%s", stats[s]);
    gy_guard_rule_t *x = &o->rule[s];
    if ((rc = gy_yread_map(RD(c), r, pre)) || (rc = gy_yread_keys(RD(c), r, pre, rkeys)) ||
        (rc = get_double(c, r, pre, "z", 0, 0, 1e6, &x->z, NULL)) ||
        (rc = get_double(c, r, pre, "floor", 0, 1, 1e6, &x->floor, NULL)) ||
        (rc = gy_yread_bool(RD(c), r, pre, "high", &x->high)) ||
        (rc = gy_yread_bool(RD(c), r, pre, "low", &x->low)))
      return rc;
  }
  return 0;
}

static int policy_from_doc(ctx_t *c, gy_policy_t *out, const char *path);

int gy_policy_load(gy_policy_t *out, const char *path, char *errmsg, size_t errlen) {
  ctx_t c = {.errmsg = errmsg, .errlen = errlen};
  int rc;
  if (!out || !path) {
    gy_errmsg(errmsg, errlen, "gy_policy_load: no policy or path");
    return GY_EINVAL;
  }
  if ((rc = gy_yaml_load(&c.y, path, errmsg, errlen))) return rc;
  rc = policy_from_doc(&c, out, path);
  gy_yaml_destroy(c.y);
  return rc;
}

int gy_policy_parse(gy_policy_t *out, const char *name, const char *text, size_t len, char *errmsg,
                    size_t errlen) {
  ctx_t c = {.errmsg = errmsg, .errlen = errlen};
  int rc;
  if (!out || !name || !text) {
    gy_errmsg(errmsg, errlen, "gy_policy_parse: no policy, name or text");
    return GY_EINVAL;
  }
  if ((rc = gy_yaml_parse(&c.y, name, text, len, errmsg, errlen))) return rc;
  rc = policy_from_doc(&c, out, name);
  gy_yaml_destroy(c.y);
  return rc;
}

/* The policy in c's document into *out (untouched on error); path names it in messages. */
static int policy_from_doc(ctx_t *c0, gy_policy_t *out, const char *path) {
  static const char *const top[] = {"detect",
                                    "observe_steps",
                                    "recover_tolerance",
                                    "region_steps",
                                    "max_rollbacks",
                                    "max_restarts",
                                    "on_drop",
                                    "ladder",
                                    "guard",
                                    NULL};
  static const char *const on_drop[] = {"ladder", "skip_samples", NULL};
  ctx_t c = *c0;
  char *errmsg = c.errmsg;
  size_t errlen = c.errlen;
  gy_policy_t p;
  int rc;
  gy_policy_default(&p);
  gy_ynode_t root;
  if ((rc = gy_yread_root(RD(&c), "policy", "detect:, ladder:, ...", &root)) ||
      (rc = gy_yread_keys(RD(&c), root, "", top)))
    goto err;
  gy_ynode_t d = gy_yaml_get(c.y, root, "detect");
  if (d && (rc = parse_detect(&c, d, &p))) goto err;
  if ((rc = get_int(&c, root, "", "observe_steps", 0, 10000, &p.observe_steps)) ||
      (rc = get_double(&c, root, "", "recover_tolerance", 0, 0, 1, &p.recover_tolerance, NULL)) ||
      (rc = get_int(&c, root, "", "region_steps", 0, MAX_STEPS, &p.region_steps)) ||
      (rc = get_int(&c, root, "", "max_rollbacks", 1, 100000, &p.max_rollbacks)) ||
      (rc = get_int(&c, root, "", "max_restarts", 0, 100000, &p.max_restarts)) ||
      (rc = gy_yread_enum(RD(&c), root, "", "on_drop", on_drop, &p.drop_skip_samples)))
    goto err;
  gy_ynode_t gd = gy_yaml_get(c.y, root, "guard");
  if (gd && (rc = parse_guard(&c, gd, &p.guard))) goto err;
  gy_ynode_t lad = gy_yaml_get(c.y, root, "ladder");
  if (lad) {
    int n = gy_yaml_seq_len(c.y, lad);
    if (!gy_yaml_is_seq(c.y, lad) || n < 1 || n > GY_POLICY_MAX_RUNGS) {
      char got[80];
      gy_yaml_describe(c.y, lad, got, sizeof(got));
      rc = gy_yaml_error(c.y, lad, "ladder", errmsg, errlen,
                         "expected a list of 1 to %d rungs, got %s", GY_POLICY_MAX_RUNGS,
                         gy_yaml_is_seq(c.y, lad) ? (n ? "too many" : "an empty list") : got);
      goto err;
    }
    for (int i = 0; i < n; i++)
      if ((rc = parse_rung(&c, gy_yaml_seq_item(c.y, lad, i), i, &p.rung[i]))) goto err;
    for (int i = n; i < GY_POLICY_MAX_RUNGS; i++)
      memset(&p.rung[i], 0, sizeof(p.rung[i]));
    p.nrungs = n;
  }
  /* Safety net: every value was range-checked above with the same bounds. */
  char why[200];
  if (gy_policy_check(&p, why, sizeof(why))) {
    gy_errmsg(errmsg, errlen, "%s: %s", path, why);
    rc = GY_ECONFIG;
    goto err;
  }
  *out = p;
  return 0;
err:
  return rc;
}
