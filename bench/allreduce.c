/*
 * bench/allreduce: all-reduce bandwidth of gyro's collectives, in the style of nccl-tests'
 * all_reduce_perf: one driver over the backend's table of function pointers (gy_comm_ops_t),
 * ranks forked on this machine, sizes doubling from --min to --max.
 *
 *   allreduce [--backend gloo|nccl] [--ranks N] [--min 4K] [--max 64M] [--iters 20]
 *             [--warmup 5] [--timeout-ms 60000]
 *
 * Each rank sums float32 buffers in place. Before each size is timed, one all-reduce of known
 * values is checked on every rank. Each measured iteration is one barrier then one timed
 * all-reduce; an iteration's time is the slowest rank's (a MAX all-reduce of the times after the
 * loop), and the table reports the median over iterations:
 *   algbw = size / time
 *   busbw = algbw * 2(n-1)/n    (a ring all-reduce moves 2(n-1)/n of the buffer in and out of
 *                                each rank, so busbw compares with the link's bandwidth)
 * GB/s are 10^9 bytes per second, as in nccl-tests. With nccl the buffers are device memory and
 * rank r uses GPU r (one GPU per rank: NCCL refuses two ranks of a communicator on one GPU).
 * Ranks meet through a file store in a temporary folder under /tmp, removed at the end.
 */
#include <errno.h>
#include <ftw.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifdef GY_HAVE_NCCL
#include <cuda_runtime.h>
#endif

#include "common/err.h"
#include "worker/comm.h"

#define MAX_ITERS 1000

typedef struct {
  const char *backend;
  int ranks, iters, warmup, timeout_ms;
  size_t min_bytes, max_bytes;
  char dir[64];
} args_t;

/* Where buffers live: host memory for gloo, device memory for nccl. */
typedef struct {
  int (*alloc)(void **p, size_t bytes);
  void (*release)(void *p);
  int (*upload)(void *dst, const void *src, size_t bytes);
  int (*download)(void *dst, const void *src, size_t bytes);
} mem_ops_t;

static int host_alloc(void **p, size_t bytes) {
  *p = malloc(bytes);
  return *p ? 0 : -1;
}
static void host_release(void *p) {
  free(p);
}
static int host_copy(void *dst, const void *src, size_t bytes) {
  memcpy(dst, src, bytes);
  return 0;
}
static const mem_ops_t host_mem = {host_alloc, host_release, host_copy, host_copy};

#ifdef GY_HAVE_NCCL
static int dev_alloc(void **p, size_t bytes) {
  return cudaMalloc(p, bytes) == cudaSuccess ? 0 : -1;
}
static void dev_release(void *p) {
  cudaFree(p);
}
static int dev_upload(void *dst, const void *src, size_t bytes) {
  return cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice) == cudaSuccess ? 0 : -1;
}
static int dev_download(void *dst, const void *src, size_t bytes) {
  return cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost) == cudaSuccess ? 0 : -1;
}
static const mem_ops_t dev_mem = {dev_alloc, dev_release, dev_upload, dev_download};
#endif

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_d(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* "4K", "64M", "1G", "4096" -> bytes; 0 when malformed. */
static size_t parse_size(const char *s) {
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || end == s) return 0;
  if (*end == 'K' || *end == 'k')
    v <<= 10, end++;
  else if (*end == 'M' || *end == 'm')
    v <<= 20, end++;
  else if (*end == 'G' || *end == 'g')
    v <<= 30, end++;
  return *end ? 0 : (size_t)v;
}

static void fmt_size(size_t b, char *out, size_t len) {
  if (b >= (1u << 20) && b % (1u << 20) == 0)
    snprintf(out, len, "%zuM", b >> 20);
  else if (b >= 1024 && b % 1024 == 0)
    snprintf(out, len, "%zuK", b >> 10);
  else
    snprintf(out, len, "%zu", b);
}

/* One rank: returns the exit status (0 = every check passed). */
static int rank_main(const args_t *a, int rank) {
  char spec[128], err[512] = "";
  gy_store_t *st = NULL;
  gy_comm_groups_t g;
  const mem_ops_t *mem = &host_mem;
  int device = 0;
#ifdef GY_HAVE_NCCL
  if (strcmp(a->backend, "nccl") == 0) {
    int ndev = 0;
    if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
      fprintf(stderr, "allreduce: rank %d: no GPU visible\n", rank);
      return 2;
    }
    device = rank % ndev;
    if (cudaSetDevice(device) != cudaSuccess) return 2;
    mem = &dev_mem;
  }
#endif
  snprintf(spec, sizeof(spec), "file:%s", a->dir);
  if (gy_store_open(&st, spec, err, sizeof(err)) != 0) {
    fprintf(stderr, "allreduce: rank %d: %s\n", rank, err);
    return 2;
  }
  gy_comm_opts_t o = {.backend = a->backend,
                      .rank = rank,
                      .world = a->ranks,
                      .tp = 1,
                      .store = st,
                      .prefix = "bench",
                      .timeout_ms = a->timeout_ms,
                      .device = device};
  if (gy_comm_groups_create(&g, &o, err, sizeof(err)) != 0) {
    fprintf(stderr, "allreduce: rank %d: %s\n", rank, err);
    gy_store_destroy(st);
    return 2;
  }
  gy_comm_t *c = g.world;
  const gy_comm_ops_t *ops = c->ops; /* the one table every call goes through */
  int n = a->ranks, rc = 0;
  float *host = malloc(a->max_bytes);
  void *buf = NULL, *meta = NULL;
  size_t meta_bytes = sizeof(double) * ((size_t)a->iters + 1);
  double *times = malloc(sizeof(double) * (size_t)a->iters), *meta_h = malloc(meta_bytes);
  if (!host || !times || !meta_h || mem->alloc(&buf, a->max_bytes) != 0 ||
      mem->alloc(&meta, meta_bytes) != 0) {
    fprintf(stderr, "allreduce: rank %d: cannot allocate %zu bytes\n", rank, a->max_bytes);
    rc = 2;
    goto out;
  }
  if (rank == 0) {
    printf("# gyro bench/allreduce: backend %s, %d ranks, float32 sum in place, %d iterations "
           "(+%d warm-up) per size\n",
           ops->name, n, a->iters, a->warmup);
    printf("# time  = median over iterations of the slowest rank's time for one all-reduce "
           "(a barrier before each)\n");
    printf("# algbw = size / time;  busbw = algbw * 2(n-1)/n with n = %d (factor %.3f);  "
           "GB/s = 1e9 B/s\n",
           n, 2.0 * (n - 1) / n);
    printf("#\n# %10s %12s %12s %12s %12s %6s\n", "size", "count", "time(us)", "algbw(GB/s)",
           "busbw(GB/s)", "check");
    fflush(stdout);
  }
  for (size_t bytes = a->min_bytes; bytes <= a->max_bytes; bytes *= 2) {
    size_t count = bytes / sizeof(float);
    /* Check: rank r contributes r + 1 + (i % 7); the sum is n(n+1)/2 + n * (i % 7). */
    for (size_t i = 0; i < count; i++)
      host[i] = (float)(rank + 1 + (int)(i % 7));
    if (mem->upload(buf, host, bytes) != 0 ||
        ops->allreduce(c, buf, count, GY_DT_F32, GY_OP_SUM) != 0) {
      fprintf(stderr, "allreduce: rank %d: %s\n", rank, c->errmsg);
      rc = 1;
      goto out;
    }
    mem->download(host, buf, bytes);
    size_t wrong = 0;
    for (size_t i = 0; i < count; i++)
      wrong += host[i] != (float)(n * (n + 1) / 2 + n * (int)(i % 7));
    /* Timed: zeros, so repeated sums stay finite. */
    memset(host, 0, bytes);
    mem->upload(buf, host, bytes);
    for (int it = -a->warmup; it < a->iters; it++) {
      if (ops->barrier(c) != 0) {
        fprintf(stderr, "allreduce: rank %d: %s\n", rank, c->errmsg);
        rc = 1;
        goto out;
      }
      double t0 = now_s();
      if (ops->allreduce(c, buf, count, GY_DT_F32, GY_OP_SUM) != 0) {
        fprintf(stderr, "allreduce: rank %d: %s\n", rank, c->errmsg);
        rc = 1;
        goto out;
      }
      if (it >= 0) times[it] = now_s() - t0;
    }
    /* The slowest rank's time per iteration, and whether any rank saw a wrong value: one MAX
     * all-reduce of [times..., wrong] through the backend's own memory. */
    for (int it = 0; it < a->iters; it++)
      meta_h[it] = times[it];
    meta_h[a->iters] = (double)wrong;
    if (mem->upload(meta, meta_h, meta_bytes) != 0 ||
        ops->allreduce(c, meta, (size_t)a->iters + 1, GY_DT_F64, GY_OP_MAX) != 0 ||
        mem->download(meta_h, meta, meta_bytes) != 0) {
      fprintf(stderr, "allreduce: rank %d: %s\n", rank, c->errmsg);
      rc = 1;
      goto out;
    }
    for (int it = 0; it < a->iters; it++)
      times[it] = meta_h[it];
    double bad = meta_h[a->iters];
    if (rank == 0) {
      qsort(times, (size_t)a->iters, sizeof(double), cmp_d);
      double t = a->iters % 2 ? times[a->iters / 2]
                              : 0.5 * (times[a->iters / 2 - 1] + times[a->iters / 2]);
      double algbw = (double)bytes / t / 1e9, busbw = algbw * 2.0 * (n - 1) / n;
      char sz[32];
      fmt_size(bytes, sz, sizeof(sz));
      printf("  %10s %12zu %12.1f %12.3f %12.3f %6s\n", sz, count, t * 1e6, algbw, busbw,
             bad == 0 ? "ok" : "WRONG");
      fflush(stdout);
    }
    if (bad != 0) rc = 1;
    if (bytes > a->max_bytes / 2) break; /* the next size would pass max (or overflow) */
  }

out:
  if (buf) mem->release(buf);
  if (meta) mem->release(meta);
  free(host);
  free(times);
  free(meta_h);
  gy_comm_groups_destroy(&g);
  gy_store_destroy(st);
  return rc;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st;
  (void)flag;
  (void)ftw;
  return remove(path);
}

static void usage(void) {
  fprintf(stderr, "usage: allreduce [--backend gloo|nccl] [--ranks N] [--min 4K] [--max 64M] "
                  "[--iters 20] [--warmup 5] [--timeout-ms 60000]\n");
}

int main(int argc, char **argv) {
  args_t a = {.backend = "gloo",
              .ranks = 2,
              .iters = 20,
              .warmup = 5,
              .timeout_ms = 60000,
              .min_bytes = 4096,
              .max_bytes = 64u << 20};
  static const struct option opts[] = {{"backend", required_argument, 0, 'b'},
                                       {"ranks", required_argument, 0, 'n'},
                                       {"min", required_argument, 0, 'a'},
                                       {"max", required_argument, 0, 'z'},
                                       {"iters", required_argument, 0, 'i'},
                                       {"warmup", required_argument, 0, 'w'},
                                       {"timeout-ms", required_argument, 0, 't'},
                                       {"help", no_argument, 0, 'h'},
                                       {0, 0, 0, 0}};
  int ch;
  while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (ch) {
    case 'b':
      a.backend = optarg;
      break;
    case 'n':
      a.ranks = atoi(optarg);
      break;
    case 'a':
      a.min_bytes = parse_size(optarg);
      break;
    case 'z':
      a.max_bytes = parse_size(optarg);
      break;
    case 'i':
      a.iters = atoi(optarg);
      break;
    case 'w':
      a.warmup = atoi(optarg);
      break;
    case 't':
      a.timeout_ms = atoi(optarg);
      break;
    default:
      usage();
      return ch == 'h' ? 0 : 2;
    }
  }
  if (optind != argc || a.ranks < 1 || a.ranks > 64 || a.iters < 1 || a.iters > MAX_ITERS ||
      a.warmup < 0 || a.timeout_ms <= 0 || a.min_bytes < sizeof(float) ||
      a.max_bytes < a.min_bytes || a.min_bytes % sizeof(float) != 0) {
    fprintf(stderr,
            "allreduce: bad arguments (sizes are bytes with K/M/G, a multiple of 4; "
            "--ranks 1..64; --iters 1..%d)\n",
            MAX_ITERS);
    usage();
    return 2;
  }
  if (strcmp(a.backend, "gloo") != 0 && strcmp(a.backend, "nccl") != 0) {
    fprintf(stderr, "allreduce: unknown backend '%s' (gloo or nccl)\n", a.backend);
    return 2;
  }
  if (!gy_comm_backend_available(a.backend)) {
    fprintf(stderr, "allreduce: backend '%s' is not compiled into this build\n", a.backend);
    return 2;
  }
  snprintf(a.dir, sizeof(a.dir), "/tmp/gy-bench-allreduce-XXXXXX");
  if (!mkdtemp(a.dir)) {
    perror("allreduce: mkdtemp");
    return 2;
  }
  pid_t pids[64];
  fflush(NULL);
  for (int r = 0; r < a.ranks; r++) {
    pids[r] = fork();
    if (pids[r] < 0) {
      perror("allreduce: fork");
      for (int k = 0; k < r; k++)
        kill(pids[k], SIGKILL);
      return 2;
    }
    if (pids[r] == 0) _exit(rank_main(&a, r));
  }
  int failed = 0;
  for (int r = 0; r < a.ranks; r++) {
    int st = 0;
    waitpid(pids[r], &st, 0);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) failed++;
  }
  nftw(a.dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
  if (failed) fprintf(stderr, "allreduce: %d rank(s) failed\n", failed);
  return failed ? 1 : 0;
}
