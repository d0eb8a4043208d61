/*
 * store_etcd_client: endpoints, auth tokens and unary calls with fail-over under the etcd back
 * end (see store_etcd.c), over the common gRPC client (common/rpc.h).
 *
 * API, in order (for store_etcd.c): ep_open, ep_get, ep_set_token, ep_fail, ep_cur,
 * authenticate, rpc (a unary call with fail-over, retries and re-authentication).
 *
 * Endpoints: "etcd://h1:p1,h2:p2,...". One gy_rpc_client_t (a channel) per endpoint, created at
 * open (gRPC connects on first use), with a short reconnect back-off (100 ms .. 1 s) so a
 * restarted etcd is found again within a second, and a connect deadline of opts.dial_timeout_ms.
 * A call goes to the current endpoint; UNAVAILABLE (or an attempt deadline with several
 * endpoints) moves it to the next one, with a back-off from 50 ms doubling to 500 ms, until
 * the call's deadline; then GY_ETIMEDOUT with the last endpoint's error. Other statuses are
 * final: NOT_FOUND -> GY_ENOENT (a lease), anything else GY_EIO, each message naming the
 * endpoint, the method and etcd's words.
 *
 * What the common client provides here: channel creation with TLS (the PEM files read and
 * checked at open, an error naming the file), the blocking unary call with a deadline and one
 * metadata pair (gy_rpc_unary), client streams (the watches, store_etcd.c), status names, and
 * the thread that keeps gRPC's poller running between calls (each client's completion-queue
 * thread, so connection attempts progress while no call waits). What stays here is etcd's own:
 * endpoint rotation, retries and the auth token.
 *
 * TLS when opts.ca_file is set (client certificate with cert_file/key_file). With
 * username/password each endpoint gets a token from Auth/Authenticate on first use, sent as
 * the "token" metadata; UNAUTHENTICATED (an expired token) re-authenticates once.
 *
 * Invariants: e->mu guards the endpoint table (tokens, the current index; the clients are set
 * at open and fixed until destroy) and is never held across a network call.
 */
#include "controller/store_etcd_internal.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/err.h"

static void sleep_ms(int64_t ms) {
  if (ms <= 0) return;
  struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000};
  nanosleep(&ts, NULL);
}

/* One unary call carrying req (unary, or a one-message bidi call) with the token as metadata.
 * Returns the gRPC status; *resp (malloc'ed, NULL for an empty reply) on OK, the details in
 * det otherwise. */
static int call_once(gy_rpc_client_t *c, const char *token, const char *method, const uint8_t *req,
                     size_t len, int64_t deadline_ms, void **resp, size_t *resp_len, char *det,
                     size_t detlen) {
  int64_t left = deadline_ms - gy__cstore_now_ms();
  if (left < 1) left = 1;
  if (left > INT_MAX) left = INT_MAX;
  int st = GY_RPC_UNKNOWN;
  det[0] = '\0';
  int rc = gy_rpc_unary(c, method, token ? "token" : NULL, token, req, len, (int)left, resp,
                        resp_len, &st, det, detlen);
  if (rc == GY_ENOMEM) return GY_RPC_RESOURCE_EXHAUSTED;
  return rc == 0 ? GY_RPC_OK : st;
}

/* Creates the client of every endpoint (e->eps[i].target set); GY_ECONFIG for a TLS file that
 * cannot be used, with errmsg naming it. */
int gy__etcd_ep_open(et_t *e, const gy_cstore_opts_t *opts, char *errmsg, size_t errlen) {
  gy_rpc_client_tls_t tls = {opts->ca_file, opts->cert_file, opts->key_file, NULL};
  if (!opts->ca_file && opts->cert_file) {
    gy_errmsg(errmsg, errlen, "etcd TLS: a client certificate needs ca_file too");
    return GY_ECONFIG;
  }
  /* Reconnect back-off 100 ms .. 1 s. The minimum reconnect back-off is also the connect
   * (TCP + HTTP/2 handshake) deadline: the dial timeout. Too short (100 ms) and attempts on a
   * busy machine fail before etcd's SETTINGS frame arrives; the default (20 s) and a connection
   * accepted by a restarting etcd before it serves hangs every call for 20 s. */
  gy_rpc_client_opts_t o = {.tls = opts->ca_file ? &tls : NULL,
                            .max_message = 64u << 20,
                            .keepalive_ms = 10000,
                            .keepalive_timeout_ms = 5000,
                            .connect_timeout_ms = e->dial_ms,
                            .backoff_initial_ms = 100,
                            .backoff_max_ms = 1000};
  for (size_t i = 0; i < e->n; i++) {
    char msg[512];
    int rc = gy_rpc_client_create_opts(&e->eps[i].c, e->eps[i].target, &o, msg, sizeof(msg));
    if (rc == GY_EINVAL || rc == GY_EIO) {
      gy_errmsg(errmsg, errlen, "etcd TLS: %s", msg);
      return GY_ECONFIG;
    }
    if (rc < 0) {
      gy_errmsg(errmsg, errlen, "etcd %s: %s", e->eps[i].target, msg);
      return rc;
    }
  }
  return 0;
}

/* Returns endpoint i's client and a copy of its token (NULL if none yet); under e->mu. */
gy_rpc_client_t *gy__etcd_ep_get(et_t *e, size_t i, char **token) {
  pthread_mutex_lock(&e->mu);
  gy_rpc_client_t *c = e->eps[i].c;
  *token = e->eps[i].token ? strdup(e->eps[i].token) : NULL;
  pthread_mutex_unlock(&e->mu);
  return c;
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

/* Authenticates on endpoint i; returns the gRPC status, with details when not OK. */
int gy__etcd_authenticate(et_t *e, size_t i, gy_rpc_client_t *c, int64_t deadline_ms, char **token,
                          char *details, size_t detlen) {
  Etcdserverpb__AuthenticateRequest rq = ETCDSERVERPB__AUTHENTICATE_REQUEST__INIT;
  rq.name = e->user;
  rq.password = e->pass;
  size_t len = etcdserverpb__authenticate_request__get_packed_size(&rq);
  uint8_t *buf = malloc(len ? len : 1);
  void *resp = NULL;
  size_t rlen = 0;
  if (!buf) return GY_RPC_RESOURCE_EXHAUSTED;
  etcdserverpb__authenticate_request__pack(&rq, buf);
  int st = call_once(c, NULL, M_AUTH, buf, len, deadline_ms, &resp, &rlen, details, detlen);
  free(buf);
  *token = NULL;
  if (st == GY_RPC_OK) {
    Etcdserverpb__AuthenticateResponse *r =
        etcdserverpb__authenticate_response__unpack(NULL, rlen, resp);
    if (r && r->token && *r->token) {
      *token = strdup(r->token);
      gy__etcd_ep_set_token(e, i, r->token);
    } else {
      st = GY_RPC_INTERNAL;
      gy_errmsg(details, detlen, "Authenticate answered no token");
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
    char *token = NULL, details[512] = "";
    gy_rpc_client_t *c = gy__etcd_ep_get(e, i, &token);
    /* With several endpoints, one that hangs must not eat the whole deadline. */
    int64_t att_dl = deadline_ms;
    if (e->n > 1 && att_dl > now + e->dial_ms) att_dl = now + e->dial_ms;
    int st = GY_RPC_OK;
    attempts++;
    if (e->user && !token) {
      st = gy__etcd_authenticate(e, i, c, att_dl, &token, details, sizeof(details));
      if (st != GY_RPC_OK && st != GY_RPC_UNAVAILABLE && st != GY_RPC_DEADLINE_EXCEEDED) {
        gy_errmsg(errmsg, errlen, "etcd %s: authenticate as '%s': %s: %s", tgt, e->user,
                  gy_rpc_status_name(st), details);
        rc = GY_ECONFIG;
        break;
      }
    }
    void *resp = NULL;
    size_t rlen = 0;
    if (st == GY_RPC_OK)
      st = call_once(c, token, method, buf, len, att_dl, &resp, &rlen, details, sizeof(details));
    free(token);
    if (st == GY_RPC_OK) {
      *out = protobuf_c_message_unpack(rdesc, NULL, rlen, (const uint8_t *)resp);
      free(resp);
      if (!*out) {
        gy_errmsg(errmsg, errlen, "etcd %s: %s: malformed reply (%zu bytes)", tgt, method, rlen);
        rc = GY_EPROTO;
      }
      break;
    }
    snprintf(last, sizeof(last), "%s: %s: %s", tgt, gy_rpc_status_name(st), details);
    if (st == GY_RPC_UNAVAILABLE || (st == GY_RPC_DEADLINE_EXCEEDED && att_dl < deadline_ms)) {
      gy__etcd_ep_fail(e, i);
      int64_t left = deadline_ms - gy__cstore_now_ms();
      sleep_ms(backoff < left ? backoff : left);
      backoff = backoff * 2 > 500 ? 500 : backoff * 2;
      continue;
    }
    if (st == GY_RPC_UNAUTHENTICATED && e->user && !reauthed) {
      gy__etcd_ep_set_token(e, i, NULL);
      reauthed = 1;
      continue;
    }
    if (st == GY_RPC_DEADLINE_EXCEEDED) {
      gy_errmsg(errmsg, errlen, "etcd %s: %s: no answer within %lld ms (%d attempts)", tgt, method,
                (long long)(deadline_ms - start), attempts);
      rc = GY_ETIMEDOUT;
    } else {
      gy_errmsg(errmsg, errlen, "etcd %s: %s: %s: %s", tgt, method, gy_rpc_status_name(st),
                details);
      rc = st == GY_RPC_NOT_FOUND ? GY_ENOENT : GY_EIO;
    }
    break;
  }
  free(buf);
  return rc;
}
