/* directive: what a controller's directive does to the trainer in gyro-worker's supervised mode
 * (checkpoint, stop, hyper-parameters, rollback, pause, resume, quarantine, guard settings),
 * applied between two steps and acknowledged. The agent is reached through gy_directive_agent_t, so
 * tests drive the module with a scripted agent; gyro-worker passes libgyro-agent's functions. */
#ifndef GY_DIRECTIVE_H
#define GY_DIRECTIVE_H

#include <stdint.h>

#include "agent/agent.h"
#include "config/run_config.h"
#include "worker/train.h"

/* What applying a directive needs from the agent. Both are called on the caller's thread,
 * during gy_directive_apply; ctx is passed back as is. */
typedef struct {
  void *ctx;
  /* Acknowledges directive seq (gy_agent_ack): step = the steps done after applying it,
   * error = NULL or why it failed (ok = 0), checkpoint_bytes = the size of this rank's
   * checkpoint file for a CHECKPOINT or STOP (0 otherwise). Its return value is not used. */
  int (*ack)(void *ctx, uint64_t seq, int64_t step, int ok, const char *error,
             uint64_t checkpoint_bytes);
  /* The checkpoint of `step` (just written for a directive) was evaluated: record and report
   * the figures (ev is borrowed for the call). */
  void (*eval)(void *ctx, int64_t step, const gy_eval_report_t *ev);
} gy_directive_agent_t;

/* The present fields of h over *k. wsd_decay_now: the schedule becomes WSD decaying linearly
 * from the learning rate it had at `from` (no jump up when it was cosine) to the same floor
 * over the steps left of the run's `steps` (none when from >= steps). Absent fields keep their
 * value; nothing is range-checked here. */
void gy_directive_merge_hparams(gy_knobs_t *k, const gy_agent_hparams_t *h, int64_t from,
                                int64_t steps);

/* Applies quarantine entries, in order (an assignment's list, or a QUARANTINE directive's), to
 * the trainer: each entry's file is found among its channel's shards (the same path; else one is
 * the other's tail at a '/'; else the only shard of that base name), its token range is clipped
 * to the file and converted to the channel's stream (gy_data_stream_offset), and added to the
 * quarantine (released: removed). An entry naming a channel or file this worker does not have,
 * or an offset past its file's end, is logged (what names the source) and skipped. Returns the
 * number applied, or GY_ENOMEM. */
int gy_directive_quarantine(gy_trainer_t *tr, const gy_agent_quar_t *q, int n, const char *what);

/* Applies one directive between two steps, prints its record on stdout and acknowledges it
 * through ag (ROLLBACK: with step = to_step, and the trainer is then at to_step). steps: the
 * run's steps; cfg: the run config (eval.every and checkpoint.every decide whether a
 * directive's checkpoint is evaluated too). Returns 1 when the worker must stop (STOP), 0 to go
 * on (also after a refused SET_HPARAMS or a refused ROLLBACK, which change nothing), or a
 * negative error (reason acknowledged and logged) when the worker must stop: a failed
 * checkpoint, or a rollback that failed half way. */
int gy_directive_apply(const gy_directive_agent_t *ag, gy_trainer_t *tr,
                       const gy_agent_directive_t *dir, int64_t steps, const gy_run_config_t *cfg);

#endif
