/* The training engine on the GPU (run.device cuda): the same config trained 5 steps on the CPU
 * and on the GPU, both in fp32, gives the same losses (within 1e-4 relative), and a checkpoint
 * written by the GPU trainer restores into a CPU trainer that then takes the same next step
 * (loss within 1e-4 relative); evaluation agrees with the CPU (held-out loss within 1e-4,
 * cloze accuracy within 0.02); an asynchronous checkpoint taken while steps go on restores to
 * the same next step; an in-memory snapshot replays the same step after a restore. Without a GPU
 * (or in a build without CUDA kernels) it checks that creating a cuda trainer fails cleanly with a
 * reason, prints "skipped: no GPU" and exits 77. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/err.h"
#include "tests/test.h"
#include "config/run_config.h"
#include "worker/train.h"
#ifdef GY_HAVE_CUDA_KERNELS
#include "kernels/gpt_cuda.h"
#endif

#define STEPS 5

static char dir[256];

/* A trainer for the shipped corpora on device ("cpu" or "cuda") in fp32; NULL (with the reason
 * in err) when it cannot be created. */
static gy_trainer_t *make(const char *device, char *err, size_t errlen) {
  const char *data = getenv("GY_DATA_DIR");
  REQUIRE(data != NULL);
  char path[512];
  snprintf(path, sizeof(path), "%s/%s.yaml", dir, device);
  FILE *f = fopen(path, "w");
  REQUIRE(f != NULL);
  fprintf(f,
          "run: {name: t, seed: 5, steps: 100, threads: 2, device: %s, dtype: fp32}\n"
          "model: {layers: 2, channels: 32, heads: 2, context: 32, vocab: 256}\n"
          "train: {batch: 4, top_k: 4}\n"
          "optimizer: {lr: 1.0e-3}\n"
          "data:\n  channels:\n"
          "    - {name: en, train: ['%s/en/train_000.bin'], val: '%s/en/val.bin'}\n"
          "    - {name: code, train: ['%s/code/train_000.bin'], val: '%s/code/val.bin'}\n"
          "eval: {every: 0, sequences: 8}\n"
          "checkpoint: {dir: %s/ckpt_%s, every: 0, keep_in_memory: 2, keep: 10}\n",
          device, data, data, data, data, dir, device);
  fclose(f);
  gy_run_config_t cfg;
  int rc = gy_run_config_load(&cfg, path, err, errlen);
  CHECK_MSG(rc == 0, "%s", err);
  REQUIRE(rc == 0);
  gy_trainer_t *t = NULL;
  rc = gy_trainer_create(&t, &cfg, err, errlen);
  gy_run_config_free(&cfg);
  return rc ? NULL : t;
}

static double step(gy_trainer_t *t) {
  gy_step_report_t r;
  int rc = gy_trainer_step(t, &r);
  CHECK_MSG(rc == 0, "step: %s", gy_trainer_last_error(t));
  REQUIRE(rc == 0);
  return r.loss;
}

static int close_rel(double a, double b, double tol) {
  return fabs(a - b) <= tol * fmax(fabs(a), fabs(b));
}

int main(void) {
  snprintf(dir, sizeof(dir), "/tmp/gyro-train-cuda.XXXXXX");
  REQUIRE(mkdtemp(dir) != NULL);
  char err[1024] = "";
  int gpus = 0;
#ifdef GY_HAVE_CUDA_KERNELS
  gpus = gy_cuda_device_count();
#endif
  if (gpus < 1) {
    /* a cuda trainer is refused with a reason, not a crash */
    gy_trainer_t *t = make("cuda", err, sizeof(err));
    CHECK(t == NULL);
    CHECK_MSG(err[0] != 0, "no reason given");
#ifndef GY_HAVE_CUDA_KERNELS
    CHECK_MSG(strstr(err, "built without CUDA") != NULL, "message: %s", err);
#endif
    printf("cuda trainer refused: %s\n", err);
    gy_trainer_destroy(t);
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0);
    if (gy_test_failures) return 1;
    printf("skipped: no GPU\n");
    return 77;
  }

  gy_trainer_t *cpu = make("cpu", err, sizeof(err));
  CHECK_MSG(cpu != NULL, "%s", err);
  REQUIRE(cpu != NULL);
  gy_trainer_t *gpu = make("cuda", err, sizeof(err));
  CHECK_MSG(gpu != NULL, "%s", err);
  REQUIRE(gpu != NULL);
  for (int i = 0; i < STEPS; i++) {
    double a = step(cpu), b = step(gpu);
    printf("step %d: cpu %.6f cuda %.6f\n", i, a, b);
    CHECK_MSG(close_rel(a, b, 1e-4), "step %d: cpu %.7f cuda %.7f", i, a, b);
  }
  /* the GPU trainer's checkpoint into a fresh CPU trainer */
  CHECK_MSG(gy_trainer_checkpoint(gpu, err, sizeof(err)) == 0, "%s", err);
  CHECK_MSG(gy_trainer_flush(gpu, err, sizeof(err)) == 0, "%s", err);
  char path[4096];
  gy_trainer_ckpt_path(gpu, STEPS, path, sizeof(path));
  gy_trainer_t *back = make("cpu", err, sizeof(err));
  REQUIRE(back != NULL);
  int rc = gy_trainer_restore_file(back, path, err, sizeof(err));
  CHECK_MSG(rc == 0, "%s", err);
  CHECK_EQ_INT(gy_trainer_step_count(back), STEPS);
  double g = step(gpu), c = step(back);
  printf("after restore: cuda %.6f cpu %.6f\n", g, c);
  CHECK_MSG(close_rel(g, c, 1e-4), "next step: cuda %.7f, restored cpu %.7f", g, c);
  /* evaluation runs through the GPU forward pass; gpu and back hold the same weights (step 6),
   * so held-out losses and cloze accuracy (the GPU's top-1 predictions) agree */
  gy_eval_report_t ev, ec;
  CHECK_MSG(gy_trainer_eval(gpu, &ev) == 0, "%s", gy_trainer_last_error(gpu));
  CHECK(gy_trainer_eval(back, &ec) == 0);
  CHECK_EQ_INT(ev.nchannels, 2);
  for (int ch = 0; ch < ev.nchannels; ch++) {
    printf("val loss %d: cuda %.6f cpu %.6f; cloze cuda %.4f cpu %.4f (%llu items)\n", ch,
           ev.val_loss[ch], ec.val_loss[ch], ev.cloze[ch], ec.cloze[ch],
           (unsigned long long)ev.cloze_items[ch]);
    CHECK(isfinite(ev.val_loss[ch]) && ev.val_loss[ch] > 0);
    CHECK_MSG(close_rel(ev.val_loss[ch], ec.val_loss[ch], 1e-4), "val loss %d", ch);
    CHECK_EQ_INT(ev.tokens[ch], ec.tokens[ch]);
    CHECK_EQ_INT(ev.cloze_items[ch], ec.cloze_items[ch]);
    CHECK_MSG(ev.cloze_items[ch] > 0 && fabs(ev.cloze[ch] - ec.cloze[ch]) <= 0.02,
              "cloze %d: cuda %.4f cpu %.4f", ch, ev.cloze[ch], ec.cloze[ch]);
  }
  /* an asynchronous checkpoint taken while the steps go on: it holds the state of its step (the
   * next update waited for its copies), so a CPU trainer restored from it takes the same step */
  int64_t at = gy_trainer_step_count(gpu);
  CHECK_MSG(gy_trainer_checkpoint(gpu, err, sizeof(err)) == 0, "%s", err);
  double next = step(gpu); /* settles the snapshot once its passes are queued */
  step(gpu);
  CHECK_MSG(gy_trainer_flush(gpu, err, sizeof(err)) == 0, "%s", err);
  gy_trainer_ckpt_path(gpu, at, path, sizeof(path));
  gy_trainer_t *again = make("cpu", err, sizeof(err));
  REQUIRE(again != NULL);
  rc = gy_trainer_restore_file(again, path, err, sizeof(err));
  CHECK_MSG(rc == 0, "%s", err);
  CHECK_EQ_INT(gy_trainer_step_count(again), at);
  double c2 = step(again);
  printf("async checkpoint of step %lld: cuda next %.6f, restored cpu %.6f\n", (long long)at, next,
         c2);
  CHECK_MSG(close_rel(next, c2, 1e-4), "after the async checkpoint: cuda %.7f cpu %.7f", next, c2);
  /* a snapshot in the ring answers a rollback at once */
  CHECK_MSG(gy_trainer_checkpoint(gpu, err, sizeof(err)) == 0, "%s", err);
  int64_t at2 = gy_trainer_step_count(gpu);
  CHECK(gy_trainer_in_memory(gpu, at2));
  double before = step(gpu);
  CHECK_MSG(gy_trainer_restore(gpu, at2, err, sizeof(err)) == 0, "%s", err);
  double replay = step(gpu);
  CHECK_MSG(close_rel(before, replay, 1e-6), "replay after restore: %.7f vs %.7f", before, replay);
  gy_trainer_destroy(again);
  gy_trainer_destroy(back);
  gy_trainer_destroy(gpu);
  gy_trainer_destroy(cpu);
  char cmd[300];
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
  CHECK(system(cmd) == 0);
  GY_TEST_END();
}
