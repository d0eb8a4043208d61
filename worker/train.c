/*
 * train: the training engine of one worker process: creation, the step, destruction and the
 * knobs. Its other concerns live beside it, on the same struct (worker/train_internal.h):
 * train_reduce.c (the data- and tensor-parallel reductions), train_eval.c (held-out evaluation)
 * and train_ckpt.c (checkpoints and in-memory snapshots).
 *
 * API, in order: gy_trainer_last_error, gy_trainer_create, gy_trainer_create_parallel,
 * gy_trainer_destroy, the accessors (step count, model, data, knobs, skip list),
 * gy_trainer_set_knobs, gy_trainer_skip, gy_trainer_step; for the other files
 * gy__train_cuda_msg, gy__train_cuda_fail, gy__train_sync_to_device and gy__train_cmp_loss_desc.
 *
 * A step: ask the data module which samples this rank consumes (a pure function of the step and
 * the skip list), run forward and backward, take an AdamW step with the current knobs, and
 * report per-channel loss sums, gradient norms and the worst samples. Between two steps the
 * caller may change knobs, add skips, checkpoint, restore or evaluate.
 *
 * Invariants: the knobs in force always passed gy_knobs_check (and fit the model's layers);
 * schedule.boost scales the step's learning rate without touching the knobs.
 *
 * On the GPU (run.device cuda, built only with the CUDA kernels): the model and AdamW live on the
 * device (kernels/gpt_cuda.h) and the CPU model and optimizer stay as host buffers of the same
 * layout: the initial parameters are made there and uploaded (a seed gives the same start),
 * data-parallel gradients are averaged by NCCL on the device (backend nccl: one all-reduce of
 * the gradient buffer after the backward pass) or, with gloo, downloaded into the CPU gradient
 * buffer, averaged bucket by bucket and uploaded back; the step report's host figures always go
 * through Gloo groups. Checkpoints download parameters and moments into the host buffers they
 * serialise (a restore uploads them), so checkpoints move freely between cpu and cuda runs.
 * Tensor parallelism: the GPU model holds the same shard and calls gy__train_tp_sum_cuda() for
 * its partial sums (NCCL on the device with backend nccl, one GPU per rank; Gloo through host
 * copies otherwise). Evaluation's cloze accuracy uses the GPU's top-1 predictions
 * (gy_gpt_cuda_argmax).
 */
#include "worker/train_internal.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cblas.h>

#include "common/err.h"
#include "kernels/llmc_io.h"

const char *gy_trainer_last_error(const gy_trainer_t *t) {
  return t->last_error;
}

#ifdef GY_HAVE_CUDA_KERNELS
/* Describes a failed GPU call (the CUDA text for GY_EIO) into buf. */
void gy__train_cuda_msg(char *buf, size_t len, int rc, const char *what) {
  snprintf(buf, len, "%s: %s", what, rc == GY_EIO ? gy_cuda_last_error() : gy_strerror(rc));
}
#endif

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* The step's knobs: schedule.boost multiplies the learning rate without touching the knobs
 * (which the controller owns and checkpoints carry). */
static void step_knobs(const gy_trainer_t *t, gy_knobs_t *k) {
  *k = t->knobs;
  if (t->boost_factor > 0 && t->step >= t->boost_from && t->step < t->boost_to)
    k->lr_scale *= t->boost_factor;
}

#ifdef GY_HAVE_CUDA_KERNELS
int gy__train_cuda_fail(gy_trainer_t *t, int rc, const char *what) {
  gy__train_cuda_msg(t->last_error, sizeof(t->last_error), rc, what);
  return rc;
}
#endif

/* On cuda: the host parameters and moments onto the device (after a restore). */
int gy__train_sync_to_device(gy_trainer_t *t, char *errmsg, size_t errlen) {
#ifdef GY_HAVE_CUDA_KERNELS
  if (!t->dmodel) return 0;
  int rc = gy_gpt_cuda_upload_params(t->dmodel, gy_gpt_params(t->model));
  if (!rc) rc = gy_adamw_cuda_upload(t->dopt, gy_adamw_m(t->opt), gy_adamw_v(t->opt));
  if (rc) gy__train_cuda_msg(errmsg, errlen, rc, "cannot copy the state to the GPU");
  return rc;
#else
  (void)t, (void)errmsg, (void)errlen;
  return 0;
#endif
}

int gy_trainer_create(gy_trainer_t **out, const gy_run_config_t *cfg, char *errmsg, size_t errlen) {
  gy_parallel_t single = {.rank = 0, .world = 1, .tp = 1};
  return gy_trainer_create_parallel(out, cfg, &single, errmsg, errlen);
}

int gy_trainer_create_parallel(gy_trainer_t **out, const gy_run_config_t *cfg,
                               const gy_parallel_t *par, char *errmsg, size_t errlen) {
  *out = NULL;
  int rc = GY_ENOMEM;
  gy_trainer_t *t = calloc(1, sizeof(*t));
  if (!t) return GY_ENOMEM;
  gy_skiplist_init(&t->skip);
  gy_quarantine_init(&t->quar);
  gy_quarantine_init(&t->quar_released);
  pthread_mutex_init(&t->mu, NULL);
  pthread_cond_init(&t->cv, NULL);
  int threads = cfg->threads > 0 ? cfg->threads : omp_get_num_procs();
  omp_set_num_threads(threads);
  openblas_set_num_threads(threads);

  t->B = cfg->batch;
  t->T = cfg->seq_len;
  t->top_k = cfg->top_k < GY_TOPK_MAX ? cfg->top_k : GY_TOPK_MAX;
  int tp = par->tp > 0 ? par->tp : 1;
  if (par->world < 1 || par->rank < 0 || par->rank >= par->world || par->world % tp) {
    snprintf(errmsg, errlen,
             "parallel layout: rank %d of world %d with tp %d is invalid (world "
             "must be a multiple of tp)",
             par->rank, par->world, tp);
    rc = GY_EINVAL;
    goto err;
  }
  t->rank = par->rank;
  t->world = par->world;
  t->tp = tp;
  t->dp = par->world / tp;
  t->tp_size = tp;
  t->tp_rank = par->rank % tp;
  t->dp_size = t->dp;
  t->dp_rank = par->rank / tp;
  t->device = cfg->device;
  if (t->device == GY_DEVICE_CUDA) {
#ifndef GY_HAVE_CUDA_KERNELS
    snprintf(errmsg, errlen,
             "run.device cuda: this gyro-worker was built without CUDA (nvcc was not found "
             "when it was built); use run.device cpu");
    rc = GY_ENOTSUP;
    goto err;
#else
    if (par->world > 1 && par->backend && strcmp(par->backend, "gloo") &&
        strcmp(par->backend, "nccl")) {
      snprintf(errmsg, errlen, "run.device cuda: unknown collectives backend %s (gloo or nccl)",
               par->backend);
      rc = GY_EINVAL;
      goto err;
    }
    if (par->world > 1 && par->backend && !strcmp(par->backend, "nccl") &&
        !gy_comm_backend_available("nccl")) {
      snprintf(errmsg, errlen,
               "run.device cuda: this gyro-worker was built without NCCL; use the gloo backend "
               "(gradients are then reduced on the host)");
      rc = GY_ENOTSUP;
      goto err;
    }
#endif
  }
  if (par->world > 1) {
    gy_store_t *store = par->store;
    if (!store) {
      if (!par->rdzv) {
        snprintf(errmsg, errlen, "a parallel run needs a rendezvous store (--rdzv file:DIR)");
        rc = GY_EINVAL;
        goto err;
      }
      if ((rc = gy_store_open(&t->store, par->rdzv, errmsg, errlen))) goto err;
      store = t->store;
    }
    /* the step report's figures are host values: on cuda they go through Gloo, and NCCL (if
     * asked for) gets its own groups over the device gradients once the model is on the GPU */
    gy_comm_opts_t co = {.backend = t->device == GY_DEVICE_CUDA ? "gloo"
                                    : par->backend              ? par->backend
                                                                : "gloo",
                         .rank = par->rank,
                         .world = par->world,
                         .tp = tp,
                         .store = store,
                         .prefix = par->prefix ? par->prefix : "gyro",
                         .timeout_ms = par->timeout_ms > 0 ? par->timeout_ms : 30000};
    if ((rc = gy_comm_groups_create(&t->groups, &co, errmsg, errlen))) goto err;
    t->have_groups = 1;
    /* on cuda the gradients are reduced on the host after the backward pass */
    t->overlap = !par->no_overlap && t->dp_size > 1 && t->device == GY_DEVICE_CPU;
  }
  t->rng = cfg->seed ^ 0x5eed5eed5eed5eedull;
  t->config_hash = gy_run_config_hash(cfg);
  t->keep_in_memory = cfg->ckpt_keep_in_memory < MAX_RING ? cfg->ckpt_keep_in_memory : MAX_RING;
  t->keep = cfg->ckpt_keep;
  t->knobs = cfg->knobs;
  if ((rc = gy_knobs_check(&t->knobs, errmsg, errlen))) goto err;
  t->boost_from = cfg->lr_boost_from;
  t->boost_to = cfg->lr_boost_to;
  t->boost_factor = cfg->lr_boost_factor;
  if (cfg->seq_len > cfg->model.max_seq_len) {
    snprintf(errmsg, errlen, "train.seq_len %d exceeds model.context %d", cfg->seq_len,
             cfg->model.max_seq_len);
    rc = GY_ECONFIG;
    goto err;
  }
  t->ckpt_dir = strdup(cfg->ckpt_dir ? cfg->ckpt_dir : "checkpoints");
  if (!t->ckpt_dir) goto err;

  gy_gpt_config_t mcfg = cfg->model;
  mcfg.tp_size = t->tp_size;
  mcfg.tp_rank = t->tp_rank;
  if ((rc = gy_gpt_config_check(&mcfg, errmsg, errlen))) goto err;
  /* on cuda the host model only holds buffers: room for one sequence's activations */
  if ((rc = gy_gpt_create(&t->model, &mcfg, t->device == GY_DEVICE_CUDA ? 1 : t->B))) {
    snprintf(errmsg, errlen, "cannot allocate the model: %s", gy_strerror(rc));
    goto err;
  }
  if (cfg->init_from) {
    if ((rc = gy_llmc_load(t->model, cfg->init_from, errmsg, errlen))) goto err;
  } else {
    gy_gpt_init_params(t->model, cfg->seed);
  }
  if ((rc = gy_adamw_create(&t->opt, gy_gpt_num_params(t->model)))) goto err;
#ifdef GY_HAVE_CUDA_KERNELS
  if (t->device == GY_DEVICE_CUDA) {
    int ndev = gy_cuda_device_count();
    int dev = ndev > 0 ? t->rank % ndev : 0; /* no GPU: creation below says why */
    gy_cuda_dtype_t dt = cfg->dtype == GY_DTYPE_BF16 ? GY_CUDA_BF16 : GY_CUDA_F32;
    char sub[512] = "";
    if ((rc = gy_gpt_cuda_create(&t->dmodel, &mcfg, t->B, dt, dev, sub, sizeof(sub)))) {
      snprintf(errmsg, errlen, "run.device cuda: cannot create the model on GPU %d: %s", dev,
               sub[0]         ? sub
               : rc == GY_EIO ? gy_cuda_last_error()
                              : gy_strerror(rc));
      goto err;
    }
    if ((rc = gy_adamw_cuda_create(&t->dopt, t->dmodel))) {
      gy__train_cuda_msg(errmsg, errlen, rc,
                         "run.device cuda: cannot create the optimizer on the GPU");
      goto err;
    }
    if ((rc = gy__train_sync_to_device(t, errmsg, errlen))) goto err;
    /* page-locked host state: checkpoint copies run asynchronously (without, they still work,
     * staged by the driver) */
    size_t nb = gy_gpt_num_params(t->model) * sizeof(float);
    if (!gy_cuda_pin(gy_gpt_params(t->model), nb)) {
      if (!gy_cuda_pin(gy_adamw_m(t->opt), nb)) {
        if (!gy_cuda_pin(gy_adamw_v(t->opt), nb)) {
          t->pinned = 1;
        } else {
          gy_cuda_unpin(gy_adamw_m(t->opt));
          gy_cuda_unpin(gy_gpt_params(t->model));
        }
      } else {
        gy_cuda_unpin(gy_gpt_params(t->model));
      }
    }
    if (par->world > 1 && par->backend && !strcmp(par->backend, "nccl")) {
      char pfx[300];
      snprintf(pfx, sizeof(pfx), "%s/nccl", par->prefix ? par->prefix : "gyro");
      gy_comm_opts_t no = {.backend = "nccl",
                           .rank = par->rank,
                           .world = par->world,
                           .tp = tp,
                           .store = par->store ? par->store : t->store,
                           .prefix = pfx,
                           .timeout_ms = par->timeout_ms > 0 ? par->timeout_ms : 30000,
                           .device = dev};
      if ((rc = gy_comm_groups_create(&t->ngroups, &no, errmsg, errlen))) goto err;
      t->have_ngroups = 1;
    }
  }
#endif
  if (t->tp_size > 1) gy_gpt_set_tp_allreduce(t->model, gy__train_tp_sum, t);
#ifdef GY_HAVE_CUDA_KERNELS
  if (t->dmodel && t->tp_size > 1)
    gy_gpt_cuda_set_tp_allreduce(t->dmodel, gy__train_tp_sum_cuda, t);
#endif
  if (t->overlap) {
    gy_gpt_set_grads_ready(t->model, gy__train_grads_ready, t);
    if (pthread_create(&t->reducer, NULL, gy__train_reducer_main, t)) {
      snprintf(errmsg, errlen, "cannot start the gradient reducer thread");
      rc = GY_ENOMEM;
      goto err;
    }
    t->reducer_started = 1;
  }

  gy_data_opts_t dopts = cfg->data;
  dopts.seq_len = t->T;
  dopts.seed = cfg->seed;
  dopts.vocab_size = cfg->model.vocab_size;
  if ((rc = gy_data_create(&t->data, &dopts, errmsg, errlen))) goto err;
  for (int i = 0; i < cfg->nskip; i++)
    if ((rc = gy_skiplist_add(&t->skip, cfg->skip[i].first, cfg->skip[i].last))) goto err;

  size_t N = (size_t)t->B * t->T;
  t->inputs = malloc(N * sizeof(int));
  t->targets = malloc(N * sizeof(int));
  t->chans = malloc((size_t)t->B * sizeof(int));
  t->ids = malloc((size_t)t->B * sizeof(uint64_t));
  t->tok = malloc(((size_t)t->T + 1) * sizeof(uint16_t));
  t->gstats = malloc((size_t)t->B * sizeof(*t->gstats));
  t->verdict = malloc((size_t)t->B * sizeof(*t->verdict));
  t->gkeep = malloc((size_t)t->B);
  t->used = malloc((size_t)t->B * sizeof(uint64_t));
  {
    size_t n = (size_t)t->B * (size_t)t->dp;
    t->gall = malloc(sizeof(float) * (GY_GSTAT_COUNT + 1) * ((size_t)t->B + n));
    t->gchan = malloc(sizeof(int) * n);
    t->gstat_all = malloc(sizeof(*t->gstat_all) * n);
    t->gverdict_all = malloc(sizeof(*t->gverdict_all) * n);
  }
  if (t->device == GY_DEVICE_CUDA) t->top1 = malloc(N * sizeof(int));
  rc = GY_ENOMEM;
  if (!t->inputs || !t->targets || !t->chans || !t->ids || !t->tok || !t->gstats || !t->verdict ||
      !t->gkeep || !t->used || !t->gall || !t->gchan || !t->gstat_all || !t->gverdict_all ||
      (t->device == GY_DEVICE_CUDA && !t->top1))
    goto err;
  {
    gy_guard_opts_t go;
    gy_guard_default(&go);
    if ((rc = gy_guard_create(&t->guard, &go, gy_data_nchannels(t->data)))) goto err;
  }
  if ((rc = gy_ckpt_writer_create(&t->writer))) goto err;
  *out = t;
  return 0;
err:
  if (rc == GY_ENOMEM && errmsg && !errmsg[0]) snprintf(errmsg, errlen, "out of memory");
  gy_trainer_destroy(t);
  return rc;
}

void gy_trainer_destroy(gy_trainer_t *t) {
  if (!t) return;
  {
    char err[256]; /* a checkpoint in flight still goes to the writer, which ends its writes */
    (void)gy__train_settle_snapshot(t, err, sizeof(err));
  }
  if (t->reducer_started) {
    pthread_mutex_lock(&t->mu);
    t->stop = 1;
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
    pthread_join(t->reducer, NULL);
  }
#ifdef GY_HAVE_CUDA_KERNELS
  if (t->have_ngroups) gy_comm_groups_destroy(&t->ngroups);
#endif
  if (t->have_groups) gy_comm_groups_destroy(&t->groups);
  gy_store_destroy(t->store);
  pthread_mutex_destroy(&t->mu);
  pthread_cond_destroy(&t->cv);
  gy_ckpt_writer_destroy(t->writer);
  for (int i = 0; i < MAX_RING; i++)
    gy_ckpt_buf_unref(t->ring[i]);
  gy_guard_destroy(t->guard);
  gy_quarantine_free(&t->quar);
  gy_quarantine_free(&t->quar_released);
  free(t->used);
  free(t->gall);
  free(t->gchan);
  free(t->gstat_all);
  free(t->gverdict_all);
  free(t->gkeep);
  free(t->verdict);
  free(t->gstats);
  free(t->tok);
  free(t->ids);
  free(t->chans);
  free(t->targets);
  free(t->inputs);
  free(t->top1);
  gy_data_destroy(t->data);
#ifdef GY_HAVE_CUDA_KERNELS
  free(t->snap_text);
  if (t->pinned) {
    gy_cuda_unpin(gy_gpt_params(t->model));
    gy_cuda_unpin(gy_adamw_m(t->opt));
    gy_cuda_unpin(gy_adamw_v(t->opt));
  }
  gy_adamw_cuda_destroy(t->dopt);
  gy_gpt_cuda_destroy(t->dmodel);
  free(t->tp_stage);
#endif
  gy_adamw_destroy(t->opt);
  gy_gpt_destroy(t->model);
  gy_skiplist_free(&t->skip);
  free(t->ckpt_dir);
  free(t);
}

int64_t gy_trainer_step_count(const gy_trainer_t *t) {
  return t->step;
}
int gy_trainer_seq_len(const gy_trainer_t *t) {
  return t->T;
}
gy_gpt_t *gy_trainer_model(gy_trainer_t *t) {
#ifdef GY_HAVE_CUDA_KERNELS
  /* on cuda the host copy gets the current parameters (a failed copy keeps the last ones); a
   * checkpoint in flight into the same buffer is finished first */
  if (t->dmodel) {
    char err[256];
    if (gy__train_settle_snapshot(t, err, sizeof(err)))
      snprintf(t->last_error, sizeof(t->last_error), "%s", err);
    gy_gpt_cuda_download_params(t->dmodel, gy_gpt_params(t->model));
  }
#endif
  return t->model;
}
gy_data_t *gy_trainer_data(gy_trainer_t *t) {
  return t->data;
}
void gy_trainer_knobs(const gy_trainer_t *t, gy_knobs_t *out) {
  *out = t->knobs;
}
const gy_skiplist_t *gy_trainer_skiplist(const gy_trainer_t *t) {
  return &t->skip;
}

int gy_trainer_set_knobs(gy_trainer_t *t, const gy_knobs_t *k, char *errmsg, size_t errlen) {
  int rc = gy_knobs_check(k, errmsg, errlen);
  if (rc) return rc;
  if (k->shallow_layers > gy_gpt_config(t->model)->num_layers) {
    snprintf(errmsg, errlen, "knobs: shallow_layers %d exceeds the model's %d layers",
             k->shallow_layers, gy_gpt_config(t->model)->num_layers);
    return GY_ERANGE;
  }
  t->knobs = *k;
  return 0;
}

int gy_trainer_last_batch(const gy_trainer_t *t, const uint64_t **ids, const int **channels,
                          const uint64_t **index, const uint8_t **kept,
                          const float (**stats)[GY_GSTAT_COUNT]) {
  *stats = (const float(*)[GY_GSTAT_COUNT])t->gstats;
  *ids = t->ids;
  *channels = t->chans;
  *index = t->used;
  *kept = t->gkeep;
  return t->B;
}

int gy_trainer_set_guard(gy_trainer_t *t, const gy_guard_opts_t *o, char *errmsg, size_t errlen) {
  int rc = gy_guard_check(o, errmsg, errlen);
  if (rc) return rc;
  return gy_guard_set_opts(t->guard, o);
}

const gy_guard_opts_t *gy_trainer_guard(const gy_trainer_t *t) {
  return gy_guard_opts(t->guard);
}

int gy_trainer_quarantine_add(gy_trainer_t *t, int channel, uint64_t first, uint64_t last) {
  if (channel < 0 || channel >= gy_data_nchannels(t->data)) return GY_EINVAL;
  int rc = gy_quarantine_add(&t->quar, channel, first, last);
  if (rc < 0) return rc;
  int r2 = gy_quarantine_remove(&t->quar_released, channel, first, last);
  return r2 < 0 ? r2 : rc;
}

int gy_trainer_quarantine_remove(gy_trainer_t *t, int channel, uint64_t first, uint64_t last) {
  if (channel < 0 || channel >= gy_data_nchannels(t->data) || first >= last) return GY_EINVAL;
  int r2 = gy_quarantine_add(&t->quar_released, channel, first, last);
  if (r2 < 0) return r2;
  return gy_quarantine_remove(&t->quar, channel, first, last);
}

const gy_quarantine_t *gy_trainer_quarantined(const gy_trainer_t *t) {
  return &t->quar;
}

/* 1 when the window of the channel's stream [pos, pos + T + 1) looks like junk to the guard's
 * content rules (its loss is not known: only what its bytes say). */
static int junk_window(gy_trainer_t *t, int ch, uint64_t pos) {
  int n = t->T + 1, V = gy_gpt_config(t->model)->vocab_size;
  float st[GY_GSTAT_COUNT];
  gy_data_read(t->data, ch, pos, (size_t)n, t->tok);
  st[GY_GSTAT_LOSS] = 0;
  gy_guard_content(t->tok, n, V, st);
  return gy_guard_content_fires(t->guard, ch, st) >= 0;
}

/* The region a masked sample quarantines: its document when gyro-prep's index names one of at
 * most quarantine_max_tokens tokens; otherwise the run of windows around it that the content
 * rules reject (junk spliced into a shard is one run: at most quarantine_max_tokens each way),
 * widened by quarantine_margin, clipped to the channel's stream. */
static void masked_region(gy_trainer_t *t, gy_masked_sample_t *m) {
  const gy_guard_opts_t *o = gy_guard_opts(t->guard);
  uint64_t T = (uint64_t)t->T, W = T + 1, first = m->index * T, last = first + W;
  uint64_t total = gy_data_channel_tokens(t->data, m->channel);
  int64_t doc = -1;
  uint64_t df, dl;
  m->document = -1;
  if (!gy_data_document(t->data, m->channel, first, &doc, &df, &dl)) {
    m->document = doc;
    if (dl - df <= o->quarantine_max_tokens && df <= first) {
      m->q_first = df;
      m->q_last = dl > last ? dl : last;
      return;
    }
  }
  uint64_t lo = first, hi = last;
  while (lo >= W && first - lo < o->quarantine_max_tokens && junk_window(t, m->channel, lo - W))
    lo -= W;
  while (hi + W <= total && hi - last < o->quarantine_max_tokens && junk_window(t, m->channel, hi))
    hi += W;
  m->q_first = lo > o->quarantine_margin ? lo - o->quarantine_margin : 0;
  m->q_last = hi + o->quarantine_margin < total ? hi + o->quarantine_margin : total;
}

/* After a step: where each of the gang's masked samples came from, and its region added to the
 * quarantine (on every rank alike: the list is the gang's). The indexes are found with the
 * quarantine as it was during the step, before any of the step's regions is added. */
static int quarantine_masked(gy_trainer_t *t, gy_step_report_t *rep) {
  for (int i = 0; i < rep->nmasked; i++) {
    gy_masked_sample_t *m = &rep->masked[i];
    int ch;
    gy_data_sample_q(t->data, &t->quar, m->id, t->tok, &ch, &m->index);
    masked_region(t, m);
  }
  if (!gy_guard_opts(t->guard)->quarantine) return 0;
  for (int i = 0; i < rep->nmasked; i++) {
    gy_masked_sample_t *m = &rep->masked[i];
    int rc = gy_quarantine_add(&t->quar, m->channel, m->q_first, m->q_last);
    if (rc < 0) return rc;
    m->q_new = rc;
    /* found bad again: a restore keeps it whatever the operator released before */
    if ((rc = gy_quarantine_remove(&t->quar_released, m->channel, m->q_first, m->q_last)) < 0)
      return rc;
  }
  return 0;
}

int gy_trainer_skip(gy_trainer_t *t, uint64_t first, uint64_t last) {
  if (first >= last) return GY_EINVAL;
  return gy_skiplist_add(&t->skip, first, last);
}

/* Loads the samples of `ids` into inputs/targets, and measures their content for the guard. */
static void load_batch(gy_trainer_t *t) {
  int T = t->T, V = gy_gpt_config(t->model)->vocab_size;
  for (int b = 0; b < t->B; b++) {
    gy_data_sample_q(t->data, &t->quar, t->ids[b], t->tok, &t->chans[b], &t->used[b]);
    gy_guard_content(t->tok, T + 1, V, t->gstats[b]);
    for (int i = 0; i < T; i++) {
      t->inputs[b * T + i] = t->tok[i];
      t->targets[b * T + i] = t->tok[i + 1];
    }
  }
}

int gy__train_guard(gy_trainer_t *t, const float *tl) {
  int T = t->T, B = t->B, n = B * t->dp_size;
  for (int b = 0; b < B; b++) {
    double s = 0;
    for (int i = 0; i < T; i++)
      s += tl[b * T + i];
    t->gstats[b][GY_GSTAT_LOSS] = (float)(s / T);
  }
  if (t->dp_size == 1) {
    gy_guard_judge(t->guard, B, t->chans, (const float(*)[GY_GSTAT_COUNT])t->gstats, t->verdict);
  } else {
    /* The gang's samples, in rank order (the order of their ids: what one process with the
     * whole batch would see), judged alike on every rank, so every rank keeps the same state
     * and a data-parallel gang decides as a single process does. One row per sample: its
     * channel, then its figures. */
    enum { ROW = GY_GSTAT_COUNT + 1 };
    float *mine = t->gall, *all = t->gall + (size_t)B * ROW;
    for (int b = 0; b < B; b++) {
      mine[b * ROW] = (float)t->chans[b];
      memcpy(&mine[b * ROW + 1], t->gstats[b], sizeof(float) * GY_GSTAT_COUNT);
    }
    gy_comm_t *c = t->groups.dp;
    int rc = c->ops->allgather(c, mine, all, (size_t)B * ROW, GY_DT_F32);
    if (rc) {
      snprintf(t->last_error, sizeof(t->last_error),
               "data-parallel gather of the guard's figures: %s", c->errmsg);
      return rc;
    }
    int *chs = t->gchan;
    float(*st)[GY_GSTAT_COUNT] = t->gstat_all;
    for (int i = 0; i < n; i++) {
      chs[i] = (int)all[i * ROW];
      memcpy(st[i], &all[i * ROW + 1], sizeof(float) * GY_GSTAT_COUNT);
    }
    gy_guard_judge(t->guard, n, chs, (const float(*)[GY_GSTAT_COUNT])st, t->gverdict_all);
    memcpy(t->verdict, t->gverdict_all + (size_t)t->dp_rank * B, sizeof(*t->verdict) * (size_t)B);
  }
  for (int b = 0; b < B; b++)
    t->gkeep[b] = !t->verdict[b].masked;
  /* the loss is the mean over the gang's kept tokens: each rank's gradient is divided by the
   * gang's kept tokens / dp, and the ranks' average is then that mean's gradient */
  t->gdenom = 0;
  if (t->dp_size > 1) {
    int kept = 0;
    for (int i = 0; i < n; i++)
      kept += !t->gverdict_all[i].masked;
    t->gdenom = kept ? (double)kept * T / t->dp_size : 0;
  }
  return 0;
}

int gy__train_cmp_loss_desc(const void *a, const void *b) {
  const gy_sample_loss_t *x = a, *y = b;
  if (x->loss != y->loss) return x->loss < y->loss ? 1 : -1;
  return x->id < y->id ? -1 : (x->id > y->id);
}

#ifdef GY_HAVE_CUDA_KERNELS
/* Forward, backward, data-parallel averaging (NCCL on the device, or Gloo on the host) and AdamW
 * on the GPU. */
static int step_cuda(gy_trainer_t *t, gy_step_report_t *rep) {
  float loss;
  int rc =
      gy_gpt_cuda_forward(t->dmodel, t->inputs, t->targets, t->B, t->T, t->knobs.z_loss, &loss);
  if (rc == GY_ECOMM)
    return gy__train_comm_failure(t, rc); /* a tensor-parallel sum: the callee said why */
  if (rc) return gy__train_cuda_fail(t, rc, "forward pass on the GPU");
  if ((rc = gy__train_guard(t, gy_gpt_cuda_token_losses(t->dmodel))))
    return gy__train_comm_failure(t, rc);
  rc = gy_gpt_cuda_backward_masked(t->dmodel, t->gkeep, t->gdenom);
  if (rc == GY_ECOMM) return gy__train_comm_failure(t, rc);
  if (rc) return gy__train_cuda_fail(t, rc, "backward pass on the GPU");
  if (t->dp_size > 1 && t->have_ngroups) {
    /* NCCL on the device gradients: one all-reduce (average) once the backward is done */
    gy_comm_t *c = t->ngroups.dp;
    if ((rc = gy_cuda_sync(gy_gpt_cuda_ctx(t->dmodel))))
      return gy__train_cuda_fail(t, rc, "backward pass on the GPU");
    rc = c->ops->allreduce(c, gy_gpt_cuda_device_grads(t->dmodel),
                           gy_gpt_cuda_num_params(t->dmodel), GY_DT_F32, GY_OP_AVG);
    if (rc) {
      snprintf(t->last_error, sizeof(t->last_error), "data-parallel all-reduce (nccl): %s",
               c->errmsg);
      c->ops->abort(c);
      return gy__train_comm_failure(t, rc);
    }
  } else if (t->dp_size > 1) {
    float *g = gy_gpt_grads(t->model);
    if ((rc = gy_gpt_cuda_download_grads(t->dmodel, g)))
      return gy__train_cuda_fail(t, rc, "gradient copy from the GPU");
    int L = gy_gpt_config(t->model)->num_layers;
    for (int l = L - 1; l >= -1 && !rc; l--)
      rc = gy__train_dp_reduce_bucket(t, l);
    if (rc) {
      snprintf(t->last_error, sizeof(t->last_error), "data-parallel all-reduce: %s",
               t->groups.dp->errmsg);
      return gy__train_comm_failure(t, rc);
    }
    if ((rc = gy_gpt_cuda_upload_grads(t->dmodel, g)))
      return gy__train_cuda_fail(t, rc, "gradient copy to the GPU");
  }
  /* a checkpoint of the previous step was copying while the passes ran: commit it now */
  char serr[sizeof(t->last_error)];
  if ((rc = gy__train_settle_snapshot(t, serr, sizeof(serr)))) {
    snprintf(t->last_error, sizeof(t->last_error), "%s", serr);
    return rc;
  }
  gy_grad_sq_t sq;
  if ((rc = gy_adamw_cuda_measure(t->dopt, &t->knobs, &sq)))
    return gy__train_cuda_fail(t, rc, "gradient norms on the GPU");
  if ((rc = gy__train_tp_reduce_norms(t, &sq))) return rc;
  gy_knobs_t k;
  step_knobs(t, &k);
  if ((rc = gy_adamw_cuda_update(t->dopt, &k, t->step, sqrt(sq.shallow_repl + sq.shallow_shard),
                                 sqrt(sq.deep_repl + sq.deep_shard), sq.nonfinite, &rep->opt)))
    return gy__train_cuda_fail(t, rc, "AdamW update on the GPU");
  return 0;
}
#endif

/* Forward, backward, gradient reduction and AdamW on the CPU model; the per-token losses of the
 * step stay in the model. */
static int step_cpu(gy_trainer_t *t, gy_step_report_t *rep) {
  int B = t->B, T = t->T;
  float loss;
  int rc = gy_gpt_forward(t->model, t->inputs, t->targets, B, T, t->knobs.z_loss, &loss);
  if (rc) return rc == GY_ECOMM ? gy__train_comm_failure(t, rc) : rc;
  if ((rc = gy__train_guard(t, gy_gpt_token_losses(t->model))))
    return gy__train_comm_failure(t, rc);
  if ((rc = gy_gpt_backward_masked(t->model, t->gkeep, t->gdenom)))
    return rc == GY_ECOMM ? gy__train_comm_failure(t, rc) : rc;
  if (t->dp_size > 1) {
    if (t->overlap) {
      rc = gy__train_wait_reducer(t);
    } else {
      int L = gy_gpt_config(t->model)->num_layers;
      for (int l = L - 1; l >= -1 && !rc; l--)
        rc = gy__train_dp_reduce_bucket(t, l);
      if (rc)
        snprintf(t->last_error, sizeof(t->last_error), "data-parallel all-reduce: %s",
                 t->groups.dp->errmsg);
    }
    if (rc) return gy__train_comm_failure(t, rc);
  }
  gy_grad_sq_t sq;
  gy_adamw_measure(t->model, &t->knobs, &sq);
  if ((rc = gy__train_tp_reduce_norms(t, &sq))) return rc;
  gy_knobs_t k;
  step_knobs(t, &k);
  gy_adamw_update(t->opt, t->model, &k, t->step, sqrt(sq.shallow_repl + sq.shallow_shard),
                  sqrt(sq.deep_repl + sq.deep_shard), sq.nonfinite, &rep->opt);
  return 0;
}

int gy_trainer_step(gy_trainer_t *t, gy_step_report_t *rep) {
  double t0 = now_ms();
  memset(rep, 0, sizeof(*rep));
  t->last_error[0] = 0;
  int B = t->B, T = t->T;
  gy_data_batch_ids(t->data, &t->skip, (uint64_t)t->step, t->dp_rank, t->dp_size, B, t->ids);
  load_batch(t);
  int rc;
  const float *tl;
#ifdef GY_HAVE_CUDA_KERNELS
  if (t->dmodel) {
    if ((rc = step_cuda(t, rep))) return rc;
    tl = gy_gpt_cuda_token_losses(t->dmodel);
  } else
#endif
  {
    if ((rc = step_cpu(t, rep))) return rc;
    tl = gy_gpt_token_losses(t->model);
  }
  gy_sample_loss_t *all = malloc(sizeof(*all) * (size_t)B);
  if (!all) return GY_ENOMEM;
  double total = 0, total_all = 0;
  int nkept = 0;
  for (int b = 0; b < B; b++) {
    double s = 0;
    for (int i = 0; i < T; i++)
      s += tl[b * T + i];
    int ch = t->chans[b];
    total_all += s;
    if (!t->gkeep[b]) {
      /* masked: not trained, so not in the step's loss; listed with why */
      rep->ch_masked[ch]++;
      if (rep->nmasked < GY_MASKED_MAX) {
        gy_masked_sample_t *m = &rep->masked[rep->nmasked++];
        m->id = t->ids[b];
        m->channel = ch;
        m->rank = t->dp_rank;
        memcpy(m->stats, t->gstats[b], sizeof(m->stats));
        m->verdict = t->verdict[b];
      }
      continue;
    }
    rep->ch_loss_sum[ch] += s;
    rep->ch_tokens[ch] += (uint64_t)T;
    total += s;
    all[nkept].id = t->ids[b];
    all[nkept].channel = ch;
    all[nkept].loss = (float)(s / T);
    nkept++;
  }
  rep->samples = B;
  qsort(all, (size_t)nkept, sizeof(*all), gy__train_cmp_loss_desc);
  rep->ntop = t->top_k < nkept ? t->top_k : nkept;
  memcpy(rep->top, all, sizeof(*all) * (size_t)rep->ntop);
  rep->nbottom = rep->ntop;
  for (int i = 0; i < rep->nbottom; i++)
    rep->bottom[i] = all[nkept - 1 - i];
  free(all);
  if (t->dp_size > 1 && (rc = gy__train_reduce_report(t, rep, &total, &total_all)))
    return gy__train_comm_failure(t, rc);
  if ((rc = quarantine_masked(t, rep))) {
    snprintf(t->last_error, sizeof(t->last_error), "quarantine: %s", gy_strerror(rc));
    return rc;
  }
  uint64_t kept_tokens = 0;
  for (int c = 0; c < GY_MAX_CHANNELS; c++)
    kept_tokens += rep->ch_tokens[c];
  /* the mean over the kept tokens; when the guard masked every sample of the gang, over all
   * of them (the masked share then tells the controller) */
  rep->loss = kept_tokens ? total / (double)kept_tokens : total_all / ((double)B * T * t->dp_size);
  rep->step = t->step;
  t->step++;
  rep->step_ms = now_ms() - t0;
  rep->tokens_per_s = rep->step_ms > 0 ? (double)B * T * t->dp_size / (rep->step_ms / 1e3) : 0;
  return 0;
}
