/*
 * core_eval: what the ranks report besides their step figures: held-out evaluations and rank
 * 0's top samples of a step.
 *
 * API, in order: ckeval_json, ckeval_journal, ckeval_from_json, eval, ckeval, ckeval_truncate,
 * keep_top.
 *
 * Held-out evaluations (EvalReport, from rank 0) feed the telemetry and the run's ppl detectors
 * (gy_run_eval), and are told (io->eval); a checkpoint's evaluation is kept (ckevals) and
 * written into its journal manifest, and /gyro.Operator/Checkpoints lists the committed
 * checkpoints with them. Rank 0's top and bottom samples are kept (tops, by step % TOP_RING)
 * until the step is aggregated and fed to the run (core_repair.c).
 *
 * Invariants:
 * - ckevals holds at most GY_CORE_CKEVAL_MAX evaluations, sorted by step, one per checkpoint
 *   (when full the oldest step goes); an applied rollback drops those after its target.
 */
#include "controller/core_internal.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/log.h"

static json_t *num(double v) {
  return isfinite(v) ? json_real(v) : json_null();
}

/* A figure read back: null (what num() wrote for a NaN or infinite one) is NaN. */
static double num_in(const json_t *j) {
  return json_is_number(j) ? json_number_value(j) : NAN;
}

/* ------------------------------------ held-out evaluations ------------------------------------ */

/* The kept evaluation of checkpoint step, or NULL. */
static gy_ckeval_t *ckeval_find(const gy_core_t *c, int64_t step) {
  for (int i = c->nckevals - 1; i >= 0; i--)
    if (c->ckevals[i].step == step) return &c->ckevals[i];
  return NULL;
}

/* Keeps e (a newer evaluation of the same checkpoint replaces the older one); when full the
 * oldest step goes. */
static void ckeval_put(gy_core_t *c, const gy_ckeval_t *e) {
  if (!c->ckevals && !(c->ckevals = calloc(GY_CORE_CKEVAL_MAX, sizeof(*c->ckevals)))) {
    gy_log(GY_LOG_ERROR, "controller", "out of memory: evaluation of checkpoint %lld not kept",
           (long long)e->step);
    return;
  }
  gy_ckeval_t *old = ckeval_find(c, e->step);
  if (old) {
    *old = *e;
    return;
  }
  if (c->nckevals == GY_CORE_CKEVAL_MAX) {
    if (e->step < c->ckevals[0].step) return;
    memmove(&c->ckevals[0], &c->ckevals[1], (size_t)(GY_CORE_CKEVAL_MAX - 1) * sizeof(*c->ckevals));
    c->nckevals--;
  }
  int i = c->nckevals;
  while (i > 0 && c->ckevals[i - 1].step > e->step)
    i--;
  memmove(&c->ckevals[i + 1], &c->ckevals[i], (size_t)(c->nckevals - i) * sizeof(*c->ckevals));
  c->ckevals[i] = *e;
  c->nckevals++;
}

/* {"step", "sources": [{"source", "loss", "ppl", "tokens", "cloze_accuracy", "cloze_items"}]}
 * (cloze_accuracy null when there was no item). */
json_t *gy_core_ckeval_json(const gy_ckeval_t *e) {
  json_t *a = json_array();
  for (int i = 0; i < e->n; i++) {
    const gy_srceval_t *x = &e->src[i];
    json_array_append_new(
        a, json_pack("{s:s, s:o, s:o, s:I, s:o, s:I}", "source", x->name, "loss", num(x->loss),
                     "ppl", num(x->ppl), "tokens", (json_int_t)x->tokens, "cloze_accuracy",
                     x->items ? num(x->cloze) : json_null(), "cloze_items", (json_int_t)x->items));
  }
  return json_pack("{s:I, s:o}", "step", (json_int_t)e->step, "sources", a);
}

/* Writes the kept evaluation of checkpoint step into its journal manifest, on the writer's
 * thread behind the manifest's own write (a failure is logged, the run goes on). */
void gy__core_ckeval_journal(gy_core_t *c, int64_t step) {
  const gy_ckeval_t *e;
  if (!c->o.journal || !(e = ckeval_find(c, step))) return;
  json_t *o = gy_core_ckeval_json(e);
  char *text = o ? json_dumps(o, JSON_COMPACT) : NULL, what[64];
  json_decref(o);
  if (!text) {
    gy_log(GY_LOG_WARN, "controller", "journal: evaluation of checkpoint %lld: out of memory",
           (long long)step);
    return;
  }
  snprintf(what, sizeof(what), "evaluation of checkpoint %lld", (long long)step);
  gy_jrec_t *r = gy__core_jrec(c, GY_JREC_CKPT_EVAL, what);
  if (!r) {
    free(text);
    return;
  }
  r->step = step;
  r->text = text;
  gy__core_journal_best(c, r);
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
static int source_check(gy_srceval_t *x, const char *name, double loss, double ppl, uint64_t tokens,
                        double cloze, uint64_t items, char *why, size_t len) {
  if (!source_name_ok(name)) {
    snprintf(why, len, "source name must be 1..%d bytes of UTF-8 text", GY_FLEET_CH_NAME - 1);
    return GY_EINVAL;
  }
  /* A NaN or infinite loss or perplexity is what a broken model measures, not a malformed
   * message: it is kept and goes to the run, whose detectors roll back on it. A negative loss,
   * a perplexity <= 0 or an accuracy outside [0, 1] cannot be measured at all. */
  if (loss < 0 || ppl <= 0 || !isfinite(cloze) || cloze < 0 || cloze > 1 || items > UINT32_MAX) {
    snprintf(why, len,
             "source %s: loss %g, ppl %g, cloze accuracy %g: the loss must be >= 0 and the "
             "perplexity > 0 (either may be NaN or infinite: a broken model), the accuracy in "
             "[0, 1]",
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
void gy__core_ckeval_from_json(gy_core_t *c, int64_t step, const char *text) {
  json_t *o = json_loads(text, 0, NULL), *a = json_object_get(o, "sources");
  gy_ckeval_t e = {.step = step};
  char why[256] = "not an evaluation object";
  int ok = json_is_array(a) && json_array_size(a) <= GY_FLEET_MAX_CH;
  for (size_t i = 0; ok && i < json_array_size(a); i++) {
    json_t *x = json_array_get(a, i), *cz = json_object_get(x, "cloze_accuracy");
    const char *name = json_string_value(json_object_get(x, "source"));
    json_int_t tok = json_integer_value(json_object_get(x, "tokens"));
    json_int_t items = json_integer_value(json_object_get(x, "cloze_items"));
    ok = tok >= 0 && items >= 0 &&
         !source_check(&e.src[e.n++], name, num_in(json_object_get(x, "loss")),
                       num_in(json_object_get(x, "ppl")), (uint64_t)tok,
                       json_is_number(cz) ? json_number_value(cz) : 0, (uint64_t)items, why,
                       sizeof(why));
  }
  json_decref(o);
  if (ok)
    ckeval_put(c, &e);
  else
    gy_log(GY_LOG_WARN, "controller", "journal: evaluation of checkpoint %lld ignored: %s",
           (long long)step, why);
}

/* An EvalReport on rank's session: checked (generation, rank, step, at most GY_FLEET_MAX_CH
 * sources with distinct UTF-8 names, finite figures, the checkpoint's step its own), then into
 * the telemetry, the run's ppl detectors (gy_run_eval), a JSON line on stdout and, for a
 * checkpoint's evaluation, the kept evaluations (and the manifest when already committed).
 * Returns 0, or GY_EMISMATCH (another generation) / GY_EINVAL with why. */
int gy_core_eval(gy_core_t *c, int rank, const gy_core_eval_in_t *r, char *why, size_t len) {
  uint64_t gen = gy_fleet_generation(c->fleet);
  if (r->generation != gen) {
    snprintf(why, len, "evaluation: generation %llu, current is %llu",
             (unsigned long long)r->generation, (unsigned long long)gen);
    return GY_EMISMATCH;
  }
  if (r->rank != rank || r->rank < 0 || r->rank >= c->o.world) {
    snprintf(why, len, "evaluation: rank %d on the session of rank %d (world %d)", r->rank, rank,
             c->o.world);
    return GY_EINVAL;
  }
  if (r->step < 0 || (r->has_checkpoint && r->checkpoint_step != r->step)) {
    snprintf(why, len,
             "evaluation: step %lld, checkpoint step %lld: a step >= 0, and a "
             "checkpoint's evaluation is of its own step",
             (long long)r->step, (long long)r->checkpoint_step);
    return GY_EINVAL;
  }
  if (r->nsources > GY_FLEET_MAX_CH) {
    snprintf(why, len, "evaluation: %zu sources, at most %d", r->nsources, GY_FLEET_MAX_CH);
    return GY_EINVAL;
  }
  gy_ckeval_t e = {.step = r->step, .n = (int)r->nsources};
  char err[200];
  for (int i = 0; i < e.n; i++) {
    int rc = source_check(&e.src[i], r->source[i], r->loss[i], r->ppl[i], r->tokens[i],
                          r->items[i] ? r->cloze[i] : 0, r->items[i], err, sizeof(err));
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
    const gy_srceval_t *x = &e.src[i];
    gy_telemetry_eval_cloze(c->o.telemetry, e.step, x->name, x->loss, x->ppl,
                            x->items ? x->cloze : NAN, r->has_checkpoint);
    snprintf(names[i], sizeof(names[i]), "ppl/%s", x->name);
    v[i] = (gy_run_value_t){names[i], GY_SERIES_PPL, x->ppl, -1};
  }
  c->io.eval(c->io.ud, &e, r->has_checkpoint);
  if (r->has_checkpoint) {
    ckeval_put(c, &e);
    int n;
    const gy_run_ckpt_t *ck = gy_run_checkpoints(c->run, &n);
    for (int i = 0; i < n; i++)
      if (ck[i].step == e.step) gy__core_ckeval_journal(c, e.step); /* committed before it came */
  }
  if (e.n) {
    gy__core_run_refused(c, "evaluation", gy_run_eval(c->run, gy__core_now(c), e.step, v, e.n));
    gy__core_run_drain(c);
  }
  return 0;
}

const gy_ckeval_t *gy_core_ckeval(const gy_core_t *c, int64_t step) {
  return ckeval_find(c, step);
}

/* Forgets the evaluations of checkpoints after to_step (an abandoned timeline). */
void gy__core_ckeval_truncate(gy_core_t *c, int64_t to_step) {
  while (c->nckevals && c->ckevals[c->nckevals - 1].step > to_step)
    c->nckevals--;
}

/* Rank 0's top samples of a report, kept until the step is aggregated. */
void gy__core_keep_top(gy_core_t *c, int64_t step, const gy_core_sample_t *top, size_t ntop,
                       const gy_core_sample_t *bottom, size_t nbottom) {
  if (step < 0) return;
  top_slot_t *t = &c->tops[step % TOP_RING];
  t->step = step;
  t->n = t->nb = 0;
  for (size_t i = 0; i < ntop + nbottom; i++) {
    int isbottom = i >= ntop;
    int *n = isbottom ? &t->nb : &t->n;
    if (*n >= TOP_MAX) continue;
    const gy_core_sample_t *sl = isbottom ? &bottom[i - ntop] : &top[i];
    int at = (isbottom ? TOP_MAX : 0) + *n;
    t->id[at] = sl->id;
    t->loss[at] = sl->loss;
    snprintf(t->ch[at], sizeof(t->ch[at]), "%s", sl->channel ? sl->channel : "");
    (*n)++;
  }
}
