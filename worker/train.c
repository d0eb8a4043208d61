/*
 * train: the training engine of one worker process.
 *
 * A step: ask the data module which samples this rank consumes (a pure function of the step and
 * the skip list), run forward and backward, take an AdamW step with the current knobs, and
 * report per-channel loss sums, gradient norms and the worst samples. Between two steps the
 * caller may change knobs, add skips, checkpoint, restore or evaluate.
 *
 * Checkpoint blobs: "param/<tensor>", "adam_m/<tensor>", "adam_v/<tensor>" for every tensor of
 * the model, and "state", a JSON object (step, RNG, knobs, skip list, data cursor). Restoring
 * validates everything before it changes anything: a refused checkpoint leaves the trainer as
 * it was.
 *
 * Snapshots: a checkpoint is serialized in memory (the training thread pays one copy and the
 * checksums), kept in a ring of the last K, and written to disk by a background thread. Once
 * the writer is idle every submitted file is on disk (or its error is known):
 * gy_trainer_ckpt_written then hands each one out once (a controller commits it). A
 * rollback abandons the timeline after the restored step: gy_trainer_forget_after drops its
 * snapshots, files and unreported completions, so a later restore or commit of such a step can
 * only find the one the new timeline writes.
 *
 * Parallel training: the model is this rank's tensor-parallel shard and sums its partial
 * products over the TP group through tp_sum(). Data-parallel gradients are averaged over the DP
 * group per layer bucket, by a reducer thread that takes each block's gradients as soon as the
 * backward pass has finished them (so reduction overlaps the backward of the layers below);
 * the DP communicator is used by that thread only, the TP one by the training thread only.
 * Then norms (sharded parts summed over TP), the clip and AdamW run identically on every rank,
 * and the step's loss sums, token counts and worst samples are reduced over DP so every rank
 * reports, and would decide, the same.
 *
 * On the GPU (run.device cuda, built only with the CUDA kernels): the model and AdamW live on the
 * device (kernels/gpt_cuda.h) and the CPU model and optimizer stay as host buffers of the same
 * layout: the initial parameters are made there and uploaded (a seed gives the same start),
 * data-parallel gradients are averaged by NCCL on the device (backend nccl: one all-reduce of
 * the gradient buffer after the backward pass) or, with gloo, downloaded into the CPU gradient
 * buffer, averaged bucket by bucket and uploaded back; the step report's host figures always go
 * through Gloo groups. Checkpoints download parameters and moments into the host buffers they
 * serialise (a restore uploads them), so checkpoints move freely between cpu and cuda runs.
 * Tensor parallelism: the GPU model holds the same shard and calls tp_sum_cuda() for its partial
 * sums (NCCL on the device with backend nccl, one GPU per rank; Gloo through host copies
 * otherwise). Evaluation's cloze accuracy uses the GPU's top-1 predictions (gy_gpt_cuda_argmax).
 */
#include "worker/train.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cblas.h>

#include "common/err.h"
#include "kernels/llmc_io.h"
#include "worker/ckpt.h"
#include "worker/comm.h"
#ifdef GY_HAVE_CUDA_KERNELS
#include "kernels/gpt_cuda.h"
#endif

#include <pthread.h>

#define MAX_RING 64
#define MAX_KEEP_TRACK 4096
#define MAX_UNREPORTED 64

struct gy_trainer {
  gy_gpt_t *model; /* on cuda: host copies of parameters and gradients in the same layout */
  gy_adamw_t *opt; /* on cuda: host copies of the moments */
  int device;      /* GY_DEVICE_CPU or GY_DEVICE_CUDA (run.device) */
#ifdef GY_HAVE_CUDA_KERNELS
  gy_gpt_cuda_t *dmodel;    /* cuda only: the model on the GPU (owned) */
  gy_adamw_cuda_t *dopt;    /* cuda only: AdamW on the GPU (owned) */
  gy_comm_groups_t ngroups; /* cuda with backend nccl: the groups over device buffers */
  int have_ngroups;
  char *snap_text;   /* a checkpoint in flight from the GPU: its state text (owned), or NULL */
  int64_t snap_step; /* and its step */
  int pinned;        /* the host parameters and moments are page-locked (gy_cuda_pin) */
  float *tp_stage;   /* tensor parallelism over Gloo: host copy of the buffer being summed */
  size_t tp_stage_n;
#endif
  gy_data_t *data;
  gy_skiplist_t skip;
  gy_knobs_t knobs;
  int64_t boost_from, boost_to; /* schedule.boost: lr times boost_factor in [from, to) */
  float boost_factor;
  int64_t step;
  uint64_t rng;
  uint64_t config_hash;
  int B, T, top_k, eval_sequences;
  int rank, world, dp, tp;
  char *ckpt_dir;
  int keep_in_memory, keep;
  /* batch buffers */
  int *inputs, *targets, *chans;
  int *top1; /* cuda only: the top-1 predictions of an evaluation forward pass [B*T] */
  uint64_t *ids;
  uint16_t *tok;
  /* checkpoints */
  gy_ckpt_buf_t *ring[MAX_RING];
  gy_ckpt_writer_t *writer;
  int64_t submitted[MAX_KEEP_TRACK];
  int nsubmitted;
  uint64_t nsubmit_total;
  /* steps of the submissions gy_trainer_ckpt_written has not handed out, oldest first */
  int64_t unrep_step[MAX_UNREPORTED];
  uint64_t unrep_bytes[MAX_UNREPORTED]; /* and the size of each one's file */
  int nunrep;
  /* parallel */
  gy_store_t *store;
  gy_comm_groups_t groups;
  int have_groups;
  int dp_rank, dp_size, tp_rank, tp_size;
  int overlap;
  pthread_t reducer;
  int reducer_started;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int queue[1100];
  int qhead, qtail;
  int final_done, stop, dp_err;
  char last_error[1024];
};

static int settle_snapshot(gy_trainer_t *t, char *errmsg, size_t errlen);

const char *gy_trainer_last_error(const gy_trainer_t *t) {
  return t->last_error;
}

static int tp_sum(void *ctx, float *buf, size_t n) {
  gy_trainer_t *t = ctx;
  gy_comm_t *c = t->groups.tp;
  int rc = c->ops->allreduce(c, buf, n, GY_DT_F32, GY_OP_SUM);
  if (rc)
    snprintf(t->last_error, sizeof(t->last_error), "tensor-parallel all-reduce: %s", c->errmsg);
  return rc;
}

#ifdef GY_HAVE_CUDA_KERNELS
/* Describes a failed GPU call (the CUDA text for GY_EIO) into buf. */
static void cuda_msg(char *buf, size_t len, int rc, const char *what) {
  snprintf(buf, len, "%s: %s", what, rc == GY_EIO ? gy_cuda_last_error() : gy_strerror(rc));
}

/* The GPU model's tensor-parallel sum of a device buffer (activations of the model's dtype, or
 * float QK-norm gradients): NCCL on the device with backend nccl; otherwise through Gloo on the
 * host (download as float, sum in float, upload). In bf16 each rank's partial product is already
 * rounded to bf16 before the sum (NCCL's ring may round again between hops), so a TP run's bf16
 * activations differ from a tp = 1 run's by more than its float ones. */
static int tp_sum_cuda(void *ctx, void *buf, size_t n, gy_cuda_dtype_t dt) {
  gy_trainer_t *t = ctx;
  int rc;
  if (t->have_ngroups) {
    gy_comm_t *c = t->ngroups.tp;
    rc = c->ops->allreduce(c, buf, n, dt == GY_CUDA_BF16 ? GY_DT_BF16 : GY_DT_F32, GY_OP_SUM);
    if (rc) {
      snprintf(t->last_error, sizeof(t->last_error), "tensor-parallel all-reduce (nccl): %s",
               c->errmsg);
      c->ops->abort(c);
    }
    return rc;
  }
  if (n > t->tp_stage_n) {
    float *p = realloc(t->tp_stage, n * sizeof(float));
    if (!p) {
      snprintf(t->last_error, sizeof(t->last_error),
               "tensor-parallel all-reduce: out of host memory (%zu floats)", n);
      return GY_ENOMEM;
    }
    t->tp_stage = p;
    t->tp_stage_n = n;
  }
  gy_cuda_ctx_t *x = gy_gpt_cuda_ctx(t->dmodel);
  if ((rc = gy_cuda_download_f32(x, t->tp_stage, buf, dt, n))) {
    cuda_msg(t->last_error, sizeof(t->last_error), rc,
             "tensor-parallel all-reduce: copy from the GPU");
    return rc;
  }
  if ((rc = tp_sum(t, t->tp_stage, n))) return rc;
  if ((rc = gy_cuda_upload_f32(x, buf, dt, t->tp_stage, n)))
    cuda_msg(t->last_error, sizeof(t->last_error), rc,
             "tensor-parallel all-reduce: copy to the GPU");
  return rc;
}
#endif

/* Averages the gradients of block `layer` (or, for -1, of the tensors outside the blocks) over
 * the data-parallel group. */
static int dp_reduce_bucket(gy_trainer_t *t, int layer) {
  gy_comm_t *c = t->groups.dp;
  float *g = gy_gpt_grads(t->model);
  int L = gy_gpt_config(t->model)->num_layers;
  for (int i = 0; i < GY_T_COUNT; i++) {
    size_t n = gy_gpt_tensor_size(t->model, i), off = gy_gpt_tensor_offset(t->model, i);
    if (!n || gy_gpt_tensor_layered(i) != (layer >= 0)) continue;
    if (layer >= 0) {
      n /= (size_t)L;
      off += n * (size_t)layer;
    }
    int rc = c->ops->allreduce(c, g + off, n, GY_DT_F32, GY_OP_AVG);
    if (rc) return rc;
  }
  return 0;
}

static void *reducer_main(void *arg) {
  gy_trainer_t *t = arg;
  pthread_mutex_lock(&t->mu);
  for (;;) {
    while (t->qhead == t->qtail && !t->stop)
      pthread_cond_wait(&t->cv, &t->mu);
    if (t->qhead == t->qtail && t->stop) break;
    int layer = t->queue[t->qhead % 1100];
    t->qhead++;
    int failed = t->dp_err;
    pthread_mutex_unlock(&t->mu);
    int rc = failed ? 0 : dp_reduce_bucket(t, layer);
    pthread_mutex_lock(&t->mu);
    if (rc && !t->dp_err) {
      t->dp_err = rc;
      snprintf(t->last_error, sizeof(t->last_error), "data-parallel all-reduce: %s",
               t->groups.dp->errmsg);
    }
    if (layer == -1) {
      t->final_done = 1;
      pthread_cond_broadcast(&t->cv);
    }
  }
  pthread_mutex_unlock(&t->mu);
  return NULL;
}

/* Backward hook: hands a finished bucket to the reducer thread. */
static void grads_ready(void *ctx, int layer) {
  gy_trainer_t *t = ctx;
  pthread_mutex_lock(&t->mu);
  t->queue[t->qtail % 1100] = layer;
  t->qtail++;
  pthread_cond_broadcast(&t->cv);
  pthread_mutex_unlock(&t->mu);
}

/* Waits until the reducer has finished the step's last bucket; returns its error. */
static int wait_reducer(gy_trainer_t *t) {
  pthread_mutex_lock(&t->mu);
  while (!t->final_done)
    pthread_cond_wait(&t->cv, &t->mu);
  t->final_done = 0;
  int rc = t->dp_err;
  pthread_mutex_unlock(&t->mu);
  return rc;
}

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
static int cuda_fail(gy_trainer_t *t, int rc, const char *what) {
  cuda_msg(t->last_error, sizeof(t->last_error), rc, what);
  return rc;
}
#endif

/* On cuda: the host parameters and moments onto the device (after a restore). */
static int sync_to_device(gy_trainer_t *t, char *errmsg, size_t errlen) {
#ifdef GY_HAVE_CUDA_KERNELS
  if (!t->dmodel) return 0;
  int rc = gy_gpt_cuda_upload_params(t->dmodel, gy_gpt_params(t->model));
  if (!rc) rc = gy_adamw_cuda_upload(t->dopt, gy_adamw_m(t->opt), gy_adamw_v(t->opt));
  if (rc) cuda_msg(errmsg, errlen, rc, "cannot copy the state to the GPU");
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
      cuda_msg(errmsg, errlen, rc, "run.device cuda: cannot create the optimizer on the GPU");
      goto err;
    }
    if ((rc = sync_to_device(t, errmsg, errlen))) goto err;
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
  if (t->tp_size > 1) gy_gpt_set_tp_allreduce(t->model, tp_sum, t);
#ifdef GY_HAVE_CUDA_KERNELS
  if (t->dmodel && t->tp_size > 1) gy_gpt_cuda_set_tp_allreduce(t->dmodel, tp_sum_cuda, t);
#endif
  if (t->overlap) {
    gy_gpt_set_grads_ready(t->model, grads_ready, t);
    if (pthread_create(&t->reducer, NULL, reducer_main, t)) {
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
  if (t->device == GY_DEVICE_CUDA) t->top1 = malloc(N * sizeof(int));
  rc = GY_ENOMEM;
  if (!t->inputs || !t->targets || !t->chans || !t->ids || !t->tok ||
      (t->device == GY_DEVICE_CUDA && !t->top1))
    goto err;
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
    (void)settle_snapshot(t, err, sizeof(err));
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
gy_gpt_t *gy_trainer_model(gy_trainer_t *t) {
#ifdef GY_HAVE_CUDA_KERNELS
  /* on cuda the host copy gets the current parameters (a failed copy keeps the last ones); a
   * checkpoint in flight into the same buffer is finished first */
  if (t->dmodel) {
    char err[256];
    if (settle_snapshot(t, err, sizeof(err)))
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

int gy_trainer_skip(gy_trainer_t *t, uint64_t first, uint64_t last) {
  if (first >= last) return GY_EINVAL;
  return gy_skiplist_add(&t->skip, first, last);
}

/* Loads the samples of `ids` into inputs/targets. */
static void load_batch(gy_trainer_t *t) {
  int T = t->T;
  for (int b = 0; b < t->B; b++) {
    gy_data_sample(t->data, t->ids[b], t->tok, &t->chans[b]);
    for (int i = 0; i < T; i++) {
      t->inputs[b * T + i] = t->tok[i];
      t->targets[b * T + i] = t->tok[i + 1];
    }
  }
}

static int cmp_loss_desc(const void *a, const void *b) {
  const gy_sample_loss_t *x = a, *y = b;
  if (x->loss != y->loss) return x->loss < y->loss ? 1 : -1;
  return x->id < y->id ? -1 : (x->id > y->id);
}

static void abort_groups(gy_comm_groups_t *g) {
  if (g->dp) g->dp->ops->abort(g->dp);
  if (g->tp) g->tp->ops->abort(g->tp);
}

/* Ends a step that failed in a collective: the reducer is drained (its calls fail fast once
 * the communicator is aborted) and the error is kept for the caller. */
static int comm_failure(gy_trainer_t *t, int rc) {
  if (t->have_groups) abort_groups(&t->groups);
  if (t->have_ngroups) abort_groups(&t->ngroups); /* NCCL's too: nothing waits for its timeout */
  if (t->overlap) {
    grads_ready(t, -1);
    wait_reducer(t);
  }
  if (!t->last_error[0]) snprintf(t->last_error, sizeof(t->last_error), "%s", gy_strerror(rc));
  return rc;
}

/* Reduces the step's figures over the data-parallel group: loss sums and token counts per
 * channel, and the worst samples (gathered, then the top k of all). */
static int reduce_report(gy_trainer_t *t, gy_step_report_t *rep, double *total) {
  gy_comm_t *c = t->groups.dp;
  double v[2 * GY_MAX_CHANNELS + 1];
  for (int i = 0; i < GY_MAX_CHANNELS; i++) {
    v[i] = rep->ch_loss_sum[i];
    v[GY_MAX_CHANNELS + i] = (double)rep->ch_tokens[i];
  }
  v[2 * GY_MAX_CHANNELS] = *total;
  int rc = c->ops->allreduce(c, v, 2 * GY_MAX_CHANNELS + 1, GY_DT_F64, GY_OP_SUM);
  if (rc) goto fail;
  for (int i = 0; i < GY_MAX_CHANNELS; i++) {
    rep->ch_loss_sum[i] = v[i];
    rep->ch_tokens[i] = (uint64_t)v[GY_MAX_CHANNELS + i];
  }
  *total = v[2 * GY_MAX_CHANNELS];
  /* each rank offers k top and k bottom samples: 2k triples (id, channel, loss) */
  int k = rep->ntop;
  if (k > 0) {
    double *mine = calloc((size_t)k * 6, sizeof(double));
    double *all = calloc((size_t)k * 6 * (size_t)c->size, sizeof(double));
    gy_sample_loss_t *merged = calloc((size_t)k * (size_t)c->size, sizeof(*merged));
    gy_sample_loss_t *low = calloc((size_t)k * (size_t)c->size, sizeof(*low));
    if (!mine || !all || !merged || !low) {
      free(mine);
      free(all);
      free(merged);
      free(low);
      return GY_ENOMEM;
    }
    for (int i = 0; i < 2 * k; i++) {
      const gy_sample_loss_t *sl = i < k ? &rep->top[i] : &rep->bottom[i - k];
      mine[3 * i] = (double)sl->id; /* ids stay below 2^53 */
      mine[3 * i + 1] = sl->channel;
      mine[3 * i + 2] = sl->loss;
    }
    rc = c->ops->allgather(c, mine, all, (size_t)k * 6, GY_DT_F64);
    if (!rc) {
      int nm = 0, nl = 0;
      for (int i = 0; i < 2 * k * c->size; i++) {
        gy_sample_loss_t *dst = (i / k) % 2 == 0 ? &merged[nm++] : &low[nl++];
        dst->id = (uint64_t)all[3 * i];
        dst->channel = (int)all[3 * i + 1];
        dst->loss = (float)all[3 * i + 2];
      }
      qsort(merged, (size_t)k * (size_t)c->size, sizeof(*merged), cmp_loss_desc);
      qsort(low, (size_t)k * (size_t)c->size, sizeof(*low), cmp_loss_desc);
      /* top_k counts the whole data-parallel batch: each rank offers at most its batch, the
       * merged list keeps top_k of all (with top_k = dp x batch every trained id is listed). */
      int keep = k * c->size;
      if (keep > t->top_k) keep = t->top_k;
      if (keep > GY_TOPK_MAX) keep = GY_TOPK_MAX;
      memcpy(rep->top, merged, sizeof(*merged) * (size_t)keep);
      rep->ntop = keep;
      /* the lowest of all, lowest first (low is sorted highest first) */
      for (int i = 0; i < keep; i++)
        rep->bottom[i] = low[k * c->size - 1 - i];
      rep->nbottom = keep;
    }
    free(mine);
    free(all);
    free(merged);
    free(low);
    if (rc) goto fail;
  }
  return 0;
fail:
  snprintf(t->last_error, sizeof(t->last_error), "data-parallel reduction of the step report: %s",
           c->errmsg);
  return rc;
}

/* With tensor parallelism: the sharded squares summed over the group (host values, Gloo), the
 * non-finite flag too (a NaN in one shard); replicated tensors count once. */
static int tp_reduce_norms(gy_trainer_t *t, gy_grad_sq_t *sq) {
  if (t->tp_size <= 1) return 0;
  double v[3] = {sq->shallow_shard, sq->deep_shard, (double)sq->nonfinite};
  gy_comm_t *c = t->groups.tp;
  int rc = c->ops->allreduce(c, v, 3, GY_DT_F64, GY_OP_SUM);
  if (rc) {
    snprintf(t->last_error, sizeof(t->last_error), "tensor-parallel norm reduction: %s", c->errmsg);
    return comm_failure(t, rc);
  }
  sq->shallow_shard = v[0];
  sq->deep_shard = v[1];
  sq->nonfinite = v[2] != 0.0;
  return 0;
}

#ifdef GY_HAVE_CUDA_KERNELS
/* Forward, backward, data-parallel averaging (NCCL on the device, or Gloo on the host) and AdamW
 * on the GPU. */
static int step_cuda(gy_trainer_t *t, gy_step_report_t *rep) {
  float loss;
  int rc =
      gy_gpt_cuda_forward(t->dmodel, t->inputs, t->targets, t->B, t->T, t->knobs.z_loss, &loss);
  if (rc == GY_ECOMM) return comm_failure(t, rc); /* a tensor-parallel sum: the callee said why */
  if (rc) return cuda_fail(t, rc, "forward pass on the GPU");
  rc = gy_gpt_cuda_backward(t->dmodel);
  if (rc == GY_ECOMM) return comm_failure(t, rc);
  if (rc) return cuda_fail(t, rc, "backward pass on the GPU");
  if (t->dp_size > 1 && t->have_ngroups) {
    /* NCCL on the device gradients: one all-reduce (average) once the backward is done */
    gy_comm_t *c = t->ngroups.dp;
    if ((rc = gy_cuda_sync(gy_gpt_cuda_ctx(t->dmodel))))
      return cuda_fail(t, rc, "backward pass on the GPU");
    rc = c->ops->allreduce(c, gy_gpt_cuda_device_grads(t->dmodel),
                           gy_gpt_cuda_num_params(t->dmodel), GY_DT_F32, GY_OP_AVG);
    if (rc) {
      snprintf(t->last_error, sizeof(t->last_error), "data-parallel all-reduce (nccl): %s",
               c->errmsg);
      c->ops->abort(c);
      return comm_failure(t, rc);
    }
  } else if (t->dp_size > 1) {
    float *g = gy_gpt_grads(t->model);
    if ((rc = gy_gpt_cuda_download_grads(t->dmodel, g)))
      return cuda_fail(t, rc, "gradient copy from the GPU");
    int L = gy_gpt_config(t->model)->num_layers;
    for (int l = L - 1; l >= -1 && !rc; l--)
      rc = dp_reduce_bucket(t, l);
    if (rc) {
      snprintf(t->last_error, sizeof(t->last_error), "data-parallel all-reduce: %s",
               t->groups.dp->errmsg);
      return comm_failure(t, rc);
    }
    if ((rc = gy_gpt_cuda_upload_grads(t->dmodel, g)))
      return cuda_fail(t, rc, "gradient copy to the GPU");
  }
  /* a checkpoint of the previous step was copying while the passes ran: commit it now */
  char serr[sizeof(t->last_error)];
  if ((rc = settle_snapshot(t, serr, sizeof(serr)))) {
    snprintf(t->last_error, sizeof(t->last_error), "%s", serr);
    return rc;
  }
  gy_grad_sq_t sq;
  if ((rc = gy_adamw_cuda_measure(t->dopt, &t->knobs, &sq)))
    return cuda_fail(t, rc, "gradient norms on the GPU");
  if ((rc = tp_reduce_norms(t, &sq))) return rc;
  gy_knobs_t k;
  step_knobs(t, &k);
  if ((rc = gy_adamw_cuda_update(t->dopt, &k, t->step, sqrt(sq.shallow_repl + sq.shallow_shard),
                                 sqrt(sq.deep_repl + sq.deep_shard), sq.nonfinite, &rep->opt)))
    return cuda_fail(t, rc, "AdamW update on the GPU");
  return 0;
}
#endif

/* Forward, backward, gradient reduction and AdamW on the CPU model; the per-token losses of the
 * step stay in the model. */
static int step_cpu(gy_trainer_t *t, gy_step_report_t *rep) {
  int B = t->B, T = t->T;
  float loss;
  int rc = gy_gpt_forward(t->model, t->inputs, t->targets, B, T, t->knobs.z_loss, &loss);
  if (rc) return rc == GY_ECOMM ? comm_failure(t, rc) : rc;
  if ((rc = gy_gpt_backward(t->model))) return rc == GY_ECOMM ? comm_failure(t, rc) : rc;
  if (t->dp_size > 1) {
    if (t->overlap) {
      rc = wait_reducer(t);
    } else {
      int L = gy_gpt_config(t->model)->num_layers;
      for (int l = L - 1; l >= -1 && !rc; l--)
        rc = dp_reduce_bucket(t, l);
      if (rc)
        snprintf(t->last_error, sizeof(t->last_error), "data-parallel all-reduce: %s",
                 t->groups.dp->errmsg);
    }
    if (rc) return comm_failure(t, rc);
  }
  gy_grad_sq_t sq;
  gy_adamw_measure(t->model, &t->knobs, &sq);
  if ((rc = tp_reduce_norms(t, &sq))) return rc;
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
  double total = 0;
  for (int b = 0; b < B; b++) {
    double s = 0;
    for (int i = 0; i < T; i++)
      s += tl[b * T + i];
    int ch = t->chans[b];
    rep->ch_loss_sum[ch] += s;
    rep->ch_tokens[ch] += (uint64_t)T;
    total += s;
    all[b].id = t->ids[b];
    all[b].channel = ch;
    all[b].loss = (float)(s / T);
  }
  qsort(all, (size_t)B, sizeof(*all), cmp_loss_desc);
  rep->ntop = t->top_k < B ? t->top_k : B;
  memcpy(rep->top, all, sizeof(*all) * (size_t)rep->ntop);
  rep->nbottom = rep->ntop;
  for (int i = 0; i < rep->nbottom; i++)
    rep->bottom[i] = all[B - 1 - i];
  free(all);
  if (t->dp_size > 1 && (rc = reduce_report(t, rep, &total))) return comm_failure(t, rc);
  rep->loss = total / ((double)B * T * t->dp_size);
  rep->step = t->step;
  t->step++;
  rep->step_ms = now_ms() - t0;
  rep->tokens_per_s = rep->step_ms > 0 ? (double)B * T * t->dp_size / (rep->step_ms / 1e3) : 0;
  return 0;
}

/* As cloze_count, from the top-1 predictions top1 [nb*T] (the GPU computes them). */
static uint64_t cloze_count_top1(const int *top1, const int *targets, int nb, int T,
                                 uint64_t *items) {
  int first = T > GY_CLOZE_TOKENS ? T - GY_CLOZE_TOKENS : 0;
  uint64_t right = 0;
  for (int b = 0; b < nb; b++)
    for (int i = first; i < T; i++)
      right += top1[b * T + i] == targets[b * T + i];
  *items += (uint64_t)nb * (uint64_t)(T - first);
  return right;
}

/* Right cloze items among the last GY_CLOZE_TOKENS positions of each of the nb sequences of the
 * last forward pass (logits [nb*T, Vp]; targets [nb*T]); their number goes to *items. */
static uint64_t cloze_count(const float *logits, const int *targets, int nb, int T, int V, int Vp,
                            uint64_t *items) {
  int first = T > GY_CLOZE_TOKENS ? T - GY_CLOZE_TOKENS : 0;
  uint64_t right = 0;
  for (int b = 0; b < nb; b++)
    for (int i = first; i < T; i++) {
      const float *row = logits + ((size_t)b * T + i) * (size_t)Vp;
      int best = 0;
      for (int v = 1; v < V; v++)
        if (row[v] > row[best]) best = v;
      right += best == targets[b * T + i];
    }
  *items += (uint64_t)nb * (uint64_t)(T - first);
  return right;
}

int gy_trainer_eval(gy_trainer_t *t, gy_eval_report_t *rep) {
  memset(rep, 0, sizeof(*rep));
  int nch = gy_data_nchannels(t->data), B = t->B, T = t->T;
  int V = gy_gpt_config(t->model)->vocab_size, Vp = gy_gpt_config(t->model)->padded_vocab_size;
  int dp = t->dp_size > 0 ? t->dp_size : 1, me = t->dp_rank;
  /* this rank's sums per channel: loss, tokens, right cloze items, cloze items */
  double sums[4 * GY_MAX_CHANNELS] = {0};
  rep->nchannels = nch;
  for (int ch = 0; ch < nch; ch++) {
    rep->unigram[ch] = gy_data_unigram_nats(t->data, ch);
    int n = gy_data_val_count(t->data, ch);
    double sum = 0;
    uint64_t ntok = 0, right = 0, items = 0;
    /* this rank's sequences: me, me + dp, me + 2 dp, ..., B per forward pass */
    for (int k0 = me; k0 < n; k0 += B * dp) {
      int nb = 0;
      for (int i = k0; i < n && nb < B; i += dp, nb++) {
        gy_data_val_sample(t->data, ch, i, t->tok);
        for (int j = 0; j < T; j++) {
          t->inputs[nb * T + j] = t->tok[j];
          t->targets[nb * T + j] = t->tok[j + 1];
        }
      }
      float l;
#ifdef GY_HAVE_CUDA_KERNELS
      if (t->dmodel) { /* the top-1 predictions come from the GPU, not the logits */
        int rc = gy_gpt_cuda_forward(t->dmodel, t->inputs, t->targets, nb, T, 0.0f, &l);
        if (rc == GY_ECOMM) return comm_failure(t, rc);
        if (rc) return cuda_fail(t, rc, "evaluation forward pass on the GPU");
        const float *tl = gy_gpt_cuda_token_losses(t->dmodel);
        for (int i = 0; i < nb * T; i++)
          sum += tl[i];
        ntok += (uint64_t)nb * (uint64_t)T;
        if ((rc = gy_gpt_cuda_argmax(t->dmodel, t->top1)))
          return cuda_fail(t, rc, "evaluation predictions on the GPU");
        right += cloze_count_top1(t->top1, t->targets, nb, T, &items);
        continue;
      }
#endif
      int rc = gy_gpt_forward(t->model, t->inputs, t->targets, nb, T, 0.0f, &l);
      if (rc) return rc == GY_ECOMM ? comm_failure(t, rc) : rc;
      const float *tl = gy_gpt_token_losses(t->model);
      for (int i = 0; i < nb * T; i++)
        sum += tl[i];
      ntok += (uint64_t)nb * (uint64_t)T;
      right += cloze_count(gy_gpt_logits(t->model), t->targets, nb, T, V, Vp, &items);
    }
    sums[ch] = sum;
    sums[GY_MAX_CHANNELS + ch] = (double)ntok;
    sums[2 * GY_MAX_CHANNELS + ch] = (double)right;
    sums[3 * GY_MAX_CHANNELS + ch] = (double)items;
  }
  if (dp > 1) {
    gy_comm_t *c = t->groups.dp;
    int rc = c->ops->allreduce(c, sums, 4 * GY_MAX_CHANNELS, GY_DT_F64, GY_OP_SUM);
    if (rc) {
      snprintf(t->last_error, sizeof(t->last_error), "evaluation: data-parallel all-reduce: %s",
               c->errmsg);
      return comm_failure(t, rc);
    }
  }
  for (int ch = 0; ch < nch; ch++) {
    double ntok = sums[GY_MAX_CHANNELS + ch], items = sums[3 * GY_MAX_CHANNELS + ch];
    rep->tokens[ch] = (uint64_t)ntok;
    rep->val_loss[ch] = ntok > 0 ? sums[ch] / ntok : NAN;
    rep->ppl[ch] = ntok > 0 ? exp(rep->val_loss[ch]) : NAN;
    rep->cloze_right[ch] = (uint64_t)sums[2 * GY_MAX_CHANNELS + ch];
    rep->cloze_items[ch] = (uint64_t)items;
    rep->cloze[ch] = items > 0 ? sums[2 * GY_MAX_CHANNELS + ch] / items : NAN;
  }
  return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* checkpoints */

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

/* The run state (step, knobs, skips, data position...) as compact JSON text, malloc'ed. */
static char *state_text(gy_trainer_t *t) {
  json_t *st = state_to_json(t);
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
static int settle_snapshot(gy_trainer_t *t, char *errmsg, size_t errlen) {
#ifdef GY_HAVE_CUDA_KERNELS
  if (!t->snap_text) return 0;
  char *text = t->snap_text;
  int64_t step = t->snap_step;
  t->snap_text = NULL;
  int rc = gy_gpt_cuda_snapshot_wait(t->dmodel);
  if (rc) {
    cuda_msg(errmsg, errlen, rc, "checkpoint: cannot copy the state from the GPU");
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
  int rc = settle_snapshot(t, errmsg, errlen);
  if (rc) return rc;
  char *text = state_text(t);
  if (!text) {
    snprintf(errmsg, errlen, "cannot build the checkpoint of step %" PRId64 ": out of memory",
             t->step);
    return GY_ENOMEM;
  }
#ifdef GY_HAVE_CUDA_KERNELS
  if (t->dmodel) {
    /* the copies run while the next step's passes do; settle_snapshot finishes the job */
    rc = gy_gpt_cuda_snapshot_begin(t->dmodel, t->dopt, gy_gpt_params(t->model), gy_adamw_m(t->opt),
                                    gy_adamw_v(t->opt));
    if (rc) {
      cuda_msg(errmsg, errlen, rc, "checkpoint: cannot copy the state from the GPU");
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
  int rc = settle_snapshot(t, errmsg, errlen);
  if (rc) return rc;
  return gy_ckpt_writer_flush(t->writer, errmsg, errlen);
}

int gy_trainer_ckpt_written(gy_trainer_t *t, int64_t *steps, uint64_t *bytes, int max, char *errmsg,
                            size_t errlen) {
  int rc0 = settle_snapshot(t, errmsg, errlen);
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
  int rc = settle_snapshot(t, errmsg, errlen);
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
  /* on cuda a failed copy leaves the GPU's state behind the host's: the error says so */
  return sync_to_device(t, errmsg, errlen);
}

int gy_trainer_restore_file(gy_trainer_t *t, const char *path, char *errmsg, size_t errlen) {
  gy_ckpt_buf_t *b = NULL;
  gy_ckpt_view_t v;
  int rc = settle_snapshot(t, errmsg, errlen); /* its copies write the host buffers */
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
  int rc0 = settle_snapshot(t, errmsg, errlen);
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
