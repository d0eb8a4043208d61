/*
 * comm_nccl: the NCCL communicator of comm.h, for GPUs. Built only when CMake finds CUDA and NCCL
 * (GY_HAVE_NCCL); plain C over nccl.h and cuda_runtime.h.
 *
 * API: gy__comm_nccl_create() (comm_internal.h) builds one group's communicator; the collectives
 * go through its gy_comm_ops_t table (name "nccl").
 *
 * For NCCL every buffer is a DEVICE pointer on the communicator's device. A call is synchronous
 * like the Gloo one: it returns once the result is in the buffer. The caller makes sure the data
 * is ready (its stream synchronised) before the call; the collective runs on the communicator's
 * own non-blocking stream.
 *
 * Invariants:
 *  - Rendezvous: rank 0 of the group makes the ncclUniqueId and writes it to the store under
 *    "<prefix>/nccl-id"; the others read it with the configured timeout. One NCCL communicator
 *    per group (world, tp, dp), each from its own id. A group of one needs no store.
 *  - Communicators are non-blocking (config.blocking = 0), so no NCCL call can hang: every call
 *    is followed by a loop that polls ncclCommGetAsyncError() and cudaStreamQuery() until the
 *    work is done, an error is reported, the timeout passes or abort() was called. In the last
 *    three cases the loop calls ncclCommAbort() and the communicator is dead: later calls fail at
 *    once with GY_ECOMM.
 *  - abort() only raises an atomic flag (so it is safe from any thread, and never races with a
 *    call using the communicator); the call in flight, or the next call, or destroy() aborts the
 *    NCCL communicator.
 *  - Errors name the collective, the rank, the group and NCCL's own text (ncclGetErrorString and
 *    ncclGetLastError); CUDA errors name the CUDA call.
 *  - MAX follows NCCL's max (NaN propagation is not guaranteed, unlike the Gloo backend); AVG is
 *    ncclAvg.
 */
#include "worker/comm_internal.h"

#include <cuda_runtime.h>
#include <nccl.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/err.h"

typedef struct {
  ncclComm_t comm;     /* NULL once aborted or destroyed */
  cudaStream_t stream; /* the collectives' stream, owned */
  int *one;            /* one device int for barrier(), owned */
  int device, timeout_ms;
  char prefix[256];
  atomic_int abort_req; /* raised by abort() from any thread */
  int dead;             /* an error or an abort killed comm */
} nccl_t;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void pause_us(long us) {
  struct timespec ts = {0, us * 1000};
  nanosleep(&ts, NULL);
}

static ncclDataType_t nccl_dtype(gy_dtype_t dt) {
  switch (dt) {
  case GY_DT_F64:
    return ncclFloat64;
  case GY_DT_I32:
    return ncclInt32;
  case GY_DT_BF16:
    return ncclBfloat16;
  case GY_DT_F32:
    break;
  }
  return ncclFloat32;
}

static ncclRedOp_t nccl_op(gy_redop_t op) {
  switch (op) {
  case GY_OP_AVG:
    return ncclAvg;
  case GY_OP_MAX:
    return ncclMax;
  case GY_OP_SUM:
    break;
  }
  return ncclSum;
}

/* Aborts the NCCL communicator (if alive) and marks it dead. */
static void kill_comm(nccl_t *n) {
  if (n->comm) ncclCommAbort(n->comm);
  n->comm = NULL;
  n->dead = 1;
}

/* Fails the call `what`: kills the communicator and writes the message into c->errmsg. */
static int fail(gy_comm_t *c, const char *what, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(gy_comm_t *c, const char *what, const char *fmt, ...) {
  nccl_t *n = c->impl;
  char why[384];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(why, sizeof(why), fmt, ap);
  va_end(ap);
  kill_comm(n);
  gy_errmsg(c->errmsg, sizeof(c->errmsg), "nccl %s (rank %d of %d, group %s): %s", what, c->rank,
            c->size, n->prefix, why);
  return GY_ECOMM;
}

/* The last NCCL message of comm (or an empty string). */
static const char *last_error(nccl_t *n) {
  const char *s = n->comm ? ncclGetLastError(n->comm) : NULL;
  return s ? s : "";
}

/* Polls until the enqueued work (and, with stream set, the stream) is done; fails on an error,
 * the timeout or an abort request. */
static int wait_done(gy_comm_t *c, const char *what, int stream) {
  nccl_t *n = c->impl;
  double deadline = now_s() + n->timeout_ms / 1000.0;
  for (int spins = 0;; spins++) {
    if (atomic_load(&n->abort_req)) return fail(c, what, "aborted by the caller");
    ncclResult_t st = ncclSuccess;
    ncclResult_t r = ncclCommGetAsyncError(n->comm, &st);
    if (r != ncclSuccess) {
      return fail(c, what, "ncclCommGetAsyncError: %s %s", ncclGetErrorString(r), last_error(n));
    }
    if (st != ncclSuccess && st != ncclInProgress) {
      return fail(c, what, "%s %s", ncclGetErrorString(st), last_error(n));
    }
    if (st == ncclSuccess) {
      if (!stream) return 0;
      cudaError_t e = cudaStreamQuery(n->stream);
      if (e == cudaSuccess) return 0;
      if (e != cudaErrorNotReady) {
        return fail(c, what, "cudaStreamQuery: %s", cudaGetErrorString(e));
      }
    }
    if (now_s() > deadline) {
      return fail(c, what, "not done after %d ms (a peer is hung or gone)", n->timeout_ms);
    }
    if (spins < 2000) {
      sched_yield();
    } else {
      pause_us(100);
    }
  }
}

/* Checks that the communicator may run a call. */
static int ready(gy_comm_t *c, const char *what) {
  nccl_t *n = c->impl;
  if (n->dead || !n->comm) {
    gy_errmsg(c->errmsg, sizeof(c->errmsg),
              "nccl %s (rank %d of %d, group %s): communicator is "
              "dead after an earlier error or abort",
              what, c->rank, c->size, n->prefix);
    return GY_ECOMM;
  }
  if (atomic_load(&n->abort_req)) return fail(c, what, "aborted by the caller");
  cudaError_t e = cudaSetDevice(n->device);
  if (e != cudaSuccess)
    return fail(c, what, "cudaSetDevice(%d): %s", n->device, cudaGetErrorString(e));
  return 0;
}

/* Finishes a call whose enqueue returned r. */
static int finish(gy_comm_t *c, const char *what, ncclResult_t r) {
  nccl_t *n = c->impl;
  if (r != ncclSuccess && r != ncclInProgress) {
    return fail(c, what, "%s %s", ncclGetErrorString(r), last_error(n));
  }
  return wait_done(c, what, 1);
}

static int nc_allreduce(gy_comm_t *c, void *buf, size_t count, gy_dtype_t dt, gy_redop_t op) {
  nccl_t *n = c->impl;
  int rc = gy__comm_check_args(c, "allreduce", buf, buf, count, dt, (int)op, 1);
  if (!rc) rc = ready(c, "allreduce");
  if (rc || count == 0) return rc;
  return finish(c, "allreduce",
                ncclAllReduce(buf, buf, count, nccl_dtype(dt), nccl_op(op), n->comm, n->stream));
}

static int nc_allgather(gy_comm_t *c, const void *in, void *out, size_t count, gy_dtype_t dt) {
  nccl_t *n = c->impl;
  int rc = gy__comm_check_args(c, "allgather", in, out, count, dt, GY_OP_SUM, (size_t)c->size);
  if (!rc) rc = ready(c, "allgather");
  if (rc || count == 0) return rc;
  return finish(c, "allgather", ncclAllGather(in, out, count, nccl_dtype(dt), n->comm, n->stream));
}

static int nc_reduce_scatter(gy_comm_t *c, const void *in, void *out, size_t count, gy_dtype_t dt,
                             gy_redop_t op) {
  nccl_t *n = c->impl;
  int rc = gy__comm_check_args(c, "reduce_scatter", in, out, count, dt, (int)op, (size_t)c->size);
  if (!rc) rc = ready(c, "reduce_scatter");
  if (rc || count == 0) return rc;
  return finish(c, "reduce_scatter",
                ncclReduceScatter(in, out, count, nccl_dtype(dt), nccl_op(op), n->comm, n->stream));
}

static int nc_broadcast(gy_comm_t *c, void *buf, size_t count, gy_dtype_t dt, int root) {
  nccl_t *n = c->impl;
  int rc = gy__comm_check_args(c, "broadcast", buf, buf, count, dt, GY_OP_SUM, 1);
  if (!rc && (root < 0 || root >= c->size)) {
    gy_errmsg(c->errmsg, sizeof(c->errmsg), "broadcast: root %d outside the group of %d", root,
              c->size);
    rc = GY_EINVAL;
  }
  if (!rc) rc = ready(c, "broadcast");
  if (rc || count == 0) return rc;
  return finish(c, "broadcast",
                ncclBroadcast(buf, buf, count, nccl_dtype(dt), root, n->comm, n->stream));
}

static int nc_barrier(gy_comm_t *c) {
  nccl_t *n = c->impl;
  int rc = ready(c, "barrier");
  if (rc) return rc;
  return finish(c, "barrier",
                ncclAllReduce(n->one, n->one, 1, ncclInt32, ncclSum, n->comm, n->stream));
}

static void nc_abort(gy_comm_t *c) {
  nccl_t *n = c->impl;
  atomic_store(&n->abort_req, 1);
}

/* Releases everything; a live communicator is finalized (bounded by the timeout), a dead or
 * aborted one is aborted. */
static void nc_destroy(gy_comm_t *c) {
  nccl_t *n = c->impl;
  cudaSetDevice(n->device);
  if (n->comm && !n->dead && !atomic_load(&n->abort_req)) {
    /* Finalize flushes outstanding work (non-blocking: it may answer ncclInProgress); wait for
     * it like any call, then free. Any failure falls back to abort. */
    ncclResult_t r = ncclCommFinalize(n->comm);
    if ((r == ncclSuccess || r == ncclInProgress) && wait_done(c, "destroy", 0) == 0) {
      ncclCommDestroy(n->comm);
      n->comm = NULL;
    }
  }
  kill_comm(n);
  if (n->one) cudaFree(n->one);
  if (n->stream) cudaStreamDestroy(n->stream);
  free(n);
  free(c);
}

static const gy_comm_ops_t nccl_ops = {
    .name = "nccl",
    .allreduce = nc_allreduce,
    .allgather = nc_allgather,
    .reduce_scatter = nc_reduce_scatter,
    .broadcast = nc_broadcast,
    .barrier = nc_barrier,
    .abort = nc_abort,
    .destroy = nc_destroy,
};

int gy__comm_nccl_create(gy_comm_t **out, gy_store_t *store, const char *prefix, int rank, int size,
                         int timeout_ms, int device, char *errmsg, size_t errlen) {
  gy_comm_t *c = NULL;
  nccl_t *n = NULL;
  void *val = NULL;
  size_t len = 0;
  char key[300];
  cudaError_t e;
  ncclResult_t r;
  int rc;

  if (!out) return GY_EINVAL;
  *out = NULL;
  if (!store || !prefix || size < 1 || rank < 0 || rank >= size || timeout_ms <= 0) {
    gy_errmsg(errmsg, errlen, "bad arguments (rank %d of %d, timeout %d ms)", rank, size,
              timeout_ms);
    return GY_EINVAL;
  }
  c = calloc(1, sizeof(*c));
  n = calloc(1, sizeof(*n));
  if (!c || !n) {
    gy_errmsg(errmsg, errlen, "out of memory");
    rc = GY_ENOMEM;
    goto err;
  }
  c->ops = &nccl_ops;
  c->rank = rank;
  c->size = size;
  c->impl = n;
  n->device = device;
  n->timeout_ms = timeout_ms;
  snprintf(n->prefix, sizeof(n->prefix), "%s", prefix);
  atomic_init(&n->abort_req, 0);

  if ((e = cudaSetDevice(device)) != cudaSuccess) {
    gy_errmsg(errmsg, errlen, "cudaSetDevice(%d): %s", device, cudaGetErrorString(e));
    rc = GY_ECOMM;
    goto err;
  }
  if ((e = cudaStreamCreateWithFlags(&n->stream, cudaStreamNonBlocking)) != cudaSuccess ||
      (e = cudaMalloc((void **)&n->one, sizeof(int))) != cudaSuccess ||
      (e = cudaMemset(n->one, 0, sizeof(int))) != cudaSuccess) {
    gy_errmsg(errmsg, errlen, "CUDA set-up on device %d: %s", device, cudaGetErrorString(e));
    rc = GY_ECOMM;
    goto err;
  }

  ncclUniqueId id;
  snprintf(key, sizeof(key), "%s/nccl-id", prefix);
  if (rank == 0) {
    if ((r = ncclGetUniqueId(&id)) != ncclSuccess) {
      gy_errmsg(errmsg, errlen, "ncclGetUniqueId: %s", ncclGetErrorString(r));
      rc = GY_ECOMM;
      goto err;
    }
    if (size > 1 && (rc = store->ops->set(store, key, &id, sizeof(id))) != 0) {
      gy_errmsg(errmsg, errlen, "rendezvous store: set '%s': %s", key, gy_strerror(rc));
      goto err;
    }
  } else {
    rc = store->ops->get(store, key, &val, &len, timeout_ms);
    if (rc) {
      gy_errmsg(errmsg, errlen, "rendezvous store: get '%s': %s", key,
                rc == GY_ETIMEDOUT ? "rank 0 did not publish the NCCL id in time"
                                   : gy_strerror(rc));
      rc = GY_ECOMM;
      goto err;
    }
    if (len != sizeof(id)) {
      gy_errmsg(errmsg, errlen, "rendezvous store: '%s' holds %zu bytes, an NCCL id has %zu", key,
                len, sizeof(id));
      rc = GY_EPROTO;
      goto err;
    }
    memcpy(&id, val, sizeof(id));
  }

  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  config.commName = n->prefix;
  r = ncclCommInitRankConfig(&n->comm, size, id, rank, &config);
  if (r != ncclSuccess && r != ncclInProgress) {
    gy_errmsg(errmsg, errlen, "ncclCommInitRankConfig: %s %s", ncclGetErrorString(r),
              last_error(n));
    rc = GY_ECOMM;
    goto err;
  }
  if ((rc = wait_done(c, "init", 0)) != 0) {
    gy_errmsg(errmsg, errlen, "%s", c->errmsg);
    goto err;
  }
  free(val);
  *out = c;
  return 0;

err:
  free(val);
  if (n) {
    kill_comm(n);
    if (n->one) cudaFree(n->one);
    if (n->stream) cudaStreamDestroy(n->stream);
  }
  free(n);
  free(c);
  return rc;
}
