/*
 * run_save: the run's record as JSON text (see run.c), so that a successor controller goes on
 * where this one stopped: the detectors' baselines and the repair history.
 *
 * API, in order: save, load (gy_run_save, gy_run_load of run.h).
 *
 * Invariants:
 * - load changes nothing when the text is refused (an error in errmsg), and nothing but new,
 *   empty series when memory runs out: it allocates everything before it sets a value or
 *   appends a repair, so a load given again after GY_ENOMEM does not count a repair twice.
 */
#include "controller/run_internal.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/err.h"

/* ------------------------------------ save and load ------------------------------------ */

char *gy_run_save(const gy_run_t *r) {
  json_t *o = json_object(), *series = json_array(), *reps = json_array();
  double *vals = NULL;
  int maxw = 0;
  for (int i = 0; i < gy_detect_count(r->det); i++) {
    const gy_series_t *s = gy_detect_at(r->det, i);
    if (gy_series_opts(s)->window > maxw) maxw = gy_series_opts(s)->window;
  }
  if (!(vals = gy_malloc((size_t)(maxw ? maxw : 1) * sizeof(*vals)))) goto oom;
  for (int i = 0; i < gy_detect_count(r->det); i++) {
    const gy_series_t *s = gy_detect_at(r->det, i);
    int n = gy_series_values(s, vals, maxw);
    json_t *a = json_array();
    for (int k = 0; k < n && k < maxw; k++)
      json_array_append_new(a, json_real(vals[k]));
    json_array_append_new(series, json_pack("{s:s, s:i, s:o}", "name", gy_series_name(s), "kind",
                                            (int)r->kinds[i], "values", a));
  }
  for (int i = r->hist_base; i < r->nhist; i++)
    json_array_append_new(reps, json_pack("[I, i, i]", (json_int_t)r->hist[i].step, r->hist[i].rung,
                                          (int)r->hist[i].trigger));
  json_object_set_new(o, "series", series);
  json_object_set_new(o, "repairs", reps);
  json_object_set_new(o, "replay_until", json_integer((json_int_t)r->replay_until));
  gy_free(vals);
  char *text = json_dumps(o, JSON_COMPACT);
  json_decref(o);
  return text;
oom:
  json_decref(o);
  json_decref(series);
  json_decref(reps);
  return NULL;
}

int gy_run_load(gy_run_t *r, const char *text, int what, char *errmsg, size_t errlen) {
  json_error_t je;
  json_t *o = json_loads(text ? text : "", 0, &je), *series, *reps;
  double *vals = NULL;
  int rc = GY_EINVAL;
  if (!o || json_unpack(o, "{s:o, s:o}", "series", &series, "repairs", &reps) ||
      !json_is_array(series) || !json_is_array(reps)) {
    gy_errmsg(errmsg, errlen, "run snapshot: not one (%s)", o ? "fields" : je.text);
    goto out;
  }
  size_t i;
  json_t *e;
  if (!(what & GY_RUN_LOAD_BASELINES)) series = NULL;
  if (!(what & GY_RUN_LOAD_REPAIRS)) reps = NULL;
  /* Memory first: room for the kinds of new series, the repairs and the longest values. */
  size_t maxn = 1, nseries = json_array_size(series), nreps = json_array_size(reps);
  json_array_foreach(series, i, e) {
    size_t n = json_array_size(json_object_get(e, "values"));
    if (n > maxn) maxn = n;
  }
  size_t kcap = (size_t)r->capkinds, hcap = (size_t)r->caphist;
  if (gy__run_grow((void **)&r->kinds, &kcap, (size_t)gy_detect_count(r->det) + nseries,
                   sizeof(*r->kinds)) ||
      gy__run_grow((void **)&r->hist, &hcap, (size_t)r->nhist + nreps, sizeof(*r->hist)) ||
      !(vals = gy_malloc(maxn * sizeof(*vals)))) {
    r->capkinds = (int)kcap;
    r->caphist = (int)hcap;
    rc = GY_ENOMEM;
    goto out;
  }
  r->capkinds = (int)kcap;
  r->caphist = (int)hcap;
  /* Then every series (new ones empty), and only then the values and repairs. */
  for (int pass = 0; pass < 2; pass++) {
    json_array_foreach(series, i, e) {
      const char *name;
      int kind;
      json_t *a;
      if (json_unpack(e, "{s:s, s:i, s:o}", "name", &name, "kind", &kind, "values", &a) ||
          !json_is_array(a) || kind < 0 || kind >= GY_SERIES_NKINDS)
        continue;
      int before = gy_detect_count(r->det);
      gy_series_t *s =
          pass ? gy_detect_get(r->det, name) : gy_detect_ensure(r->det, name, &r->pol.detect[kind]);
      if (!s) {
        if (pass || strlen(name) >= GY_DETECT_NAME_MAX || !*name) continue; /* a bad name */
        rc = GY_ENOMEM;
        goto out;
      }
      if (gy_detect_count(r->det) > before) r->kinds[before] = (gy_series_kind_t)kind;
      if (!pass) continue;
      size_t n = json_array_size(a);
      for (size_t k = 0; k < n; k++)
        vals[k] = json_number_value(json_array_get(a, k));
      gy_series_set_values(s, vals, (int)n);
    }
  }
  json_array_foreach(reps, i, e) {
    json_int_t step;
    int rung, trig;
    if (json_unpack(e, "[I, i, i]", &step, &rung, &trig)) continue;
    r->hist[r->nhist++] =
        (gy_policy_repair_t){.step = step, .rung = rung, .trigger = (gy_trigger_t)trig};
  }
  if (what & GY_RUN_LOAD_REPAIRS) {
    json_t *ru = json_object_get(o, "replay_until"); /* absent in older snapshots */
    if (json_is_integer(ru) && json_integer_value(ru) > r->replay_until)
      r->replay_until = (int64_t)json_integer_value(ru);
  }
  rc = 0;
out:
  gy_free(vals);
  json_decref(o);
  return rc;
}
