/* Per-sample loss mask of the backward pass (gy_gpt_backward_masked): the guard that judges a
 * sample bad after the forward pass must be able to drop it from the gradient entirely.
 *
 * Samples of a GPT batch are independent, so the gradient of a masked batch must equal the
 * gradient of a batch made of the kept samples alone (the mean runs over the kept tokens only);
 * summation order differs between the two batch sizes, so they agree to float tolerance
 * (|d| <= 1e-5 * max|ref| + 1e-4 * |ref| per tensor), not bitwise. With every sample masked all
 * gradients are exactly zero while every grads_ready call and tensor-parallel sum still happens;
 * a NULL mask and an all-ones mask give bitwise the unmasked gradients. */
#include <math.h>
#include <omp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "kernels/gpt.h"
#include "tests/test.h"
#include "tests/unit/tp_fixture.h"

enum { B = 4, T = 8, MAXP = 2 };

static gy_gpt_config_t small_config(int qk) {
  return (gy_gpt_config_t){.max_seq_len = T,
                           .vocab_size = 40,
                           .padded_vocab_size = 64,
                           .num_layers = 2,
                           .num_heads = 2,
                           .channels = 16,
                           .qk_norm = qk};
}

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static double urand(void) {
  rng = rng * 6364136223846793005ull + 1442695040888963407ull;
  return (double)(rng >> 11) / 9007199254740992.0;
}

/* A model with weights perturbed away from the GPT-2 init (biases and norms not at 0 and 1, so
 * every path carries gradient), and a random batch of B sequences. */
static gy_gpt_t *make_model(const gy_gpt_config_t *cfg, int max_batch, int *x, int *y) {
  gy_gpt_t *m;
  REQUIRE(gy_gpt_create(&m, cfg, max_batch) == 0);
  gy_gpt_init_params(m, 17);
  float *p = gy_gpt_params(m);
  for (size_t i = 0; i < gy_gpt_num_params(m); i++)
    p[i] += (float)(0.1 * (urand() - 0.5));
  for (int i = 0; i < B * T; i++) {
    x[i] = (int)(urand() * cfg->vocab_size);
    y[i] = (int)(urand() * cfg->vocab_size);
  }
  return m;
}

/* Copies the kept sequences of x/y into xs/ys; returns their count. */
static int kept_rows(const uint8_t *keep, const int *x, const int *y, int *xs, int *ys) {
  int k = 0;
  for (int b = 0; b < B; b++) {
    if (!keep[b]) continue;
    memcpy(xs + k * T, x + b * T, sizeof(int) * T);
    memcpy(ys + k * T, y + b * T, sizeof(int) * T);
    k++;
  }
  return k;
}

/* got against ref, tensor by tensor, under this file's rule. A reference tensor that is all zero
 * would make its comparison vacuous, so that fails too. */
static void cmp_grads(const char *what, const gy_gpt_t *layout, const float *got,
                      const float *ref) {
  for (int t = 0; t < GY_T_COUNT; t++) {
    size_t off = gy_gpt_tensor_offset(layout, t), n = gy_gpt_tensor_size(layout, t);
    if (!n) continue;
    double maxref = 0, worst = 0;
    size_t bad = 0;
    for (size_t i = 0; i < n; i++)
      if (fabs(ref[off + i]) > maxref) maxref = fabs(ref[off + i]);
    for (size_t i = 0; i < n; i++) {
      double e = fabs((double)got[off + i] - ref[off + i]);
      if (!(e <= 1e-5 * maxref + 1e-4 * fabs(ref[off + i]))) bad++;
      if (e > worst || isnan(e)) worst = e;
    }
    CHECK_MSG(maxref > 0, "%s tensor %s: reference gradient is all zero", what,
              gy_gpt_tensor_name(t));
    CHECK_MSG(bad == 0, "%s tensor %s: %zu of %zu off (max err %.3g, max|ref| %.3g)", what,
              gy_gpt_tensor_name(t), bad, n, worst, maxref);
  }
}

/* The masked gradient equals the gradient of the batch of kept samples only, with and without
 * QK-norm and z-loss, for masks that drop the first, the last and inner samples. */
static void test_mask_equals_kept_batch(void) {
  static const uint8_t masks[3][B] = {{1, 0, 1, 1}, {0, 1, 1, 0}, {0, 0, 1, 0}};
  for (int qk = 0; qk < 2; qk++)
    for (int zi = 0; zi < 2; zi++)
      for (int k = 0; k < 3; k++) {
        float z = zi ? 1e-2f : 0.0f;
        gy_gpt_config_t cfg = small_config(qk);
        int x[B * T], y[B * T], xs[B * T], ys[B * T];
        gy_gpt_t *m = make_model(&cfg, B, x, y), *sub;
        REQUIRE(gy_gpt_create(&sub, &cfg, B) == 0);
        size_t np = gy_gpt_num_params(m);
        memcpy(gy_gpt_params(sub), gy_gpt_params(m), np * sizeof(float));

        float loss, sub_loss;
        REQUIRE(gy_gpt_forward(m, x, y, B, T, z, &loss) == 0);
        float *tl = malloc(sizeof(float) * B * T);
        REQUIRE(tl);
        memcpy(tl, gy_gpt_token_losses(m), sizeof(float) * B * T);
        REQUIRE(gy_gpt_backward_masked(m, masks[k], 0) == 0);
        /* the mask touches only the gradient: the forward's token losses are unchanged */
        CHECK(memcmp(tl, gy_gpt_token_losses(m), sizeof(float) * B * T) == 0);

        int bk = kept_rows(masks[k], x, y, xs, ys);
        REQUIRE(gy_gpt_forward(sub, xs, ys, bk, T, z, &sub_loss) == 0);
        REQUIRE(gy_gpt_backward(sub) == 0);
        char what[64];
        snprintf(what, sizeof(what), "qk=%d z=%g mask %d", qk, z, k);
        cmp_grads(what, m, gy_gpt_grads(m), gy_gpt_grads(sub));
        free(tl);
        gy_gpt_destroy(sub);
        gy_gpt_destroy(m);
      }
}

static int ready_layers[16], ready_count;
static void on_ready(void *ctx, int layer) {
  (void)ctx;
  if (ready_count < 16) ready_layers[ready_count] = layer;
  ready_count++;
}

/* No sample kept: every gradient is exactly zero (over a buffer an earlier backward filled), and
 * grads_ready still reports every layer, L-1 down to 0, then -1. */
static void test_mask_all_masked_zero(void) {
  for (int qk = 0; qk < 2; qk++) {
    gy_gpt_config_t cfg = small_config(qk);
    int x[B * T], y[B * T];
    gy_gpt_t *m = make_model(&cfg, B, x, y);
    gy_gpt_set_grads_ready(m, on_ready, NULL);
    float loss;
    REQUIRE(gy_gpt_forward(m, x, y, B, T, 1e-2f, &loss) == 0);
    REQUIRE(gy_gpt_backward(m) == 0);
    REQUIRE(gy_gpt_forward(m, x, y, B, T, 1e-2f, &loss) == 0);
    const uint8_t none[B] = {0, 0, 0, 0};
    ready_count = 0;
    REQUIRE(gy_gpt_backward_masked(m, none, 0) == 0);
    const float *g = gy_gpt_grads(m);
    size_t nonzero = 0;
    for (size_t i = 0; i < gy_gpt_num_params(m); i++)
      nonzero += g[i] != 0.0f;
    CHECK_MSG(nonzero == 0, "qk=%d: %zu gradient entries are not zero", qk, nonzero);
    CHECK_EQ_INT(ready_count, cfg.num_layers + 1);
    for (int i = 0; i < cfg.num_layers + 1 && i < ready_count; i++)
      CHECK_EQ_INT(ready_layers[i], i < cfg.num_layers ? cfg.num_layers - 1 - i : -1);
    /* one backward per forward, masked or not */
    CHECK_EQ_INT(gy_gpt_backward_masked(m, none, 0), GY_EINVAL);
    gy_gpt_destroy(m);
  }
}

/* keep == NULL and an all-ones mask are the unmasked pass, bit for bit. */
static void test_mask_null_and_ones_bitwise(void) {
  gy_gpt_config_t cfg = small_config(1);
  int x[B * T], y[B * T];
  gy_gpt_t *m = make_model(&cfg, B, x, y);
  size_t np = gy_gpt_num_params(m);
  float *ref = malloc(np * sizeof(float));
  REQUIRE(ref);
  float loss;
  REQUIRE(gy_gpt_forward(m, x, y, B, T, 1e-2f, &loss) == 0);
  REQUIRE(gy_gpt_backward(m) == 0);
  memcpy(ref, gy_gpt_grads(m), np * sizeof(float));
  REQUIRE(gy_gpt_forward(m, x, y, B, T, 1e-2f, &loss) == 0);
  REQUIRE(gy_gpt_backward_masked(m, NULL, 0) == 0);
  CHECK(memcmp(ref, gy_gpt_grads(m), np * sizeof(float)) == 0);
  const uint8_t all[B] = {1, 1, 1, 1};
  REQUIRE(gy_gpt_forward(m, x, y, B, T, 1e-2f, &loss) == 0);
  REQUIRE(gy_gpt_backward_masked(m, all, 0) == 0);
  CHECK(memcmp(ref, gy_gpt_grads(m), np * sizeof(float)) == 0);
  /* any non-zero byte means kept */
  const uint8_t all7[B] = {7, 1, 255, 1};
  REQUIRE(gy_gpt_forward(m, x, y, B, T, 1e-2f, &loss) == 0);
  REQUIRE(gy_gpt_backward_masked(m, all7, 0) == 0);
  CHECK(memcmp(ref, gy_gpt_grads(m), np * sizeof(float)) == 0);
  free(ref);
  gy_gpt_destroy(m);
}

/* ---- tensor parallelism: two shards, one thread each, summed in process (as test_tp.c) ---- */


typedef struct {
  group_t *g;
  int rank, calls, rc;
  gy_gpt_t *m;
  const int *x, *y;
  const uint8_t *keep;
} shard_t;

static int sum_cb(void *ctx, float *buf, size_t n) {
  shard_t *s = ctx;
  s->calls++;
  return tp_group_sum(s->g, s->rank, buf, n);
}

static void *run_shard(void *arg) {
  shard_t *s = arg;
  omp_set_num_threads(1);
  float loss;
  s->rc = gy_gpt_forward(s->m, s->x, s->y, B, T, 1e-2f, &loss);
  if (!s->rc) s->rc = gy_gpt_backward_masked(s->m, s->keep, 0);
  return NULL;
}

/* Shards with a mask against the full model with the same mask: each shard's gradients are its
 * slice of the full gradients, and with no sample kept they are zero after the same number of
 * sums as an unmasked pass. */
static void test_mask_tensor_parallel(void) {
  static const uint8_t masks[2][B] = {{0, 1, 0, 1}, {0, 0, 0, 0}};
  for (int qk = 0; qk < 2; qk++)
    for (int k = 0; k < 2; k++) {
      gy_gpt_config_t cfg = small_config(qk);
      int x[B * T], y[B * T];
      gy_gpt_t *full = make_model(&cfg, B, x, y);
      float loss;
      REQUIRE(gy_gpt_forward(full, x, y, B, T, 1e-2f, &loss) == 0);
      REQUIRE(gy_gpt_backward_masked(full, masks[k], 0) == 0);

      group_t *g = calloc(1, sizeof(*g));
      REQUIRE(g);
      g->P = MAXP;
      pthread_barrier_init(&g->bar, NULL, MAXP);
      shard_t sh[MAXP];
      pthread_t th[MAXP];
      for (int r = 0; r < MAXP; r++) {
        gy_gpt_config_t c = cfg;
        c.tp_size = MAXP;
        c.tp_rank = r;
        gy_gpt_t *m;
        REQUIRE(gy_gpt_create(&m, &c, B) == 0);
        gy_gpt_shard_from_full(m, gy_gpt_params(full));
        sh[r] = (shard_t){.g = g, .rank = r, .m = m, .x = x, .y = y, .keep = masks[k]};
        gy_gpt_set_tp_allreduce(m, sum_cb, &sh[r]);
      }
      for (int r = 0; r < MAXP; r++)
        pthread_create(&th[r], NULL, run_shard, &sh[r]);
      for (int r = 0; r < MAXP; r++)
        pthread_join(th[r], NULL);
      for (int r = 0; r < MAXP; r++) {
        CHECK_EQ_INT(sh[r].rc, 0);
        /* 2 forward + 2 backward sums per block, + 2 for the QK-norm weights */
        CHECK_EQ_INT(sh[r].calls, cfg.num_layers * (4 + (qk ? 2 : 0)));
        gy_gpt_config_t c = cfg;
        c.tp_size = MAXP;
        c.tp_rank = r;
        gy_gpt_t *ref;
        REQUIRE(gy_gpt_create(&ref, &c, 1) == 0);
        gy_gpt_shard_from_full(ref, gy_gpt_grads(full));
        const float *want = gy_gpt_params(ref), *got = gy_gpt_grads(sh[r].m);
        char what[64];
        snprintf(what, sizeof(what), "tp qk=%d rank %d", qk, r);
        if (k == 0) {
          cmp_grads(what, ref, got, want);
        } else {
          size_t nonzero = 0;
          for (size_t i = 0; i < gy_gpt_num_params(ref); i++)
            nonzero += got[i] != 0.0f;
          CHECK_MSG(nonzero == 0, "%s: %zu gradient entries are not zero", what, nonzero);
        }
        gy_gpt_destroy(ref);
        gy_gpt_destroy(sh[r].m);
      }
      pthread_barrier_destroy(&g->bar);
      free(g);
      gy_gpt_destroy(full);
    }
}

int main(void) {
  RUN(test_mask_equals_kept_batch);
  RUN(test_mask_all_masked_zero);
  RUN(test_mask_null_and_ones_bitwise);
  RUN(test_mask_tensor_parallel);
  GY_TEST_END();
}
