/* comm_internal: what the comm module's files share (comm.c, comm_gloo.cc, comm_nccl.c). Not
 * part of the public contract: users include worker/comm.h only. */
#ifndef GY_COMM_INTERNAL_H
#define GY_COMM_INTERNAL_H

#include "worker/comm.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Checks a collective's arguments before any communication: dtype and op known (op is ignored
 * for collectives without one: pass GY_OP_SUM), count * nelem elements addressable, buffers not
 * NULL when count > 0. nelem is the largest buffer's size in units of count (1 or the group
 * size). Returns 0 or GY_EINVAL with c->errmsg set. */
/* comm_timed.c: wraps a communicator so that its calls are timed (see comm.h's
 * gy_comm_blocked_ns); owns inner; NULL when out of memory (inner destroyed). */
gy_comm_t *gy__comm_timed_wrap(gy_comm_t *inner);

int gy__comm_check_args(gy_comm_t *c, const char *what, const void *a, const void *b, size_t count,
                        gy_dtype_t dt, int op, size_t nelem);

/* ---- Gloo shim (comm_gloo.cc): a C API over Gloo's C++ one ----
 * Every function catches every exception and returns GY_ECOMM (or GY_ETIMEDOUT, GY_EINVAL) with
 * the message in errmsg. After any error the context is dead: later calls fail at once. */
typedef struct gy_gloo gy_gloo_t;

/* Connects rank `rank` of a group of `size` (>= 2) over TCP on host (an interface address such as
 * "127.0.0.1"), meeting the others through store under key prefix `prefix` (unique per group and
 * gang generation). The store is borrowed and must outlive the rendezvous only (the call). */
int gy__gloo_create(gy_gloo_t **out, gy_store_t *store, const char *prefix, const char *host,
                    int rank, int size, int timeout_ms, char *errmsg, size_t errlen);
/* In-place all-reduce; op is GY_OP_SUM or GY_OP_MAX (AVG is SUM then a division, in comm.c). */
int gy__gloo_allreduce(gy_gloo_t *g, void *buf, size_t count, gy_dtype_t dt, gy_redop_t op,
                       char *errmsg, size_t errlen);
/* out holds size * count elements; in may be out + rank * count (in place). */
int gy__gloo_allgather(gy_gloo_t *g, const void *in, void *out, size_t count, gy_dtype_t dt,
                       char *errmsg, size_t errlen);
int gy__gloo_broadcast(gy_gloo_t *g, void *buf, size_t count, gy_dtype_t dt, int root, char *errmsg,
                       size_t errlen);
int gy__gloo_barrier(gy_gloo_t *g, char *errmsg, size_t errlen);
/* Marks the context dead and closes its connections (peers fail fast); safe from any thread. */
void gy__gloo_abort(gy_gloo_t *g);
void gy__gloo_destroy(gy_gloo_t *g); /* NULL is a no-op */

/* ---- NCCL (comm_nccl.c, built only with GY_HAVE_NCCL) ----
 * Buffers are device pointers on `device`. Rank 0 of the group makes the unique id and shares it
 * through store under "<prefix>/nccl-id". */
int gy__comm_nccl_create(gy_comm_t **out, gy_store_t *store, const char *prefix, int rank, int size,
                         int timeout_ms, int device, char *errmsg, size_t errlen);

#ifdef __cplusplus
}
#endif

#endif
