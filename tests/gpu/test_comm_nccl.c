/* test_comm_nccl: the NCCL backend of comm.h on real GPUs. One rank per visible GPU (at most
 * 4; NCCL refuses two ranks of one communicator on one GPU), forked by the test; buffers are
 * device memory. Checks every collective and dtype against values computed on the host, the
 * group layout (tp=2 when the rank count is even), abort(), and with two GPUs or more a rank
 * SIGKILLed mid-collective (the others must fail with GY_ECOMM by the timeout at the latest).
 *
 * Without a GPU (cudaGetDeviceCount fails or returns 0), or in a build without NCCL, it prints
 * "skipped: no GPU" and exits 77, which ctest reports as skipped (SKIP_RETURN_CODE). CUDA is only
 * touched in child processes: a parent that initialised CUDA could not fork ranks that use it. */
#include <stdio.h>

#ifndef GY_HAVE_NCCL
int main(void) {
  printf("skipped: no GPU (this build has no NCCL backend)\n");
  return 77;
}
#else

#include <cuda_runtime.h>
#include <ftw.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/err.h"
#include "tests/test.h"
#include "worker/comm.h"

#define MAX_RANKS 4

typedef struct {
  atomic_int ready;
  int rc;
  double t_fail;
  char msg[512];
} slot_t;

static char g_root[64];
static slot_t *g_slots;
static int g_world;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Visible GPUs, counted in a child process so that this one never initialises CUDA. */
static int count_gpus(void) {
  fflush(NULL);
  pid_t p = fork();
  if (p == 0) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) n = 0;
    _exit(n > 100 ? 100 : n);
  }
  int st = 0;
  if (p < 0 || waitpid(p, &st, 0) != p || !WIFEXITED(st)) return 0;
  return WEXITSTATUS(st);
}

static int connect_rank(const char *name, int rank, int tp, int timeout_ms, gy_store_t **st,
                        gy_comm_groups_t *g) {
  char spec[256], err[512] = "";
  snprintf(spec, sizeof(spec), "file:%s/%s", g_root, name);
  if (gy_store_open(st, spec, err, sizeof(err)) != 0) return -1;
  gy_comm_opts_t o = {.backend = "nccl",
                      .rank = rank,
                      .world = g_world,
                      .tp = tp,
                      .store = *st,
                      .prefix = name,
                      .timeout_ms = timeout_ms,
                      .device = rank};
  if (gy_comm_groups_create(g, &o, err, sizeof(err)) != 0) {
    fprintf(stderr, "rank %d: %s\n", rank, err);
    gy_store_destroy(*st);
    return -1;
  }
  return 0;
}

static void fill(void *h, gy_dtype_t dt, size_t n, double (*f)(size_t, int), int a) {
  for (size_t i = 0; i < n; i++) {
    double v = f(i, a);
    if (dt == GY_DT_F32) ((float *)h)[i] = (float)v;
    if (dt == GY_DT_F64) ((double *)h)[i] = v;
    if (dt == GY_DT_I32) ((int32_t *)h)[i] = (int32_t)v;
  }
}

static double el(const void *h, gy_dtype_t dt, size_t i) {
  if (dt == GY_DT_F32) return ((const float *)h)[i];
  if (dt == GY_DT_F64) return ((const double *)h)[i];
  return ((const int32_t *)h)[i];
}

static double val(size_t i, int r) {
  return (double)(r + 1) * (double)(i % 13 + 1);
}

static double expect(int n, size_t i, gy_redop_t op, gy_dtype_t dt) {
  double base = (double)(i % 13 + 1), sum = base * n * (n + 1) / 2.0;
  if (op == GY_OP_SUM) return sum;
  if (op == GY_OP_MAX) return base * n;
  return dt == GY_DT_I32 ? (double)((int32_t)sum / n) : sum / n;
}

/* Every collective and dtype on c with device buffers. */
static void check_collectives(gy_comm_t *c, const char *group) {
  int n = c->size, r = c->rank;
  static const gy_dtype_t dts[] = {GY_DT_F32, GY_DT_F64, GY_DT_I32};
  static const gy_redop_t ops[] = {GY_OP_SUM, GY_OP_AVG, GY_OP_MAX};
  size_t count = 1000003;
  for (int di = 0; di < 3; di++) {
    gy_dtype_t dt = dts[di];
    size_t es = gy_dtype_size(dt), bytes = count * es * (size_t)n;
    void *h = malloc(bytes), *d_in = NULL, *d_out = NULL;
    REQUIRE(h && cudaMalloc(&d_in, bytes) == cudaSuccess &&
            cudaMalloc(&d_out, bytes) == cudaSuccess);
    for (int oi = 0; oi < 3; oi++) {
      gy_redop_t op = ops[oi];
      fill(h, dt, count, val, r);
      cudaMemcpy(d_in, h, count * es, cudaMemcpyHostToDevice);
      CHECK_MSG(c->ops->allreduce(c, d_in, count, dt, op) == GY_OK, "%s: %s", group, c->errmsg);
      cudaMemcpy(h, d_in, count * es, cudaMemcpyDeviceToHost);
      int bad = 0;
      for (size_t i = 0; i < count; i++)
        bad += el(h, dt, i) != expect(n, i, op, dt);
      CHECK_MSG(bad == 0, "%s allreduce dt %d op %d: %d wrong", group, dt, op, bad);

      fill(h, dt, count * (size_t)n, val, r);
      cudaMemcpy(d_in, h, bytes, cudaMemcpyHostToDevice);
      CHECK_MSG(c->ops->reduce_scatter(c, d_in, d_out, count, dt, op) == GY_OK, "%s: %s", group,
                c->errmsg);
      cudaMemcpy(h, d_out, count * es, cudaMemcpyDeviceToHost);
      bad = 0;
      for (size_t j = 0; j < count; j++)
        bad += el(h, dt, j) != expect(n, (size_t)r * count + j, op, dt);
      CHECK_MSG(bad == 0, "%s reduce_scatter dt %d op %d: %d wrong", group, dt, op, bad);
    }
    fill(h, dt, count, val, r);
    cudaMemcpy(d_in, h, count * es, cudaMemcpyHostToDevice);
    CHECK_MSG(c->ops->allgather(c, d_in, d_out, count, dt) == GY_OK, "%s: %s", group, c->errmsg);
    cudaMemcpy(h, d_out, bytes, cudaMemcpyDeviceToHost);
    int bad = 0;
    for (size_t k = 0; k < count * (size_t)n; k++)
      bad += el(h, dt, k) != val(k % count, (int)(k / count));
    CHECK_MSG(bad == 0, "%s allgather dt %d: %d wrong", group, dt, bad);

    for (int root = 0; root < n; root++) {
      fill(h, dt, count, val, r == root ? 100 + root : 0);
      cudaMemcpy(d_in, h, count * es, cudaMemcpyHostToDevice);
      CHECK_MSG(c->ops->broadcast(c, d_in, count, dt, root) == GY_OK, "%s: %s", group, c->errmsg);
      cudaMemcpy(h, d_in, count * es, cudaMemcpyDeviceToHost);
      bad = 0;
      for (size_t i = 0; i < count; i++)
        bad += el(h, dt, i) != val(i, 100 + root);
      CHECK_MSG(bad == 0, "%s broadcast root %d dt %d: %d wrong", group, root, dt, bad);
    }
    free(h);
    cudaFree(d_in);
    cudaFree(d_out);
  }
  CHECK_MSG(c->ops->barrier(c) == GY_OK, "%s barrier: %s", group, c->errmsg);
  CHECK_EQ_INT(c->ops->broadcast(c, g_slots, 1, GY_DT_F32, n), GY_EINVAL);
}

static int rank_main(int rank) {
  gy_store_t *st = NULL;
  gy_comm_groups_t g;
  int tp = (g_world % 2 == 0) ? 2 : 1;
  if (connect_rank("nccl", rank, tp, 20000, &st, &g) != 0) return 100;
  CHECK(strcmp(g.world->ops->name, "nccl") == 0);
  CHECK_EQ_INT(g.tp_rank, rank % tp);
  CHECK_EQ_INT(g.dp_rank, rank / tp);
  check_collectives(g.world, "world");
  check_collectives(g.tp, "tp");
  check_collectives(g.dp, "dp");

  /* Bandwidth figure for the record: 64 MiB float all-reduce on the world group. */
  size_t count = (size_t)16 << 20;
  float *d = NULL;
  if (cudaMalloc((void **)&d, count * sizeof(float)) == cudaSuccess) {
    cudaMemset(d, 0, count * sizeof(float));
    g.world->ops->allreduce(g.world, d, count, GY_DT_F32, GY_OP_SUM);
    double t0 = now_s();
    for (int i = 0; i < 10; i++)
      g.world->ops->allreduce(g.world, d, count, GY_DT_F32, GY_OP_SUM);
    double t = (now_s() - t0) / 10;
    if (rank == 0) {
      double algbw = count * 4.0 / t / 1e9;
      printf("nccl world=%d: 64 MiB allreduce %.3f ms, algbw %.1f GB/s, busbw %.1f GB/s\n", g_world,
             t * 1e3, algbw, algbw * 2.0 * (g_world - 1) / g_world);
    }
    cudaFree(d);
  }

  /* abort(): every later call fails at once. */
  g.dp->ops->abort(g.dp);
  CHECK_EQ_INT(g.dp->ops->barrier(g.dp), GY_ECOMM);
  gy_comm_groups_destroy(&g);
  gy_store_destroy(st);
  return gy_test_failures;
}

/* Kill scenario (two GPUs or more): all-reduces in a loop until one fails. */
static int rank_fault(int rank) {
  gy_store_t *st = NULL;
  gy_comm_groups_t g;
  if (connect_rank("nccl-kill", rank, 1, 5000, &st, &g) != 0) return 100;
  size_t count = (size_t)16 << 20;
  float *d = NULL;
  if (cudaMalloc((void **)&d, count * sizeof(float)) != cudaSuccess) return 101;
  cudaMemset(d, 0, count * sizeof(float));
  if (g.world->ops->barrier(g.world) != 0) return 102;
  atomic_store(&g_slots[rank].ready, 1);
  double start = now_s();
  int rc = 0;
  while (now_s() - start < 20.0 && !rc)
    rc = g.world->ops->allreduce(g.world, d, count, GY_DT_F32, GY_OP_SUM);
  g_slots[rank].rc = rc;
  g_slots[rank].t_fail = now_s();
  snprintf(g_slots[rank].msg, sizeof(g_slots[rank].msg), "%s", g.world->errmsg);
  gy_comm_groups_destroy(&g);
  gy_store_destroy(st);
  return 0;
}

static void run(int (*fn)(int), int victim) {
  pid_t pids[MAX_RANKS];
  memset(g_slots, 0, sizeof(slot_t) * MAX_RANKS);
  fflush(NULL);
  for (int r = 0; r < g_world; r++) {
    pids[r] = fork();
    REQUIRE(pids[r] >= 0);
    if (pids[r] == 0) _exit(fn(r));
  }
  double start = now_s(), t_kill = 0;
  int status[MAX_RANKS], left = g_world;
  for (int r = 0; r < g_world; r++)
    status[r] = -1;
  while (left > 0) {
    if (victim >= 0 && t_kill == 0) {
      int ready = 0;
      for (int r = 0; r < g_world; r++)
        ready += atomic_load(&g_slots[r].ready);
      if (ready == g_world) {
        usleep(200000);
        t_kill = now_s();
        kill(pids[victim], SIGKILL);
      }
    }
    for (int r = 0; r < g_world; r++) {
      int st;
      if (status[r] == -1 && waitpid(pids[r], &st, WNOHANG) == pids[r]) {
        status[r] = st;
        left--;
      }
    }
    if (left > 0 && now_s() - start > 120.0) {
      CHECK_MSG(0, "ranks hung: killing them");
      for (int r = 0; r < g_world; r++)
        if (status[r] == -1) kill(pids[r], SIGKILL);
      start = 1e18;
    }
    usleep(5000);
  }
  for (int r = 0; r < g_world; r++) {
    if (r == victim) continue;
    CHECK_MSG(WIFEXITED(status[r]) && WEXITSTATUS(status[r]) == 0, "rank %d status 0x%x", r,
              status[r]);
    if (victim >= 0) {
      double dt = g_slots[r].t_fail - t_kill;
      CHECK_MSG(g_slots[r].rc == GY_ECOMM && dt < 5.0 + 3.0, "rank %d: %s after %.2f s: %s", r,
                gy_err_name(g_slots[r].rc), dt, g_slots[r].msg);
      printf("kill: rank %d failed %.3f s after the kill: %s\n", r, dt, g_slots[r].msg);
    }
  }
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st;
  (void)flag;
  (void)ftw;
  return remove(path);
}

int main(void) {
  int ngpu = count_gpus();
  if (ngpu <= 0) {
    printf("skipped: no GPU\n");
    return 77;
  }
  g_world = ngpu < MAX_RANKS ? ngpu : MAX_RANKS;
  snprintf(g_root, sizeof(g_root), "/tmp/gy-nccl-XXXXXX");
  REQUIRE(mkdtemp(g_root) != NULL);
  g_slots = mmap(NULL, sizeof(slot_t) * MAX_RANKS, PROT_READ | PROT_WRITE,
                 MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  REQUIRE(g_slots != MAP_FAILED);
  printf("%d GPU(s): %d rank(s)\n", ngpu, g_world);
  run(rank_main, -1);
  if (g_world >= 2) run(rank_fault, 1);
  nftw(g_root, rm_one, 16, FTW_DEPTH | FTW_PHYS);
  GY_TEST_END();
}
#endif
