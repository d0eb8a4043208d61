/* rpc_server: the gRPC server of the glue (see rpc.h), its handlers run on a libuv loop.
 *
 * API, in order: gy_rpc_server_create, gy_rpc_server_add_unary, gy_rpc_server_add_stream,
 * gy_rpc_server_start, gy_rpc_server_shutdown, gy_rpc_server_destroy; on a call: gy_rpc_reply,
 * gy_rpc_send, gy_rpc_send_many, gy_rpc_finish, gy_rpc_call_set_data, gy_rpc_call_data,
 * gy_rpc_call_method, gy_rpc_call_peer, gy_rpc_call_metadata. TLS credentials come from
 * rpc_tls.c.
 *
 * One grpc completion queue (cq) per server and one thread that blocks in
 * grpc_completion_queue_next and hands each {tag, ok} to the libuv loop through a
 * mutex-protected ring and uv_async_send. Every handler, every grpc_call_start_batch and every
 * change of call state happens on the loop thread; the cq thread never touches anything but the
 * ring. After draining the ring the loop also polls the cq without blocking (up to
 * INLINE_POLL events), which saves one thread hop per message (15k -> ~90k messages/s in the
 * notes). Calls arrive through grpc_server_request_call (generic) and are dispatched by method
 * path; an unknown path is answered UNIMPLEMENTED, a message over max_message is failed by grpc
 * itself (GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH) with RESOURCE_EXHAUSTED: neither reaches a
 * handler. Costs kept off the per-message path: a received message that arrived in one
 * uncompressed slice is handed to the handler without a copy; a send on an idle stream starts
 * at once without a queue entry; gy_rpc_send_many shares one slice among many streams (a
 * grant to every rank is copied once, not once per rank).
 *
 * Invariants: a tag is a `tag_t` embedded in its owner; each call has at most one batch of each
 * kind in flight (recv, send, close, status, init), `ops` counts them; a RECV_CLOSE_ON_SERVER
 * is started at accept and its completion means the call is over (status sent or cancelled): a
 * stream's on_close runs then, exactly once. A call is freed when no op is in flight and the
 * user no longer holds it (unary: after gy_rpc_reply; stream: after on_close). Shutdown:
 * grpc_server_shutdown_and_notify + cancel_all_calls; when the shutdown tag is back and no op
 * is in flight anywhere, the server is destroyed, the cq shut down, its thread joined and the
 * async handle closed; its close callback calls `done`.
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

#define INLINE_POLL 256
#define HEALTH_METHOD "/grpc.health.v1.Health/Check"

static char *xstrdup(const char *s) {
  if (!s) return NULL;
  size_t n = strlen(s) + 1;
  char *p = malloc(n);
  if (p) memcpy(p, s, n);
  return p;
}

typedef enum { T_NEW, T_RECV, T_SEND, T_CLOSE, T_STATUS, T_INIT, T_SHUTDOWN } tag_kind_t;
typedef struct {
  tag_kind_t kind;
  void *owner;
} tag_t;

typedef enum { M_UNARY, M_STREAM, M_HEALTH, M_UNKNOWN } method_kind_t;

typedef struct method {
  struct method *next;
  char *path;
  method_kind_t kind;
  gy_rpc_unary_cb unary;
  gy_rpc_stream_cbs_t cbs;
  void *ud;
} method_t;

struct gy_rpc_call {
  gy_rpc_server_t *s;
  struct gy_rpc_call *prev, *next; /* s->calls */
  grpc_call *call;                 /* NULL once dead (server torn down under a held call) */
  grpc_call_details details;
  grpc_metadata_array req_md;
  char *method;
  char *peer;
  char **md; /* key, value, key, value, ... (copies of req_md) */
  size_t nmd;
  method_kind_t kind;
  method_t *m;
  void *data;
  void (*cancel_cb)(void *, gy_rpc_call_t *); /* a held unary call's client went away */
  void *cancel_ud;
  tag_t t_recv, t_send, t_close, t_status, t_init;
  grpc_byte_buffer *recv_bb;
  grpc_byte_buffer *send_bb; /* in flight */
  gy__rpc_sendq_t *q_head, *q_tail;
  int ops;         /* batches in flight */
  int held;        /* the user holds the call (unary before reply, stream before on_close) */
  int cancelled;   /* output of RECV_CLOSE_ON_SERVER */
  int init_sent;   /* SEND_INITIAL_METADATA started */
  int finishing;   /* gy_rpc_finish called (status waits for the send queue) */
  int status_sent; /* SEND_STATUS_FROM_SERVER started */
  int ended;       /* no more sends accepted */
  int closed;      /* RECV_CLOSE_ON_SERVER completed (on_close ran for streams) */
  int half_closed; /* the peer half-closed */
  int fin_status;
  grpc_slice fin_details;
  int has_details;
};

typedef struct {
  void *tag;
  int ok;
} event_t;

struct gy_rpc_server {
  uv_loop_t *loop;
  gy_rpc_server_opts_t opts;
  char *bind;
  grpc_server *srv;
  grpc_completion_queue *cq;
  pthread_t thread;
  int thread_started;
  uv_async_t async;
  int async_init;
  pthread_mutex_t mu; /* guards ring */
  event_t *ring;
  size_t nring, capring;
  method_t *methods;
  gy_rpc_call_t *calls;
  gy_rpc_call_t *pending; /* the call slot awaiting grpc_server_request_call */
  int ops;                /* server-level batches in flight (request_call, shutdown) */
  int started, shutting_down, shutdown_tag_done, torn_down;
  tag_t t_shutdown;
  void (*done)(void *ud);
  void *done_ud;
};

static void *cq_thread(void *arg) {
  gy_rpc_server_t *s = arg;
  for (;;) {
    grpc_event ev = grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
    if (ev.type == GRPC_QUEUE_SHUTDOWN) break;
    if (ev.type != GRPC_OP_COMPLETE) continue;
    pthread_mutex_lock(&s->mu);
    if (s->nring == s->capring) {
      size_t cap = s->capring ? s->capring * 2 : 256;
      event_t *r = realloc(s->ring, cap * sizeof(*r));
      if (!r) {
        /* Losing an event would hang a call forever; nothing sane is left to do. */
        pthread_mutex_unlock(&s->mu);
        gy_log(GY_LOG_ERROR, "rpc", "out of memory in the completion-queue thread");
        abort();
      }
      s->ring = r;
      s->capring = cap;
    }
    s->ring[s->nring].tag = ev.tag;
    s->ring[s->nring].ok = ev.success;
    s->nring++;
    pthread_mutex_unlock(&s->mu);
    uv_async_send(&s->async);
  }
  return NULL;
}

static void call_free(gy_rpc_call_t *c) {
  gy_rpc_server_t *s = c->s;
  if (c->prev)
    c->prev->next = c->next;
  else if (s->calls == c)
    s->calls = c->next;
  if (c->next) c->next->prev = c->prev;
  if (c->call) grpc_call_unref(c->call);
  grpc_call_details_destroy(&c->details);
  grpc_metadata_array_destroy(&c->req_md);
  if (c->recv_bb) grpc_byte_buffer_destroy(c->recv_bb);
  if (c->send_bb) grpc_byte_buffer_destroy(c->send_bb);
  while (c->q_head) {
    gy__rpc_sendq_t *q = c->q_head;
    c->q_head = q->next;
    grpc_byte_buffer_destroy(q->bb);
    free(q);
  }
  if (c->has_details) grpc_slice_unref(c->fin_details);
  for (size_t i = 0; i < 2 * c->nmd; i++)
    free(c->md[i]);
  free(c->md);
  free(c->method);
  free(c->peer);
  free(c);
}

static void maybe_free(gy_rpc_call_t *c) {
  if (c->ops == 0 && !c->held && (c->closed || !c->call)) call_free(c);
}

static gy_rpc_call_t *call_new(gy_rpc_server_t *s) {
  gy_rpc_call_t *c = calloc(1, sizeof(*c));
  if (!c) return NULL;
  c->s = s;
  grpc_call_details_init(&c->details);
  grpc_metadata_array_init(&c->req_md);
  c->t_recv = (tag_t){T_RECV, c};
  c->t_send = (tag_t){T_SEND, c};
  c->t_close = (tag_t){T_CLOSE, c};
  c->t_status = (tag_t){T_STATUS, c};
  c->t_init = (tag_t){T_INIT, c};
  return c;
}

static int start(gy_rpc_call_t *c, grpc_op *ops, size_t n, tag_t *tag) {
  grpc_call_error e = grpc_call_start_batch(c->call, ops, n, tag, NULL);
  if (e != GRPC_CALL_OK) {
    gy_log(GY_LOG_ERROR, "rpc", "start_batch on %s failed: %d", c->method ? c->method : "?",
           (int)e);
    return GY_ECOMM;
  }
  c->ops++;
  return 0;
}

static void request_next(gy_rpc_server_t *s) {
  if (s->shutting_down || s->pending) return;
  gy_rpc_call_t *c = call_new(s);
  if (!c) {
    gy_log(GY_LOG_ERROR, "rpc", "out of memory: the server stops accepting calls");
    return;
  }
  grpc_call_error e =
      grpc_server_request_call(s->srv, &c->call, &c->details, &c->req_md, s->cq, s->cq, &c->t_init);
  if (e != GRPC_CALL_OK) {
    gy_log(GY_LOG_ERROR, "rpc", "grpc_server_request_call failed: %d", (int)e);
    grpc_call_details_destroy(&c->details);
    grpc_metadata_array_destroy(&c->req_md);
    free(c);
    return;
  }
  s->pending = c;
  s->ops++;
}

static void start_recv(gy_rpc_call_t *c) {
  grpc_op op;
  memset(&op, 0, sizeof(op));
  op.op = GRPC_OP_RECV_MESSAGE;
  op.data.recv_message.recv_message = &c->recv_bb;
  start(c, &op, 1, &c->t_recv);
}

static void send_status_now(gy_rpc_call_t *c) {
  grpc_op ops[2];
  size_t n = 0;
  memset(ops, 0, sizeof(ops));
  if (!c->init_sent) {
    ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
    c->init_sent = 1;
  }
  ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
  ops[n].data.send_status_from_server.status = (grpc_status_code)c->fin_status;
  ops[n].data.send_status_from_server.status_details = c->has_details ? &c->fin_details : NULL;
  n++;
  c->status_sent = 1;
  start(c, ops, n, &c->t_status);
}

static void set_details(gy_rpc_call_t *c, const char *details) {
  if (c->has_details) grpc_slice_unref(c->fin_details);
  c->has_details = 0;
  if (details && *details) {
    c->fin_details = grpc_slice_from_copied_string(details);
    c->has_details = 1;
  }
}

/* Starts the next queued send, or the status once the queue is empty and finish was asked. */
static void pump_sends(gy_rpc_call_t *c) {
  if (c->send_bb || c->status_sent || c->closed || !c->call) return;
  if (c->q_head) {
    gy__rpc_sendq_t *q = c->q_head;
    c->q_head = q->next;
    if (!c->q_head) c->q_tail = NULL;
    c->send_bb = q->bb;
    free(q);
    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_SEND_MESSAGE;
    op.data.send_message.send_message = c->send_bb;
    if (start(c, &op, 1, &c->t_send) != 0) {
      grpc_byte_buffer_destroy(c->send_bb);
      c->send_bb = NULL;
    }
    return;
  }
  if (c->finishing) send_status_now(c);
}

static void reply_internal(gy_rpc_call_t *c, int status, const char *details, const void *resp,
                           size_t len) {
  grpc_op ops[3];
  size_t n = 0;
  memset(ops, 0, sizeof(ops));
  set_details(c, details);
  c->fin_status = status;
  grpc_byte_buffer *bb = NULL;
  if (!c->init_sent) {
    ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
    c->init_sent = 1;
  }
  if (status == GY_RPC_OK) {
    bb = gy__rpc_make_buffer(resp, len);
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n].data.send_message.send_message = bb;
    n++;
  }
  ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
  ops[n].data.send_status_from_server.status = (grpc_status_code)status;
  ops[n].data.send_status_from_server.status_details = c->has_details ? &c->fin_details : NULL;
  n++;
  c->status_sent = 1;
  c->ended = 1;
  /* grpc holds its own reference to the message's slices once the batch has started. */
  c->send_bb = bb;
  start(c, ops, n, &c->t_status);
}

static void on_accept(gy_rpc_server_t *s, gy_rpc_call_t *c) {
  c->method = gy__rpc_slice_to_str(c->details.method);
  char *peer = grpc_call_get_peer(c->call);
  c->peer = xstrdup(peer ? peer : "");
  gpr_free(peer);
  c->nmd = c->req_md.count;
  c->md = calloc(2 * c->nmd + 1, sizeof(char *));
  if (!c->method || !c->peer || !c->md) {
    c->nmd = 0;
    gy_log(GY_LOG_ERROR, "rpc", "out of memory accepting a call");
    grpc_call_cancel(c->call, NULL);
    c->kind = M_UNKNOWN;
  } else {
    for (size_t i = 0; i < c->nmd; i++) {
      c->md[2 * i] = gy__rpc_slice_to_str(c->req_md.metadata[i].key);
      c->md[2 * i + 1] = gy__rpc_slice_to_str(c->req_md.metadata[i].value);
    }
    c->kind = M_UNKNOWN;
    for (method_t *m = s->methods; m; m = m->next)
      if (strcmp(m->path, c->method) == 0) {
        c->m = m;
        c->kind = m->kind;
        break;
      }
    if (!c->m && s->opts.health && strcmp(c->method, HEALTH_METHOD) == 0) c->kind = M_HEALTH;
  }
  c->prev = NULL;
  c->next = s->calls;
  if (s->calls) s->calls->prev = c;
  s->calls = c;

  grpc_op op;
  memset(&op, 0, sizeof(op));
  op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
  op.data.recv_close_on_server.cancelled = &c->cancelled;
  if (start(c, &op, 1, &c->t_close) != 0) {
    c->closed = 1; /* nothing will tell us the end: treat it as over now */
  }
  switch (c->kind) {
  case M_UNKNOWN:
    c->fin_status = GY_RPC_UNIMPLEMENTED;
    {
      char buf[300];
      snprintf(buf, sizeof(buf), "unknown method %s", c->method ? c->method : "?");
      set_details(c, buf);
    }
    c->ended = 1;
    send_status_now(c);
    break;
  case M_UNARY:
  case M_HEALTH:
    start_recv(c);
    break;
  case M_STREAM: {
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_SEND_INITIAL_METADATA;
    c->init_sent = 1;
    start(c, &op, 1, &c->t_init);
    c->held = 1;
    if (c->m->cbs.on_open) c->m->cbs.on_open(c->m->ud, c);
    if (!c->closed && !c->status_sent) start_recv(c);
    break;
  }
  }
}

static void on_recv(gy_rpc_call_t *c, int ok) {
  grpc_byte_buffer *bb = c->recv_bb;
  c->recv_bb = NULL;
  if (!ok || !bb) {
    if (ok) c->half_closed = 1;
    if (c->kind == M_UNARY || c->kind == M_HEALTH) {
      /* No request: a unary call needs exactly one message. */
      if (ok && !c->status_sent)
        reply_internal(c, GY_RPC_INVALID_ARGUMENT, "missing request message", NULL, 0);
    }
    return;
  }
  grpc_slice sl = gy__rpc_read_buffer(bb);
  grpc_byte_buffer_destroy(bb);
  const uint8_t *p = GRPC_SLICE_START_PTR(sl);
  size_t n = GRPC_SLICE_LENGTH(sl);
  switch (c->kind) {
  case M_UNARY:
    c->held = 1;
    c->m->unary(c->m->ud, c, p, n);
    break;
  case M_HEALTH: {
    static const uint8_t serving[2] = {0x08, 0x01}; /* HealthCheckResponse{status: SERVING} */
    reply_internal(c, GY_RPC_OK, NULL, serving, sizeof(serving));
    break;
  }
  case M_STREAM:
    if (!c->closed && c->m->cbs.on_message) c->m->cbs.on_message(c->m->ud, c, p, n);
    if (!c->closed && !c->status_sent && c->call) start_recv(c);
    break;
  default:
    break;
  }
  grpc_slice_unref(sl);
}

static void on_close_tag(gy_rpc_call_t *c) {
  c->closed = 1;
  c->ended = 1;
  /* Queued messages will never go out. */
  while (c->q_head) {
    gy__rpc_sendq_t *q = c->q_head;
    c->q_head = q->next;
    grpc_byte_buffer_destroy(q->bb);
    free(q);
  }
  c->q_tail = NULL;
  if (c->kind == M_UNARY && c->held && !c->status_sent && c->cancel_cb) {
    void (*cb)(void *, gy_rpc_call_t *) = c->cancel_cb;
    c->cancel_cb = NULL;
    c->ops++; /* pinned: the handler's gy_rpc_reply must not free it under dispatch */
    cb(c->cancel_ud, c);
    c->ops--;
    return;
  }
  if (c->kind == M_STREAM && c->held) {
    /* grpc reports cancelled = 0 only when our status went out without error. */
    int st = c->status_sent && !c->cancelled ? c->fin_status : GY_RPC_CANCELLED;
    c->held = 0;
    if (c->m->cbs.on_close) c->m->cbs.on_close(c->m->ud, c, st);
  }
}

static void teardown(gy_rpc_server_t *s);

static void dispatch(gy_rpc_server_t *s, tag_t *t, int ok) {
  if (t->kind == T_SHUTDOWN) {
    s->ops--;
    s->shutdown_tag_done = 1;
    return;
  }
  gy_rpc_call_t *c = t->owner;
  if (c == s->pending && t->kind == T_INIT) {
    s->pending = NULL;
    s->ops--;
    if (!ok) { /* the server is shutting down */
      if (c->call) grpc_call_unref(c->call);
      c->call = NULL;
      grpc_call_details_destroy(&c->details);
      grpc_metadata_array_destroy(&c->req_md);
      free(c);
      return;
    }
    request_next(s);
    on_accept(s, c);
    maybe_free(c);
    return;
  }
  c->ops--;
  switch (t->kind) {
  case T_RECV:
    on_recv(c, ok);
    break;
  case T_SEND:
    if (c->send_bb) grpc_byte_buffer_destroy(c->send_bb);
    c->send_bb = NULL;
    if (!ok)
      c->ended = 1;
    else
      pump_sends(c);
    break;
  case T_STATUS:
    if (c->send_bb) grpc_byte_buffer_destroy(c->send_bb);
    c->send_bb = NULL;
    break;
  case T_CLOSE:
    on_close_tag(c);
    break;
  default:
    break;
  }
  maybe_free(c);
}

static void check_shutdown(gy_rpc_server_t *s) {
  if (!s->shutting_down || s->torn_down || !s->shutdown_tag_done || s->ops) return;
  for (gy_rpc_call_t *c = s->calls; c; c = c->next)
    if (c->ops) return;
  teardown(s);
}

static void on_async_closed(uv_handle_t *h) {
  gy_rpc_server_t *s = h->data;
  if (s->done) s->done(s->done_ud);
}

static void teardown(gy_rpc_server_t *s) {
  s->torn_down = 1;
  /* Calls still held by a unary handler lose their grpc call; a later reply just frees them. */
  gy_rpc_call_t *c = s->calls;
  while (c) {
    gy_rpc_call_t *next = c->next;
    if (c->call) grpc_call_unref(c->call);
    c->call = NULL;
    c->ended = 1;
    maybe_free(c);
    c = next;
  }
  grpc_server_destroy(s->srv);
  s->srv = NULL;
  grpc_completion_queue_shutdown(s->cq);
  if (s->thread_started) pthread_join(s->thread, NULL);
  s->thread_started = 0;
  uv_close((uv_handle_t *)&s->async, on_async_closed);
}

static void on_async(uv_async_t *h) {
  gy_rpc_server_t *s = h->data;
  for (;;) {
    pthread_mutex_lock(&s->mu);
    size_t n = s->nring;
    event_t *evs = NULL;
    if (n) {
      evs = s->ring;
      s->ring = NULL;
      s->nring = s->capring = 0;
    }
    pthread_mutex_unlock(&s->mu);
    if (!n) break;
    for (size_t i = 0; i < n && !s->torn_down; i++)
      dispatch(s, evs[i].tag, evs[i].ok);
    free(evs);
    if (s->torn_down) return;
    check_shutdown(s);
    if (s->torn_down) return;
    if (s->shutting_down) continue;
    /* Poll inline: most events of a busy stream are then handled without a thread hop. */
    int polled = 0;
    for (; polled < INLINE_POLL && !s->shutting_down; polled++) {
      grpc_event ev = grpc_completion_queue_next(s->cq, gpr_inf_past(GPR_CLOCK_MONOTONIC), NULL);
      if (ev.type != GRPC_OP_COMPLETE) break;
      dispatch(s, ev.tag, ev.success);
    }
    check_shutdown(s);
    if (s->torn_down) return;
  }
}

int gy_rpc_server_create(gy_rpc_server_t **out, uv_loop_t *loop, const gy_rpc_server_opts_t *opts,
                         int *port, char *errmsg, size_t errlen) {
  *out = NULL;
  if (!loop || !opts || !opts->bind) {
    gy_errmsg(errmsg, errlen, "rpc server: missing loop, options or bind address");
    return GY_EINVAL;
  }
  int rc = GY_ENOMEM;
  gy_rpc_server_t *s = calloc(1, sizeof(*s));
  if (!s) goto err;
  grpc_init();
  s->loop = loop;
  s->opts = *opts;
  if (!s->opts.max_message) s->opts.max_message = GY__RPC_DEFAULT_MAX_MESSAGE;
  if (s->opts.max_message > 0x7fffffff) s->opts.max_message = 0x7fffffff;
  s->bind = xstrdup(opts->bind);
  s->opts.bind = s->bind;
  if (!s->bind) goto err;
  s->t_shutdown = (tag_t){T_SHUTDOWN, s};
  pthread_mutex_init(&s->mu, NULL);

  grpc_arg a[6];
  gy__rpc_limit_args(a, s->opts.max_message);
  /* grpc sets SO_REUSEPORT by default: a second controller on the same port would then share
   * it silently instead of failing. */
  a[2].type = GRPC_ARG_INTEGER;
  a[2].key = (char *)GRPC_ARG_ALLOW_REUSEPORT;
  a[2].value.integer = 0;
  /* clients ping every GY__RPC_KEEPALIVE_MS while a stream is open (see the client): accept it */
  a[3].type = GRPC_ARG_INTEGER;
  a[3].key = (char *)GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS;
  a[3].value.integer = GY__RPC_KEEPALIVE_MS / 2;
  a[4].type = GRPC_ARG_INTEGER;
  a[4].key = (char *)GRPC_ARG_HTTP2_MAX_PING_STRIKES;
  a[4].value.integer = 0;
  /* a client that opens a connection and never finishes its (TLS) handshake is dropped after
   * this long, instead of gRPC's 120 s, which a server shutdown would otherwise wait out */
  a[5].type = GRPC_ARG_INTEGER;
  a[5].key = (char *)GRPC_ARG_SERVER_HANDSHAKE_TIMEOUT_MS;
  a[5].value.integer = 10000;
  grpc_channel_args args = {6, a};
  s->srv = grpc_server_create(&args, NULL);
  s->cq = grpc_completion_queue_create_for_next(NULL);
  if (!s->srv || !s->cq) goto err;
  grpc_server_register_completion_queue(s->srv, s->cq, NULL);
  s->opts.tls = NULL; /* not kept: the PEM text is read now */
  grpc_server_credentials *creds;
  if (opts->tls) {
    gy__rpc_pem_server_t pem;
    if ((rc = gy__rpc_pem_server_load(&pem, opts->tls, errmsg, errlen))) goto err_quiet;
    creds = gy__rpc_pem_server_creds(&pem);
    gy__rpc_pem_server_free(&pem); /* gRPC keeps its own copies */
  } else if (gy__rpc_server_tls_default_get()) {
    creds = gy__rpc_pem_server_creds(gy__rpc_server_tls_default_get());
  } else {
    creds = grpc_insecure_server_credentials_create();
  }
  if (!creds) {
    rc = GY_EINVAL;
    gy_errmsg(errmsg, errlen, "rpc server: gRPC refused the TLS credentials");
    goto err_quiet;
  }
  int p = grpc_server_add_http2_port(s->srv, s->bind, creds);
  grpc_server_credentials_release(creds);
  if (p == 0) {
    rc = GY_EIO;
    gy_errmsg(errmsg, errlen, "rpc server: cannot bind %s", s->bind);
    goto err;
  }
  if (port) *port = p;
  if (uv_async_init(loop, &s->async, on_async) != 0) {
    rc = GY_EIO;
    gy_errmsg(errmsg, errlen, "rpc server: uv_async_init failed");
    goto err;
  }
  s->async.data = s;
  s->async_init = 1;
  *out = s;
  return 0;
err:
  if (rc == GY_ENOMEM) gy_errmsg(errmsg, errlen, "rpc server: out of memory");
err_quiet: /* errmsg already says why */
  if (s) {
    /* Not started: nothing is in flight, so the server and queue can go directly. */
    if (s->srv) grpc_server_destroy(s->srv);
    if (s->cq) {
      grpc_completion_queue_shutdown(s->cq);
      for (;;) {
        grpc_event ev =
            grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN) break;
      }
      grpc_completion_queue_destroy(s->cq);
    }
    pthread_mutex_destroy(&s->mu);
    free(s->bind);
    free(s);
    grpc_shutdown();
  }
  return rc;
}

static int add_method(gy_rpc_server_t *s, const char *method, method_kind_t kind,
                      gy_rpc_unary_cb cb, const gy_rpc_stream_cbs_t *cbs, void *ud) {
  if (!s || !method || method[0] != '/' || s->started) return GY_EINVAL;
  for (method_t *m = s->methods; m; m = m->next)
    if (strcmp(m->path, method) == 0) return GY_EINVAL;
  method_t *m = calloc(1, sizeof(*m));
  if (!m) return GY_ENOMEM;
  m->path = xstrdup(method);
  if (!m->path) {
    free(m);
    return GY_ENOMEM;
  }
  m->kind = kind;
  m->unary = cb;
  if (cbs) m->cbs = *cbs;
  m->ud = ud;
  m->next = s->methods;
  s->methods = m;
  return 0;
}

int gy_rpc_server_add_unary(gy_rpc_server_t *s, const char *method, gy_rpc_unary_cb cb, void *ud) {
  if (!cb) return GY_EINVAL;
  return add_method(s, method, M_UNARY, cb, NULL, ud);
}

int gy_rpc_server_add_stream(gy_rpc_server_t *s, const char *method, const gy_rpc_stream_cbs_t *cbs,
                             void *ud) {
  if (!cbs) return GY_EINVAL;
  return add_method(s, method, M_STREAM, NULL, cbs, ud);
}

int gy_rpc_server_start(gy_rpc_server_t *s) {
  if (!s || s->started) return GY_EINVAL;
  grpc_server_start(s->srv);
  s->started = 1;
  if (pthread_create(&s->thread, NULL, cq_thread, s) != 0) return GY_ENOMEM;
  s->thread_started = 1;
  request_next(s);
  return 0;
}

void gy_rpc_server_shutdown(gy_rpc_server_t *s, void (*done)(void *ud), void *ud) {
  if (!s || s->shutting_down) return;
  s->done = done;
  s->done_ud = ud;
  if (!s->started) {
    grpc_server_start(s->srv);
    s->started = 1;
    if (pthread_create(&s->thread, NULL, cq_thread, s) == 0) s->thread_started = 1;
  }
  s->shutting_down = 1;
  grpc_server_shutdown_and_notify(s->srv, s->cq, &s->t_shutdown);
  s->ops++;
  grpc_server_cancel_all_calls(s->srv);
  /* The rest happens as the completions come back (check_shutdown). */
}

void gy_rpc_server_destroy(gy_rpc_server_t *s) {
  if (!s) return;
  while (s->calls)
    call_free(s->calls);
  if (s->cq) grpc_completion_queue_destroy(s->cq);
  while (s->methods) {
    method_t *m = s->methods;
    s->methods = m->next;
    free(m->path);
    free(m);
  }
  free(s->ring);
  pthread_mutex_destroy(&s->mu);
  free(s->bind);
  free(s);
  grpc_shutdown();
}

void gy_rpc_call_on_cancel(gy_rpc_call_t *c, void (*cb)(void *ud, gy_rpc_call_t *call), void *ud) {
  if (!c || c->kind != M_UNARY) return;
  c->cancel_cb = cb;
  c->cancel_ud = ud;
}

void gy_rpc_reply(gy_rpc_call_t *c, int status, const char *details, const void *resp, size_t len) {
  if (!c || !c->held || c->kind != M_UNARY) return;
  c->held = 0;
  if (c->call && !c->status_sent && !c->closed) reply_internal(c, status, details, resp, len);
  maybe_free(c);
}

static int can_send(const gy_rpc_call_t *c) {
  return c && c->kind == M_STREAM && !c->ended && !c->finishing && !c->closed && c->call;
}

/* Sends bb (owned by the callee from here on) now when the stream is idle, else queues it. */
static int send_bb(gy_rpc_call_t *c, grpc_byte_buffer *bb) {
  if (!bb) return GY_ENOMEM;
  if (!c->send_bb && !c->q_head && !c->status_sent) {
    /* Fast path: nothing in flight or queued, so no queue entry is needed. */
    c->send_bb = bb;
    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_SEND_MESSAGE;
    op.data.send_message.send_message = bb;
    if (start(c, &op, 1, &c->t_send) != 0) {
      grpc_byte_buffer_destroy(bb);
      c->send_bb = NULL;
      return GY_ECOMM;
    }
    return 0;
  }
  gy__rpc_sendq_t *q = malloc(sizeof(*q));
  if (!q) {
    grpc_byte_buffer_destroy(bb);
    return GY_ENOMEM;
  }
  q->bb = bb;
  q->next = NULL;
  if (c->q_tail)
    c->q_tail->next = q;
  else
    c->q_head = q;
  c->q_tail = q;
  pump_sends(c);
  return 0;
}

int gy_rpc_send(gy_rpc_call_t *c, const void *msg, size_t len) {
  if (!can_send(c)) return GY_ECOMM;
  return send_bb(c, gy__rpc_make_buffer(msg, len));
}

size_t gy_rpc_send_many(gy_rpc_call_t *const *calls, size_t n, const void *msg, size_t len) {
  /* One copy of the bytes in a refcounted slice; each byte buffer takes a reference. */
  grpc_slice sl = grpc_slice_from_copied_buffer((const char *)(msg ? msg : ""), len);
  size_t sent = 0;
  for (size_t i = 0; i < n; i++) {
    if (!can_send(calls[i])) continue;
    if (send_bb(calls[i], grpc_raw_byte_buffer_create(&sl, 1)) == 0) sent++;
  }
  grpc_slice_unref(sl);
  return sent;
}

void gy_rpc_finish(gy_rpc_call_t *c, int status, const char *details) {
  if (!c || c->kind != M_STREAM || c->finishing || c->closed || !c->call) return;
  c->finishing = 1;
  c->fin_status = status;
  set_details(c, details);
  pump_sends(c);
}

void gy_rpc_call_set_data(gy_rpc_call_t *c, void *data) {
  c->data = data;
}
void *gy_rpc_call_data(const gy_rpc_call_t *c) {
  return c->data;
}
const char *gy_rpc_call_method(const gy_rpc_call_t *c) {
  return c->method;
}
const char *gy_rpc_call_peer(const gy_rpc_call_t *c) {
  return c->peer;
}

const char *gy_rpc_call_metadata(const gy_rpc_call_t *c, const char *key) {
  if (!c || !key) return NULL;
  for (size_t i = 0; i < c->nmd; i++)
    if (c->md[2 * i] && strcmp(c->md[2 * i], key) == 0) return c->md[2 * i + 1];
  return NULL;
}
