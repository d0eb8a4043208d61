/*
 * train_ckpt: the trainer's checkpoints: serialization, the in-memory ring of snapshots, the
 * background writer's books, retention on disk, and restore.
 *
 * API, in order: gy_trainer_ckpt_path, gy__train_settle_snapshot, gy_trainer_checkpoint,
 * gy_trainer_flush, gy_trainer_ckpt_written, gy_trainer_forget_after, gy_trainer_restore_file,
 * gy_trainer_in_memory, gy_trainer_restore.
 *
 * Checkpoint blobs: "param/<tensor>", "adam_m/<tensor>", "adam_v/<tensor>" for every tensor of
 * the model, and "state", a JSON object (step, RNG, knobs, skip list, data cursor, and the guard's
 * recent figures as hex, worker/guard.h; a checkpoint without them starts the guard afresh).
 * Restoring validates everything before it changes anything: a refused checkpoint leaves the
 * trainer as it was.
 *
 * Snapshots: a checkpoint is serialized in memory (the training thread pays one copy and the
 * checksums), kept in a ring of the last K, and written to disk by a background thread. Once
 * the writer is idle every submitted file is on disk (or its error is known):
 * gy_trainer_ckpt_written then hands each one out once (a controller commits it). A
 * rollback abandons the timeline after the restored step: gy_trainer_forget_after drops its
 * snapshots, files and unreported completions, so a later restore or commit of such a step can
 * only find the one the new timeline writes.
 *
 * Invariants: the ring stays packed at its tail, newest last; the writer is FIFO, so the first
 * gy_ckpt_writer_completed() submissions are on disk; on cuda, every entry point that reads the
 * host state, the books or the writer settles a snapshot in flight first.
 */
#include "worker/train_internal.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/err.h"

void gy_trainer_ckpt_path(const gy_trainer_t *t, int64_t step, char *buf, size_t len) {
  snprintf(buf, len, "%s/step_%08" PRId64 ".rank%d.gyck", t->ckpt_dir, step, t->rank);
}

static char *hex64(uint64_t v, char *buf) {
  snprintf(buf, 17, "%016" PRIx64, v);
  return buf;
}

static json_t *state_to_json(const gy_trainer_t *t) {
  char h[17];
  const gy_knobs_t *k = &t->knobs;
  json_t *skip = json_array();
  for (size_t i = 0; i < t->skip.n; i++)
    json_array_append_new(skip, json_pack("[s s]", hex64(t->skip.r[i].first, h),
                                          hex64(t->skip.r[i].last, (char[17]){0})));
  return json_pack(
      "{s:i, s:I, s:s, s:I, s:o, s:{s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:i, s:f, s:{s:i, s:f, "
      "s:i, s:i, s:f, s:i, s:i}}}",
      "version", 1, "step", (json_int_t)t->step, "rng", hex64(t->rng, h), "data_cursor",
      (json_int_t)((uint64_t)t->step * (uint64_t)t->dp_size * (uint64_t)t->B), "skip", skip,
      "knobs", "lr_scale", (double)k->lr_scale, "grad_clip", (double)k->grad_clip, "beta1",
      (double)k->beta1, "beta2", (double)k->beta2, "eps", (double)k->eps, "weight_decay",
      (double)k->weight_decay, "shallow_scale", (double)k->shallow_scale, "shallow_layers",
      k->shallow_layers, "z_loss", (double)k->z_loss, "sched", "kind", (int)k->sched.kind, "lr",
      (double)k->sched.lr, "warmup", k->sched.warmup, "total_steps", k->sched.total_steps,
      "min_lr_frac", (double)k->sched.min_lr_frac, "decay_start", k->sched.decay_start,
      "decay_steps", k->sched.decay_steps);
}

/* Parses the state blob into the out-parameters without touching the trainer. */
static int state_from_json(const char *text, size_t len, int64_t *step, uint64_t *rng,
                           gy_knobs_t *k, gy_skiplist_t *skip, char *errmsg, size_t errlen) {
  json_error_t jerr;
  json_t *j = json_loadb(text, len, 0, &jerr);
  if (!j) {
    snprintf(errmsg, errlen, "state: not JSON (%s at %d)", jerr.text, jerr.position);
    return GY_ECORRUPT;
  }
  int version = 0, kind = 0;
  json_int_t st = 0;
  const char *rngs = NULL;
  json_t *sk = NULL;
  double lr_scale, clip, b1, b2, eps, wd, shs, zl, lr, mlf;
  int shl, wu, tot, ds, dsteps;
  /* the guard and the quarantine are read by their own parsers (guard_from_state,
   * quarantine_from_state) */
  json_object_del(j, "guard");
  json_object_del(j, "quarantine");
  int rc = json_unpack_ex(
      j, &jerr, JSON_STRICT,
      "{s:i, s:I, s:s, s:I, s:o, s:{s:F, s:F, s:F, s:F, s:F, s:F, s:F, s:i, s:F, s:{s:i, s:F, "
      "s:i, s:i, s:F, s:i, s:i}}}",
      "version", &version, "step", &st, "rng", &rngs, "data_cursor", &(json_int_t){0}, "skip", &sk,
      "knobs", "lr_scale", &lr_scale, "grad_clip", &clip, "beta1", &b1, "beta2", &b2, "eps", &eps,
      "weight_decay", &wd, "shallow_scale", &shs, "shallow_layers", &shl, "z_loss", &zl, "sched",
      "kind", &kind, "lr", &lr, "warmup", &wu, "total_steps", &tot, "min_lr_frac", &mlf,
      "decay_start", &ds, "decay_steps", &dsteps);
  if (rc || version != 1 || st < 0 || !json_is_array(sk)) {
    snprintf(errmsg, errlen, "state: bad fields (%s)", rc ? jerr.text : "version or values");
    json_decref(j);
    return GY_ECORRUPT;
  }
  *step = st;
  *rng = strtoull(rngs, NULL, 16);
  gy_knobs_default(k);
  k->lr_scale = (float)lr_scale;
  k->grad_clip = (float)clip;
  k->beta1 = (float)b1;
  k->beta2 = (float)b2;
  k->eps = (float)eps;
  k->weight_decay = (float)wd;
  k->shallow_scale = (float)shs;
  k->shallow_layers = shl;
  k->z_loss = (float)zl;
  k->sched.kind = (gy_sched_kind_t)kind;
  k->sched.lr = (float)lr;
  k->sched.warmup = wu;
  k->sched.total_steps = tot;
  k->sched.min_lr_frac = (float)mlf;
  k->sched.decay_start = ds;
  k->sched.decay_steps = dsteps;
  size_t i;
  json_t *r;
  json_array_foreach(sk, i, r) {
    const char *a = NULL, *b = NULL;
    if (json_unpack(r, "[ss]", &a, &b) ||
        gy_skiplist_add(skip, strtoull(a, NULL, 16), strtoull(b, NULL, 16))) {
      snprintf(errmsg, errlen, "state: bad skip range #%zu", i);
      json_decref(j);
      return GY_ECORRUPT;
    }
  }
  json_decref(j);
  if (gy_knobs_check(k, errmsg, errlen)) return GY_ECORRUPT;
  return 0;
}

/* The guard's state (worker/guard.h) as a hex string in the state, so it is captured with the
 * rest of the state at the checkpoint's step (on cuda the checkpoint is built later). */
static int add_guard(json_t *st, const gy_trainer_t *t) {
  uint8_t *b;
  size_t n;
  if (!st || gy_guard_save(t->guard, &b, &n)) return -1;
  char *hex = malloc(2 * n + 1);
  if (!hex) {
    free(b);
    return -1;
  }
  static const char digits[] = "0123456789abcdef";
  for (size_t i = 0; i < n; i++) {
    hex[2 * i] = digits[b[i] >> 4];
    hex[2 * i + 1] = digits[b[i] & 15];
  }
  hex[2 * n] = 0;
  free(b);
  int rc = json_object_set_new(st, "guard", json_string(hex));
  free(hex);
  return rc;
}

/* The quarantine (worker/data.h) as [[channel, first, last], ...] with hexadecimal offsets. */
static int add_quarantine(json_t *st, const gy_trainer_t *t) {
  json_t *a = json_array();
  char h1[17], h2[17];
  for (size_t i = 0; a && i < t->quar.n; i++)
    if (json_array_append_new(a, json_pack("[i s s]", t->quar.r[i].channel,
                                           hex64(t->quar.r[i].first, h1),
                                           hex64(t->quar.r[i].last, h2))))
      break;
  return !a || json_object_set_new(st, "quarantine", a);
}

/* The quarantine of a state blob into *q (initialised here; empty when the checkpoint has none),
 * each range checked against this run's channels. */
static int quarantine_from_state(const gy_trainer_t *t, const char *text, size_t len,
                                 gy_quarantine_t *q, char *errmsg, size_t errlen) {
  gy_quarantine_init(q);
  json_t *j = json_loadb(text, len, 0, NULL);
  json_t *a = j ? json_object_get(j, "quarantine") : NULL;
  size_t i;
  json_t *r;
  int rc = 0;
  if (a && !json_is_array(a)) rc = GY_ECORRUPT;
  json_array_foreach(a, i, r) {
    int ch;
    const char *f = NULL, *l = NULL;
    if (rc || json_unpack(r, "[i s s]", &ch, &f, &l) || ch < 0 ||
        ch >= gy_data_nchannels(t->data)) {
      rc = GY_ECORRUPT;
      break;
    }
    uint64_t first = strtoull(f, NULL, 16), last = strtoull(l, NULL, 16);
    if (first >= last || last > gy_data_channel_tokens(t->data, ch)) {
      rc = GY_ECORRUPT;
      break;
    }
    if (gy_quarantine_add(q, ch, first, last) < 0) {
      rc = GY_ENOMEM;
      break;
    }
  }
  if (rc) {
    snprintf(errmsg, errlen, "quarantine: bad range #%zu", i);
    gy_quarantine_free(q);
  }
  json_decref(j);
  return rc;
}

/* The guard of a state blob, checked against this run's guard: a new guard (the trainer's
 * options) into *out, or NULL when the checkpoint has none (an older checkpoint: the guard starts
 * afresh). Nothing of the trainer changes. */
static int guard_from_state(const gy_trainer_t *t, const char *text, size_t len, gy_guard_t **out,
                            char *errmsg, size_t errlen) {
  *out = NULL;
  json_t *j = json_loadb(text, len, 0, NULL);
  const char *hex = j ? json_string_value(json_object_get(j, "guard")) : NULL;
  if (!hex) {
    json_decref(j);
    return 0;
  }
  size_t n = strlen(hex) / 2;
  uint8_t *b = malloc(n ? n : 1);
  int rc = b ? 0 : GY_ENOMEM;
  for (size_t i = 0; !rc && i < n; i++) {
    unsigned v;
    if (sscanf(hex + 2 * i, "%2x", &v) != 1) rc = GY_ECORRUPT;
    b[i] = (uint8_t)v;
  }
  if (rc == GY_ECORRUPT || strlen(hex) % 2) {
    snprintf(errmsg, errlen, "guard state: not hexadecimal");
    rc = GY_ECORRUPT;
  }
  if (!rc) rc = gy_guard_create(out, gy_guard_opts(t->guard), gy_data_nchannels(t->data));
  if (!rc && (rc = gy_guard_load(*out, b, n, errmsg, errlen))) {
    gy_guard_destroy(*out);
    *out = NULL;
  }
  free(b);
  json_decref(j);
  return rc;
}

/* The run state (step, knobs, skips, data position, the guard...) as compact JSON text,
 * malloc'ed. */
static char *state_text(gy_trainer_t *t) {
  json_t *st = state_to_json(t);
  if (add_guard(st, t) || add_quarantine(st, t)) {
    json_decref(st);
    return NULL;
  }
  char *text = st ? json_dumps(st, JSON_COMPACT | JSON_SORT_KEYS | JSON_REAL_PRECISION(17)) : NULL;
  json_decref(st);
  return text;
}

/* Serializes the host parameters and moments with the state text of step into a new buffer. */
static int build_snapshot(gy_trainer_t *t, const char *text, int64_t step, gy_ckpt_buf_t **out) {
  gy_ckpt_blob_t blobs[3 * GY_T_COUNT + 1];
  int n = 0;
  const float *p = gy_gpt_params(t->model), *mm = gy_adamw_m(t->opt), *vv = gy_adamw_v(t->opt);
  const char *prefix[3] = {"param/", "adam_m/", "adam_v/"};
  const float *base[3] = {p, mm, vv};
  for (int s = 0; s < 3; s++) {
    for (int i = 0; i < GY_T_COUNT; i++) {
      size_t sz = gy_gpt_tensor_size(t->model, i);
      if (!sz) continue;
      snprintf(blobs[n].name, GY_CKPT_NAME_MAX, "%s%s", prefix[s], gy_gpt_tensor_name(i));
      blobs[n].data = base[s] + gy_gpt_tensor_offset(t->model, i);
      blobs[n].nbytes = sz * sizeof(float);
      n++;
    }
  }
  snprintf(blobs[n].name, GY_CKPT_NAME_MAX, "state");
  blobs[n].data = text;
  blobs[n].nbytes = strlen(text);
  n++;
  gy_ckpt_meta_t meta = {.step = (uint64_t)step,
                         .config_hash = t->config_hash,
                         .rank = t->rank,
                         .world = t->world,
                         .dp = t->dp,
                         .tp = t->tp};
  return gy_ckpt_build(out, &meta, blobs, n);
}

static int mkdir_p(const char *dir) {
  char tmp[4096];
  snprintf(tmp, sizeof(tmp), "%s", dir);
  for (char *p = tmp + 1; *p; p++) {
    if (*p != '/') continue;
    *p = 0;
    if (mkdir(tmp, 0755) && errno != EEXIST) return -1;
    *p = '/';
  }
  if (mkdir(tmp, 0755) && errno != EEXIST) return -1;
  return 0;
}

/* Hands a built checkpoint of step to the writer, the retention and the in-memory ring (takes
 * the reference b). */
static int commit_snapshot(gy_trainer_t *t, gy_ckpt_buf_t *b, int64_t step, char *errmsg,
                           size_t errlen) {
  int rc;
  if (mkdir_p(t->ckpt_dir)) {
    snprintf(errmsg, errlen, "cannot create checkpoint folder %s: %s", t->ckpt_dir,
             strerror(errno));
    gy_ckpt_buf_unref(b);
    return GY_EIO;
  }
  /* retention on disk: the writer is FIFO, so the first `completed` submissions are on disk */
  uint64_t done = gy_ckpt_writer_completed(t->writer);
  uint64_t first_index = t->nsubmit_total - (uint64_t)t->nsubmitted;
  while (t->nsubmitted >= t->keep && first_index < done) {
    char path[4096];
    gy_trainer_ckpt_path(t, t->submitted[0], path, sizeof(path));
    /* the same step submitted again later (a CHECKPOINT directive at a periodic step) shares
     * the file: only the last entry of a step removes it */
    int again = t->submitted[0] == step;
    for (int i = 1; i < t->nsubmitted && !again; i++)
      again = t->submitted[i] == t->submitted[0];
    if (!again) unlink(path);
    memmove(t->submitted, t->submitted + 1, sizeof(int64_t) * (size_t)(t->nsubmitted - 1));
    t->nsubmitted--;
    first_index++;
  }
  char path[4096];
  gy_trainer_ckpt_path(t, step, path, sizeof(path));
  uint64_t nbytes = gy_ckpt_buf_len(b);
  if ((rc = gy_ckpt_writer_submit(t->writer, b, path))) {
    snprintf(errmsg, errlen, "cannot queue checkpoint %s: %s", path, gy_strerror(rc));
    gy_ckpt_buf_unref(b);
    return rc;
  }
  if (t->nsubmitted < MAX_KEEP_TRACK) t->submitted[t->nsubmitted++] = step;
  if (t->nunrep == MAX_UNREPORTED) { /* nobody asks: forget the oldest */
    memmove(t->unrep_step, t->unrep_step + 1, sizeof(t->unrep_step[0]) * (MAX_UNREPORTED - 1));
    memmove(t->unrep_bytes, t->unrep_bytes + 1, sizeof(t->unrep_bytes[0]) * (MAX_UNREPORTED - 1));
    t->nunrep--;
  }
  t->unrep_bytes[t->nunrep] = nbytes;
  t->unrep_step[t->nunrep++] = step;
  t->nsubmit_total++;
  /* in-memory ring: newest last */
  if (t->keep_in_memory > 0) {
    gy_ckpt_buf_unref(t->ring[0]);
    memmove(t->ring, t->ring + 1, sizeof(t->ring[0]) * (MAX_RING - 1));
    t->ring[MAX_RING - 1] = NULL;
    /* keep only the newest keep_in_memory entries at the tail */
    for (int i = 0; i < MAX_RING - t->keep_in_memory; i++) {
      gy_ckpt_buf_unref(t->ring[i]);
      t->ring[i] = NULL;
    }
    t->ring[MAX_RING - 1] = b;
  } else {
    gy_ckpt_buf_unref(b);
  }
  return 0;
}

/* On cuda with a snapshot in flight: waits for its copies, builds the checkpoint from the host
 * buffers and commits it. Every entry point that reads the host state, the checkpoint books or
 * the writer calls it first; a step calls it once its forward and backward passes are queued,
 * so the copies overlap them. A failure is kept for the caller's next error report. */
int gy__train_settle_snapshot(gy_trainer_t *t, char *errmsg, size_t errlen) {
#ifdef GY_HAVE_CUDA_KERNELS
  if (!t->snap_text) return 0;
  char *text = t->snap_text;
  int64_t step = t->snap_step;
  t->snap_text = NULL;
  int rc = gy_gpt_cuda_snapshot_wait(t->dmodel);
  if (rc) {
    gy__train_cuda_msg(errmsg, errlen, rc, "checkpoint: cannot copy the state from the GPU");
    free(text);
    return rc;
  }
  gy_ckpt_buf_t *b = NULL;
  rc = build_snapshot(t, text, step, &b);
  free(text);
  if (rc) {
    snprintf(errmsg, errlen, "cannot build the checkpoint of step %" PRId64 ": %s", step,
             gy_strerror(rc));
    return rc;
  }
  return commit_snapshot(t, b, step, errmsg, errlen);
#else
  (void)t, (void)errmsg, (void)errlen;
  return 0;
#endif
}

int gy_trainer_checkpoint(gy_trainer_t *t, char *errmsg, size_t errlen) {
  int rc = gy__train_settle_snapshot(t, errmsg, errlen);
  if (rc) return rc;
  char *text = state_text(t);
  if (!text) {
    snprintf(errmsg, errlen, "cannot build the checkpoint of step %" PRId64 ": out of memory",
             t->step);
    return GY_ENOMEM;
  }
#ifdef GY_HAVE_CUDA_KERNELS
  if (t->dmodel) {
    /* the copies run while the next step's passes do; gy__train_settle_snapshot finishes the job */
    rc = gy_gpt_cuda_snapshot_begin(t->dmodel, t->dopt, gy_gpt_params(t->model), gy_adamw_m(t->opt),
                                    gy_adamw_v(t->opt));
    if (rc) {
      gy__train_cuda_msg(errmsg, errlen, rc, "checkpoint: cannot copy the state from the GPU");
      free(text);
      return rc;
    }
    t->snap_text = text;
    t->snap_step = t->step;
    return 0;
  }
#endif
  gy_ckpt_buf_t *b = NULL;
  rc = build_snapshot(t, text, t->step, &b);
  free(text);
  if (rc) {
    snprintf(errmsg, errlen, "cannot build the checkpoint of step %" PRId64 ": %s", t->step,
             gy_strerror(rc));
    return rc;
  }
  return commit_snapshot(t, b, t->step, errmsg, errlen);
}

int gy_trainer_flush(gy_trainer_t *t, char *errmsg, size_t errlen) {
  int rc = gy__train_settle_snapshot(t, errmsg, errlen);
  if (rc) return rc;
  return gy_ckpt_writer_flush(t->writer, errmsg, errlen);
}

int gy_trainer_ckpt_written(gy_trainer_t *t, int64_t *steps, uint64_t *bytes, int max, char *errmsg,
                            size_t errlen) {
  int rc0 = gy__train_settle_snapshot(t, errmsg, errlen);
  if (rc0) return rc0;
  if (!t->nunrep || max <= 0) return 0;
  /* Only when the writer is idle: then its error status covers every write handed out, and
   * the flush that reads it does not wait (this thread is the only one that submits). */
  if (gy_ckpt_writer_completed(t->writer) != t->nsubmit_total) return 0;
  int rc = gy_ckpt_writer_flush(t->writer, errmsg, errlen);
  if (rc) return rc;
  int n = t->nunrep < max ? t->nunrep : max;
  memcpy(steps, t->unrep_step, sizeof(steps[0]) * (size_t)n);
  if (bytes) memcpy(bytes, t->unrep_bytes, sizeof(bytes[0]) * (size_t)n);
  memmove(t->unrep_step, t->unrep_step + n, sizeof(t->unrep_step[0]) * (size_t)(t->nunrep - n));
  memmove(t->unrep_bytes, t->unrep_bytes + n, sizeof(t->unrep_bytes[0]) * (size_t)(t->nunrep - n));
  t->nunrep -= n;
  return n;
}

int gy_trainer_forget_after(gy_trainer_t *t, int64_t step, char *errmsg, size_t errlen) {
  /* the files are removed below: nothing of theirs may still be in the writer's queue */
  int rc = gy__train_settle_snapshot(t, errmsg, errlen);
  if (!rc) rc = gy_ckpt_writer_flush(t->writer, errmsg, errlen);
  /* the ring stays packed at its tail, newest last */
  int k = MAX_RING;
  for (int i = MAX_RING - 1; i >= 0; i--) {
    gy_ckpt_buf_t *b = t->ring[i];
    t->ring[i] = NULL;
    if (b && (int64_t)gy_ckpt_buf_step(b) > step)
      gy_ckpt_buf_unref(b);
    else if (b)
      t->ring[--k] = b;
  }
  k = 0;
  for (int i = 0; i < t->nsubmitted; i++)
    if (t->submitted[i] <= step) t->submitted[k++] = t->submitted[i];
  t->nsubmitted = k;
  k = 0;
  for (int i = 0; i < t->nunrep; i++)
    if (t->unrep_step[i] <= step) {
      t->unrep_bytes[k] = t->unrep_bytes[i];
      t->unrep_step[k++] = t->unrep_step[i];
    }
  t->nunrep = k;
  /* This rank's files of later steps, also those an earlier process wrote: exactly the names
   * gy_trainer_ckpt_path gives. */
  DIR *d = opendir(t->ckpt_dir);
  if (!d) return rc; /* no folder: no files */
  struct dirent *e;
  while ((e = readdir(d))) {
    long long s;
    int r, used = 0;
    if (sscanf(e->d_name, "step_%lld.rank%d.gyck%n", &s, &r, &used) != 2 ||
        used != (int)strlen(e->d_name) || r != t->rank || s <= step)
      continue;
    char path[4096], want[4096];
    gy_trainer_ckpt_path(t, (int64_t)s, want, sizeof(want));
    snprintf(path, sizeof(path), "%s/%s", t->ckpt_dir, e->d_name);
    if (strcmp(path, want)) continue; /* not a name this trainer writes (e.g. "step_9") */
    if (unlink(path) && errno != ENOENT && !rc) {
      snprintf(errmsg, errlen, "cannot remove %s (a checkpoint after step %" PRId64 "): %s", path,
               step, strerror(errno));
      rc = GY_EIO;
    }
  }
  closedir(d);
  return rc;
}

/* Validates a parsed checkpoint against this trainer, then applies it. */
static int apply_view(gy_trainer_t *t, const gy_ckpt_view_t *v, const char *what, char *errmsg,
                      size_t errlen) {
  const gy_ckpt_meta_t *mt = &v->meta;
  if (mt->config_hash != t->config_hash) {
    snprintf(errmsg, errlen,
             "%s: written by a different configuration (config hash %016" PRIx64
             ", this run %016" PRIx64 "): model shape, data or seed differ",
             what, mt->config_hash, t->config_hash);
    return GY_EMISMATCH;
  }
  if (mt->dp != t->dp || mt->tp != t->tp || mt->world != t->world || mt->rank != t->rank) {
    snprintf(errmsg, errlen,
             "%s: parallel layout dp=%d tp=%d rank %d of %d does not match this run's dp=%d "
             "tp=%d rank %d of %d (resharding is not supported)",
             what, mt->dp, mt->tp, mt->rank, mt->world, t->dp, t->tp, t->rank, t->world);
    return GY_EMISMATCH;
  }
  const char *prefix[3] = {"param/", "adam_m/", "adam_v/"};
  const gy_ckpt_blob_t *found[3][GY_T_COUNT];
  for (int s = 0; s < 3; s++) {
    for (int i = 0; i < GY_T_COUNT; i++) {
      size_t sz = gy_gpt_tensor_size(t->model, i);
      found[s][i] = NULL;
      if (!sz) continue;
      char name[GY_CKPT_NAME_MAX];
      snprintf(name, sizeof(name), "%s%s", prefix[s], gy_gpt_tensor_name(i));
      const gy_ckpt_blob_t *b = gy_ckpt_find(v, name);
      if (!b) {
        snprintf(errmsg, errlen, "%s: blob '%s' is missing", what, name);
        return GY_EMISMATCH;
      }
      if (b->nbytes != sz * sizeof(float)) {
        snprintf(errmsg, errlen, "%s: blob '%s' has %" PRIu64 " bytes, expected %zu", what, name,
                 b->nbytes, sz * sizeof(float));
        return GY_EMISMATCH;
      }
      found[s][i] = b;
    }
  }
  const gy_ckpt_blob_t *sb = gy_ckpt_find(v, "state");
  if (!sb) {
    snprintf(errmsg, errlen, "%s: blob 'state' is missing", what);
    return GY_EMISMATCH;
  }
  int64_t step;
  uint64_t rng;
  gy_knobs_t k;
  gy_skiplist_t skip;
  gy_skiplist_init(&skip);
  char sub[512];
  int rc = state_from_json(sb->data, sb->nbytes, &step, &rng, &k, &skip, sub, sizeof(sub));
  if (rc) {
    snprintf(errmsg, errlen, "%s: blob 'state': %s", what, sub);
    gy_skiplist_free(&skip);
    return rc;
  }
  if ((uint64_t)step != mt->step) {
    snprintf(errmsg, errlen, "%s: state step %" PRId64 " disagrees with header step %" PRIu64, what,
             step, mt->step);
    gy_skiplist_free(&skip);
    return GY_ECORRUPT;
  }
  gy_guard_t *guard = NULL;
  gy_quarantine_t quar;
  if ((rc = guard_from_state(t, sb->data, sb->nbytes, &guard, sub, sizeof(sub))) ||
      (rc = quarantine_from_state(t, sb->data, sb->nbytes, &quar, sub, sizeof(sub)))) {
    snprintf(errmsg, errlen, "%s: blob 'state': %s", what, sub);
    gy_guard_destroy(guard);
    gy_skiplist_free(&skip);
    return rc;
  }
  /* the quarantine is kept across a restore: what was found bad stays bad (the checkpoint's
   * ranges are added to those held) */
  for (size_t i = 0; i < quar.n; i++)
    if (gy_quarantine_add(&t->quar, quar.r[i].channel, quar.r[i].first, quar.r[i].last) < 0) {
      snprintf(errmsg, errlen, "%s: out of memory restoring the quarantine", what);
      gy_quarantine_free(&quar);
      gy_guard_destroy(guard);
      gy_skiplist_free(&skip);
      return GY_ENOMEM;
    }
  gy_quarantine_free(&quar);
  /* ... but not what the operator released since (the checkpoint may predate the release) */
  for (size_t i = 0; i < t->quar_released.n; i++) {
    const gy_qregion_t *x = &t->quar_released.r[i];
    if (gy_quarantine_remove(&t->quar, x->channel, x->first, x->last) < 0) {
      snprintf(errmsg, errlen, "%s: out of memory restoring the quarantine", what);
      gy_guard_destroy(guard);
      gy_skiplist_free(&skip);
      return GY_ENOMEM;
    }
  }
  /* everything checked: apply */
  float *base[3] = {gy_gpt_params(t->model), gy_adamw_m(t->opt), gy_adamw_v(t->opt)};
  for (int s = 0; s < 3; s++)
    for (int i = 0; i < GY_T_COUNT; i++)
      if (found[s][i])
        memcpy(base[s] + gy_gpt_tensor_offset(t->model, i), found[s][i]->data, found[s][i]->nbytes);
  t->step = step;
  t->rng = rng;
  t->knobs = k;
  gy_skiplist_free(&t->skip);
  t->skip = skip;
  if (guard) {
    gy_guard_destroy(t->guard);
    t->guard = guard;
  } else {
    gy_guard_reset(t->guard);
  }
  /* on cuda a failed copy leaves the GPU's state behind the host's: the error says so */
  return gy__train_sync_to_device(t, errmsg, errlen);
}

int gy_trainer_restore_file(gy_trainer_t *t, const char *path, char *errmsg, size_t errlen) {
  gy_ckpt_buf_t *b = NULL;
  gy_ckpt_view_t v;
  int rc = gy__train_settle_snapshot(t, errmsg, errlen); /* its copies write the host buffers */
  if (rc) return rc;
  rc = gy_ckpt_load_file(path, &b, &v, errmsg, errlen);
  if (rc) return rc;
  rc = apply_view(t, &v, path, errmsg, errlen);
  gy_ckpt_view_free(&v);
  gy_ckpt_buf_unref(b);
  return rc;
}

int gy_trainer_in_memory(const gy_trainer_t *t, int64_t step) {
#ifdef GY_HAVE_CUDA_KERNELS
  /* a snapshot in flight joins the ring when settled (gy_trainer_restore settles first) */
  if (t->snap_text && t->snap_step == step && t->keep_in_memory > 0) return 1;
#endif
  for (int i = 0; i < MAX_RING; i++)
    if (t->ring[i] && (int64_t)gy_ckpt_buf_step(t->ring[i]) == step) return 1;
  return 0;
}

int gy_trainer_restore(gy_trainer_t *t, int64_t step, char *errmsg, size_t errlen) {
  int rc0 = gy__train_settle_snapshot(t, errmsg, errlen);
  if (rc0) return rc0;
  for (int i = MAX_RING - 1; i >= 0; i--) {
    gy_ckpt_buf_t *b = t->ring[i];
    if (!b || (int64_t)gy_ckpt_buf_step(b) != step) continue;
    char what[64];
    snprintf(what, sizeof(what), "snapshot@step %" PRId64, step);
    gy_ckpt_view_t v;
    int rc = gy_ckpt_parse(gy_ckpt_buf_data(b), gy_ckpt_buf_len(b), what, &v, errmsg, errlen);
    if (rc) return rc;
    rc = apply_view(t, &v, what, errmsg, errlen);
    gy_ckpt_view_free(&v);
    return rc;
  }
  /* not in memory: the file (wait for pending writes first) */
  int rc = gy_ckpt_writer_flush(t->writer, errmsg, errlen);
  if (rc) return rc;
  char path[4096];
  gy_trainer_ckpt_path(t, step, path, sizeof(path));
  return gy_trainer_restore_file(t, path, errmsg, errlen);
}
