/*
 * run_detect: the figures into the run state machine (see run.c): every step's values and the
 * held-out evaluations go through the detectors (controller/detect.c) with the policy's
 * thresholds for their kind.
 *
 * API, in order: step, eval (gy_run_step, gy_run_eval of run.h).
 *
 * A jump opens a suspicion (first step S): the run watches observe_steps more steps, collecting
 * the series that fired and the samples they blame. If every such series is back near its
 * baseline the spike recovered (TRAIN, an event, and the checkpoints taken meanwhile stay
 * suspect). Otherwise — or at once for NaN/Inf and drops — a repair starts (run.c's repair).
 * A jump among the steps replayed after a repair that only skipped data is not watched: the
 * repair missed part of the cause, and the escalation takes over at once. A step in which the
 * workers' guard masked more than guard.max_step_share of the samples is repaired at once too
 * (trigger MASKED, on the ladder like a spike that persists, the masked samples attributed).
 * Held-out figures that got worse mark the checkpoint of their step suspect.
 *
 * Invariants:
 * - Figures arriving outside TRAIN, SPIKE_SUSPECTED and PAUSED never reach the detectors.
 * - At most MAX_FIRED series are remembered per suspicion.
 */
#include "controller/run_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/err.h"

static int is_loss(gy_series_kind_t k) {
  return k == GY_SERIES_LOSS || k == GY_SERIES_CHANNEL_LOSS;
}

/* The channel of a "loss/<channel>" series, or NULL. */
static const char *channel_of(const char *series, gy_series_kind_t k) {
  const char *slash = strchr(series, '/');
  return (k == GY_SERIES_CHANNEL_LOSS && slash) ? slash + 1 : NULL;
}

/* Adds the samples of src (those of the blamed channels when any of them matches) to the
 * suspicion's list. */
static void blame(gy_run_t *r, const gy_run_sample_t *src, int n, const char *const *chans,
                  int nchans) {
  int matched = 0;
  for (int i = 0; i < n && nchans; i++)
    for (int c = 0; c < nchans; c++)
      matched += src[i].channel && !strcmp(src[i].channel, chans[c]);
  for (int i = 0; i < n; i++) {
    int ok = !matched;
    for (int c = 0; c < nchans && !ok; c++)
      ok = src[i].channel && !strcmp(src[i].channel, chans[c]);
    if (!ok) continue;
    int dup = 0;
    for (int j = 0; j < r->nsusp_samples && !dup; j++)
      dup = r->susp_samples[j] == src[i].id;
    if (!dup && r->nsusp_samples < GY_POLICY_MAX_SAMPLES)
      r->susp_samples[r->nsusp_samples++] = src[i].id;
  }
}

static void remember_series(gy_run_t *r, const char *name) {
  for (int i = 0; i < r->nsusp_series; i++)
    if (!strcmp(r->susp_series[i], name)) return;
  if (r->nsusp_series < MAX_FIRED)
    snprintf(r->susp_series[r->nsusp_series++], GY_DETECT_NAME_MAX, "%s", name);
}

/* Appends verdict text to the suspicion's evidence and keeps the first few structured. */
static void add_evidence(gy_run_t *r, const gy_verdict_t *v) {
  char line[200];
  gy_verdict_format(v, line, sizeof(line));
  size_t o = strlen(r->susp_evidence);
  if (o + 3 < sizeof(r->susp_evidence))
    snprintf(r->susp_evidence + o, sizeof(r->susp_evidence) - o, "%s%s", o ? "; " : "", line);
  if (r->nsusp_verdict < GY_RUN_EVIDENCE_MAX) r->susp_verdict[r->nsusp_verdict++] = *v;
}

/* Pushes the figures of s through the detectors; out[i] is the verdict of s->values[i]. Out of
 * memory pushes no value (a series created empty may stay): every series exists before the
 * first push, so a refused step given again is not counted twice by the series before the
 * one that could not be created. */
static int detect_all(gy_run_t *r, const gy_run_step_t *s, gy_verdict_t *out) {
  size_t cap = (size_t)r->capkinds;
  if (gy__run_grow((void **)&r->kinds, &cap, (size_t)gy_detect_count(r->det) + (size_t)s->nvalues,
                   sizeof(*r->kinds)))
    return GY_ENOMEM;
  r->capkinds = (int)cap;
  for (int i = 0; i < s->nvalues; i++) { /* by name, in O(1) for the usual order */
    const gy_run_value_t *v = &s->values[i];
    int before = gy_detect_count(r->det);
    if (!gy_detect_ensure(r->det, v->series, &r->pol.detect[v->kind])) return GY_ENOMEM;
    if (gy_detect_count(r->det) > before) r->kinds[before] = v->kind;
  }
  for (int i = 0; i < s->nvalues; i++) { /* every series exists: nothing allocates */
    const gy_run_value_t *v = &s->values[i];
    int rc = gy_detect_push(r->det, v->series, &r->pol.detect[v->kind], s->step, v->value, &out[i]);
    if (rc < 0) return rc;
  }
  return 0;
}

/* Every series that fired in the suspicion is back near its baseline in this step. */
static int recovered(const gy_run_t *r, const gy_run_step_t *s, const gy_verdict_t *v) {
  if (!r->nsusp_series) return 0;
  for (int k = 0; k < r->nsusp_series; k++) {
    int ok = 0;
    for (int i = 0; i < s->nvalues && !ok; i++) {
      if (strcmp(s->values[i].series, r->susp_series[k])) continue;
      double tol = r->pol.recover_tolerance * v[i].threshold;
      ok = !v[i].fired && fabs(v[i].value - v[i].median) <= tol;
    }
    if (!ok) return 0;
  }
  return 1;
}

int gy_run_step(gy_run_t *r, int64_t now_ms, const gy_run_step_t *s) {
  r->now = now_ms;
  if (!s || s->nvalues < 0 || (s->nvalues && !s->values) || s->ntop < 0 || (s->ntop && !s->top) ||
      s->nbottom < 0 || (s->nbottom && !s->bottom) || s->step < 0 || s->samples < 0 ||
      s->nmasked < 0 || s->nmasked_ids < 0 || (s->nmasked_ids && !s->masked))
    return gy__run_refuse(r, GY_EINVAL, "malformed step figures");
  for (int i = 0; i < s->nvalues; i++) {
    const gy_run_value_t *v = &s->values[i];
    if (!v->series || !*v->series || strlen(v->series) >= GY_DETECT_NAME_MAX || v->kind < 0 ||
        v->kind >= GY_SERIES_NKINDS)
      return gy__run_refuse(r, GY_EINVAL, "step %lld: figure %d has a bad series name or kind",
                            (long long)s->step, i);
  }
  gy_run_state_t st = r->state;
  if (st != GY_RUN_TRAIN && st != GY_RUN_SPIKE_SUSPECTED && st != GY_RUN_PAUSED) return 0;
  if (s->step <= r->last_step)
    return gy__run_refuse(r, GY_ERANGE, "step %lld arrived after step %lld", (long long)s->step,
                          (long long)r->last_step);

  /* room for the suspect interval a watch this step may open will need (keep_suspect), and for
   * the repair it may start: nothing below runs out of memory after the step is counted */
  if (gy__run_reserve_ivals(r, 1) || gy__run_reserve_hist(r))
    return gy__run_refuse(r, GY_ENOMEM, "out of memory");
  gy_verdict_t *v = gy_calloc((size_t)s->nvalues + 1, sizeof(*v));
  if (!v) return gy__run_refuse(r, GY_ENOMEM, "out of memory");
  int rc = detect_all(r, s, v);
  if (rc) {
    gy_free(v);
    return gy__run_refuse(r, rc, "out of memory creating a detector");
  }
  r->last_step = s->step;

  /* Classify. */
  int nonfinite = s->nonfinite, drop = 0, jump = 0;
  const char *drop_ch[MAX_FIRED], *jump_ch[MAX_FIRED];
  int ndrop_ch = 0, njump_ch = 0;
  char ev[512] = "";
  gy_verdict_t fired[GY_RUN_EVIDENCE_MAX];
  int nfired = 0;
  for (int i = 0; i < s->nvalues; i++) {
    if (!v[i].fired) continue;
    gy_series_kind_t k = s->values[i].kind;
    if (r->pol.detect[k].alert_only && v[i].dir != GY_DETECT_NONFINITE) {
      /* Tell a human once per streak, when it has lasted `sustain` values; never repair. */
      if (gy_series_streak(gy_detect_get(r->det, s->values[i].series)) ==
          (r->pol.detect[k].sustain > 1 ? r->pol.detect[k].sustain : 1)) {
        char line[200];
        gy_verdict_format(&v[i], line, sizeof(line));
        extra_t x = {line, &v[i], 1, NULL};
        gy__run_event(r, GY_EVENT_ANOMALY, s->step, st, st,
                      "an alert-only series left its baseline", &x);
        if (s->values[i].rank >= 0)
          gy__run_alert(r, GY_ALERT_ANOMALY, "anomaly on rank %d: %s", s->values[i].rank, line);
        else
          gy__run_alert(r, GY_ALERT_ANOMALY, "anomaly: %s", line);
      }
      continue;
    }
    const char *ch = channel_of(s->values[i].series, k);
    if (v[i].dir == GY_DETECT_NONFINITE) {
      nonfinite = 1;
    } else if (v[i].dir == GY_DETECT_DROP && is_loss(k)) {
      drop = 1;
      if (ch && ndrop_ch < MAX_FIRED) drop_ch[ndrop_ch++] = ch;
    } else {
      jump = 1;
      if (ch && njump_ch < MAX_FIRED) jump_ch[njump_ch++] = ch;
    }
    if (st == GY_RUN_SPIKE_SUSPECTED || st == GY_RUN_TRAIN) {
      remember_series(r, s->values[i].series);
      add_evidence(r, &v[i]);
    }
    if (nfired < GY_RUN_EVIDENCE_MAX) fired[nfired++] = v[i];
    char line[200];
    gy_verdict_format(&v[i], line, sizeof(line));
    size_t o = strlen(ev);
    if (o + 3 < sizeof(ev)) snprintf(ev + o, sizeof(ev) - o, "%s%s", o ? "; " : "", line);
  }
  if (s->nonfinite) {
    const char *line = "a rank reported non-finite gradients";
    size_t o = strlen(ev);
    if (o + 3 < sizeof(ev)) snprintf(ev + o, sizeof(ev) - o, "%s%s", o ? "; " : "", line);
    if (st != GY_RUN_PAUSED) {
      o = strlen(r->susp_evidence);
      if (o + 3 < sizeof(r->susp_evidence))
        snprintf(r->susp_evidence + o, sizeof(r->susp_evidence) - o, "%s%s", o ? "; " : "", line);
    }
  }
  /* The guard masked more of the step than the policy lets it: the step's samples alone do
   * not explain it (the masked ones are attributed, on top of what the detectors blame). */
  int masked = r->pol.guard.enabled && s->samples > 0 && s->nmasked > 0 &&
               (double)s->nmasked > r->pol.guard.max_step_share * (double)s->samples;
  if (masked && st != GY_RUN_PAUSED) {
    char line[200];
    snprintf(line, sizeof(line),
             "masked share %.3f > guard.max_step_share %g (%d of %d samples masked at step %lld)",
             (double)s->nmasked / s->samples, r->pol.guard.max_step_share, s->nmasked, s->samples,
             (long long)s->step);
    size_t o = strlen(r->susp_evidence);
    if (o + 3 < sizeof(r->susp_evidence))
      snprintf(r->susp_evidence + o, sizeof(r->susp_evidence) - o, "%s%s", o ? "; " : "", line);
    for (int i = 0; i < s->nmasked_ids; i++) {
      int dup = 0;
      for (int j = 0; j < r->nsusp_samples && !dup; j++)
        dup = r->susp_samples[j] == s->masked[i];
      if (!dup && r->nsusp_samples < GY_POLICY_MAX_SAMPLES)
        r->susp_samples[r->nsusp_samples++] = s->masked[i];
    }
  }
  /* Attribution: drops blame the lowest-loss samples, everything else the highest. */
  if (st != GY_RUN_PAUSED) {
    if (drop)
      blame(r, s->nbottom ? s->bottom : s->top, s->nbottom ? s->nbottom : s->ntop, drop_ch,
            ndrop_ch);
    if (jump || nonfinite) blame(r, s->top, s->ntop, jump_ch, njump_ch);
  }

  switch (st) {
  case GY_RUN_TRAIN:
    if (nonfinite || drop) {
      rc = gy__run_repair(r, nonfinite ? GY_TRIG_NONFINITE : GY_TRIG_DROP, s->step, s->step,
                          r->susp_samples, r->nsusp_samples, r->susp_evidence, r->susp_verdict,
                          r->nsusp_verdict);
    } else if (masked) {
      rc = gy__run_repair(r, GY_TRIG_MASKED, s->step, s->step, r->susp_samples, r->nsusp_samples,
                          r->susp_evidence, r->susp_verdict, r->nsusp_verdict);
    } else if (jump && s->step <= r->replay_until) {
      /* a spike again in the steps replayed after a repair of bad data: that repair missed
       * part of it (e.g. poisoned samples that slid into the step after the skipped ones); no
       * watching — the escalation takes over at once */
      rc = gy__run_repair(r, GY_TRIG_SPIKE_PERSISTS, s->step, s->step, r->susp_samples,
                          r->nsusp_samples, r->susp_evidence, r->susp_verdict, r->nsusp_verdict);
    } else if (jump && r->pol.observe_steps == 0) {
      rc = gy__run_repair(r, GY_TRIG_SPIKE, s->step, s->step, r->susp_samples, r->nsusp_samples,
                          r->susp_evidence, r->susp_verdict, r->nsusp_verdict);
    } else if (jump) {
      char why[160];
      snprintf(why, sizeof(why), "spike suspected at step %lld: watching %d more steps",
               (long long)s->step, r->pol.observe_steps);
      extra_t x = {r->susp_evidence, r->susp_verdict, r->nsusp_verdict, "RECOVER_WATCH"};
      /* gy__run_move() keeps the suspicion gathered above when it enters SPIKE_SUSPECTED. */
      if (!(rc = gy__run_move(r, GY_RUN_SPIKE_SUSPECTED, GY_EVENT_SPIKE_SUSPECTED, why, &x)))
        r->susp_first = r->susp_last = s->step;
    }
    break;
  case GY_RUN_SPIKE_SUSPECTED:
    if (nonfinite || drop || masked) {
      rc = gy__run_repair(r,
                          nonfinite ? GY_TRIG_NONFINITE
                          : drop    ? GY_TRIG_DROP
                                    : GY_TRIG_MASKED,
                          r->susp_first, s->step, r->susp_samples, r->nsusp_samples,
                          r->susp_evidence, r->susp_verdict, r->nsusp_verdict);
    } else if (!jump && recovered(r, s, v)) {
      char why[160];
      snprintf(why, sizeof(why),
               "recovered spike: suspected at step %lld, back within %g x threshold of the "
               "baseline at step %lld",
               (long long)r->susp_first, r->pol.recover_tolerance, (long long)s->step);
      extra_t x = {r->susp_evidence, r->susp_verdict, r->nsusp_verdict, "none"};
      rc = gy__run_move(r, GY_RUN_TRAIN, GY_EVENT_RECOVERED_SPIKE, why, &x);
    } else {
      if (jump) r->susp_last = s->step;
      if (s->step - r->susp_first >= r->pol.observe_steps)
        rc = gy__run_repair(r, GY_TRIG_SPIKE_PERSISTS, r->susp_first, r->susp_last, r->susp_samples,
                            r->nsusp_samples, r->susp_evidence, r->susp_verdict, r->nsusp_verdict);
    }
    break;
  case GY_RUN_PAUSED:
    if (nonfinite) {
      /* Roll back now (the parameters are broken) and pause again afterwards. */
      r->pause_after = 1;
      rc = gy__run_repair(r, GY_TRIG_NONFINITE, s->step, s->step, NULL, 0, ev, fired, nfired);
    } else if (nfired) {
      extra_t x = {ev, fired, nfired, NULL};
      gy__run_event(r, GY_EVENT_ANOMALY, s->step, st, st,
                    "a spike while paused: no repair until resumed", &x);
    }
    break;
  default:
    break;
  }
  gy_free(v);
  return rc;
}

/* Marks the checkpoint of `step` suspect: an interval (step - 1, step], and the flag of the
 * checkpoint when it is already committed. gy_run_eval reserved the room. */
static void suspect_one(gy_run_t *r, int64_t step) {
  for (int i = 0; i < r->nckpts; i++)
    if (r->ckpts[i].step == step) r->ckpts[i].clean = 0;
  if (gy__run_reserve_ivals(r, 1)) return; /* not reached: reserved */
  r->ivals[r->nivals++] = (interval_t){step - 1, step};
}

int gy_run_eval(gy_run_t *r, int64_t now_ms, int64_t step, const gy_run_value_t *values, int n) {
  r->now = now_ms;
  if (n < 0 || (n && !values) || step < 0)
    return gy__run_refuse(r, GY_EINVAL, "malformed evaluation figures");
  for (int i = 0; i < n; i++) {
    const gy_run_value_t *v = &values[i];
    if (!v->series || !*v->series || strlen(v->series) >= GY_DETECT_NAME_MAX || v->kind < 0 ||
        v->kind >= GY_SERIES_NKINDS)
      return gy__run_refuse(r, GY_EINVAL,
                            "evaluation at step %lld: figure %d has a bad series name or kind",
                            (long long)step, i);
  }
  gy_run_state_t st = r->state;
  if (st != GY_RUN_TRAIN && st != GY_RUN_SPIKE_SUSPECTED && st != GY_RUN_PAUSED) return 0;
  if (step <= r->last_eval)
    return gy__run_refuse(r, GY_ERANGE,
                          "evaluation at step %lld arrived after the one at step %lld",
                          (long long)step, (long long)r->last_eval);
  /* room for this evaluation's suspect interval, and in SPIKE_SUSPECTED for the watch's too */
  if (gy__run_reserve_ivals(r, st == GY_RUN_SPIKE_SUSPECTED ? 2 : 1) || gy__run_reserve_hist(r))
    return gy__run_refuse(r, GY_ENOMEM, "out of memory");
  gy_verdict_t *v = gy_calloc((size_t)n + 1, sizeof(*v));
  if (!v) return gy__run_refuse(r, GY_ENOMEM, "out of memory");
  gy_run_step_t in = {.step = step, .values = values, .nvalues = n};
  int rc = detect_all(r, &in, v);
  if (rc) {
    gy_free(v);
    return gy__run_refuse(r, rc, "out of memory creating a detector");
  }
  r->last_eval = step;
  char ev[512] = "";
  gy_verdict_t fired[GY_RUN_EVIDENCE_MAX];
  int nfired = 0, nonfinite = 0, regress = 0;
  for (int i = 0; i < n; i++) {
    if (!v[i].fired) continue;
    if (v[i].dir == GY_DETECT_NONFINITE)
      nonfinite = 1;
    else if (r->pol.detect[values[i].kind].alert_only &&
             gy_series_streak(gy_detect_get(r->det, values[i].series)) <
                 (r->pol.detect[values[i].kind].sustain > 1 ? r->pol.detect[values[i].kind].sustain
                                                            : 1))
      continue; /* alert-only: told once its streak has lasted `sustain` evaluations */
    else
      regress |= !r->pol.detect[values[i].kind].alert_only ? 1 : 2;
    if (nfired < GY_RUN_EVIDENCE_MAX) fired[nfired++] = v[i];
    char line[200];
    gy_verdict_format(&v[i], line, sizeof(line));
    size_t o = strlen(ev);
    if (o + 3 < sizeof(ev)) snprintf(ev + o, sizeof(ev) - o, "%s%s", o ? "; " : "", line);
  }
  gy_free(v);
  if (nonfinite) {
    /* The parameters are broken: roll back now (and pause again afterwards when paused). */
    int64_t first = st == GY_RUN_SPIKE_SUSPECTED && r->susp_first >= 0 && r->susp_first < step
                        ? r->susp_first
                        : step;
    if (st == GY_RUN_PAUSED) r->pause_after = 1;
    return gy__run_repair(r, GY_TRIG_NONFINITE, first, step, NULL, 0, ev, fired, nfired);
  }
  if (!nfired) return 0;
  extra_t x = {ev, fired, nfired, NULL};
  if (regress & 1) {
    suspect_one(r, step);
    char why[200];
    snprintf(why, sizeof(why),
             "held-out figures got worse at step %lld: its checkpoint is suspect (never restored "
             "by a repair)",
             (long long)step);
    gy__run_event(r, GY_EVENT_EVAL_REGRESSION, step, st, st, why, &x);
    gy__run_alert(r, GY_ALERT_OTHER, "held-out regression at step %lld: %s", (long long)step, ev);
  } else {
    gy__run_event(r, GY_EVENT_ANOMALY, step, st, st,
                  "an alert-only held-out series left its baseline", &x);
    gy__run_alert(r, GY_ALERT_ANOMALY, "anomaly: %s", ev);
  }
  return 0;
}
