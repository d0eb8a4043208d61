/* store_impl: what controller/store.c (the front: URL, defaults, CAS, the lease keeper) shares
 * with its back ends (store_sqlite.c, store_etcd.c). Not part of the public API. */
#ifndef GY_CONTROLLER_STORE_IMPL_H
#define GY_CONTROLLER_STORE_IMPL_H

#include "controller/store.h"

/* A back end. Every call gets an absolute deadline (gy__cstore_now_ms() clock) and fills errmsg
 * on failure. Range: [key, end) where end NULL = the one key, end "" = every key >= key. */
typedef struct gy__cstore_vt {
  const char *name;
  void (*destroy)(void *be);
  int (*range)(void *be, const char *key, const char *end, int64_t limit, gy_cstore_range_t *out,
               int64_t deadline_ms, char *errmsg, size_t errlen);
  int (*txn)(void *be, const gy_cstore_cmp_t *cmps, size_t ncmp, const gy_cstore_op_t *then_ops,
             size_t nthen, const gy_cstore_op_t *else_ops, size_t nelse,
             gy_cstore_txn_result_t *out, int64_t deadline_ms, char *errmsg, size_t errlen);
  int (*lease_grant)(void *be, int64_t ttl_s, int64_t *id, int64_t *granted, int64_t deadline_ms,
                     char *errmsg, size_t errlen);
  int (*lease_revoke)(void *be, int64_t id, int64_t deadline_ms, char *errmsg, size_t errlen);
  int (*lease_keepalive)(void *be, int64_t id, int64_t *ttl, int64_t deadline_ms, char *errmsg,
                         size_t errlen);
  /* start_rev > 0 always (the front resolves "now"); *handle is the back end's watch. */
  int (*watch_start)(void *be, const char *key, const char *end, int64_t start_rev,
                     gy_cstore_watch_cb cb, void *ud, void **handle, char *errmsg, size_t errlen);
  void (*watch_stop)(void *handle);
} gy__cstore_vt_t;

/* Back-end constructors: spec is the URL without its scheme. */
int gy__cstore_sqlite_open(void **be, const char *path, const gy_cstore_opts_t *opts, char *errmsg,
                           size_t errlen);
int gy__cstore_etcd_open(void **be, const char *endpoints, const gy_cstore_opts_t *opts,
                         char *errmsg, size_t errlen);
extern const gy__cstore_vt_t gy__cstore_sqlite_vt;
extern const gy__cstore_vt_t gy__cstore_etcd_vt;

/* Monotonic milliseconds. */
int64_t gy__cstore_now_ms(void);
/* The end of the prefix range (etcd's rule: increment the last byte below 0xff, dropping the
 * 0xff bytes after it); "" when no such key exists (every key >= prefix). Caller frees. */
char *gy__cstore_prefix_end(const char *prefix);
/* Copies (key, value) into kv (value NUL-terminated). GY_ENOMEM on failure. */
int gy__cstore_kv_set(gy_cstore_kv_t *kv, const void *key, size_t key_len, const void *value,
                      size_t value_len);

#endif
