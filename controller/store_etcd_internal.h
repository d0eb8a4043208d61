/* store_etcd_internal: what the files of the etcd back end (store_etcd.c, store_etcd_client.c)
 * share: the back end's structs and the gy__etcd_* calls between the files. Not part of the
 * public API. gRPC itself is reached only through common/rpc.h. */
#ifndef GY_CONTROLLER_STORE_ETCD_INTERNAL_H
#define GY_CONTROLLER_STORE_ETCD_INTERNAL_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "common/rpc.h"
#include "controller/store_impl.h"
#include "proto/etcd.pb-c.h"

#define M_RANGE "/etcdserverpb.KV/Range"
#define M_TXN "/etcdserverpb.KV/Txn"
#define M_GRANT "/etcdserverpb.Lease/LeaseGrant"
#define M_REVOKE "/etcdserverpb.Lease/LeaseRevoke"
#define M_KEEPALIVE "/etcdserverpb.Lease/LeaseKeepAlive"
#define M_WATCH "/etcdserverpb.Watch/Watch"
#define M_AUTH "/etcdserverpb.Auth/Authenticate"

typedef struct {
  char *target; /* host:port */
  gy_rpc_client_t *c;
  char *token;
} ep_t;

typedef struct {
  ep_t *eps;
  size_t n, cur;
  pthread_mutex_t mu;
  char *user, *pass;
  int dial_ms;
} et_t;

/* A message of a watch's stream, waiting for the watch thread. */
typedef struct etw_msg {
  struct etw_msg *next;
  size_t len;
  uint8_t data[];
} etw_msg_t;

typedef struct {
  et_t *e;
  char *key, *end;
  int64_t next;
  gy_cstore_watch_cb cb;
  void *ud;
  pthread_t th;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int stop;
  /* the stream of the moment (under mu): messages queued by the client's thread, and its end */
  etw_msg_t *q_head, *q_tail;
  int closed, status;
} etw_t;

/* store_etcd_client.c: endpoints, auth and unary calls over the common gRPC client. */
int gy__etcd_ep_open(et_t *e, const gy_cstore_opts_t *opts, char *errmsg, size_t errlen);
gy_rpc_client_t *gy__etcd_ep_get(et_t *e, size_t i, char **token);
void gy__etcd_ep_set_token(et_t *e, size_t i, const char *token);
void gy__etcd_ep_fail(et_t *e, size_t i);
size_t gy__etcd_ep_cur(et_t *e);
int gy__etcd_authenticate(et_t *e, size_t i, gy_rpc_client_t *c, int64_t deadline_ms, char **token,
                          char *details, size_t detlen);
int gy__etcd_rpc(et_t *e, const char *method, const ProtobufCMessage *req,
                 const ProtobufCMessageDescriptor *rdesc, ProtobufCMessage **out,
                 int64_t deadline_ms, char *errmsg, size_t errlen);

#endif
