/*
 * train_reduce: the trainer's reductions over its data- and tensor-parallel groups.
 *
 * API, in order (internal, worker/train_internal.h): gy__train_tp_sum, gy__train_tp_sum_cuda
 * (cuda), gy__train_dp_reduce_bucket, gy__train_reducer_main, gy__train_grads_ready,
 * gy__train_wait_reducer, gy__train_comm_failure, gy__train_reduce_report,
 * gy__train_tp_reduce_norms.
 *
 * Parallel training: the model is this rank's tensor-parallel shard and sums its partial
 * products over the TP group through gy__train_tp_sum(). Data-parallel gradients are averaged
 * over the DP group per layer bucket, by a reducer thread that takes each block's gradients as
 * soon as the backward pass has finished them (so reduction overlaps the backward of the layers
 * below); the DP communicator is used by that thread only, the TP one by the training thread
 * only. Then norms (sharded parts summed over TP), the clip and AdamW run identically on every
 * rank, and the step's loss sums, token counts, worst samples and masked samples are reduced over
 * DP so every rank reports, and would decide, the same.
 *
 * Invariants: the reducer's queue, final_done, stop and dp_err are read and written under
 * t->mu; a failed collective aborts every group (gy__train_comm_failure) so no peer waits for
 * its timeout, and the first error is the one kept in t->last_error.
 */
#include "worker/train_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"

int gy__train_tp_sum(void *ctx, float *buf, size_t n) {
  gy_trainer_t *t = ctx;
  gy_comm_t *c = t->groups.tp;
  int rc = c->ops->allreduce(c, buf, n, GY_DT_F32, GY_OP_SUM);
  if (rc)
    snprintf(t->last_error, sizeof(t->last_error), "tensor-parallel all-reduce: %s", c->errmsg);
  return rc;
}

#ifdef GY_HAVE_CUDA_KERNELS
/* The GPU model's tensor-parallel sum of a device buffer (activations of the model's dtype, or
 * float QK-norm gradients): NCCL on the device with backend nccl; otherwise through Gloo on the
 * host (download as float, sum in float, upload). In bf16 each rank's partial product is already
 * rounded to bf16 before the sum (NCCL's ring may round again between hops), so a TP run's bf16
 * activations differ from a tp = 1 run's by more than its float ones. */
int gy__train_tp_sum_cuda(void *ctx, void *buf, size_t n, gy_cuda_dtype_t dt) {
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
    gy__train_cuda_msg(t->last_error, sizeof(t->last_error), rc,
                       "tensor-parallel all-reduce: copy from the GPU");
    return rc;
  }
  if ((rc = gy__train_tp_sum(t, t->tp_stage, n))) return rc;
  if ((rc = gy_cuda_upload_f32(x, buf, dt, t->tp_stage, n)))
    gy__train_cuda_msg(t->last_error, sizeof(t->last_error), rc,
                       "tensor-parallel all-reduce: copy to the GPU");
  return rc;
}
#endif

/* Averages the gradients of block `layer` (or, for -1, of the tensors outside the blocks) over
 * the data-parallel group. */
int gy__train_dp_reduce_bucket(gy_trainer_t *t, int layer) {
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

void *gy__train_reducer_main(void *arg) {
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
    int rc = failed ? 0 : gy__train_dp_reduce_bucket(t, layer);
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
void gy__train_grads_ready(void *ctx, int layer) {
  gy_trainer_t *t = ctx;
  pthread_mutex_lock(&t->mu);
  t->queue[t->qtail % 1100] = layer;
  t->qtail++;
  pthread_cond_broadcast(&t->cv);
  pthread_mutex_unlock(&t->mu);
}

/* Waits until the reducer has finished the step's last bucket; returns its error. */
int gy__train_wait_reducer(gy_trainer_t *t) {
  pthread_mutex_lock(&t->mu);
  while (!t->final_done)
    pthread_cond_wait(&t->cv, &t->mu);
  t->final_done = 0;
  int rc = t->dp_err;
  pthread_mutex_unlock(&t->mu);
  return rc;
}

static void abort_groups(gy_comm_groups_t *g) {
  if (g->dp) g->dp->ops->abort(g->dp);
  if (g->tp) g->tp->ops->abort(g->tp);
}

/* Ends a step that failed in a collective: the reducer is drained (its calls fail fast once
 * the communicator is aborted) and the error is kept for the caller. */
int gy__train_comm_failure(gy_trainer_t *t, int rc) {
  if (t->have_groups) abort_groups(&t->groups);
#ifdef GY_HAVE_CUDA_KERNELS
  if (t->have_ngroups) abort_groups(&t->ngroups); /* NCCL's too: nothing waits for its timeout */
#endif
  if (t->overlap) {
    gy__train_grads_ready(t, -1);
    gy__train_wait_reducer(t);
  }
  if (!t->last_error[0]) snprintf(t->last_error, sizeof(t->last_error), "%s", gy_strerror(rc));
  return rc;
}

/* Reduces the step's figures over the data-parallel group: loss sums and token counts per
 * channel, and the worst samples (gathered, then the top k of all). */
/* Doubles per masked sample on the wire: valid, id, channel, rank, stats, stat, high, nonfinite,
 * masked, median, threshold. */
#define MASK_FIELDS (4 + GY_GSTAT_COUNT + 6)

static void pack_masked(const gy_masked_sample_t *m, double *o) {
  o[0] = 1;
  o[1] = (double)m->id; /* ids stay below 2^53 */
  o[2] = m->channel;
  o[3] = m->rank;
  for (int s = 0; s < GY_GSTAT_COUNT; s++)
    o[4 + s] = m->stats[s];
  double *v = o + 4 + GY_GSTAT_COUNT;
  v[0] = m->verdict.stat;
  v[1] = m->verdict.high;
  v[2] = m->verdict.nonfinite;
  v[3] = m->verdict.masked;
  v[4] = m->verdict.median;
  v[5] = m->verdict.threshold;
}

static void unpack_masked(const double *o, gy_masked_sample_t *m) {
  m->id = (uint64_t)o[1];
  m->channel = (int)o[2];
  m->rank = (int)o[3];
  for (int s = 0; s < GY_GSTAT_COUNT; s++)
    m->stats[s] = (float)o[4 + s];
  const double *v = o + 4 + GY_GSTAT_COUNT;
  m->verdict.stat = (int)v[0];
  m->verdict.high = (int)v[1];
  m->verdict.nonfinite = (int)v[2];
  m->verdict.masked = (int)v[3];
  m->verdict.median = (float)v[4];
  m->verdict.threshold = (float)v[5];
}

int gy__train_reduce_report(gy_trainer_t *t, gy_step_report_t *rep, double *total,
                            double *total_all) {
  gy_comm_t *c = t->groups.dp;
  enum { NV = 3 * GY_MAX_CHANNELS + 3 };
  double v[NV];
  for (int i = 0; i < GY_MAX_CHANNELS; i++) {
    v[i] = rep->ch_loss_sum[i];
    v[GY_MAX_CHANNELS + i] = (double)rep->ch_tokens[i];
    v[2 * GY_MAX_CHANNELS + i] = (double)rep->ch_masked[i];
  }
  v[3 * GY_MAX_CHANNELS] = *total;
  v[3 * GY_MAX_CHANNELS + 1] = *total_all;
  v[3 * GY_MAX_CHANNELS + 2] = rep->samples;
  int rc = c->ops->allreduce(c, v, NV, GY_DT_F64, GY_OP_SUM);
  if (rc) goto fail;
  for (int i = 0; i < GY_MAX_CHANNELS; i++) {
    rep->ch_loss_sum[i] = v[i];
    rep->ch_tokens[i] = (uint64_t)v[GY_MAX_CHANNELS + i];
    rep->ch_masked[i] = (uint64_t)v[2 * GY_MAX_CHANNELS + i];
  }
  *total = v[3 * GY_MAX_CHANNELS];
  *total_all = v[3 * GY_MAX_CHANNELS + 1];
  rep->samples = (int)v[3 * GY_MAX_CHANNELS + 2];
  /* Each rank offers the same number of slots (the guard may have masked a different number
   * of samples on each): k top, k bottom and m masked, each with a validity flag. */
  int k = t->top_k < t->B ? t->top_k : t->B;
  int m = t->B < GY_MASKED_MAX ? t->B : GY_MASKED_MAX;
  size_t per = (size_t)k * 2 * 4 + (size_t)m * MASK_FIELDS;
  double *mine = calloc(per, sizeof(double));
  double *all = calloc(per * (size_t)c->size, sizeof(double));
  gy_sample_loss_t *merged = calloc((size_t)(k ? k : 1) * (size_t)c->size, sizeof(*merged));
  gy_sample_loss_t *low = calloc((size_t)(k ? k : 1) * (size_t)c->size, sizeof(*low));
  if (!mine || !all || !merged || !low) {
    free(mine);
    free(all);
    free(merged);
    free(low);
    return GY_ENOMEM;
  }
  for (int i = 0; i < 2 * k; i++) {
    int top = i < k, j = top ? i : i - k;
    if (j >= (top ? rep->ntop : rep->nbottom)) continue;
    const gy_sample_loss_t *sl = top ? &rep->top[j] : &rep->bottom[j];
    mine[4 * i] = 1;
    mine[4 * i + 1] = (double)sl->id; /* ids stay below 2^53 */
    mine[4 * i + 2] = sl->channel;
    mine[4 * i + 3] = sl->loss;
  }
  for (int i = 0; i < rep->nmasked && i < m; i++)
    pack_masked(&rep->masked[i], mine + (size_t)k * 8 + (size_t)i * MASK_FIELDS);
  rc = c->ops->allgather(c, mine, all, per, GY_DT_F64);
  if (!rc) {
    int nm = 0, nl = 0;
    rep->nmasked = 0;
    for (int r = 0; r < c->size; r++) {
      const double *o = all + per * (size_t)r;
      for (int i = 0; i < 2 * k; i++) {
        if (o[4 * i] == 0) continue;
        gy_sample_loss_t *dst = i < k ? &merged[nm++] : &low[nl++];
        dst->id = (uint64_t)o[4 * i + 1];
        dst->channel = (int)o[4 * i + 2];
        dst->loss = (float)o[4 * i + 3];
      }
      for (int i = 0; i < m; i++) {
        const double *x = o + (size_t)k * 8 + (size_t)i * MASK_FIELDS;
        if (x[0] == 0 || rep->nmasked >= GY_MASKED_MAX) continue;
        unpack_masked(x, &rep->masked[rep->nmasked++]);
      }
    }
    qsort(merged, (size_t)nm, sizeof(*merged), gy__train_cmp_loss_desc);
    qsort(low, (size_t)nl, sizeof(*low), gy__train_cmp_loss_desc);
    /* top_k counts the whole data-parallel batch: each rank offers at most its batch, the
     * merged list keeps top_k of all (with top_k = dp x batch every trained id is listed). */
    int keep = nm;
    if (keep > t->top_k) keep = t->top_k;
    if (keep > GY_TOPK_MAX) keep = GY_TOPK_MAX;
    memcpy(rep->top, merged, sizeof(*merged) * (size_t)keep);
    rep->ntop = keep;
    /* the lowest of all, lowest first (low is sorted highest first) */
    int keepl = nl < keep ? nl : keep;
    for (int i = 0; i < keepl; i++)
      rep->bottom[i] = low[nl - 1 - i];
    rep->nbottom = keepl;
  }
  free(mine);
  free(all);
  free(merged);
  free(low);
  if (rc) goto fail;
  return 0;
fail:
  snprintf(t->last_error, sizeof(t->last_error), "data-parallel reduction of the step report: %s",
           c->errmsg);
  return rc;
}

/* With tensor parallelism: the sharded squares summed over the group (host values, Gloo), the
 * non-finite flag too (a NaN in one shard); replicated tensors count once. */
int gy__train_tp_reduce_norms(gy_trainer_t *t, gy_grad_sq_t *sq) {
  if (t->tp_size <= 1) return 0;
  double v[3] = {sq->shallow_shard, sq->deep_shard, (double)sq->nonfinite};
  gy_comm_t *c = t->groups.tp;
  int rc = c->ops->allreduce(c, v, 3, GY_DT_F64, GY_OP_SUM);
  if (rc) {
    snprintf(t->last_error, sizeof(t->last_error), "tensor-parallel norm reduction: %s", c->errmsg);
    return gy__train_comm_failure(t, rc);
  }
  sq->shallow_shard = v[0];
  sq->deep_shard = v[1];
  sq->nonfinite = v[2] != 0.0;
  return 0;
}
