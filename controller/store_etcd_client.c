/*
 * store_etcd_client: the gRPC client under the etcd back end (see store_etcd.c): channels,
 * unary calls with fail-over, the auth tokens, and the poller thread.
 *
 * API, in order (for store_etcd.c): ep_get, ep_set_token, ep_fail, ep_cur, authenticate, rpc
 * (a unary call with fail-over, retries and re-authentication), poll_main.
 *
 * Endpoints: "etcd://h1:p1,h2:p2,...". One channel per endpoint, created on first use, with a
 * short reconnect back-off (100 ms .. 1 s) so a restarted etcd is found again within a second.
 * A call goes to the current endpoint; UNAVAILABLE (or an attempt deadline with several
 * endpoints) moves it to the next one, with a back-off from 50 ms doubling to 500 ms, until
 * the call's deadline; then GY_ETIMEDOUT with the last endpoint's error. Other statuses are
 * final: NOT_FOUND -> GY_ENOENT (a lease), anything else GY_EIO, each message naming the
 * endpoint, the method and etcd's words.
 *
 * TLS when opts.ca_file is set (client certificate with cert_file/key_file). With
 * username/password each endpoint gets a token from Auth/Authenticate on first use, sent as
 * the "token" metadata; UNAUTHENTICATED (an expired token) re-authenticates once.
 *
 * Invariants: e->mu guards the endpoint table (channels, tokens, the current index) and is
 * never held across a network call.
 */
#include "controller/store_etcd_internal.h"

#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/err.h"

static const char *status_name(int st) {
  static const char *names[] = {"OK",
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
  return st >= 0 && st <= 16 ? names[st] : "UNKNOWN";
}

static gpr_timespec abs_deadline(int64_t deadline_ms) {
  int64_t left = deadline_ms - gy__cstore_now_ms();
  if (left < 1) left = 1;
  return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(left, GPR_TIMESPAN));
}

static void sleep_ms(int64_t ms) {
  if (ms <= 0) return;
  struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000};
  nanosleep(&ts, NULL);
}

static char *slice_str(grpc_slice s) {
  size_t n = GRPC_SLICE_LENGTH(s);
  char *p = malloc(n + 1);
  if (!p) return NULL;
  memcpy(p, GRPC_SLICE_START_PTR(s), n);
  p[n] = 0;
  return p;
}

static grpc_channel *make_channel(et_t *e, const char *target) {
  /* Reconnect back-off 100 ms .. 1 s. GRPC_ARG_MIN_RECONNECT_BACKOFF_MS is also the connect
   * (TCP + HTTP/2 handshake) deadline: the dial timeout. Too short (100 ms) and attempts on a
   * busy machine fail before etcd's SETTINGS frame arrives; the default (20 s) and a connection
   * accepted by a restarting etcd before it serves hangs every call for 20 s. */
  grpc_arg a[6];
  memset(a, 0, sizeof(a));
  const char *names[] = {GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS,
                         GRPC_ARG_MAX_RECONNECT_BACKOFF_MS,
                         GRPC_ARG_MIN_RECONNECT_BACKOFF_MS,
                         GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH,
                         GRPC_ARG_KEEPALIVE_TIME_MS,
                         GRPC_ARG_KEEPALIVE_TIMEOUT_MS};
  int vals[] = {100, 1000, e->dial_ms, 64 << 20, 10000, 5000};
  for (int i = 0; i < 6; i++) {
    a[i].type = GRPC_ARG_INTEGER;
    a[i].key = (char *)names[i];
    a[i].value.integer = vals[i];
  }
  grpc_channel_args args = {6, a};
  if (e->creds) return grpc_channel_create(target, e->creds, &args);
  grpc_channel_credentials *c = grpc_insecure_credentials_create();
  grpc_channel *ch = grpc_channel_create(target, c, &args);
  grpc_channel_credentials_release(c);
  return ch;
}

/* One gRPC call carrying req (unary, or a one-message bidi call). Returns the gRPC status;
 * *resp (malloc'ed) on OK, *details (malloc'ed) otherwise. */
static int call_once(grpc_channel *ch, const char *token, const char *method, const uint8_t *req,
                     size_t len, int64_t deadline_ms, uint8_t **resp, size_t *resp_len,
                     char **details) {
  *resp = NULL;
  *resp_len = 0;
  *details = NULL;
  grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
  grpc_slice msl = grpc_slice_from_static_string(method);
  grpc_call *call = grpc_channel_create_call(ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq, msl, NULL,
                                             abs_deadline(deadline_ms), NULL);
  grpc_metadata md;
  memset(&md, 0, sizeof(md));
  if (token) {
    md.key = grpc_slice_from_static_string("token");
    md.value = grpc_slice_from_copied_string(token);
  }
  grpc_slice rs = grpc_slice_from_copied_buffer((const char *)req, len);
  grpc_byte_buffer *req_bb = grpc_raw_byte_buffer_create(&rs, 1);
  grpc_slice_unref(rs);
  grpc_byte_buffer *resp_bb = NULL;
  grpc_metadata_array init_md, trail_md;
  grpc_metadata_array_init(&init_md);
  grpc_metadata_array_init(&trail_md);
  grpc_status_code st = GRPC_STATUS_UNKNOWN;
  grpc_slice det = grpc_empty_slice();
  const char *err_str = NULL;
  grpc_op ops[6];
  memset(ops, 0, sizeof(ops));
  ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
  ops[0].data.send_initial_metadata.count = token ? 1 : 0;
  ops[0].data.send_initial_metadata.metadata = token ? &md : NULL;
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
  ops[5].data.recv_status_on_client.status_details = &det;
  ops[5].data.recv_status_on_client.error_string = &err_str;
  if (grpc_call_start_batch(call, ops, 6, (void *)1, NULL) != GRPC_CALL_OK) {
    st = GRPC_STATUS_INTERNAL;
    *details = strdup("cannot start the call");
  } else {
    grpc_completion_queue_pluck(cq, (void *)1, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
    if (st == GRPC_STATUS_OK && resp_bb) {
      grpc_byte_buffer_reader rd;
      if (grpc_byte_buffer_reader_init(&rd, resp_bb)) {
        grpc_slice all = grpc_byte_buffer_reader_readall(&rd);
        grpc_byte_buffer_reader_destroy(&rd);
        *resp_len = GRPC_SLICE_LENGTH(all);
        *resp = malloc(*resp_len ? *resp_len : 1);
        if (*resp) memcpy(*resp, GRPC_SLICE_START_PTR(all), *resp_len);
        grpc_slice_unref(all);
        if (!*resp) st = GRPC_STATUS_RESOURCE_EXHAUSTED;
      }
    } else if (st == GRPC_STATUS_OK) {
      st = GRPC_STATUS_INTERNAL;
      *details = strdup("the server ended the call without a reply");
    } else {
      *details = GRPC_SLICE_LENGTH(det) ? slice_str(det) : strdup(err_str ? err_str : "no details");
    }
  }
  if (err_str) gpr_free((void *)err_str);
  grpc_slice_unref(det);
  if (resp_bb) grpc_byte_buffer_destroy(resp_bb);
  grpc_byte_buffer_destroy(req_bb);
  grpc_metadata_array_destroy(&init_md);
  grpc_metadata_array_destroy(&trail_md);
  if (token) grpc_slice_unref(md.value);
  grpc_call_unref(call);
  grpc_completion_queue_shutdown(cq);
  while (grpc_completion_queue_pluck(cq, NULL, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type !=
         GRPC_QUEUE_SHUTDOWN) {
  }
  grpc_completion_queue_destroy(cq);
  return (int)st;
}

/* Returns endpoint i's channel (created on first use) and a copy of its token (NULL if none
 * yet); under e->mu. */
grpc_channel *gy__etcd_ep_get(et_t *e, size_t i, char **token) {
  pthread_mutex_lock(&e->mu);
  ep_t *p = &e->eps[i];
  if (!p->ch) p->ch = make_channel(e, p->target);
  grpc_channel *ch = p->ch;
  *token = p->token ? strdup(p->token) : NULL;
  pthread_mutex_unlock(&e->mu);
  return ch;
}

void gy__etcd_ep_set_token(et_t *e, size_t i, const char *token) {
  pthread_mutex_lock(&e->mu);
  free(e->eps[i].token);
  e->eps[i].token = token ? strdup(token) : NULL;
  pthread_mutex_unlock(&e->mu);
}

/* Moves the current endpoint past i (unless another caller already did). */
void gy__etcd_ep_fail(et_t *e, size_t i) {
  pthread_mutex_lock(&e->mu);
  if (e->cur == i) e->cur = (i + 1) % e->n;
  pthread_mutex_unlock(&e->mu);
}

size_t gy__etcd_ep_cur(et_t *e) {
  pthread_mutex_lock(&e->mu);
  size_t i = e->cur;
  pthread_mutex_unlock(&e->mu);
  return i;
}

/* Authenticates on endpoint i; returns the gRPC status (-1 for a refused login, with errmsg). */
int gy__etcd_authenticate(et_t *e, size_t i, grpc_channel *ch, int64_t deadline_ms, char **token,
                          char **details) {
  Etcdserverpb__AuthenticateRequest rq = ETCDSERVERPB__AUTHENTICATE_REQUEST__INIT;
  rq.name = e->user;
  rq.password = e->pass;
  size_t len = etcdserverpb__authenticate_request__get_packed_size(&rq);
  uint8_t *buf = malloc(len ? len : 1), *resp = NULL;
  size_t rlen = 0;
  if (!buf) return GRPC_STATUS_RESOURCE_EXHAUSTED;
  etcdserverpb__authenticate_request__pack(&rq, buf);
  int st = call_once(ch, NULL, M_AUTH, buf, len, deadline_ms, &resp, &rlen, details);
  free(buf);
  *token = NULL;
  if (st == GRPC_STATUS_OK) {
    Etcdserverpb__AuthenticateResponse *r =
        etcdserverpb__authenticate_response__unpack(NULL, rlen, resp);
    if (r && r->token && *r->token) {
      *token = strdup(r->token);
      gy__etcd_ep_set_token(e, i, r->token);
    } else {
      st = GRPC_STATUS_INTERNAL;
      *details = strdup("Authenticate answered no token");
    }
    if (r) etcdserverpb__authenticate_response__free_unpacked(r, NULL);
  }
  free(resp);
  return st;
}

/* Packs req, calls method with fail-over and retries until deadline_ms, unpacks the reply with
 * rdesc into *out (caller frees with protobuf_c_message_free_unpacked). */
int gy__etcd_rpc(et_t *e, const char *method, const ProtobufCMessage *req,
                 const ProtobufCMessageDescriptor *rdesc, ProtobufCMessage **out,
                 int64_t deadline_ms, char *errmsg, size_t errlen) {
  *out = NULL;
  size_t len = protobuf_c_message_get_packed_size(req);
  uint8_t *buf = malloc(len ? len : 1);
  if (!buf) return GY_ENOMEM;
  protobuf_c_message_pack(req, buf);
  int64_t start = gy__cstore_now_ms(), backoff = 50;
  int attempts = 0, reauthed = 0, rc = 0;
  char last[512] = "no attempt made";
  for (;;) {
    int64_t now = gy__cstore_now_ms();
    if (now >= deadline_ms) {
      gy_errmsg(errmsg, errlen,
                "etcd: %s: no endpoint answered within %lld ms (%d attempts; last: %s)", method,
                (long long)(deadline_ms - start), attempts, last);
      rc = GY_ETIMEDOUT;
      break;
    }
    size_t i = gy__etcd_ep_cur(e);
    const char *tgt = e->eps[i].target;
    char *token = NULL, *details = NULL;
    grpc_channel *ch = gy__etcd_ep_get(e, i, &token);
    /* With several endpoints, one that hangs must not eat the whole deadline. */
    int64_t att_dl = deadline_ms;
    if (e->n > 1 && att_dl > now + e->dial_ms) att_dl = now + e->dial_ms;
    int st = GRPC_STATUS_OK;
    attempts++;
    if (e->user && !token) {
      st = gy__etcd_authenticate(e, i, ch, att_dl, &token, &details);
      if (st != GRPC_STATUS_OK && st != GRPC_STATUS_UNAVAILABLE &&
          st != GRPC_STATUS_DEADLINE_EXCEEDED) {
        gy_errmsg(errmsg, errlen, "etcd %s: authenticate as '%s': %s: %s", tgt, e->user,
                  status_name(st), details ? details : "");
        free(details);
        rc = GY_ECONFIG;
        break;
      }
    }
    uint8_t *resp = NULL;
    size_t rlen = 0;
    if (st == GRPC_STATUS_OK)
      st = call_once(ch, token, method, buf, len, att_dl, &resp, &rlen, &details);
    free(token);
    if (st == GRPC_STATUS_OK) {
      *out = protobuf_c_message_unpack(rdesc, NULL, rlen, resp);
      free(resp);
      if (!*out) {
        gy_errmsg(errmsg, errlen, "etcd %s: %s: malformed reply (%zu bytes)", tgt, method, rlen);
        rc = GY_EPROTO;
      }
      break;
    }
    snprintf(last, sizeof(last), "%s: %s: %s", tgt, status_name(st), details ? details : "");
    if (st == GRPC_STATUS_UNAVAILABLE ||
        (st == GRPC_STATUS_DEADLINE_EXCEEDED && att_dl < deadline_ms)) {
      free(details);
      gy__etcd_ep_fail(e, i);
      int64_t left = deadline_ms - gy__cstore_now_ms();
      sleep_ms(backoff < left ? backoff : left);
      backoff = backoff * 2 > 500 ? 500 : backoff * 2;
      continue;
    }
    if (st == GRPC_STATUS_UNAUTHENTICATED && e->user && !reauthed) {
      free(details);
      gy__etcd_ep_set_token(e, i, NULL);
      reauthed = 1;
      continue;
    }
    if (st == GRPC_STATUS_DEADLINE_EXCEEDED) {
      gy_errmsg(errmsg, errlen, "etcd %s: %s: no answer within %lld ms (%d attempts)", tgt, method,
                (long long)(deadline_ms - start), attempts);
      rc = GY_ETIMEDOUT;
    } else {
      gy_errmsg(errmsg, errlen, "etcd %s: %s: %s: %s", tgt, method, status_name(st),
                details ? details : "");
      rc = st == GRPC_STATUS_NOT_FOUND ? GY_ENOENT : GY_EIO;
    }
    free(details);
    break;
  }
  free(buf);
  return rc;
}

/* gRPC core makes progress on a socket only while some thread polls: a unary call polls its
 * own queue while it waits, and nobody polls between calls. A connection attempt begun during a
 * call that then timed out would sit unnoticed (a refused or completed connect seen only at its
 * deadline). This thread blocks on an idle queue for the store's lifetime, so the poller always
 * runs (one epoll set serves every queue). */
void *gy__etcd_poll_main(void *arg) {
  et_t *e = arg;
  for (;;) {
    grpc_event ev =
        grpc_completion_queue_next(e->poll_cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
    if (ev.type == GRPC_QUEUE_SHUTDOWN) break;
  }
  return NULL;
}
