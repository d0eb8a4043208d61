/* store_etcd_internal: what the files of the etcd back end (store_etcd.c, store_etcd_client.c)
 * share: the back end's structs and the gy__etcd_* calls between the files. Not part of the
 * public API. */
#ifndef GY_CONTROLLER_STORE_ETCD_INTERNAL_H
#define GY_CONTROLLER_STORE_ETCD_INTERNAL_H

#include <grpc/grpc.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

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
  grpc_channel *ch;
  char *token;
} ep_t;

typedef struct {
  ep_t *eps;
  size_t n, cur;
  pthread_mutex_t mu;
  grpc_channel_credentials *creds; /* NULL: plaintext */
  char *user, *pass;
  int dial_ms;
  grpc_completion_queue *poll_cq; /* polled by poll_th: keeps connection attempts moving */
  pthread_t poll_th;
  int poll_started;
} et_t;

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
  grpc_call *call;
} etw_t;

/* store_etcd_client.c: the gRPC client. */
grpc_channel *gy__etcd_ep_get(et_t *e, size_t i, char **token);
void gy__etcd_ep_set_token(et_t *e, size_t i, const char *token);
void gy__etcd_ep_fail(et_t *e, size_t i);
size_t gy__etcd_ep_cur(et_t *e);
int gy__etcd_authenticate(et_t *e, size_t i, grpc_channel *ch, int64_t deadline_ms, char **token,
                          char **details);
int gy__etcd_rpc(et_t *e, const char *method, const ProtobufCMessage *req,
                 const ProtobufCMessageDescriptor *rdesc, ProtobufCMessage **out,
                 int64_t deadline_ms, char *errmsg, size_t errlen);
void *gy__etcd_poll_main(void *arg);

#endif
