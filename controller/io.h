/* io: every effect the controller's core (controller/core.h) has on the world, and the time it
 * reads, behind one small table of functions (CONVENTIONS.md §8). The service (service.c and
 * its svc_*.c files) implements it with gRPC streams, the journal writer's thread and a libuv
 * timer; the core's fixture test implements it with a deterministic stub: fake time, messages
 * recorded per rank, journal writes that complete when the test says so.
 *
 * The core calls these on its own thread (the loop's). None of them calls back into the core
 * synchronously: completions (a journal write, the fence's answer, the tick) come later as
 * core inputs (gy_core_journaled, gy_core_fenced, gy_core_tick).
 *
 * Journal records: the core fills a gy_jrec_t (everything copied, so the writer never reads
 * the core) and gives it to journal(); from then on the io owns it and frees it with
 * gy_jrec_free once written. A record with `notify` set is answered with gy_core_journaled(),
 * which gets the record back (valid for the call). `must` records are retried through a store
 * outage (the service's writer: back-off, up to 10 minutes); the others are tried once. */
#ifndef GY_CONTROLLER_IO_H
#define GY_CONTROLLER_IO_H

#include <stddef.h>
#include <stdint.h>

#include "controller/event_kinds.h"
#include "controller/fleet.h"
#include "controller/journal.h"
#include "controller/quarantine.h"
#include "controller/skipset.h"
#include "policies/guard_policy.h"

struct gy_ckeval; /* controller/core.h */

/* What a journal record writes (controller/journal.h names the calls). */
typedef enum {
  GY_JREC_EVENT,     /* an event (id, time, step, ekind, text) */
  GY_JREC_CKPT,      /* a checkpoint's manifest (step, flag = clean) */
  GY_JREC_CKPT_EVAL, /* a checkpoint's evaluation (step, text = JSON) */
  GY_JREC_INTENT,    /* a rollback's intent (in, text = the run's snapshot) */
  GY_JREC_BASELINES, /* the detectors' baselines of a checkpoint (step, text) */
  GY_JREC_APPLIED,   /* a rollback applied (seq, step, skips) + the state (gen, id, nrb) */
  GY_JREC_DROPPED,   /* a rollback that failed (seq) */
  GY_JREC_STATE,     /* generation, newest intent, rollbacks (gen, seq, nrb) */
  GY_JREC_HOLD,      /* the hold key (flag, text = why) */
  GY_JREC_DONE,      /* the run finished (step) */
  GY_JREC_QUAR,      /* a quarantine entry (id, text = its record) */
} gy_jrec_kind_t;

typedef struct {
  gy_jrec_kind_t kind;
  int must;      /* 1: retried until written or given up (the core waits for it) */
  int notify;    /* 1: the outcome comes back as gy_core_journaled() */
  char what[64]; /* names the write in logs and events */
  int64_t step;
  uint64_t id, seq, gen; /* id: EVENT: the event id; APPLIED: the state's newest intent seq;
                            QUAR: the entry id */
  int64_t nrb;
  int flag; /* CKPT: clean; HOLD: the hold */
  double time;
  char ekind[32];
  char *text;             /* owned; see the kinds */
  gy_journal_intent_t in; /* INTENT (in.skip owned) */
  gy_fleet_skip_t *skips; /* APPLIED: the skips in force (owned) */
  size_t nskips;
} gy_jrec_t;

/* A zeroed record of kind (NULL: out of memory). */
gy_jrec_t *gy_jrec_new(gy_jrec_kind_t kind);
void gy_jrec_free(gy_jrec_t *r); /* NULL is a no-op */
/* Writes r to j (the call journal.h names for r's kind): 0, or a negative gy_err_t with
 * errmsg set. The service's writer thread runs this; tests may too. */
int gy_jrec_write(gy_journal_t *j, const gy_jrec_t *r, char *errmsg, size_t errlen);

/* How a journal write went (gy_core_journaled). */
typedef struct {
  int rc;             /* 0: written; else the last try's gy_err_t (given up) */
  int tries;          /* > 1: the store failed before it answered */
  int64_t elapsed_ms; /* from the first try to the outcome */
  const char *errmsg; /* the last failure's message */
} gy_io_result_t;

/* What an assignment carries besides the fleet's ASSIGN action: every id skipped in force, the
 * quarantine list in the order to apply it (revision order; released entries included), and
 * the run policy's guard. Borrowed for the call. */
typedef struct {
  const gy_skipset_t *skips;
  const gy_quar_entry_t *const *quar;
  size_t nquar;
  const gy_guard_opts_t *guard;
} gy_io_assign_t;

typedef struct gy_io {
  void *ud; /* the first argument of every call */
  /* Time. now_ms: the fleet's clock (milliseconds since the controller started; may be
   * cached for the current event). mono_ms: a monotonic clock read now (the fence's freshness
   * must not trust a cached time after a stop). wall_s: seconds since the epoch. */
  int64_t (*now_ms)(void *ud);
  int64_t (*mono_ms)(void *ud);
  double (*wall_s)(void *ud);
  /* Workers. send: a GRANT or DIRECTIVE action to its rank's session, or to every connected
   * rank when a->rank is -1. assign: answers the held join a->join_handle with the assignment
   * (x: every id skipped in force, the quarantine list, the guard's settings). dismiss: answers the
   * held join `handle` with a refusal (a newer join of the same worker took its place). close: ends
   * rank's session (it joins again). */
  void (*send)(void *ud, const gy_fleet_action_t *a);
  void (*assign)(void *ud, const gy_fleet_action_t *a, const gy_io_assign_t *x);
  void (*dismiss)(void *ud, uint64_t handle, const char *why);
  void (*close)(void *ud, int rank, const char *why);
  /* What the controller tells: an event, an aggregated step (the fleet's history has it), a
   * held-out evaluation (checkpoint: of a checkpoint's parameters), an alert (class name), the
   * run's end. */
  void (*event)(void *ud, gy_event_kind_t kind, int64_t step, const char *msg);
  void (*step)(void *ud, int64_t step);
  void (*eval)(void *ud, const struct gy_ckeval *e, int checkpoint);
  void (*alert)(void *ud, const char *cls, int64_t step, const char *msg);
  void (*done)(void *ud);
  /* The store. journal: takes rec (see above): 0 when submitted, else it was freed and no
   * outcome comes. fence: asks whether this controller still leads, behind the journal
   * writes submitted before; 0 when asked (gy_core_fenced answers), else not asked. */
  int (*journal)(void *ud, gy_jrec_t *rec);
  int (*fence)(void *ud);
  /* Starts the liveness tick: gy_core_tick every period_ms from now on (until the io is torn
   * down). 0 or a gy_err_t. */
  int (*timer)(void *ud, int64_t period_ms);
} gy_io_t;

#endif
