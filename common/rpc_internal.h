/* rpc_internal: what the files of the gRPC glue (rpc_tls.c, rpc_server.c, rpc_client.c) share:
 * size limits and keepalive timings, byte-buffer helpers, the send-queue entry, and the
 * gy__rpc_* calls from the server and the client into the TLS file. Not part of the public
 * API (common/rpc.h). The byte-buffer helpers are static inline: they sit on the per-message
 * path of both the server and the client streams. */
#ifndef GY_COMMON_RPC_INTERNAL_H
#define GY_COMMON_RPC_INTERNAL_H

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <stdlib.h>
#include <string.h>

#include "common/rpc.h"

#define GY__RPC_DEFAULT_MAX_MESSAGE (4u << 20)

/* HTTP/2 keepalive of client channels: a ping every KEEPALIVE_MS while a call is open, and the
 * transport is closed when one is not answered within KEEPALIVE_TIMEOUT_MS. The server accepts
 * pings that often. */
#define GY__RPC_KEEPALIVE_MS 2000
#define GY__RPC_KEEPALIVE_TIMEOUT_MS 3000
#define GY__RPC_CONNECT_TIMEOUT_MS 3000

/* A message waiting for its turn on a stream (server or client side). */
typedef struct gy__rpc_sendq {
  struct gy__rpc_sendq *next;
  grpc_byte_buffer *bb;
} gy__rpc_sendq_t;

/* A malloc'ed NUL-terminated copy of sl (caller frees); NULL when out of memory. */
static inline char *gy__rpc_slice_to_str(grpc_slice sl) {
  size_t n = GRPC_SLICE_LENGTH(sl);
  char *p = malloc(n + 1);
  if (!p) return NULL;
  memcpy(p, GRPC_SLICE_START_PTR(sl), n);
  p[n] = '\0';
  return p;
}

/* A byte buffer holding a copy of msg[0..len) (the caller destroys it). */
static inline grpc_byte_buffer *gy__rpc_make_buffer(const void *msg, size_t len) {
  grpc_slice sl = grpc_slice_from_copied_buffer((const char *)(msg ? msg : ""), len);
  grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&sl, 1);
  grpc_slice_unref(sl);
  return bb;
}

/* Flattens bb into one slice the caller unrefs. A message that arrived in one uncompressed
 * slice (the usual case for small messages) is shared, not copied. */
static inline grpc_slice gy__rpc_read_buffer(grpc_byte_buffer *bb) {
  if (bb->type == GRPC_BB_RAW && bb->data.raw.compression == GRPC_COMPRESS_NONE &&
      bb->data.raw.slice_buffer.count == 1)
    return grpc_slice_ref(bb->data.raw.slice_buffer.slices[0]);
  grpc_byte_buffer_reader r;
  if (!grpc_byte_buffer_reader_init(&r, bb)) return grpc_empty_slice();
  grpc_slice sl = grpc_byte_buffer_reader_readall(&r);
  grpc_byte_buffer_reader_destroy(&r);
  return sl;
}

/* Fills a[0..1] with the receive and send size limits (both max bytes). */
static inline void gy__rpc_limit_args(grpc_arg a[2], size_t max) {
  a[0].type = GRPC_ARG_INTEGER;
  a[0].key = (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
  a[0].value.integer = (int)max;
  a[1].type = GRPC_ARG_INTEGER;
  a[1].key = (char *)GRPC_ARG_MAX_SEND_MESSAGE_LENGTH;
  a[1].value.integer = (int)max;
}

/* ----------------------------------- rpc_tls.c ----------------------------------- */

/* A server's TLS material, as read from its files. */
typedef struct {
  char *cert, *key, *ca; /* PEM text; ca NULL when none */
  int client_auth;
} gy__rpc_pem_server_t;

/* Reads and checks the files of tls into p; GY_EINVAL/GY_EIO with errmsg naming the file. */
int gy__rpc_pem_server_load(gy__rpc_pem_server_t *p, const gy_rpc_server_tls_t *tls, char *errmsg,
                            size_t errlen);
/* Frees p's text (the key zeroed first) and clears p. */
void gy__rpc_pem_server_free(gy__rpc_pem_server_t *p);
/* gRPC server credentials from p (gRPC copies the text); NULL if gRPC refuses them. */
grpc_server_credentials *gy__rpc_pem_server_creds(const gy__rpc_pem_server_t *p);
/* The process default set by gy_rpc_server_tls_default; NULL when plaintext. */
const gy__rpc_pem_server_t *gy__rpc_server_tls_default_get(void);
/* Channel credentials of tls (plaintext when tls asks for nothing), the files read and checked
 * first. NULL with errmsg on error (*rc the code). */
grpc_channel_credentials *gy__rpc_client_creds(const gy_rpc_client_tls_t *tls, int *rc,
                                               char *errmsg, size_t errlen);

#endif
