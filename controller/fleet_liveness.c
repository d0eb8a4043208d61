/*
 * fleet_liveness: the fleet's liveness (see fleet.h): heartbeats, the trainer's progress, a
 * closed session, the tick's verdicts (silence past lost_after_ms; the hang rule), and losing a
 * rank.
 *
 * API, in order: gy__fleet_lose (fleet_internal.h); heartbeat, progress, session_closed, tick
 * (with the re-forming watch: a gang not back within reform_alert_ms is told once).
 *
 * Liveness is progress, not a heartbeat: a rank whose heartbeats say it is inside a step, in
 * its own work (not waiting for its peers in a collective), for longer than
 * max(hang_floor_ms, hang_factor x its recent step time) is hung. Its own work goes on growing
 * after the heartbeat that said it was working; the ranks that wait for it in the collective
 * are not hung. A hung rank is lost like a silent one, and its session ends with details that
 * begin GY_WIRE_HUNG_PREFIX, on which its agent ends its process.
 *
 * Invariants: a rank is lost at most once (alive goes 0); in STOPPING a lost rank counts as an
 * exit (its ack), no hang verdict is made then.
 */
#include "controller/fleet_internal.h"

#include <stdio.h>
#include <string.h>

#include "proto/contract.h"

void gy__fleet_lose(gy_fleet_t *f, int rank, const char *why) {
  gy_fleet_member_t *m = &f->members[rank];
  if (!m->alive) return;
  m->alive = 0;
  if (f->state == GY_FLEET_STOPPING) {
    m->connected = 0;
    gy__fleet_event(f, GY_EVENT_WORKER_EXITED, f->last_step, "rank %d (%s) exited: %s", rank,
                    m->worker_id, why);
    gy__fleet_check_acks(f);
    return;
  }
  gy_fleet_action_t *a = gy__fleet_push(f, GY_FLEET_ACT_LOST);
  if (a) a->rank = rank;
  if (m->connected) { /* a silent worker's stream is finished: it must rejoin */
    m->connected = 0;
    a = gy__fleet_push(f, GY_FLEET_ACT_CLOSE);
    if (a) {
      a->rank = rank;
      if (m->hung) snprintf(a->msg, sizeof(a->msg), "%s: %s", GY_WIRE_HUNG_PREFIX, why);
    }
  }
  gy__fleet_event(f, GY_EVENT_WORKER_LOST, f->last_step, "rank %d (%s) lost: %s", rank,
                  m->worker_id, why);
  if (f->state == GY_FLEET_TRAIN || f->state == GY_FLEET_PAUSED)
    gy__fleet_transition(f, GY_FLEET_DEGRADED, "worker lost");
}

int gy_fleet_heartbeat(gy_fleet_t *f, int64_t now, int stream_rank, uint64_t generation, int rank) {
  int rc = gy__fleet_check_msg(f, "heartbeat", stream_rank, generation, rank);
  if (rc) return rc;
  f->members[rank].last_seen_ms = now;
  return 0;
}

void gy_fleet_progress(gy_fleet_t *f, int64_t now, int rank, const gy_fleet_progress_t *p) {
  if (rank < 0 || rank >= f->nmembers || !p) return;
  gy_fleet_member_t *m = &f->members[rank];
  m->stepping = p->stepping != 0;
  m->own_ms = p->own_ms > 0 ? p->own_ms : 0;
  m->coll_ms = p->in_collective_ms > 0 ? p->in_collective_ms : 0;
  m->progress_ms = now;
}

/* The hang rule on member r (see gy_fleet_opts_t): 1 when it is hung, with the evidence. Its
 * own work goes on growing after its last heartbeat when that said it was working (not waiting
 * in a collective). */
static int hung(const gy_fleet_t *f, const gy_fleet_member_t *m, int64_t now, char *why,
                size_t len) {
  if (!f->o.hang_floor_ms || !m->stepping || m->coll_ms) return 0;
  int64_t own = m->own_ms + (now > m->progress_ms ? now - m->progress_ms : 0);
  double thr = (double)f->o.hang_factor * m->recent_step_ms;
  if (thr < f->o.hang_floor_ms) thr = f->o.hang_floor_ms;
  if ((double)own <= thr) return 0;
  snprintf(why, len,
           "inside step %lld for %lld ms of its own work, not waiting for its peers; its recent "
           "steps took %.0f ms; the threshold is %.0f ms",
           (long long)m->steps_done, (long long)own, m->recent_step_ms, thr);
  return 1;
}

void gy_fleet_session_closed(gy_fleet_t *f, int64_t now, int rank) {
  (void)now;
  if (rank < 0 || rank >= f->nmembers) return;
  gy_fleet_member_t *m = &f->members[rank];
  m->connected = 0;
  if (f->state == GY_FLEET_TRAIN || f->state == GY_FLEET_PAUSED || f->state == GY_FLEET_STOPPING)
    gy__fleet_lose(f, rank, "session stream closed");
}

/* Re-forming is bounded: a gang lost since `gangless_since` and not back within reform_alert_ms
 * is told once per outage (an event, which the core also alerts on). */
static void reform_watch(gy_fleet_t *f, int64_t now) {
  if (f->state == GY_FLEET_TRAIN || f->state == GY_FLEET_PAUSED || f->state == GY_FLEET_STOPPING ||
      f->state == GY_FLEET_DONE || !f->generation) {
    f->gangless_since = -1;
    f->reform_told = 0;
    return;
  }
  if (f->gangless_since < 0) f->gangless_since = now;
  if (!f->o.reform_alert_ms || f->reform_told || now - f->gangless_since <= f->o.reform_alert_ms)
    return;
  f->reform_told = 1;
  gy__fleet_event(f, GY_EVENT_REFORM_STALLED, f->last_step,
                  "the gang of generation %llu lost a worker and has not re-formed for %lld ms: "
                  "%d of %d workers joined again (state %s); it waits for the rest",
                  (unsigned long long)f->generation, (long long)(now - f->gangless_since),
                  f->njoiners, f->o.world, gy_fleet_state_name(f->state));
}

void gy_fleet_tick(gy_fleet_t *f, int64_t now) {
  if (f->state == GY_FLEET_TRAIN || f->state == GY_FLEET_PAUSED || f->state == GY_FLEET_STOPPING)
    for (int r = 0; r < f->nmembers; r++) {
      gy_fleet_member_t *m = &f->members[r];
      if (!m->alive) continue;
      char why[240];
      if (now - m->last_seen_ms > f->o.lost_after_ms) {
        snprintf(why, sizeof(why), "silent for %lld ms", (long long)(now - m->last_seen_ms));
      } else if (f->state != GY_FLEET_STOPPING && hung(f, m, now, why, sizeof(why))) {
        gy__fleet_event(f, GY_EVENT_WORKER_HUNG, f->last_step, "rank %d (%s) hung: %s", r,
                        m->worker_id, why);
        m->hung = 1; /* its session ends "declared hung": its process ends and is started again */
      } else {
        continue;
      }
      gy__fleet_lose(f, r, why);
      if (f->state == GY_FLEET_DEGRADED || f->state == GY_FLEET_DONE) break;
    }
  reform_watch(f, now); /* after the verdicts: the tick that lost the gang starts the clock */
}
