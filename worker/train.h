/* train: the training engine of a worker. One step = build the batch, forward, backward,
 * AdamW; plus evaluation, knobs, skip lists and checkpoints. No network in here. */
#ifndef GY_TRAIN_H
#define GY_TRAIN_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/gpt.h"
#include "kernels/optim.h"
#include "config/run_config.h"
#include "proto/contract.h"
#include "worker/data.h"
#include "worker/guard.h"

#define GY_TOPK_MAX GY_WIRE_TOPK_MAX /* proto/contract.h: what a StepReport carries */

typedef struct {
  uint64_t id;
  int channel;
  float loss; /* mean cross-entropy over the sample's tokens */
} gy_sample_loss_t;

/* The most masked samples a step report lists (the gang's, in rank order); the counts per
 * channel are exact beyond it. */
#define GY_MASKED_MAX GY_WIRE_MASKED_MAX

/* A sample the guard masked out of the loss before the backward pass. */
typedef struct {
  uint64_t id;
  int channel;
  int rank;                    /* the data-parallel rank that drew it */
  float stats[GY_GSTAT_COUNT]; /* its loss (nats) and content statistics */
  gy_guard_verdict_t verdict;  /* which rule fired, against which median and threshold */
  uint64_t index;              /* the channel's sample index whose tokens it held */
  /* the region quarantined for it (channel stream tokens [q_first, q_last)), the document when
   * gyro-prep's index names one (-1: none), and whether the region was new */
  uint64_t q_first, q_last;
  int64_t document;
  int q_new;
} gy_masked_sample_t;

/* What one step produced: sums and counts per channel so ranks aggregate exactly; in a
 * data-parallel gang they are already summed over the gang, and `top` is the gang's worst. */
typedef struct {
  int64_t step;                        /* the step just taken (0-based) */
  double loss;                         /* mean cross-entropy over all tokens of the step */
  double ch_loss_sum[GY_MAX_CHANNELS]; /* cross-entropy summed per channel */
  uint64_t ch_tokens[GY_MAX_CHANNELS];
  gy_step_stats_t opt; /* grad norms, lr, non-finite, update ratio */
  double step_ms;
  double tokens_per_s;
  int ntop;
  gy_sample_loss_t top[GY_TOPK_MAX];    /* worst samples, highest loss first */
  int nbottom;                          /* as many as ntop */
  gy_sample_loss_t bottom[GY_TOPK_MAX]; /* best samples, lowest loss first (a drop's suspects) */
  /* The guard. The figures above count only the kept samples (a masked sample is not trained,
   * so it is not in the step's loss either); top and bottom are kept samples. */
  int samples;                         /* samples of the step (the gang's), masked included */
  uint64_t ch_masked[GY_MAX_CHANNELS]; /* masked samples per channel */
  int nmasked;                         /* listed in masked (at most GY_MASKED_MAX) */
  gy_masked_sample_t masked[GY_MASKED_MAX];
} gy_step_report_t;

/* Cloze items: the last GY_CLOZE_TOKENS positions of every held-out sequence (all of them when
 * the sequence is shorter). An item is right when the model's most likely next token (argmax of
 * the logits over the real vocabulary; the lowest token among equal maxima) is the held-out one. */
#define GY_CLOZE_TOKENS 32

typedef struct {
  int nchannels;
  double val_loss[GY_MAX_CHANNELS]; /* mean token NLL on the held-out set (NaN if none) */
  double ppl[GY_MAX_CHANNELS];      /* exp(val_loss) */
  double unigram[GY_MAX_CHANNELS];  /* unigram entropy (nats) of the channel: the baseline */
  uint64_t tokens[GY_MAX_CHANNELS]; /* held-out tokens scored */
  double cloze[GY_MAX_CHANNELS];    /* cloze accuracy: right / items (NaN when no item) */
  uint64_t cloze_right[GY_MAX_CHANNELS];
  uint64_t cloze_items[GY_MAX_CHANNELS];
} gy_eval_report_t;

typedef struct gy_trainer gy_trainer_t;

/* Parallel layout of one worker process. Ranks are tp-major (worker/comm.h): ranks
 * {k*tp, ..., k*tp + tp - 1} form tensor-parallel group k; ranks with the same rank % tp form
 * a data-parallel group. train.batch is per data-parallel rank. */
typedef struct {
  int rank, world, tp;    /* world = dp * tp; world 1 = a single process */
  const char *rdzv;       /* rendezvous store, "file:DIR" (a fresh folder per launch) */
  const char *backend;    /* "gloo" (default) or "nccl" */
  int timeout_ms;         /* a dead or hung peer fails a collective after this (default 30000) */
  int no_overlap;         /* 1: reduce data-parallel gradients after the backward pass */
  struct gy_store *store; /* a rendezvous store to use instead of rdzv (borrowed; e.g. the
                             controller's, through libgyro-agent); must outlive the trainer */
  const char *prefix;     /* key prefix of this gang generation (default "gyro") */
} gy_parallel_t;

/* Builds the model (initialised from seed or from cfg->init_from), optimizer and data.
 * The callee copies what it keeps of cfg. */
int gy_trainer_create(gy_trainer_t **out, const gy_run_config_t *cfg, char *errmsg, size_t errlen);
/* The same for one rank of a data- and tensor-parallel gang: connects the collectives through
 * the rendezvous store (every rank must call it). Step reports then carry figures for the whole
 * global batch (identical on every rank). A failed collective makes a step return GY_ECOMM with
 * the reason in errmsg of gy_trainer_last_error; the gang must then be rebuilt. */
int gy_trainer_create_parallel(gy_trainer_t **out, const gy_run_config_t *cfg,
                               const gy_parallel_t *par, char *errmsg, size_t errlen);
/* Description of the last step or eval error ("" if none). */
const char *gy_trainer_last_error(const gy_trainer_t *t);
void gy_trainer_destroy(gy_trainer_t *t);

/* Takes one step. Returns 0 (a non-finite gradient is reported, not an error). */
int gy_trainer_step(gy_trainer_t *t, gy_step_report_t *rep);
/* Held-out loss, perplexity and cloze accuracy per channel. Collective: every rank of the gang
 * must call it at the same point. The held-out sequences are shared out over the data-parallel
 * group (sequence i on data-parallel rank i % dp) and the sums reduced, so every rank gets the
 * same figures; a fixed layout gives the same figures every time. */
int gy_trainer_eval(gy_trainer_t *t, gy_eval_report_t *rep);
int64_t gy_trainer_step_count(const gy_trainer_t *t); /* steps completed */
int gy_trainer_seq_len(const gy_trainer_t *t);        /* T: a sample is T + 1 tokens */

/* The run-time knobs: read them, or change any of them between two steps (validated; on error
 * nothing changes). */
void gy_trainer_knobs(const gy_trainer_t *t, gy_knobs_t *out);
int gy_trainer_set_knobs(gy_trainer_t *t, const gy_knobs_t *k, char *errmsg, size_t errlen);
/* This rank's samples of the last step: B entries of (id, channel, the channel's sample index
 * whose tokens it held, kept by the guard, its figures: loss and content statistics). Valid
 * until the next step. */
int gy_trainer_last_batch(const gy_trainer_t *t, const uint64_t **ids, const int **channels,
                          const uint64_t **index, const uint8_t **kept,
                          const float (**stats)[GY_GSTAT_COUNT]);

/* The guard's options (from the run's policy; the default until set). Validated; the recent
 * figures are kept. */
int gy_trainer_set_guard(gy_trainer_t *t, const gy_guard_opts_t *o, char *errmsg, size_t errlen);
const gy_guard_opts_t *gy_trainer_guard(const gy_trainer_t *t);

/* Quarantine by content (worker/data.h): ranges of a channel's token stream never trained on
 * again; a sample that overlaps one is replaced by the next of its channel's order (the step
 * after a masked sample quarantines its region on every rank alike). The set survives a restore
 * (a checkpoint's set is added to it), except what was removed since: remove (the operator's
 * release) is remembered, and a restore takes those ranges out of the checkpoint's set; add (or
 * the guard masking a sample there again) forgets the release. add: 1 grew, 0 held already;
 * remove: 1 changed. */
int gy_trainer_quarantine_add(gy_trainer_t *t, int channel, uint64_t first, uint64_t last);
int gy_trainer_quarantine_remove(gy_trainer_t *t, int channel, uint64_t first, uint64_t last);
const gy_quarantine_t *gy_trainer_quarantined(const gy_trainer_t *t);

/* Adds [first, last) to the skip list (applies from the next step). */
int gy_trainer_skip(gy_trainer_t *t, uint64_t first, uint64_t last);
const gy_skiplist_t *gy_trainer_skiplist(const gy_trainer_t *t);

/* Checkpoints. snapshot: serialize the full state now (kept in the in-memory ring) and queue it
 * for writing to the checkpoint folder in the background. */
int gy_trainer_checkpoint(gy_trainer_t *t, char *errmsg, size_t errlen);
/* Waits for background writes. */
int gy_trainer_flush(gy_trainer_t *t, char *errmsg, size_t errlen);
/* Steps of the checkpoints complete on disk that no earlier call returned, oldest first (at most
 * max into steps; the rest stay for the next call). Looks only while no write is pending (it
 * never waits): returns their number (0 while writes are pending), or the error of a failed
 * write (file named in errmsg). At most the last 64 unreturned ones are remembered. */
int gy_trainer_ckpt_written(gy_trainer_t *t, int64_t *steps, uint64_t *bytes, int max, char *errmsg,
                            size_t errlen);
/* A rollback to `step` abandoned the steps after it: waits for pending writes, drops the
 * snapshots of later steps from the in-memory ring, deletes this rank's checkpoint files of
 * later steps in the checkpoint folder and forgets their unreturned completions. Returns 0, or
 * the error of a failed earlier write or of a file that cannot be removed (the rest is done). */
int gy_trainer_forget_after(gy_trainer_t *t, int64_t step, char *errmsg, size_t errlen);
/* Restores the state of `step` from the in-memory ring if it holds it, else from its file.
 * A corrupt or mismatched checkpoint is refused with the file and blob named; state unchanged. */
int gy_trainer_restore(gy_trainer_t *t, int64_t step, char *errmsg, size_t errlen);
/* 1 when the in-memory ring holds the snapshot of step (a restore needs no disk), else 0. */
int gy_trainer_in_memory(const gy_trainer_t *t, int64_t step);
/* Restores from an explicit file. */
int gy_trainer_restore_file(gy_trainer_t *t, const char *path, char *errmsg, size_t errlen);
/* Path of the checkpoint file of step (into buf). */
void gy_trainer_ckpt_path(const gy_trainer_t *t, int64_t step, char *buf, size_t len);

gy_gpt_t *gy_trainer_model(gy_trainer_t *t);
gy_data_t *gy_trainer_data(gy_trainer_t *t);

#endif
