/* agent: libgyro-agent, the worker side of gyro's control protocol (proto/gyro.proto) as a small
 * C library with no training code in it. A trainer (gyro-worker first; a PyTorch or llm.c loop
 * could be next) uses it like this:
 *
 *   gy_agent_create(&a, &opts);                  // nothing on the network yet
 *   gy_agent_join(a, &asg, timeout);             // rank, world, config, start step
 *   ... build the trainer with gy_agent_store(a) and asg.rdzv_prefix ...
 *   for (step = asg.start_step; step < total;) {
 *     switch (gy_agent_wait_grant(a, step, &dir)) {
 *     case GY_AGENT_GO:        train step; gy_agent_report(a, &figures); step++; break;
 *     case GY_AGENT_DIRECTIVE: apply dir; gy_agent_ack(a, dir.seq, step, ok, err, bytes);
 *                              if (ROLLBACK applied) step = dir.to_step; break;
 *     case GY_AGENT_REASSIGNED: exit so the process is restarted with the new assignment;
 *     ...
 *   }}
 *   gy_agent_destroy(a);
 *
 * Threads: every function is called from one thread (the trainer's), except
 * gy_agent_interrupt (any thread or a signal handler) and the store, which is used from the
 * collectives' threads. Errors are negative codes from common/err.h; the reason of the last one
 * is in gy_agent_errmsg. */
#ifndef GY_AGENT_H
#define GY_AGENT_H

#include <stddef.h>
#include <stdint.h>

#include "common/kvstore.h"        /* gy_store_t */
#include "policies/guard_policy.h" /* gy_guard_opts_t (a plain value) */
#include "wire/hparams.h"          /* gy_hparams_t, GY_HP_* */

typedef struct gy_agent gy_agent_t;

typedef struct {
  const char *controllers; /* "host:port[,host:port...]": tried in turn while one is down */
  const char *worker_id;   /* unique per process; NULL: "<hostname>:<pid>" */
  int ordinal;             /* preferred rank (a StatefulSet index), -1 for none */
  const char *join_token;  /* NULL or "": none */
  int heartbeat_ms;        /* heartbeat period until an assignment says otherwise (<= 0: 1000) */
  int rpc_timeout_ms;      /* deadline of StoreSet and of each Hello/Join attempt's connection
                              (<= 0: 10000) */
  /* TLS to the controller (all NULL: plaintext): PEM files of the CA the controller's
   * certificate chains to, and of this worker's certificate and key for mutual TLS (both or
   * none); tls_server_name overrides the name checked (NULL: the address's host). The files
   * are read and checked in gy_agent_create (a bad one: GY_EINVAL, the reason logged). */
  const char *tls_ca, *tls_cert, *tls_key, *tls_server_name;
} gy_agent_opts_t;

/* A quarantined region (gyro.QuarantineEntry as the workers need it): tokens [offset, offset +
 * length) of the training shard `file` of channel, never trained on again; released: trained on
 * again (its range is removed). As the controller sent it: not validated. */
typedef struct {
  const char *channel, *file; /* never NULL */
  uint64_t offset, length;
  int released;
} gy_agent_quar_t;

/* What the controller assigned. The strings are owned by the agent and stay valid until it
 * rejoins (inside gy_agent_wait_grant after a lost session) or is destroyed: copy what you
 * keep. */
typedef struct {
  uint64_t generation;
  int rank, world, tp;
  int64_t start_step; /* the step every rank starts from (restore its checkpoint if > 0) */
  int heartbeat_ms;
  /* The hang rule (gyro.Assignment): a step whose own work (outside collectives) lasts longer
   * than max(hang_floor_ms, hang_factor x the recent step time) is hung; the agent's watchdog
   * ends the process at twice that (0: no watchdog). */
  uint32_t hang_floor_ms, hang_factor;
  const char *config_yaml; /* the run config, as text */
  const char *config_dir;  /* relative paths in config_yaml are relative to this folder */
  const char *rdzv_prefix; /* key prefix of this generation's rendezvous ("g<generation>") */
  const char *session_id;
  /* Every sample id the run skips, as nskip pairs [first, last) in skip[2i], skip[2i+1]: add
   * them after restoring start_step (the checkpoint may be older than a skip). */
  const uint64_t *skip;
  int nskip;
  /* The run policy's per-sample guard (has_guard 0: none sent: keep the default); apply it
   * after creating the trainer (gy_trainer_set_guard). */
  int has_guard;
  gy_guard_opts_t guard;
  /* The quarantine in force, in the order to apply it (after restoring start_step): a released
   * entry removes its range, the others add theirs. */
  const gy_agent_quar_t *quar;
  int nquar;
} gy_agent_assignment_t;

/* Directive kinds: the values of gyro.Directive.Kind. */
typedef enum {
  GY_DIRECTIVE_NONE = 0,
  GY_DIRECTIVE_PAUSE = 1,
  GY_DIRECTIVE_RESUME = 2,
  GY_DIRECTIVE_STOP = 3,
  GY_DIRECTIVE_CHECKPOINT = 4,
  GY_DIRECTIVE_SET_HPARAMS = 5,
  GY_DIRECTIVE_ROLLBACK = 6,   /* restore to_step, add the skip ranges, apply hparams, go on */
  GY_DIRECTIVE_QUARANTINE = 7, /* add (or, released, remove) the quar entries' regions */
  GY_DIRECTIVE_SET_GUARD = 8,  /* the per-sample guard's settings become guard */
} gy_directive_kind_t;

/* The hyper-parameters of SET_HPARAMS and ROLLBACK: gyro.HParams as the wire layer's one value
 * (wire/hparams.h, with the presence bits GY_HP_*: 1 << (field number in gyro.HParams - 1)). */
typedef gy_hparams_t gy_agent_hparams_t;

/* A half-open range of sample ids [first, last) (gyro.SkipRange), as the controller sent it:
 * not validated (first >= last is possible; the trainer refuses it). */
typedef struct {
  uint64_t first, last;
} gy_agent_skip_t;

typedef struct {
  uint64_t seq;
  int64_t at_step; /* apply when exactly at_step steps are done */
  gy_directive_kind_t kind;
  gy_agent_hparams_t hparams; /* SET_HPARAMS and ROLLBACK (present == 0: none) */
  /* ROLLBACK only (0, NULL, 0 otherwise). skip and reason are owned by the agent and stay
   * valid until the next gy_agent_wait_grant call or gy_agent_destroy. to_step is as sent
   * (the trainer checks 0 <= to_step <= at_step). */
  int64_t to_step;             /* the step to restore (a committed checkpoint) */
  const gy_agent_skip_t *skip; /* ranges never to train on again, from now on */
  int nskip;
  const char *reason; /* why, for the records; never NULL ("" when none) */
  /* QUARANTINE only (NULL, 0 otherwise): the regions, in order (owned by the agent, valid as
   * skip). SET_GUARD only: the guard's settings. */
  const gy_agent_quar_t *quar;
  int nquar;
  gy_guard_opts_t guard;
} gy_agent_directive_t;

/* Lower-case name of a kind ("pause", "set_hparams", ...); "none" for unknown values. */
const char *gy_directive_kind_name(int kind);

/* One rank's figures of one step (gyro.StepReport). Pointers are borrowed for the call. */
typedef struct {
  const char *name;
  double loss_sum; /* cross-entropy summed over the channel's tokens (kept samples only) */
  uint64_t tokens;
  uint64_t masked; /* samples of the channel the trainer's guard masked out of the loss */
} gy_agent_channel_t;
/* Where a sample's tokens come from (gyro.Provenance). */
typedef struct {
  const char *file; /* the shard it starts in; NULL: unknown (the other fields are ignored) */
  uint64_t offset;  /* token offset of its first token in that file */
  uint32_t length;  /* its tokens */
  int64_t document; /* document ordinal from gyro-prep's index, -1: none */
  uint64_t region_offset, region_length; /* the region quarantined for it, in that file */
} gy_agent_provenance_t;
/* A sample masked out of the loss before the backward pass (gyro.MaskedSample). */
typedef struct {
  uint64_t id;
  const char *channel;
  float loss;
  const char *reason; /* "loss_high", "repeat_high", "nonfinite", ... */
  float median, threshold;
  float entropy, repeat, nontext, highbyte, markup;
  int rank;
  gy_agent_provenance_t where;
} gy_agent_masked_t;
typedef struct {
  uint64_t id;
  const char *channel;
  float loss;
} gy_agent_sample_t;
/* A GPU's health (the fields of the GpuHealth message; has_* 0: unknown). */
typedef struct {
  int index;
  const char *name;
  int has_temp, has_mem, has_util, has_sm_clock, has_throttle, has_ecc, has_xid;
  unsigned temp_c, util_gpu_pct, util_mem_pct, sm_clock_mhz, xid_count;
  uint64_t mem_used_bytes, mem_total_bytes, throttle_reasons, ecc_uncorrected, last_xid;
} gy_agent_gpu_t;
typedef struct {
  int64_t step; /* the step just taken (0-based): steps_done becomes step + 1 */
  double loss;
  const gy_agent_channel_t *channels;
  int nchannels;
  double grad_norm, grad_norm_shallow, grad_norm_deep, update_ratio, lr;
  int nonfinite;
  double step_ms, tokens_per_s;
  double compute_ms; /* step_ms minus the time waited in collectives (0: not measured) */
  const gy_agent_sample_t *top;
  int ntop;
  const gy_agent_sample_t *bottom; /* the best (lowest-loss) samples, lowest first */
  int nbottom;
  const gy_agent_gpu_t *gpu;       /* this rank's GPU health, NULL: none (CPU, or no NVML) */
  int samples;                     /* samples of the step, masked ones included (0: unknown) */
  const gy_agent_masked_t *masked; /* what the guard masked (at most 64 are sent) */
  int nmasked;
  /* has_checkpoint != 0: the checkpoint of step checkpoint_step (steps done when it was taken)
   * is complete on disk on this rank and was not reported before (the controller commits a
   * checkpoint once every rank has reported it). */
  int has_checkpoint;
  int64_t checkpoint_step;
  uint64_t checkpoint_bytes; /* with has_checkpoint: the size of this rank's file */
} gy_agent_report_t;

/* One evaluation of the held-out sets (gyro.EvalReport). Pointers are borrowed for the call. */
typedef struct {
  const char *source;    /* the channel's name */
  double loss, ppl;      /* mean cross-entropy per held-out token (nats), exp(loss) */
  uint64_t tokens;       /* held-out tokens scored */
  double cloze_accuracy; /* share of the cloze items predicted right (cloze_items 0: none) */
  uint32_t cloze_items;
} gy_agent_source_eval_t;
typedef struct {
  int64_t step; /* steps done when evaluated */
  const gy_agent_source_eval_t *sources;
  int nsources;
  /* has_checkpoint != 0: the evaluation is of the parameters of checkpoint checkpoint_step */
  int has_checkpoint;
  int64_t checkpoint_step;
} gy_agent_eval_t;

/* What gy_agent_wait_grant returns (>= 0; errors are negative). */
enum {
  GY_AGENT_GO = 0,          /* the step may run */
  GY_AGENT_DIRECTIVE = 1,   /* apply *dir now (before the step), then gy_agent_ack */
  GY_AGENT_REASSIGNED = 2,  /* after a reconnect the controller assigned a rank, world, tp or
                               start step this process cannot continue with: restart it */
  GY_AGENT_INTERRUPTED = 3, /* gy_agent_interrupt was called */
};

/* Creates an agent; the callee copies opts. No network traffic until gy_agent_join. Returns 0,
 * GY_EINVAL (no controller address, ordinal < -1) or GY_ENOMEM. */
int gy_agent_create(gy_agent_t **out, const gy_agent_opts_t *opts);
/* Closes the session (waiting up to a second for the controller to take what was queued and
 * end it), stops the heartbeat thread, frees everything including the store. NULL is a no-op. */
void gy_agent_destroy(gy_agent_t *a);

/* Joins the gang (unary /gyro.Worker/Join, held by the controller until the gang forms) and
 * opens the session stream (Hello). While no controller answers (UNAVAILABLE) it retries with
 * exponential back-off from 100 ms to 5 s, trying each address in turn. timeout_ms < 0 waits
 * without end. Returns 0 and fills *out; GY_ETIMEDOUT; GY_EINVAL when the controller refuses
 * the request for good (bad join token, duplicate worker id, bad ordinal: the reason is in
 * gy_agent_errmsg); GY_EBUSY if already joined; GY_EPROTO for a malformed assignment. */
int gy_agent_join(gy_agent_t *a, gy_agent_assignment_t *out, int timeout_ms);

/* Blocks until this worker, which has completed `step` steps, may act:
 *  - a directive with at_step == step is pending: returns GY_AGENT_DIRECTIVE with *dir filled
 *    (directives come before the grant of the same step);
 *  - step < horizon of the latest grant: returns GY_AGENT_GO (never past the horizon).
 * While parked it heartbeats (every heartbeat_ms). When the session is lost (controller died)
 * it stays parked and rejoins (back-off as in join) with steps_done = step and the previous
 * generation; if the new assignment keeps rank, world and tp and starts at `step`, it goes on
 * with the new generation transparently; otherwise returns GY_AGENT_REASSIGNED (the new
 * assignment is in gy_agent_assignment). Errors: GY_EINVAL (step is not the number of steps
 * reported; after an acked ROLLBACK that number is its to_step), GY_EINVAL for a refused rejoin
 * (reason in gy_agent_errmsg). The previous directive's skip and reason are freed on entry. */
int gy_agent_wait_grant(gy_agent_t *a, int64_t step, gy_agent_directive_t *dir);

/* Sends a StepReport and records steps_done = rep->step + 1. When the session is down the
 * report is dropped (the controller re-forms from steps_done) and 0 is returned. */
int gy_agent_report(gy_agent_t *a, const gy_agent_report_t *rep);
/* Sends an EvalReport (held-out figures; the engine computes the same on every rank, so one
 * rank sends them). Like a report, it is dropped (0 returned) when the session is down.
 * GY_EINVAL: not joined, or a bad argument (nsources outside 0..1024, NULL arrays). */
int gy_agent_eval(gy_agent_t *a, const gy_agent_eval_t *ev);
/* Marks directive seq applied (a repeated seq is then ignored) and sends a DirectiveAck with
 * `step` (the steps done after applying it). error: NULL or why it failed (ok = 0).
 * ROLLBACK acked with ok != 0 (pass step = to_step): the agent rewinds to steps_done = to_step
 * (the next gy_agent_wait_grant is for to_step; heartbeats say to_step) and parks there until
 * a Grant that arrived after the directive: the controller's next grant covers to_step +
 * window (a grant received between the directive and the ack already counts). Directives
 * still pending then keep their at_step. A failed ROLLBACK (ok = 0) changes nothing.
 * checkpoint_bytes: for a CHECKPOINT or STOP acked ok, the size of this rank's checkpoint file
 * (0 otherwise, or when not known): the controller reports the committed checkpoint's size. */
int gy_agent_ack(gy_agent_t *a, uint64_t seq, int64_t step, int ok, const char *error,
                 uint64_t checkpoint_bytes);

/* The rendezvous store backed by the controller (unary StoreSet/StoreGet; a get waits on the
 * controller's side up to its timeout). Owned by the agent: valid until gy_agent_destroy; do
 * not pass it to gy_store_destroy. Thread-safe. */
gy_store_t *gy_agent_store(gy_agent_t *a);

/* The current assignment (NULL before the first join). Same lifetime as in gy_agent_join. */
const gy_agent_assignment_t *gy_agent_assignment(const gy_agent_t *a);
/* Whether the session stream is up now. */
int gy_agent_connected(gy_agent_t *a);
/* Makes a parked or joining agent return GY_AGENT_INTERRUPTED (join: GY_ETIMEDOUT) within
 * 200 ms. Async-signal-safe: only sets a flag. */
void gy_agent_interrupt(gy_agent_t *a);
/* Reason of the last error ("" if none). */
const char *gy_agent_errmsg(const gy_agent_t *a);

/* A trainer's progress inside a step, as its heartbeats tell the controller: liveness is
 * progress, not the heartbeat thread's beat. A step begins when gy_agent_wait_grant returns
 * GY_AGENT_GO and ends with its gy_agent_report. */
typedef struct {
  int stepping;             /* inside a step */
  int64_t in_step_ms;       /* since it began */
  int64_t own_ms;           /* of which outside collectives: the trainer's own work */
  int64_t in_collective_ms; /* inside a collective now, for this long (0: not) */
} gy_agent_progress_t;

/* The process's time in collectives (any thread may call them): blocked_ns the total so far,
 * in_collective_ns the call in progress (0: none). With them a step's own work excludes the
 * time waiting for peers, so a rank stuck in its own work is told from the ranks waiting for it
 * (NULL: every moment inside a step is the trainer's own). Call before gy_agent_join. */
void gy_agent_set_collective_clock(gy_agent_t *a, int64_t (*blocked_ns)(void),
                                   int64_t (*in_collective_ns)(void));
/* The progress now (from any thread). */
gy_agent_progress_t gy_agent_progress(gy_agent_t *a);

#endif
