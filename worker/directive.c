/*
 * directive: the directive semantics of gyro-worker's supervised mode, out of worker/main.c so
 * that they can be tested against a scripted agent (tests/unit/test_directive.c).
 *
 * API, in order: gy_directive_merge_hparams (the present hyper-parameters over the knobs),
 * gy_directive_quarantine (quarantine entries into the trainer), gy_directive_apply (one
 * directive between two steps: apply, print its record, acknowledge).
 *
 * What each kind does: CHECKPOINT and STOP write the checkpoint of the current step through to
 * the disk (and, with evaluation on, evaluate it unless a periodic checkpoint of this step was
 * just evaluated); SET_HPARAMS merges the present fields over the knobs, from the current step;
 * ROLLBACK checks everything first (to_step within the steps done, non-empty skip ranges, the
 * hyper-parameters over the current knobs), then restores to_step, forgets the later
 * checkpoints, puts back the skip list in force and adds its ranges (a skip is never undone),
 * and merges its hyper-parameters from to_step; QUARANTINE adds (or, for a released entry,
 * removes) its regions in the trainer's quarantine, each file and offset converted to the
 * channel's stream (gy_directive_quarantine, which the assignment's list goes through too);
 * SET_GUARD replaces the guard's settings (refused when they fail gy_guard_check: the guard
 * stays); PAUSE and RESUME change nothing here (the controller withholds grants).
 *
 * Invariants: every directive is acknowledged exactly once, ok or with why; a refused
 * SET_HPARAMS leaves the knobs, and a refused ROLLBACK the whole trainer, as they were, and the
 * worker goes on; a failed checkpoint or a half-done rollback stops the worker. A repeated
 * sequence number never gets here: the agent ignores one it has acknowledged.
 */
#include "worker/directive.h"

#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "common/err.h"
#include "common/log.h"

/* Wall-clock time in seconds since the epoch (the directive record carries it as "ts"). */
static double wall_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Checkpoint of the current step, written through (a directive's checkpoint must be on disk
 * when it is acknowledged). */
static int checkpoint_now(gy_trainer_t *tr, uint64_t *bytes, char *err, size_t errlen) {
  int rc = gy_trainer_checkpoint(tr, err, errlen);
  if (!rc) rc = gy_trainer_flush(tr, err, errlen);
  if (rc) return rc;
  char path[4096];
  int64_t done = gy_trainer_step_count(tr);
  gy_trainer_ckpt_path(tr, done, path, sizeof(path));
  struct stat st;
  if (bytes) *bytes = stat(path, &st) == 0 && st.st_size > 0 ? (uint64_t)st.st_size : 0;
  gy_json_emit(
      json_pack("{s:s, s:I, s:s}", "type", "checkpoint", "step", (json_int_t)done, "path", path));
  return 0;
}

/* The present fields of h over base. wsd_decay_now: the schedule becomes WSD decaying linearly
 * from the learning rate it had at `from` (no jump up when it was cosine) to the same floor
 * over the steps left of the run's `steps`. */
void gy_directive_merge_hparams(gy_knobs_t *k, const gy_agent_hparams_t *h, int64_t from,
                                int64_t steps) {
  if (h->present & GY_HP_LR_SCALE) k->lr_scale = h->lr_scale;
  if (h->present & GY_HP_GRAD_CLIP) k->grad_clip = h->grad_clip;
  if (h->present & GY_HP_EPS) k->eps = h->eps;
  if (h->present & GY_HP_WEIGHT_DECAY) k->weight_decay = h->weight_decay;
  if (h->present & GY_HP_SHALLOW_SCALE) k->shallow_scale = h->shallow_scale;
  if (h->present & GY_HP_SHALLOW_LAYERS) k->shallow_layers = h->shallow_layers;
  if (h->present & GY_HP_Z_LOSS) k->z_loss = h->z_loss;
  if (h->present & GY_HP_BETA1) k->beta1 = h->beta1;
  if (h->present & GY_HP_BETA2) k->beta2 = h->beta2;
  if ((h->present & GY_HP_WSD_DECAY_NOW) && h->wsd_decay_now) {
    gy_sched_t *sc = &k->sched;
    double now = gy_sched_lr(sc, from), floor_lr = (double)sc->lr * sc->min_lr_frac;
    if (now > 0 && isfinite(now)) {
      sc->lr = (float)now;
      sc->min_lr_frac = (float)(floor_lr >= now ? 1.0 : floor_lr / now);
    }
    sc->kind = GY_SCHED_WSD;
    sc->warmup = 0; /* the decay starts at `from`, whatever phase the run was in */
    sc->decay_start = from > INT32_MAX ? INT32_MAX : (int)from;
    int64_t left = steps - from;
    sc->decay_steps = left <= 0 ? 0 : left > INT32_MAX ? INT32_MAX : (int)left;
  }
}

/* Applies the present fields of h over the trainer's knobs (from: the step they apply at). */
static int set_hparams(gy_trainer_t *tr, const gy_agent_hparams_t *h, int64_t from, int64_t steps,
                       char *err, size_t errlen) {
  gy_knobs_t k;
  gy_trainer_knobs(tr, &k);
  gy_directive_merge_hparams(&k, h, from, steps);
  return gy_trainer_set_knobs(tr, &k, err, errlen);
}

/* Checks a ROLLBACK before anything changes: to_step within [0, done], every skip range
 * non-empty, and the hyper-parameters acceptable over the current knobs (the restored ones are
 * checked again when applied). */
static int check_rollback(gy_trainer_t *tr, const gy_agent_directive_t *dir, int64_t done,
                          int64_t steps, char *err, size_t errlen) {
  if (dir->to_step < 0 || dir->to_step > done) {
    snprintf(err, errlen,
             "rollback to step %" PRId64 ": must be within 0..%" PRId64 " (the steps done)",
             dir->to_step, done);
    return GY_EINVAL;
  }
  for (int i = 0; i < dir->nskip; i++)
    if (dir->skip[i].first >= dir->skip[i].last) {
      snprintf(err, errlen, "rollback: skip range #%d [%" PRIu64 ", %" PRIu64 ") is empty", i,
               dir->skip[i].first, dir->skip[i].last);
      return GY_EINVAL;
    }
  gy_knobs_t k;
  gy_trainer_knobs(tr, &k);
  gy_directive_merge_hparams(&k, &dir->hparams, dir->to_step, steps);
  int rc = gy_knobs_check(&k, err, errlen);
  if (rc) return rc;
  int layers = gy_gpt_config(gy_trainer_model(tr))->num_layers;
  if (k.shallow_layers > layers) {
    snprintf(err, errlen, "knobs: shallow_layers %d exceeds the model's %d layers",
             k.shallow_layers, layers);
    return GY_ERANGE;
  }
  return 0;
}

/* Carries out a checked ROLLBACK. Returns 0 or an error; then *unchanged is 1 when the restore
 * was refused (nothing changed: training can go on from where it was) and 0 when the state is
 * half changed (the worker must stop). */
static int rollback(gy_trainer_t *tr, const gy_agent_directive_t *dir, int64_t steps,
                    int *unchanged, char *err, size_t errlen) {
  *unchanged = 1;
  /* the skip list in force now: restoring puts back the checkpoint's, which may predate some */
  const gy_skiplist_t *cur = gy_trainer_skiplist(tr);
  size_t nkeep = cur->n;
  gy_range_t *keep = malloc((nkeep ? nkeep : 1) * sizeof(*keep));
  if (!keep) {
    snprintf(err, errlen, "out of memory");
    return GY_ENOMEM;
  }
  if (nkeep) memcpy(keep, cur->r, nkeep * sizeof(*keep));
  char why[1024] = "";
  int rc = gy_trainer_restore(tr, dir->to_step, why, sizeof(why));
  if (rc) {
    snprintf(err, errlen, "cannot restore step %" PRId64 ": %s", dir->to_step, why);
    free(keep);
    return rc;
  }
  *unchanged = 0;
  if ((rc = gy_trainer_forget_after(tr, dir->to_step, why, sizeof(why))))
    snprintf(err, errlen, "restored step %" PRId64 ", then: %s", dir->to_step, why);
  for (size_t i = 0; i < nkeep && !rc; i++)
    rc = gy_trainer_skip(tr, keep[i].first, keep[i].last);
  for (int i = 0; i < dir->nskip && !rc; i++)
    rc = gy_trainer_skip(tr, dir->skip[i].first, dir->skip[i].last);
  if (rc && !err[0]) snprintf(err, errlen, "skip list: %s", gy_strerror(rc));
  free(keep);
  if (!rc && (rc = set_hparams(tr, &dir->hparams, dir->to_step, steps, why, sizeof(why))))
    snprintf(err, errlen, "restored step %" PRId64 ", then the hyper-parameters: %s", dir->to_step,
             why);
  return rc;
}

/* The index of the shard of channel ch that `file` names (see gy_directive_quarantine), or
 * -1. */
static int find_shard(gy_data_t *d, int ch, const char *file) {
  const char *slash = strrchr(file, '/');
  const char *base = slash ? slash + 1 : file;
  size_t lf = strlen(file);
  int by_base = -1, nbase = 0;
  for (int k = 0;; k++) {
    const char *p = gy_data_file_path(d, ch, k);
    if (!p) break;
    if (!strcmp(p, file)) return k;
    size_t lp = strlen(p);
    const char *lng = lp > lf ? p : file, *sht = lp > lf ? file : p;
    size_t ll = lp > lf ? lp : lf, ls = lp > lf ? lf : lp;
    if (ll > ls && !strcmp(lng + ll - ls, sht) && (sht[0] == '/' || lng[ll - ls - 1] == '/'))
      return k;
    const char *ps = strrchr(p, '/');
    if (!strcmp(ps ? ps + 1 : p, base)) {
      by_base = k;
      nbase++;
    }
  }
  return nbase == 1 ? by_base : -1;
}

int gy_directive_quarantine(gy_trainer_t *tr, const gy_agent_quar_t *q, int n, const char *what) {
  gy_data_t *d = gy_trainer_data(tr);
  int applied = 0;
  for (int i = 0; i < n; i++) {
    const gy_agent_quar_t *e = &q[i];
    int ch = gy_data_channel_index(d, e->channel);
    int file = ch < 0 ? -1 : find_shard(d, ch, e->file);
    uint64_t first, last;
    if (file < 0 || !e->length || e->offset >= gy_data_file_tokens(d, ch, file) ||
        gy_data_stream_offset(d, ch, file, e->offset, &first)) {
      gy_log(GY_LOG_WARN, "worker",
             "%s: quarantine of %s %s [%" PRIu64 ", +%" PRIu64 ") skipped: %s", what, e->channel,
             e->file, e->offset, e->length,
             ch < 0       ? "no such channel here"
             : file < 0   ? "no such shard in the channel"
             : !e->length ? "an empty range"
                          : "the offset is past the shard's end");
      continue;
    }
    uint64_t end = gy_data_file_tokens(d, ch, file);
    uint64_t len = e->length > end - e->offset ? end - e->offset : e->length;
    last = first + len;
    int rc = e->released ? gy_trainer_quarantine_remove(tr, ch, first, last)
                         : gy_trainer_quarantine_add(tr, ch, first, last);
    if (rc == GY_ENOMEM) return rc;
    if (rc < 0) {
      gy_log(GY_LOG_WARN, "worker", "%s: quarantine of %s %s: %s", what, e->channel, e->file,
             gy_strerror(rc));
      continue;
    }
    applied++;
  }
  return applied;
}

/* Applies one directive between two steps, prints its record and acknowledges it (ROLLBACK:
 * with step = to_step, and the trainer is then at to_step). steps: the run's steps. Returns 1
 * when the worker must stop (STOP), 0 to go on, or a negative error (reason printed). */
int gy_directive_apply(const gy_directive_agent_t *ag, gy_trainer_t *tr,
                       const gy_agent_directive_t *dir, int64_t steps, const gy_run_config_t *cfg) {
  char err[1024] = "";
  int rc = 0, stop = 0, unchanged = 1;
  int64_t done = gy_trainer_step_count(tr);
  double t0 = wall_s();
  int from_memory = dir->kind == GY_DIRECTIVE_ROLLBACK && gy_trainer_in_memory(tr, dir->to_step);
  uint64_t ckpt_bytes = 0; /* CHECKPOINT / STOP: the size of this rank's file, for the ack */
  int quar_applied = 0;    /* QUARANTINE: the entries this worker could apply */
  switch (dir->kind) {
  case GY_DIRECTIVE_CHECKPOINT:
  case GY_DIRECTIVE_STOP:
    rc = checkpoint_now(tr, &ckpt_bytes, err, sizeof(err));
    stop = dir->kind == GY_DIRECTIVE_STOP;
    /* With evaluation on, an operator's checkpoint is evaluated too, as the periodic ones are
     * (unless a periodic one of this step was just evaluated): gyroctl checkpoints then has
     * its held-out figures. Every rank applies the directive at the same step, so every rank
     * evaluates (evaluation is collective). */
    if (!rc && cfg->eval_every > 0 && done > 0 &&
        !(cfg->ckpt_every > 0 && done % cfg->ckpt_every == 0)) {
      gy_eval_report_t ev;
      if ((rc = gy_trainer_eval(tr, &ev))) {
        snprintf(err, sizeof(err), "evaluation of the checkpoint of step %" PRId64 ": %s", done,
                 gy_trainer_last_error(tr)[0] ? gy_trainer_last_error(tr) : gy_strerror(rc));
        break;
      }
      ag->eval(ag->ctx, done, &ev);
    }
    break;
  case GY_DIRECTIVE_SET_HPARAMS:
    rc = set_hparams(tr, &dir->hparams, done, steps, err, sizeof(err));
    break;
  case GY_DIRECTIVE_ROLLBACK:
    rc = check_rollback(tr, dir, done, steps, err, sizeof(err));
    if (!rc) rc = rollback(tr, dir, steps, &unchanged, err, sizeof(err));
    break;
  case GY_DIRECTIVE_QUARANTINE: {
    int n = gy_directive_quarantine(tr, dir->quar, dir->nquar, "directive");
    if (n < 0)
      rc = n;
    else
      quar_applied = n;
    break;
  }
  case GY_DIRECTIVE_SET_GUARD:
    rc = gy_trainer_set_guard(tr, &dir->guard, err, sizeof(err));
    break;
  case GY_DIRECTIVE_PAUSE: /* the controller withholds grants until RESUME: nothing to do */
  case GY_DIRECTIVE_RESUME:
  default:
    break;
  }
  if (rc && !err[0]) snprintf(err, sizeof(err), "%s", gy_strerror(rc));
  json_t *o =
      json_pack("{s:s, s:I, s:s, s:I}", "type", "directive", "seq", (json_int_t)dir->seq, "kind",
                gy_directive_kind_name(dir->kind), "at_step", (json_int_t)dir->at_step);
  if (dir->kind == GY_DIRECTIVE_ROLLBACK) {
    json_t *sk = json_array();
    for (int i = 0; i < dir->nskip; i++)
      json_array_append_new(
          sk, json_pack("[I, I]", (json_int_t)dir->skip[i].first, (json_int_t)dir->skip[i].last));
    json_object_set_new(o, "to_step", json_integer(dir->to_step));
    json_object_set_new(o, "skip", sk);
    json_object_set_new(o, "reason", json_string(dir->reason));
    json_object_set_new(o, "restored_from", json_string(from_memory ? "memory" : "disk"));
  }
  if (dir->kind == GY_DIRECTIVE_QUARANTINE) {
    json_t *qa = json_array();
    for (int i = 0; i < dir->nquar; i++)
      json_array_append_new(
          qa, json_pack("{s:s, s:s, s:I, s:I, s:b}", "channel", dir->quar[i].channel, "file",
                        dir->quar[i].file, "offset", (json_int_t)dir->quar[i].offset, "length",
                        (json_int_t)dir->quar[i].length, "released", dir->quar[i].released));
    json_object_set_new(o, "quarantine", qa);
    json_object_set_new(o, "applied", json_integer(quar_applied));
  }
  double t1 = wall_s();
  json_object_set_new(o, "ts", json_real(t1));
  json_object_set_new(o, "apply_ms", json_real((t1 - t0) * 1e3));
  json_object_set_new(o, "ok", json_boolean(rc == 0));
  if (rc) json_object_set_new(o, "error", json_string(err));
  gy_json_emit(o);
  if (rc)
    gy_log(GY_LOG_ERROR, "worker", "directive %s (seq %" PRIu64 ") failed: %s",
           gy_directive_kind_name(dir->kind), dir->seq, err);
  int64_t ack_step = dir->kind == GY_DIRECTIVE_ROLLBACK && !rc ? dir->to_step : done;
  ag->ack(ag->ctx, dir->seq, ack_step, rc == 0, rc ? err : NULL, ckpt_bytes);
  /* A failed checkpoint is a broken disk: stop rather than train on without one. A refused
   * hyper-parameter change leaves the knobs as they were, a refused guard setting the guard,
   * and a refused rollback the whole state: training goes on (the controller decides what
   * next). A rollback that failed half way has left a state nobody asked for: stop, and so does
   * a quarantine that ran out of memory half way (the ranks would train on different data). */
  if (rc && dir->kind != GY_DIRECTIVE_SET_HPARAMS && dir->kind != GY_DIRECTIVE_SET_GUARD &&
      !(dir->kind == GY_DIRECTIVE_ROLLBACK && unchanged))
    return rc;
  return stop;
}
