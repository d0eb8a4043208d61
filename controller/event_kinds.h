/* event_kinds: every kind of audit event the controller emits, in one X-macro table
 * (CONVENTIONS.md §3). Plain data: no I/O, no allocation; the pure modules (fleet, run) include
 * it.
 *
 * An event's kind travels as its name ("gang_formed"): on the Watch stream, in the Events
 * reply, in the journal, in the JSON log lines, as the /metrics label and on the dashboard. The
 * names are a wire format (gyroctl, old journals and the tests read them): never rename one.
 * Everything decided by kind is a column of the table, not a comparison of strings:
 *   level   INFO or WARN: the level of the event's log line;
 *   marker  the dashboard's marker class (NONE: listed only, no marker on the charts);
 *   notable 1: the dashboard lists it when "all events" is off;
 *   tally   the /metrics counter it also counts in (NONE, SPIKES, RECOVERED, DIRECTIVES). */
#ifndef GY_EVENT_KINDS_H
#define GY_EVENT_KINDS_H

/* XX(NAME, "wire name", level, marker, notable, tally), one comment above each. */
#define GY_EVENT_KIND_MAP(XX)                                                                      \
  /* fleet: a call or a report was refused (also the service: a bad token) */                      \
  XX(REFUSED, "refused", WARN, NONE, 0, NONE)                                                      \
  /* fleet: the fleet's state machine moved (FROM -> TO: why) */                                   \
  XX(STATE, "state", INFO, NONE, 0, NONE)                                                          \
  /* fleet or run: the run reached its last step */                                                \
  XX(DONE, "done", INFO, NONE, 1, NONE)                                                            \
  /* fleet: a directive was sent to the gang */                                                    \
  XX(DIRECTIVE, "directive", INFO, NONE, 0, DIRECTIVES)                                            \
  /* fleet: a directive not yet sent was dropped (the gang re-formed, or a newer one) */           \
  XX(DIRECTIVE_DROPPED, "directive_dropped", INFO, NONE, 0, NONE)                                  \
  /* fleet: every rank applied a directive */                                                      \
  XX(DIRECTIVE_APPLIED, "directive_applied", INFO, NONE, 0, NONE)                                  \
  /* fleet: a rank refused or failed a directive */                                                \
  XX(DIRECTIVE_FAILED, "directive_failed", WARN, NONE, 0, NONE)                                    \
  /* fleet: an operator command was queued as a directive */                                       \
  XX(COMMAND, "command", INFO, HPARAMS, 1, NONE)                                                   \
  /* fleet: every rank wrote a checkpoint and it is committed */                                   \
  XX(CHECKPOINT_COMMITTED, "checkpoint_committed", INFO, NONE, 0, NONE)                            \
  /* fleet: a committed checkpoint fell out of the retention window */                             \
  XX(CHECKPOINT_FORGOTTEN, "checkpoint_forgotten", INFO, NONE, 0, NONE)                            \
  /* fleet: a checkpoint some ranks never wrote was given up */                                    \
  XX(CHECKPOINT_INCOMPLETE, "checkpoint_incomplete", INFO, NONE, 0, NONE)                          \
  /* fleet: a worker joined (or comes back) */                                                     \
  XX(JOIN, "join", INFO, NONE, 0, NONE)                                                            \
  /* fleet: a worker left before the gang formed */                                                \
  XX(JOIN_CANCELLED, "join_cancelled", INFO, NONE, 0, NONE)                                        \
  /* fleet: a gang generation formed */                                                            \
  XX(GANG_FORMED, "gang_formed", INFO, NONE, 1, NONE)                                              \
  /* fleet: a rank's worker exited */                                                              \
  XX(WORKER_EXITED, "worker_exited", INFO, NONE, 0, NONE)                                          \
  /* fleet or run: a rank was lost (its stream broke, or it stopped reporting) */                  \
  XX(WORKER_LOST, "worker_lost", WARN, LOST, 1, NONE)                                              \
  /* fleet: a rank made no progress (stuck in its own work inside a step): it is replaced */       \
  XX(WORKER_HUNG, "worker_hung", WARN, LOST, 1, NONE)                                              \
  /* fleet: a gang lost a worker and has not re-formed within reform_alert_ms */                   \
  XX(REFORM_STALLED, "reform_stalled", WARN, LOST, 1, NONE)                                        \
  /* fleet: a step's loss or gradient was not finite */                                            \
  XX(NONFINITE, "nonfinite", INFO, SPIKE, 1, NONE)                                                 \
  /* fleet or run: a rollback was applied (fleet) or decided (run) */                              \
  XX(ROLLBACK, "rollback", INFO, ROLLBACK, 1, NONE)                                                \
  /* fleet: ranks refused to restore the rollback's checkpoint */                                  \
  XX(ROLLBACK_FAILED, "rollback_failed", WARN, ROLLBACK, 1, NONE)                                  \
  /* fleet or run: training goes on (after a rollback, a pause or a halt) */                       \
  XX(RESUMED, "resumed", INFO, NONE, 1, NONE)                                                      \
  /* fleet or service: an internal error (out of memory, the journal gave up) */                   \
  XX(ERROR, "error", INFO, NONE, 1, NONE)                                                          \
  /* run: the run started training */                                                              \
  XX(STARTED, "started", INFO, NONE, 0, NONE)                                                      \
  /* run: a series jumped; the run watches the next steps */                                       \
  XX(SPIKE_SUSPECTED, "spike_suspected", WARN, SPIKE, 1, SPIKES)                                   \
  /* run: a suspected spike went away without a repair */                                          \
  XX(RECOVERED_SPIKE, "recovered_spike", INFO, RECOVERED, 1, RECOVERED)                            \
  /* run: the repair's skips and knob changes are applied */                                       \
  XX(SKIP, "skip", INFO, SKIP, 1, NONE)                                                            \
  /* run: the repair is done; grants go out again */                                               \
  XX(RESUME, "resume", INFO, NONE, 1, NONE)                                                        \
  /* run: the run paused (operator, or a pause deferred until a repair ended) */                   \
  XX(PAUSED, "paused", INFO, NONE, 1, NONE)                                                        \
  /* run: the run halted: a human decides */                                                       \
  XX(HALTED, "halted", WARN, HALT, 1, NONE)                                                        \
  /* run: a committed checkpoint, clean or suspect */                                              \
  XX(CHECKPOINT, "checkpoint", INFO, NONE, 0, NONE)                                                \
  /* run: an alert-only detector fired, or a spike while paused */                                 \
  XX(ANOMALY, "anomaly", WARN, SPIKE, 1, NONE)                                                     \
  /* run: an operator request waits until the repair in progress ends */                           \
  XX(DEFERRED, "deferred", INFO, NONE, 0, NONE)                                                    \
  /* run: a held-out evaluation regressed */                                                       \
  XX(EVAL_REGRESSION, "eval_regression", INFO, SPIKE, 1, NONE)                                     \
  /* run: a state forced by a test (gy__run_transition) */                                         \
  XX(FORCED, "forced", INFO, NONE, 0, NONE)                                                        \
  /* service: a GPU reported a fault (ECC, throttling, ...) */                                     \
  XX(HARDWARE, "hardware", INFO, LOST, 1, NONE)                                                    \
  /* service: a rank is much slower than the others */                                             \
  XX(STRAGGLER, "straggler", INFO, LOST, 1, NONE)                                                  \
  /* service: the store answered again after failing */                                            \
  XX(STORE, "store", INFO, NONE, 0, NONE)                                                          \
  /* service: restarted from the journal, or a repair completed */                                 \
  XX(RECOVERED, "recovered", INFO, NONE, 0, NONE)                                                  \
  /* service: a policy set by the operator was refused */                                          \
  XX(POLICY_REFUSED, "policy_refused", INFO, NONE, 0, NONE)                                        \
  /* service: the operator replaced the policy */                                                  \
  XX(POLICY_SET, "policy_set", INFO, NONE, 0, NONE)                                                \
  /* service: a malformed request or message */                                                    \
  XX(MALFORMED, "malformed", WARN, NONE, 0, NONE)                                                  \
  /* service: the run's alert (also posted to the webhook) */                                      \
  XX(ALERT, "alert", WARN, NONE, 1, NONE)                                                          \
  /* service: a repair was dropped (the run was no longer training) */                             \
  XX(ROLLBACK_DROPPED, "rollback_dropped", INFO, NONE, 1, NONE)                                    \
  /* core: the workers' guard masked samples of a step (which, why, where from) */                 \
  XX(SAMPLES_MASKED, "samples_masked", INFO, NONE, 0, NONE)                                        \
  /* core: regions of shard files quarantined (the guard's masked samples, or the operator) */     \
  XX(QUARANTINED, "quarantined", INFO, NONE, 1, NONE)                                              \
  /* core: the operator released quarantined regions (trained on again) */                         \
  XX(QUARANTINE_RELEASED, "quarantine_released", INFO, NONE, 1, NONE)

typedef enum {
#define GY_EVENT_KIND_ENUM(name, str, level, marker, notable, tally) GY_EVENT_##name,
  GY_EVENT_KIND_MAP(GY_EVENT_KIND_ENUM)
#undef GY_EVENT_KIND_ENUM
      GY_EVENT_NKINDS
} gy_event_kind_t;

typedef enum { GY_EVENT_LEVEL_INFO, GY_EVENT_LEVEL_WARN } gy_event_level_t;

/* The dashboard's marker classes (their names are CSS classes: "k-spike", ...). */
#define GY_EVENT_MARKER_MAP(XX)                                                                    \
  XX(NONE, "")                                                                                     \
  XX(SPIKE, "spike")                                                                               \
  XX(RECOVERED, "recovered")                                                                       \
  XX(ROLLBACK, "rollback")                                                                         \
  XX(SKIP, "skip")                                                                                 \
  XX(HPARAMS, "hparams")                                                                           \
  XX(HALT, "halt")                                                                                 \
  XX(LOST, "lost")

typedef enum {
#define GY_EVENT_MARKER_ENUM(name, str) GY_EVENT_MARKER_##name,
  GY_EVENT_MARKER_MAP(GY_EVENT_MARKER_ENUM)
#undef GY_EVENT_MARKER_ENUM
      GY_EVENT_NMARKERS
} gy_event_marker_t;

/* The /metrics counters an event kind also counts in. */
typedef enum {
  GY_EVENT_TALLY_NONE,
  GY_EVENT_TALLY_SPIKES,     /* gyro_spikes_detected_total */
  GY_EVENT_TALLY_RECOVERED,  /* gyro_spikes_recovered_total */
  GY_EVENT_TALLY_DIRECTIVES, /* gyro_directives_total */
} gy_event_tally_t;

typedef struct {
  const char *name; /* the wire name */
  gy_event_level_t level;
  gy_event_marker_t marker;
  int notable;
  gy_event_tally_t tally;
} gy_event_kind_info_t;

/* The wire name of k ("gang_formed"); "unknown" when out of range. */
const char *gy_event_kind_name(gy_event_kind_t k);
/* The attributes of k (a static entry; out of range: "unknown", INFO, no marker). */
const gy_event_kind_info_t *gy_event_kind_info(gy_event_kind_t k);
/* The kind named `name` into *out: 0, or GY_ENOENT (an unknown or NULL name; *out untouched). */
int gy_event_kind_from_name(const char *name, gy_event_kind_t *out);
/* The marker class's name ("spike"; "" for NONE or out of range). */
const char *gy_event_marker_name(gy_event_marker_t m);

#endif
