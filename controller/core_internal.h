/* core_internal: what the core's files (core.c, core_repair.c, core_journal.c, core_eval.c)
 * share: struct gy_core and the gy__core_* calls between them. Not part of the API. */
#ifndef GY_CONTROLLER_CORE_INTERNAL_H
#define GY_CONTROLLER_CORE_INTERNAL_H

#include "controller/core.h"

#include <stddef.h>
#include <stdint.h>

#include "controller/repair.h"
#include "controller/skipset.h"
#include "controller/straggler.h"
#include "proto/contract.h"

#define TOP_RING 64              /* steps whose top samples are kept until aggregated */
#define TOP_MAX GY_WIRE_TOPK_MAX /* top samples kept per step (proto/contract.h) */

/* Rank 0's top and bottom samples of one step (the engine reduced them over the gang): entries
 * [0, n) are the top (highest loss first), [TOP_MAX, TOP_MAX + nb) the bottom (lowest first). */
typedef struct {
  int64_t step; /* -1: empty */
  int n, nb;
  uint64_t id[2 * TOP_MAX];
  float loss[2 * TOP_MAX];
  char ch[2 * TOP_MAX][GY_FLEET_CH_NAME];
} top_slot_t;

#define MASK_MAX GY_WIRE_MASKED_MAX /* masked samples kept per step (proto/contract.h) */

/* One masked sample of rank 0's report, kept until its step is aggregated. */
typedef struct {
  uint64_t id;
  float loss, median, threshold;
  int rank;
  char ch[GY_FLEET_CH_NAME];
  char reason[GY_QUAR_NAME];
  const char *file; /* interned in the quarantine list's names (NULL: no provenance) */
  uint64_t offset;
  uint32_t length;
  int64_t document;
  uint64_t qoff, qlen; /* the region quarantined for it */
} mask_t;

/* The guard's figures of rank 0's report of one step. */
typedef struct {
  int64_t step; /* -1: empty */
  int samples;
  uint64_t nmasked; /* exact (the channels' counts; else the listed ones) */
  int nch;
  char ch[GY_FLEET_MAX_CH][GY_FLEET_CH_NAME];
  uint64_t ch_masked[GY_FLEET_MAX_CH];
  int n; /* listed */
  mask_t m[MASK_MAX];
} mask_slot_t;

/* The run config's channels, for the operator's quarantine (owned copies). */
typedef struct {
  char name[GY_FLEET_CH_NAME];
  char **files;
  int nfiles;
} core_ch_t;

/* The journal's records that must precede what follows them (see gy__core_journal_must). */
typedef enum { JOURNAL_CKPT, JOURNAL_INTENT, JOURNAL_APPLIED } journal_op_t;

/* How far the head of the action queue got: not started, fenced (the fence, when due, said
 * this controller leads), waiting for its must-write, written (or given up): it resumes after
 * the write. */
typedef enum { HEAD_NEW, HEAD_FENCED, HEAD_WRITING, HEAD_WRITTEN } head_state_t;

struct gy_core {
  gy_core_opts_t o; /* policy and skip not kept (copied into the run and in_force) */
  gy_io_t io;
  gy_fleet_t *fleet;
  gy_run_t *run;
  gy_repair_t *repair; /* the coordination of the run's repairs with the fleet (repair.h) */
  char errmsg[256];
  /* The action queue: the fleet's actions copied out, carried out in order from ahead; the
   * head waits (waiting) for the io when it needs the fence's answer or a must-write. */
  gy_fleet_action_t *abuf;
  size_t capabuf, nabuf, ahead;
  int head_state; /* head_state_t: how far the head action got */
  int waiting;    /* the head waits for the io (fenced or journaled resumes it) */
  int draining;
  int done_fired;
  gy_run_action_t *rbuf; /* run actions being carried out */
  size_t caprbuf;
  int run_draining;
  top_slot_t *tops;     /* rank 0's top samples of the last TOP_RING steps, by step % TOP_RING */
  gy_run_value_t *vals; /* the values of one step: losses, norms, then tokens/s per rank */
  char (*tps_names)[GY_DETECT_NAME_MAX]; /* "tokens_per_s/<rank>", per rank */
  gy_skipset_t in_force; /* every id the workers skip: data.skip + every applied rollback's */
  gy_skipset_t sent;     /* the ranges of the applied rollbacks (resent to a re-formed gang) */
  uint64_t fleet_dropped, run_dropped; /* outputs the pure machines dropped (OOM), as told */
  uint64_t journaled_seq;              /* the newest rollback whose intent is in the journal */
  int64_t fence_ok_ms;  /* when the fence last said this controller leads (io->mono_ms) */
  int recovered_done;   /* the journal says the run finished */
  int journaled_hold;   /* what the journal's hold key says now (-1: unknown) */
  gy_ckeval_t *ckevals; /* GY_CORE_CKEVAL_MAX entries (allocated at the first), by step */
  int nckevals;
  uint64_t moves[GY_REPAIR_NSTATES][GY_REPAIR_NSTATES]; /* the coordinator's, counted */
  gy_straggler_t *straggler; /* the compute-time straggler rule (straggler.h) */
  double *compute;           /* world entries: each rank's compute time, for one step */
  /* the guard and the quarantine (core_guard.c) */
  mask_slot_t *masks; /* rank 0's guard figures of the last TOP_RING steps (allocated at the
                         first), by step % TOP_RING */
  gy_quar_t *quar;    /* the quarantine list */
  core_ch_t *chans;   /* the run config's channels (nchans; 0: unknown) */
  int nchans;
};

/* core.c */
int64_t gy__core_now(gy_core_t *c);
void gy__core_event(gy_core_t *c, gy_event_kind_t kind, int64_t step, const char *msg);
void gy__core_eventf(gy_core_t *c, gy_event_kind_t kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* core_repair.c: the closed loop between the run and the fleet. */
void gy__core_run_drain(gy_core_t *c);
void gy__core_run_refused(gy_core_t *c, const char *what, int rc);
void gy__core_gang_formed(gy_core_t *c, uint64_t generation, int64_t start);
void gy__core_step(gy_core_t *c, int64_t step);
int gy__core_rolled_back(gy_core_t *c, uint64_t seq, int64_t to_step, int ok, int resumed);
void gy__core_operator(gy_core_t *c, int kind, uint64_t seq, int64_t to_step);

/* core_journal.c: the journal's records. */
int gy__core_journal_must(gy_core_t *c, const char *what, journal_op_t op, int64_t step,
                          uint64_t arg, const gy_fleet_action_t *a);
void gy__core_journal_best(gy_core_t *c, gy_jrec_t *r);
gy_jrec_t *gy__core_jrec(gy_core_t *c, gy_jrec_kind_t kind, const char *what);
int gy__core_fence_submit(gy_core_t *c);
void gy__core_journal_hold(gy_core_t *c);

/* core_guard.c: the workers' guard and the quarantine list. */
void gy__core_keep_guard(gy_core_t *c, const gy_fleet_report_t *in, const gy_core_guard_t *g);
void gy__core_guard_step(gy_core_t *c, int64_t step, gy_run_step_t *in, uint64_t *ids);
void gy__core_guard_policy(gy_core_t *c, const gy_guard_opts_t *before);
int gy__core_quar_recover(gy_core_t *c, const gy_journal_state_t *st);
void gy__core_quar_publish(gy_core_t *c);
void gy__core_assign(gy_core_t *c, const gy_fleet_action_t *a);
int gy__core_channels(gy_core_t *c, const gy_core_channel_t *ch, int n);
void gy__core_channels_free(gy_core_t *c);

/* core_eval.c: held-out evaluations, rank 0's top samples. */
void gy__core_ckeval_journal(gy_core_t *c, int64_t step);
void gy__core_ckeval_from_json(gy_core_t *c, int64_t step, const char *text);
void gy__core_keep_top(gy_core_t *c, int64_t step, const gy_core_sample_t *top, size_t ntop,
                       const gy_core_sample_t *bottom, size_t nbottom);
void gy__core_ckeval_truncate(gy_core_t *c, int64_t to_step);

#endif
