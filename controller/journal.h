/* journal: the run's durable record in the state store (controller/store.h): what a controller
 * that restarts, or a standby that takes over, needs to go on without a human. Per-step
 * telemetry never goes here: only decisions, events, checkpoint manifests and skip lists.
 *
 * Keys, under /gyro/<run>/ (values are JSON objects):
 *   events/<id, 16 digits>       {"id", "time", "step", "kind", "text"}: the audit log
 *   checkpoints/<step, 16 digits> {"step", "clean"[, "eval"]}: committed manifests, with the
 *                                held-out figures of the checkpoint's parameters when known
 *   skips                        {"ranges": [[first, last], ...]}: every id the run skips
 *   intent/<seq, 16 digits>      {"seq", "kind", "at_step", "to_step", "skip", "reason"}: a
 *                                directive committed before it is sent (write-ahead), deleted
 *                                in the same transaction that records its effect
 *   state                        {"generation", "seq", "rollbacks"}
 *   done                         {"steps"}: the run finished
 *   hold                         {"state": "PAUSED"|"HALTED", "why"}: held for a human
 *   run                          the run's snapshot (controller/run.h gy_run_save) written with
 *                                each intent: the repair history an escalation counts
 *   baselines/<step, 16 digits>  the run's snapshot at a committed checkpoint: the detectors'
 *                                baselines (the newest 8)
 *   quarantine/<id, 16 digits>   a quarantine entry (controller/quarantine.h gy_quar_to_json:
 *                                channel, file, range, reason, first step, released, revision),
 *                                written again at each change
 *
 * Every call is synchronous with the store's deadline and retries (an etcd endpoint list fails
 * over inside the store). Writes that must precede an action (intent, applied) return the
 * store's error so the caller can hold the action; events that fail to be written are queued
 * in memory (bounded) and written before the next write. */
#ifndef GY_JOURNAL_H
#define GY_JOURNAL_H

#include <stddef.h>
#include <stdint.h>

#include "controller/fleet.h"
#include "controller/store.h"

typedef struct gy_journal gy_journal_t;

typedef struct {
  uint64_t id;
  double time;
  int64_t step;
  char kind[32];
  char text[512];
} gy_journal_event_t;

typedef struct {
  int64_t step;
  int clean;
  char *eval; /* the manifest's "eval" object as JSON text (gy_malloc), NULL when none */
} gy_journal_ckpt_t;

typedef struct {
  uint64_t seq;
  int kind; /* gy_dir_kind_t */
  int64_t at_step, to_step;
  gy_fleet_skip_t *skip;
  int nskip;
  char reason[GY_FLEET_REASON_MAX];
} gy_journal_intent_t;

/* What load() found. Arrays are from gy_malloc (common/alloc.h): gy_journal_state_free. */
typedef struct {
  int found;                  /* 1: the run has a record (a restart, not a first start) */
  gy_journal_event_t *events; /* the newest ones, oldest first */
  size_t nevents;
  uint64_t last_event_id;
  gy_journal_ckpt_t *ckpts; /* committed checkpoints, oldest first */
  size_t nckpts;
  gy_fleet_skip_t *skips; /* sorted ranges */
  size_t nskips;
  gy_journal_intent_t *intents; /* directives committed but not confirmed, by seq */
  size_t nintents;
  uint64_t generation, last_seq;
  int64_t rollbacks;
  int done; /* the run finished */
  int hold; /* 1 paused, 2 halted, 0 neither */
  char hold_why[256];
  char *run_snapshot;  /* the newest intent's gy_run_save text (repairs), or NULL */
  int64_t *base_steps; /* checkpoints with baselines, and their texts */
  char **base_texts;
  size_t nbase;
  char **quar_texts; /* the quarantine entries' records (gy_quar_from_json), by id */
  size_t nquar;
} gy_journal_state_t;

/* Opens the journal of run (name: [A-Za-z0-9._-], 1..100 chars) on store (borrowed: it must
 * outlive the journal). GY_EINVAL for a bad name. */
int gy_journal_open(gy_journal_t **out, gy_cstore_t *store, const char *run, char *errmsg,
                    size_t errlen);
void gy_journal_close(gy_journal_t *j); /* NULL is a no-op */
/* The key prefix ("/gyro/<run>/"). */
const char *gy_journal_prefix(const gy_journal_t *j);

/* Reads the run's record; keeps at most max_events of the newest events. 0, the store's error,
 * or GY_ENOMEM; on failure *st is empty (nothing to free) and nothing was half loaded: a value
 * that does not parse is skipped, but out of memory fails the whole load. */
int gy_journal_load(gy_journal_t *j, gy_journal_state_t *st, size_t max_events, char *errmsg,
                    size_t errlen);
void gy_journal_state_free(gy_journal_state_t *st);

/* An event (queued in memory when the store fails; 0 then, the next write flushes it). */
int gy_journal_event(gy_journal_t *j, uint64_t id, double time, int64_t step, const char *kind,
                     const char *text);
/* A committed checkpoint manifest. */
int gy_journal_checkpoint(gy_journal_t *j, int64_t step, int clean, char *errmsg, size_t errlen);
/* Adds (or replaces) the "eval" object of the committed manifest of checkpoint step:
 * eval_json is a JSON object (the held-out figures of that checkpoint's parameters; the
 * controller writes {"step", "sources": [{"source", "loss", "ppl", "tokens", "cloze_accuracy",
 * "cloze_items"}...]}). GY_ENOENT when no manifest of that step exists, GY_EINVAL when
 * eval_json is not a JSON object. */
int gy_journal_checkpoint_eval(gy_journal_t *j, int64_t step, const char *eval_json, char *errmsg,
                               size_t errlen);
/* Write-ahead: the directive seq is about to be sent, with the run's snapshot (gy_run_save:
 * the repair history that decided it; NULL: none). Must succeed before sending. */
int gy_journal_intent(gy_journal_t *j, const gy_journal_intent_t *in, const char *run_snapshot,
                      char *errmsg, size_t errlen);
/* The detectors' baselines when checkpoint step was committed (a gy_run_save text): the
 * newest BASELINES_KEPT are kept, so a successor restoring that checkpoint judges the next
 * steps against the same baselines. */
int gy_journal_baselines(gy_journal_t *j, int64_t step, const char *run_snapshot, char *errmsg,
                         size_t errlen);
/* Directive seq took effect: in one transaction, its intent goes, and for a rollback (to_step
 * >= 0) the checkpoints after to_step go (an abandoned timeline) and the skips in force
 * (skips, nskips) are written. */
int gy_journal_applied(gy_journal_t *j, uint64_t seq, int64_t to_step, const gy_fleet_skip_t *skips,
                       size_t nskips, char *errmsg, size_t errlen);
/* Directive seq will never take effect (dropped, failed): its intent goes. */
int gy_journal_dropped(gy_journal_t *j, uint64_t seq, char *errmsg, size_t errlen);
/* The run's counters. */
int gy_journal_state(gy_journal_t *j, uint64_t generation, uint64_t last_seq, int64_t rollbacks,
                     char *errmsg, size_t errlen);
/* The run is held by a human's decision: hold 1 paused, 2 halted (why: the reason), 0 neither
 * (the key goes). A successor holds the re-formed gang the same way. */
int gy_journal_hold(gy_journal_t *j, int hold, const char *why, char *errmsg, size_t errlen);
/* A quarantine entry's record (id > 0; text: gy_quar_to_json's), written or replaced. */
int gy_journal_quarantine(gy_journal_t *j, uint64_t id, const char *text, char *errmsg,
                          size_t errlen);
/* The run is done (every step trained): a controller started again on the journal only says so. */
int gy_journal_done(gy_journal_t *j, int64_t steps, char *errmsg, size_t errlen);
/* Events queued because the store failed (0 when everything reached it). */
size_t gy_journal_pending(const gy_journal_t *j);

#endif
