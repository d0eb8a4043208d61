/* rpc: gRPC C-core glue (see rpc.h).
 *
 * Server. One grpc completion queue (cq) per server and one thread that blocks in
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
 * Server call invariants: a tag is a `tag_t` embedded in its owner; each call has at most one
 * batch of each kind in flight (recv, send, close, status, init), `ops` counts them; a
 * RECV_CLOSE_ON_SERVER is started at accept and its completion means the call is over (status
 * sent or cancelled): a stream's on_close runs then, exactly once. A call is freed when no op is
 * in flight and the user no longer holds it (unary: after gy_rpc_reply; stream: after
 * on_close). Shutdown: grpc_server_shutdown_and_notify + cancel_all_calls; when the shutdown tag
 * is back and no op is in flight anywhere, the server is destroyed, the cq shut down, its thread
 * joined and the async handle closed; its close callback calls `done`.
 *
 * Client. A channel, and one cq with its own thread for streams; unary calls use a private
 * pluck queue each (blocking, thread-safe). A stream keeps one RECV_MESSAGE pending, one
 * SEND_MESSAGE in flight (later sends wait in a queue), and a RECV_STATUS_ON_CLIENT started at
 * open; every start_batch on a stream happens under its mutex. on_close runs once the status is
 * in and no receive is pending, so no on_message follows it.
 *
 * TLS. Either side is plaintext unless given TLS options. Certificate, key and CA files are read
 * and parsed with OpenSSL when the server or client is created, so a missing, unreadable or
 * non-PEM file, an encrypted key or a key that does not belong to its certificate fails there,
 * naming the file, not at the first handshake. The server's client_auth asks for and verifies
 * a client certificate (mutual TLS): a client without one, or with one from another CA, fails
 * the handshake and never reaches a handler. Private key text is zeroed before it is freed.
 */
#include "common/rpc.h"

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <openssl/err.h>
#include <openssl/crypto.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/log.h"

#define DEFAULT_MAX_MESSAGE (4u << 20)
#define INLINE_POLL 256
#define HEALTH_METHOD "/grpc.health.v1.Health/Check"

static void set_err(char *errmsg, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_err(char *errmsg, size_t errlen, const char *fmt, ...) {
  if (!errmsg || !errlen) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(errmsg, errlen, fmt, ap);
  va_end(ap);
}

static char *xstrdup(const char *s) {
  if (!s) return NULL;
  size_t n = strlen(s) + 1;
  char *p = malloc(n);
  if (p) memcpy(p, s, n);
  return p;
}

static char *slice_to_str(grpc_slice sl) {
  size_t n = GRPC_SLICE_LENGTH(sl);
  char *p = malloc(n + 1);
  if (!p) return NULL;
  memcpy(p, GRPC_SLICE_START_PTR(sl), n);
  p[n] = '\0';
  return p;
}

static grpc_byte_buffer *make_buffer(const void *msg, size_t len) {
  grpc_slice sl = grpc_slice_from_copied_buffer((const char *)(msg ? msg : ""), len);
  grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&sl, 1);
  grpc_slice_unref(sl);
  return bb;
}

/* Flattens bb into one slice the caller unrefs. A message that arrived in one uncompressed
 * slice (the usual case for small messages) is shared, not copied. */
static grpc_slice read_buffer(grpc_byte_buffer *bb) {
  if (bb->type == GRPC_BB_RAW && bb->data.raw.compression == GRPC_COMPRESS_NONE &&
      bb->data.raw.slice_buffer.count == 1)
    return grpc_slice_ref(bb->data.raw.slice_buffer.slices[0]);
  grpc_byte_buffer_reader r;
  if (!grpc_byte_buffer_reader_init(&r, bb)) return grpc_empty_slice();
  grpc_slice sl = grpc_byte_buffer_reader_readall(&r);
  grpc_byte_buffer_reader_destroy(&r);
  return sl;
}

/* HTTP/2 keepalive of client channels: a ping every KEEPALIVE_MS while a call is open, and the
 * transport is closed when one is not answered within KEEPALIVE_TIMEOUT_MS. */
#define KEEPALIVE_MS 2000
#define KEEPALIVE_TIMEOUT_MS 3000
#define CONNECT_TIMEOUT_MS 3000

/* Fills a[0..1] with the receive and send size limits (both max bytes). */
static void limit_args(grpc_arg a[2], size_t max) {
  a[0].type = GRPC_ARG_INTEGER;
  a[0].key = (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
  a[0].value.integer = (int)max;
  a[1].type = GRPC_ARG_INTEGER;
  a[1].key = (char *)GRPC_ARG_MAX_SEND_MESSAGE_LENGTH;
  a[1].value.integer = (int)max;
}

/* ====================================== TLS ====================================== */

/* PEM files are read whole and parsed with OpenSSL (the library gRPC itself uses here) before
 * gRPC sees them, so that a wrong file is named at start instead of failing every handshake
 * later. A file larger than this is not a certificate bundle. */
#define PEM_MAX (1u << 20)

typedef enum { PEM_CERTS, PEM_KEY } pem_kind_t;

/* Refuses to prompt for the pass phrase of an encrypted key: gyro takes unencrypted keys. */
static int no_password(char *buf, int size, int rwflag, void *u) {
  (void)buf;
  (void)size;
  (void)rwflag;
  (void)u;
  return -1;
}

/* Reads the PEM file `path` (the option `what`, for messages) into *out (malloc'ed,
 * NUL-terminated; caller frees) and checks it holds at least one certificate (PEM_CERTS) or an
 * unencrypted private key (PEM_KEY). GY_EIO (cannot read) or GY_EINVAL (not PEM of that kind). */
static int pem_read(const char *what, const char *path, pem_kind_t kind, char **out, char *errmsg,
                    size_t errlen) {
  *out = NULL;
  char *buf = NULL;
  int rc = GY_EIO;
  FILE *f = fopen(path, "rb");
  if (!f) {
    set_err(errmsg, errlen, "%s %s: cannot open: %s", what, path, strerror(errno));
    goto err;
  }
  if (!(buf = malloc(PEM_MAX + 1))) {
    rc = GY_ENOMEM;
    set_err(errmsg, errlen, "%s %s: out of memory", what, path);
    goto err;
  }
  size_t n = fread(buf, 1, PEM_MAX + 1, f);
  if (ferror(f)) {
    set_err(errmsg, errlen, "%s %s: cannot read: %s", what, path, strerror(errno));
    goto err;
  }
  rc = GY_EINVAL;
  if (n > PEM_MAX) {
    set_err(errmsg, errlen, "%s %s: larger than %u bytes: not a PEM file", what, path, PEM_MAX);
    goto err;
  }
  buf[n] = '\0';
  if (memchr(buf, '\0', n)) {
    set_err(errmsg, errlen, "%s %s: binary data: not a PEM file", what, path);
    goto err;
  }
  BIO *bio = BIO_new_mem_buf(buf, (int)n);
  if (!bio) {
    rc = GY_ENOMEM;
    set_err(errmsg, errlen, "%s %s: out of memory", what, path);
    goto err;
  }
  int good = 0;
  if (kind == PEM_CERTS) {
    X509 *x;
    while ((x = PEM_read_bio_X509(bio, NULL, no_password, NULL))) {
      good++;
      X509_free(x);
    }
  } else {
    EVP_PKEY *k = PEM_read_bio_PrivateKey(bio, NULL, no_password, NULL);
    good = k != NULL;
    EVP_PKEY_free(k);
  }
  BIO_free(bio);
  ERR_clear_error();
  if (!good) {
    set_err(errmsg, errlen, "%s %s: %s", what, path,
            kind == PEM_CERTS ? "no PEM certificate in it"
                              : "no PEM private key in it (or an encrypted one: gyro needs the "
                                "key unencrypted)");
    goto err;
  }
  fclose(f);
  *out = buf;
  return 0;
err:
  if (f) fclose(f);
  free(buf);
  return rc;
}

/* Checks that key_pem is the private key of the first certificate of cert_pem. */
static int pem_pair_check(const char *cert_path, const char *cert_pem, const char *key_path,
                          const char *key_pem, char *errmsg, size_t errlen) {
  BIO *cb = BIO_new_mem_buf(cert_pem, -1), *kb = BIO_new_mem_buf(key_pem, -1);
  X509 *x = cb ? PEM_read_bio_X509(cb, NULL, no_password, NULL) : NULL;
  EVP_PKEY *k = kb ? PEM_read_bio_PrivateKey(kb, NULL, no_password, NULL) : NULL;
  int ok = x && k && X509_check_private_key(x, k) == 1;
  X509_free(x);
  EVP_PKEY_free(k);
  BIO_free(cb);
  BIO_free(kb);
  ERR_clear_error();
  if (ok) return 0;
  set_err(errmsg, errlen, "key %s is not the private key of certificate %s", key_path, cert_path);
  return GY_EINVAL;
}

/* A server's TLS material, as read from its files. */
typedef struct {
  char *cert, *key, *ca; /* PEM text; ca NULL when none */
  int client_auth;
} pem_server_t;

static void pem_server_free(pem_server_t *p) {
  free(p->cert);
  if (p->key) {
    memset(p->key, 0, strlen(p->key)); /* the private key does not linger in freed memory */
    free(p->key);
  }
  free(p->ca);
  memset(p, 0, sizeof(*p));
}

static int pem_server_load(pem_server_t *p, const gy_rpc_server_tls_t *tls, char *errmsg,
                           size_t errlen) {
  memset(p, 0, sizeof(*p));
  int rc;
  if (!tls->cert || !*tls->cert || !tls->key || !*tls->key) {
    set_err(errmsg, errlen, "TLS: the server needs both a certificate and its key");
    return GY_EINVAL;
  }
  if (tls->client_auth && (!tls->ca || !*tls->ca)) {
    set_err(errmsg, errlen, "TLS: client authentication needs the CA of the client certificates");
    return GY_EINVAL;
  }
  if ((rc = pem_read("certificate", tls->cert, PEM_CERTS, &p->cert, errmsg, errlen)) ||
      (rc = pem_read("key", tls->key, PEM_KEY, &p->key, errmsg, errlen)) ||
      (rc = pem_pair_check(tls->cert, p->cert, tls->key, p->key, errmsg, errlen)) ||
      (tls->ca && *tls->ca &&
       (rc = pem_read("CA certificate", tls->ca, PEM_CERTS, &p->ca, errmsg, errlen)))) {
    pem_server_free(p);
    return rc;
  }
  p->client_auth = tls->client_auth != 0;
  return 0;
}

static grpc_server_credentials *pem_server_creds(const pem_server_t *p) {
  grpc_ssl_pem_key_cert_pair pair = {p->key, p->cert};
  grpc_ssl_client_certificate_request_type req =
      p->client_auth ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
      : p->ca        ? GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY
                     : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE;
  return grpc_ssl_server_credentials_create_ex(p->ca, &pair, 1, req, NULL);
}

/* The process default of gy_rpc_server_tls_default (guarded by its caller's discipline: set
 * before servers are created, from one thread). */
static pem_server_t default_tls;
static int have_default_tls;

int gy_rpc_server_tls_check(const gy_rpc_server_tls_t *tls, char *errmsg, size_t errlen) {
  if (!tls) return 0;
  pem_server_t p;
  int rc = pem_server_load(&p, tls, errmsg, errlen);
  if (!rc) pem_server_free(&p);
  return rc;
}

int gy_rpc_server_tls_default(const gy_rpc_server_tls_t *tls, char *errmsg, size_t errlen) {
  pem_server_t p;
  memset(&p, 0, sizeof(p));
  if (tls) {
    int rc = pem_server_load(&p, tls, errmsg, errlen);
    if (rc) return rc;
  }
  if (have_default_tls) pem_server_free(&default_tls);
  default_tls = p;
  have_default_tls = tls != NULL;
  return 0;
}

/* ==================================== tokens ==================================== */

int gy_rpc_token_equal(const char *a, const char *b) {
  if (!a || !b) return 0;
  unsigned char da[SHA256_DIGEST_LENGTH], db[SHA256_DIGEST_LENGTH];
  SHA256((const unsigned char *)a, strlen(a), da);
  SHA256((const unsigned char *)b, strlen(b), db);
  return CRYPTO_memcmp(da, db, sizeof(da)) == 0;
}

int gy_rpc_token_check(const char *what, const char *tok, char *errmsg, size_t errlen) {
  size_t n = tok ? strlen(tok) : 0;
  if (n == 0) {
    set_err(errmsg, errlen, "%s: the token is empty", what);
    return GY_EINVAL;
  }
  if (n > GY_RPC_TOKEN_MAX) {
    set_err(errmsg, errlen, "%s: the token is longer than %d bytes", what, GY_RPC_TOKEN_MAX);
    return GY_EINVAL;
  }
  for (size_t i = 0; i < n; i++)
    if ((unsigned char)tok[i] <= 0x20 || (unsigned char)tok[i] >= 0x7f) {
      set_err(errmsg, errlen,
              "%s: the token holds a space, control or non-ASCII byte at offset %zu (tokens are "
              "printable ASCII)",
              what, i);
      return GY_EINVAL;
    }
  return 0;
}

int gy_rpc_token_read_file(const char *path, char **out, char *errmsg, size_t errlen) {
  *out = NULL;
  char buf[GY_RPC_TOKEN_MAX + 64];
  FILE *f = fopen(path, "rb");
  if (!f) {
    set_err(errmsg, errlen, "token file %s: cannot open: %s", path, strerror(errno));
    return GY_EIO;
  }
  size_t n = fread(buf, 1, sizeof(buf) - 1, f);
  int bad = ferror(f), more = !bad && fgetc(f) != EOF;
  fclose(f);
  if (bad) {
    set_err(errmsg, errlen, "token file %s: cannot read", path);
    return GY_EIO;
  }
  int rc = 0;
  if (more) {
    set_err(errmsg, errlen, "token file %s: longer than %d bytes", path, GY_RPC_TOKEN_MAX);
    rc = GY_EINVAL;
  } else {
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' ' ||
                     buf[n - 1] == '\t'))
      n--;
    buf[n] = '\0';
    char what[300];
    snprintf(what, sizeof(what), "token file %s", path);
    if (memchr(buf, '\0', n)) {
      set_err(errmsg, errlen, "%s: binary data, not a token", what);
      rc = GY_EINVAL;
    } else if (!(rc = gy_rpc_token_check(what, buf, errmsg, errlen)) && !(*out = strdup(buf))) {
      set_err(errmsg, errlen, "%s: out of memory", what);
      rc = GY_ENOMEM;
    }
  }
  memset(buf, 0, sizeof(buf));
  return rc;
}

/* ===================================== server ===================================== */

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

typedef struct sendq {
  struct sendq *next;
  grpc_byte_buffer *bb;
} sendq_t;

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
  tag_t t_recv, t_send, t_close, t_status, t_init;
  grpc_byte_buffer *recv_bb;
  grpc_byte_buffer *send_bb; /* in flight */
  sendq_t *q_head, *q_tail;
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
    sendq_t *q = c->q_head;
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
    sendq_t *q = c->q_head;
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
    bb = make_buffer(resp, len);
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
  c->method = slice_to_str(c->details.method);
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
      c->md[2 * i] = slice_to_str(c->req_md.metadata[i].key);
      c->md[2 * i + 1] = slice_to_str(c->req_md.metadata[i].value);
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
  grpc_slice sl = read_buffer(bb);
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
    sendq_t *q = c->q_head;
    c->q_head = q->next;
    grpc_byte_buffer_destroy(q->bb);
    free(q);
  }
  c->q_tail = NULL;
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
    set_err(errmsg, errlen, "rpc server: missing loop, options or bind address");
    return GY_EINVAL;
  }
  int rc = GY_ENOMEM;
  gy_rpc_server_t *s = calloc(1, sizeof(*s));
  if (!s) goto err;
  grpc_init();
  s->loop = loop;
  s->opts = *opts;
  if (!s->opts.max_message) s->opts.max_message = DEFAULT_MAX_MESSAGE;
  if (s->opts.max_message > 0x7fffffff) s->opts.max_message = 0x7fffffff;
  s->bind = xstrdup(opts->bind);
  s->opts.bind = s->bind;
  if (!s->bind) goto err;
  s->t_shutdown = (tag_t){T_SHUTDOWN, s};
  pthread_mutex_init(&s->mu, NULL);

  grpc_arg a[6];
  limit_args(a, s->opts.max_message);
  /* grpc sets SO_REUSEPORT by default: a second controller on the same port would then share
   * it silently instead of failing. */
  a[2].type = GRPC_ARG_INTEGER;
  a[2].key = (char *)GRPC_ARG_ALLOW_REUSEPORT;
  a[2].value.integer = 0;
  /* clients ping every KEEPALIVE_MS while a stream is open (see the client): accept it */
  a[3].type = GRPC_ARG_INTEGER;
  a[3].key = (char *)GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS;
  a[3].value.integer = KEEPALIVE_MS / 2;
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
    pem_server_t pem;
    if ((rc = pem_server_load(&pem, opts->tls, errmsg, errlen))) goto err_quiet;
    creds = pem_server_creds(&pem);
    pem_server_free(&pem); /* gRPC keeps its own copies */
  } else if (have_default_tls) {
    creds = pem_server_creds(&default_tls);
  } else {
    creds = grpc_insecure_server_credentials_create();
  }
  if (!creds) {
    rc = GY_EINVAL;
    set_err(errmsg, errlen, "rpc server: gRPC refused the TLS credentials");
    goto err_quiet;
  }
  int p = grpc_server_add_http2_port(s->srv, s->bind, creds);
  grpc_server_credentials_release(creds);
  if (p == 0) {
    rc = GY_EIO;
    set_err(errmsg, errlen, "rpc server: cannot bind %s", s->bind);
    goto err;
  }
  if (port) *port = p;
  if (uv_async_init(loop, &s->async, on_async) != 0) {
    rc = GY_EIO;
    set_err(errmsg, errlen, "rpc server: uv_async_init failed");
    goto err;
  }
  s->async.data = s;
  s->async_init = 1;
  *out = s;
  return 0;
err:
  if (rc == GY_ENOMEM) set_err(errmsg, errlen, "rpc server: out of memory");
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
  sendq_t *q = malloc(sizeof(*q));
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
  return send_bb(c, make_buffer(msg, len));
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

/* ===================================== client ===================================== */

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
  sendq_t *q_head, *q_tail;
  int ops;
  int has_md;
  int recv_pending, status_done, closing, closed, ended, closed_cb_done, halfclosed;
};

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
    sendq_t *q = s->q_head;
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
        msg = read_buffer(bb);
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
    char *det = slice_to_str(s->details);
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

/* Channel credentials of tls (plaintext when tls asks for nothing), the files read and checked
 * first. NULL with errmsg on error (*rc the code). */
static grpc_channel_credentials *client_creds(const gy_rpc_client_tls_t *tls, int *rc,
                                              char *errmsg, size_t errlen) {
  *rc = 0;
  if (!tls || (empty(tls->ca) && empty(tls->cert) && empty(tls->key) && empty(tls->target_name)))
    return grpc_insecure_credentials_create();
  if (empty(tls->cert) != empty(tls->key)) {
    *rc = GY_EINVAL;
    set_err(errmsg, errlen, "TLS: a client certificate needs its key and a key its certificate");
    return NULL;
  }
  char *ca = NULL, *cert = NULL, *key = NULL;
  grpc_channel_credentials *creds = NULL;
  if ((!empty(tls->ca) &&
       (*rc = pem_read("CA certificate", tls->ca, PEM_CERTS, &ca, errmsg, errlen))) ||
      (!empty(tls->cert) &&
       ((*rc = pem_read("certificate", tls->cert, PEM_CERTS, &cert, errmsg, errlen)) ||
        (*rc = pem_read("key", tls->key, PEM_KEY, &key, errmsg, errlen)) ||
        (*rc = pem_pair_check(tls->cert, cert, tls->key, key, errmsg, errlen)))))
    goto out;
  grpc_ssl_pem_key_cert_pair pair = {key, cert};
  creds = grpc_ssl_credentials_create_ex(ca, cert ? &pair : NULL, NULL, NULL);
  if (!creds) {
    *rc = GY_EINVAL;
    set_err(errmsg, errlen, "TLS: gRPC refused the client credentials");
  }
out:
  free(ca);
  free(cert);
  if (key) memset(key, 0, strlen(key));
  free(key);
  return creds;
}

int gy_rpc_client_create(gy_rpc_client_t **out, const char *target, char *errmsg, size_t errlen) {
  return gy_rpc_client_create_tls(out, target, NULL, errmsg, errlen);
}

int gy_rpc_client_create_tls(gy_rpc_client_t **out, const char *target,
                             const gy_rpc_client_tls_t *tls, char *errmsg, size_t errlen) {
  *out = NULL;
  if (!target || !*target) {
    set_err(errmsg, errlen, "rpc client: missing target address");
    return GY_EINVAL;
  }
  gy_rpc_client_t *c = calloc(1, sizeof(*c));
  if (!c) {
    set_err(errmsg, errlen, "rpc client: out of memory");
    return GY_ENOMEM;
  }
  grpc_init();
  int rc;
  grpc_channel_credentials *creds = client_creds(tls, &rc, errmsg, errlen);
  if (!creds) {
    free(c);
    grpc_shutdown();
    return rc ? rc : GY_ENOMEM;
  }
  pthread_mutex_init(&c->mu, NULL);
  grpc_arg a[6];
  limit_args(a, DEFAULT_MAX_MESSAGE);
  /* A peer that stops answering (a stopped or partitioned controller keeps its TCP connection)
   * fails the open streams after KEEPALIVE_MS + KEEPALIVE_TIMEOUT_MS, so that a worker moves on
   * to the next controller address instead of waiting for ever. */
  a[2].type = GRPC_ARG_INTEGER;
  a[2].key = (char *)GRPC_ARG_KEEPALIVE_TIME_MS;
  a[2].value.integer = KEEPALIVE_MS;
  a[3].type = GRPC_ARG_INTEGER;
  a[3].key = (char *)GRPC_ARG_KEEPALIVE_TIMEOUT_MS;
  a[3].value.integer = KEEPALIVE_TIMEOUT_MS;
  /* gRPC's minimum reconnect back-off is also its connect deadline (20 s by default): a peer
   * that accepts TCP but never speaks HTTP/2 (a stopped process) would hold a call that long
   * before the next address is tried. */
  a[4].type = GRPC_ARG_INTEGER;
  a[4].key = (char *)GRPC_ARG_MIN_RECONNECT_BACKOFF_MS;
  a[4].value.integer = CONNECT_TIMEOUT_MS;
  grpc_channel_args args = {5, a};
  if (tls && !empty(tls->target_name)) {
    a[5].type = GRPC_ARG_STRING;
    a[5].key = (char *)GRPC_SSL_TARGET_NAME_OVERRIDE_ARG;
    a[5].value.string = (char *)tls->target_name;
    args.num_args = 6;
  }
  c->ch = grpc_channel_create(target, creds, &args);
  grpc_channel_credentials_release(creds);
  c->cq = grpc_completion_queue_create_for_next(NULL);
  if (!c->ch || !c->cq || pthread_create(&c->thread, NULL, client_thread, c) != 0) {
    set_err(errmsg, errlen, "rpc client: cannot create a channel to %s", target);
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
    set_err(errmsg, errlen, "rpc: missing client or method");
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
  grpc_byte_buffer *req_bb = make_buffer(req, len);
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
    set_err(errmsg, errlen, "rpc %s: start_batch failed (%d)", method, (int)e);
    rc = GY_ECOMM;
  } else {
    grpc_event ev =
        grpc_completion_queue_pluck(cq, (void *)1, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
    (void)ev; /* RECV_STATUS_ON_CLIENT always completes; the status says how the call went */
    *status = (int)st;
    if (st == GRPC_STATUS_OK) {
      if (resp_bb) {
        grpc_slice sl = read_buffer(resp_bb);
        size_t n = GRPC_SLICE_LENGTH(sl);
        if (resp && n) {
          *resp = malloc(n);
          if (!*resp) {
            rc = GY_ENOMEM;
            set_err(errmsg, errlen, "rpc %s: out of memory for a %zu-byte reply", method, n);
          } else {
            memcpy(*resp, GRPC_SLICE_START_PTR(sl), n);
            if (resp_len) *resp_len = n;
          }
        }
        grpc_slice_unref(sl);
      }
    } else {
      char *det = slice_to_str(details);
      set_err(errmsg, errlen, "%s", det && *det ? det : (err_str ? err_str : "rpc failed"));
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
    set_err(errmsg, errlen, "rpc stream: missing client, method or callbacks");
    return GY_EINVAL;
  }
  gy_rpc_cstream_t *s = calloc(1, sizeof(*s));
  if (!s) {
    set_err(errmsg, errlen, "rpc stream %s: out of memory", method);
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
    set_err(errmsg, errlen, "rpc stream %s: cannot start the call", method);
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
  sendq_t *q = malloc(sizeof(*q));
  if (!q) return GY_ENOMEM;
  pthread_mutex_lock(&s->mu);
  if (s->ended || s->closing || s->closed) {
    pthread_mutex_unlock(&s->mu);
    free(q);
    return GY_ECOMM;
  }
  q->bb = make_buffer(msg, len);
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
    sendq_t *q = s->q_head;
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
