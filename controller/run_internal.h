/* run_internal: what the files of the run state machine (run.c, run_detect.c, run_save.c)
 * share: struct gy_run and the gy__run_* calls between the files. Not part of the public API;
 * the gy__run_* calls for tests are in run.h. */
#ifndef GY_CONTROLLER_RUN_INTERNAL_H
#define GY_CONTROLLER_RUN_INTERNAL_H

#include "controller/run.h"

#include <stddef.h>
#include <stdint.h>

#define MAX_FIRED 16 /* series remembered per suspicion */

typedef struct {
  int64_t first, last; /* checkpoints with first < step <= last are suspect */
} interval_t;

struct gy_run {
  gy_policy_t pol;
  gy_run_state_t state;
  gy_detect_t *det;
  gy_series_kind_t *kinds; /* kind of each detector series, in creation order */
  int capkinds;
  int64_t last_step;
  int64_t last_eval; /* step of the newest held-out evaluation fed (-1: none) */
  /* the newest step seen when the last repair of bad data (spike, drop, NaN) that changed no
   * knobs began: the steps up to it run again after its rollback, and a jump among them means
   * the repair missed part of the cause (-1: none) */
  int64_t replay_until;
  /* the suspicion (SPIKE_SUSPECTED) */
  int64_t susp_first, susp_last;
  char susp_series[MAX_FIRED][GY_DETECT_NAME_MAX];
  int nsusp_series;
  uint64_t susp_samples[GY_POLICY_MAX_SAMPLES];
  int nsusp_samples;
  char susp_evidence[512];
  gy_verdict_t susp_verdict[GY_RUN_EVIDENCE_MAX];
  int nsusp_verdict;
  /* checkpoints and suspect intervals */
  gy_run_ckpt_t *ckpts;
  int nckpts, capckpts;
  interval_t *ivals;
  int nivals, capivals;
  /* repairs */
  gy_policy_repair_t *hist;
  int nhist, caphist;
  int hist_base; /* the escalation sees hist[hist_base..]: an operator resume starts it over */
  int repairing;
  gy_policy_decision_t dec;
  int64_t target;
  uint64_t repair_id;
  int pause_after; /* a pause asked during a repair (or a repair of a paused run) */
  /* outputs */
  gy_run_event_t *evs;
  size_t nevs, capevs;
  gy_run_action_t *acts;
  size_t nacts, capacts;
  uint64_t event_id;
  uint64_t dropped; /* events and actions lost to out of memory (gy_run_dropped) */
  int64_t now;      /* the current input's time */
  char errmsg[256];
};

/* Evidence and decision attached to the event of a move. */
typedef struct {
  const char *evidence;
  const gy_verdict_t *v;
  int nv;
  const char *decision;
} extra_t;

/* run.c: outputs. */
int gy__run_grow(void **p, size_t *cap, size_t need, size_t size);
int gy__run_reserve_ivals(gy_run_t *r, int extra);
int gy__run_reserve_hist(gy_run_t *r);
gy_run_event_t *gy__run_event(gy_run_t *r, gy_event_kind_t kind, int64_t step, gy_run_state_t from,
                              gy_run_state_t to, const char *reason, const extra_t *x);
void gy__run_alert(gy_run_t *r, gy_alert_class_t cls, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int gy__run_refuse(gy_run_t *r, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* run.c: the state machine. */
int gy__run_move(gy_run_t *r, gy_run_state_t to, gy_event_kind_t kind, const char *reason,
                 const extra_t *x);
int gy__run_repair(gy_run_t *r, gy_trigger_t t, int64_t first, int64_t last,
                   const uint64_t *samples, int nsamples, const char *evidence,
                   const gy_verdict_t *v, int nv);

#endif
