/*
 * comm_timed: every communicator of gy_comm_groups_create is wrapped so that the process knows
 * how long it waits in collectives: the total time spent inside them (a step's compute time is
 * its wall time minus that: what tells a slow rank from the ranks that wait for it), and whether
 * a collective is in progress and since when (what tells a hung rank, stuck in its own work,
 * from the ranks stuck waiting for it in a collective).
 *
 * API, in order: gy__comm_timed_wrap (comm_internal.h), gy_comm_blocked_ns,
 * gy_comm_in_collective_ns (comm.h).
 *
 * Invariants: the counters are process-wide atomics, read from any thread (the agent's
 * heartbeat thread reads them while the trainer runs). Collectives of different groups may run
 * on different threads at once: `active` counts them, `since_ns` is when the oldest still in
 * progress began, and their times add up in `blocked_ns` (overlapping calls count twice).
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/err.h"
#include "worker/comm.h"
#include "worker/comm_internal.h"

static _Atomic int64_t blocked_ns;
static _Atomic int active;
static _Atomic int64_t since_ns;

static int64_t mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t enter(void) {
  int64_t t = mono_ns();
  if (atomic_fetch_add(&active, 1) == 0) atomic_store(&since_ns, t);
  return t;
}

/* Ends a call begun at t0; copies the inner communicator's message on failure. */
static int leave(gy_comm_t *c, int64_t t0, int rc) {
  atomic_fetch_add(&blocked_ns, mono_ns() - t0);
  if (atomic_fetch_sub(&active, 1) == 1) atomic_store(&since_ns, 0);
  if (rc) {
    gy_comm_t *in = c->impl;
    snprintf(c->errmsg, sizeof(c->errmsg), "%s", in->errmsg);
  }
  return rc;
}

static int t_allreduce(gy_comm_t *c, void *buf, size_t count, gy_dtype_t dt, gy_redop_t op) {
  gy_comm_t *in = c->impl;
  int64_t t0 = enter();
  return leave(c, t0, in->ops->allreduce(in, buf, count, dt, op));
}

static int t_allgather(gy_comm_t *c, const void *src, void *out, size_t count, gy_dtype_t dt) {
  gy_comm_t *in = c->impl;
  int64_t t0 = enter();
  return leave(c, t0, in->ops->allgather(in, src, out, count, dt));
}

static int t_reduce_scatter(gy_comm_t *c, const void *src, void *out, size_t count, gy_dtype_t dt,
                            gy_redop_t op) {
  gy_comm_t *in = c->impl;
  int64_t t0 = enter();
  return leave(c, t0, in->ops->reduce_scatter(in, src, out, count, dt, op));
}

static int t_broadcast(gy_comm_t *c, void *buf, size_t count, gy_dtype_t dt, int root) {
  gy_comm_t *in = c->impl;
  int64_t t0 = enter();
  return leave(c, t0, in->ops->broadcast(in, buf, count, dt, root));
}

static int t_barrier(gy_comm_t *c) {
  gy_comm_t *in = c->impl;
  int64_t t0 = enter();
  return leave(c, t0, in->ops->barrier(in));
}

static void t_abort(gy_comm_t *c) {
  gy_comm_t *in = c->impl;
  in->ops->abort(in);
}

static void t_destroy(gy_comm_t *c) {
  gy_comm_t *in = c->impl;
  in->ops->destroy(in);
  free(c);
}

/* Returns a communicator that times inner's calls and owns inner (NULL: out of memory; inner
 * is then destroyed). The name of the table is the inner one's. */
gy_comm_t *gy__comm_timed_wrap(gy_comm_t *inner) {
  gy_comm_t *c = calloc(1, sizeof(*c) + sizeof(gy_comm_ops_t));
  if (!c) {
    inner->ops->destroy(inner);
    return NULL;
  }
  gy_comm_ops_t *ops = (gy_comm_ops_t *)(c + 1);
  *ops = (gy_comm_ops_t){inner->ops->name, t_allreduce, t_allgather, t_reduce_scatter,
                         t_broadcast,      t_barrier,   t_abort,     t_destroy};
  c->ops = ops;
  c->rank = inner->rank;
  c->size = inner->size;
  c->impl = inner;
  return c;
}

int64_t gy_comm_blocked_ns(void) {
  return atomic_load(&blocked_ns);
}

int64_t gy_comm_in_collective_ns(void) {
  int64_t s = atomic_load(&since_ns);
  if (!s || !atomic_load(&active)) return 0;
  int64_t d = mono_ns() - s;
  return d > 0 ? d : 1;
}
