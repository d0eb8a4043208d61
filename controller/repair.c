/*
 * repair: the coordination between the run's decisions and the fleet's rollbacks (repair.h).
 *
 * API, in order: names; create/destroy; inputs (recovered, operator, run_rollback, run_pause,
 * run_halt, asked, gang_formed, step, applied, rolled_back); outputs (actions, moves, clear) and
 * state.
 *
 * The protocol it makes explicit. The run (controller/run.h) decides a repair and says ROLLBACK
 * to a target with a decision (skips, knobs). The controller asks the fleet for a rollback
 * directive as soon as a gang holds (a repair decided while the gang re-forms waits for the next
 * one; one decided as the run ends is dropped); the fleet queues it as directive seq, and when
 * every rank has applied it the run is told its rollback is done (or that the restore failed).
 * A gang that re-forms drops the rollback in flight with the old gang; if the run still rolls
 * back, the repair is asked again of the new gang, with the skips of every earlier repair (a
 * re-formed gang restores a checkpoint that may predate them). An operator's rollback is queued
 * by the operator service itself; the run's ROLLBACK that it causes adopts it instead of asking
 * for a second one. A fresh gang formed from the repair's target with nothing to send is
 * repaired already.
 *
 * Invariants:
 * - Only move() writes r->state, and only pairs of the table `allowed` pass; every move is
 *   recorded (gy_repair_moves) with its time.
 * - seq != 0 exactly in IN_FLIGHT; target is the last repair decided (kept in IDLE: a gang that
 *   re-forms while the run still rolls back asks for it again).
 * - Each input appends at most GY_REPAIR_ACTS_MAX actions; nothing here allocates after create.
 */
#include "controller/repair.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/err.h"

#define MOVES_MAX 16

static const char *const state_names[] = {
#define GY_REPAIR_STATE_STR(name) #name,
    GY_REPAIR_STATE_MAP(GY_REPAIR_STATE_STR)
#undef GY_REPAIR_STATE_STR
};

const char *gy_repair_state_name(gy_repair_state_t s) {
  return (s >= 0 && s < GY_REPAIR_NSTATES) ? state_names[s] : "?";
}

struct gy_repair {
  gy_repair_state_t state;
  int64_t now;
  int64_t target; /* the repair's checkpoint (-1: none) */
  gy_policy_decision_t dec;
  uint64_t seq; /* IN_FLIGHT: the fleet rollback carrying the repair */
  /* the gangs */
  uint64_t generation; /* the newest gang's (0: none yet) */
  int ngangs;          /* gangs formed */
  int64_t formed_start;
  int fresh;  /* the newest gang has neither aggregated a step nor rolled back yet */
  int resend; /* a gang re-formed: the next rollback also carries the earlier repairs' skips */
  /* a restart's journal */
  int recovered_hold; /* 1: paused, 2: halted (not yet applied to a gang) */
  char recovered_why[256];
  /* an operator command feeding the run */
  int in_operator;
  uint64_t op_seq;
  gy_repair_action_t acts[GY_REPAIR_ACTS_MAX];
  size_t nacts;
  gy_repair_move_t moves[MOVES_MAX];
  size_t nmoves;
  char errmsg[256];
};

int gy_repair_create(gy_repair_t **out) {
  *out = gy_calloc(1, sizeof(**out));
  if (!*out) return GY_ENOMEM;
  (*out)->target = -1;
  return 0;
}

void gy_repair_destroy(gy_repair_t *r) {
  gy_free(r);
}

static int refuse(gy_repair_t *r, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int refuse(gy_repair_t *r, int rc, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(r->errmsg, sizeof(r->errmsg), fmt, ap);
  va_end(ap);
  return rc;
}

static gy_repair_action_t *action(gy_repair_t *r, gy_repair_act_kind_t k, int64_t step) {
  /* bounded by construction (the most one input appends is 5); the check keeps it so */
  if (r->nacts >= GY_REPAIR_ACTS_MAX) return NULL;
  gy_repair_action_t *a = &r->acts[r->nacts++];
  memset(a, 0, sizeof(*a));
  a->kind = k;
  a->step = step;
  return a;
}

static void action_msg(gy_repair_t *r, gy_repair_act_kind_t k, int64_t step, const char *msg) {
  gy_repair_action_t *a = action(r, k, step);
  if (a) snprintf(a->msg, sizeof(a->msg), "%s", msg ? msg : "");
}

/* ------------------------------------- state machine ------------------------------------- */

/* allowed[from][to]: the documented transitions (repair.h). */
#define I GY_REPAIR_IDLE
#define W GY_REPAIR_WAITING
#define A GY_REPAIR_ASKING
#define F GY_REPAIR_IN_FLIGHT
static const unsigned char allowed[GY_REPAIR_NSTATES][GY_REPAIR_NSTATES] = {
    [I] = {[W] = 1, [F] = 1},
    [W] = {[W] = 1, [A] = 1, [F] = 1, [I] = 1},
    [A] = {[F] = 1, [I] = 1},
    [F] = {[W] = 1, [F] = 1, [I] = 1},
};
#undef I
#undef W
#undef A
#undef F

int gy__repair_transition_allowed(gy_repair_state_t from, gy_repair_state_t to) {
  if (from < 0 || from >= GY_REPAIR_NSTATES || to < 0 || to >= GY_REPAIR_NSTATES) return 0;
  return allowed[from][to];
}

/* Exit action of every state but the one it enters: IN_FLIGHT's rollback is no longer ours. */
static void clear_flight(gy_repair_t *r) {
  r->seq = 0;
}

/* The one function that changes state: checks the pair, records the move, runs the exit and
 * entry actions. The callers only ask for moves of the table (a refusal here is a bug). */
static int move(gy_repair_t *r, gy_repair_state_t to) {
  gy_repair_state_t from = r->state;
  if (!gy__repair_transition_allowed(from, to))
    return refuse(r, GY_EINVAL, "illegal repair transition %s -> %s", gy_repair_state_name(from),
                  gy_repair_state_name(to));
  if (r->nmoves < MOVES_MAX) r->moves[r->nmoves++] = (gy_repair_move_t){from, to, r->now};
  r->state = to;
  clear_flight(r);
  return 0;
}

/* WAITING: asks the fleet when a gang holds; drops the repair when the run has ended. */
static void try_ask(gy_repair_t *r, gy_repair_fleet_t fleet) {
  if (r->state != GY_REPAIR_WAITING) return;
  if (fleet == GY_REPAIR_FLEET_ENDED) {
    move(r, GY_REPAIR_IDLE);
    gy_repair_action_t *a = action(r, GY_REPAIR_ACT_EVENT, r->target);
    if (a) a->event = GY_REPAIR_EV_DROPPED;
    return;
  }
  if (fleet != GY_REPAIR_FLEET_GANG) return; /* no gang: when it forms */
  move(r, GY_REPAIR_ASKING);
  gy_repair_action_t *a = action(r, GY_REPAIR_ACT_ASK, r->target);
  if (a) a->resend = r->resend;
}

/* ----------------------------------------- inputs ----------------------------------------- */

void gy_repair_recovered(gy_repair_t *r, int hold, const char *why) {
  r->recovered_hold = hold == 1 || hold == 2 ? hold : 0;
  snprintf(r->recovered_why, sizeof(r->recovered_why), "%s", why ? why : "");
}

void gy_repair_operator(gy_repair_t *r, int begin, uint64_t rollback_seq) {
  r->in_operator = begin ? 1 : 0;
  r->op_seq = begin ? rollback_seq : 0;
}

int gy_repair_run_rollback(gy_repair_t *r, int64_t now, int64_t target,
                           const gy_policy_decision_t *decision, gy_repair_fleet_t fleet) {
  if (target < 0 || !decision) return refuse(r, GY_EINVAL, "a rollback needs a target >= 0");
  if (r->state == GY_REPAIR_ASKING)
    return refuse(r, GY_ENOTSUP, "a rollback is being asked of the fleet");
  r->now = now;
  if (r->in_operator && r->op_seq) { /* the operator's rollback, already queued */
    move(r, GY_REPAIR_IN_FLIGHT);
    r->target = target;
    r->dec = *decision;
    r->seq = r->op_seq;
    r->op_seq = 0;
    return 0;
  }
  move(r, GY_REPAIR_WAITING);
  r->target = target;
  r->dec = *decision;
  try_ask(r, fleet);
  return 0;
}

int gy_repair_run_pause(gy_repair_t *r, int64_t now) {
  r->now = now;
  if (!r->in_operator) action(r, GY_REPAIR_ACT_HOLD, -1);
  return 0;
}

int gy_repair_run_halt(gy_repair_t *r, int64_t now) {
  if (r->state == GY_REPAIR_ASKING)
    return refuse(r, GY_ENOTSUP, "a rollback is being asked of the fleet");
  r->now = now;
  /* a rollback not yet asked is forgotten; one in flight ends as the fleet says */
  if (r->state == GY_REPAIR_WAITING) move(r, GY_REPAIR_IDLE);
  action(r, GY_REPAIR_ACT_HOLD, -1);
  return 0;
}

int gy_repair_asked(gy_repair_t *r, int64_t now, gy_repair_ask_t outcome, uint64_t seq,
                    const char *why) {
  if (r->state != GY_REPAIR_ASKING)
    return refuse(r, GY_ENOTSUP, "no rollback is being asked (state %s)",
                  gy_repair_state_name(r->state));
  if (outcome == GY_REPAIR_ASK_SENT && !seq)
    return refuse(r, GY_EINVAL, "a sent rollback has a directive number");
  r->now = now;
  int64_t target = r->target;
  switch (outcome) {
  case GY_REPAIR_ASK_SENT:
    move(r, GY_REPAIR_IN_FLIGHT);
    r->seq = seq;
    break;
  case GY_REPAIR_ASK_NOTHING:
    move(r, GY_REPAIR_IDLE);
    action(r, GY_REPAIR_ACT_RUN_DONE, target);
    break;
  case GY_REPAIR_ASK_NO_CHECKPOINT:
    move(r, GY_REPAIR_IDLE);
    action_msg(r, GY_REPAIR_ACT_RUN_FAILED, target, why);
    break;
  case GY_REPAIR_ASK_REFUSED:
  default:
    move(r, GY_REPAIR_IDLE);
    action_msg(r, GY_REPAIR_ACT_RUN_HALT, target, why);
    break;
  }
  return 0;
}

int gy_repair_gang_formed(gy_repair_t *r, int64_t now, uint64_t generation, int64_t start,
                          gy_run_state_t run_state, gy_repair_fleet_t fleet) {
  if (r->state == GY_REPAIR_ASKING)
    return refuse(r, GY_ENOTSUP, "a rollback is being asked of the fleet");
  r->now = now;
  r->generation = generation;
  r->formed_start = start;
  r->fresh = 1;
  /* a rollback in flight was dropped with the old gang */
  if (r->state == GY_REPAIR_IN_FLIGHT) move(r, GY_REPAIR_IDLE);
  if (r->ngangs++) r->resend = 1;
  switch (run_state) {
  case GY_RUN_INIT: {
    action(r, GY_REPAIR_ACT_RUN_STARTED, start);
    /* a run that was held before the restart stays held: the gang parks at its first horizon */
    int held = r->recovered_hold;
    r->recovered_hold = 0;
    if (held == 2) {
      action_msg(r, GY_REPAIR_ACT_RUN_HALT, start,
                 "the run was HALTED before the controller restarted: a human decides "
                 "(gyroctl resume, rollback, skip)");
    } else if (held == 1) {
      action(r, GY_REPAIR_ACT_RUN_PAUSE, start);
      action(r, GY_REPAIR_ACT_HOLD, -1);
    }
    if (held) {
      gy_repair_action_t *a = action(r, GY_REPAIR_ACT_EVENT, start);
      if (a) {
        a->event = GY_REPAIR_EV_RECOVERED;
        snprintf(a->msg, sizeof(a->msg), "the run stays %s as before the restart (%.200s)",
                 held == 2 ? "HALTED" : "PAUSED", r->recovered_why);
      }
    }
    break;
  }
  case GY_RUN_ROLLBACK:
    if (r->target < 0) break; /* the run's repair was never told: nothing to ask */
    move(r, GY_REPAIR_WAITING);
    try_ask(r, fleet);
    break;
  case GY_RUN_HALTED:
  case GY_RUN_PAUSED:
    action(r, GY_REPAIR_ACT_HOLD, -1);
    break;
  default:
    break;
  }
  return 0;
}

void gy_repair_step(gy_repair_t *r) {
  r->fresh = 0;
}

void gy_repair_applied(gy_repair_t *r) {
  r->fresh = 0;
  r->resend = 0;
}

int gy_repair_rolled_back(gy_repair_t *r, int64_t now, uint64_t seq, int64_t to_step, int ok) {
  r->now = now;
  if (ok) gy_repair_applied(r);
  if (r->state != GY_REPAIR_IN_FLIGHT || !seq || seq != r->seq) return 0; /* not the run's */
  move(r, GY_REPAIR_IDLE);
  if (ok)
    action(r, GY_REPAIR_ACT_RUN_DONE, to_step);
  else
    action_msg(r, GY_REPAIR_ACT_RUN_FAILED, to_step, "a rank could not restore it");
  return 0;
}

/* ---------------------------------------- outputs ---------------------------------------- */

const gy_repair_action_t *gy_repair_actions(const gy_repair_t *r, size_t *n) {
  *n = r->nacts;
  return r->acts;
}

const gy_repair_move_t *gy_repair_moves(const gy_repair_t *r, size_t *n) {
  *n = r->nmoves;
  return r->moves;
}

void gy_repair_clear(gy_repair_t *r) {
  r->nacts = 0;
  r->nmoves = 0;
}

gy_repair_state_t gy_repair_state(const gy_repair_t *r) {
  return r->state;
}
int64_t gy_repair_target(const gy_repair_t *r) {
  return r->target;
}
const gy_policy_decision_t *gy_repair_decision(const gy_repair_t *r) {
  return &r->dec;
}
uint64_t gy_repair_seq(const gy_repair_t *r) {
  return r->seq;
}
uint64_t gy_repair_generation(const gy_repair_t *r) {
  return r->generation;
}
int64_t gy_repair_formed_start(const gy_repair_t *r) {
  return r->formed_start;
}
int gy_repair_fresh_gang(const gy_repair_t *r) {
  return r->fresh;
}
int gy_repair_resend(const gy_repair_t *r) {
  return r->resend;
}
int gy_repair_recovered_hold(const gy_repair_t *r) {
  return r->recovered_hold;
}
const char *gy_repair_errmsg(const gy_repair_t *r) {
  return r->errmsg;
}
