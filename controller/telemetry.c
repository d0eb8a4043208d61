/*
 * telemetry: the controller's in-memory record of its run (see telemetry.h).
 *
 * API, in order: create, destroy; writers (set_ready, state, step, report, event, rollback,
 * checkpoint, eval, eval_cloze, gpu, alert, guard, masked, quarantine); readers
 * (quarantine_json, metrics, series, events, ready); escape_label.
 *
 * Storage. Points (pt_t: one step's gang figures) live in three places: `ring`, the newest
 * ring_steps steps of the current timeline in step order (a circular buffer; the per-rank rates
 * of its first nrk ranks in ring_rk, same slots); `coarse`, older steps of the current timeline
 * down-sampled (a step evicted from the ring is kept when it lies at least `stride` steps after
 * the last kept one; when coarse is full every other point goes and the stride doubles: O(1)
 * amortised); `ab`, a ring of abandoned points (a rollback's replaced steps) tagged with the
 * timeline they belonged to. Channel names map to columns in order of first appearance (at
 * most GY_TM_MAX_CH; later ones are not recorded). Events are a ring in arrival order (ids come
 * from the service and increase).
 *
 * Invariants:
 * - ring steps increase strictly, and every coarse step is below the ring's first step.
 * - A step s <= last_step moves the ring points with step >= s to `ab`, drops the coarse points
 *   with step >= s, and increments `timeline`.
 * - Everything but `reports` is read and written under mu; writers hold it for copies only,
 *   readers copy out under it and format (jansson, text) outside it.
 *
 * The JSON readers (series, events) are in telemetry_json.c, with the shape of /api/series;
 * struct gy_telemetry and what both files use are in telemetry_internal.h.
 */
#include "controller/telemetry_internal.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"

static const char *const alert_outcomes[4] = {"sent", "suppressed", "failed", "dropped"};

/* ------------------------------------------ create ------------------------------------------ */

int gy_telemetry_create(gy_telemetry_t **out, const gy_telemetry_opts_t *opts, char *errmsg,
                        size_t errlen) {
  *out = NULL;
  gy_telemetry_opts_t o = *opts;
  if (!o.ring_steps) o.ring_steps = 4096;
  if (!o.coarse_points) o.coarse_points = 1024;
  if (!o.max_events) o.max_events = 2048;
  if (!o.max_abandoned) o.max_abandoned = 2048;
  if (o.world < 1 || o.world > 1 << 20) {
    gy_errmsg(errmsg, errlen, "telemetry: world %d out of range [1, %d]", o.world, 1 << 20);
    return GY_EINVAL;
  }
  if (o.ring_steps < 16 || o.coarse_points < 16 || o.max_events < 16 || o.max_abandoned < 16 ||
      o.ring_steps > 1 << 24 || o.coarse_points > 1 << 24 || o.max_events > 1 << 24 ||
      o.max_abandoned > 1 << 24) {
    gy_errmsg(errmsg, errlen,
              "telemetry: ring_steps, coarse_points, max_events and "
              "max_abandoned must be in [16, 2^24]");
    return GY_EINVAL;
  }
  gy_telemetry_t *t = calloc(1, sizeof(*t));
  if (!t) goto oom;
  t->o = o;
  t->o.run_name = NULL;
  snprintf(t->run_name, sizeof(t->run_name), "%s", opts->run_name ? opts->run_name : "");
  snprintf(t->state, sizeof(t->state), "INIT");
  t->last_step = -1;
  t->ckpt_step = -1;
  t->stride = 1;
  t->nrk = o.world < GY_TM_RANK_SERIES ? o.world : GY_TM_RANK_SERIES;
  atomic_init(&t->reports, 0);
  if (pthread_mutex_init(&t->mu, NULL)) {
    free(t);
    goto oom;
  }
  t->ring = calloc((size_t)o.ring_steps, sizeof(pt_t));
  t->ring_rk = calloc((size_t)o.ring_steps * (size_t)t->nrk, sizeof(double));
  t->coarse = calloc((size_t)o.coarse_points, sizeof(pt_t));
  t->coarse_rk = calloc((size_t)o.coarse_points * (size_t)t->nrk, sizeof(double));
  t->ab = calloc((size_t)o.max_abandoned, sizeof(pt_t));
  t->ranks = calloc((size_t)o.world, sizeof(rank_t));
  t->evals = calloc(EVAL_RING, sizeof(eval_t));
  t->events = calloc((size_t)o.max_events, sizeof(ev_t));
  if (!t->ring || !t->ring_rk || !t->coarse || !t->coarse_rk || !t->ab || !t->ranks || !t->evals ||
      !t->events) {
    gy_telemetry_destroy(t);
    goto oom;
  }
  for (int r = 0; r < o.world; r++)
    t->ranks[r] = (rank_t){NAN, NAN, NAN, NAN, NAN};
  *out = t;
  return 0;
oom:
  gy_errmsg(errmsg, errlen, "telemetry: out of memory");
  return GY_ENOMEM;
}

void gy_telemetry_destroy(gy_telemetry_t *t) {
  if (!t) return;
  pthread_mutex_destroy(&t->mu);
  free(t->ring);
  free(t->ring_rk);
  free(t->coarse);
  free(t->coarse_rk);
  free(t->ab);
  free(t->ranks);
  free(t->evals);
  free(t->events);
  json_decref(t->quar);
  free(t);
}

/* ------------------------------------------ writers ------------------------------------------ */

void gy_telemetry_set_ready(gy_telemetry_t *t, int ready, const char *why) {
  if (!t) return;
  pthread_mutex_lock(&t->mu);
  t->ready = ready;
  snprintf(t->ready_why, sizeof(t->ready_why), "%s", why ? why : "");
  pthread_mutex_unlock(&t->mu);
}

void gy_telemetry_state(gy_telemetry_t *t, const char *state, uint64_t generation, int gang) {
  if (!t) return;
  pthread_mutex_lock(&t->mu);
  snprintf(t->state, sizeof(t->state), "%s", state ? state : "?");
  t->generation = generation;
  t->gang = gang;
  pthread_mutex_unlock(&t->mu);
}

/* The column of channel name (added when new); -1 when the table is full. Under mu. */
static int column(char (*names)[GY_TM_NAME], int *n, const char *name) {
  for (int i = 0; i < *n; i++)
    if (!strncmp(names[i], name, GY_TM_NAME - 1)) return i;
  if (*n >= GY_TM_MAX_CH) return -1;
  snprintf(names[*n], GY_TM_NAME, "%s", name);
  /* JSON keys must be UTF-8: a name that is not (or was cut inside a character) is made ASCII */
  json_t *j = json_string(names[*n]);
  if (!j)
    for (unsigned char *p = (unsigned char *)names[*n]; *p; p++)
      if (*p >= 0x80) *p = '?';
  json_decref(j);
  return (*n)++;
}

static void abandon(gy_telemetry_t *t, const pt_t *p) {
  int cap = t->o.max_abandoned;
  pt_t *d;
  if (t->abn < cap) {
    d = &t->ab[(t->abhead + t->abn++) % cap];
  } else { /* full: the oldest goes */
    d = &t->ab[t->abhead];
    t->abhead = (t->abhead + 1) % cap;
  }
  *d = *p;
  d->timeline = t->timeline;
}

/* A step at or before the newest: the points it replaces become abandoned. Under mu. */
static void rewind_to(gy_telemetry_t *t, int64_t step) {
  int cap = t->o.ring_steps, k = t->n;
  while (k > 0 && t->ring[(t->head + k - 1) % cap].step >= step)
    k--;
  for (int i = k; i < t->n; i++)
    abandon(t, &t->ring[(t->head + i) % cap]);
  t->n = k;
  while (t->cn > 0 && t->coarse[t->cn - 1].step >= step)
    t->cn--;
  t->timeline++;
}

/* The ring's oldest point leaves it: kept in coarse when it is `stride` after the last kept. */
static void evict(gy_telemetry_t *t) {
  int cap = t->o.ring_steps, ccap = t->o.coarse_points, nrk = t->nrk;
  const pt_t *p = &t->ring[t->head];
  const double *rk = &t->ring_rk[(size_t)t->head * (size_t)nrk];
  if (!t->cn || p->step >= t->coarse[t->cn - 1].step + t->stride) {
    if (t->cn == ccap) { /* keep every other point, double the stride */
      int k = 0;
      for (int i = 0; i < t->cn; i += 2, k++) {
        t->coarse[k] = t->coarse[i];
        memcpy(&t->coarse_rk[(size_t)k * (size_t)nrk], &t->coarse_rk[(size_t)i * (size_t)nrk],
               (size_t)nrk * sizeof(double));
      }
      t->cn = k;
      t->stride *= 2;
    }
    if (!t->cn || p->step >= t->coarse[t->cn - 1].step + t->stride) {
      t->coarse[t->cn] = *p;
      memcpy(&t->coarse_rk[(size_t)t->cn * (size_t)nrk], rk, (size_t)nrk * sizeof(double));
      t->cn++;
    }
  }
  t->head = (t->head + 1) % cap;
  t->n--;
}

void gy_telemetry_step(gy_telemetry_t *t, const gy_telemetry_step_t *s) {
  if (!t || !s) return;
  pthread_mutex_lock(&t->mu);
  if (t->last_step >= 0 && s->step <= t->last_step) rewind_to(t, s->step);
  int cap = t->o.ring_steps, nrk = t->nrk;
  if (t->n == cap) evict(t);
  int slot = (t->head + t->n++) % cap;
  pt_t *p = &t->ring[slot];
  p->step = s->step;
  p->timeline = 0;
  p->nonfinite = s->nonfinite;
  p->loss = s->loss;
  p->gn = s->grad_norm;
  p->gns = s->grad_norm_shallow;
  p->gnd = s->grad_norm_deep;
  p->lr = s->lr;
  p->tps = s->tokens_per_s;
  p->step_ms = s->step_ms;
  for (int c = 0; c < GY_TM_MAX_CH; c++)
    p->ch[c] = NAN;
  for (int c = 0; c < s->nch; c++) {
    int col = s->ch_name && s->ch_name[c] ? column(t->ch, &t->nch, s->ch_name[c]) : -1;
    if (col >= 0) p->ch[col] = s->ch_loss[c];
  }
  double *rk = &t->ring_rk[(size_t)slot * (size_t)nrk];
  int nr = s->rank_rate ? s->nranks : 0;
  if (nr > t->o.world) nr = t->o.world;
  for (int r = 0; r < nrk; r++)
    rk[r] = NAN;
  for (int r = 0; r < nr; r++) {
    double v = s->rank_rate(s->rank_ud, r);
    t->ranks[r].tps = v;
    if (r < nrk) rk[r] = v;
  }
  if (s->nonfinite) t->nonfinite++;
  t->last_step = s->step;
  pthread_mutex_unlock(&t->mu);
}

void gy_telemetry_report(gy_telemetry_t *t) {
  if (t) atomic_fetch_add_explicit(&t->reports, 1, memory_order_relaxed);
}

void gy_telemetry_event(gy_telemetry_t *t, uint64_t id, double time, int64_t step,
                        gy_event_kind_t kind, const char *text) {
  if (!t) return;
  pthread_mutex_lock(&t->mu);
  int cap = t->o.max_events;
  ev_t *e;
  if (t->en < cap) {
    e = &t->events[(t->ehead + t->en++) % cap];
  } else {
    e = &t->events[t->ehead];
    t->ehead = (t->ehead + 1) % cap;
  }
  e->id = id;
  e->time = time;
  e->step = step;
  snprintf(e->kind, sizeof(e->kind), "%s", gy_event_kind_name(kind));
  snprintf(e->text, sizeof(e->text), "%s", text ? text : "");
  t->nevents++;
  if (kind >= 0 && kind < GY_EVENT_NKINDS)
    t->kind_n[kind]++;
  else
    t->kind_other++;
  switch (gy_event_kind_info(kind)->tally) {
  case GY_EVENT_TALLY_SPIKES:
    t->spikes++;
    break;
  case GY_EVENT_TALLY_RECOVERED:
    t->recovered++;
    break;
  case GY_EVENT_TALLY_DIRECTIVES:
    t->directives++;
    break;
  case GY_EVENT_TALLY_NONE:
    break;
  }
  pthread_mutex_unlock(&t->mu);
}

void gy_telemetry_rollback(gy_telemetry_t *t, int64_t to_step, uint64_t samples) {
  if (!t) return;
  (void)to_step;
  pthread_mutex_lock(&t->mu);
  t->rollbacks++;
  t->skipped += samples;
  pthread_mutex_unlock(&t->mu);
}

void gy_telemetry_checkpoint(gy_telemetry_t *t, int64_t step, double time, uint64_t bytes) {
  if (!t) return;
  pthread_mutex_lock(&t->mu);
  t->ckpt_step = step;
  t->ckpt_time = time;
  t->ckpt_bytes = bytes;
  t->nckpt++;
  pthread_mutex_unlock(&t->mu);
}

void gy_telemetry_eval(gy_telemetry_t *t, int64_t step, const char *source, double loss,
                       double ppl) {
  gy_telemetry_eval_cloze(t, step, source, loss, ppl, NAN, 0);
}

void gy_telemetry_eval_cloze(gy_telemetry_t *t, int64_t step, const char *source, double loss,
                             double ppl, double cloze, int checkpoint) {
  if (!t || !source) return;
  pthread_mutex_lock(&t->mu);
  int src = column(t->src, &t->nsrc, source);
  if (src >= 0) {
    eval_t *e;
    if (t->evn < EVAL_RING) {
      e = &t->evals[(t->evhead + t->evn++) % EVAL_RING];
    } else {
      e = &t->evals[t->evhead];
      t->evhead = (t->evhead + 1) % EVAL_RING;
    }
    *e = (eval_t){step, src, loss, ppl, cloze, checkpoint != 0};
    t->eval_last[src] = *e;
  }
  pthread_mutex_unlock(&t->mu);
}

void gy_telemetry_gpu(gy_telemetry_t *t, int rank, double temp_c, double mem_used_bytes,
                      double mem_total_bytes, double util) {
  if (!t) return;
  pthread_mutex_lock(&t->mu);
  if (rank >= 0 && rank < t->o.world) {
    rank_t *r = &t->ranks[rank];
    r->temp = temp_c;
    r->mem = mem_used_bytes;
    r->mem_total = mem_total_bytes;
    r->util = util;
    t->gpu_seen = 1;
  }
  pthread_mutex_unlock(&t->mu);
}

void gy_telemetry_alert(gy_telemetry_t *t, const char *kind, const char *outcome) {
  if (!t || !kind || !outcome) return;
  int o = 0;
  while (o < 4 && strcmp(alert_outcomes[o], outcome))
    o++;
  if (o == 4) return;
  pthread_mutex_lock(&t->mu);
  int k = 0;
  while (k < t->nalert && strcmp(t->alert_kind[k], kind))
    k++;
  if (k == t->nalert && k < MAX_ALERT_KINDS)
    snprintf(t->alert_kind[t->nalert++], GY_TM_EVENT_KIND, "%s", kind);
  if (k < MAX_ALERT_KINDS) t->alert_n[k][o]++;
  pthread_mutex_unlock(&t->mu);
}

/* ------------------------------------------ readers ------------------------------------------ */

int gy__tm_snap_take(const gy_telemetry_t *t, snap_t *s) {
  memset(s, 0, sizeof(*s));
  s->ranks = malloc((size_t)t->o.world * sizeof(rank_t));
  if (!s->ranks) return GY_ENOMEM;
  memcpy(s->ranks, t->ranks, (size_t)t->o.world * sizeof(rank_t));
  memcpy(s->run_name, t->run_name, sizeof(s->run_name));
  memcpy(s->state, t->state, sizeof(s->state));
  memcpy(s->ready_why, t->ready_why, sizeof(s->ready_why));
  s->ready = t->ready;
  s->gang = t->gang;
  s->world = t->o.world;
  s->tp = t->o.tp;
  s->steps = t->o.steps;
  s->timeline = t->timeline;
  s->nch = t->nch;
  s->nsrc = t->nsrc;
  s->nrk = t->nrk;
  s->gpu_seen = t->gpu_seen;
  s->generation = t->generation;
  s->last_step = t->last_step;
  s->stride = t->stride;
  memcpy(s->ch, t->ch, sizeof(s->ch));
  memcpy(s->src, t->src, sizeof(s->src));
  if (t->n) {
    s->have_last = 1;
    s->last = t->ring[(t->head + t->n - 1) % t->o.ring_steps];
  }
  memcpy(s->eval_last, t->eval_last, sizeof(s->eval_last));
  s->spikes = t->spikes;
  s->recovered = t->recovered;
  s->rollbacks = t->rollbacks;
  s->skipped = t->skipped;
  s->directives = t->directives;
  s->nonfinite = t->nonfinite;
  s->nevents = t->nevents;
  s->nckpt = t->nckpt;
  s->reports = atomic_load_explicit(&t->reports, memory_order_relaxed);
  memcpy(s->kind_n, t->kind_n, sizeof(s->kind_n));
  s->kind_other = t->kind_other;
  s->nalert = t->nalert;
  memcpy(s->alert_kind, t->alert_kind, sizeof(s->alert_kind));
  memcpy(s->alert_n, t->alert_n, sizeof(s->alert_n));
  s->ckpt_step = t->ckpt_step;
  s->ckpt_time = t->ckpt_time;
  s->ckpt_bytes = t->ckpt_bytes;
  s->have_guard = t->have_guard;
  s->have_quar = t->have_quar;
  s->masked_share = t->masked_share;
  s->guard_samples = t->guard_samples;
  s->guard_masked = t->guard_masked;
  s->quar_active = t->quar_active;
  s->quar_released = t->quar_released;
  s->nmask = t->nmask;
  memcpy(s->mask_ch, t->mask_ch, sizeof(s->mask_ch));
  memcpy(s->mask_why, t->mask_why, sizeof(s->mask_why));
  memcpy(s->mask_n, t->mask_n, sizeof(s->mask_n));
  return 0;
}

void gy_telemetry_guard(gy_telemetry_t *t, int64_t step, int samples, uint64_t masked) {
  (void)step;
  if (!t || samples <= 0) return;
  pthread_mutex_lock(&t->mu);
  t->have_guard = 1;
  t->masked_share = (double)masked / samples;
  t->guard_samples += (uint64_t)samples;
  t->guard_masked += masked;
  pthread_mutex_unlock(&t->mu);
}

void gy_telemetry_masked(gy_telemetry_t *t, const char *channel, const char *reason, uint64_t n) {
  if (!t || !n) return;
  const char *ch = channel && *channel ? channel : "?", *why = reason && *reason ? reason : "?";
  pthread_mutex_lock(&t->mu);
  int k = 0;
  while (k < t->nmask && (strncmp(t->mask_ch[k], ch, GY_TM_NAME - 1) ||
                          strncmp(t->mask_why[k], why, GY_TM_NAME - 1)))
    k++;
  if (k == t->nmask && t->nmask == GY_TM_MASK_PAIRS) { /* full: the last pair is "other" */
    k = GY_TM_MASK_PAIRS - 1;
    snprintf(t->mask_ch[k], GY_TM_NAME, "other");
    snprintf(t->mask_why[k], GY_TM_NAME, "other");
  } else if (k == t->nmask) {
    snprintf(t->mask_ch[k], GY_TM_NAME, "%s", ch);
    snprintf(t->mask_why[k], GY_TM_NAME, "%s", why);
    t->mask_n[k] = 0;
    t->nmask++;
  }
  t->mask_n[k] += n;
  pthread_mutex_unlock(&t->mu);
}

void gy_telemetry_quarantine(gy_telemetry_t *t, json_t *list, uint64_t active, uint64_t released) {
  if (!t) {
    json_decref(list);
    return;
  }
  pthread_mutex_lock(&t->mu);
  json_t *old = t->quar;
  if (list) t->quar = list;
  t->quar_active = active;
  t->quar_released = released;
  t->have_quar = 1;
  pthread_mutex_unlock(&t->mu);
  if (list) json_decref(old);
}

json_t *gy_telemetry_quarantine_json(gy_telemetry_t *t) {
  if (!t) return NULL;
  pthread_mutex_lock(&t->mu);
  json_t *q = t->quar ? json_deep_copy(t->quar)
                      : json_pack("{s:[], s:I, s:I}", "entries", "active", (json_int_t)0,
                                  "released", (json_int_t)0);
  pthread_mutex_unlock(&t->mu);
  return q;
}

/* ---- the Prometheus text exposition ---- */

typedef struct {
  char *p;
  size_t len, cap;
  int oom;
} sbuf_t;

static void sb_printf(sbuf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf_t *b, const char *fmt, ...) {
  if (b->oom) return;
  for (;;) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    if (n < 0) {
      b->oom = 1;
      return;
    }
    if ((size_t)n < b->cap - b->len) {
      b->len += (size_t)n;
      return;
    }
    size_t cap = (b->cap + (size_t)n + 1) * 2;
    char *q = realloc(b->p, cap);
    if (!q) {
      b->oom = 1;
      return;
    }
    b->p = q;
    b->cap = cap;
  }
}

size_t gy_telemetry_escape_label(char *buf, size_t cap, const char *v) {
  size_t need = 0;
  for (const char *c = v ? v : ""; *c; c++) {
    char rep[2] = {*c, 0};
    size_t rl = 1;
    if (*c == '\\' || *c == '"' || *c == '\n') {
      rep[0] = '\\';
      rep[1] = *c == '\n' ? 'n' : *c;
      rl = 2;
    }
    if (buf && need + rl < cap) memcpy(buf + need, rep, rl);
    need += rl;
  }
  if (buf && cap) buf[need < cap ? need : 0] = 0; /* did not fit: empty */
  return need;
}

/* A label value, escaped, into a static-size buffer (names and kinds are short). */
static const char *esc(char *buf, size_t cap, const char *v) {
  if (gy_telemetry_escape_label(buf, cap, v) >= cap) snprintf(buf, cap, "?");
  return buf;
}

/* A sample value as Prometheus spells it. */
static const char *val(char *buf, size_t cap, double v) {
  if (isnan(v))
    snprintf(buf, cap, "NaN");
  else if (isinf(v))
    snprintf(buf, cap, v > 0 ? "+Inf" : "-Inf");
  else
    snprintf(buf, cap, "%.17g", v);
  return buf;
}

static void family(sbuf_t *b, const char *name, const char *type, const char *help) {
  sb_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void sample(sbuf_t *b, const char *name, const char *labels, double v) {
  char vb[40];
  if (labels && *labels)
    sb_printf(b, "%s{%s} %s\n", name, labels, val(vb, sizeof(vb), v));
  else
    sb_printf(b, "%s %s\n", name, val(vb, sizeof(vb), v));
}

static void gauge(sbuf_t *b, const char *name, const char *help, double v) {
  family(b, name, "gauge", help);
  sample(b, name, NULL, v);
}

static void counter(sbuf_t *b, const char *name, const char *help, double v) {
  family(b, name, "counter", help);
  sample(b, name, NULL, v);
}

static const char *const states[] = {
    "INIT",   "TRAIN",  "SPIKE_SUSPECTED", "ROLLBACK", "SKIP_WINDOW", "RESUME",
    "PAUSED", "HALTED", "STOPPING",        "DEGRADED", "DONE"};

int gy_telemetry_metrics(gy_telemetry_t *t, double now, char **out, size_t *len) {
  *out = NULL;
  *len = 0;
  if (!t) return GY_EINVAL;
  snap_t s;
  pthread_mutex_lock(&t->mu);
  int rc = gy__tm_snap_take(t, &s);
  pthread_mutex_unlock(&t->mu);
  if (rc) return rc;
  sbuf_t b = {0};
  char l[512], e1[160], e2[160];

  family(&b, "gyro_run_info", "gauge", "The run this controller serves (always 1).");
  snprintf(l, sizeof(l), "run=\"%s\"", esc(e1, sizeof(e1), s.run_name));
  sample(&b, "gyro_run_info", l, 1);
  family(&b, "gyro_run_state", "gauge", "1 for the run's current state, 0 for the others.");
  int known = 0;
  for (size_t i = 0; i < sizeof(states) / sizeof(states[0]); i++) {
    snprintf(l, sizeof(l), "state=\"%s\"", states[i]);
    known |= !strcmp(states[i], s.state);
    sample(&b, "gyro_run_state", l, !strcmp(states[i], s.state));
  }
  if (!known) {
    snprintf(l, sizeof(l), "state=\"%s\"", esc(e1, sizeof(e1), s.state));
    sample(&b, "gyro_run_state", l, 1);
  }
  gauge(&b, "gyro_ready", "1 when the controller serves (the /readyz answer).", s.ready);
  gauge(&b, "gyro_run_step", "Newest aggregated step (-1: none yet).", (double)s.last_step);
  gauge(&b, "gyro_run_steps", "Steps the run trains in all (run.steps).", (double)s.steps);
  gauge(&b, "gyro_run_timeline", "Timelines so far: one more after each rollback re-ran steps.",
        s.timeline);
  gauge(&b, "gyro_gang_generation", "Generation of the newest gang formed (0: none yet).",
        (double)s.generation);
  gauge(&b, "gyro_gang_formed", "1 while a gang is formed and holds its ranks.", s.gang);
  gauge(&b, "gyro_gang_world", "Workers in the gang (controller.world).", s.world);

  if (s.have_last) {
    const pt_t *p = &s.last;
    gauge(&b, "gyro_train_loss_nats", "Training loss of the newest step (cross-entropy, nats).",
          p->loss);
    family(&b, "gyro_train_channel_loss_nats", "gauge",
           "Training loss per data channel of the newest step (nats; NaN: no sample).");
    for (int c = 0; c < s.nch; c++) {
      snprintf(l, sizeof(l), "channel=\"%s\"", esc(e1, sizeof(e1), s.ch[c]));
      sample(&b, "gyro_train_channel_loss_nats", l, p->ch[c]);
    }
    family(&b, "gyro_train_grad_norm", "gauge",
           "Gradient L2 norm of the newest step, by parameter group (global, shallow, deep).");
    sample(&b, "gyro_train_grad_norm", "group=\"global\"", p->gn);
    sample(&b, "gyro_train_grad_norm", "group=\"shallow\"", p->gns);
    sample(&b, "gyro_train_grad_norm", "group=\"deep\"", p->gnd);
    gauge(&b, "gyro_train_learning_rate", "Learning rate of the newest step.", p->lr);
    gauge(&b, "gyro_train_throughput_tokens_per_second",
          "Tokens per second of the gang at the newest step.", p->tps);
    gauge(&b, "gyro_train_step_duration_seconds",
          "Duration of the newest step on its slowest rank (seconds).", p->step_ms / 1e3);
  }
  family(&b, "gyro_rank_throughput_tokens_per_second", "gauge",
         "Tokens per second each rank reported for its newest step.");
  for (int r = 0; r < s.world; r++) {
    if (isnan(s.ranks[r].tps)) continue;
    snprintf(l, sizeof(l), "rank=\"%d\"", r);
    sample(&b, "gyro_rank_throughput_tokens_per_second", l, s.ranks[r].tps);
  }
  if (s.nsrc) {
    family(&b, "gyro_eval_loss_nats", "gauge", "Newest held-out loss per source (nats).");
    for (int i = 0; i < s.nsrc; i++) {
      snprintf(l, sizeof(l), "source=\"%s\"", esc(e1, sizeof(e1), s.src[i]));
      sample(&b, "gyro_eval_loss_nats", l, s.eval_last[i].loss);
    }
    family(&b, "gyro_eval_perplexity", "gauge", "Newest held-out perplexity per source.");
    for (int i = 0; i < s.nsrc; i++) {
      snprintf(l, sizeof(l), "source=\"%s\"", esc(e1, sizeof(e1), s.src[i]));
      sample(&b, "gyro_eval_perplexity", l, s.eval_last[i].ppl);
    }
    family(&b, "gyro_eval_cloze_accuracy", "gauge",
           "Newest held-out cloze accuracy per source (next-token argmax right, 0..1).");
    for (int i = 0; i < s.nsrc; i++) {
      if (isnan(s.eval_last[i].cloze)) continue;
      snprintf(l, sizeof(l), "source=\"%s\"", esc(e1, sizeof(e1), s.src[i]));
      sample(&b, "gyro_eval_cloze_accuracy", l, s.eval_last[i].cloze);
    }
    family(&b, "gyro_eval_step", "gauge", "Step of the newest held-out evaluation per source.");
    for (int i = 0; i < s.nsrc; i++) {
      snprintf(l, sizeof(l), "source=\"%s\"", esc(e1, sizeof(e1), s.src[i]));
      sample(&b, "gyro_eval_step", l, (double)s.eval_last[i].step);
    }
  }
  if (s.gpu_seen) {
    static const struct {
      const char *name, *help;
      size_t off;
    } g[] = {
        {"gyro_gpu_temperature_celsius", "GPU temperature per rank (degrees Celsius).",
         offsetof(rank_t, temp)},
        {"gyro_gpu_memory_used_bytes", "GPU memory in use per rank (bytes).",
         offsetof(rank_t, mem)},
        {"gyro_gpu_memory_total_bytes", "GPU memory per rank (bytes).",
         offsetof(rank_t, mem_total)},
        {"gyro_gpu_utilization_ratio", "GPU utilisation per rank (0 to 1).",
         offsetof(rank_t, util)},
    };
    for (size_t k = 0; k < sizeof(g) / sizeof(g[0]); k++) {
      family(&b, g[k].name, "gauge", g[k].help);
      for (int r = 0; r < s.world; r++) {
        double v = *(const double *)((const char *)&s.ranks[r] + g[k].off);
        if (isnan(v)) continue;
        snprintf(l, sizeof(l), "rank=\"%d\"", r);
        sample(&b, g[k].name, l, v);
      }
    }
  }
  counter(&b, "gyro_reports_total", "Step reports ingested from the workers.", (double)s.reports);
  counter(&b, "gyro_spikes_detected_total", "Loss or gradient spikes suspected.", (double)s.spikes);
  counter(&b, "gyro_spikes_recovered_total",
          "Suspected spikes that went back to their baseline without a repair.",
          (double)s.recovered);
  counter(&b, "gyro_rollbacks_total", "Rollbacks applied by every rank.", (double)s.rollbacks);
  counter(&b, "gyro_skipped_samples_total", "Sample ids skipped by the applied rollbacks.",
          (double)s.skipped);
  counter(&b, "gyro_directives_total", "Directives sent to the gang.", (double)s.directives);
  counter(&b, "gyro_nonfinite_steps_total", "Aggregated steps with a non-finite loss or gradient.",
          (double)s.nonfinite);
  counter(&b, "gyro_checkpoints_committed_total", "Checkpoints every rank wrote.", (double)s.nckpt);
  family(&b, "gyro_events_total", "counter", "Audit events, by kind.");
  for (int k = 0; k < GY_EVENT_NKINDS; k++) {
    if (!s.kind_n[k]) continue;
    snprintf(l, sizeof(l), "kind=\"%s\"", esc(e1, sizeof(e1), gy_event_kind_name(k)));
    sample(&b, "gyro_events_total", l, (double)s.kind_n[k]);
  }
  if (s.kind_other) sample(&b, "gyro_events_total", "kind=\"other\"", (double)s.kind_other);
  if (s.nalert) {
    family(&b, "gyro_alerts_total", "counter",
           "Webhook alerts, by kind and outcome (sent, suppressed, failed, dropped).");
    for (int k = 0; k < s.nalert; k++)
      for (int o = 0; o < 4; o++) {
        snprintf(l, sizeof(l), "kind=\"%s\",outcome=\"%s\"", esc(e2, sizeof(e2), s.alert_kind[k]),
                 alert_outcomes[o]);
        sample(&b, "gyro_alerts_total", l, (double)s.alert_n[k][o]);
      }
  }
  if (s.have_guard) {
    gauge(&b, "gyro_guard_masked_share",
          "Share of the newest step's samples the workers' guard masked out of the loss.",
          s.masked_share);
    counter(&b, "gyro_guard_samples_total", "Samples the guard judged (aggregated steps).",
            (double)s.guard_samples);
  }
  if (s.nmask) {
    family(&b, "gyro_guard_masked_total", "counter",
           "Samples the workers' guard masked out of the loss, by channel and rule (reason "
           "\"unlisted\": beyond the samples a report lists).");
    for (int k = 0; k < s.nmask; k++) {
      snprintf(l, sizeof(l), "channel=\"%s\",reason=\"%s\"", esc(e1, sizeof(e1), s.mask_ch[k]),
               esc(e2, sizeof(e2), s.mask_why[k]));
      sample(&b, "gyro_guard_masked_total", l, (double)s.mask_n[k]);
    }
  }
  if (s.have_quar) {
    family(&b, "gyro_quarantine_entries", "gauge",
           "Regions in the controller's quarantine list, active or released by the operator.");
    sample(&b, "gyro_quarantine_entries", "state=\"active\"", (double)s.quar_active);
    sample(&b, "gyro_quarantine_entries", "state=\"released\"", (double)s.quar_released);
  }
  if (s.ckpt_step >= 0) {
    gauge(&b, "gyro_checkpoint_step", "Step of the newest committed checkpoint.",
          (double)s.ckpt_step);
    gauge(&b, "gyro_checkpoint_age_seconds", "Seconds since the newest checkpoint was committed.",
          now > s.ckpt_time ? now - s.ckpt_time : 0);
    if (s.ckpt_bytes)
      gauge(&b, "gyro_checkpoint_size_bytes", "Size of the newest committed checkpoint (bytes).",
            (double)s.ckpt_bytes);
  }
  free(s.ranks);
  if (b.oom) {
    free(b.p);
    return GY_ENOMEM;
  }
  *out = b.p;
  *len = b.len;
  return 0;
}

int gy_telemetry_ready(gy_telemetry_t *t, char *why, size_t len) {
  if (!t) return 0;
  pthread_mutex_lock(&t->mu);
  int r = t->ready;
  if (why && len)
    snprintf(why, len, "%s%s%s; gang %s (generation %llu), state %s", r ? "ready" : "not ready",
             t->ready_why[0] ? ": " : "", t->ready_why, t->gang ? "formed" : "not formed",
             (unsigned long long)t->generation, t->state);
  pthread_mutex_unlock(&t->mu);
  return r;
}
