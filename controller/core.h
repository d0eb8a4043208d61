/* core: the controller's decisions without its I/O — the fleet (controller/fleet.h), the run
 * state machine (controller/run.h), the repair coordinator between them (controller/repair.h)
 * and the journal's write-ahead order — driven one input at a time, acting on the world only
 * through an io table (controller/io.h). The service (controller/service.h) decodes gRPC
 * messages into these inputs and implements the io with streams, the writer's thread and a
 * libuv timer; the fixture test (tests/unit/test_core_fixture.c) implements it with a
 * deterministic stub and scripted workers, no sockets.
 *
 * Usage: gy_core_create; gy_core_recover (a journal that holds the run: before any other
 * input); gy_core_start (the tick); then any input, each followed by gy_core_drain(), which
 * carries out the fleet's actions in order (a must-write or the fence holds the queue until
 * gy_core_journaled / gy_core_fenced answers). Errors are negative gy_err_t codes; inputs that
 * fail say why in gy_core_errmsg(). Everything runs on one thread. */
#ifndef GY_CONTROLLER_CORE_H
#define GY_CONTROLLER_CORE_H

#include <stddef.h>
#include <stdint.h>

#include "controller/alert.h"
#include "controller/fleet.h"
#include "controller/io.h"
#include "controller/journal.h"
#include "controller/quarantine.h"
#include "controller/repair.h"
#include "controller/run.h"
#include "controller/skipset.h"
#include "controller/telemetry.h"
#include "policies/policy.h"

/* One data channel of the run config: its name and training shards (what an operator's
 * quarantine may name). */
typedef struct {
  const char *name;
  const char *const *files;
  int nfiles;
} gy_core_channel_t;

typedef struct {
  int world, tp, window, lost_after_ms;
  int hang_floor_ms, hang_factor; /* the hang rule (gy_fleet_opts_t; 0: off) */
  int reform_alert_ms;            /* a gang not re-formed within this is told (0: never) */
  int64_t steps;
  uint64_t seed;             /* the fleet's session ids */
  const gy_policy_t *policy; /* copied; NULL: gy_policy_default() */
  int batch;                 /* train.batch (0: unknown: a step window cannot be skipped) */
  float base_lr_scale, base_grad_clip, base_eps; /* the factors' bases (0: unknown) */
  const gy_fleet_skip_t *skip;                   /* data.skip (copied) */
  int nskip;
  int journal; /* 1: journal records are written (io->journal) */
  int fence;   /* 1: every action is fenced (io->fence), at most every fence_every_ms */
  int fence_every_ms;
  gy_telemetry_t *telemetry; /* borrowed, may be NULL */
  /* The run config's data channels (copied; none: unknown, any channel and file is taken) and
   * the quarantine list's bound (0: GY_QUAR_MAX_DEFAULT). */
  const gy_core_channel_t *channels;
  int nchannels;
  size_t quarantine_max;
} gy_core_opts_t;

typedef struct gy_core gy_core_t;

/* A held-out evaluation of one source, and one evaluation (of a checkpoint when kept). */
#define GY_CORE_CKEVAL_MAX 512 /* checkpoint evaluations kept (the oldest steps go first) */
typedef struct {
  char name[GY_FLEET_CH_NAME];
  double loss, ppl, cloze;
  uint64_t tokens;
  uint32_t items;
} gy_srceval_t;
typedef struct gy_ckeval {
  int64_t step;
  int n;
  gy_srceval_t src[GY_FLEET_MAX_CH];
} gy_ckeval_t;

/* An EvalReport's figures (checked by gy_core_eval). */
typedef struct {
  uint64_t generation;
  int rank;
  int64_t step;
  int has_checkpoint;
  int64_t checkpoint_step;
  size_t nsources;
  const char *const *source; /* nsources names */
  const double *loss, *ppl, *cloze;
  const uint64_t *tokens, *items;
} gy_core_eval_in_t;

/* Rank 0's top and bottom samples of one step (a StepReport's). */
typedef struct {
  uint64_t id;
  float loss;
  const char *channel; /* may be NULL */
} gy_core_sample_t;

/* A sample the workers' guard masked (gyro.MaskedSample, rank 0's report: the gang's list).
 * Strings borrowed for the call. */
typedef struct {
  uint64_t id;
  const char *channel, *reason;
  float loss, median, threshold;
  int rank;
  const char *file; /* where its tokens come from; NULL: not known (the rest is ignored) */
  uint64_t offset;
  uint32_t length;
  int64_t document;                      /* -1: none */
  uint64_t region_offset, region_length; /* the region quarantined for it, in file */
} gy_core_masked_t;

/* The guard's part of rank 0's StepReport. */
typedef struct {
  int samples;                    /* the step's samples, masked ones included (0: unknown) */
  const uint64_t *ch_masked;      /* per channel of the report (its nch entries): masked, exact */
  const gy_core_masked_t *masked; /* those listed (at most GY_WIRE_MASKED_MAX are kept) */
  size_t nmasked;
} gy_core_guard_t;

/* An operator's change to the quarantine list (gyroctl quarantine add / release). */
typedef struct {
  const char *channel, *file;
  uint64_t offset, length;
  const char *reason; /* NULL or "": "operator" */
} gy_core_quar_region_t;
typedef enum { GY_CORE_QUAR_ADD = 1, GY_CORE_QUAR_RELEASE = 2 } gy_core_quar_op_t;
typedef struct {
  gy_core_quar_op_t op;
  const gy_core_quar_region_t *add; /* ADD */
  size_t nadd;
  const uint64_t *release; /* RELEASE: entry ids */
  size_t nrelease;
} gy_core_quar_cmd_t;
#define GY_CORE_QUAR_CMD_MAX 1024 /* regions or ids in one change */

/* An operator's Command. */
typedef struct {
  int kind; /* gy_fleet_dir_kind_t */
  gy_fleet_hparams_t hp;
  int64_t to_step;
  int newest;                               /* ROLLBACK: to the newest committed checkpoint */
  const gy_fleet_skip_t *skip, *skip_steps; /* sample id ranges, step ranges */
  size_t nskip, nskip_steps;
  const char *reason; /* NULL: "operator rollback" / "operator skip" */
} gy_core_cmd_t;

/* Creates the core (fleet, run, coordinator) on io (copied; io->ud borrowed). The callee
 * copies opts. GY_EINVAL with errmsg (bad options, a policy that fails gy_policy_check),
 * GY_ENOMEM. */
int gy_core_create(gy_core_t **out, const gy_core_opts_t *opts, const gy_io_t *io, char *errmsg,
                   size_t errlen);
void gy_core_destroy(gy_core_t *c); /* NULL is a no-op */

/* What a journal said at load (a restart, or a standby taking over): skips in force, the
 * committed checkpoints (the gang re-forms from the newest clean one), baselines, the repair
 * history, generation and directive numbers, the hold; a rollback committed but not confirmed
 * is completed. An event says so. Before any other input. */
int gy_core_recover(gy_core_t *c, const gy_journal_state_t *st, const char *prefix, char *errmsg,
                    size_t errlen);
/* Starts the liveness tick (io->timer). */
int gy_core_start(gy_core_t *c, int64_t tick_ms);

/* ---- inputs (follow each with gy_core_drain) ---- */
int gy_core_join(gy_core_t *c, const gy_fleet_join_t *in, uint64_t handle);
/* The held join `handle` was given up by its caller: it leaves the forming gang. */
void gy_core_join_cancel(gy_core_t *c, uint64_t handle);
int gy_core_hello(gy_core_t *c, const char *session_id, uint64_t generation, int rank);
/* A step report of rank; top/bottom: rank 0's samples (others: none); guard: rank 0's guard
 * figures (NULL: none). The masked samples of a step are told (telemetry, an event, quarantine
 * entries) and weighed (the masked share) when the step is aggregated. */
int gy_core_report(gy_core_t *c, int rank, const gy_fleet_report_t *in, const gy_core_sample_t *top,
                   size_t ntop, const gy_core_sample_t *bottom, size_t nbottom,
                   const gy_core_guard_t *guard);
int gy_core_heartbeat(gy_core_t *c, int rank, uint64_t generation, int claimed_rank);
/* What an accepted heartbeat says of rank's progress (the hang rule's input). */
void gy_core_progress(gy_core_t *c, int rank, const gy_fleet_progress_t *p);
int gy_core_ack(gy_core_t *c, int rank, uint64_t generation, uint64_t seq, int claimed_rank, int ok,
                const char *error, uint64_t checkpoint_bytes);
/* An EvalReport on rank's session. GY_EMISMATCH (an older generation's: the session ends
 * quietly), GY_EINVAL (bad figures): why says which. */
int gy_core_eval(gy_core_t *c, int rank, const gy_core_eval_in_t *e, char *why, size_t len);
void gy_core_session_closed(gy_core_t *c, int rank);
void gy_core_tick(gy_core_t *c);
/* An operator command: *seq and *at as the fleet queued it. Refusals: GY_EINVAL (bad ranges),
 * GY_ENOTSUP (not now: why), GY_ENOMEM, or the fleet's (why = its message). */
int gy_core_command(gy_core_t *c, const gy_core_cmd_t *cmd, uint64_t *seq, int64_t *at, char *why,
                    size_t wlen);
/* Replaces the repair policy (checked): 0, or GY_EINVAL with gy_core_errmsg. When its guard
 * settings changed they go to the workers as a SET_GUARD directive (or, with no gang now, in
 * the next assignment); an event says which. */
int gy_core_set_policy(gy_core_t *c, const gy_policy_t *p);
/* The operator changes the quarantine list: regions added (merged with the entries they
 * overlap) or entries released; every change is journaled, told by an event and sent to the
 * workers as one QUARANTINE directive (*seq, *at: 0 when no gang can take one now: the next
 * assignment carries the list). ids (room for cmd's count) gets the entry of each region or id
 * in order, *nids how many. Nothing changes on a refusal: GY_EINVAL (an unknown channel or file,
 * an empty range, an unknown id, a bad count: why says which), GY_ENOSPC (the list is full),
 * GY_ENOMEM. */
int gy_core_quarantine(gy_core_t *c, const gy_core_quar_cmd_t *cmd, uint64_t *ids, size_t *nids,
                       uint64_t *seq, int64_t *at, char *why, size_t wlen);
/* Completions of io->journal (records with notify) and io->fence (rc 0: this controller
 * leads). */
void gy_core_journaled(gy_core_t *c, const gy_jrec_t *rec, const gy_io_result_t *r);
void gy_core_fenced(gy_core_t *c, int rc);
/* Carries out the fleet's (and so the run's and the coordinator's) actions in order, until
 * there are none or the head waits for the store. */
void gy_core_drain(gy_core_t *c);

/* ---- state ---- */
const gy_fleet_t *gy_core_fleet(const gy_core_t *c);
const gy_run_t *gy_core_run(const gy_core_t *c);
const gy_repair_t *gy_core_repair(const gy_core_t *c);
const gy_skipset_t *gy_core_in_force(const gy_core_t *c); /* every id the workers skip */
const gy_quar_t *gy_core_quar(const gy_core_t *c);        /* the quarantine list */
int gy_core_waiting(const gy_core_t *c); /* 1: the head action waits for the store */
int gy_core_recovered_done(const gy_core_t *c);
/* The kept evaluation of checkpoint step, or NULL. */
const gy_ckeval_t *gy_core_ckeval(const gy_core_t *c, int64_t step);
/* e as JSON {"step", "sources": [...]} (new reference; NULL when out of memory). */
struct json_t *gy_core_ckeval_json(const gy_ckeval_t *e);
/* Every move of the repair coordinator so far, counted by (from, to): for tests. */
uint64_t gy_core_repair_moves(const gy_core_t *c, int from, int to);
const char *gy_core_errmsg(const gy_core_t *c);

#endif
