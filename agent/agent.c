/*
 * agent: the worker side of gyro's control protocol (libgyro-agent). No training code here:
 * the trainer passes its figures in and asks whether it may take the next step.
 *
 * API, in the order a trainer uses it: gy_agent_create, gy_agent_join (unary Join + the
 * Session stream), gy_agent_store (rendezvous over unary StoreSet/StoreGet), then per step
 * gy_agent_wait_grant / gy_agent_report (gy_agent_eval after an evaluation), gy_agent_ack for
 * directives, gy_agent_destroy.
 *
 * Threads and locks:
 *  - the trainer's thread calls everything but gy_agent_interrupt and the store;
 *  - the rpc client's completion-queue thread runs on_message/on_close, which only decode and
 *    update the session state (horizon, pending directives, connected) under `mu` and
 *    broadcast `cv`;
 *  - a heartbeat thread sends a Heartbeat when nothing was sent for heartbeat_ms while the
 *    session is up (so a parked worker, or one busy building its trainer, stays alive);
 *  - the collectives' threads call the store, which only does unary calls.
 * `send_mu` guards the stream pointer for senders and is never held together with `mu`; the
 * stream is closed (which waits for on_close, which takes `mu`) with neither held.
 *
 * Invariants: the agent never answers GO for a step >= horizon of the current session's latest
 * grant; a directive is handed out only at its at_step, before the grant of that step; a seq
 * acked in this session is never handed out again; a lost session is only replaced while the
 * trainer is parked in gy_agent_wait_grant (so the steps_done it rejoins with is exact).
 * steps_done only grows, except at an acked ROLLBACK, which sets it to the directive's to_step
 * and the horizon to to_step unless a grant came after the directive (the controller grants
 * the new timeline once every rank has acked). A pending directive owns its skip ranges,
 * reason and quarantine entries; once acked they are kept ("retired") until the next wait_grant,
 * so the trainer can still read them after the ack.
 *
 * Every message is encoded and decoded by wire/agent_wire.c; this file sees bytes only.
 */
#include "agent/agent.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/err.h"
#include "common/log.h"
#include "common/rpc.h"
#include "proto/contract.h"
#include "wire/agent_wire.h"

#define MAX_PENDING 32   /* directives received but not applied yet */
#define APPLIED_RING 256 /* seqs remembered as applied in this session */
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define JOIN_ATTEMPT_MS 60000 /* one Join call when waiting without end */
#define STORE_CHUNK_MS 30000  /* one held StoreGet when waiting without end */
#define POLL_MS 200           /* how often a parked caller looks at the interrupt flag */
#define LINGER_MS 300         /* destroy: time given to queued messages before cancelling */
#define STORE_KEY_MAX 200

/* A directive received and not applied yet. d.skip and d.reason point at skip / reason. */
typedef struct {
  gy_agent_directive_t d;
  gy_agent_skip_t *skip; /* owned (NULL when none) */
  char *reason;          /* owned (NULL: d.reason is "") */
  gy_agent_quar_t *quar; /* owned, with its strings (quar_copy; NULL when none) */
  uint64_t grants_at;    /* a->grants when it arrived */
} pending_t;

struct gy_agent {
  /* configuration (immutable after create) */
  char **addrs;
  int naddrs;
  gy_rpc_client_t **clients; /* one per address */
  char *worker_id;
  char *join_token;
  char host[256];
  int ordinal;
  int hb_default_ms;
  int rpc_timeout_ms;
  gy_store_t store;

  pthread_mutex_t mu; /* everything below up to send_mu */
  pthread_cond_t cv;
  int cur; /* index of the address in use */
  int joined;
  gy_agent_assignment_t asg;
  char *asg_yaml, *asg_dir, *asg_prefix, *asg_session;
  uint64_t *asg_skip;        /* the assignment's skip ranges, 2 per range */
  gy_agent_quar_t *asg_quar; /* the assignment's quarantine (quar_copy) */
  int connected;             /* session stream up */
  int64_t horizon;           /* latest grant of this session */
  int64_t steps_done;
  pending_t pending[MAX_PENDING];
  int npending;
  uint64_t grants;               /* grants received in this session */
  gy_agent_skip_t *retired_skip; /* of the directive acked last (see the design block) */
  char *retired_reason;
  gy_agent_quar_t *retired_quar;
  uint64_t applied[APPLIED_RING];
  int napplied;          /* entries used (<= APPLIED_RING) */
  int applied_next;      /* slot the next seq goes to (the oldest once full) */
  double last_send;      /* monotonic seconds */
  double session_at;     /* when the current session was opened (trainer thread only) */
  int rejoin_backoff_ms; /* grows while sessions end right after they open (trainer thread) */
  int hb_stop;
  pthread_t hb_thread;
  int hb_started;
  char errmsg[512];

  pthread_mutex_t send_mu; /* the stream pointer, for senders and the closer */
  gy_rpc_cstream_t *stream;

  volatile sig_atomic_t interrupted;

  /* Progress (under mu): inside a step since step_t0 (monotonic seconds), with the collective
   * clock at blocked_t0 then; recent_ms is the steps' recent wall time (an average over about
   * eight steps), for the watchdog's threshold. */
  int64_t (*blocked_ns)(void);
  int64_t (*in_collective_ns)(void);
  int stepping;
  double step_t0;
  int64_t blocked_t0;
  double recent_ms;
};

/* ---------------------------------------------------------------------------------------- */

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Waits on a->cv (mu held) for at most ms milliseconds. */
static void cv_wait_ms(gy_agent_t *a, int ms) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  long ns = ts.tv_nsec + (long)(ms % 1000) * 1000000L;
  ts.tv_sec += ms / 1000 + ns / 1000000000L;
  ts.tv_nsec = ns % 1000000000L;
  pthread_cond_timedwait(&a->cv, &a->mu, &ts);
}

/* Sleeps ms milliseconds (mu not held), waking early when interrupted. */
static void sleep_ms(gy_agent_t *a, int ms) {
  double end = now_s() + ms / 1000.0;
  while (!a->interrupted) {
    double left = end - now_s();
    if (left <= 0) break;
    int step = left * 1000 > 50 ? 50 : (int)(left * 1000) + 1;
    struct timespec ts = {0, step * 1000000L};
    nanosleep(&ts, NULL);
  }
}

static void set_err(gy_agent_t *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_err(gy_agent_t *a, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(a->errmsg, sizeof(a->errmsg), fmt, ap);
  va_end(ap);
}

/* Status codes after which a call is worth repeating (the controller is away or restarting). */
static int transient(int status) {
  return status == GY_RPC_UNAVAILABLE || status == GY_RPC_DEADLINE_EXCEEDED ||
         status == GY_RPC_CANCELLED || status == GY_RPC_UNKNOWN || status == GY_RPC_ABORTED ||
         status == GY_RPC_INTERNAL;
}

static gy_rpc_client_t *current_client(gy_agent_t *a, int *idx) {
  pthread_mutex_lock(&a->mu);
  *idx = a->cur;
  pthread_mutex_unlock(&a->mu);
  return a->clients[*idx];
}

/* After an UNAVAILABLE from address idx, moves on to the next one (once per failure). */
static void rotate(gy_agent_t *a, int idx) {
  if (a->naddrs < 2) return;
  pthread_mutex_lock(&a->mu);
  if (a->cur == idx) a->cur = (idx + 1) % a->naddrs;
  pthread_mutex_unlock(&a->mu);
}

/* One unary call of an encoded request (buf, len: borrowed) on the current controller. Returns
 * gy_rpc_unary's code; *status is the gRPC status. */
static int unary(gy_agent_t *a, const char *method, const uint8_t *buf, size_t len, int timeout_ms,
                 void **resp, size_t *rlen, int *status, char *err, size_t errlen) {
  *resp = NULL;
  *rlen = 0;
  int idx;
  gy_rpc_client_t *c = current_client(a, &idx);
  *status = GY_RPC_OK;
  err[0] = '\0';
  int rc =
      gy_rpc_unary(c, method, NULL, NULL, buf, len, timeout_ms, resp, rlen, status, err, errlen);
  if (rc && *status == GY_RPC_UNAVAILABLE) rotate(a, idx);
  return rc;
}

/* Queues one encoded WorkerMsg on the session stream and frees buf; enc is the encoder's return
 * code (not 0: nothing to send, enc is returned). GY_ECOMM when no session is up. */
static int send_msg(gy_agent_t *a, int enc, uint8_t *buf, size_t len) {
  if (enc) return enc;
  int rc = GY_ECOMM;
  pthread_mutex_lock(&a->send_mu);
  if (a->stream) rc = gy_rpc_cstream_send(a->stream, buf, len);
  pthread_mutex_unlock(&a->send_mu);
  free(buf);
  if (rc == 0) {
    pthread_mutex_lock(&a->mu);
    a->last_send = now_s();
    pthread_mutex_unlock(&a->mu);
  }
  return rc;
}

/* Takes the stream out of reach of senders and closes it (waits for its on_close). */
static void close_stream(gy_agent_t *a) {
  pthread_mutex_lock(&a->send_mu);
  gy_rpc_cstream_t *s = a->stream;
  a->stream = NULL;
  pthread_mutex_unlock(&a->send_mu);
  if (s) gy_rpc_cstream_close(s);
  pthread_mutex_lock(&a->mu);
  a->connected = 0;
  pthread_mutex_unlock(&a->mu);
}

/* ---------------------------------- pending directives ---------------------------------- */

static void pending_free(pending_t *p) {
  free(p->skip);
  free(p->reason);
  free(p->quar);
  p->skip = NULL;
  p->reason = NULL;
  p->quar = NULL;
}

/* A copy of n entries with their strings, in one block (free() frees it all); NULL when n is 0
 * or out of memory (*oom says which). */
static gy_agent_quar_t *quar_copy(const gy_agent_quar_t *q, int n, int *oom) {
  *oom = 0;
  if (n <= 0 || !q) return NULL;
  size_t bytes = (size_t)n * sizeof(*q);
  for (int i = 0; i < n; i++)
    bytes += strlen(q[i].channel ? q[i].channel : "") + strlen(q[i].file ? q[i].file : "") + 2;
  gy_agent_quar_t *c = malloc(bytes);
  if (!c) {
    *oom = 1;
    return NULL;
  }
  char *p = (char *)(c + n);
  for (int i = 0; i < n; i++) {
    c[i] = q[i];
    const char *ch = q[i].channel ? q[i].channel : "", *f = q[i].file ? q[i].file : "";
    size_t lc = strlen(ch) + 1, lf = strlen(f) + 1;
    memcpy(p, ch, lc);
    c[i].channel = p;
    p += lc;
    memcpy(p, f, lf);
    c[i].file = p;
    p += lf;
  }
  return c;
}

/* Removes pending[i] (mu held); its memory is freed, or retired when retire is set. */
static void pending_remove(gy_agent_t *a, int i, int retire) {
  if (retire) {
    free(a->retired_skip);
    free(a->retired_reason);
    free(a->retired_quar);
    a->retired_skip = a->pending[i].skip;
    a->retired_reason = a->pending[i].reason;
    a->retired_quar = a->pending[i].quar;
  } else {
    pending_free(&a->pending[i]);
  }
  a->pending[i] = a->pending[--a->npending];
}

static void retired_free(gy_agent_t *a) {
  free(a->retired_skip);
  free(a->retired_reason);
  free(a->retired_quar);
  a->retired_skip = NULL;
  a->retired_reason = NULL;
  a->retired_quar = NULL;
}

/* ------------------------------------ applied seqs -------------------------------------- */

static int seq_applied(const gy_agent_t *a, uint64_t seq) {
  for (int i = 0; i < a->napplied; i++)
    if (a->applied[i] == seq) return 1;
  return 0;
}

/* Remembers seq; past APPLIED_RING entries the oldest is forgotten (seqs only grow, so an old
 * one coming back is far beyond anything a controller resends). */
static void mark_applied(gy_agent_t *a, uint64_t seq) {
  if (seq_applied(a, seq)) return;
  a->applied[a->applied_next] = seq;
  a->applied_next = (a->applied_next + 1) % APPLIED_RING;
  if (a->napplied < APPLIED_RING) a->napplied++;
}

/* ------------------------------------- stream callbacks --------------------------------- */

/* Copies d (a decoded directive) into a new pending entry p (mu held). GY_ENOMEM leaves p
 * empty. */
static int pending_fill(pending_t *p, const gy_agent_directive_t *d, uint64_t grants) {
  memset(p, 0, sizeof(*p));
  if (d->kind == GY_DIRECTIVE_ROLLBACK) {
    if (d->nskip) {
      if (!(p->skip = calloc((size_t)d->nskip, sizeof(*p->skip)))) return GY_ENOMEM;
      memcpy(p->skip, d->skip, (size_t)d->nskip * sizeof(*p->skip));
    }
    if (d->reason && d->reason[0] && !(p->reason = strdup(d->reason))) {
      pending_free(p);
      return GY_ENOMEM;
    }
    p->d.to_step = d->to_step;
    p->d.skip = p->skip;
    p->d.nskip = d->nskip;
  }
  if (d->kind == GY_DIRECTIVE_QUARANTINE) {
    int oom;
    p->quar = quar_copy(d->quar, d->nquar, &oom);
    if (oom) {
      pending_free(p);
      return GY_ENOMEM;
    }
    p->d.quar = p->quar;
    p->d.nquar = p->quar ? d->nquar : 0;
  }
  if (d->kind == GY_DIRECTIVE_SET_GUARD) p->d.guard = d->guard;
  p->d.reason = p->reason ? p->reason : "";
  p->d.seq = d->seq;
  p->d.at_step = d->at_step;
  p->d.kind = d->kind;
  p->d.hparams = d->hparams;
  p->grants_at = grants;
  return 0;
}

/* Client CQ thread: a ControllerMsg arrived. */
static void on_message(void *ud, const uint8_t *msg, size_t len) {
  gy_agent_t *a = ud;
  gy_wire_agent_ctl_t m;
  int drc = gy_wire_agent_ctl_decode(msg, len, &m);
  if (drc) {
    if (drc == GY_EPROTO)
      gy_log(GY_LOG_WARN, "agent", "malformed message from the controller (%zu bytes) ignored",
             len);
    else
      gy_log(GY_LOG_ERROR, "agent", "out of memory: message from the controller dropped");
    return;
  }
  pthread_mutex_lock(&a->mu);
  uint64_t gen = a->asg.generation;
  if (m.kind == GY_WIRE_AGENT_CTL_GRANT) {
    if (m.generation == gen) {
      a->horizon = m.horizon;
      a->grants++;
      pthread_cond_broadcast(&a->cv);
    } else {
      gy_log(GY_LOG_WARN, "agent", "grant of generation %" PRIu64 " ignored (mine is %" PRIu64 ")",
             m.generation, gen);
    }
  } else if (m.kind == GY_WIRE_AGENT_CTL_DIRECTIVE) {
    const gy_agent_directive_t *d = &m.dir;
    int dup = seq_applied(a, d->seq);
    for (int i = 0; i < a->npending && !dup; i++)
      dup = a->pending[i].d.seq == d->seq;
    if (m.generation != gen) {
      gy_log(GY_LOG_WARN, "agent",
             "directive seq %" PRIu64 " of generation %" PRIu64 " ignored (mine is %" PRIu64 ")",
             d->seq, m.generation, gen);
    } else if (dup) {
      gy_log(GY_LOG_INFO, "agent", "directive seq %" PRIu64 " already seen: ignored", d->seq);
    } else if ((int)d->kind < GY_DIRECTIVE_PAUSE || (int)d->kind > GY_DIRECTIVE_SET_GUARD) {
      gy_log(GY_LOG_WARN, "agent", "directive seq %" PRIu64 " of unknown kind %d ignored", d->seq,
             (int)d->kind);
    } else if (a->npending == MAX_PENDING) {
      gy_log(GY_LOG_ERROR, "agent", "%d directives pending: seq %" PRIu64 " dropped", MAX_PENDING,
             d->seq);
    } else if (pending_fill(&a->pending[a->npending], d, a->grants)) {
      gy_log(GY_LOG_ERROR, "agent", "out of memory: directive seq %" PRIu64 " dropped", d->seq);
    } else {
      a->npending++;
      pthread_cond_broadcast(&a->cv);
    }
  }
  pthread_mutex_unlock(&a->mu);
  gy_wire_agent_ctl_free(&m);
}

/* Client CQ thread: the session ended (controller gone, or it refused the session). */
static void on_close(void *ud, int status, const char *details) {
  gy_agent_t *a = ud;
  pthread_mutex_lock(&a->mu);
  a->connected = 0;
  pthread_cond_broadcast(&a->cv);
  pthread_mutex_unlock(&a->mu);
  gy_log(status == GY_RPC_OK || status == GY_RPC_CANCELLED ? GY_LOG_INFO : GY_LOG_WARN, "agent",
         "session closed (status %d%s%s)", status, details && details[0] ? ": " : "",
         details ? details : "");
  if (details && !strncmp(details, GY_WIRE_HUNG_PREFIX, strlen(GY_WIRE_HUNG_PREFIX))) {
    /* The trainer thread is stuck and cannot be woken: the process ends, so that it is
     * started again (gyroctl launch, Kubernetes) and joins with a fresh trainer. */
    gy_log(GY_LOG_ERROR, "agent", "the controller declared this worker hung: ending the process");
    abort();
  }
}

/* ---------------------------------------- heartbeat ------------------------------------- */

/* The progress now; called with mu held. */
static gy_agent_progress_t progress_locked(gy_agent_t *a) {
  gy_agent_progress_t p = {0};
  if (!a->stepping) return p;
  p.stepping = 1;
  p.in_step_ms = (int64_t)((now_s() - a->step_t0) * 1000);
  int64_t coll = a->in_collective_ns ? a->in_collective_ns() : 0;
  int64_t blocked = a->blocked_ns ? a->blocked_ns() - a->blocked_t0 + coll : 0;
  p.own_ms = p.in_step_ms - blocked / 1000000;
  if (p.own_ms < 0) p.own_ms = 0;
  p.in_collective_ms = coll ? (coll + 999999) / 1000000 : 0;
  return p;
}

gy_agent_progress_t gy_agent_progress(gy_agent_t *a) {
  pthread_mutex_lock(&a->mu);
  gy_agent_progress_t p = progress_locked(a);
  pthread_mutex_unlock(&a->mu);
  return p;
}

void gy_agent_set_collective_clock(gy_agent_t *a, int64_t (*blocked_ns)(void),
                                   int64_t (*in_collective_ns)(void)) {
  pthread_mutex_lock(&a->mu);
  a->blocked_ns = blocked_ns;
  a->in_collective_ns = in_collective_ns;
  pthread_mutex_unlock(&a->mu);
}

/* The watchdog, called with mu held: it ends the process, so that it is started again, when
 * the trainer is stuck inside a step: with a session, when its own work (outside collectives)
 * lasts twice the hang rule's threshold (the controller's verdict normally comes at the
 * threshold itself; this is for a controller that cannot be heard); without one (the gang is
 * re-forming, or the controller is gone), when the step lasts longer than the threshold in any
 * phase: a healthy trainer fails its collectives at the communication timeout and returns to
 * the agent, which the default floor (60 s) leaves room for. */
static void watchdog_locked(gy_agent_t *a, const gy_agent_progress_t *p) {
  if (!a->joined || !a->asg.hang_floor_ms || !p->stepping) return;
  double thr = a->asg.hang_factor * a->recent_ms;
  if (thr < a->asg.hang_floor_ms) thr = a->asg.hang_floor_ms;
  if (a->connected ? p->in_collective_ms || (double)p->own_ms <= 2 * thr
                   : (double)p->in_step_ms <= thr)
    return;
  gy_log(GY_LOG_ERROR, "agent",
         "watchdog: the trainer has been stuck inside step %" PRId64 " (%" PRId64 " ms, %" PRId64
         " ms of its own work; hang threshold %.0f ms%s): ending the process",
         a->steps_done, p->in_step_ms, p->own_ms, thr,
         a->connected ? "" : ", no session to the controller");
  abort();
}

static void *heartbeat_main(void *arg) {
  gy_agent_t *a = arg;
  pthread_mutex_lock(&a->mu);
  while (!a->hb_stop) {
    int period = a->joined && a->asg.heartbeat_ms > 0 ? a->asg.heartbeat_ms : a->hb_default_ms;
    double due = a->last_send + period / 1000.0, t = now_s();
    if (a->connected && t >= due) {
      uint64_t hb_gen = a->asg.generation;
      int hb_rank = a->asg.rank;
      int64_t hb_done = a->steps_done;
      gy_agent_progress_t prog = progress_locked(a);
      watchdog_locked(a, &prog);
      pthread_mutex_unlock(&a->mu);
      uint8_t *buf;
      size_t len;
      int enc = gy_wire_agent_heartbeat_encode(hb_gen, hb_rank, hb_done, &prog, &buf, &len);
      if (send_msg(a, enc, buf, len)) {
        /* the session is going down; on_close follows and wait_grant reconnects */
        pthread_mutex_lock(&a->mu);
        a->last_send = now_s();
        continue;
      }
      pthread_mutex_lock(&a->mu);
      continue;
    }
    gy_agent_progress_t prog = progress_locked(a);
    watchdog_locked(a, &prog); /* also while the session is down */
    int ms = a->connected ? (int)((due - t) * 1000) + 1 : period;
    cv_wait_ms(a, ms < 1 ? 1 : ms > period ? period : ms);
  }
  pthread_mutex_unlock(&a->mu);
  return NULL;
}

/* ------------------------------------------ store --------------------------------------- */

/* The key rules of common/kvstore.h: 1..200 bytes of [A-Za-z0-9._-/], '/'-separated segments,
 * none empty, "." or "..", no leading '.'. */
static int key_ok(const char *key) {
  if (!key || !key[0] || key[0] == '.' || strlen(key) > STORE_KEY_MAX) return 0;
  const char *seg = key;
  for (const char *p = key;; p++) {
    char ch = *p;
    if (ch == '/' || ch == '\0') {
      size_t n = (size_t)(p - seg);
      if (n == 0 || (seg[0] == '.' && (n == 1 || (n == 2 && seg[1] == '.')))) return 0;
      if (!ch) return 1;
      seg = p + 1;
      continue;
    }
    if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
          ch == '.' || ch == '_' || ch == '-'))
      return 0;
  }
}

static int store_set(gy_store_t *s, const char *key, const void *val, size_t len) {
  gy_agent_t *a = s->impl;
  if (!key_ok(key) || (!val && len)) {
    gy_log(GY_LOG_ERROR, "agent", "store: refused key '%s'", key ? key : "(null)");
    return GY_EINVAL;
  }
  uint8_t *req;
  size_t req_len;
  if (gy_wire_agent_store_set_encode(key, val, len, &req, &req_len)) return GY_ENOMEM;
  double deadline = now_s() + a->rpc_timeout_ms / 1000.0;
  int backoff = BACKOFF_MIN_MS;
  for (;;) {
    void *resp;
    size_t rlen;
    int status;
    char err[256];
    int left = (int)((deadline - now_s()) * 1000);
    if (left <= 0) {
      gy_log(GY_LOG_ERROR, "agent", "store: set '%s': controller unreachable", key);
      free(req);
      return GY_ETIMEDOUT;
    }
    int rc = unary(a, GY_METHOD_WORKER_STORE_SET, req, req_len, left, &resp, &rlen, &status, err,
                   sizeof(err));
    free(resp);
    if (rc == 0) {
      free(req);
      return 0;
    }
    if (!transient(status)) {
      gy_log(GY_LOG_ERROR, "agent", "store: set '%s' refused (status %d): %s", key, status, err);
      free(req);
      return status == GY_RPC_INVALID_ARGUMENT ? GY_EINVAL : GY_ECOMM;
    }
    sleep_ms(a, backoff);
    backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
  }
}

static int store_get(gy_store_t *s, const char *key, void **val, size_t *len, int timeout_ms) {
  gy_agent_t *a = s->impl;
  if (!val || !len) return GY_EINVAL;
  *val = NULL;
  *len = 0;
  if (!key_ok(key)) {
    gy_log(GY_LOG_ERROR, "agent", "store: refused key '%s'", key ? key : "(null)");
    return GY_EINVAL;
  }
  double deadline = now_s() + (timeout_ms > 0 ? timeout_ms : 0) / 1000.0;
  int backoff = BACKOFF_MIN_MS;
  for (;;) {
    int left = timeout_ms < 0 ? STORE_CHUNK_MS : (int)((deadline - now_s()) * 1000);
    if (left < 0) left = 0;
    int req_timeout = left > STORE_CHUNK_MS ? STORE_CHUNK_MS : left;
    void *resp;
    size_t rlen;
    int status;
    char err[256];
    uint8_t *req;
    size_t req_len;
    if (gy_wire_agent_store_get_encode(key, req_timeout, &req, &req_len)) return GY_ENOMEM;
    /* the controller holds the call up to req_timeout; give the answer time to arrive */
    double t0 = now_s();
    int rc = unary(a, GY_METHOD_WORKER_STORE_GET, req, req_len, req_timeout + a->rpc_timeout_ms,
                   &resp, &rlen, &status, err, sizeof(err));
    free(req);
    if (rc == 0) {
      rc = gy_wire_agent_store_value_decode(resp, rlen, val, len);
      free(resp);
      if (rc == GY_EPROTO)
        gy_log(GY_LOG_ERROR, "agent", "store: malformed value of '%s' from the controller", key);
      return rc;
    }
    free(resp);
    int missing = status == GY_RPC_DEADLINE_EXCEEDED || status == GY_RPC_NOT_FOUND;
    if (!missing && !transient(status)) {
      gy_log(GY_LOG_ERROR, "agent", "store: get '%s' refused (status %d): %s", key, status, err);
      return status == GY_RPC_INVALID_ARGUMENT ? GY_EINVAL : GY_ECOMM;
    }
    if (timeout_ms >= 0 && now_s() >= deadline) return GY_ETIMEDOUT;
    if (a->interrupted) return GY_ETIMEDOUT;
    /* The controller is away, or answered "missing" without holding the call: wait a little
     * (not past the caller's deadline) rather than ask again at once. */
    if (!missing || (now_s() - t0) * 1000 < req_timeout / 2) {
      int ms = backoff;
      if (timeout_ms >= 0) {
        int rest = (int)((deadline - now_s()) * 1000) + 1;
        if (ms > rest) ms = rest;
      }
      sleep_ms(a, ms);
      backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
    }
  }
}

static int store_check(gy_store_t *s, const char *const *keys, int nkeys) {
  for (int i = 0; i < nkeys; i++) {
    void *v;
    size_t n;
    int rc = store_get(s, keys[i], &v, &n, 0);
    if (rc == GY_ETIMEDOUT) return 0;
    if (rc) return rc;
    free(v);
  }
  return 1;
}

/* The store belongs to the agent: gy_store_destroy on it does nothing. */
static void store_destroy(gy_store_t *s) {
  (void)s;
}

static const gy_store_ops_t agent_store_ops = {store_set, store_get, store_check, store_destroy};

/* ------------------------------------------ join ---------------------------------------- */

static char *dup_str(const char *s) {
  return strdup(s ? s : "");
}

/* An assignment's skip ranges: at most 1 << 20, each first < last. */
static int skips_ok(const gy_agent_assignment_t *m) {
  if (m->nskip > (1 << 20)) return 0;
  for (int i = 0; i < m->nskip; i++)
    if (m->skip[2 * i] >= m->skip[2 * i + 1]) return 0;
  return 1;
}

/* Installs an Assignment (mu not held; decoded and validated by the caller, which keeps m). */
static int install(gy_agent_t *a, const gy_agent_assignment_t *m, int64_t steps_done) {
  char *yaml = dup_str(m->config_yaml), *dir = dup_str(m->config_dir);
  char *prefix = dup_str(m->rdzv_prefix), *sess = dup_str(m->session_id);
  uint64_t *skip = m->nskip ? malloc((size_t)m->nskip * 2 * sizeof(*skip)) : NULL;
  int qoom;
  gy_agent_quar_t *quar = quar_copy(m->quar, m->nquar, &qoom);
  if (!yaml || !dir || !prefix || !sess || (m->nskip && !skip) || qoom) {
    free(yaml);
    free(dir);
    free(prefix);
    free(sess);
    free(skip);
    free(quar);
    return GY_ENOMEM;
  }
  if (m->nskip) memcpy(skip, m->skip, (size_t)m->nskip * 2 * sizeof(*skip));
  pthread_mutex_lock(&a->mu);
  free(a->asg_skip);
  a->asg_skip = skip;
  a->asg.skip = skip;
  a->asg.nskip = m->nskip;
  free(a->asg_quar);
  a->asg_quar = quar;
  a->asg.quar = quar;
  a->asg.nquar = quar ? m->nquar : 0;
  a->asg.has_guard = m->has_guard;
  a->asg.guard = m->guard;
  free(a->asg_yaml);
  free(a->asg_dir);
  free(a->asg_prefix);
  free(a->asg_session);
  a->asg_yaml = yaml;
  a->asg_dir = dir;
  a->asg_prefix = prefix;
  a->asg_session = sess;
  a->asg.generation = m->generation;
  a->asg.rank = m->rank;
  a->asg.world = m->world;
  a->asg.tp = m->tp;
  a->asg.start_step = m->start_step;
  a->asg.heartbeat_ms = m->heartbeat_ms > 0 ? m->heartbeat_ms : a->hb_default_ms;
  a->asg.config_yaml = yaml;
  a->asg.config_dir = dir;
  a->asg.rdzv_prefix = prefix;
  a->asg.session_id = sess;
  a->joined = 1;
  a->horizon = 0; /* nothing granted in this generation until its first Grant */
  a->grants = 0;
  while (a->npending)
    pending_remove(a, a->npending - 1, 0);
  a->napplied = 0;
  a->applied_next = 0;
  a->steps_done = steps_done;
  pthread_cond_broadcast(&a->cv);
  pthread_mutex_unlock(&a->mu);
  return 0;
}

static int join_loop(gy_agent_t *a, const uint8_t *req, size_t req_len, int timeout_ms);

/* Join with back-off. steps_done/prev_gen: what this worker reports. On success the new
 * assignment is installed with steps_done = its start_step. */
static int do_join(gy_agent_t *a, int64_t steps_done, uint64_t prev_gen, int timeout_ms) {
  gy_wire_agent_join_t jr = {.worker_id = a->worker_id,
                             .ordinal = a->ordinal,
                             .join_token = a->join_token,
                             .host = a->host,
                             .pid = (int32_t)getpid(),
                             .steps_done = steps_done,
                             .generation = prev_gen};
  uint8_t *req;
  size_t req_len;
  if (gy_wire_agent_join_encode(&jr, &req, &req_len)) {
    set_err(a, "out of memory");
    return GY_ENOMEM;
  }
  int rc = join_loop(a, req, req_len, timeout_ms);
  free(req);
  return rc;
}

/* do_join's attempts with the encoded request (borrowed). */
static int join_loop(gy_agent_t *a, const uint8_t *req, size_t req_len, int timeout_ms) {
  double deadline = timeout_ms < 0 ? 0 : now_s() + timeout_ms / 1000.0;
  int backoff = BACKOFF_MIN_MS, attempts = 0;
  for (;;) {
    if (a->interrupted) {
      set_err(a, "join interrupted");
      return GY_ETIMEDOUT;
    }
    int left = timeout_ms < 0 ? JOIN_ATTEMPT_MS : (int)((deadline - now_s()) * 1000);
    if (left <= 0) {
      if (!a->errmsg[0]) set_err(a, "no gang formed within %d ms", timeout_ms);
      return GY_ETIMEDOUT;
    }
    void *resp;
    size_t rlen;
    int status;
    char err[256];
    int rc = unary(a, GY_METHOD_WORKER_JOIN, req, req_len, left, &resp, &rlen, &status, err,
                   sizeof(err));
    attempts++;
    if (rc == 0) {
      gy_wire_agent_assignment_t dec;
      rc = gy_wire_agent_assignment_decode(resp, rlen, &dec);
      free(resp);
      if (rc) {
        set_err(a, rc == GY_EPROTO ? "malformed assignment from the controller" : "out of memory");
        return rc;
      }
      const gy_agent_assignment_t *m = &dec.asg;
      if (m->world < 1 || m->tp < 1 || m->world % m->tp || m->rank < 0 || m->rank >= m->world ||
          m->start_step < 0 || !m->config_yaml[0] || !m->rdzv_prefix[0] || !skips_ok(m)) {
        set_err(a,
                "invalid assignment from the controller: rank %d world %d tp %d start step %" PRId64
                "%s",
                m->rank, m->world, m->tp, m->start_step, m->config_yaml[0] ? "" : ", no config");
        gy_wire_agent_assignment_free(&dec);
        return GY_EPROTO;
      }
      rc = install(a, m, m->start_step);
      gy_log(GY_LOG_INFO, "agent",
             "joined generation %" PRIu64 " as rank %d of %d (tp %d), "
             "start step %" PRId64,
             m->generation, m->rank, m->world, m->tp, m->start_step);
      gy_wire_agent_assignment_free(&dec);
      a->errmsg[0] = '\0';
      return rc;
    }
    free(resp);
    if (!transient(status)) {
      set_err(a, "join refused (status %d): %s", status, err);
      return GY_EINVAL;
    }
    set_err(a, "controller unavailable (status %d): %s", status, err);
    if (attempts == 1 || attempts % 10 == 0)
      gy_log(GY_LOG_WARN, "agent", "join: %s; retrying", a->errmsg);
    if (status != GY_RPC_DEADLINE_EXCEEDED) {
      int ms = backoff;
      if (timeout_ms >= 0) {
        int rest = (int)((deadline - now_s()) * 1000);
        if (ms > rest) ms = rest > 0 ? rest : 0;
      }
      sleep_ms(a, ms);
      backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
    }
  }
}

/* Opens the session of the installed assignment and says Hello. */
static int open_session(gy_agent_t *a) {
  static const gy_rpc_cstream_cbs_t cbs = {on_message, on_close};
  int idx;
  gy_rpc_client_t *c = current_client(a, &idx);
  gy_rpc_cstream_t *s = NULL;
  char err[256] = "";
  pthread_mutex_lock(&a->mu);
  a->connected = 1; /* before open: on_close may run as soon as the stream exists */
  pthread_mutex_unlock(&a->mu);
  int rc =
      gy_rpc_cstream_open(c, GY_METHOD_WORKER_SESSION, NULL, NULL, &cbs, a, &s, err, sizeof(err));
  if (rc) {
    pthread_mutex_lock(&a->mu);
    a->connected = 0;
    pthread_mutex_unlock(&a->mu);
    set_err(a, "cannot open the session: %s", err);
    return rc;
  }
  pthread_mutex_lock(&a->send_mu);
  a->stream = s;
  pthread_mutex_unlock(&a->send_mu);
  a->session_at = now_s();
  uint8_t *buf;
  size_t len;
  pthread_mutex_lock(&a->mu);
  /* the session id stays valid: only this thread installs assignments */
  int enc = gy_wire_agent_hello_encode(a->asg_session, a->asg.generation, a->asg.rank, &buf, &len);
  pthread_mutex_unlock(&a->mu);
  rc = send_msg(a, enc, buf, len);
  if (rc) gy_log(GY_LOG_WARN, "agent", "hello not sent: the session closed at once");
  return 0;
}

/* ------------------------------------------ API ----------------------------------------- */

const char *gy_directive_kind_name(int kind) {
  switch (kind) {
  case GY_DIRECTIVE_PAUSE:
    return "pause";
  case GY_DIRECTIVE_RESUME:
    return "resume";
  case GY_DIRECTIVE_STOP:
    return "stop";
  case GY_DIRECTIVE_CHECKPOINT:
    return "checkpoint";
  case GY_DIRECTIVE_SET_HPARAMS:
    return "set_hparams";
  case GY_DIRECTIVE_ROLLBACK:
    return "rollback";
  case GY_DIRECTIVE_QUARANTINE:
    return "quarantine";
  case GY_DIRECTIVE_SET_GUARD:
    return "set_guard";
  default:
    return "none";
  }
}

int gy_agent_create(gy_agent_t **out, const gy_agent_opts_t *opts) {
  int rc = GY_ENOMEM;
  *out = NULL;
  if (!opts || !opts->controllers || !opts->controllers[0] || opts->ordinal < -1) return GY_EINVAL;
  gy_agent_t *a = calloc(1, sizeof(*a));
  if (!a) return GY_ENOMEM;
  pthread_mutex_init(&a->mu, NULL);
  pthread_mutex_init(&a->send_mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&a->cv, &ca);
  pthread_condattr_destroy(&ca);
  a->ordinal = opts->ordinal;
  a->hb_default_ms = opts->heartbeat_ms > 0 ? opts->heartbeat_ms : 1000;
  a->rpc_timeout_ms = opts->rpc_timeout_ms > 0 ? opts->rpc_timeout_ms : 10000;
  if (gethostname(a->host, sizeof(a->host) - 1)) snprintf(a->host, sizeof(a->host), "unknown");
  char idbuf[320];
  snprintf(idbuf, sizeof(idbuf), "%s:%d", a->host, (int)getpid());
  a->worker_id = strdup(opts->worker_id && opts->worker_id[0] ? opts->worker_id : idbuf);
  a->join_token = strdup(opts->join_token ? opts->join_token : "");
  if (!a->worker_id || !a->join_token) goto err;
  /* split the address list */
  char *list = strdup(opts->controllers), *save = NULL;
  if (!list) goto err;
  int n = 1;
  for (const char *p = list; *p; p++)
    n += *p == ',';
  a->addrs = calloc((size_t)n, sizeof(char *));
  a->clients = calloc((size_t)n, sizeof(gy_rpc_client_t *));
  if (!a->addrs || !a->clients) {
    free(list);
    goto err;
  }
  for (char *tok = strtok_r(list, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save)) {
    if (!(a->addrs[a->naddrs] = strdup(tok))) {
      free(list);
      goto err;
    }
    char err[600] = "";
    gy_rpc_client_tls_t tls = {.ca = opts->tls_ca,
                               .cert = opts->tls_cert,
                               .key = opts->tls_key,
                               .target_name = opts->tls_server_name};
    if ((rc = gy_rpc_client_create_tls(&a->clients[a->naddrs], tok, &tls, err, sizeof(err)))) {
      gy_log(GY_LOG_ERROR, "agent", "controller %s: %s", tok, err);
      free(a->addrs[a->naddrs]);
      a->addrs[a->naddrs] = NULL;
      free(list);
      rc = GY_EINVAL;
      goto err;
    }
    a->naddrs++;
  }
  free(list);
  rc = GY_EINVAL;
  if (a->naddrs == 0) goto err;
  a->store.ops = &agent_store_ops;
  a->store.impl = a;
  a->last_send = now_s();
  if (pthread_create(&a->hb_thread, NULL, heartbeat_main, a)) {
    rc = GY_ENOMEM;
    goto err;
  }
  a->hb_started = 1;
  *out = a;
  return 0;
err:
  gy_agent_destroy(a);
  return rc;
}

void gy_agent_destroy(gy_agent_t *a) {
  if (!a) return;
  if (a->hb_started) {
    pthread_mutex_lock(&a->mu);
    a->hb_stop = 1;
    pthread_cond_broadcast(&a->cv);
    pthread_mutex_unlock(&a->mu);
    pthread_join(a->hb_thread, NULL);
  }
  /* Give what is queued (the last report, an ack) a moment to leave, or the controller time
   * to end the session itself, before cancelling. */
  pthread_mutex_lock(&a->mu);
  double end = now_s() + LINGER_MS / 1000.0;
  while (a->connected && now_s() < end)
    cv_wait_ms(a, 20);
  pthread_mutex_unlock(&a->mu);
  close_stream(a);
  for (int i = 0; i < a->naddrs; i++) {
    gy_rpc_client_destroy(a->clients[i]);
    free(a->addrs[i]);
  }
  free(a->clients);
  free(a->addrs);
  free(a->worker_id);
  free(a->join_token);
  free(a->asg_yaml);
  free(a->asg_dir);
  free(a->asg_prefix);
  free(a->asg_session);
  free(a->asg_skip);
  free(a->asg_quar);
  while (a->npending)
    pending_remove(a, a->npending - 1, 0);
  retired_free(a);
  pthread_cond_destroy(&a->cv);
  pthread_mutex_destroy(&a->mu);
  pthread_mutex_destroy(&a->send_mu);
  free(a);
}

int gy_agent_join(gy_agent_t *a, gy_agent_assignment_t *out, int timeout_ms) {
  if (!a || !out) return GY_EINVAL;
  if (a->joined) {
    set_err(a, "already joined");
    return GY_EBUSY;
  }
  a->errmsg[0] = '\0';
  int rc = do_join(a, 0, 0, timeout_ms);
  if (rc) return rc;
  if ((rc = open_session(a))) return rc;
  pthread_mutex_lock(&a->mu);
  *out = a->asg;
  pthread_mutex_unlock(&a->mu);
  return 0;
}

/* The session is gone and the trainer is parked at `step`: rejoin and compare. */
static int reconnect(gy_agent_t *a, int64_t step) {
  close_stream(a);
  pthread_mutex_lock(&a->mu);
  gy_agent_assignment_t prev = a->asg;
  pthread_mutex_unlock(&a->mu);
  gy_log(GY_LOG_WARN, "agent",
         "session lost at step %" PRId64 " (generation %" PRIu64 "): rejoining", step,
         prev.generation);
  /* A session refused right after it opened (e.g. the controller no longer knows this
   * generation) must not turn into a tight join/refuse loop. */
  if (now_s() - a->session_at < 1.0) {
    a->rejoin_backoff_ms = a->rejoin_backoff_ms ? a->rejoin_backoff_ms * 2 : BACKOFF_MIN_MS;
    if (a->rejoin_backoff_ms > BACKOFF_MAX_MS) a->rejoin_backoff_ms = BACKOFF_MAX_MS;
    sleep_ms(a, a->rejoin_backoff_ms);
  } else {
    a->rejoin_backoff_ms = 0;
  }
  int rc = do_join(a, step, prev.generation, -1);
  if (rc) return rc == GY_ETIMEDOUT && a->interrupted ? GY_AGENT_INTERRUPTED : rc;
  pthread_mutex_lock(&a->mu);
  gy_agent_assignment_t now = a->asg;
  pthread_mutex_unlock(&a->mu);
  if (now.rank != prev.rank || now.world != prev.world || now.tp != prev.tp ||
      now.start_step != step) {
    set_err(a,
            "the controller re-formed the gang as rank %d of %d (tp %d) from step %" PRId64
            "; this process is rank %d of %d (tp %d) at step %" PRId64 ": it must restart",
            now.rank, now.world, now.tp, now.start_step, prev.rank, prev.world, prev.tp, step);
    gy_log(GY_LOG_WARN, "agent", "%s", a->errmsg);
    return GY_AGENT_REASSIGNED;
  }
  return open_session(a);
}

int gy_agent_wait_grant(gy_agent_t *a, int64_t step, gy_agent_directive_t *dir) {
  if (!a || !dir) return GY_EINVAL;
  pthread_mutex_lock(&a->mu);
  retired_free(a);
  if (!a->joined || step != a->steps_done) {
    set_err(a, "wait_grant(%" PRId64 "): %s", step,
            a->joined ? "not the number of steps reported" : "not joined");
    pthread_mutex_unlock(&a->mu);
    return GY_EINVAL;
  }
  int rc;
  for (;;) {
    if (a->interrupted) {
      rc = GY_AGENT_INTERRUPTED;
      break;
    }
    int found = -1;
    for (int i = 0; i < a->npending;) {
      const gy_agent_directive_t *p = &a->pending[i].d;
      if (p->at_step < step) {
        gy_log(GY_LOG_WARN, "agent",
               "directive seq %" PRIu64 " for step %" PRId64 " arrived after it (now at %" PRId64
               "): dropped",
               p->seq, p->at_step, step);
        pending_remove(a, i, 0);
        continue;
      }
      if (p->at_step == step && (found < 0 || p->seq < a->pending[found].d.seq)) found = i;
      i++;
    }
    if (found >= 0) {
      *dir = a->pending[found].d;
      rc = GY_AGENT_DIRECTIVE;
      break;
    }
    if (step < a->horizon) {
      rc = GY_AGENT_GO;
      a->stepping = 1;
      a->step_t0 = now_s();
      a->blocked_t0 = a->blocked_ns ? a->blocked_ns() : 0;
      break;
    }
    if (!a->connected) {
      pthread_mutex_unlock(&a->mu);
      rc = reconnect(a, step);
      pthread_mutex_lock(&a->mu);
      if (rc == GY_AGENT_REASSIGNED || rc == GY_AGENT_INTERRUPTED || rc < 0) break;
      continue;
    }
    cv_wait_ms(a, POLL_MS);
  }
  pthread_mutex_unlock(&a->mu);
  return rc;
}

int gy_agent_report(gy_agent_t *a, const gy_agent_report_t *rep) {
  if (!a || !rep || rep->nchannels < 0 || rep->nchannels > 1024 || rep->ntop < 0 ||
      rep->ntop > 1024 || (rep->nchannels && !rep->channels) || (rep->ntop && !rep->top) ||
      rep->nbottom < 0 || rep->nbottom > 1024 || (rep->nbottom && !rep->bottom))
    return GY_EINVAL;
  pthread_mutex_lock(&a->mu);
  if (!a->joined) {
    pthread_mutex_unlock(&a->mu);
    return GY_EINVAL;
  }
  uint64_t gen = a->asg.generation;
  int rank = a->asg.rank;
  a->steps_done = rep->step + 1;
  if (a->stepping) { /* the step ended: its wall time into the recent average */
    double ms = (now_s() - a->step_t0) * 1000;
    a->recent_ms = a->recent_ms > 0 ? 0.875 * a->recent_ms + 0.125 * ms : ms;
    a->stepping = 0;
  }
  pthread_mutex_unlock(&a->mu);
  uint8_t *buf;
  size_t len;
  int enc = gy_wire_agent_report_encode(gen, rank, rep, &buf, &len);
  int rc = send_msg(a, enc, buf, len);
  if (rc == GY_ECOMM) {
    gy_log(GY_LOG_DEBUG, "agent", "report of step %" PRId64 " dropped: no session", rep->step);
    return 0;
  }
  return rc;
}

int gy_agent_eval(gy_agent_t *a, const gy_agent_eval_t *ev) {
  if (!a || !ev || ev->nsources < 0 || ev->nsources > 1024 || (ev->nsources && !ev->sources))
    return GY_EINVAL;
  pthread_mutex_lock(&a->mu);
  if (!a->joined) {
    pthread_mutex_unlock(&a->mu);
    return GY_EINVAL;
  }
  uint64_t gen = a->asg.generation;
  int rank = a->asg.rank;
  pthread_mutex_unlock(&a->mu);
  uint8_t *buf;
  size_t len;
  int enc = gy_wire_agent_eval_encode(gen, rank, ev, &buf, &len);
  int rc = send_msg(a, enc, buf, len);
  if (rc == GY_ECOMM) {
    gy_log(GY_LOG_DEBUG, "agent", "evaluation of step %" PRId64 " dropped: no session", ev->step);
    return 0;
  }
  return rc;
}

int gy_agent_ack(gy_agent_t *a, uint64_t seq, int64_t step, int ok, const char *error,
                 uint64_t checkpoint_bytes) {
  if (!a) return GY_EINVAL;
  pthread_mutex_lock(&a->mu);
  mark_applied(a, seq);
  for (int i = 0; i < a->npending; i++) {
    const pending_t *p = &a->pending[i];
    if (p->d.seq != seq) continue;
    if (p->d.kind == GY_DIRECTIVE_ROLLBACK && ok) {
      if (step != p->d.to_step)
        gy_log(GY_LOG_WARN, "agent",
               "rollback seq %" PRIu64 " acked with step %" PRId64 ", not its to_step %" PRId64,
               seq, step, p->d.to_step);
      a->steps_done = p->d.to_step;
      if (a->grants == p->grants_at) a->horizon = p->d.to_step;
      pthread_cond_broadcast(&a->cv);
    }
    pending_remove(a, i, 1);
    break;
  }
  uint64_t gen = a->asg.generation;
  int rank = a->asg.rank;
  pthread_mutex_unlock(&a->mu);
  uint8_t *buf;
  size_t len;
  int enc = gy_wire_agent_ack_encode(gen, rank, seq, step, ok, error, checkpoint_bytes, &buf, &len);
  int rc = send_msg(a, enc, buf, len);
  return rc == GY_ECOMM ? 0 : rc; /* a lost ack: the controller re-forms from the reports */
}

gy_store_t *gy_agent_store(gy_agent_t *a) {
  return a ? &a->store : NULL;
}

const gy_agent_assignment_t *gy_agent_assignment(const gy_agent_t *a) {
  return a && a->joined ? &a->asg : NULL;
}

int gy_agent_connected(gy_agent_t *a) {
  pthread_mutex_lock(&a->mu);
  int c = a->connected;
  pthread_mutex_unlock(&a->mu);
  return c;
}

void gy_agent_interrupt(gy_agent_t *a) {
  if (a) a->interrupted = 1;
}

const char *gy_agent_errmsg(const gy_agent_t *a) {
  return a ? a->errmsg : "";
}
