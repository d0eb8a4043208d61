/*
 * svc_ckeval: what the ranks report besides their step figures: held-out evaluations, GPU
 * health, and rank 0's top samples of a step.
 *
 * API, in order: ckeval_find, ckeval_journal, ckeval_from_json, eval_msg, gpu_report, keep_top.
 *
 * Held-out evaluations (EvalReport, from rank 0) feed the telemetry and the run's ppl detectors
 * (gy_run_eval); a checkpoint's evaluation is kept (ckevals) and written into its journal
 * manifest, and /gyro.Operator/Checkpoints lists the committed checkpoints with them. A GPU
 * report goes to the telemetry, and a new hardware fault is told once (an event and an alert).
 * Rank 0's top and bottom samples are kept (tops, by step % TOP_RING) until the step is
 * aggregated and fed to the run (svc_repair.c).
 *
 * Invariants:
 * - ckevals holds at most CKEVAL_MAX evaluations, sorted by step, one per checkpoint (when full
 *   the oldest step goes); an applied rollback drops those after its target (svc_repair.c).
 */
#include "controller/service_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/log.h"

/* ------------------------------------ held-out evaluations ------------------------------------ */

/* The kept evaluation of checkpoint step, or NULL. */
ckeval_t *gy__svc_ckeval_find(gy_service_t *s, int64_t step) {
  for (int i = s->nckevals - 1; i >= 0; i--)
    if (s->ckevals[i].step == step) return &s->ckevals[i];
  return NULL;
}

/* Keeps e (a newer evaluation of the same checkpoint replaces the older one); when full the
 * oldest step goes. */
static void ckeval_put(gy_service_t *s, const ckeval_t *e) {
  if (!s->ckevals && !(s->ckevals = calloc(CKEVAL_MAX, sizeof(*s->ckevals)))) {
    gy_log(GY_LOG_ERROR, "controller", "out of memory: evaluation of checkpoint %lld not kept",
           (long long)e->step);
    return;
  }
  ckeval_t *old = gy__svc_ckeval_find(s, e->step);
  if (old) {
    *old = *e;
    return;
  }
  if (s->nckevals == CKEVAL_MAX) {
    if (e->step < s->ckevals[0].step) return;
    memmove(&s->ckevals[0], &s->ckevals[1], (size_t)(CKEVAL_MAX - 1) * sizeof(*s->ckevals));
    s->nckevals--;
  }
  int i = s->nckevals;
  while (i > 0 && s->ckevals[i - 1].step > e->step)
    i--;
  memmove(&s->ckevals[i + 1], &s->ckevals[i], (size_t)(s->nckevals - i) * sizeof(*s->ckevals));
  s->ckevals[i] = *e;
  s->nckevals++;
}

/* {"step", "sources": [{"source", "loss", "ppl", "tokens", "cloze_accuracy", "cloze_items"}]}
 * (cloze_accuracy null when there was no item). */
static json_t *ckeval_json(const ckeval_t *e) {
  json_t *a = json_array();
  for (int i = 0; i < e->n; i++) {
    const srceval_t *x = &e->src[i];
    json_array_append_new(a, json_pack("{s:s, s:o, s:o, s:I, s:o, s:I}", "source", x->name, "loss",
                                       gy__svc_num(x->loss), "ppl", gy__svc_num(x->ppl), "tokens",
                                       (json_int_t)x->tokens, "cloze_accuracy",
                                       x->items ? gy__svc_num(x->cloze) : json_null(),
                                       "cloze_items", (json_int_t)x->items));
  }
  return json_pack("{s:I, s:o}", "step", (json_int_t)e->step, "sources", a);
}

/* Writes the kept evaluation of checkpoint step into its journal manifest, on the writer's
 * thread behind the manifest's own write (a failure is logged, the run goes on). */
void gy__svc_ckeval_journal(gy_service_t *s, int64_t step) {
  const ckeval_t *e;
  if (!s->o.journal || !(e = gy__svc_ckeval_find(s, step))) return;
  json_t *o = ckeval_json(e);
  char *text = o ? json_dumps(o, JSON_COMPACT) : NULL, what[64];
  json_decref(o);
  if (!text) {
    gy_log(GY_LOG_WARN, "controller", "journal: evaluation of checkpoint %lld: out of memory",
           (long long)step);
    return;
  }
  snprintf(what, sizeof(what), "evaluation of checkpoint %lld", (long long)step);
  jop_t *op = gy__svc_jop(s, JOP_CKPT_EVAL);
  gy__svc_jop_set(op, step, 0, 0, 0, text);
  gy__svc_journal_best(s, op, what);
}

/* 1 when name is a source name: 1..GY_FLEET_CH_NAME-1 bytes of UTF-8 text without control
 * characters (jansson refuses a string that is not UTF-8). */
static int source_name_ok(const char *name) {
  size_t n = name ? strlen(name) : 0;
  if (!n || n >= GY_FLEET_CH_NAME) return 0;
  for (size_t i = 0; i < n; i++)
    if ((unsigned char)name[i] < 0x20 || name[i] == 0x7f) return 0;
  json_t *j = json_string(name);
  json_decref(j);
  return j != NULL;
}

/* Checks one source's figures into *x; 0 or GY_EINVAL with why. */
static int source_check(srceval_t *x, const char *name, double loss, double ppl, uint64_t tokens,
                        double cloze, uint64_t items, char *why, size_t len) {
  if (!source_name_ok(name)) {
    snprintf(why, len, "source name must be 1..%d bytes of UTF-8 text", GY_FLEET_CH_NAME - 1);
    return GY_EINVAL;
  }
  if (!isfinite(loss) || loss < 0 || !isfinite(ppl) || ppl <= 0 || !isfinite(cloze) || cloze < 0 ||
      cloze > 1 || items > UINT32_MAX) {
    snprintf(why, len,
             "source %s: loss %g, ppl %g, cloze accuracy %g: the loss must be finite and >= 0, "
             "the perplexity finite and > 0, the accuracy in [0, 1]",
             name, loss, ppl, cloze);
    return GY_EINVAL;
  }
  snprintf(x->name, sizeof(x->name), "%s", name);
  x->loss = loss;
  x->ppl = ppl;
  x->tokens = tokens;
  x->cloze = cloze;
  x->items = (uint32_t)items;
  return 0;
}

/* A manifest's "eval" object (from the journal) into the kept evaluations; a bad one is logged
 * and skipped. */
void gy__svc_ckeval_from_json(gy_service_t *s, int64_t step, const char *text) {
  json_t *o = json_loads(text, 0, NULL), *a = json_object_get(o, "sources");
  ckeval_t e = {.step = step};
  char why[256] = "not an evaluation object";
  int ok = json_is_array(a) && json_array_size(a) <= GY_FLEET_MAX_CH;
  for (size_t i = 0; ok && i < json_array_size(a); i++) {
    json_t *x = json_array_get(a, i), *cz = json_object_get(x, "cloze_accuracy");
    const char *name = json_string_value(json_object_get(x, "source"));
    json_int_t tok = json_integer_value(json_object_get(x, "tokens"));
    json_int_t items = json_integer_value(json_object_get(x, "cloze_items"));
    ok = tok >= 0 && items >= 0 &&
         !source_check(&e.src[e.n++], name, json_number_value(json_object_get(x, "loss")),
                       json_number_value(json_object_get(x, "ppl")), (uint64_t)tok,
                       json_is_number(cz) ? json_number_value(cz) : 0, (uint64_t)items, why,
                       sizeof(why));
  }
  json_decref(o);
  if (ok)
    ckeval_put(s, &e);
  else
    gy_log(GY_LOG_WARN, "controller", "journal: evaluation of checkpoint %lld ignored: %s",
           (long long)step, why);
}

/* An EvalReport on rank's session: checked (generation, rank, step, at most GY_FLEET_MAX_CH
 * sources with distinct UTF-8 names, finite figures, the checkpoint's step its own), then into
 * the telemetry, the run's ppl detectors (gy_run_eval), a JSON line on stdout and, for a
 * checkpoint's evaluation, the kept evaluations (and the manifest when already committed).
 * Returns 0, or GY_EMISMATCH (another generation) / GY_EINVAL with why. */
int gy__svc_eval_msg(gy_service_t *s, int rank, const Gyro__EvalReport *r, char *why, size_t len) {
  uint64_t gen = gy_fleet_generation(s->fleet);
  if (r->generation != gen) {
    snprintf(why, len, "evaluation: generation %llu, current is %llu",
             (unsigned long long)r->generation, (unsigned long long)gen);
    return GY_EMISMATCH;
  }
  if (r->rank != rank || r->rank < 0 || r->rank >= s->o.world) {
    snprintf(why, len, "evaluation: rank %d on the session of rank %d (world %d)", r->rank, rank,
             s->o.world);
    return GY_EINVAL;
  }
  if (r->step < 0 || (r->has_checkpoint && r->checkpoint_step != r->step)) {
    snprintf(why, len,
             "evaluation: step %lld, checkpoint step %lld: a step >= 0, and a "
             "checkpoint's evaluation is of its own step",
             (long long)r->step, (long long)r->checkpoint_step);
    return GY_EINVAL;
  }
  if (r->n_sources > GY_FLEET_MAX_CH) {
    snprintf(why, len, "evaluation: %zu sources, at most %d", r->n_sources, GY_FLEET_MAX_CH);
    return GY_EINVAL;
  }
  ckeval_t e = {.step = r->step, .n = (int)r->n_sources};
  char err[200];
  for (int i = 0; i < e.n; i++) {
    const Gyro__SourceEval *x = r->sources[i];
    int rc = source_check(&e.src[i], x->source, x->loss, x->ppl, x->tokens,
                          x->cloze_items ? x->cloze_accuracy : 0, x->cloze_items, err, sizeof(err));
    for (int k = 0; k < i && !rc; k++)
      if (!strcmp(e.src[k].name, e.src[i].name)) {
        snprintf(err, sizeof(err), "source %s twice", e.src[i].name);
        rc = GY_EINVAL;
      }
    if (rc) {
      snprintf(why, len, "evaluation of step %lld: %s", (long long)r->step, err);
      return rc;
    }
  }
  char names[GY_FLEET_MAX_CH][GY_DETECT_NAME_MAX];
  gy_run_value_t v[GY_FLEET_MAX_CH];
  for (int i = 0; i < e.n; i++) {
    const srceval_t *x = &e.src[i];
    gy_telemetry_eval_cloze(s->o.telemetry, e.step, x->name, x->loss, x->ppl,
                            x->items ? x->cloze : NAN, r->has_checkpoint);
    snprintf(names[i], sizeof(names[i]), "ppl/%s", x->name);
    v[i] = (gy_run_value_t){names[i], GY_SERIES_PPL, x->ppl, -1};
  }
  if (s->o.emit_steps) {
    json_t *o = ckeval_json(&e);
    json_object_set_new(o, "type", json_string("eval"));
    json_object_set_new(o, "checkpoint", json_boolean(r->has_checkpoint));
    gy_json_emit(o);
  }
  if (r->has_checkpoint) {
    ckeval_put(s, &e);
    int n;
    const gy_run_ckpt_t *ck = gy_run_checkpoints(s->run, &n);
    for (int i = 0; i < n; i++)
      if (ck[i].step == e.step) gy__svc_ckeval_journal(s, e.step); /* committed before it came */
  }
  if (e.n) {
    gy__svc_run_refused(s, "evaluation", gy_run_eval(s->run, gy__svc_now_ms(s), e.step, v, e.n));
    gy__svc_run_drain(s);
  }
  return 0;
}

/* GPU throttle reasons that mean the hardware protects itself (NVML's bits: HW slowdown, SW
 * and HW thermal, HW power brake), as opposed to idling or power capping by configuration. */
#define HW_THROTTLE_FAULT (0x8ull | 0x20ull | 0x40ull | 0x80ull)

/* A rank's GPU health: into the telemetry, and a "hardware" event (and alert) when an Xid
 * error or an uncorrected ECC error is new, or a protective throttle starts. */
void gy__svc_gpu_report(gy_service_t *s, int rank, int64_t step, const Gyro__GpuHealth *g) {
  gy_telemetry_gpu(s->o.telemetry, rank, g->has_temp ? (double)g->temp_c : NAN,
                   g->has_mem ? (double)g->mem_used_bytes : NAN,
                   g->has_mem ? (double)g->mem_total_bytes : NAN,
                   g->has_util ? g->util_gpu_pct / 100.0 : NAN);
  if (rank < 0 || rank >= s->o.world) return;
  if (!s->hw && !(s->hw = calloc((size_t)s->o.world, sizeof(*s->hw)))) return;
  hw_slot_t *h = &s->hw[rank];
  char what[256] = "";
  size_t n = 0;
  if (g->has_xid && h->seen && g->xid_count > h->xid_count)
    n += (size_t)snprintf(what + n, sizeof(what) - n, "%u new Xid error(s), last Xid %llu; ",
                          g->xid_count - h->xid_count, (unsigned long long)g->last_xid);
  if (g->has_ecc && h->seen && g->ecc_uncorrected > h->ecc_uncorrected && n < sizeof(what))
    n += (size_t)snprintf(what + n, sizeof(what) - n, "%llu new uncorrected ECC error(s); ",
                          (unsigned long long)(g->ecc_uncorrected - h->ecc_uncorrected));
  uint64_t fault = g->has_throttle ? g->throttle_reasons & HW_THROTTLE_FAULT : 0;
  if (fault & ~h->throttle && n < sizeof(what))
    n += (size_t)snprintf(what + n, sizeof(what) - n, "throttling (reasons 0x%llx); ",
                          (unsigned long long)fault);
  h->seen = 1;
  if (g->has_xid) h->xid_count = g->xid_count;
  if (g->has_ecc) h->ecc_uncorrected = g->ecc_uncorrected;
  h->throttle = fault;
  if (!what[0]) return;
  if (n >= 2 && n < sizeof(what)) what[n - 2] = 0; /* the last "; " */
  char msg[512];
  snprintf(msg, sizeof(msg), "rank %d GPU %d (%.64s) at step %lld: %s", rank, g->index,
           g->name ? g->name : "", (long long)step, what);
  gy__svc_eventf(s, GY_EVENT_HARDWARE, "%s", msg);
  gy_alert_post(s->o.alert, "hardware", step, msg);
}

/* Rank 0's top samples of a report, kept until the step is aggregated. */
void gy__svc_keep_top(gy_service_t *s, const Gyro__StepReport *r) {
  if (r->step < 0) return;
  top_slot_t *t = &s->tops[r->step % TOP_RING];
  t->step = r->step;
  t->n = t->nb = 0;
  for (size_t i = 0; i < r->n_top + r->n_bottom; i++) {
    int bottom = i >= r->n_top;
    int *n = bottom ? &t->nb : &t->n;
    if (*n >= TOP_MAX) continue;
    const Gyro__SampleLoss *sl = bottom ? r->bottom[i - r->n_top] : r->top[i];
    int at = (bottom ? TOP_MAX : 0) + *n;
    t->id[at] = sl->id;
    t->loss[at] = sl->loss;
    snprintf(t->ch[at], sizeof(t->ch[at]), "%s", sl->channel ? sl->channel : "");
    (*n)++;
  }
}
