/* fleet_internal: what the files of the fleet (fleet.c, fleet_directive.c) share: struct
 * gy_fleet and the gy__fleet_* calls between the files. Not part of the public API; the
 * gy__fleet_* calls for tests are in fleet.h. */
#ifndef GY_CONTROLLER_FLEET_INTERNAL_H
#define GY_CONTROLLER_FLEET_INTERNAL_H

#include "controller/fleet.h"

#include <stddef.h>
#include <stdint.h>

#define QUEUE_MAX 64

_Static_assert(GY_FLEET_ROLLBACK_LOG > QUEUE_MAX + 1, "the rollback log must outlive the queue");

typedef struct {
  gy_fleet_rollback_t pub; /* pub.skip points at skip */
  gy_fleet_skip_t *skip;
} rb_rec_t;

/* A QUARANTINE or SET_GUARD payload: pub.entries points at entries, whose strings live in
 * strs (one block). */
typedef struct {
  gy_fleet_qdir_t pub;
  gy_fleet_qentry_t *entries;
  char *strs;
} q_rec_t;

_Static_assert(GY_FLEET_QLOG > QUEUE_MAX + 1, "the quarantine log must outlive the queue");

typedef struct {
  uint64_t seq;
  int kind;
  gy_fleet_hparams_t hp;
  rb_rec_t *rb; /* ROLLBACK: its record in the log (owned by the log) */
  q_rec_t *q;   /* QUARANTINE, SET_GUARD: its payload in the quarantine log (owned by it) */
} directive_t;

typedef struct {
  gy_fleet_member_t m;
  uint64_t handle;
  uint64_t prev_generation;
} joiner_t;

struct gy_fleet {
  gy_fleet_opts_t o;
  gy_fleet_state_t state;
  int64_t gangless_since; /* the tick that first saw no gang after one formed (-1: a gang) */
  int reform_told;        /* the reform_stalled event of this outage was appended */
  uint64_t generation;
  int64_t start_step;
  int64_t horizon;
  gy_fleet_member_t *members; /* world entries once formed */
  int nmembers;
  joiner_t *joiners; /* world entries at most */
  int njoiners;
  /* directives */
  uint64_t seq;
  directive_t inflight;
  int inflight_on, inflight_sent;
  directive_t queue[QUEUE_MAX];
  int nqueue;
  int pause_intent; /* PAUSED, or a PAUSE accepted and no RESUME after it */
  int stop_intent;
  int rb_failed; /* every rank refused the last ROLLBACK: no grants until one succeeds or the
                    operator resumes */
  /* checkpoints */
  int64_t committed[GY_FLEET_MAX_COMMITTED]; /* newest first */
  int ncommitted;
  struct {
    int64_t step;
    int n;          /* ranks that reported it */
    uint64_t bytes; /* the sum of their files' sizes */
  } pending[GY_FLEET_PENDING_CKPT];
  int npending;
  /* rollbacks: ring of records, rblog[(nrb - 1) % LOG] the newest */
  rb_rec_t *rblog[GY_FLEET_ROLLBACK_LOG];
  uint64_t nrb;
  /* QUARANTINE and SET_GUARD payloads: a ring, qlog[(nq - 1) % GY_FLEET_QLOG] the newest */
  q_rec_t *qlog[GY_FLEET_QLOG];
  uint64_t nq;
  /* history */
  gy_fleet_step_t *hist;
  int64_t hcap;
  int64_t last_step;
  /* outputs */
  gy_fleet_action_t *acts;
  size_t nacts, capacts;
  uint64_t event_id;
  uint64_t dropped; /* actions lost to out of memory (gy_fleet_dropped) */
  uint64_t session_ctr;
  char errmsg[256];
};

/* fleet.c: actions and refusals. */
gy_fleet_action_t *gy__fleet_push(gy_fleet_t *f, gy_fleet_act_kind_t k);
void gy__fleet_event(gy_fleet_t *f, gy_event_kind_t kind, int64_t step, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
int gy__fleet_refuse(gy_fleet_t *f, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* fleet.c: the state machine, checkpoints, membership, grants. */
void gy__fleet_drop_directive(gy_fleet_t *f, directive_t *d, const char *why);
void gy__fleet_copy_str(char *dst, size_t n, const char *src);
int gy__fleet_is_committed(const gy_fleet_t *f, int64_t step);
void gy__fleet_commit(gy_fleet_t *f, int64_t step, uint64_t bytes);
void gy__fleet_forget_committed(gy_fleet_t *f, int64_t step, int inclusive);
int64_t gy__fleet_min_steps(const gy_fleet_t *f);
void gy__fleet_maybe_grant(gy_fleet_t *f);
void gy__fleet_lose(gy_fleet_t *f, int rank, const char *why);
int gy__fleet_check_msg(gy_fleet_t *f, const char *what, int stream_rank, uint64_t generation,
                        int rank);

/* fleet_directive.c: the directive pipeline. */
void gy__fleet_send_directive(gy_fleet_t *f, int rank);
void gy__fleet_pump(gy_fleet_t *f);
void gy__fleet_rollback_done(gy_fleet_t *f, const directive_t *d);
void gy__fleet_rollback_failed(gy_fleet_t *f, const directive_t *d, int nok);
void gy__fleet_check_acks(gy_fleet_t *f);
void gy__fleet_q_free(q_rec_t *q);

#endif
