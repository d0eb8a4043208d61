/*
 * jwriter: the controller's store operations on one worker thread, in FIFO order, so that the
 * loop thread never waits for the store (see jwriter.h).
 *
 * API, in order: create, start, submit, close, destroy, pending.
 *
 * The loop thread submits nodes to `q` (mutex `mu`, condition `cv`); the thread takes the head,
 * runs it without the lock (a must-write sleeps between tries on `cv`, so destroy can cut the
 * retry short), and moves a node whose submitter waits (done) to `doneq`, then wakes the loop
 * with uv_async_send; on_async (loop thread) runs the done callbacks in order and frees the
 * nodes. Nodes without done are freed on the thread.
 *
 * Invariants:
 * - One thread runs the operations, one at a time, in submit order: a write never overtakes an
 *   earlier one, and done callbacks run in submit order.
 * - After close no done runs (the async handle is gone: the thread no longer sends to it);
 *   queued operations are still written until destroy, which tries each remaining one once and
 *   abandons the rest after the first failure (the store is gone: shutting down must not wait
 *   10 minutes per record).
 * - An operation holds only what it copied at submit (and borrowed objects that outlive the
 *   writer, such as the journal): the thread never reads the loop's state.
 */
#include "controller/jwriter.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/err.h"
#include "common/log.h"

#define ERRMSG_MAX 512

typedef struct node {
  gy_jwriter_req_t req;
  char what[128];
  void *op;
  gy_jwriter_result_t res;
  char err[ERRMSG_MAX];
  struct node *next;
} node_t;

struct gy_jwriter {
  uv_loop_t *loop;
  uv_async_t async;
  gy_jwriter_opts_t o;
  pthread_t thread;
  int started;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  node_t *q, *qtail; /* submitted, not yet taken by the thread */
  node_t *doneq, *donetail;
  size_t pending; /* submitted and not ended */
  int closed;     /* no more done callbacks; the async handle is closing or closed */
  int stopping;   /* destroy: flush what is queued, once each, then end */
  void (*close_cb)(void *);
  void *close_ud;
};

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void node_free(node_t *n) {
  if (n->req.free_op && n->op) n->req.free_op(n->op);
  free(n);
}

/* Loop thread: the outcomes, in order. */
static void on_async(uv_async_t *h) {
  gy_jwriter_t *w = h->data;
  pthread_mutex_lock(&w->mu);
  node_t *n = w->doneq;
  w->doneq = w->donetail = NULL;
  pthread_mutex_unlock(&w->mu);
  while (n) {
    node_t *next = n->next;
    int closed;
    pthread_mutex_lock(&w->mu);
    closed = w->closed;
    pthread_mutex_unlock(&w->mu);
    n->res.errmsg = n->err;
    if (!closed) n->req.done(n->req.ud, n->op, &n->res); /* a done may close the writer */
    node_free(n);
    n = next;
  }
}

/* Runs one operation: a must-write is retried with back-off (sleeping on cv, so destroy cuts
 * the wait short) until written or give_up_ms, anything else is tried once. */
static void run_node(gy_jwriter_t *w, node_t *n) {
  int64_t t0 = mono_ms(), backoff = w->o.backoff_min_ms;
  for (;;) {
    n->err[0] = 0;
    n->res.rc = n->req.run(n->op, n->err, sizeof(n->err));
    n->res.tries++;
    if (!n->res.rc) break;
    if (!n->err[0]) snprintf(n->err, sizeof(n->err), "%s", gy_strerror(n->res.rc));
    if (!n->req.must) {
      if (!n->req.done) gy_log(GY_LOG_WARN, "controller", "journal: %s: %s", n->what, n->err);
      break;
    }
    if (n->res.tries == 1)
      gy_log(GY_LOG_ERROR, "controller",
             "journal: cannot write the %s: %s; holding the run until the store answers", n->what,
             n->err);
    pthread_mutex_lock(&w->mu);
    int stop = w->stopping;
    if (!stop && mono_ms() - t0 <= w->o.give_up_ms) {
      struct timespec ts;
      clock_gettime(CLOCK_MONOTONIC, &ts);
      ts.tv_sec += backoff / 1000;
      ts.tv_nsec += (backoff % 1000) * 1000000;
      if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
      }
      pthread_cond_timedwait(&w->cv, &w->mu, &ts);
      stop = w->stopping;
    } else {
      stop = 1;
    }
    pthread_mutex_unlock(&w->mu);
    if (stop || mono_ms() - t0 > w->o.give_up_ms) {
      gy_log(GY_LOG_ERROR, "controller", "journal: gave up writing the %s after %lld ms: %s",
             n->what, (long long)(mono_ms() - t0), n->err);
      break;
    }
    backoff = backoff < w->o.backoff_max_ms ? backoff * 2 : w->o.backoff_max_ms;
    if (backoff > w->o.backoff_max_ms) backoff = w->o.backoff_max_ms;
  }
  n->res.elapsed_ms = mono_ms() - t0;
}

static void *thread_main(void *arg) {
  gy_jwriter_t *w = arg;
  int abandon = 0;
  pthread_mutex_lock(&w->mu);
  for (;;) {
    while (!w->q && !w->stopping)
      pthread_cond_wait(&w->cv, &w->mu);
    node_t *n = w->q;
    if (!n) break; /* stopping, and nothing is left */
    w->q = n->next;
    if (!w->q) w->qtail = NULL;
    n->next = NULL;
    int stopping = w->stopping;
    pthread_mutex_unlock(&w->mu);
    if (abandon) {
      gy_log(GY_LOG_WARN, "controller", "journal: shutting down: the %s is not written", n->what);
      n->res.rc = GY_EIO;
    } else {
      run_node(w, n);
      if (stopping && n->res.rc) abandon = 1;
    }
    pthread_mutex_lock(&w->mu);
    w->pending--;
    if (n->req.done && !w->closed) {
      if (w->donetail)
        w->donetail->next = n;
      else
        w->doneq = n;
      w->donetail = n;
      uv_async_send(&w->async); /* under mu: close cannot close the handle meanwhile */
    } else {
      pthread_mutex_unlock(&w->mu);
      node_free(n);
      pthread_mutex_lock(&w->mu);
    }
  }
  pthread_mutex_unlock(&w->mu);
  return NULL;
}

int gy_jwriter_create(gy_jwriter_t **out, uv_loop_t *loop, const gy_jwriter_opts_t *opts) {
  *out = NULL;
  gy_jwriter_t *w = calloc(1, sizeof(*w));
  if (!w) return GY_ENOMEM;
  if (opts) w->o = *opts;
  if (w->o.give_up_ms <= 0) w->o.give_up_ms = 600000;
  if (w->o.backoff_min_ms <= 0) w->o.backoff_min_ms = 100;
  if (w->o.backoff_max_ms <= 0) w->o.backoff_max_ms = 2000;
  if (w->o.backoff_max_ms < w->o.backoff_min_ms) w->o.backoff_max_ms = w->o.backoff_min_ms;
  w->loop = loop;
  pthread_mutex_init(&w->mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&w->cv, &ca);
  pthread_condattr_destroy(&ca);
  if (uv_async_init(loop, &w->async, on_async)) {
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    free(w);
    return GY_EIO;
  }
  w->async.data = w;
  *out = w;
  return 0;
}

int gy_jwriter_start(gy_jwriter_t *w) {
  if (w->started) return 0;
  if (pthread_create(&w->thread, NULL, thread_main, w)) return GY_EIO;
  w->started = 1;
  return 0;
}

int gy_jwriter_submit(gy_jwriter_t *w, const gy_jwriter_req_t *req, void *op) {
  node_t *n = calloc(1, sizeof(*n));
  if (!n) {
    if (req->free_op && op) req->free_op(op);
    gy_log(GY_LOG_ERROR, "controller", "journal: out of memory: the %s is not written",
           req->what ? req->what : "record");
    return GY_ENOMEM;
  }
  n->req = *req;
  n->req.what = NULL;
  snprintf(n->what, sizeof(n->what), "%s", req->what ? req->what : "record");
  n->op = op;
  pthread_mutex_lock(&w->mu);
  if (w->qtail)
    w->qtail->next = n;
  else
    w->q = n;
  w->qtail = n;
  w->pending++;
  pthread_cond_signal(&w->cv);
  pthread_mutex_unlock(&w->mu);
  return 0;
}

static void async_closed(uv_handle_t *h) {
  gy_jwriter_t *w = h->data;
  void (*cb)(void *) = w->close_cb;
  w->close_cb = NULL;
  if (cb) cb(w->close_ud);
}

void gy_jwriter_close(gy_jwriter_t *w, void (*cb)(void *ud), void *ud) {
  pthread_mutex_lock(&w->mu);
  int was = w->closed;
  w->closed = 1;
  pthread_mutex_unlock(&w->mu);
  if (was) return;
  w->close_cb = cb;
  w->close_ud = ud;
  uv_close((uv_handle_t *)&w->async, async_closed);
}

void gy_jwriter_destroy(gy_jwriter_t *w) {
  if (!w) return;
  pthread_mutex_lock(&w->mu);
  w->stopping = 1;
  w->closed = 1;
  pthread_cond_broadcast(&w->cv);
  pthread_mutex_unlock(&w->mu);
  if (w->started) {
    pthread_join(w->thread, NULL);
  } else { /* never started: what was queued is not written */
    while (w->q) {
      node_t *n = w->q;
      w->q = n->next;
      node_free(n);
    }
  }
  while (w->doneq) {
    node_t *n = w->doneq;
    w->doneq = n->next;
    node_free(n);
  }
  pthread_cond_destroy(&w->cv);
  pthread_mutex_destroy(&w->mu);
  free(w);
}

size_t gy_jwriter_pending(gy_jwriter_t *w) {
  pthread_mutex_lock(&w->mu);
  size_t n = w->pending;
  pthread_mutex_unlock(&w->mu);
  return n;
}
