/* comm: collectives for data- and tensor-parallel training behind one small interface, with
 * two implementations: Gloo (TCP, CPUs) and NCCL (GPUs); and the rendezvous store they use. */
#ifndef GY_COMM_H
#define GY_COMM_H

#include <stddef.h>
#include <stdint.h>

#include "common/kvstore.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- rendezvous store: the interface lives in common/kvstore.h (the agent implements it
 * over the controller without depending on the worker); the folder store is here. ---- */

/* A store in folder dir (created with its parents if missing; the store copies the name); one
 * file per key ('/' encoded as "%2F"), written atomically (temp + rename). */
int gy_store_file_create(gy_store_t **out, const char *dir, char *errmsg, size_t errlen);
/* Parses "file:DIR" and creates the matching store. */
int gy_store_open(gy_store_t **out, const char *spec, char *errmsg, size_t errlen);
void gy_store_destroy(gy_store_t *s); /* NULL is a no-op */

/* ---- communicators ---- */
/* GY_DT_BF16 (bfloat16, 2 bytes) is for device buffers: "nccl" only; the host communicators
 * refuse it with GY_EINVAL. */
typedef enum { GY_DT_F32 = 0, GY_DT_F64 = 1, GY_DT_I32 = 2, GY_DT_BF16 = 3 } gy_dtype_t;
typedef enum { GY_OP_SUM = 0, GY_OP_AVG = 1, GY_OP_MAX = 2 } gy_redop_t;

typedef struct gy_comm gy_comm_t;
/* One table per implementation. Every call is collective over the group: all members make the
 * same calls in the same order. Errors (a dead or hung peer) return GY_ECOMM with a message in
 * comm->errmsg; after an error the communicator is dead: destroy it and build a new gang.
 * Calls are synchronous: the result is in the buffer when the call returns. A dead peer is
 * reported in milliseconds; a hung one (stopped, or not making its call) at opts.timeout_ms.
 * Bad arguments return GY_EINVAL before any traffic. count 0 is a no-op.
 * Memory: "gloo" takes host pointers; "nccl" takes DEVICE pointers on opts.device (ready, i.e.
 * the producing stream synchronised, before the call). One thread at a time per communicator;
 * different communicators (world, dp, tp) may be used from different threads. */
typedef struct {
  const char *name; /* "gloo" | "nccl" */
  int (*allreduce)(gy_comm_t *c, void *buf, size_t count, gy_dtype_t dt, gy_redop_t op);
  /* out holds size * count elements: rank i's `in` lands at out + i * count. */
  int (*allgather)(gy_comm_t *c, const void *in, void *out, size_t count, gy_dtype_t dt);
  /* in holds size * count elements; rank i receives the reduced block i in out (count). */
  int (*reduce_scatter)(gy_comm_t *c, const void *in, void *out, size_t count, gy_dtype_t dt,
                        gy_redop_t op);
  int (*broadcast)(gy_comm_t *c, void *buf, size_t count, gy_dtype_t dt, int root);
  int (*barrier)(gy_comm_t *c);
  /* Makes pending and future calls fail fast; safe from another thread. Gloo: the call in flight
   * fails at once and the peers see the connections close. NCCL: the call in flight notices
   * within its polling interval and aborts the NCCL communicator (ncclCommAbort). */
  void (*abort)(gy_comm_t *c);
  void (*destroy)(gy_comm_t *c);
} gy_comm_ops_t;

struct gy_comm {
  const gy_comm_ops_t *ops;
  int rank, size;
  char errmsg[512];
  void *impl;
};

/* The groups of one rank. Ranks are laid out tp-major: the tensor-parallel group of rank r is
 * the tp consecutive ranks {r - r%tp, ...}; its data-parallel group is the ranks with the same
 * r % tp. */
typedef struct {
  gy_comm_t *world, *dp, *tp;
  int rank, world_size;
  int dp_rank, dp_size;
  int tp_rank, tp_size;
} gy_comm_groups_t;

typedef struct {
  const char *backend; /* "gloo" (default) or "nccl" */
  int rank, world, tp; /* world % tp == 0 */
  gy_store_t *store;   /* borrowed; must outlive the groups */
  const char *prefix;  /* key prefix, unique per gang generation (e.g. "g3"); reusing one makes
                          ranks read a dead gang's addresses */
  int timeout_ms;      /* collective and rendezvous timeout (<= 0: 30000) */
  int device;          /* CUDA device for NCCL (ignored by Gloo) */
} gy_comm_opts_t;

/* Connects the three groups of this rank (collective over the whole gang): world, then tp, then
 * dp, under store keys "<prefix>/world", "<prefix>/tp<r/tp>", "<prefix>/dp<r%tp>". A group of
 * one is a local communicator (no network). Gloo listens on 127.0.0.1 unless the environment
 * variable GY_COMM_HOST names another local address. Ignores SIGPIPE in the process when its
 * handler is the default (Gloo writes to sockets without MSG_NOSIGNAL). On error g is left
 * empty and errmsg names the group and the cause. */
int gy_comm_groups_create(gy_comm_groups_t *g, const gy_comm_opts_t *opts, char *errmsg,
                          size_t errlen);
void gy_comm_groups_destroy(gy_comm_groups_t *g);

/* The time this process spends in collectives (every communicator of gy_comm_groups_create
 * counts; any thread may read these): in total since it started, and the collective in progress
 * (0: none; else nanoseconds since it began, at least 1). A step's compute time is its wall time
 * minus the growth of gy_comm_blocked_ns over it. */
int64_t gy_comm_blocked_ns(void);
int64_t gy_comm_in_collective_ns(void);

/* Element size of dt. */
size_t gy_dtype_size(gy_dtype_t dt);
/* 1 if the backend was compiled in. */
int gy_comm_backend_available(const char *backend);

#ifdef __cplusplus
}
#endif

#endif
