/* rpc_client: the gRPC client of the glue (see rpc.h), usable from any thread.
 *
 * API, in order: gy_rpc_status_name, gy_rpc_client_create, gy_rpc_client_create_tls,
 * gy_rpc_client_create_opts (channel options: size limit, keepalive, connect deadline and
 * reconnect back-off, which the etcd store sets to its own values), gy_rpc_client_destroy,
 * gy_rpc_unary, gy_rpc_cstream_open, gy_rpc_cstream_send, gy_rpc_cstream_close. Channel
 * credentials come from rpc_tls.c.
 *
 * A channel, and one cq with its own thread for streams; unary calls use a private pluck queue
 * each (blocking, thread-safe). The stream thread, blocked in grpc_completion_queue_next for
 * the client's lifetime, also keeps gRPC's poller running between calls, so a connection
 * attempt begun during a call that timed out is still seen through.
 *
 * Invariants: a stream keeps one RECV_MESSAGE pending, one SEND_MESSAGE in flight (later sends
 * wait in a queue), and a RECV_STATUS_ON_CLIENT started at open; every start_batch on a stream
 * happens under its mutex. on_close runs once the status is in and no receive is pending, so
 * no on_message follows it.
 */
#include "common/rpc_internal.h"

#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/log.h"

struct gy_rpc_client {
  grpc_channel *ch;
  grpc_completion_queue *cq;
  pthread_t thread;
  int thread_started;
  pthread_mutex_t mu; /* guards streams */
  gy_rpc_cstream_t *streams;
};

typedef enum { C_OPEN, C_RECV, C_SEND, C_STATUS } ctag_kind_t;
typedef struct {
  ctag_kind_t kind;
  gy_rpc_cstream_t *owner;
} ctag_t;

struct gy_rpc_cstream {
  gy_rpc_client_t *c;
  gy_rpc_cstream_t *prev, *next; /* c->streams */
  grpc_call *call;
  gy_rpc_cstream_cbs_t cbs;
  void *ud;
  pthread_mutex_t mu; /* guards everything below and every start_batch on call */
  pthread_cond_t cv;
  ctag_t t_open, t_recv, t_send, t_status;
  grpc_metadata md;
  char *md_key, *md_val;
  grpc_metadata_array init_md, trail_md;
  grpc_status_code status;
  grpc_slice details;
  grpc_byte_buffer *recv_bb, *send_bb;
  gy__rpc_sendq_t *q_head, *q_tail;
  int ops;
  int has_md;
  int recv_pending, status_done, closing, closed, ended, closed_cb_done, halfclosed;
};

const char *gy_rpc_status_name(int status) {
  static const char *const names[] = {"OK",
                                      "CANCELLED",
                                      "UNKNOWN",
                                      "INVALID_ARGUMENT",
                                      "DEADLINE_EXCEEDED",
                                      "NOT_FOUND",
                                      "ALREADY_EXISTS",
                                      "PERMISSION_DENIED",
                                      "RESOURCE_EXHAUSTED",
                                      "FAILED_PRECONDITION",
                                      "ABORTED",
                                      "OUT_OF_RANGE",
                                      "UNIMPLEMENTED",
                                      "INTERNAL",
                                      "UNAVAILABLE",
                                      "DATA_LOSS",
                                      "UNAUTHENTICATED"};
  return status >= 0 && status <= 16 ? names[status] : "UNKNOWN";
}

static void cstream_start(gy_rpc_cstream_t *s, grpc_op *ops, size_t n, ctag_t *t) {
  grpc_call_error e = grpc_call_start_batch(s->call, ops, n, t, NULL);
  if (e == GRPC_CALL_OK)
    s->ops++;
  else
    gy_log(GY_LOG_ERROR, "rpc", "client start_batch failed: %d", (int)e);
}

static void cstream_recv(gy_rpc_cstream_t *s) {
  grpc_op op;
  memset(&op, 0, sizeof(op));
  op.op = GRPC_OP_RECV_MESSAGE;
  op.data.recv_message.recv_message = &s->recv_bb;
  int before = s->ops;
  cstream_start(s, &op, 1, &s->t_recv);
  s->recv_pending = s->ops > before;
}

/* Under s->mu: starts the next queued message, or the half-close when closing. */
static void cstream_pump(gy_rpc_cstream_t *s) {
  if (s->send_bb || s->ended) return;
  grpc_op op;
  memset(&op, 0, sizeof(op));
  if (s->q_head) {
    gy__rpc_sendq_t *q = s->q_head;
    s->q_head = q->next;
    if (!s->q_head) s->q_tail = NULL;
    s->send_bb = q->bb;
    free(q);
    op.op = GRPC_OP_SEND_MESSAGE;
    op.data.send_message.send_message = s->send_bb;
    cstream_start(s, &op, 1, &s->t_send);
  } else if (s->closing && !s->halfclosed) {
    s->halfclosed = 1;
    op.op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    cstream_start(s, &op, 1, &s->t_send);
  }
}

static void client_event(ctag_t *t, int ok) {
  gy_rpc_cstream_t *s = t->owner;
  grpc_slice msg = grpc_empty_slice();
  int have_msg = 0, fire_close = 0;
  pthread_mutex_lock(&s->mu);
  gy_rpc_cstream_cbs_t cbs = s->cbs;
  void *ud = s->ud;
  s->ops--;
  switch (t->kind) {
  case C_OPEN:
    break;
  case C_RECV: {
    grpc_byte_buffer *bb = s->recv_bb;
    s->recv_bb = NULL;
    s->recv_pending = 0;
    if (ok && bb && !s->closing) {
      /* The next receive keeps s alive (ops > 0) while on_message runs below. */
      cstream_recv(s);
      if (s->recv_pending) {
        msg = gy__rpc_read_buffer(bb);
        have_msg = 1;
      }
    }
    if (bb) grpc_byte_buffer_destroy(bb);
    break;
  }
  case C_SEND:
    if (s->send_bb) grpc_byte_buffer_destroy(s->send_bb);
    s->send_bb = NULL;
    if (!ok) s->ended = 1;
    cstream_pump(s);
    break;
  case C_STATUS:
    s->status_done = 1;
    s->ended = 1;
    break;
  }
  if (s->status_done && !s->recv_pending && !s->closed) {
    s->closed = 1;
    fire_close = 1; /* closed_cb_done stays 0, so s outlives the callback */
  }
  /* A closer waits for ops == 0 and closed_cb_done: after this unlock, s may be gone unless a
   * receive is pending (have_msg) or on_close is still to run (fire_close). */
  if (s->closing) pthread_cond_broadcast(&s->cv);
  pthread_mutex_unlock(&s->mu);

  if (have_msg) {
    if (cbs.on_message) cbs.on_message(ud, GRPC_SLICE_START_PTR(msg), GRPC_SLICE_LENGTH(msg));
    grpc_slice_unref(msg);
  }
  if (fire_close) {
    char *det = gy__rpc_slice_to_str(s->details);
    if (cbs.on_close) cbs.on_close(ud, (int)s->status, det ? det : "");
    free(det);
    pthread_mutex_lock(&s->mu);
    s->closed_cb_done = 1;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
  }
}

static void *client_thread(void *arg) {
  gy_rpc_client_t *c = arg;
  for (;;) {
    grpc_event ev = grpc_completion_queue_next(c->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
    if (ev.type == GRPC_QUEUE_SHUTDOWN) break;
    if (ev.type == GRPC_OP_COMPLETE) client_event(ev.tag, ev.success);
  }
  return NULL;
}

static int empty(const char *s) {
  return !s || !*s;
}

int gy_rpc_client_create(gy_rpc_client_t **out, const char *target, char *errmsg, size_t errlen) {
  return gy_rpc_client_create_tls(out, target, NULL, errmsg, errlen);
}

int gy_rpc_client_create_tls(gy_rpc_client_t **out, const char *target,
                             const gy_rpc_client_tls_t *tls, char *errmsg, size_t errlen) {
  gy_rpc_client_opts_t o;
  memset(&o, 0, sizeof(o));
  o.tls = tls;
  return gy_rpc_client_create_opts(out, target, &o, errmsg, errlen);
}

/* Appends an integer channel argument. */
static void int_arg(grpc_arg *a, size_t *n, const char *key, int value) {
  a[*n].type = GRPC_ARG_INTEGER;
  a[*n].key = (char *)key;
  a[*n].value.integer = value;
  (*n)++;
}

int gy_rpc_client_create_opts(gy_rpc_client_t **out, const char *target,
                              const gy_rpc_client_opts_t *opts, char *errmsg, size_t errlen) {
  *out = NULL;
  if (!target || !*target) {
    gy_errmsg(errmsg, errlen, "rpc client: missing target address");
    return GY_EINVAL;
  }
  gy_rpc_client_opts_t o;
  memset(&o, 0, sizeof(o));
  if (opts) o = *opts;
  const gy_rpc_client_tls_t *tls = o.tls;
  gy_rpc_client_t *c = calloc(1, sizeof(*c));
  if (!c) {
    gy_errmsg(errmsg, errlen, "rpc client: out of memory");
    return GY_ENOMEM;
  }
  grpc_init();
  int rc;
  grpc_channel_credentials *creds = gy__rpc_client_creds(tls, &rc, errmsg, errlen);
  if (!creds) {
    free(c);
    grpc_shutdown();
    return rc ? rc : GY_ENOMEM;
  }
  pthread_mutex_init(&c->mu, NULL);
  size_t max = o.max_message ? o.max_message : GY__RPC_DEFAULT_MAX_MESSAGE;
  if (max > 0x7fffffff) max = 0x7fffffff;
  grpc_arg a[8];
  size_t n = 2;
  gy__rpc_limit_args(a, max);
  /* A peer that stops answering (a stopped or partitioned controller keeps its TCP connection)
   * fails the open streams after KEEPALIVE_MS + KEEPALIVE_TIMEOUT_MS, so that a worker moves on
   * to the next controller address instead of waiting for ever. */
  int_arg(a, &n, GRPC_ARG_KEEPALIVE_TIME_MS,
          o.keepalive_ms ? o.keepalive_ms : GY__RPC_KEEPALIVE_MS);
  int_arg(a, &n, GRPC_ARG_KEEPALIVE_TIMEOUT_MS,
          o.keepalive_timeout_ms ? o.keepalive_timeout_ms : GY__RPC_KEEPALIVE_TIMEOUT_MS);
  /* gRPC's minimum reconnect back-off is also its connect deadline (20 s by default): a peer
   * that accepts TCP but never speaks HTTP/2 (a stopped process) would hold a call that long
   * before the next address is tried. */
  int_arg(a, &n, GRPC_ARG_MIN_RECONNECT_BACKOFF_MS,
          o.connect_timeout_ms ? o.connect_timeout_ms : GY__RPC_CONNECT_TIMEOUT_MS);
  if (o.backoff_initial_ms)
    int_arg(a, &n, GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, o.backoff_initial_ms);
  if (o.backoff_max_ms) int_arg(a, &n, GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, o.backoff_max_ms);
  if (tls && !empty(tls->target_name)) {
    a[n].type = GRPC_ARG_STRING;
    a[n].key = (char *)GRPC_SSL_TARGET_NAME_OVERRIDE_ARG;
    a[n].value.string = (char *)tls->target_name;
    n++;
  }
  grpc_channel_args args = {n, a};
  c->ch = grpc_channel_create(target, creds, &args);
  grpc_channel_credentials_release(creds);
  c->cq = grpc_completion_queue_create_for_next(NULL);
  if (!c->ch || !c->cq || pthread_create(&c->thread, NULL, client_thread, c) != 0) {
    gy_errmsg(errmsg, errlen, "rpc client: cannot create a channel to %s", target);
    if (c->ch) grpc_channel_destroy(c->ch);
    if (c->cq) {
      grpc_completion_queue_shutdown(c->cq);
      while (grpc_completion_queue_next(c->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type !=
             GRPC_QUEUE_SHUTDOWN) {
      }
      grpc_completion_queue_destroy(c->cq);
    }
    pthread_mutex_destroy(&c->mu);
    free(c);
    grpc_shutdown();
    return GY_ECOMM;
  }
  c->thread_started = 1;
  *out = c;
  return 0;
}

void gy_rpc_client_destroy(gy_rpc_client_t *c) {
  if (!c) return;
  for (;;) {
    pthread_mutex_lock(&c->mu);
    gy_rpc_cstream_t *s = c->streams;
    pthread_mutex_unlock(&c->mu);
    if (!s) break;
    gy_rpc_cstream_close(s);
  }
  grpc_channel_destroy(c->ch);
  grpc_completion_queue_shutdown(c->cq);
  if (c->thread_started) pthread_join(c->thread, NULL);
  grpc_completion_queue_destroy(c->cq);
  pthread_mutex_destroy(&c->mu);
  free(c);
  grpc_shutdown();
}

static gpr_timespec deadline_of(int timeout_ms) {
  if (timeout_ms <= 0) return gpr_inf_future(GPR_CLOCK_MONOTONIC);
  return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(timeout_ms, GPR_TIMESPAN));
}

int gy_rpc_unary(gy_rpc_client_t *c, const char *method, const char *md_key, const char *md_val,
                 const void *req, size_t len, int timeout_ms, void **resp, size_t *resp_len,
                 int *status, char *errmsg, size_t errlen) {
  int st_dummy;
  if (!status) status = &st_dummy;
  *status = GY_RPC_INTERNAL;
  if (resp) *resp = NULL;
  if (resp_len) *resp_len = 0;
  if (!c || !method) {
    gy_errmsg(errmsg, errlen, "rpc: missing client or method");
    return GY_EINVAL;
  }
  grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
  grpc_slice msl = grpc_slice_from_copied_string(method);
  grpc_call *call = grpc_channel_create_call(c->ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq, msl, NULL,
                                             deadline_of(timeout_ms), NULL);
  grpc_slice_unref(msl);
  grpc_metadata md;
  memset(&md, 0, sizeof(md));
  int nmd = 0;
  if (md_key && md_val) {
    md.key = grpc_slice_from_copied_string(md_key);
    md.value = grpc_slice_from_copied_string(md_val);
    nmd = 1;
  }
  grpc_byte_buffer *req_bb = gy__rpc_make_buffer(req, len);
  grpc_byte_buffer *resp_bb = NULL;
  grpc_metadata_array init_md, trail_md;
  grpc_metadata_array_init(&init_md);
  grpc_metadata_array_init(&trail_md);
  grpc_status_code st = GRPC_STATUS_UNKNOWN;
  grpc_slice details = grpc_empty_slice();
  const char *err_str = NULL;

  grpc_op ops[6];
  memset(ops, 0, sizeof(ops));
  ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
  ops[0].data.send_initial_metadata.count = (size_t)nmd;
  ops[0].data.send_initial_metadata.metadata = nmd ? &md : NULL;
  ops[1].op = GRPC_OP_SEND_MESSAGE;
  ops[1].data.send_message.send_message = req_bb;
  ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
  ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
  ops[3].data.recv_initial_metadata.recv_initial_metadata = &init_md;
  ops[4].op = GRPC_OP_RECV_MESSAGE;
  ops[4].data.recv_message.recv_message = &resp_bb;
  ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
  ops[5].data.recv_status_on_client.trailing_metadata = &trail_md;
  ops[5].data.recv_status_on_client.status = &st;
  ops[5].data.recv_status_on_client.status_details = &details;
  ops[5].data.recv_status_on_client.error_string = &err_str;
  int rc = 0;
  grpc_call_error e = grpc_call_start_batch(call, ops, 6, (void *)1, NULL);
  if (e != GRPC_CALL_OK) {
    gy_errmsg(errmsg, errlen, "rpc %s: start_batch failed (%d)", method, (int)e);
    rc = GY_ECOMM;
  } else {
    grpc_event ev =
        grpc_completion_queue_pluck(cq, (void *)1, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
    (void)ev; /* RECV_STATUS_ON_CLIENT always completes; the status says how the call went */
    *status = (int)st;
    if (st == GRPC_STATUS_OK) {
      if (resp_bb) {
        grpc_slice sl = gy__rpc_read_buffer(resp_bb);
        size_t n = GRPC_SLICE_LENGTH(sl);
        if (resp && n) {
          *resp = malloc(n);
          if (!*resp) {
            rc = GY_ENOMEM;
            gy_errmsg(errmsg, errlen, "rpc %s: out of memory for a %zu-byte reply", method, n);
          } else {
            memcpy(*resp, GRPC_SLICE_START_PTR(sl), n);
            if (resp_len) *resp_len = n;
          }
        }
        grpc_slice_unref(sl);
      }
    } else {
      char *det = gy__rpc_slice_to_str(details);
      gy_errmsg(errmsg, errlen, "%s", det && *det ? det : (err_str ? err_str : "rpc failed"));
      free(det);
      rc = st == GRPC_STATUS_DEADLINE_EXCEEDED ? GY_ETIMEDOUT : GY_ECOMM;
    }
  }
  if (err_str) gpr_free((void *)err_str);
  grpc_slice_unref(details);
  if (resp_bb) grpc_byte_buffer_destroy(resp_bb);
  grpc_byte_buffer_destroy(req_bb);
  grpc_metadata_array_destroy(&init_md);
  grpc_metadata_array_destroy(&trail_md);
  if (nmd) {
    grpc_slice_unref(md.key);
    grpc_slice_unref(md.value);
  }
  grpc_call_unref(call);
  grpc_completion_queue_shutdown(cq);
  while (grpc_completion_queue_pluck(cq, NULL, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type !=
         GRPC_QUEUE_SHUTDOWN) {
  }
  grpc_completion_queue_destroy(cq);
  return rc;
}

int gy_rpc_cstream_open(gy_rpc_client_t *c, const char *method, const char *md_key,
                        const char *md_val, const gy_rpc_cstream_cbs_t *cbs, void *ud,
                        gy_rpc_cstream_t **out, char *errmsg, size_t errlen) {
  *out = NULL;
  if (!c || !method || !cbs) {
    gy_errmsg(errmsg, errlen, "rpc stream: missing client, method or callbacks");
    return GY_EINVAL;
  }
  gy_rpc_cstream_t *s = calloc(1, sizeof(*s));
  if (!s) {
    gy_errmsg(errmsg, errlen, "rpc stream %s: out of memory", method);
    return GY_ENOMEM;
  }
  s->c = c;
  s->cbs = *cbs;
  s->ud = ud;
  pthread_mutex_init(&s->mu, NULL);
  pthread_cond_init(&s->cv, NULL);
  s->t_open = (ctag_t){C_OPEN, s};
  s->t_recv = (ctag_t){C_RECV, s};
  s->t_send = (ctag_t){C_SEND, s};
  s->t_status = (ctag_t){C_STATUS, s};
  grpc_metadata_array_init(&s->init_md);
  grpc_metadata_array_init(&s->trail_md);
  s->details = grpc_empty_slice();
  int nmd = 0;
  if (md_key && md_val) {
    s->md.key = grpc_slice_from_copied_string(md_key);
    s->md.value = grpc_slice_from_copied_string(md_val);
    nmd = 1;
    s->has_md = 1;
  }
  grpc_slice msl = grpc_slice_from_copied_string(method);
  s->call = grpc_channel_create_call(c->ch, NULL, GRPC_PROPAGATE_DEFAULTS, c->cq, msl, NULL,
                                     gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
  grpc_slice_unref(msl);

  pthread_mutex_lock(&s->mu);
  grpc_op ops[2];
  memset(ops, 0, sizeof(ops));
  ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
  ops[0].data.send_initial_metadata.count = (size_t)nmd;
  ops[0].data.send_initial_metadata.metadata = nmd ? &s->md : NULL;
  ops[1].op = GRPC_OP_RECV_INITIAL_METADATA;
  ops[1].data.recv_initial_metadata.recv_initial_metadata = &s->init_md;
  cstream_start(s, ops, 2, &s->t_open);
  memset(ops, 0, sizeof(ops));
  ops[0].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
  ops[0].data.recv_status_on_client.trailing_metadata = &s->trail_md;
  ops[0].data.recv_status_on_client.status = &s->status;
  ops[0].data.recv_status_on_client.status_details = &s->details;
  int before = s->ops;
  cstream_start(s, ops, 1, &s->t_status);
  int status_ok = s->ops > before;
  cstream_recv(s);
  pthread_mutex_unlock(&s->mu);
  if (!status_ok) {
    /* Cannot learn the end of this call: give up on it now (close cancels and waits). */
    gy_errmsg(errmsg, errlen, "rpc stream %s: cannot start the call", method);
    s->closed_cb_done = 1;
    s->c = NULL;
    gy_rpc_cstream_close(s);
    return GY_ECOMM;
  }
  pthread_mutex_lock(&c->mu);
  s->next = c->streams;
  if (c->streams) c->streams->prev = s;
  c->streams = s;
  pthread_mutex_unlock(&c->mu);
  *out = s;
  return 0;
}

int gy_rpc_cstream_send(gy_rpc_cstream_t *s, const void *msg, size_t len) {
  if (!s) return GY_EINVAL;
  gy__rpc_sendq_t *q = malloc(sizeof(*q));
  if (!q) return GY_ENOMEM;
  pthread_mutex_lock(&s->mu);
  if (s->ended || s->closing || s->closed) {
    pthread_mutex_unlock(&s->mu);
    free(q);
    return GY_ECOMM;
  }
  q->bb = gy__rpc_make_buffer(msg, len);
  q->next = NULL;
  if (s->q_tail)
    s->q_tail->next = q;
  else
    s->q_head = q;
  s->q_tail = q;
  cstream_pump(s);
  pthread_mutex_unlock(&s->mu);
  return 0;
}

void gy_rpc_cstream_close(gy_rpc_cstream_t *s) {
  if (!s) return;
  gy_rpc_client_t *c = s->c;
  pthread_mutex_lock(&s->mu);
  s->closing = 1;
  /* Queued messages are dropped: close means "stop now". */
  while (s->q_head) {
    gy__rpc_sendq_t *q = s->q_head;
    s->q_head = q->next;
    grpc_byte_buffer_destroy(q->bb);
    free(q);
  }
  s->q_tail = NULL;
  cstream_pump(s); /* half-close when no message is in flight */
  pthread_mutex_unlock(&s->mu);
  grpc_call_cancel(s->call, NULL);
  pthread_mutex_lock(&s->mu);
  while (s->ops || !s->closed_cb_done)
    pthread_cond_wait(&s->cv, &s->mu);
  pthread_mutex_unlock(&s->mu);
  if (c) {
    pthread_mutex_lock(&c->mu);
    if (s->prev)
      s->prev->next = s->next;
    else if (c->streams == s)
      c->streams = s->next;
    if (s->next) s->next->prev = s->prev;
    pthread_mutex_unlock(&c->mu);
  }
  grpc_call_unref(s->call);
  grpc_metadata_array_destroy(&s->init_md);
  grpc_metadata_array_destroy(&s->trail_md);
  grpc_slice_unref(s->details);
  if (s->has_md) {
    grpc_slice_unref(s->md.key);
    grpc_slice_unref(s->md.value);
  }
  if (s->recv_bb) grpc_byte_buffer_destroy(s->recv_bb);
  if (s->send_bb) grpc_byte_buffer_destroy(s->send_bb);
  pthread_cond_destroy(&s->cv);
  pthread_mutex_destroy(&s->mu);
  free(s);
}
