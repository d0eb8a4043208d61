/* service: the controller's gRPC side on a libuv loop. It serves /gyro.Worker/{Join, Session,
 * StoreSet, StoreGet}, /gyro.Operator/{Status, Command, Watch, Events, Checkpoints, PolicyShow,
 * PolicySet, Quarantine} and (opts.health)
 * grpc.health.v1.Health/Check through gy_rpc, decodes the protobuf-c messages, feeds the
 * fleet (controller/fleet.h) and carries out its actions. Events go to stderr as JSON lines and
 * to Watch streams; every aggregated step is one JSON line on stdout:
 *   {"type":"step","step":S,"loss":L,"loss_ch":{NAME:MEAN},"tokens_ch":{NAME:N},
 *    "grad_norm":G,"grad_norm_shallow":..,"grad_norm_deep":..,"nonfinite":B,"lr":..,
 *    "tokens_per_s":T,"step_ms":MAX}
 * Status mapping of refusals: see fleet.h; a message that does not decode is INVALID_ARGUMENT,
 * a missing or wrong token UNAUTHENTICATED; each refusal is also an event.
 *
 * The closed loop: the service also drives the run state machine (controller/run.h) with the
 * policy in opts: every aggregated step feeds its detectors, committed checkpoints are
 * registered, and its repairs become ROLLBACK directives (to_step, skip ranges, hparams). Its
 * events are events here too (kind = the run event's kind: "spike_suspected", "rollback",
 * "recovered_spike", "halted", "alert", ...), with the evidence and the decision in the text.
 * A halted run holds the gang (a PAUSE directive) until the operator resumes. StatusReply.state
 * is the run's state when it says more than the fleet's (SPIKE_SUSPECTED, ROLLBACK,
 * SKIP_WINDOW, RESUME, HALTED), else the fleet's. */
#ifndef GY_SERVICE_H
#define GY_SERVICE_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "controller/alert.h"
#include "controller/core.h"
#include "controller/fleet.h"
#include "controller/journal.h"
#include "controller/run.h"
#include "controller/telemetry.h"
#include "policies/policy.h"

typedef struct {
  const char *listen;   /* "127.0.0.1:7070"; port 0 picks a free one */
  const char *run_name; /* StatusReply.run */
  int world, tp, window, heartbeat_ms, lost_after_ms;
  int hang_floor_ms, hang_factor; /* the hang rule (fleet.h; sent in every Assignment) */
  int reform_alert_ms;            /* fleet.h */
  int64_t steps;                  /* run.steps */
  const char *join_token;         /* NULL or "": workers need none */
  const char *operator_token;     /* NULL or "": operator calls need none */
  const char *config_yaml;        /* the run config text sent in every Assignment */
  const char *config_dir;         /* the folder its relative paths are relative to */
  int health;                     /* 1: serve grpc.health.v1.Health/Check */
  size_t max_message;             /* 0: gy_rpc's default (4 MiB) */
  int tick_ms;                    /* liveness tick period (0: 100 ms) */
  int emit_steps;                 /* 1: a JSON line per aggregated step on stdout */
  /* The closed loop (all optional). */
  const gy_policy_t *policy; /* the repair policy (copied; NULL: gy_policy_default()) */
  int batch;                 /* train.batch: sequences per step per data-parallel rank; 0:
                                unknown (a decision's step window cannot be skipped) */
  /* The run config's optimizer knobs that the policy's factors multiply; 0: unknown (that
   * factor is not applied). */
  float base_lr_scale, base_grad_clip, base_eps;
  const gy_fleet_skip_t *skip; /* the run config's data.skip (copied): ids skipped from the
                                  start, so that steps map to the sample ids the workers use */
  int nskip;
  /* Surfaces (optional, borrowed: they must outlive the service; NULL: none). The telemetry
   * record gets every aggregated step, event, state, report, committed checkpoint and applied
   * rollback; the alert sink gets the run's alerts (halted, repeated spikes, anomalies) and
   * stragglers (a "straggler" event says so too). */
  gy_telemetry_t *telemetry;
  gy_alert_t *alert;
  /* The run's durable record (borrowed; NULL: none). At create the service reads it back (a
   * restart or a standby taking over: events, committed checkpoints, skips in force, and a
   * rollback that was committed but not confirmed is completed); then every event, committed
   * checkpoint and rollback goes to it, a rollback's intent before its directive is sent.
   * The service writes it from its own writer thread (never the loop's), so the journal is
   * not used by the caller while the service lives (after gy_service_destroy it may be). */
  gy_journal_t *journal;
  /* Fencing (NULL: none): before it carries out an action of the fleet (assign, grant,
   * directive, but also a step record, an event or a journal write), and at most every
   * fence_every_ms, the service asks fence(fence_ud) whether it still leads (a look at the
   * leader key in the store). fence runs on the service's writer thread, not the loop's, in
   * order with the journal's writes; the actions wait for its answer. On 0 the action is not
   * carried out and the next one asks again (exit semantics are left to the caller): a
   * controller that was stopped (SIGSTOP, a long pause) while its lease ran out must not send
   * anything before it learns it was replaced. */
  int (*fence)(void *ud);
  void *fence_ud;
  int fence_every_ms;
  /* The run config's data channels and their training shards (copied; none: an operator's
   * quarantine may name any channel and file), and the quarantine list's bound (0: 65536). */
  const gy_core_channel_t *channels;
  int nchannels;
  size_t quarantine_max;
} gy_service_opts_t;

typedef struct gy_service gy_service_t;

/* Creates the fleet, the run state machine and the server, binds and starts serving on loop.
 * The callee copies opts (strings, policy and skips included). GY_EINVAL (bad opts, or a policy
 * that fails gy_policy_check: errmsg says why), GY_EIO (cannot bind: errmsg says why),
 * GY_ENOMEM. */
int gy_service_create(gy_service_t **out, uv_loop_t *loop, const gy_service_opts_t *opts,
                      char *errmsg, size_t errlen);
/* 1 when the journal read at create says the run already finished (nothing is left to do). */
int gy_service_recovered_done(const gy_service_t *s);
/* The bound port. */
int gy_service_port(const gy_service_t *s);
/* cb runs on the loop once, when the run reaches DONE. */
void gy_service_on_done(gy_service_t *s, void (*cb)(void *ud), void *ud);
/* Answers every held call (UNAVAILABLE), stops the server and the timer, then calls done on
 * the loop. Calling it twice is a no-op. */
void gy_service_shutdown(gy_service_t *s, void (*done)(void *ud), void *ud);
/* After shutdown's done (or if it never started): frees everything. NULL is a no-op. */
void gy_service_destroy(gy_service_t *s);
/* The fleet, read-only (state, members, history). */
const gy_fleet_t *gy_service_fleet(const gy_service_t *s);
/* The run state machine, read-only (state, repairs, checkpoints). */
const gy_run_t *gy_service_run(const gy_service_t *s);

#endif
