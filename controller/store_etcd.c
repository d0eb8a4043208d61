/*
 * store_etcd: the state store on etcd's v3 API, spoken over gRPC's C core with the messages of
 * proto/etcd.proto (etcd's own names and field numbers) and hand-written method paths.
 *
 * gRPC is reached only through the common client (common/rpc.h): one gy_rpc_client_t per
 * endpoint. Endpoints, fail-over and retries, TLS options and auth tokens are in
 * store_etcd_client.c; the structs both files use are in store_etcd_internal.h. A write
 * retried after UNAVAILABLE may have been applied by the first attempt when the connection
 * broke after sending (etcd gives no idempotency key): callers of txn/cas re-read on a
 * conflict (the leader election does).
 *
 * Leases: LeaseKeepAlive is a bidi stream in etcd; a keep-alive here is one short call on it
 * (one request, half-close, one response), which etcd answers and ends cleanly, so keep-alives
 * get the same fail-over and deadlines as every other call.
 *
 * Watches: one thread per watch drives a Watch stream of the common client (gy_rpc_cstream_t).
 * The client's completion-queue thread only queues a copy of each response and signals; the
 * watch thread delivers each WatchResponse's events in order, on its own thread, and remembers
 * the revision after the last one; when the stream breaks it reconnects (next endpoint,
 * back-off 100 ms .. 1 s) and asks etcd to start from that revision, so no revision is skipped
 * or repeated. Compacted history and a watch canceled by etcd end the watch with an error
 * callback.
 *
 * Invariants: e->mu guards the endpoint table (tokens, the current index) and is
 * never held across a network call (store_etcd_client.c); a watch's queue, stop flag and
 * stream end are under w->mu, which no callback holds while the user's callback runs; a
 * stream is closed (its callbacks over) before the next one opens.
 */
#include "controller/store_etcd_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/err.h"

/* ------------------------------------- key helpers ------------------------------------- */

/* etcd refuses an empty key; "\0" is the smallest key (and, as range_end, "to the end"). */
static ProtobufCBinaryData key_bytes(const char *k) {
  ProtobufCBinaryData d;
  d.len = *k ? strlen(k) : 1;
  d.data = (uint8_t *)(*k ? k : "");
  return d;
}

static int kv_from(gy_cstore_kv_t *kv, const Etcdserverpb__KeyValue *p) {
  memset(kv, 0, sizeof(*kv));
  if (gy__cstore_kv_set(kv, p->key.data, p->key.len, p->value.data, p->value.len) < 0)
    return GY_ENOMEM;
  kv->create_revision = p->create_revision;
  kv->mod_revision = p->mod_revision;
  kv->version = p->version;
  kv->lease = p->lease;
  return 0;
}

static int range_from(gy_cstore_range_t *r, const Etcdserverpb__RangeResponse *p) {
  memset(r, 0, sizeof(*r));
  r->more = p->more;
  if (p->header) r->revision = p->header->revision;
  if (!p->n_kvs) return 0;
  r->kvs = calloc(p->n_kvs, sizeof(*r->kvs));
  if (!r->kvs) return GY_ENOMEM;
  for (size_t i = 0; i < p->n_kvs; i++) {
    if (kv_from(&r->kvs[i], p->kvs[i]) < 0) return GY_ENOMEM;
    r->n++;
  }
  return 0;
}

/* ---------------------------------------- vtable ---------------------------------------- */

static int et_range(void *be, const char *key, const char *end, int64_t limit,
                    gy_cstore_range_t *out, int64_t deadline_ms, char *errmsg, size_t errlen) {
  et_t *e = be;
  memset(out, 0, sizeof(*out));
  Etcdserverpb__RangeRequest rq = ETCDSERVERPB__RANGE_REQUEST__INIT;
  rq.key = key_bytes(key);
  if (end) rq.range_end = key_bytes(end);
  rq.limit = limit;
  ProtobufCMessage *m = NULL;
  int rc = gy__etcd_rpc(e, M_RANGE, &rq.base, &etcdserverpb__range_response__descriptor, &m,
                        deadline_ms, errmsg, errlen);
  if (rc < 0) return rc;
  rc = range_from(out, (Etcdserverpb__RangeResponse *)m);
  protobuf_c_message_free_unpacked(m, NULL);
  if (rc < 0) gy_cstore_range_clear(out);
  return rc;
}

/* The request side of one txn op, built in place (strings borrowed from op; *end_buf owns the
 * prefix end and is freed by the caller). */
typedef struct {
  Etcdserverpb__RequestOp op;
  Etcdserverpb__RangeRequest range;
  Etcdserverpb__PutRequest put;
  Etcdserverpb__DeleteRangeRequest del;
  char *end_buf;
} reqop_t;

static int build_op(reqop_t *r, const gy_cstore_op_t *o) {
  etcdserverpb__request_op__init(&r->op);
  r->end_buf = NULL;
  if (o->prefix && o->type != GY_CSTORE_OP_PUT) {
    r->end_buf = gy__cstore_prefix_end(o->key);
    if (!r->end_buf) return GY_ENOMEM;
  }
  switch (o->type) {
  case GY_CSTORE_OP_PUT:
    etcdserverpb__put_request__init(&r->put);
    r->put.key = key_bytes(o->key);
    r->put.value.data = (uint8_t *)o->value;
    r->put.value.len = o->value_len;
    r->put.lease = o->lease;
    r->op.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT;
    r->op.request_put = &r->put;
    break;
  case GY_CSTORE_OP_DELETE:
    etcdserverpb__delete_range_request__init(&r->del);
    r->del.key = key_bytes(o->key);
    if (r->end_buf) r->del.range_end = key_bytes(r->end_buf);
    r->op.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE;
    r->op.request_delete_range = &r->del;
    break;
  case GY_CSTORE_OP_GET:
    etcdserverpb__range_request__init(&r->range);
    r->range.key = key_bytes(o->key);
    if (r->end_buf) r->range.range_end = key_bytes(r->end_buf);
    r->range.limit = o->prefix ? o->limit : 1;
    r->op.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_RANGE;
    r->op.request_range = &r->range;
    break;
  }
  return 0;
}

static int et_txn(void *be, const gy_cstore_cmp_t *cmps, size_t ncmp,
                  const gy_cstore_op_t *then_ops, size_t nthen, const gy_cstore_op_t *else_ops,
                  size_t nelse, gy_cstore_txn_result_t *out, int64_t deadline_ms, char *errmsg,
                  size_t errlen) {
  et_t *e = be;
  memset(out, 0, sizeof(*out));
  int rc = 0;
  Etcdserverpb__Compare *cs = calloc(ncmp ? ncmp : 1, sizeof(*cs));
  Etcdserverpb__Compare **cp = calloc(ncmp ? ncmp : 1, sizeof(*cp));
  reqop_t *ro = calloc(nthen + nelse + 1, sizeof(*ro));
  Etcdserverpb__RequestOp **rp = calloc(nthen + nelse + 1, sizeof(*rp));
  ProtobufCMessage *m = NULL;
  if (!cs || !cp || !ro || !rp) {
    rc = GY_ENOMEM;
    goto done;
  }
  for (size_t i = 0; i < ncmp; i++) {
    const gy_cstore_cmp_t *c = &cmps[i];
    Etcdserverpb__Compare *p = &cs[i];
    etcdserverpb__compare__init(p);
    p->key = key_bytes(c->key);
    static const int ops[] = {ETCDSERVERPB__COMPARE__COMPARE_RESULT__EQUAL,
                              ETCDSERVERPB__COMPARE__COMPARE_RESULT__NOT_EQUAL,
                              ETCDSERVERPB__COMPARE__COMPARE_RESULT__LESS,
                              ETCDSERVERPB__COMPARE__COMPARE_RESULT__GREATER};
    p->result = (Etcdserverpb__Compare__CompareResult)ops[c->op];
    switch (c->target) {
    case GY_CSTORE_CMP_VALUE:
      p->target = ETCDSERVERPB__COMPARE__COMPARE_TARGET__VALUE;
      p->target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_VALUE;
      p->value.data = (uint8_t *)c->value;
      p->value.len = c->value_len;
      break;
    case GY_CSTORE_CMP_CREATE:
      p->target = ETCDSERVERPB__COMPARE__COMPARE_TARGET__CREATE;
      p->target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_CREATE_REVISION;
      p->create_revision = c->rev;
      break;
    case GY_CSTORE_CMP_MOD:
      p->target = ETCDSERVERPB__COMPARE__COMPARE_TARGET__MOD;
      p->target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_MOD_REVISION;
      p->mod_revision = c->rev;
      break;
    case GY_CSTORE_CMP_VERSION:
      p->target = ETCDSERVERPB__COMPARE__COMPARE_TARGET__VERSION;
      p->target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_VERSION;
      p->version = c->rev;
      break;
    }
    cp[i] = p;
  }
  for (size_t i = 0; i < nthen + nelse; i++) {
    rc = build_op(&ro[i], i < nthen ? &then_ops[i] : &else_ops[i - nthen]);
    if (rc < 0) goto done;
    rp[i] = &ro[i].op;
  }
  Etcdserverpb__TxnRequest rq = ETCDSERVERPB__TXN_REQUEST__INIT;
  rq.n_compare = ncmp;
  rq.compare = cp;
  rq.n_success = nthen;
  rq.success = rp;
  rq.n_failure = nelse;
  rq.failure = rp + nthen;
  rc = gy__etcd_rpc(e, M_TXN, &rq.base, &etcdserverpb__txn_response__descriptor, &m, deadline_ms,
                    errmsg, errlen);
  if (rc < 0) goto done;
  Etcdserverpb__TxnResponse *r = (Etcdserverpb__TxnResponse *)m;
  out->succeeded = r->succeeded;
  out->revision = r->header ? r->header->revision : 0;
  if (r->n_responses) {
    out->results = calloc(r->n_responses, sizeof(*out->results));
    if (!out->results) {
      rc = GY_ENOMEM;
      goto done;
    }
  }
  for (size_t i = 0; i < r->n_responses; i++) {
    const Etcdserverpb__ResponseOp *p = r->responses[i];
    gy_cstore_op_result_t *res = &out->results[i];
    out->n = i + 1;
    switch (p->response_case) {
    case ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_RANGE:
      res->type = GY_CSTORE_OP_GET;
      rc = range_from(&res->range, p->response_range);
      res->range.revision = 0;
      break;
    case ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_DELETE_RANGE:
      res->type = GY_CSTORE_OP_DELETE;
      res->deleted = p->response_delete_range->deleted;
      break;
    default:
      res->type = GY_CSTORE_OP_PUT;
      break;
    }
    if (rc < 0) break;
  }
done:
  if (m) protobuf_c_message_free_unpacked(m, NULL);
  if (ro)
    for (size_t i = 0; i < nthen + nelse; i++)
      free(ro[i].end_buf);
  free(cs);
  free(cp);
  free(ro);
  free(rp);
  if (rc < 0) gy_cstore_txn_clear(out);
  return rc;
}

static int et_lease_grant(void *be, int64_t ttl_s, int64_t *id, int64_t *granted,
                          int64_t deadline_ms, char *errmsg, size_t errlen) {
  Etcdserverpb__LeaseGrantRequest rq = ETCDSERVERPB__LEASE_GRANT_REQUEST__INIT;
  rq.ttl = ttl_s;
  ProtobufCMessage *m = NULL;
  int rc = gy__etcd_rpc(be, M_GRANT, &rq.base, &etcdserverpb__lease_grant_response__descriptor, &m,
                        deadline_ms, errmsg, errlen);
  if (rc < 0) return rc;
  Etcdserverpb__LeaseGrantResponse *r = (Etcdserverpb__LeaseGrantResponse *)m;
  if (r->error && *r->error) {
    gy_errmsg(errmsg, errlen, "etcd: %s: %s", M_GRANT, r->error);
    rc = GY_EIO;
  } else {
    *id = r->id;
    *granted = r->ttl;
  }
  protobuf_c_message_free_unpacked(m, NULL);
  return rc;
}

static int et_lease_revoke(void *be, int64_t id, int64_t deadline_ms, char *errmsg, size_t errlen) {
  Etcdserverpb__LeaseRevokeRequest rq = ETCDSERVERPB__LEASE_REVOKE_REQUEST__INIT;
  rq.id = id;
  ProtobufCMessage *m = NULL;
  int rc = gy__etcd_rpc(be, M_REVOKE, &rq.base, &etcdserverpb__lease_revoke_response__descriptor,
                        &m, deadline_ms, errmsg, errlen);
  if (m) protobuf_c_message_free_unpacked(m, NULL);
  return rc;
}

static int et_lease_keepalive(void *be, int64_t id, int64_t *ttl, int64_t deadline_ms, char *errmsg,
                              size_t errlen) {
  Etcdserverpb__LeaseKeepAliveRequest rq = ETCDSERVERPB__LEASE_KEEP_ALIVE_REQUEST__INIT;
  rq.id = id;
  ProtobufCMessage *m = NULL;
  int rc =
      gy__etcd_rpc(be, M_KEEPALIVE, &rq.base, &etcdserverpb__lease_keep_alive_response__descriptor,
                   &m, deadline_ms, errmsg, errlen);
  if (rc < 0) return rc;
  Etcdserverpb__LeaseKeepAliveResponse *r = (Etcdserverpb__LeaseKeepAliveResponse *)m;
  if (r->ttl <= 0) {
    gy_errmsg(errmsg, errlen, "etcd: keep-alive of lease %lld: not found (expired or revoked)",
              (long long)id);
    rc = GY_ENOENT;
  } else {
    *ttl = r->ttl;
  }
  protobuf_c_message_free_unpacked(m, NULL);
  return rc;
}

/* ---------------------------------------- watches ---------------------------------------- */

/* Waits up to ms unless the watch is stopping; returns whether it is. */
static int watch_sleep(etw_t *w, int64_t ms) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  ts.tv_sec += (time_t)(ms / 1000);
  ts.tv_nsec += (long)(ms % 1000) * 1000000;
  if (ts.tv_nsec >= 1000000000) {
    ts.tv_sec++;
    ts.tv_nsec -= 1000000000;
  }
  pthread_mutex_lock(&w->mu);
  if (!w->stop) pthread_cond_timedwait(&w->cv, &w->mu, &ts);
  int stop = w->stop;
  pthread_mutex_unlock(&w->mu);
  return stop;
}

/* Handles one WatchResponse; returns 1 when events/creation show the stream is healthy, 0 for
 * nothing new, < 0 when the watch has ended (error callback made). */
static int watch_handle(etw_t *w, const uint8_t *buf, size_t len) {
  Etcdserverpb__WatchResponse *r = etcdserverpb__watch_response__unpack(NULL, len, buf);
  if (!r) return 0;
  int ret = r->created ? 1 : 0;
  if (r->compact_revision > 0) {
    char why[256];
    snprintf(why, sizeof(why),
             "etcd: watch from revision %lld: compacted (history starts at "
             "%lld)",
             (long long)w->next, (long long)r->compact_revision);
    w->cb(w->ud, NULL, 0, GY_ERANGE, why);
    ret = -1;
  } else if (r->canceled) {
    char why[512];
    snprintf(why, sizeof(why), "etcd: watch canceled by the server: %s",
             r->cancel_reason && *r->cancel_reason ? r->cancel_reason : "no reason given");
    w->cb(w->ud, NULL, 0, GY_EIO, why);
    ret = -1;
  } else if (r->n_events) {
    gy_cstore_event_t *evs = calloc(r->n_events, sizeof(*evs));
    size_t n = 0;
    if (evs) {
      for (; n < r->n_events; n++) {
        const Etcdserverpb__Event *ev = r->events[n];
        if (!ev->kv || kv_from(&evs[n].kv, ev->kv) < 0) break;
        evs[n].type = ev->type == ETCDSERVERPB__EVENT__EVENT_TYPE__DELETE ? GY_CSTORE_EV_DELETE
                                                                          : GY_CSTORE_EV_PUT;
      }
      if (n == r->n_events) {
        w->cb(w->ud, evs, n, 0, NULL);
        w->next = evs[n - 1].kv.mod_revision + 1;
        ret = 1;
      }
      for (size_t i = 0; i < n; i++)
        gy_cstore_kv_clear(&evs[i].kv);
      free(evs);
    }
  }
  etcdserverpb__watch_response__free_unpacked(r, NULL);
  return ret;
}

/* Client-thread callbacks of a watch's stream: they only queue (a copy of each message) and
 * signal, so the user's callback runs on the watch's own thread, as before the stream was
 * shared, and may block or cancel other watches of the same store. */
static void watch_on_message(void *ud, const uint8_t *msg, size_t len) {
  etw_t *w = ud;
  etw_msg_t *m = malloc(sizeof(*m) + len);
  pthread_mutex_lock(&w->mu);
  if (!m) {
    /* A lost response would skip revisions: end this stream, the watch resumes from w->next. */
    w->closed = 1;
    w->status = GY_RPC_RESOURCE_EXHAUSTED;
  } else {
    m->next = NULL;
    m->len = len;
    memcpy(m->data, msg, len);
    if (w->q_tail)
      w->q_tail->next = m;
    else
      w->q_head = m;
    w->q_tail = m;
  }
  pthread_cond_broadcast(&w->cv);
  pthread_mutex_unlock(&w->mu);
}

static void watch_on_close(void *ud, int status, const char *details) {
  etw_t *w = ud;
  (void)details;
  pthread_mutex_lock(&w->mu);
  if (!w->closed) w->status = status;
  w->closed = 1;
  pthread_cond_broadcast(&w->cv);
  pthread_mutex_unlock(&w->mu);
}

/* Under w->mu: drops the messages still queued. */
static void watch_drop_queue(etw_t *w) {
  while (w->q_head) {
    etw_msg_t *m = w->q_head;
    w->q_head = m->next;
    free(m);
  }
  w->q_tail = NULL;
}

/* One Watch stream from w->next until it breaks. Returns < 0 when the watch has ended for
 * good, else the gRPC status the stream closed with (*healthy: it delivered something). */
static int watch_stream(etw_t *w, size_t i, int *healthy) {
  et_t *e = w->e;
  char *token = NULL, details[512];
  gy_rpc_client_t *c = gy__etcd_ep_get(e, i, &token);
  if (e->user && !token) {
    int st = gy__etcd_authenticate(e, i, c, gy__cstore_now_ms() + e->dial_ms, &token, details,
                                   sizeof(details));
    if (st != GY_RPC_OK) return st;
  }
  Etcdserverpb__WatchCreateRequest cr = ETCDSERVERPB__WATCH_CREATE_REQUEST__INIT;
  cr.key = key_bytes(w->key);
  cr.range_end = key_bytes(w->end);
  cr.start_revision = w->next;
  Etcdserverpb__WatchRequest rq = ETCDSERVERPB__WATCH_REQUEST__INIT;
  rq.request_union_case = ETCDSERVERPB__WATCH_REQUEST__REQUEST_UNION_CREATE_REQUEST;
  rq.create_request = &cr;
  size_t len = etcdserverpb__watch_request__get_packed_size(&rq);
  uint8_t *buf = malloc(len ? len : 1);
  if (!buf) {
    free(token);
    return GY_RPC_RESOURCE_EXHAUSTED;
  }
  etcdserverpb__watch_request__pack(&rq, buf);

  pthread_mutex_lock(&w->mu);
  w->closed = 0;
  w->status = GY_RPC_UNKNOWN;
  pthread_mutex_unlock(&w->mu);
  static const gy_rpc_cstream_cbs_t cbs = {watch_on_message, watch_on_close};
  gy_rpc_cstream_t *s = NULL;
  int rc = gy_rpc_cstream_open(c, M_WATCH, token ? "token" : NULL, token, &cbs, w, &s, details,
                               sizeof(details));
  free(token);
  if (rc < 0) {
    free(buf);
    return GY_RPC_UNKNOWN;
  }
  gy_rpc_cstream_send(s, buf, len); /* a failure shows as the stream's end */
  free(buf);

  int ended = 0;
  pthread_mutex_lock(&w->mu);
  for (;;) {
    if (w->stop) break;
    if (w->q_head) {
      etw_msg_t *m = w->q_head;
      w->q_head = m->next;
      if (!w->q_head) w->q_tail = NULL;
      pthread_mutex_unlock(&w->mu);
      int h = watch_handle(w, m->data, m->len);
      free(m);
      if (h > 0) *healthy = 1;
      pthread_mutex_lock(&w->mu);
      if (h < 0) {
        ended = 1;
        break;
      }
      continue;
    }
    if (w->closed) break;
    pthread_cond_wait(&w->cv, &w->mu);
  }
  pthread_mutex_unlock(&w->mu);
  gy_rpc_cstream_close(s); /* cancels unless over; on_close has run when it returns */
  pthread_mutex_lock(&w->mu);
  watch_drop_queue(w);
  int st = w->status;
  pthread_mutex_unlock(&w->mu);
  return ended ? -1 : st;
}

static void *watch_main(void *arg) {
  etw_t *w = arg;
  et_t *e = w->e;
  int64_t backoff = 100;
  for (;;) {
    pthread_mutex_lock(&w->mu);
    int stop = w->stop;
    pthread_mutex_unlock(&w->mu);
    if (stop) break;
    size_t i = gy__etcd_ep_cur(e);
    int healthy = 0;
    int st = watch_stream(w, i, &healthy);
    if (st < 0) break;
    if (st == GY_RPC_UNAUTHENTICATED) gy__etcd_ep_set_token(e, i, NULL);
    if (st == GY_RPC_UNAVAILABLE || st == GY_RPC_DEADLINE_EXCEEDED) gy__etcd_ep_fail(e, i);
    if (healthy) backoff = 100;
    if (watch_sleep(w, backoff)) break;
    backoff = backoff * 2 > 1000 ? 1000 : backoff * 2;
  }
  return NULL;
}

static void etw_free(etw_t *w) {
  pthread_cond_destroy(&w->cv);
  pthread_mutex_destroy(&w->mu);
  free(w->key);
  free(w->end);
  free(w);
}

static int et_watch_start(void *be, const char *key, const char *end, int64_t start_rev,
                          gy_cstore_watch_cb cb, void *ud, void **handle, char *errmsg,
                          size_t errlen) {
  etw_t *w = calloc(1, sizeof(*w));
  if (!w) return GY_ENOMEM;
  pthread_mutex_init(&w->mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&w->cv, &ca);
  pthread_condattr_destroy(&ca);
  w->e = be;
  w->next = start_rev;
  w->cb = cb;
  w->ud = ud;
  w->key = strdup(key);
  w->end = strdup(end);
  if (!w->key || !w->end || pthread_create(&w->th, NULL, watch_main, w) != 0) {
    gy_errmsg(errmsg, errlen, "etcd: cannot start a watch thread");
    etw_free(w);
    return GY_ENOMEM;
  }
  *handle = w;
  return 0;
}

static void et_watch_stop(void *handle) {
  etw_t *w = handle;
  pthread_mutex_lock(&w->mu);
  w->stop = 1;
  pthread_cond_broadcast(&w->cv);
  pthread_mutex_unlock(&w->mu);
  pthread_join(w->th, NULL);
  etw_free(w);
}

/* -------------------------------------- open / close -------------------------------------- */

static void et_destroy(void *be) {
  et_t *e = be;
  if (!e) return;
  for (size_t i = 0; i < e->n; i++) {
    gy_rpc_client_destroy(e->eps[i].c);
    free(e->eps[i].target);
    free(e->eps[i].token);
  }
  free(e->eps);
  free(e->user);
  free(e->pass);
  pthread_mutex_destroy(&e->mu);
  free(e);
}

int gy__cstore_etcd_open(void **be, const char *endpoints, const gy_cstore_opts_t *opts,
                         char *errmsg, size_t errlen) {
  *be = NULL;
  int rc = 0;
  et_t *e = calloc(1, sizeof(*e));
  char *list = strdup(endpoints);
  if (!e || !list) {
    free(e);
    free(list);
    return GY_ENOMEM;
  }
  pthread_mutex_init(&e->mu, NULL);
  e->dial_ms = opts->dial_timeout_ms;
  size_t cap = 1;
  for (const char *p = endpoints; *p; p++)
    cap += *p == ',';
  e->eps = calloc(cap, sizeof(*e->eps));
  if (!e->eps) {
    rc = GY_ENOMEM;
    goto err;
  }
  char *save = NULL;
  for (char *t = strtok_r(list, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
    const char *colon = strrchr(t, ':');
    char *endp = NULL;
    long port = colon ? strtol(colon + 1, &endp, 10) : 0;
    if (!colon || colon == t || !*(colon + 1) || *endp || port <= 0 || port > 65535) {
      gy_errmsg(errmsg, errlen, "etcd://%s: endpoint '%s' is not host:port", endpoints, t);
      rc = GY_ECONFIG;
      goto err;
    }
    if (!(e->eps[e->n].target = strdup(t))) {
      rc = GY_ENOMEM;
      goto err;
    }
    e->n++;
  }
  if (e->n == 0) {
    gy_errmsg(errmsg, errlen, "etcd://%s: no endpoint", endpoints);
    rc = GY_ECONFIG;
    goto err;
  }
  if ((rc = gy__etcd_ep_open(e, opts, errmsg, errlen)) < 0) goto err;
  if (opts->username) {
    e->user = strdup(opts->username);
    e->pass = strdup(opts->password);
    if (!e->user || !e->pass) {
      rc = GY_ENOMEM;
      goto err;
    }
  }
  free(list);
  *be = e;
  return 0;
err:
  free(list);
  et_destroy(e);
  return rc;
}

const gy__cstore_vt_t gy__cstore_etcd_vt = {
    .name = "etcd",
    .destroy = et_destroy,
    .range = et_range,
    .txn = et_txn,
    .lease_grant = et_lease_grant,
    .lease_revoke = et_lease_revoke,
    .lease_keepalive = et_lease_keepalive,
    .watch_start = et_watch_start,
    .watch_stop = et_watch_stop,
};
