/*
 * policy: the fix-on-the-fly policy as a plain value, and the pure decision. No I/O: the policy
 * file is read by config/policy_file.c.
 *
 * API, in order: names; gy_policy_default, gy_policy_check, gy_policy_detect_check;
 * gy_policy_format (as YAML text), gy_policy_equal; gy_policy_decide,
 * gy_policy_decision_format.
 *
 * The file's schema (every key optional; absent keys keep the built-in default):
 *   detect:            <kind>: {window, warmup, z, min_delta, min_rel, jump, drop,
 *                      on_fire: spike|alert, sustain} for kind in loss, channel_loss, grad_norm,
 *                      grad_norm_shallow, ppl, throughput (absent fields keep the default)
 *   observe_steps, recover_tolerance, region_steps, max_rollbacks, max_restarts,
 *   on_drop:           skip_samples | ladder
 *   ladder:            [{skip: {samples: bool, window: {before, after}},
 *                        knobs: {grad_clip_factor, eps_factor, shallow_scale, shallow_layers,
 *                                lr_scale_factor, wsd_decay, z_loss}}]  (replaces the default)
 *   guard:             {enabled, window, warmup, max_step_share, budget,
 *                       quarantine: {enabled, max_tokens, margin},
 *                       rules: {<stat>: {z, floor, high, low}}} for stat in loss, entropy,
 *                      repeat, nontext, highbyte, markup (policies/guard_policy.h; absent keys keep
 * the default)
 *
 * Invariants:
 * - gy_policy_default() and examples/policies/default.yaml are the same policy (a unit test
 *   loads the file and compares every field).
 * - A policy that passed gy_policy_check is what the file reader returns; on any error the
 *   caller's policy is untouched, so a refused file never half-applies.
 * - gy_policy_decide is a pure function of its arguments and is bounded: it never returns
 *   ROLLBACK for a repair once max_rollbacks repairs are in the history, nor for a lost worker
 *   once max_restarts restarts are, nor on a rung past the ladder.
 */
#include "policy.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"

/* ---------------------------------------- names ---------------------------------------- */

static const char *const kind_names[] = {
#define GY_SERIES_KIND_STR(name, str) str,
    GY_SERIES_KIND_MAP(GY_SERIES_KIND_STR)
#undef GY_SERIES_KIND_STR
};

const char *gy_series_kind_name(gy_series_kind_t k) {
  return (k >= 0 && k < GY_SERIES_NKINDS) ? kind_names[k] : "?";
}

const char *gy_trigger_name(gy_trigger_t t) {
  static const char *const names[] = {"spike",       "spike_persists", "drop",  "nonfinite",
                                      "worker_lost", "operator",       "masked"};
  return (t >= 0 && t < GY_TRIG_COUNT) ? names[t] : "?";
}

const char *gy_action_name(gy_action_t a) {
  static const char *const names[] = {"RECOVER_WATCH", "ROLLBACK", "HALT"};
  return (a >= 0 && a <= GY_ACTION_HALT) ? names[a] : "?";
}

/* --------------------------------------- defaults --------------------------------------- */

static gy_policy_detect_t det(int window, int warmup, double z, double min_delta, double min_rel,
                              int jump, int drop, int alert_only, int sustain) {
  gy_policy_detect_t d = {window, warmup, z, min_delta, min_rel, jump, drop, alert_only, sustain};
  return d;
}

void gy_policy_default(gy_policy_t *p) {
  memset(p, 0, sizeof(*p));
  p->detect[GY_SERIES_LOSS] = det(64, 16, 6, 0.1, 0, 1, 1, 0, 1);
  p->detect[GY_SERIES_CHANNEL_LOSS] = det(64, 16, 6, 0.1, 0, 1, 1, 0, 1);
  p->detect[GY_SERIES_GRAD_NORM] = det(64, 16, 8, 0, 1, 1, 0, 0, 1);
  p->detect[GY_SERIES_GRAD_NORM_SHALLOW] = det(64, 16, 8, 0, 1, 1, 0, 0, 1);
  p->detect[GY_SERIES_PPL] = det(16, 4, 6, 0, 0.05, 1, 0, 0, 1);
  p->detect[GY_SERIES_THROUGHPUT] = det(32, 8, 8, 0, 0.3, 0, 1, 1, 5);
  p->observe_steps = 3;
  p->recover_tolerance = 0.5;
  p->region_steps = 200;
  p->max_rollbacks = 8;
  p->max_restarts = 100;
  gy_guard_default(&p->guard);
  p->drop_skip_samples = 1;
  p->nrungs = 4;
  p->rung[0].skip_samples = 1;
  for (int r = 1; r < 4; r++) {
    p->rung[r].skip_window = 1;
    p->rung[r].before = 2;
    p->rung[r].after = 2;
  }
  p->rung[2].knobs.set = GY_KNOB_GRAD_CLIP | GY_KNOB_EPS | GY_KNOB_SHALLOW;
  p->rung[2].knobs.grad_clip_factor = 0.5;
  p->rung[2].knobs.eps_factor = 0.1;
  p->rung[2].knobs.shallow_scale = 0.5;
  p->rung[2].knobs.shallow_layers = 1;
  p->rung[3].knobs.set = GY_KNOB_LR_SCALE | GY_KNOB_WSD_DECAY | GY_KNOB_Z_LOSS;
  p->rung[3].knobs.lr_scale_factor = 0.5;
  p->rung[3].knobs.z_loss = 1.0e-4;
}

/* ---------------------------------------- checks ---------------------------------------- */

#define MAX_WINDOW GY_POLICY_MAX_WINDOW
#define MAX_STEPS GY_POLICY_MAX_STEPS

int gy_policy_detect_check(const gy_policy_detect_t *d, char *errmsg, size_t errlen) {
  if (d->sustain < 0 || d->sustain > 10000) { /* 0 counts as 1 */
    gy_errmsg(errmsg, errlen, "sustain %d is outside 1..10000", d->sustain);
    return GY_ECONFIG;
  }
  if (d->window < 2 || d->window > MAX_WINDOW) {
    gy_errmsg(errmsg, errlen, "window %d is outside 2..%d", d->window, MAX_WINDOW);
    return GY_ECONFIG;
  }
  if (d->warmup < 1 || d->warmup > d->window) {
    gy_errmsg(errmsg, errlen, "warmup %d is outside 1..window (%d)", d->warmup, d->window);
    return GY_ECONFIG;
  }
  if (!(d->z > 0) || !isfinite(d->z)) {
    gy_errmsg(errmsg, errlen, "z %g must be a finite number > 0", d->z);
    return GY_ECONFIG;
  }
  if (!(d->min_delta >= 0) || !isfinite(d->min_delta) || !(d->min_rel >= 0) ||
      !isfinite(d->min_rel)) {
    gy_errmsg(errmsg, errlen, "min_delta %g and min_rel %g must be finite numbers >= 0",
              d->min_delta, d->min_rel);
    return GY_ECONFIG;
  }
  if (!d->jump && !d->drop) {
    gy_errmsg(errmsg, errlen, "jump and drop are both off: the detector could never fire");
    return GY_ECONFIG;
  }
  return 0;
}

static int knobs_check(const gy_policy_knobs_t *k, char *errmsg, size_t errlen) {
  const uint32_t all = GY_KNOB_GRAD_CLIP | GY_KNOB_EPS | GY_KNOB_SHALLOW | GY_KNOB_LR_SCALE |
                       GY_KNOB_WSD_DECAY | GY_KNOB_Z_LOSS;
  if (k->set & ~all) {
    gy_errmsg(errmsg, errlen, "unknown knob bits 0x%x", k->set & ~all);
    return GY_ECONFIG;
  }
  struct {
    uint32_t bit;
    const char *name;
    double v, lo, hi;
    int lo_open;
  } f[] = {{GY_KNOB_GRAD_CLIP, "grad_clip_factor", k->grad_clip_factor, 0, 1e6, 1},
           {GY_KNOB_EPS, "eps_factor", k->eps_factor, 0, 1e6, 1},
           {GY_KNOB_LR_SCALE, "lr_scale_factor", k->lr_scale_factor, 0, 1e6, 1},
           {GY_KNOB_SHALLOW, "shallow_scale", k->shallow_scale, 0, 1e6, 0},
           {GY_KNOB_Z_LOSS, "z_loss", k->z_loss, 0, 1, 0}};
  for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++) {
    if (!(k->set & f[i].bit)) continue;
    double v = f[i].v;
    if (!isfinite(v) || v > f[i].hi || v < f[i].lo || (f[i].lo_open && v == f[i].lo)) {
      gy_errmsg(errmsg, errlen, "%s %g is outside %s%g, %g]", f[i].name, v,
                f[i].lo_open ? "(" : "[", f[i].lo, f[i].hi);
      return GY_ECONFIG;
    }
  }
  if ((k->set & GY_KNOB_SHALLOW) && (k->shallow_layers < 0 || k->shallow_layers > 4096)) {
    gy_errmsg(errmsg, errlen, "shallow_layers %d is outside 0..4096", k->shallow_layers);
    return GY_ECONFIG;
  }
  return 0;
}

int gy_policy_check(const gy_policy_t *p, char *errmsg, size_t errlen) {
  char why[200];
  for (int k = 0; k < GY_SERIES_NKINDS; k++)
    if (gy_policy_detect_check(&p->detect[k], why, sizeof(why))) {
      gy_errmsg(errmsg, errlen, "detect.%s: %s", gy_series_kind_name(k), why);
      return GY_ECONFIG;
    }
  if (gy_guard_check(&p->guard, why, sizeof(why))) {
    gy_errmsg(errmsg, errlen, "%s", why);
    return GY_ECONFIG;
  }
  if (p->observe_steps < 0 || p->observe_steps > 10000) {
    gy_errmsg(errmsg, errlen, "observe_steps %d is outside 0..10000", p->observe_steps);
    return GY_ECONFIG;
  }
  if (!(p->recover_tolerance >= 0 && p->recover_tolerance <= 1)) {
    gy_errmsg(errmsg, errlen, "recover_tolerance %g is outside [0, 1]", p->recover_tolerance);
    return GY_ECONFIG;
  }
  if (p->region_steps < 0 || p->region_steps > MAX_STEPS) {
    gy_errmsg(errmsg, errlen, "region_steps %d is outside 0..%d", p->region_steps, MAX_STEPS);
    return GY_ECONFIG;
  }
  if (p->max_rollbacks < 1 || p->max_rollbacks > 100000 || p->max_restarts < 0 ||
      p->max_restarts > 100000) {
    gy_errmsg(errmsg, errlen,
              "max_rollbacks %d must be in 1..100000 and max_restarts %d in 0..100000",
              p->max_rollbacks, p->max_restarts);
    return GY_ECONFIG;
  }
  if (p->nrungs < 1 || p->nrungs > GY_POLICY_MAX_RUNGS) {
    gy_errmsg(errmsg, errlen, "the ladder has %d rungs; it needs 1..%d", p->nrungs,
              GY_POLICY_MAX_RUNGS);
    return GY_ECONFIG;
  }
  for (int r = 0; r < p->nrungs; r++) {
    const gy_policy_rung_t *g = &p->rung[r];
    if (!g->skip_samples && !g->skip_window && !g->knobs.set) {
      gy_errmsg(errmsg, errlen, "ladder[%d] does nothing: give it a skip or a knob", r);
      return GY_ECONFIG;
    }
    if (g->skip_window &&
        (g->before < 0 || g->before > 100000 || g->after < 0 || g->after > 100000)) {
      gy_errmsg(errmsg, errlen,
                "ladder[%d].skip.window: before %d and after %d must be in "
                "0..100000",
                r, g->before, g->after);
      return GY_ECONFIG;
    }
    if (knobs_check(&g->knobs, why, sizeof(why))) {
      gy_errmsg(errmsg, errlen, "ladder[%d].knobs: %s", r, why);
      return GY_ECONFIG;
    }
  }
  return 0;
}

/* ---------------------------------------- format ---------------------------------------- */

/* Shortest of %g and %.17g that reads back to exactly v. */
static const char *num(char *buf, size_t len, double v) {
  snprintf(buf, len, "%.6g", v);
  if (strtod(buf, NULL) != v) snprintf(buf, len, "%.17g", v);
  return buf;
}

typedef struct {
  char *buf;
  size_t len, o;
} out_t;

static void put(out_t *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(out_t *w, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n =
      vsnprintf(w->o < w->len ? w->buf + w->o : NULL, w->o < w->len ? w->len - w->o : 0, fmt, ap);
  va_end(ap);
  if (n > 0) w->o += (size_t)n;
}

size_t gy_policy_format(const gy_policy_t *p, char *buf, size_t len) {
  out_t w = {buf, buf ? len : 0, 0};
  char a[32], b[32], z[32];
  if (w.len) buf[0] = '\0';
  put(&w, "detect:\n");
  for (int k = 0; k < GY_SERIES_NKINDS; k++) {
    const gy_policy_detect_t *d = &p->detect[k];
    put(&w,
        "  %s: {window: %d, warmup: %d, z: %s, min_delta: %s, min_rel: %s, jump: %s, drop: %s, "
        "on_fire: %s, sustain: %d}\n",
        kind_names[k], d->window, d->warmup, num(z, sizeof(z), d->z),
        num(a, sizeof(a), d->min_delta), num(b, sizeof(b), d->min_rel), d->jump ? "true" : "false",
        d->drop ? "true" : "false", d->alert_only ? "alert" : "spike", d->sustain);
  }
  put(&w, "observe_steps: %d\nrecover_tolerance: %s\nregion_steps: %d\nmax_rollbacks: %d\n",
      p->observe_steps, num(a, sizeof(a), p->recover_tolerance), p->region_steps, p->max_rollbacks);
  put(&w, "max_restarts: %d\non_drop: %s\n", p->max_restarts,
      p->drop_skip_samples ? "skip_samples" : "ladder");
  const gy_guard_opts_t *gd = &p->guard;
  put(&w, "guard:\n  enabled: %s\n  window: %d\n  warmup: %d\n  max_step_share: %s\n",
      gd->enabled ? "true" : "false", gd->window, gd->warmup,
      num(a, sizeof(a), gd->max_step_share));
  put(&w, "  budget: %s\n  quarantine: {enabled: %s, max_tokens: %llu, margin: %llu}\n  rules:\n",
      num(a, sizeof(a), gd->budget), gd->quarantine ? "true" : "false",
      (unsigned long long)gd->quarantine_max_tokens, (unsigned long long)gd->quarantine_margin);
  for (int s = 0; s < GY_GSTAT_COUNT; s++) {
    const gy_guard_rule_t *r = &gd->rule[s];
    put(&w, "    %s: {z: %s, floor: %s, high: %s, low: %s}\n", gy_guard_stat_name(s),
        num(z, sizeof(z), r->z), num(a, sizeof(a), r->floor), r->high ? "true" : "false",
        r->low ? "true" : "false");
  }
  put(&w, "ladder:\n");
  for (int r = 0; r < p->nrungs; r++) {
    const gy_policy_rung_t *g = &p->rung[r];
    const gy_policy_knobs_t *k = &g->knobs;
    const char *lead = "  - ";
    if (g->skip_samples || g->skip_window) {
      put(&w, "%sskip: {samples: %s", lead, g->skip_samples ? "true" : "false");
      if (g->skip_window) put(&w, ", window: {before: %d, after: %d}", g->before, g->after);
      put(&w, "}\n");
      lead = "    ";
    }
    if (k->set) {
      const char *sep = "";
      put(&w, "%sknobs: {", lead);
      if (k->set & GY_KNOB_GRAD_CLIP) {
        put(&w, "%sgrad_clip_factor: %s", sep, num(a, sizeof(a), k->grad_clip_factor));
        sep = ", ";
      }
      if (k->set & GY_KNOB_EPS) {
        put(&w, "%seps_factor: %s", sep, num(a, sizeof(a), k->eps_factor));
        sep = ", ";
      }
      if (k->set & GY_KNOB_SHALLOW) {
        put(&w, "%sshallow_scale: %s, shallow_layers: %d", sep, num(a, sizeof(a), k->shallow_scale),
            k->shallow_layers);
        sep = ", ";
      }
      if (k->set & GY_KNOB_LR_SCALE) {
        put(&w, "%slr_scale_factor: %s", sep, num(a, sizeof(a), k->lr_scale_factor));
        sep = ", ";
      }
      if (k->set & GY_KNOB_WSD_DECAY) {
        put(&w, "%swsd_decay: true", sep);
        sep = ", ";
      }
      if (k->set & GY_KNOB_Z_LOSS) put(&w, "%sz_loss: %s", sep, num(a, sizeof(a), k->z_loss));
      put(&w, "}\n");
    }
  }
  return w.o;
}

static int knobs_equal(const gy_policy_knobs_t *a, const gy_policy_knobs_t *b) {
  if (a->set != b->set) return 0;
  uint32_t s = a->set;
  return (!(s & GY_KNOB_GRAD_CLIP) || a->grad_clip_factor == b->grad_clip_factor) &&
         (!(s & GY_KNOB_EPS) || a->eps_factor == b->eps_factor) &&
         (!(s & GY_KNOB_LR_SCALE) || a->lr_scale_factor == b->lr_scale_factor) &&
         (!(s & GY_KNOB_SHALLOW) ||
          (a->shallow_scale == b->shallow_scale && a->shallow_layers == b->shallow_layers)) &&
         (!(s & GY_KNOB_Z_LOSS) || a->z_loss == b->z_loss);
}

int gy_policy_equal(const gy_policy_t *a, const gy_policy_t *b) {
  for (int k = 0; k < GY_SERIES_NKINDS; k++) {
    const gy_policy_detect_t *x = &a->detect[k], *y = &b->detect[k];
    if (x->window != y->window || x->warmup != y->warmup || x->z != y->z ||
        x->min_delta != y->min_delta || x->min_rel != y->min_rel || x->jump != y->jump ||
        x->drop != y->drop || x->alert_only != y->alert_only || x->sustain != y->sustain)
      return 0;
  }
  if (a->observe_steps != b->observe_steps || a->recover_tolerance != b->recover_tolerance ||
      a->region_steps != b->region_steps || a->max_rollbacks != b->max_rollbacks ||
      a->max_restarts != b->max_restarts || a->drop_skip_samples != b->drop_skip_samples ||
      a->nrungs != b->nrungs)
    return 0;
  if (!gy_guard_equal(&a->guard, &b->guard)) return 0;
  for (int r = 0; r < a->nrungs; r++) {
    const gy_policy_rung_t *x = &a->rung[r], *y = &b->rung[r];
    if (x->skip_samples != y->skip_samples || x->skip_window != y->skip_window ||
        (x->skip_window && (x->before != y->before || x->after != y->after)) ||
        !knobs_equal(&x->knobs, &y->knobs))
      return 0;
  }
  return 1;
}

/* --------------------------------------- decisions --------------------------------------- */

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

/* Folds rung knobs k into the cumulative acc: factors multiply, absolute values replace. */
static void knobs_add(gy_policy_knobs_t *acc, const gy_policy_knobs_t *k) {
  if (k->set & GY_KNOB_GRAD_CLIP)
    acc->grad_clip_factor =
        (acc->set & GY_KNOB_GRAD_CLIP ? acc->grad_clip_factor : 1.0) * k->grad_clip_factor;
  if (k->set & GY_KNOB_EPS)
    acc->eps_factor = (acc->set & GY_KNOB_EPS ? acc->eps_factor : 1.0) * k->eps_factor;
  if (k->set & GY_KNOB_LR_SCALE)
    acc->lr_scale_factor =
        (acc->set & GY_KNOB_LR_SCALE ? acc->lr_scale_factor : 1.0) * k->lr_scale_factor;
  if (k->set & GY_KNOB_SHALLOW) {
    acc->shallow_scale = k->shallow_scale;
    acc->shallow_layers = k->shallow_layers;
  }
  if (k->set & GY_KNOB_Z_LOSS) acc->z_loss = k->z_loss;
  acc->set |= k->set;
}

/* Copies the attributed ids into d, sorted and distinct, at most GY_POLICY_MAX_SAMPLES. */
static void take_samples(gy_policy_decision_t *d, const gy_policy_input_t *in) {
  uint64_t *tmp = NULL;
  int n = in->samples ? in->nsamples : 0;
  d->nsamples = 0;
  d->samples_dropped = 0;
  if (n <= 0) return;
  /* Sort a copy; with no memory for it, fall back to first-come (still distinct). */
  if ((tmp = malloc((size_t)n * sizeof(*tmp)))) {
    memcpy(tmp, in->samples, (size_t)n * sizeof(*tmp));
    qsort(tmp, (size_t)n, sizeof(*tmp), cmp_u64);
  }
  const uint64_t *src = tmp ? tmp : in->samples;
  for (int i = 0; i < n; i++) {
    int dup = 0;
    if (tmp)
      dup = i > 0 && src[i] == src[i - 1];
    else
      for (int j = 0; j < d->nsamples && !dup; j++)
        dup = d->samples[j] == src[i];
    if (dup) continue;
    if (d->nsamples < GY_POLICY_MAX_SAMPLES)
      d->samples[d->nsamples++] = src[i];
    else
      d->samples_dropped++;
  }
  if (!tmp) qsort(d->samples, (size_t)d->nsamples, sizeof(uint64_t), cmp_u64);
  free(tmp);
}

int gy_policy_decide(const gy_policy_t *p, const gy_policy_input_t *in,
                     const gy_policy_repair_t *hist, int nhist, gy_policy_decision_t *out) {
  if (!p || !in || !out || nhist < 0 || (nhist > 0 && !hist) || in->trigger < 0 ||
      in->trigger >= GY_TRIG_COUNT || in->last_step < in->first_step || in->first_step < 0 ||
      in->nsamples < 0)
    return GY_EINVAL;
  gy_policy_decision_t *d = out;
  memset(d, 0, sizeof(*d));
  d->trigger = in->trigger;
  int64_t s = in->first_step;

  if (in->trigger == GY_TRIG_OPERATOR) {
    d->action = GY_ACTION_ROLLBACK;
    snprintf(d->reason, sizeof(d->reason), "operator rollback from step %lld, no skip",
             (long long)s);
    return 0;
  }
  if (in->trigger == GY_TRIG_WORKER_LOST) {
    int restarts = 0;
    for (int i = 0; i < nhist; i++)
      restarts += hist[i].trigger == GY_TRIG_WORKER_LOST;
    if (restarts >= p->max_restarts) {
      d->action = GY_ACTION_HALT;
      snprintf(d->reason, sizeof(d->reason),
               "a worker was lost at step %lld and max_restarts (%d) restarts were made already",
               (long long)s, p->max_restarts);
      return 0;
    }
    d->action = GY_ACTION_ROLLBACK;
    snprintf(d->reason, sizeof(d->reason),
             "a worker was lost at step %lld: roll back to the last clean checkpoint, no skip "
             "(restart %d of %d)",
             (long long)s, restarts + 1, p->max_restarts);
    return 0;
  }
  if (in->trigger == GY_TRIG_SPIKE && p->observe_steps > 0) {
    d->action = GY_ACTION_RECOVER_WATCH;
    d->observe_steps = p->observe_steps;
    snprintf(d->reason, sizeof(d->reason), "spike suspected at step %lld: watching %d more steps",
             (long long)s, p->observe_steps);
    return 0;
  }

  /* A repair: which rung? The newest repair that used a rung decides whether this is a
   * repeat in the same region. */
  int repairs = 0, last = -1;
  for (int i = 0; i < nhist; i++)
    if (hist[i].rung > 0) {
      repairs++;
      last = i;
    }
  int rung = 1;
  int64_t dist = -1;
  if (last >= 0) {
    dist = s - hist[last].step;
    if (dist < 0) dist = -dist;
    if (dist <= p->region_steps) rung = hist[last].rung + 1;
  }
  d->rung = rung;
  if (repairs >= p->max_rollbacks) {
    d->action = GY_ACTION_HALT;
    snprintf(d->reason, sizeof(d->reason),
             "%s at step %lld: max_rollbacks (%d) repairs were made already; a human decides",
             gy_trigger_name(in->trigger), (long long)s, p->max_rollbacks);
    return 0;
  }
  if (rung > p->nrungs) {
    d->action = GY_ACTION_HALT;
    snprintf(d->reason, sizeof(d->reason),
             "%s at step %lld, %lld steps from the last repair on rung %d: the ladder (%d rungs) "
             "is exhausted; a human decides",
             gy_trigger_name(in->trigger), (long long)s, (long long)dist, rung - 1, p->nrungs);
    return 0;
  }
  const gy_policy_rung_t *g = &p->rung[rung - 1];
  d->action = GY_ACTION_ROLLBACK;
  if (g->skip_samples || (in->trigger == GY_TRIG_DROP && p->drop_skip_samples)) take_samples(d, in);
  if (g->skip_window) {
    d->skip_steps = 1;
    d->step_first = s - g->before < 0 ? 0 : s - g->before;
    d->step_last = in->last_step + g->after + 1;
  }
  for (int r = 0; r < rung; r++)
    knobs_add(&d->knobs, &p->rung[r].knobs);
  if (last >= 0 && rung > 1)
    snprintf(d->reason, sizeof(d->reason),
             "%s at step %lld, %lld steps from the last repair (rung %d, within region_steps %d): "
             "rung %d (repair %d of %d)",
             gy_trigger_name(in->trigger), (long long)s, (long long)dist, rung - 1, p->region_steps,
             rung, repairs + 1, p->max_rollbacks);
  else
    snprintf(d->reason, sizeof(d->reason), "%s at step %lld: rung %d (repair %d of %d)",
             gy_trigger_name(in->trigger), (long long)s, rung, repairs + 1, p->max_rollbacks);
  return 0;
}

void gy_policy_decision_format(const gy_policy_decision_t *d, char *buf, size_t len) {
  out_t w = {buf, buf ? len : 0, 0};
  char a[32];
  if (w.len) buf[0] = '\0';
  put(&w, "%s", gy_action_name(d->action));
  if (d->rung) put(&w, " rung %d", d->rung);
  if (d->action == GY_ACTION_RECOVER_WATCH) put(&w, ": watch %d steps", d->observe_steps);
  if (d->action != GY_ACTION_ROLLBACK) return;
  if (!d->nsamples && !d->skip_steps) put(&w, ": no skip");
  if (d->nsamples) {
    put(&w, ": skip %d sample%s [", d->nsamples, d->nsamples == 1 ? "" : "s");
    for (int i = 0; i < d->nsamples && i < 8; i++)
      put(&w, "%s%llu", i ? " " : "", (unsigned long long)d->samples[i]);
    put(&w, "%s]", d->nsamples > 8 ? " ..." : "");
  }
  if (d->skip_steps)
    put(&w, "%s skip steps [%lld, %lld)", d->nsamples ? "," : ":", (long long)d->step_first,
        (long long)d->step_last);
  const gy_policy_knobs_t *k = &d->knobs;
  if (k->set & GY_KNOB_GRAD_CLIP)
    put(&w, ", grad_clip x%s", num(a, sizeof(a), k->grad_clip_factor));
  if (k->set & GY_KNOB_EPS) put(&w, ", eps x%s", num(a, sizeof(a), k->eps_factor));
  if (k->set & GY_KNOB_SHALLOW)
    put(&w, ", shallow_scale %s on %d layer%s", num(a, sizeof(a), k->shallow_scale),
        k->shallow_layers, k->shallow_layers == 1 ? "" : "s");
  if (k->set & GY_KNOB_LR_SCALE) put(&w, ", lr_scale x%s", num(a, sizeof(a), k->lr_scale_factor));
  if (k->set & GY_KNOB_WSD_DECAY) put(&w, ", WSD decay");
  if (k->set & GY_KNOB_Z_LOSS) put(&w, ", z_loss %s", num(a, sizeof(a), k->z_loss));
}
