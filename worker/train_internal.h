/* train_internal: the trainer's struct and the calls between its files (train.c: creation, the
 * step, the knobs; train_reduce.c: the parallel reductions; train_eval.c: held-out evaluation;
 * train_ckpt.c: checkpoints and snapshots). Private to worker/train*.c: the public API is
 * worker/train.h. */
#ifndef GY_TRAIN_INTERNAL_H
#define GY_TRAIN_INTERNAL_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "worker/ckpt.h"
#include "worker/comm.h"
#include "worker/train.h"
#ifdef GY_HAVE_CUDA_KERNELS
#include "kernels/gpt_cuda.h"
#endif

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
  /* the guard: its state, and the step's figures and verdicts per sample [B] */
  gy_guard_t *guard;
  float (*gstats)[GY_GSTAT_COUNT];
  gy_guard_verdict_t *verdict;
  uint8_t *gkeep; /* [B]: 1 = the sample is in the loss */
  uint64_t *used; /* [B]: the sample index each id's tokens came from */
  /* the gang's figures for the guard (data parallel): this rank's rows and everyone's
   * [B + dp*B][GY_GSTAT_COUNT + 1], and everyone's channels, figures and verdicts [dp*B] */
  float *gall;
  int *gchan;
  float (*gstat_all)[GY_GSTAT_COUNT];
  gy_guard_verdict_t *gverdict_all;
  double gdenom; /* the backward's denominator (tokens): the gang's kept tokens / dp; 0: local */
  gy_quarantine_t quar;          /* quarantined regions (worker/data.h) */
  gy_quarantine_t quar_released; /* released by the operator (gy_trainer_quarantine_remove):
                                    a restore does not bring them back from a checkpoint */
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

/* ---- train.c ---- */
#ifdef GY_HAVE_CUDA_KERNELS
/* Describes a failed GPU call (the CUDA text for GY_EIO) into buf. */
void gy__train_cuda_msg(char *buf, size_t len, int rc, const char *what);
/* The same into t->last_error; returns rc. */
int gy__train_cuda_fail(gy_trainer_t *t, int rc, const char *what);
#endif
/* On cuda: the host parameters and moments onto the device (after a restore); 0 on cpu. */
int gy__train_sync_to_device(gy_trainer_t *t, char *errmsg, size_t errlen);
/* Between the forward and the backward pass: each sample's loss from the token losses tl, the
 * guard's verdicts into t->verdict and t->gkeep; with data parallelism the gang's figures are
 * gathered and judged alike on every rank. 0, or a failed gather (GY_ECOMM, t->last_error). */
int gy__train_guard(gy_trainer_t *t, const float *tl);
/* qsort order of gy_sample_loss_t: highest loss first, then lowest id. */
int gy__train_cmp_loss_desc(const void *a, const void *b);

/* ---- train_reduce.c ---- */
/* The model's tensor-parallel sum of a host buffer over the TP group (ctx: the trainer). */
int gy__train_tp_sum(void *ctx, float *buf, size_t n);
#ifdef GY_HAVE_CUDA_KERNELS
/* The GPU model's tensor-parallel sum of a device buffer (ctx: the trainer). */
int gy__train_tp_sum_cuda(void *ctx, void *buf, size_t n, gy_cuda_dtype_t dt);
#endif
/* Averages the gradients of block `layer` (-1: the tensors outside the blocks) over DP. */
int gy__train_dp_reduce_bucket(gy_trainer_t *t, int layer);
/* The reducer thread's body (arg: the trainer); ends once t->stop is set and the queue empty. */
void *gy__train_reducer_main(void *arg);
/* Backward hook: hands a finished bucket to the reducer thread (ctx: the trainer). */
void gy__train_grads_ready(void *ctx, int layer);
/* Waits until the reducer has finished the step's last bucket; returns its error. */
int gy__train_wait_reducer(gy_trainer_t *t);
/* Ends a step that failed in a collective (aborts the groups, drains the reducer); returns rc. */
int gy__train_comm_failure(gy_trainer_t *t, int rc);
/* Reduces the step's figures (loss sums, token counts, worst and best samples, masked samples
 * and their counts) over DP; total and total_all are the kept and all samples' loss sums. */
int gy__train_reduce_report(gy_trainer_t *t, gy_step_report_t *rep, double *total,
                            double *total_all);
/* With tensor parallelism: the sharded squares and the non-finite flag summed over TP. */
int gy__train_tp_reduce_norms(gy_trainer_t *t, gy_grad_sq_t *sq);

/* ---- train_ckpt.c ---- */
/* On cuda with a snapshot in flight: finishes it (waits for its copies, builds and commits the
 * checkpoint); 0 when there is none. */
int gy__train_settle_snapshot(gy_trainer_t *t, char *errmsg, size_t errlen);

#endif
