/* repair: the coordination between the run state machine (controller/run.h), which decides a
 * repair, and the fleet (controller/fleet.h), which carries it out as a ROLLBACK directive. Pure
 * (CONVENTIONS.md §7): no I/O and no clock — every input carries the time (milliseconds, any
 * epoch) and the machine answers with actions the controller carries out, in order.
 *
 * Usage: call an input, then gy_repair_actions() (carry them out: an ASK is answered with
 * gy_repair_asked(), whose actions follow), and gy_repair_clear() before the next input.
 * Refusals return GY_ENOTSUP (not possible in this state) or GY_EINVAL with a message in
 * gy_repair_errmsg() and change nothing.
 *
 * Besides its state the machine keeps what the repair needs to know of the gangs: the newest
 * generation and its start step, whether that gang is fresh (neither aggregated a step nor
 * rolled back yet), whether a re-formed gang must be sent the skips of earlier repairs again,
 * the hold a restarted controller found in its journal, and whether an operator command is
 * feeding the run (its PAUSE is sent already; its rollback is the one the run's repair
 * adopts). */
#ifndef GY_REPAIR_H
#define GY_REPAIR_H

#include <stddef.h>
#include <stdint.h>

#include "controller/run.h"

/* States. The transition table is in repair.c (one function changes state):
 *   IDLE      -> WAITING (the run decided a rollback), IN_FLIGHT (it adopts the operator's)
 *   WAITING   -> WAITING (decided again), ASKING (a gang holds), IN_FLIGHT (adopts the
 *                operator's), IDLE (the run halted, or the fleet ended: dropped)
 *   ASKING    -> IN_FLIGHT (sent), IDLE (nothing to send, no such checkpoint, refused)
 *   IN_FLIGHT -> WAITING (decided again), IN_FLIGHT (adopts the operator's), IDLE (applied,
 *                failed, or dropped with its gang) */
#define GY_REPAIR_STATE_MAP(XX)                                                                    \
  XX(IDLE)    /* no repair of the run's is asked of the fleet */                                   \
  XX(WAITING) /* the run decided a rollback: it is asked as soon as a gang holds */                \
  XX(ASKING)  /* the rollback is being asked of the fleet: gy_repair_asked() tells how it went */  \
  XX(IN_FLIGHT) /* a fleet rollback (seq) carries it: waiting until every rank applied it */

typedef enum {
#define GY_REPAIR_STATE_ENUM(name) GY_REPAIR_##name,
  GY_REPAIR_STATE_MAP(GY_REPAIR_STATE_ENUM)
#undef GY_REPAIR_STATE_ENUM
      GY_REPAIR_NSTATES
} gy_repair_state_t;

const char *gy_repair_state_name(gy_repair_state_t s); /* "IDLE", ...; "?" when out of range */

/* What the fleet is, as far as a repair is concerned. */
typedef enum {
  GY_REPAIR_FLEET_NO_GANG, /* forming, degraded: a rollback waits for the next gang */
  GY_REPAIR_FLEET_GANG,    /* a gang trains or is paused: a rollback can be asked */
  GY_REPAIR_FLEET_ENDED,   /* done or stopping: a rollback is dropped */
} gy_repair_fleet_t;

/* How asking the fleet went (gy_repair_asked). */
typedef enum {
  GY_REPAIR_ASK_SENT,          /* the fleet queued the rollback as directive `seq` */
  GY_REPAIR_ASK_NOTHING,       /* a fresh gang formed from the target with nothing to send */
  GY_REPAIR_ASK_NO_CHECKPOINT, /* the fleet no longer has the target (the run picks another) */
  GY_REPAIR_ASK_REFUSED,       /* the fleet cannot roll back (why): the run halts */
} gy_repair_ask_t;

/* ---- actions ---- */
typedef enum {
  GY_REPAIR_ACT_ASK,         /* ask the fleet to roll back to `step` with the decision
                                (gy_repair_decision), plus the earlier repairs' skips when
                                `resend`; then call gy_repair_asked() */
  GY_REPAIR_ACT_RUN_STARTED, /* tell the run it started at `step` (gy_run_started) */
  GY_REPAIR_ACT_RUN_DONE,    /* tell the run its rollback to `step` is done */
  GY_REPAIR_ACT_RUN_FAILED,  /* tell the run the restore of `step` failed (msg: why) */
  GY_REPAIR_ACT_RUN_HALT,    /* halt the run (msg: why) */
  GY_REPAIR_ACT_RUN_PAUSE,   /* pause the run (a hold recovered from the journal) */
  GY_REPAIR_ACT_HOLD,        /* freeze the gang (a PAUSE directive when it trains) */
  GY_REPAIR_ACT_EVENT,       /* emit event `event` at `step` with msg */
} gy_repair_act_kind_t;

/* The events the machine emits. */
typedef enum {
  GY_REPAIR_EV_DROPPED,   /* a rollback dropped: the run ended before it could be asked */
  GY_REPAIR_EV_RECOVERED, /* a hold found in the journal is applied to the first gang */
} gy_repair_event_t;

/* The most actions the machine holds between two gy_repair_clear() calls. */
#define GY_REPAIR_ACTS_MAX 16

typedef struct {
  gy_repair_act_kind_t kind;
  int64_t step;
  int resend;              /* ASK */
  gy_repair_event_t event; /* EVENT */
  char msg[300];           /* RUN_FAILED, RUN_HALT, EVENT */
} gy_repair_action_t;

/* One move of the machine, for tests and the log. */
typedef struct {
  gy_repair_state_t from, to;
  int64_t time_ms;
} gy_repair_move_t;

typedef struct gy_repair gy_repair_t;

/* Creates the machine in IDLE. 0 or GY_ENOMEM. */
int gy_repair_create(gy_repair_t **out);
void gy_repair_destroy(gy_repair_t *r);

/* ---- inputs ---- */

/* A controller restarted on a journal that says the run was paused (hold 1) or halted (2),
 * for `why`: the first gang's run is held the same way. 0: nothing recovered. */
void gy_repair_recovered(gy_repair_t *r, int hold, const char *why);
/* An operator command is feeding the run (begin) or has fed it (end); `rollback_seq` is the
 * fleet rollback the operator's command queued (0: none). */
void gy_repair_operator(gy_repair_t *r, int begin, uint64_t rollback_seq);
/* The run's ROLLBACK action: roll back to target for decision (copied). Adopts the operator's
 * rollback while an operator command feeds the run; else asks the fleet (when a gang holds). */
int gy_repair_run_rollback(gy_repair_t *r, int64_t now, int64_t target,
                           const gy_policy_decision_t *decision, gy_repair_fleet_t fleet);
/* The run's PAUSE action (a pause deferred until a repair ended): the gang is held unless the
 * operator's own command sent the pause. */
int gy_repair_run_pause(gy_repair_t *r, int64_t now);
/* The run's HALT action: a rollback not yet asked is forgotten, and the gang is held. */
int gy_repair_run_halt(gy_repair_t *r, int64_t now);
/* How the ASK went: the fleet's directive seq (SENT), or why it could not (REFUSED). */
int gy_repair_asked(gy_repair_t *r, int64_t now, gy_repair_ask_t outcome, uint64_t seq,
                    const char *why);
/* A gang formed: generation, the step it trains from, the run's state then, and the fleet's
 * (a repair the run still wants is asked of the new gang). */
int gy_repair_gang_formed(gy_repair_t *r, int64_t now, uint64_t generation, int64_t start,
                          gy_run_state_t run_state, gy_repair_fleet_t fleet);
/* The gang aggregated a step (it is no longer fresh). */
void gy_repair_step(gy_repair_t *r);
/* A fleet rollback was applied (any, the run's or the operator's): the gang is no longer fresh
 * and has every earlier skip. Told as soon as it is known (gy_repair_rolled_back says it too). */
void gy_repair_applied(gy_repair_t *r);
/* A fleet rollback ended: applied (ok) or failed, to to_step. */
int gy_repair_rolled_back(gy_repair_t *r, int64_t now, uint64_t seq, int64_t to_step, int ok);

/* ---- outputs and state ---- */
const gy_repair_action_t *gy_repair_actions(const gy_repair_t *r, size_t *n);
const gy_repair_move_t *gy_repair_moves(const gy_repair_t *r, size_t *n);
void gy_repair_clear(gy_repair_t *r); /* forgets actions and moves */
gy_repair_state_t gy_repair_state(const gy_repair_t *r);
int64_t gy_repair_target(const gy_repair_t *r); /* the last decided (-1: none yet) */
const gy_policy_decision_t *gy_repair_decision(const gy_repair_t *r); /* the last decided */
uint64_t gy_repair_seq(const gy_repair_t *r);        /* IN_FLIGHT: its fleet rollback; else 0 */
uint64_t gy_repair_generation(const gy_repair_t *r); /* the newest gang's (0: none yet) */
int64_t gy_repair_formed_start(const gy_repair_t *r);
int gy_repair_fresh_gang(const gy_repair_t *r);
int gy_repair_resend(const gy_repair_t *r);
int gy_repair_recovered_hold(const gy_repair_t *r); /* not yet applied: 0, 1 or 2 */
const char *gy_repair_errmsg(const gy_repair_t *r);

/* For tests: 1 if from -> to is in the transition table. */
int gy__repair_transition_allowed(gy_repair_state_t from, gy_repair_state_t to);

#endif
