/*
 * comm: the collectives interface of comm.h — the groups of a rank, argument checks, the Gloo
 * communicator (a C table over the C++ shim in comm_gloo.cc) and the trivial communicator of a
 * group of one. The NCCL communicator lives in comm_nccl.c.
 *
 * API, in order: gy_dtype_size(), gy_comm_backend_available(), gy_comm_groups_create(),
 * gy_comm_groups_destroy(). Collectives go through each communicator's gy_comm_ops_t.
 *
 * Invariants:
 *  - Layout is tp-major: rank r is rank r % tp of tensor-parallel group r / tp (ranks
 *    r - r % tp .. + tp - 1) and rank r / tp of data-parallel group r % tp (ranks with the same
 *    r % tp). Groups are connected in the same order on every rank (world, tp, dp), each under
 *    its own store prefix "<prefix>/world", "<prefix>/tp<k>", "<prefix>/dp<k>", so groups and
 *    gang generations never read each other's keys.
 *  - A group of one never touches the network: with Gloo it is the trivial communicator below
 *    (copies only; host memory); with NCCL it is a one-rank NCCL communicator (device memory).
 *  - Every collective checks its arguments before any communication, so a bad call fails with
 *    GY_EINVAL and a message on the caller's rank; the peers then see a timeout, as with any rank
 *    that does not make its call.
 *  - Gloo's options API (tags, per-call timeouts: what the shim uses) has no reduce-scatter; its
 *    only one is the old-style ReduceScatterHalvingDoubling class, with buffers bound when it is
 *    built and its own slot scheme. So reduce_scatter here is an all-reduce of a scratch copy of
 *    `in` followed by a copy of the rank's block: correct, and about twice the traffic of a true
 *    reduce-scatter. AVG is SUM followed by a division by the group size (integer division,
 *    truncating, for int32).
 *  - SIGPIPE is ignored in the process (when its handler is still the default) before the first
 *    Gloo connection: Gloo writes to sockets without MSG_NOSIGNAL, and a peer that dies would
 *    otherwise kill this process silently.
 */
#include "worker/comm.h"

#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "worker/comm_internal.h"

#define DEFAULT_TIMEOUT_MS 30000

size_t gy_dtype_size(gy_dtype_t dt) {
  switch (dt) {
  case GY_DT_F32:
    return 4;
  case GY_DT_F64:
    return 8;
  case GY_DT_I32:
    return 4;
  case GY_DT_BF16:
    return 2;
  }
  return 0;
}

int gy_comm_backend_available(const char *backend) {
  if (!backend) return 0;
  if (strcmp(backend, "gloo") == 0) return 1;
#ifdef GY_HAVE_NCCL
  if (strcmp(backend, "nccl") == 0) return 1;
#endif
  return 0;
}

/* ---- argument checks shared by the host implementations ---- */

int gy__comm_check_args(gy_comm_t *c, const char *what, const void *a, const void *b, size_t count,
                        gy_dtype_t dt, int op, size_t nelem) {
  size_t es = gy_dtype_size(dt);
  if (es == 0) {
    gy_errmsg(c->errmsg, sizeof(c->errmsg), "%s: unknown dtype %d", what, (int)dt);
    return GY_EINVAL;
  }
  if (op < GY_OP_SUM || op > GY_OP_MAX) {
    gy_errmsg(c->errmsg, sizeof(c->errmsg), "%s: unknown reduction %d", what, op);
    return GY_EINVAL;
  }
  if (count > SIZE_MAX / es / nelem) {
    gy_errmsg(c->errmsg, sizeof(c->errmsg), "%s: %zu elements overflow the address space", what,
              count);
    return GY_EINVAL;
  }
  if (count > 0 && (!a || !b)) {
    gy_errmsg(c->errmsg, sizeof(c->errmsg), "%s: NULL buffer for %zu elements", what, count);
    return GY_EINVAL;
  }
  return 0;
}

/* buf[i] /= n over count elements (the AVG of an all-reduce whose SUM is done). */
static void divide(void *buf, size_t count, gy_dtype_t dt, int n) {
  if (n == 1) return;
  switch (dt) {
  case GY_DT_F32: {
    float *p = buf;
    for (size_t i = 0; i < count; i++)
      p[i] /= (float)n;
    break;
  }
  case GY_DT_F64: {
    double *p = buf;
    for (size_t i = 0; i < count; i++)
      p[i] /= (double)n;
    break;
  }
  case GY_DT_I32: {
    int32_t *p = buf;
    for (size_t i = 0; i < count; i++)
      p[i] /= n;
    break;
  }
  case GY_DT_BF16: /* refused by the argument checks: no host bf16 arithmetic */
    break;
  }
}

/* ---- the trivial communicator: a group of one, host memory ---- */

typedef struct {
  atomic_int aborted;
} self_t;

/* As gy__comm_check_args, for the host communicators (self, gloo): bf16 has no host
 * arithmetic here, so it is refused. */
static int host_args(gy_comm_t *c, const char *what, const void *a, const void *b, size_t count,
                     gy_dtype_t dt, int op, size_t nelem) {
  if (dt == GY_DT_BF16) {
    gy_errmsg(c->errmsg, sizeof(c->errmsg), "%s: bf16 is for device buffers (the nccl backend)",
              what);
    return GY_EINVAL;
  }
  return gy__comm_check_args(c, what, a, b, count, dt, op, nelem);
}

static int self_check(gy_comm_t *c, const char *what) {
  self_t *s = c->impl;
  if (atomic_load(&s->aborted)) {
    gy_errmsg(c->errmsg, sizeof(c->errmsg), "%s: communicator was aborted", what);
    return GY_ECOMM;
  }
  return 0;
}

static int self_allreduce(gy_comm_t *c, void *buf, size_t count, gy_dtype_t dt, gy_redop_t op) {
  int rc = host_args(c, "allreduce", buf, buf, count, dt, (int)op, 1);
  return rc ? rc : self_check(c, "allreduce"); /* one rank: the result is the input */
}

static int self_allgather(gy_comm_t *c, const void *in, void *out, size_t count, gy_dtype_t dt) {
  int rc = host_args(c, "allgather", in, out, count, dt, GY_OP_SUM, 1);
  if (!rc) rc = self_check(c, "allgather");
  if (!rc && count && in != out) memmove(out, in, count * gy_dtype_size(dt));
  return rc;
}

static int self_reduce_scatter(gy_comm_t *c, const void *in, void *out, size_t count, gy_dtype_t dt,
                               gy_redop_t op) {
  int rc = host_args(c, "reduce_scatter", in, out, count, dt, (int)op, 1);
  if (!rc) rc = self_check(c, "reduce_scatter");
  if (!rc && count && in != out) memmove(out, in, count * gy_dtype_size(dt));
  return rc;
}

static int self_broadcast(gy_comm_t *c, void *buf, size_t count, gy_dtype_t dt, int root) {
  int rc = host_args(c, "broadcast", buf, buf, count, dt, GY_OP_SUM, 1);
  if (!rc && root != 0) {
    gy_errmsg(c->errmsg, sizeof(c->errmsg), "broadcast: root %d outside the group of 1", root);
    rc = GY_EINVAL;
  }
  return rc ? rc : self_check(c, "broadcast");
}

static int self_barrier(gy_comm_t *c) {
  return self_check(c, "barrier");
}

static void self_abort(gy_comm_t *c) {
  self_t *s = c->impl;
  atomic_store(&s->aborted, 1);
}

static void self_destroy(gy_comm_t *c) {
  free(c->impl);
  free(c);
}

static const gy_comm_ops_t self_ops = {
    .name = "gloo",
    .allreduce = self_allreduce,
    .allgather = self_allgather,
    .reduce_scatter = self_reduce_scatter,
    .broadcast = self_broadcast,
    .barrier = self_barrier,
    .abort = self_abort,
    .destroy = self_destroy,
};

static int self_create(gy_comm_t **out) {
  gy_comm_t *c = calloc(1, sizeof(*c));
  self_t *s = calloc(1, sizeof(*s));
  if (!c || !s) {
    free(c);
    free(s);
    return GY_ENOMEM;
  }
  atomic_init(&s->aborted, 0);
  c->ops = &self_ops;
  c->rank = 0;
  c->size = 1;
  c->impl = s;
  *out = c;
  return 0;
}

/* ---- the Gloo communicator: host memory, TCP ---- */

typedef struct {
  gy_gloo_t *g;
  void *scratch; /* reduce_scatter's copy of `in`; grows, owned */
  size_t scratch_bytes;
} gloo_t;

static int gloo_allreduce(gy_comm_t *c, void *buf, size_t count, gy_dtype_t dt, gy_redop_t op) {
  gloo_t *gl = c->impl;
  int rc = host_args(c, "allreduce", buf, buf, count, dt, (int)op, 1);
  if (rc || count == 0) return rc;
  gy_redop_t wire = op == GY_OP_MAX ? GY_OP_MAX : GY_OP_SUM;
  rc = gy__gloo_allreduce(gl->g, buf, count, dt, wire, c->errmsg, sizeof(c->errmsg));
  if (!rc && op == GY_OP_AVG) divide(buf, count, dt, c->size);
  return rc;
}

static int gloo_allgather(gy_comm_t *c, const void *in, void *out, size_t count, gy_dtype_t dt) {
  gloo_t *gl = c->impl;
  int rc = host_args(c, "allgather", in, out, count, dt, GY_OP_SUM, (size_t)c->size);
  if (rc || count == 0) return rc;
  return gy__gloo_allgather(gl->g, in, out, count, dt, c->errmsg, sizeof(c->errmsg));
}

static int gloo_reduce_scatter(gy_comm_t *c, const void *in, void *out, size_t count, gy_dtype_t dt,
                               gy_redop_t op) {
  gloo_t *gl = c->impl;
  int rc = host_args(c, "reduce_scatter", in, out, count, dt, (int)op, (size_t)c->size);
  if (rc || count == 0) return rc;
  size_t block = count * gy_dtype_size(dt), total = block * (size_t)c->size;
  if (gl->scratch_bytes < total) {
    void *p = realloc(gl->scratch, total);
    if (!p) {
      gy_errmsg(c->errmsg, sizeof(c->errmsg), "reduce_scatter: out of memory (%zu bytes)", total);
      return GY_ENOMEM;
    }
    gl->scratch = p;
    gl->scratch_bytes = total;
  }
  memcpy(gl->scratch, in, total);
  gy_redop_t wire = op == GY_OP_MAX ? GY_OP_MAX : GY_OP_SUM;
  rc = gy__gloo_allreduce(gl->g, gl->scratch, count * (size_t)c->size, dt, wire, c->errmsg,
                          sizeof(c->errmsg));
  if (rc) return rc;
  memcpy(out, (char *)gl->scratch + block * (size_t)c->rank, block);
  if (op == GY_OP_AVG) divide(out, count, dt, c->size);
  return 0;
}

static int gloo_broadcast(gy_comm_t *c, void *buf, size_t count, gy_dtype_t dt, int root) {
  gloo_t *gl = c->impl;
  int rc = host_args(c, "broadcast", buf, buf, count, dt, GY_OP_SUM, 1);
  if (!rc && (root < 0 || root >= c->size)) {
    gy_errmsg(c->errmsg, sizeof(c->errmsg), "broadcast: root %d outside the group of %d", root,
              c->size);
    rc = GY_EINVAL;
  }
  if (rc || count == 0) return rc;
  return gy__gloo_broadcast(gl->g, buf, count, dt, root, c->errmsg, sizeof(c->errmsg));
}

static int gloo_barrier(gy_comm_t *c) {
  gloo_t *gl = c->impl;
  return gy__gloo_barrier(gl->g, c->errmsg, sizeof(c->errmsg));
}

static void gloo_abort(gy_comm_t *c) {
  gloo_t *gl = c->impl;
  gy__gloo_abort(gl->g);
}

static void gloo_destroy(gy_comm_t *c) {
  gloo_t *gl = c->impl;
  gy__gloo_destroy(gl->g);
  free(gl->scratch);
  free(gl);
  free(c);
}

static const gy_comm_ops_t gloo_ops = {
    .name = "gloo",
    .allreduce = gloo_allreduce,
    .allgather = gloo_allgather,
    .reduce_scatter = gloo_reduce_scatter,
    .broadcast = gloo_broadcast,
    .barrier = gloo_barrier,
    .abort = gloo_abort,
    .destroy = gloo_destroy,
};

static int gloo_create(gy_comm_t **out, gy_store_t *store, const char *prefix, int rank, int size,
                       int timeout_ms, char *errmsg, size_t errlen) {
  const char *host = getenv("GY_COMM_HOST");
  if (!host || !host[0]) host = "127.0.0.1";
  gy_comm_t *c = calloc(1, sizeof(*c));
  gloo_t *gl = calloc(1, sizeof(*gl));
  int rc;
  if (!c || !gl) {
    gy_errmsg(errmsg, errlen, "out of memory");
    rc = GY_ENOMEM;
    goto err;
  }
  rc = gy__gloo_create(&gl->g, store, prefix, host, rank, size, timeout_ms, errmsg, errlen);
  if (rc) goto err;
  c->ops = &gloo_ops;
  c->rank = rank;
  c->size = size;
  c->impl = gl;
  *out = c;
  return 0;

err:
  free(gl);
  free(c);
  return rc;
}

/* ---- groups ---- */

/* Ignores SIGPIPE unless the program chose a handler itself (trap 1 of Gloo). */
static void ignore_sigpipe(void) {
  struct sigaction old;
  if (sigaction(SIGPIPE, NULL, &old) != 0) return;
  if ((old.sa_flags & SA_SIGINFO) || old.sa_handler != SIG_DFL) return;
  struct sigaction sa;
  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = SIG_IGN;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGPIPE, &sa, NULL);
}

/* Builds one group's communicator under "<prefix>/<name>". */
static int group_create(gy_comm_t **out, const gy_comm_opts_t *o, const char *name, int rank,
                        int size, int timeout_ms, char *errmsg, size_t errlen) {
  char prefix[256], why[512] = "";
  int n = snprintf(prefix, sizeof(prefix), "%s/%s", o->prefix, name);
  if (n < 0 || (size_t)n >= sizeof(prefix)) {
    gy_errmsg(errmsg, errlen, "comm: prefix '%s' too long", o->prefix);
    return GY_EINVAL;
  }
  int rc;
  if (strcmp(o->backend, "gloo") == 0) {
    rc = size == 1 ? self_create(out)
                   : gloo_create(out, o->store, prefix, rank, size, timeout_ms, why, sizeof(why));
    if (rc == GY_ENOMEM && !why[0]) snprintf(why, sizeof(why), "out of memory");
  } else {
#ifdef GY_HAVE_NCCL
    rc = gy__comm_nccl_create(out, o->store, prefix, rank, size, timeout_ms, o->device, why,
                              sizeof(why));
#else
    snprintf(why, sizeof(why), "built without NCCL");
    rc = GY_ENOTSUP;
#endif
  }
  if (rc) {
    gy_errmsg(errmsg, errlen, "comm: building group %s (rank %d of %d, %s): %s", prefix, rank, size,
              o->backend, why);
    return rc;
  }
  if (!(*out = gy__comm_timed_wrap(*out))) { /* every call timed (comm_timed.c) */
    gy_errmsg(errmsg, errlen, "comm: building group %s: out of memory", prefix);
    return GY_ENOMEM;
  }
  return 0;
}

/* On error g is left empty (nothing to destroy) and errmsg says why. */
int gy_comm_groups_create(gy_comm_groups_t *g, const gy_comm_opts_t *opts, char *errmsg,
                          size_t errlen) {
  if (!g) return GY_EINVAL;
  memset(g, 0, sizeof(*g));
  if (!opts) {
    gy_errmsg(errmsg, errlen, "comm: no options");
    return GY_EINVAL;
  }
  gy_comm_opts_t o = *opts;
  if (!o.backend) o.backend = "gloo";
  if (o.timeout_ms <= 0) o.timeout_ms = DEFAULT_TIMEOUT_MS;
  if (strcmp(o.backend, "gloo") != 0 && strcmp(o.backend, "nccl") != 0) {
    gy_errmsg(errmsg, errlen, "comm: unknown backend '%s' (expected gloo or nccl)", o.backend);
    return GY_EINVAL;
  }
  if (!gy_comm_backend_available(o.backend)) {
    gy_errmsg(errmsg, errlen,
              "comm: backend '%s' was not compiled in (no NCCL found at build "
              "time)",
              o.backend);
    return GY_ENOTSUP;
  }
  if (o.world < 1 || o.tp < 1 || o.world % o.tp != 0) {
    gy_errmsg(errmsg, errlen,
              "comm: world %d and tp %d: need world >= 1, tp >= 1, world %% tp == "
              "0",
              o.world, o.tp);
    return GY_EINVAL;
  }
  if (o.rank < 0 || o.rank >= o.world) {
    gy_errmsg(errmsg, errlen, "comm: rank %d outside the world of %d", o.rank, o.world);
    return GY_EINVAL;
  }
  if (!o.store || !o.prefix || !o.prefix[0]) {
    gy_errmsg(errmsg, errlen, "comm: a rendezvous store and a non-empty prefix are needed");
    return GY_EINVAL;
  }
  if (strcmp(o.backend, "gloo") == 0) ignore_sigpipe();

  int rc, r = o.rank, tp = o.tp;
  char name[32];
  rc = group_create(&g->world, &o, "world", r, o.world, o.timeout_ms, errmsg, errlen);
  if (rc) goto err;
  snprintf(name, sizeof(name), "tp%d", r / tp);
  rc = group_create(&g->tp, &o, name, r % tp, tp, o.timeout_ms, errmsg, errlen);
  if (rc) goto err;
  snprintf(name, sizeof(name), "dp%d", r % tp);
  rc = group_create(&g->dp, &o, name, r / tp, o.world / tp, o.timeout_ms, errmsg, errlen);
  if (rc) goto err;
  g->rank = r;
  g->world_size = o.world;
  g->tp_rank = r % tp;
  g->tp_size = tp;
  g->dp_rank = r / tp;
  g->dp_size = o.world / tp;
  return 0;

err:
  gy_comm_groups_destroy(g);
  return rc;
}

void gy_comm_groups_destroy(gy_comm_groups_t *g) {
  if (!g) return;
  if (g->dp) g->dp->ops->destroy(g->dp);
  if (g->tp) g->tp->ops->destroy(g->tp);
  if (g->world) g->world->ops->destroy(g->world);
  memset(g, 0, sizeof(*g));
}
