/* telemetry_internal: what the files of the telemetry (telemetry.c, telemetry_json.c) share:
 * struct gy_telemetry, its parts, the readers' snapshot and the gy__tm_* calls between the
 * files. Not part of the public API. */
#ifndef GY_CONTROLLER_TELEMETRY_INTERNAL_H
#define GY_CONTROLLER_TELEMETRY_INTERNAL_H

#include "controller/telemetry.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define MAX_ALERT_KINDS 16 /* distinct alert kinds counted */
#define EVAL_RING 1024     /* held-out records kept */

typedef struct {
  int64_t step;
  int timeline; /* ab only: the timeline it belonged to */
  int nonfinite;
  double loss, gn, gns, gnd, lr, tps, step_ms;
  double ch[GY_TM_MAX_CH];
} pt_t;

typedef struct {
  uint64_t id;
  double time;
  int64_t step;
  char kind[GY_TM_EVENT_KIND];
  char text[GY_TM_EVENT_TEXT];
} ev_t;

typedef struct {
  int64_t step;
  int src;
  double loss, ppl;
  double cloze; /* cloze accuracy, NaN: unknown */
  int ckpt;     /* 1: the evaluation of the checkpoint of `step` */
} eval_t;

typedef struct {
  double tps, temp, mem, mem_total, util;
} rank_t;

struct gy_telemetry {
  pthread_mutex_t mu;
  gy_telemetry_opts_t o;
  char run_name[128];
  /* state */
  int ready;
  char ready_why[160];
  char state[32];
  uint64_t generation;
  int gang;
  int64_t last_step; /* -1: none */
  int timeline;
  /* channels and sources */
  int nch;
  char ch[GY_TM_MAX_CH][GY_TM_NAME];
  int nsrc;
  char src[GY_TM_MAX_CH][GY_TM_NAME];
  /* points */
  int nrk; /* ranks with a throughput history */
  pt_t *ring;
  double *ring_rk; /* ring_steps * nrk */
  int head, n;     /* oldest at head, n used */
  pt_t *coarse;
  double *coarse_rk;
  int cn;
  int64_t stride;
  pt_t *ab;
  int abhead, abn;
  /* newest per rank */
  rank_t *ranks; /* world entries */
  int gpu_seen;
  /* held-out */
  eval_t *evals; /* EVAL_RING, a ring */
  int evhead, evn;
  eval_t eval_last[GY_TM_MAX_CH]; /* newest per source */
  /* events */
  ev_t *events;
  int ehead, en;
  /* counters */
  uint64_t spikes, recovered, rollbacks, skipped, directives, nonfinite, nevents, nckpt;
  atomic_uint_fast64_t reports;
  uint64_t kind_n[GY_EVENT_NKINDS]; /* events by kind */
  uint64_t kind_other;              /* events of a kind out of range */
  int nalert;
  char alert_kind[MAX_ALERT_KINDS][GY_TM_EVENT_KIND];
  uint64_t alert_n[MAX_ALERT_KINDS][4]; /* sent, suppressed, failed, dropped */
  /* checkpoint */
  int64_t ckpt_step; /* -1: none */
  double ckpt_time;
  uint64_t ckpt_bytes;
  /* the guard and the quarantine */
  int have_guard;
  double masked_share; /* of the newest step with a sample count */
  uint64_t guard_samples, guard_masked;
  int nmask;
  char mask_ch[GY_TM_MASK_PAIRS][GY_TM_NAME], mask_why[GY_TM_MASK_PAIRS][GY_TM_NAME];
  uint64_t mask_n[GY_TM_MASK_PAIRS];
  uint64_t quar_active, quar_released;
  int have_quar;
  json_t *quar; /* the dashboard's list (NULL: none yet) */
};

/* What the readers copy out under the lock. */
typedef struct {
  char run_name[128], state[32], ready_why[160];
  int ready, gang, world, tp, timeline, nch, nsrc, nrk, gpu_seen, have_last;
  uint64_t generation;
  int64_t last_step, steps, stride;
  char ch[GY_TM_MAX_CH][GY_TM_NAME];
  char src[GY_TM_MAX_CH][GY_TM_NAME];
  pt_t last;
  rank_t *ranks;
  eval_t eval_last[GY_TM_MAX_CH];
  uint64_t spikes, recovered, rollbacks, skipped, directives, nonfinite, nevents, nckpt, reports;
  int nalert;
  uint64_t kind_n[GY_EVENT_NKINDS], kind_other;
  char alert_kind[MAX_ALERT_KINDS][GY_TM_EVENT_KIND];
  uint64_t alert_n[MAX_ALERT_KINDS][4];
  int64_t ckpt_step;
  double ckpt_time;
  uint64_t ckpt_bytes;
  int have_guard, have_quar, nmask;
  double masked_share;
  uint64_t guard_samples, guard_masked, quar_active, quar_released;
  char mask_ch[GY_TM_MASK_PAIRS][GY_TM_NAME], mask_why[GY_TM_MASK_PAIRS][GY_TM_NAME];
  uint64_t mask_n[GY_TM_MASK_PAIRS];
} snap_t;

/* Copies the scalars and the newest per-rank figures. Under mu. */

/* telemetry.c: copies the scalars and the newest per-rank figures into *s. Under mu. */
int gy__tm_snap_take(const gy_telemetry_t *t, snap_t *s);

#endif
