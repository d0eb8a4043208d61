/*
 * telemetry_json: the telemetry's JSON readers (see telemetry.c): /api/series and the events.
 *
 * API, in order: series, events, event kinds (gy_telemetry_series, gy_telemetry_events,
 * gy_telemetry_event_kinds of telemetry.h).
 *
 * /api/series (gy_telemetry_series) is one JSON object, columns rather than rows so that the
 * dashboard hands them to its charts as they are (null for NaN):
 *   {"run", "state", "step", "steps_total", "generation", "gang", "world", "timeline",
 *    "channels": [NAME...], "since", "stride",
 *    "steps": [S...], "loss": [...], "loss_ch": {NAME: [...]}, "grad_norm": [...],
 *    "grad_norm_shallow": [...], "grad_norm_deep": [...], "lr": [...], "tokens_per_s": [...],
 *    "step_ms": [...], "nonfinite": [0|1...], "rank_tokens_per_s": [[rank 0...], ...],
 *    "abandoned": [{"timeline", "steps", "loss", "loss_ch", "grad_norm", ...}] (since < 0 only),
 *    "eval": [{"step", "source", "loss", "ppl", "cloze" (accuracy or null), "checkpoint"}...],
 *    "ranks": [{"rank", "tokens_per_s", "gpu_temp_c", "gpu_mem_bytes", "gpu_util"}...],
 *    "counters": {"spikes_detected", "spikes_recovered", "rollbacks", "samples_skipped",
 *                 "directives", "reports", "nonfinite_steps", "events", "checkpoints"},
 *    "checkpoint": {"step", "age_s", "bytes"} | null}
 *
 * Invariants:
 * - The record is copied out under mu (snap_take and the points) and formatted outside it.
 */
#include "controller/telemetry_internal.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"

/* ---- /api/series ---- */

/* A JSON string of s; bytes that are not UTF-8 become '?' (json_string refuses them). */
static json_t *jstr(const char *s) {
  json_t *j = json_string(s ? s : "");
  if (j) return j;
  char *c = strdup(s);
  if (!c) return json_null();
  for (unsigned char *p = (unsigned char *)c; *p; p++)
    if (*p >= 0x80) *p = '?';
  j = json_string(c);
  free(c);
  return j ? j : json_null();
}

static json_t *jnum(double v) {
  return isfinite(v) ? json_real(v) : json_null();
}

/* The columns of n points (and, when rk, their nrk rank rates) into o. */
static void put_columns(json_t *o, const pt_t *p, size_t n, const double *rk, int nrk, int nch,
                        char (*ch)[GY_TM_NAME]) {
  json_t *steps = json_array(), *loss = json_array(), *gn = json_array(), *gns = json_array(),
         *gnd = json_array(), *lr = json_array(), *tps = json_array(), *ms = json_array(),
         *nf = json_array(), *lc = json_object();
  json_t *chs[GY_TM_MAX_CH];
  for (int c = 0; c < nch; c++) {
    chs[c] = json_array();
    json_object_set_new(lc, ch[c], chs[c]);
  }
  for (size_t i = 0; i < n; i++) {
    json_array_append_new(steps, json_integer((json_int_t)p[i].step));
    json_array_append_new(loss, jnum(p[i].loss));
    json_array_append_new(gn, jnum(p[i].gn));
    json_array_append_new(gns, jnum(p[i].gns));
    json_array_append_new(gnd, jnum(p[i].gnd));
    json_array_append_new(lr, jnum(p[i].lr));
    json_array_append_new(tps, jnum(p[i].tps));
    json_array_append_new(ms, jnum(p[i].step_ms));
    json_array_append_new(nf, json_integer(p[i].nonfinite ? 1 : 0));
    for (int c = 0; c < nch; c++)
      json_array_append_new(chs[c], jnum(p[i].ch[c]));
  }
  json_object_set_new(o, "steps", steps);
  json_object_set_new(o, "loss", loss);
  json_object_set_new(o, "loss_ch", lc);
  json_object_set_new(o, "grad_norm", gn);
  json_object_set_new(o, "grad_norm_shallow", gns);
  json_object_set_new(o, "grad_norm_deep", gnd);
  json_object_set_new(o, "lr", lr);
  json_object_set_new(o, "tokens_per_s", tps);
  json_object_set_new(o, "step_ms", ms);
  json_object_set_new(o, "nonfinite", nf);
  if (rk) {
    json_t *rks = json_array();
    for (int r = 0; r < nrk; r++) {
      json_t *a = json_array();
      for (size_t i = 0; i < n; i++)
        json_array_append_new(a, jnum(rk[i * (size_t)nrk + (size_t)r]));
      json_array_append_new(rks, a);
    }
    json_object_set_new(o, "rank_tokens_per_s", rks);
  }
}

json_t *gy_telemetry_series(gy_telemetry_t *t, int64_t since, double now) {
  if (!t) return NULL;
  snap_t s;
  pt_t *pts = NULL, *ab = NULL;
  double *rk = NULL;
  eval_t *ev = NULL;
  size_t np = 0, nab = 0, nev = 0;
  pthread_mutex_lock(&t->mu);
  int rc = gy__tm_snap_take(t, &s);
  rank_t *snap_ranks = rc ? NULL : s.ranks; /* freed at out, whatever fails later */
  int nrk = t->nrk, cap = t->o.ring_steps;
  /* the coarse points after since, then the ring's */
  size_t c0 = 0, r0 = 0;
  while (c0 < (size_t)t->cn && t->coarse[c0].step <= since)
    c0++;
  size_t lo = 0, hi = (size_t)t->n; /* first ring point with step > since */
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (t->ring[(t->head + mid) % cap].step <= since)
      lo = mid + 1;
    else
      hi = mid;
  }
  r0 = lo;
  size_t nc = (size_t)t->cn - c0, nr = (size_t)t->n - r0;
  np = nc + nr;
  if (!rc && np) {
    pts = malloc(np * sizeof(pt_t));
    rk = malloc(np * (size_t)nrk * sizeof(double));
    if (!pts || !rk) rc = GY_ENOMEM;
  }
  if (!rc && np) {
    memcpy(pts, &t->coarse[c0], nc * sizeof(pt_t));
    memcpy(rk, &t->coarse_rk[c0 * (size_t)nrk], nc * (size_t)nrk * sizeof(double));
    for (size_t i = 0; i < nr; i++) {
      size_t slot = (size_t)((t->head + (int)(r0 + i)) % cap);
      pts[nc + i] = t->ring[slot];
      memcpy(&rk[(nc + i) * (size_t)nrk], &t->ring_rk[slot * (size_t)nrk],
             (size_t)nrk * sizeof(double));
    }
  }
  if (!rc && since < 0 && t->abn) {
    nab = (size_t)t->abn;
    if (!(ab = malloc(nab * sizeof(pt_t)))) rc = GY_ENOMEM;
    for (size_t i = 0; !rc && i < nab; i++)
      ab[i] = t->ab[(t->abhead + (int)i) % t->o.max_abandoned];
  }
  if (!rc && t->evn) {
    nev = (size_t)t->evn;
    if (!(ev = malloc(nev * sizeof(eval_t)))) rc = GY_ENOMEM;
    for (size_t i = 0; !rc && i < nev; i++)
      ev[i] = t->evals[(t->evhead + (int)i) % EVAL_RING];
  }
  pthread_mutex_unlock(&t->mu);
  json_t *o = NULL;
  if (rc) goto out;
  o = json_object();
  json_object_set_new(o, "run", jstr(s.run_name));
  json_object_set_new(o, "state", jstr(s.state));
  json_object_set_new(o, "step", json_integer((json_int_t)s.last_step));
  json_object_set_new(o, "steps_total", json_integer((json_int_t)s.steps));
  json_object_set_new(o, "generation", json_integer((json_int_t)s.generation));
  json_object_set_new(o, "gang", json_boolean(s.gang));
  json_object_set_new(o, "world", json_integer(s.world));
  json_object_set_new(o, "tp", json_integer(s.tp));
  json_object_set_new(o, "timeline", json_integer(s.timeline));
  json_object_set_new(o, "since", json_integer((json_int_t)since));
  json_object_set_new(o, "stride", json_integer((json_int_t)s.stride));
  json_t *chn = json_array();
  for (int c = 0; c < s.nch; c++)
    json_array_append_new(chn, jstr(s.ch[c]));
  json_object_set_new(o, "channels", chn);
  put_columns(o, pts, np, rk, nrk, s.nch, s.ch);
  if (since < 0) {
    json_t *abs = json_array();
    size_t i = 0;
    while (i < nab) { /* one segment per abandoned timeline */
      size_t j = i;
      while (j < nab && ab[j].timeline == ab[i].timeline && (j == i || ab[j].step > ab[j - 1].step))
        j++;
      json_t *seg = json_object();
      json_object_set_new(seg, "timeline", json_integer(ab[i].timeline));
      put_columns(seg, &ab[i], j - i, NULL, 0, s.nch, s.ch);
      json_array_append_new(abs, seg);
      i = j;
    }
    json_object_set_new(o, "abandoned", abs);
  }
  json_t *eva = json_array();
  for (size_t i = 0; i < nev; i++)
    json_array_append_new(eva, json_pack("{s:I, s:o, s:o, s:o, s:o, s:b}", "step",
                                         (json_int_t)ev[i].step, "source", jstr(s.src[ev[i].src]),
                                         "loss", jnum(ev[i].loss), "ppl", jnum(ev[i].ppl), "cloze",
                                         jnum(ev[i].cloze), "checkpoint", ev[i].ckpt));
  json_object_set_new(o, "eval", eva);
  json_t *ranks = json_array();
  for (int r = 0; r < s.world; r++) {
    json_t *x = json_pack("{s:i, s:o}", "rank", r, "tokens_per_s", jnum(s.ranks[r].tps));
    if (s.gpu_seen) {
      json_object_set_new(x, "gpu_temp_c", jnum(s.ranks[r].temp));
      json_object_set_new(x, "gpu_mem_bytes", jnum(s.ranks[r].mem));
      json_object_set_new(x, "gpu_util", jnum(s.ranks[r].util));
    }
    json_array_append_new(ranks, x);
  }
  json_object_set_new(o, "ranks", ranks);
  json_object_set_new(o, "counters",
                      json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "spikes_detected",
                                (json_int_t)s.spikes, "spikes_recovered", (json_int_t)s.recovered,
                                "rollbacks", (json_int_t)s.rollbacks, "samples_skipped",
                                (json_int_t)s.skipped, "directives", (json_int_t)s.directives,
                                "reports", (json_int_t)s.reports, "nonfinite_steps",
                                (json_int_t)s.nonfinite, "events", (json_int_t)s.nevents,
                                "checkpoints", (json_int_t)s.nckpt));
  if (s.ckpt_step >= 0)
    json_object_set_new(o, "checkpoint",
                        json_pack("{s:I, s:f, s:I}", "step", (json_int_t)s.ckpt_step, "age_s",
                                  now > s.ckpt_time ? now - s.ckpt_time : 0.0, "bytes",
                                  (json_int_t)s.ckpt_bytes));
  else
    json_object_set_new(o, "checkpoint", json_null());
out:
  free(snap_ranks);
  free(pts);
  free(rk);
  free(ab);
  free(ev);
  return o;
}

json_t *gy_telemetry_events(gy_telemetry_t *t, uint64_t since, int max) {
  if (!t) return NULL;
  if (max <= 0) max = 500;
  ev_t *ev = NULL;
  size_t n = 0;
  uint64_t last = 0;
  pthread_mutex_lock(&t->mu);
  int cap = t->o.max_events;
  int lo = 0, hi = t->en; /* first event with id > since (ids increase) */
  while (lo < hi) {
    int mid = (lo + hi) / 2;
    if (t->events[(t->ehead + mid) % cap].id <= since)
      lo = mid + 1;
    else
      hi = mid;
  }
  n = (size_t)(t->en - lo);
  if (n > (size_t)max) n = (size_t)max;
  if (t->en) last = t->events[(t->ehead + t->en - 1) % cap].id;
  if (n && (ev = malloc(n * sizeof(ev_t))))
    for (size_t i = 0; i < n; i++)
      ev[i] = t->events[(t->ehead + lo + (int)i) % cap];
  pthread_mutex_unlock(&t->mu);
  if (n && !ev) return NULL;
  json_t *o = json_object(), *a = json_array();
  for (size_t i = 0; i < n; i++)
    json_array_append_new(a, json_pack("{s:I, s:f, s:I, s:o, s:o}", "id", (json_int_t)ev[i].id,
                                       "time", ev[i].time, "step", (json_int_t)ev[i].step, "kind",
                                       jstr(ev[i].kind), "text", jstr(ev[i].text)));
  json_object_set_new(o, "last_id", json_integer((json_int_t)last));
  json_object_set_new(o, "events", a);
  free(ev);
  return o;
}

/* ---- /api/event_kinds ---- */

json_t *gy_telemetry_event_kinds(void) {
  json_t *a = json_array();
  for (int k = 0; a && k < GY_EVENT_NKINDS; k++) {
    const gy_event_kind_info_t *in = gy_event_kind_info((gy_event_kind_t)k);
    if (json_array_append_new(a, json_pack("{s:s, s:s, s:s, s:b}", "name", in->name, "level",
                                           in->level == GY_EVENT_LEVEL_WARN ? "warn" : "info",
                                           "marker", gy_event_marker_name(in->marker), "notable",
                                           in->notable))) {
      json_decref(a);
      return NULL;
    }
  }
  return a ? json_pack("{s:o}", "kinds", a) : NULL;
}
