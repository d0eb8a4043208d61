/* rpc: gRPC (C-core API) glue. A server whose handlers run on a libuv loop, dispatching by
 * method path, with unary and streaming calls; and a client with blocking unary calls and
 * callback-driven streams. Messages are opaque bytes (protobuf-c encodes them). */
#ifndef GY_RPC_H
#define GY_RPC_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

/* gRPC status codes used by gyro (same values as grpc_status_code). */
enum {
  GY_RPC_OK = 0,
  GY_RPC_CANCELLED = 1,
  GY_RPC_UNKNOWN = 2,
  GY_RPC_INVALID_ARGUMENT = 3,
  GY_RPC_DEADLINE_EXCEEDED = 4,
  GY_RPC_NOT_FOUND = 5,
  GY_RPC_ALREADY_EXISTS = 6,
  GY_RPC_PERMISSION_DENIED = 7,
  GY_RPC_RESOURCE_EXHAUSTED = 8,
  GY_RPC_FAILED_PRECONDITION = 9,
  GY_RPC_ABORTED = 10,
  GY_RPC_OUT_OF_RANGE = 11,
  GY_RPC_UNIMPLEMENTED = 12,
  GY_RPC_INTERNAL = 13,
  GY_RPC_UNAVAILABLE = 14,
  GY_RPC_DATA_LOSS = 15,
  GY_RPC_UNAUTHENTICATED = 16,
};

/* The name of a gRPC status ("UNAVAILABLE"); "UNKNOWN" for a value outside the table. */
const char *gy_rpc_status_name(int status);

/* ================================ bearer tokens ================================ */

#define GY_RPC_TOKEN_MAX 512 /* longest token accepted (bytes) */

/* 1 when a and b are the same token, in time that does not depend on where they differ (both
 * are hashed with SHA-256 and the digests compared with CRYPTO_memcmp). NULL equals nothing. */
int gy_rpc_token_equal(const char *a, const char *b);
/* Checks a token's form: 1..GY_RPC_TOKEN_MAX bytes of printable ASCII without spaces (it travels
 * in an HTTP/2 header). 0, or GY_EINVAL with errmsg naming `what` (never the token itself). */
int gy_rpc_token_check(const char *what, const char *tok, char *errmsg, size_t errlen);
/* Reads a token from a file (a Kubernetes Secret mounted as a file, say): the file's text
 * without its trailing line break/spaces, checked with gy_rpc_token_check. *out is malloc'ed
 * (caller frees). GY_EIO (cannot read) or GY_EINVAL with errmsg naming the file. */
int gy_rpc_token_read_file(const char *path, char **out, char *errmsg, size_t errlen);

/* ================================ server (libuv loop) ================================ */

typedef struct gy_rpc_server gy_rpc_server_t;
typedef struct gy_rpc_call gy_rpc_call_t; /* one incoming call */

/* TLS of a server. Paths of PEM files, read and checked when the server is created (a missing,
 * unreadable or non-PEM file, or a key that does not match the certificate, is an error naming
 * the file). */
typedef struct {
  const char *cert; /* certificate chain (PEM), required */
  const char *key;  /* its private key (PEM), required */
  const char *ca;   /* CA certificates (PEM) that sign client certificates; NULL: none */
  int client_auth;  /* 1: every client must present a certificate signed by ca (mutual TLS;
                       needs ca); 0: client certificates are not asked for */
} gy_rpc_server_tls_t;

typedef struct {
  const char *bind;   /* "127.0.0.1:0" (0 = any free port), "0.0.0.0:7070", ... */
  size_t max_message; /* largest accepted message in bytes (default 4 MiB) */
  int health;         /* 1: serve grpc.health.v1.Health/Check (answers SERVING) */
  /* NULL: the process default (gy_rpc_server_tls_default), plaintext when there is none. */
  const gy_rpc_server_tls_t *tls;
} gy_rpc_server_opts_t;

/* Sets the TLS that servers created without opts.tls use from now on (a program whose server
 * is created by a library that does not pass TLS through: the controller's service). The files
 * are read and checked now; the callee copies what it needs. NULL goes back to plaintext.
 * GY_EINVAL/GY_EIO with errmsg naming the file. Call it before creating servers, from one
 * thread. */
int gy_rpc_server_tls_default(const gy_rpc_server_tls_t *tls, char *errmsg, size_t errlen);
/* Reads and checks the files of tls (what gy_rpc_server_create would do), without a server. */
int gy_rpc_server_tls_check(const gy_rpc_server_tls_t *tls, char *errmsg, size_t errlen);

/* A unary method: runs on the loop thread with the request; must call gy_rpc_reply exactly once,
 * now or later (a handler may hold the call, e.g. until a key exists). */
typedef void (*gy_rpc_unary_cb)(void *ud, gy_rpc_call_t *call, const uint8_t *req, size_t len);

/* A streaming method (bidi, or server-streaming: the first message is the request). All
 * callbacks run on the loop thread. After on_close returns, the call is gone. */
typedef struct {
  void (*on_open)(void *ud, gy_rpc_call_t *call);
  void (*on_message)(void *ud, gy_rpc_call_t *call, const uint8_t *msg, size_t len);
  /* status: GY_RPC_OK when the peer half-closed and the server finished, else why it ended */
  void (*on_close)(void *ud, gy_rpc_call_t *call, int status);
} gy_rpc_stream_cbs_t;

/* Creates a server on loop and binds it; *port receives the bound port. The callee copies
 * opts. Handlers are added before start. */
int gy_rpc_server_create(gy_rpc_server_t **out, uv_loop_t *loop, const gy_rpc_server_opts_t *opts,
                         int *port, char *errmsg, size_t errlen);
int gy_rpc_server_add_unary(gy_rpc_server_t *s, const char *method, gy_rpc_unary_cb cb, void *ud);
int gy_rpc_server_add_stream(gy_rpc_server_t *s, const char *method, const gy_rpc_stream_cbs_t *cbs,
                             void *ud);
int gy_rpc_server_start(gy_rpc_server_t *s);
/* Stops accepting, cancels every call (their on_close runs), then calls done on the loop.
 * A method nobody registered is answered UNIMPLEMENTED; a message over max_message
 * RESOURCE_EXHAUSTED: neither reaches a handler. */
void gy_rpc_server_shutdown(gy_rpc_server_t *s, void (*done)(void *ud), void *ud);
/* After shutdown's done: frees everything. NULL is a no-op. */
void gy_rpc_server_destroy(gy_rpc_server_t *s);

/* Answers a unary call (status, optional details, response bytes copied). The call is gone. */
void gy_rpc_reply(gy_rpc_call_t *call, int status, const char *details, const void *resp,
                  size_t len);
/* Queues a message on a streaming call (copied; sent in order). GY_ECOMM if the call ended. */
int gy_rpc_send(gy_rpc_call_t *call, const void *msg, size_t len);
/* Queues the same message on each of calls[0..n) (NULL entries and ended calls are skipped):
 * the bytes are copied once and shared. Returns how many calls it was queued on. */
size_t gy_rpc_send_many(gy_rpc_call_t *const *calls, size_t n, const void *msg, size_t len);
/* Ends a streaming call with a status (after queued messages); on_close follows. */
void gy_rpc_finish(gy_rpc_call_t *call, int status, const char *details);
/* A held unary call whose client goes away (its deadline passed, it cancelled, the connection
 * dropped) before gy_rpc_reply: cb(ud, call) runs once on the loop thread. The handler still
 * calls gy_rpc_reply afterwards (nothing is sent; the call is released). */
void gy_rpc_call_on_cancel(gy_rpc_call_t *call, void (*cb)(void *ud, gy_rpc_call_t *call),
                           void *ud);
void gy_rpc_call_set_data(gy_rpc_call_t *call, void *data);
void *gy_rpc_call_data(const gy_rpc_call_t *call);
const char *gy_rpc_call_method(const gy_rpc_call_t *call);
const char *gy_rpc_call_peer(const gy_rpc_call_t *call);
/* Value of request metadata key (lowercase), e.g. "authorization"; NULL if absent. */
const char *gy_rpc_call_metadata(const gy_rpc_call_t *call, const char *key);

/* ================================ client (any thread) ================================ */

typedef struct gy_rpc_client gy_rpc_client_t;

/* TLS of a client. Paths of PEM files, read and checked when the client is created (a missing,
 * unreadable or non-PEM file is an error naming it). */
typedef struct {
  const char *ca;          /* CA certificates the server's certificate must chain to; NULL: the
                              system's roots */
  const char *cert, *key;  /* client certificate chain and its key (mutual TLS); both or none */
  const char *target_name; /* name checked against the server certificate instead of the
                              target's host (NULL: the host) */
} gy_rpc_client_tls_t;

/* Channel to target ("127.0.0.1:7070"), plaintext; gRPC reconnects underneath. Thread-safe. */
int gy_rpc_client_create(gy_rpc_client_t **out, const char *target, char *errmsg, size_t errlen);
/* The same over TLS when tls is not NULL (plaintext when it is, or when all its fields are
 * NULL). The callee copies tls. Errors: GY_EINVAL (a cert without its key, ...) or GY_EIO (a
 * file), errmsg naming the file. */
int gy_rpc_client_create_tls(gy_rpc_client_t **out, const char *target,
                             const gy_rpc_client_tls_t *tls, char *errmsg, size_t errlen);
/* Channel options; a zero field takes the default written beside it. */
typedef struct {
  const gy_rpc_client_tls_t *tls; /* NULL: plaintext */
  size_t max_message;             /* largest message either way (4 MiB) */
  int keepalive_ms;               /* HTTP/2 ping interval while a call is open (2000) */
  int keepalive_timeout_ms;       /* an unanswered ping closes the transport after (3000) */
  int connect_timeout_ms;         /* connect deadline, also the minimum reconnect back-off (3000) */
  int backoff_initial_ms, backoff_max_ms; /* reconnect back-off (gRPC's own: 1 s, 120 s) */
} gy_rpc_client_opts_t;

/* The same with channel options (NULL: all defaults, as gy_rpc_client_create). The callee copies
 * opts. Errors as gy_rpc_client_create_tls. */
int gy_rpc_client_create_opts(gy_rpc_client_t **out, const char *target,
                              const gy_rpc_client_opts_t *opts, char *errmsg, size_t errlen);
void gy_rpc_client_destroy(gy_rpc_client_t *c); /* NULL is a no-op; closes its streams first */

/* Blocking unary call with a deadline. On success returns 0 and *resp (malloc'ed, caller frees;
 * may be NULL with len 0). Otherwise returns GY_ECOMM (or GY_ETIMEDOUT for DEADLINE_EXCEEDED)
 * with *status the gRPC status and the details in errmsg. md_key/md_val: one optional metadata
 * pair (e.g. "authorization", "Bearer TOKEN"), may be NULL. */
int gy_rpc_unary(gy_rpc_client_t *c, const char *method, const char *md_key, const char *md_val,
                 const void *req, size_t len, int timeout_ms, void **resp, size_t *resp_len,
                 int *status, char *errmsg, size_t errlen);

/* A client stream. Callbacks run on the client's completion-queue thread. */
typedef struct gy_rpc_cstream gy_rpc_cstream_t;
typedef struct {
  void (*on_message)(void *ud, const uint8_t *msg, size_t len);
  /* the stream ended: status and details from the server, or UNAVAILABLE when the connection
   * broke; called exactly once; no callback follows */
  void (*on_close)(void *ud, int status, const char *details);
} gy_rpc_cstream_cbs_t;

int gy_rpc_cstream_open(gy_rpc_client_t *c, const char *method, const char *md_key,
                        const char *md_val, const gy_rpc_cstream_cbs_t *cbs, void *ud,
                        gy_rpc_cstream_t **out, char *errmsg, size_t errlen);
/* Queues a message (copied); thread-safe; never blocks on the network. GY_ECOMM if closed. */
int gy_rpc_cstream_send(gy_rpc_cstream_t *s, const void *msg, size_t len);
/* Half-closes, cancels, waits for on_close, frees. From any thread but a callback. */
void gy_rpc_cstream_close(gy_rpc_cstream_t *s);

#endif
