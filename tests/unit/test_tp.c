/* Tensor parallelism in the model: P shards (one thread each, summing partial results through
 * an in-process all-reduce — a test double for the collectives) give the same loss as the full
 * model, and each shard's gradients equal its slice of the full model's gradients, with and
 * without QK-norm, for P = 2 and 4. */
#include <math.h>
#include <omp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/gpt.h"
#include "tests/test.h"
#include "tests/unit/tp_fixture.h"

#define MAXP TP_MAXP

typedef struct {
  group_t *g;
  int rank;
  gy_gpt_t *m;
  const int *x, *y;
  float loss;
  int rc;
} shard_t;

static int sum_cb(void *ctx, float *buf, size_t n) {
  shard_t *s = ctx;
  return tp_group_sum(s->g, s->rank, buf, n);
}

static void *run_shard(void *arg) {
  shard_t *s = arg;
  omp_set_num_threads(1);
  s->rc = gy_gpt_forward(s->m, s->x, s->y, 2, 16, 1e-3f, &s->loss);
  if (!s->rc) s->rc = gy_gpt_backward(s->m);
  return NULL;
}

static void check(int P, int qk) {
  gy_gpt_config_t cfg = {.max_seq_len = 16,
                         .vocab_size = 50,
                         .padded_vocab_size = 64,
                         .num_layers = 2,
                         .num_heads = 4,
                         .channels = 32,
                         .qk_norm = qk};
  gy_gpt_t *full;
  REQUIRE(gy_gpt_create(&full, &cfg, 2) == 0);
  gy_gpt_init_params(full, 99);
  int x[32], y[32];
  for (int i = 0; i < 32; i++) {
    x[i] = (i * 13 + 1) % 50;
    y[i] = (i * 7 + 4) % 50;
  }
  float lfull;
  REQUIRE(gy_gpt_forward(full, x, y, 2, 16, 1e-3f, &lfull) == 0);
  REQUIRE(gy_gpt_backward(full) == 0);

  group_t *g = calloc(1, sizeof(*g));
  g->P = P;
  pthread_barrier_init(&g->bar, NULL, (unsigned)P);
  shard_t sh[MAXP];
  pthread_t th[MAXP];
  for (int r = 0; r < P; r++) {
    gy_gpt_config_t c = cfg;
    c.tp_size = P;
    c.tp_rank = r;
    REQUIRE(gy_gpt_create(&sh[r].m, &c, 2) == 0);
    gy_gpt_init_params(sh[r].m, 99); /* same full model, sliced */
    sh[r] = (shard_t){.g = g, .rank = r, .m = sh[r].m, .x = x, .y = y};
    gy_gpt_set_tp_allreduce(sh[r].m, sum_cb, &sh[r]);
  }
  for (int r = 0; r < P; r++)
    pthread_create(&th[r], NULL, run_shard, &sh[r]);
  for (int r = 0; r < P; r++)
    pthread_join(th[r], NULL);
  for (int r = 0; r < P; r++) {
    CHECK_EQ_INT(sh[r].rc, 0);
    CHECK_MSG(fabsf(sh[r].loss - lfull) <= 1e-5f * fabsf(lfull), "P=%d qk=%d rank %d: %.8g vs %.8g",
              P, qk, r, sh[r].loss, lfull);
    /* expected shard gradients: the full gradients sliced like the parameters */
    gy_gpt_config_t c = cfg;
    c.tp_size = P;
    c.tp_rank = r;
    gy_gpt_t *ref;
    REQUIRE(gy_gpt_create(&ref, &c, 1) == 0);
    gy_gpt_shard_from_full(ref, gy_gpt_grads(full));
    for (int t = 0; t < GY_T_COUNT; t++) {
      size_t off = gy_gpt_tensor_offset(ref, t), n = gy_gpt_tensor_size(ref, t);
      double maxerr = 0, maxref = 0;
      for (size_t i = 0; i < n; i++) {
        double e = fabs((double)gy_gpt_params(ref)[off + i] - gy_gpt_grads(sh[r].m)[off + i]);
        if (e > maxerr) maxerr = e;
        if (fabs(gy_gpt_params(ref)[off + i]) > maxref) maxref = fabs(gy_gpt_params(ref)[off + i]);
      }
      CHECK_MSG(maxerr <= 1e-6 + 1e-4 * maxref,
                "P=%d qk=%d rank %d tensor %s: max err %.3g (max %.3g)", P, qk, r,
                gy_gpt_tensor_name(t), maxerr, maxref);
    }
    /* the parameters themselves are slices of the full model's */
    gy_gpt_shard_from_full(ref, gy_gpt_params(full));
    CHECK(memcmp(gy_gpt_params(ref), gy_gpt_params(sh[r].m),
                 gy_gpt_num_params(ref) * sizeof(float)) == 0);
    CHECK_EQ_INT(gy_gpt_tensor_sharded(sh[r].m, GY_T_QKVW), 1);
    CHECK_EQ_INT(gy_gpt_tensor_sharded(sh[r].m, GY_T_LN1W), 0);
    gy_gpt_destroy(ref);
    gy_gpt_destroy(sh[r].m);
  }
  pthread_barrier_destroy(&g->bar);
  free(g);
  gy_gpt_destroy(full);
}

int main(void) {
  check(2, 0);
  check(2, 1);
  check(4, 0);
  check(4, 1);
  /* bad layouts are refused */
  gy_gpt_config_t bad = {.max_seq_len = 8,
                         .vocab_size = 50,
                         .padded_vocab_size = 64,
                         .num_layers = 1,
                         .num_heads = 4,
                         .channels = 32,
                         .tp_size = 3};
  char err[128];
  CHECK(gy_gpt_config_check(&bad, err, sizeof(err)) != 0);
  bad.tp_size = 2;
  bad.tp_rank = 2;
  CHECK(gy_gpt_config_check(&bad, err, sizeof(err)) != 0);
  GY_TEST_END();
}
