/* kvstore: the rendezvous store interface: a key-value store every rank of a gang can reach.
 * The collectives (worker/comm) use it to exchange addresses and ids; implementations: a
 * folder (worker/store.c) and the controller (agent/agent.c, over gRPC). */
#ifndef GY_KVSTORE_H
#define GY_KVSTORE_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Keys are short strings; values are byte strings. get() waits until the key exists or the
 * timeout passes (GY_ETIMEDOUT); timeout_ms 0 looks once, a negative one waits without end.
 * Keys every implementation must take: 1..200 bytes of [A-Za-z0-9._-] and '/', where '/'
 * separates namespaces ("<gang prefix>/<group>/<key>"); no empty, "." or ".." segment, no
 * leading '.'. Anything else is GY_EINVAL. */
typedef struct gy_store gy_store_t;
typedef struct {
  int (*set)(gy_store_t *s, const char *key, const void *val, size_t len);
  /* On success *val is malloc'ed (caller frees) and *len its size. */
  int (*get)(gy_store_t *s, const char *key, void **val, size_t *len, int timeout_ms);
  /* 1 if every key exists now, 0 if not, or a negative error. */
  int (*check)(gy_store_t *s, const char *const *keys, int nkeys);
  void (*destroy)(gy_store_t *s);
} gy_store_ops_t;
struct gy_store {
  const gy_store_ops_t *ops;
  void *impl;
};

#ifdef __cplusplus
}
#endif

#endif
