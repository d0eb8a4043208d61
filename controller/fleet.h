/* fleet: the controller's pure logic — gang formation, step grants, the directive pipeline,
 * per-step aggregation, liveness — with no I/O and no clock: time comes in as milliseconds and
 * decisions come out as a list of actions the caller (controller/service.c) carries out.
 *
 * Usage: every input function (join, hello, report, heartbeat, ack, session_closed, command,
 * rollback, tick) appends zero or more actions; the caller reads them with gy_fleet_actions() and
 * clears them with gy_fleet_actions_clear() before the next input. Refusals return a negative error
 * code from common/err.h (with a message in gy_fleet_errmsg()) and append an event:
 *   GY_ENOMEM    out of memory: the call changed nothing (a join that would have formed the
 *                gang is refused; a DEGRADED gang it dismantled stays dismantled, in INIT)
 *   GY_EINVAL    malformed or missing field          -> INVALID_ARGUMENT
 *   GY_ERANGE    rank or ordinal outside the world   -> OUT_OF_RANGE
 *   GY_EBUSY     worker id or ordinal already taken  -> ALREADY_EXISTS
 *   GY_EMISMATCH wrong generation or unknown session -> FAILED_PRECONDITION
 *   GY_ENOTSUP   not possible in the current state   -> FAILED_PRECONDITION
 *   GY_ENOENT    rollback to a step with no committed checkpoint -> FAILED_PRECONDITION
 *
 * Checkpoints and rollbacks. A checkpoint "of step c" holds the state after c steps (step c is
 * the next to run). A rank says it wrote one in a StepReport (has_checkpoint, checkpoint_step);
 * when every rank of the gang has said so for c, c is committed (COMMITTED action). A ROLLBACK
 * directive goes through the same pipeline as the operator's (horizon frozen at H, sent when
 * every rank stands at H, acked by every rank); each rank restores the committed checkpoint of
 * to_step between steps H-1 and H, adds the skip ranges, applies the hparams, acks, and then
 * stands at to_step and runs nothing until the next Grant (its horizon is to_step). When every
 * rank acked, every rank's steps_done is to_step, the aggregated history loses the steps
 * >= to_step (they will be run again), committed checkpoints after to_step are forgotten (they
 * belong to the abandoned timeline), and grants restart at to_step + window: the only time a
 * Grant's horizon may be lower than the previous one. A rank that acks a ROLLBACK with ok false
 * refused it and kept its state (one that fails half way exits: it is lost). Then the rollback
 * FAILED and to_step is forgotten; if every rank refused, the gang still stands at H and no
 * grant is given until a later rollback succeeds or the operator RESUMEs (allowed then, even
 * when not paused); if only some did, the gang is split: the refusing ranks are lost
 * (DEGRADED) and the gang re-forms.
 * A re-formed gang starts from the newest committed checkpoint when there is one; a worker lost
 * while a rollback is queued or in flight drops it (DEGRADED) but forgets the committed
 * checkpoints after its target first, so the re-formed gang starts from that target (without
 * the skips: the caller asks for the rollback again once the gang is back).
 */
#ifndef GY_FLEET_H
#define GY_FLEET_H

#include <stddef.h>
#include <stdint.h>

#include "controller/event_kinds.h"
#include "policies/guard_policy.h"
#include "wire/hparams.h"

/* Run states. The transition table is in fleet.c (one function changes state). */
#define GY_FLEET_STATE_MAP(XX)                                                                     \
  XX(INIT)     /* gang forming: joins are held until `world` workers joined */                     \
  XX(TRAIN)    /* grants follow the slowest rank */                                                \
  XX(PAUSED)   /* the operator paused: horizon frozen until RESUME */                              \
  XX(STOPPING) /* STOP sent: waiting for every rank to ack or exit */                              \
  XX(DONE)     /* every rank reported the last step, or stopped */                                 \
  XX(DEGRADED) /* a worker was lost: no grants; the next join re-forms the gang */

typedef enum {
#define GY_FLEET_STATE_ENUM(name) GY_FLEET_##name,
  GY_FLEET_STATE_MAP(GY_FLEET_STATE_ENUM)
#undef GY_FLEET_STATE_ENUM
      GY_FLEET_NSTATES
} gy_fleet_state_t;

const char *gy_fleet_state_name(gy_fleet_state_t s); /* "INIT", ...; "?" when out of range */

/* Directive kinds: the same numbers as gyro.Directive.Kind. */
typedef enum {
  GY_DIR_NONE = 0,
  GY_DIR_PAUSE = 1,
  GY_DIR_RESUME = 2,
  GY_DIR_STOP = 3,
  GY_DIR_CHECKPOINT = 4,
  GY_DIR_SET_HPARAMS = 5,
  GY_DIR_ROLLBACK = 6,   /* through gy_fleet_rollback only: it needs to_step */
  GY_DIR_QUARANTINE = 7, /* through gy_fleet_quarantine only: regions to add or release */
  GY_DIR_SET_GUARD = 8,  /* through gy_fleet_quarantine only: the guard's settings */
} gy_dir_kind_t;

const char *gy_dir_kind_name(int kind); /* "PAUSE", ...; "?" when out of range */

/* The run-time knobs of SET_HPARAMS and ROLLBACK: gyro.HParams as the wire layer's one value
 * (wire/hparams.h); `present` has bit 1 << (field number - 1) of gyro.HParams for each field
 * to change (wsd_decay_now: bit 1 << 9). */
typedef gy_hparams_t gy_fleet_hparams_t;

#define GY_FLEET_HP_WSD_DECAY_NOW (1u << 9)

/* One quarantine change a QUARANTINE directive carries (gyro.QuarantineEntry's channel, file,
 * offset, length, released): tokens [offset, offset + length) of the shard `file` of channel,
 * quarantined, or trained on again when released. */
typedef struct {
  const char *channel, *file; /* in gy_fleet_quarantine's input: borrowed; in an action: owned
                                 by the fleet (as the action's qdir) */
  uint64_t offset, length;
  int released;
} gy_fleet_qentry_t;

#define GY_FLEET_MAX_QENTRIES 4096 /* entries in one QUARANTINE directive */
#define GY_FLEET_QLOG 128          /* QUARANTINE and SET_GUARD payloads kept (the newest) */

/* What a QUARANTINE or SET_GUARD directive carries. */
typedef struct {
  const gy_fleet_qentry_t *entries; /* QUARANTINE: in order */
  int nentries;
  gy_guard_opts_t guard; /* SET_GUARD */
} gy_fleet_qdir_t;

/* Sample ids [first, last) never trained on again (gyro.SkipRange). */
typedef struct {
  uint64_t first, last;
} gy_fleet_skip_t;

#define GY_FLEET_ID_MAX 128     /* worker ids and host names, with the NUL */
#define GY_FLEET_SESSION_MAX 48 /* session ids, with the NUL */
#define GY_FLEET_MAX_CH 16      /* channels kept per step (gy_data's GY_MAX_CHANNELS) */
#define GY_FLEET_CH_NAME 32
#define GY_FLEET_HISTORY 4096     /* aggregated steps kept */
#define GY_FLEET_MAX_SKIPS 4096   /* skip ranges in one ROLLBACK */
#define GY_FLEET_MAX_COMMITTED 64 /* committed checkpoints kept (the newest) */
#define GY_FLEET_PENDING_CKPT 64  /* checkpoints reported by some ranks, not yet by all */
#define GY_FLEET_ROLLBACK_LOG 256 /* rollback records kept (the newest) */
#define GY_FLEET_REASON_MAX 200   /* a rollback's reason, with the NUL */

typedef struct {
  int world;         /* workers in the gang (>= 1) */
  int tp;            /* tensor-parallel size (informational, copied to assignments) */
  int window;        /* horizon = slowest rank's steps_done + window (>= 1) */
  int64_t steps;     /* run.steps: the run is DONE when every rank reported steps-1 */
  int lost_after_ms; /* silence that declares a worker lost */
  /* The hang rule (0: off): a rank inside a step whose own work (outside collectives, as its
   * heartbeats say) lasts longer than max(hang_floor_ms, hang_factor x its recent step time)
   * is hung: a worker_hung event, and it is lost (its session ends "declared hung"). */
  int hang_floor_ms, hang_factor;
  /* A gang that lost a worker and has not re-formed within this many ms is told (a
   * reform_stalled event, once per outage; 0: never). */
  int reform_alert_ms;
  uint64_t seed; /* makes session ids unguessable (the service passes random bits) */
} gy_fleet_opts_t;

typedef struct {
  char worker_id[GY_FLEET_ID_MAX];
  int ordinal; /* -1: none */
  char host[GY_FLEET_ID_MAX];
  int pid;
  int rank;
  int64_t steps_done;   /* reports received: the next report must be for step steps_done */
  int64_t last_seen_ms; /* time of the last message (or of the join) */
  int alive;            /* 0 once lost or exited */
  int connected;        /* a session stream is open (Hello accepted, not closed) */
  int acked;            /* acked the directive in flight */
  int ack_ok;           /* ... with ok true */
  uint64_t ack_bytes;   /* ... and the size of its checkpoint file (CHECKPOINT/STOP; 0: unknown) */
  double tokens_per_s;  /* of its last report */
  double compute_ms;    /* of its last report: its own work in the step (0: unknown) */
  char session_id[GY_FLEET_SESSION_MAX];
  int64_t ckpt_step; /* newest checkpoint it reported in this timeline (-1: none) */
  /* Progress, as its last heartbeat said it (at progress_ms): inside a step, own_ms of its own
   * work then, waiting in a collective (coll_ms > 0); recent_step_ms: its reports' step time
   * (an average over about eight steps). */
  int stepping;
  int64_t own_ms, coll_ms, progress_ms;
  double recent_step_ms;
  int hung; /* declared hung (its session ends "declared hung") */
} gy_fleet_member_t;

/* One step's gang figures. With data parallelism the engine has reduced loss and channel
 * sums over the gang already, so they come from rank 0's report (exact: sums and counts,
 * not means); step_ms is the slowest rank's. */
typedef struct {
  int64_t step;
  int nreports; /* ranks that reported this step */
  int aggregated;
  double loss;
  int nch;
  struct {
    char name[GY_FLEET_CH_NAME];
    double loss_sum;
    uint64_t tokens;
  } ch[GY_FLEET_MAX_CH];
  double grad_norm, grad_norm_shallow, grad_norm_deep, update_ratio, lr;
  int nonfinite;
  double tokens_per_s; /* rank 0's: already the gang's global rate */
  double step_ms;      /* max over ranks */
} gy_fleet_step_t;

/* Inputs. Strings are borrowed for the call. */
typedef struct {
  const char *worker_id;
  int ordinal; /* -1 for none */
  const char *host;
  int pid;
  int64_t steps_done;
  uint64_t generation; /* the generation it trained in before (0: none) */
} gy_fleet_join_t;

typedef struct {
  uint64_t generation;
  int rank;
  int64_t step;
  double loss;
  int nch;
  const char *const *ch_name;
  const double *ch_loss_sum;
  const uint64_t *ch_tokens;
  double grad_norm, grad_norm_shallow, grad_norm_deep, update_ratio, lr;
  int nonfinite;
  double step_ms, tokens_per_s;
  double compute_ms;         /* step_ms minus the time it waited in collectives (0: unknown) */
  int has_checkpoint;        /* it wrote the checkpoint of checkpoint_step since its last report */
  int64_t checkpoint_step;   /* 0 <= checkpoint_step <= step + 1 */
  uint64_t checkpoint_bytes; /* with has_checkpoint: the size of the rank's file of it (0: not
                                said) */
} gy_fleet_report_t;

/* One rollback as requested, and what became of it. */
typedef enum {
  GY_FLEET_RB_QUEUED,  /* waiting in the directive queue */
  GY_FLEET_RB_SENT,    /* sent; acks are coming in */
  GY_FLEET_RB_APPLIED, /* every rank restored to_step */
  GY_FLEET_RB_FAILED,  /* some rank could not restore it */
  GY_FLEET_RB_DROPPED, /* never sent (worker lost, run done, checkpoint forgotten meanwhile) */
} gy_fleet_rb_status_t;

typedef struct {
  uint64_t seq;
  int64_t at_step; /* the frozen horizon it applies at (known once sent) */
  int64_t to_step;
  int64_t from_step; /* last aggregated step + 1 when it was requested */
  int nskip;
  const gy_fleet_skip_t *skip; /* owned by the fleet */
  gy_fleet_hparams_t hparams;
  gy_fleet_rb_status_t status;
  char reason[GY_FLEET_REASON_MAX];
} gy_fleet_rollback_t;

/* Outputs. */
typedef enum {
  GY_FLEET_ACT_ASSIGN,      /* answer held join `join_handle` with rank/generation/... */
  GY_FLEET_ACT_GRANT,       /* send Grant{generation, horizon} to rank (-1: every connected) */
  GY_FLEET_ACT_DIRECTIVE,   /* send Directive{generation, seq, at_step, kind, hparams} to rank
                               (-1: every connected rank) */
  GY_FLEET_ACT_EVENT,       /* emit event {kind, msg, step} */
  GY_FLEET_ACT_LOST,        /* rank was declared lost (an EVENT accompanies it) */
  GY_FLEET_ACT_STEP,        /* step `step` was aggregated: gy_fleet_history(f, step) */
  GY_FLEET_ACT_CLOSE,       /* finish rank's session stream (lost, or the gang is re-forming) */
  GY_FLEET_ACT_DONE,        /* the run reached DONE */
  GY_FLEET_ACT_COMMITTED,   /* every rank reported the checkpoint of step `step`: committed */
  GY_FLEET_ACT_ROLLED_BACK, /* ROLLBACK seq completed: ok 1, every rank stands at `step`
                               (to_step); ok 0, it failed (see above) */
  GY_FLEET_ACT_DISMISS,     /* answer held join `join_handle` with a refusal (msg): a newer
                               join of the same worker id took its place */
} gy_fleet_act_kind_t;

typedef struct {
  gy_fleet_act_kind_t kind;
  int rank;
  uint64_t generation;
  int64_t step;         /* EVENT, STEP: the step; ASSIGN: start step; GRANT: horizon;
                           DIRECTIVE: at_step */
  uint64_t join_handle; /* ASSIGN */
  char session_id[GY_FLEET_SESSION_MAX]; /* ASSIGN */
  uint64_t seq;                          /* DIRECTIVE, ROLLED_BACK */
  int dir_kind;                          /* DIRECTIVE */
  gy_fleet_hparams_t hparams;            /* DIRECTIVE (SET_HPARAMS, ROLLBACK) */
  uint64_t event_id;                     /* EVENT */
  gy_event_kind_t event_kind;  /* EVENT: what happened (its wire name: gy_event_kind_name) */
  char msg[256];               /* EVENT: the text; DIRECTIVE (ROLLBACK): the reason; DISMISS,
                                  CLOSE: why (CLOSE: "" for a re-forming gang) */
  int64_t to_step;             /* DIRECTIVE (ROLLBACK): the checkpoint to restore */
  int nskip;                   /* DIRECTIVE (ROLLBACK): skip ranges */
  const gy_fleet_skip_t *skip; /* DIRECTIVE (ROLLBACK): owned by the fleet; valid until it is
                                  destroyed or GY_FLEET_ROLLBACK_LOG later rollbacks were
                                  requested */
  int ok;                      /* ROLLED_BACK: every rank restored to_step */
  uint64_t bytes; /* COMMITTED: the checkpoint's size, every rank's file (0: not known) */
  const gy_fleet_qdir_t *qdir; /* DIRECTIVE (QUARANTINE, SET_GUARD): owned by the fleet; valid
                                  until it is destroyed or GY_FLEET_QLOG later ones were queued */
} gy_fleet_action_t;

typedef struct gy_fleet gy_fleet_t;

/* Creates a fleet in state INIT. The callee copies opts. GY_EINVAL for bad opts (world < 1,
 * window < 1, steps < 1, lost_after_ms < 1), GY_ENOMEM. */
int gy_fleet_create(gy_fleet_t **out, const gy_fleet_opts_t *opts);
void gy_fleet_destroy(gy_fleet_t *f); /* NULL is a no-op */

/* A controller restarted from its journal (controller/journal.h): the run's committed
 * checkpoints (any order), its last generation and directive sequence number, so the gang
 * re-forms from the newest committed checkpoint with a newer generation and directives keep
 * increasing numbers (workers ignore a number they have applied). INIT only, before any join:
 * GY_ENOTSUP otherwise; GY_EINVAL for a negative step. No action. */
int gy_fleet_restore(gy_fleet_t *f, const int64_t *committed, int n, uint64_t generation,
                     uint64_t seq);
/* A worker joins; join_handle identifies the held call in the ASSIGN action. Held (returns 0,
 * no ASSIGN yet) until `world` joiners are present; the world-th join yields one ASSIGN per
 * joiner. Ranks: the ordinal when given, else the lowest free rank. Generation: one more than
 * both the fleet's and every joiner's previous generation. Start step: the newest committed
 * checkpoint when there is one (every rank restores it), else the joiners' minimum
 * steps_done. In DEGRADED a join dissolves the old gang (CLOSE for its connected ranks) and
 * starts forming a new one. A worker id that joins again is never refused for it: a held join
 * of the same id is superseded (DISMISS answers the earlier call; the newer one is held in its
 * place), and a member of the current gang with the same id (its process restarted) is lost at
 * once and the gang re-forms (unless the member merely reconnects before its first report: it
 * gets its assignment again). Refusals: GY_EINVAL (empty worker_id), GY_ERANGE (ordinal),
 * GY_EBUSY (ordinal taken by another worker), GY_ENOTSUP (gang complete, the run is stopping
 * or DONE). */
int gy_fleet_join(gy_fleet_t *f, int64_t now, const gy_fleet_join_t *req, uint64_t join_handle);
/* The joiner behind join_handle went away before the gang formed (its call was cancelled). */
void gy_fleet_join_cancel(gy_fleet_t *f, uint64_t join_handle);

/* First message of a session stream. On success the rank is connected and gets a GRANT with
 * the current horizon (to_step when it acked a ROLLBACK still in flight) and the directive in
 * flight, if it was sent and this rank has not acked it. GY_EMISMATCH: wrong generation or
 * session id; GY_ERANGE: rank. */
int gy_fleet_hello(gy_fleet_t *f, int64_t now, const char *session_id, uint64_t generation,
                   int rank);
/* A StepReport from the stream bound to stream_rank. Reports come in order (step ==
 * steps_done); a repeat of an older step is ignored. GY_EMISMATCH (generation), GY_ERANGE
 * (rank differs from the stream's, the step is beyond the horizon or out of order, or the rank
 * trained after acking a ROLLBACK that has not completed), GY_EINVAL (channels, or a
 * checkpoint_step outside [0, step + 1]). A checkpoint it carries may commit (COMMITTED). */
int gy_fleet_report(gy_fleet_t *f, int64_t now, int stream_rank, const gy_fleet_report_t *r);
int gy_fleet_heartbeat(gy_fleet_t *f, int64_t now, int stream_rank, uint64_t generation, int rank);
/* What a heartbeat (accepted by gy_fleet_heartbeat) says of rank's progress: inside a step,
 * how much of it was its own work, and whether it waits in a collective now. The liveness tick
 * applies the hang rule to it (gy_fleet_opts_t). */
typedef struct {
  int stepping;
  int64_t own_ms, in_collective_ms;
} gy_fleet_progress_t;
void gy_fleet_progress(gy_fleet_t *f, int64_t now, int rank, const gy_fleet_progress_t *p);
/* checkpoint_bytes: with a CHECKPOINT or STOP acked ok, the size of the rank's file of it (0:
 * not known); summed over the ranks into the COMMITTED action's bytes when every rank sent one. */
int gy_fleet_ack(gy_fleet_t *f, int64_t now, int stream_rank, uint64_t generation, uint64_t seq,
                 int rank, int ok, const char *error, uint64_t checkpoint_bytes);
/* The session stream of rank closed. TRAIN/PAUSED: the worker is lost (DEGRADED). STOPPING:
 * the worker exited (counts as its ack). */
void gy_fleet_session_closed(gy_fleet_t *f, int64_t now, int rank);
/* An operator command. On success *seq and *at_step say which directive and at which step
 * every rank will apply it (the frozen horizon); commands arriving while one is in flight
 * are queued and apply at the same step, in order. GY_EINVAL: kind (ROLLBACK too: it goes
 * through gy_fleet_rollback); GY_ENOTSUP: not possible now (no gang, DEGRADED, STOPPING, DONE,
 * RESUME while neither paused nor held by a refused rollback, PAUSE while paused). */
int gy_fleet_command(gy_fleet_t *f, int64_t now, int kind, const gy_fleet_hparams_t *hp,
                     uint64_t *seq, int64_t *at_step);
/* Queues a ROLLBACK to the committed checkpoint of to_step, like a command (the operator's or
 * the controller's own decision): every rank restores it at the frozen horizon *at_step, adds
 * the nskips ranges of skips (copied; each first < last), applies hp (NULL or present 0: no
 * change) and records reason (copied, may be NULL; truncated to GY_FLEET_REASON_MAX - 1).
 * When every rank acked: ROLLED_BACK, an event "rollback", grants from to_step + window. A
 * rollback still queued when an earlier one forgets its checkpoint is dropped (an event).
 * GY_EINVAL: nskips outside [0, GY_FLEET_MAX_SKIPS], skips NULL with nskips > 0, an empty
 * range, to_step < 0; GY_ENOENT: to_step is not a committed checkpoint (after the last
 * committed one, or never committed); GY_ENOTSUP: as gy_fleet_command. */
int gy_fleet_rollback(gy_fleet_t *f, int64_t now, int64_t to_step, const gy_fleet_skip_t *skips,
                      int nskips, const gy_fleet_hparams_t *hp, const char *reason, uint64_t *seq,
                      int64_t *at_step);
/* Queues a QUARANTINE (q->entries, copied; 1..GY_FLEET_MAX_QENTRIES, each with a channel, a
 * file and length >= 1) or SET_GUARD (q->guard, copied) directive, like a command: every rank
 * applies it at the frozen horizon *at_step. GY_EINVAL: kind, an empty or oversized list, a bad
 * entry; GY_ENOMEM; GY_ENOTSUP: as gy_fleet_command (no gang now: the next assignment carries
 * the controller's list and policy anyway). */
int gy_fleet_quarantine(gy_fleet_t *f, int64_t now, int kind, const gy_fleet_qdir_t *q,
                        uint64_t *seq, int64_t *at_step);
/* Liveness: declares lost every alive rank silent for more than lost_after_ms. */
void gy_fleet_tick(gy_fleet_t *f, int64_t now);

/* Actions produced since the last clear (valid until the next input call or clear). */
const gy_fleet_action_t *gy_fleet_actions(const gy_fleet_t *f, size_t *n);
void gy_fleet_actions_clear(gy_fleet_t *f);
/* Out of memory growing the action list drops that one action (an event, a grant, an assign
 * ...) and the call goes on: the fleet's own state stays whole. This counts the actions dropped
 * since create; a caller that sees it grow has lost an output (a worker may wait for a grant or
 * an assign it will never get) and should treat the gang as suspect. */
uint64_t gy_fleet_dropped(const gy_fleet_t *f);
const char *gy_fleet_errmsg(const gy_fleet_t *f); /* why the last call was refused */

/* Read-only views. */
gy_fleet_state_t gy_fleet_state(const gy_fleet_t *f);
uint64_t gy_fleet_generation(const gy_fleet_t *f);
int64_t gy_fleet_horizon(const gy_fleet_t *f);
int64_t gy_fleet_start_step(const gy_fleet_t *f);
const gy_fleet_opts_t *gy_fleet_opts(const gy_fleet_t *f);
int gy_fleet_nmembers(const gy_fleet_t *f); /* world once formed, 0 while forming */
const gy_fleet_member_t *gy_fleet_member(const gy_fleet_t *f, int rank); /* NULL if none */
int gy_fleet_forming(const gy_fleet_t *f);                               /* joiners held */
/* Newest aggregated step (-1: none yet), and the figures of an aggregated step still in the
 * history (NULL otherwise). */
int64_t gy_fleet_last_step(const gy_fleet_t *f);
const gy_fleet_step_t *gy_fleet_history(const gy_fleet_t *f, int64_t step);
/* Directive in flight: its seq (0: none) and whether it was sent (else ranks are still
 * reaching the horizon). Commands queued behind it. */
uint64_t gy_fleet_inflight(const gy_fleet_t *f, int *sent);
int gy_fleet_queued(const gy_fleet_t *f);
/* Committed checkpoints, newest (largest step) first: count, and the step of the i-th (-1 when
 * i is out of range). They outlive re-formed gangs; a rollback forgets those after its target. */
int gy_fleet_ncommitted(const gy_fleet_t *f);
int64_t gy_fleet_committed(const gy_fleet_t *f, int i);
/* Rollbacks requested (at most the newest GY_FLEET_ROLLBACK_LOG), newest first: count, and the
 * i-th (NULL when out of range; valid until the next input call). */
int gy_fleet_nrollbacks(const gy_fleet_t *f);
const gy_fleet_rollback_t *gy_fleet_rollback_record(const gy_fleet_t *f, int i);
/* 1 while grants are held because every rank refused the last rollback. */
int gy_fleet_rollback_failed(const gy_fleet_t *f);

/* Internal, for tests (CONVENTIONS §9): force a state, and the one function that changes
 * state (GY_EINVAL for a pair outside the transition table, state unchanged). */
void gy__fleet_force_state(gy_fleet_t *f, gy_fleet_state_t s);
int gy__fleet_transition(gy_fleet_t *f, gy_fleet_state_t to, const char *why);
int gy__fleet_transition_allowed(gy_fleet_state_t from, gy_fleet_state_t to);

#endif
