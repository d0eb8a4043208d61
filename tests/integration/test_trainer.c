/* The training engine on the shipped corpora: restore from the in-memory ring and from disk
 * gives bitwise-identical continuations; corrupt, truncated and foreign checkpoints are refused
 * with the file and blob named and leave the trainer untouched; knobs change between steps and
 * bad knobs are refused; skips apply from the next step. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/err.h"
#include "tests/test.h"
#include "config/run_config.h"
#include "worker/train.h"

static char dir[256];

static void write_config(const char *path, int seed) {
  const char *data = getenv("GY_DATA_DIR");
  REQUIRE(data != NULL);
  FILE *f = fopen(path, "w");
  REQUIRE(f != NULL);
  fprintf(f,
          "run: {name: t, seed: %d, steps: 100, threads: 2}\n"
          "model: {layers: 2, channels: 32, heads: 2, context: 32, vocab: 256}\n"
          "train: {batch: 4, top_k: 4}\n"
          "optimizer: {lr: 1.0e-3}\n"
          "data:\n  channels:\n"
          "    - {name: zh, train: ['%s/zh/train_000.bin'], val: '%s/zh/val.bin'}\n"
          "    - {name: en, train: ['%s/en/train_000.bin'], val: '%s/en/val.bin'}\n"
          "    - {name: code, train: ['%s/code/train_000.bin'], val: '%s/code/val.bin'}\n"
          "eval: {every: 0, sequences: 8}\n"
          "checkpoint: {dir: %s/ckpt, every: 0, keep_in_memory: 2, keep: 10}\n",
          seed, data, data, data, data, data, data, dir);
  fclose(f);
}

static gy_trainer_t *make(int seed) {
  char path[512], err[1024] = "";
  snprintf(path, sizeof(path), "%s/run%d.yaml", dir, seed);
  write_config(path, seed);
  gy_run_config_t cfg;
  int rc = gy_run_config_load(&cfg, path, err, sizeof(err));
  CHECK_MSG(rc == 0, "%s", err);
  REQUIRE(rc == 0);
  gy_trainer_t *t;
  rc = gy_trainer_create(&t, &cfg, err, sizeof(err));
  CHECK_MSG(rc == 0, "%s", err);
  REQUIRE(rc == 0);
  gy_run_config_free(&cfg);
  return t;
}

static void steps(gy_trainer_t *t, int n, double *losses) {
  for (int i = 0; i < n; i++) {
    gy_step_report_t r;
    REQUIRE(gy_trainer_step(t, &r) == 0);
    losses[i] = r.loss;
  }
}

static void flip_byte(const char *path, long off) {
  FILE *f = fopen(path, "r+b");
  REQUIRE(f != NULL);
  fseek(f, off, SEEK_SET);
  int c = fgetc(f);
  fseek(f, off, SEEK_SET);
  fputc(c ^ 0x10, f);
  fclose(f);
}

int main(void) {
  snprintf(dir, sizeof(dir), "/tmp/gyro-trainer.XXXXXX");
  REQUIRE(mkdtemp(dir) != NULL);
  char err[1024], path[4096], copy[4096];
  double a[3], b[3], c[3];

  gy_trainer_t *t = make(11);
  steps(t, 5, (double[5]){0});
  REQUIRE(gy_trainer_checkpoint(t, err, sizeof(err)) == 0);
  steps(t, 3, a);
  /* from the in-memory ring */
  CHECK(gy_trainer_restore(t, 5, err, sizeof(err)) == 0);
  CHECK_EQ_INT(gy_trainer_step_count(t), 5);
  steps(t, 3, b);
  CHECK(memcmp(a, b, sizeof(a)) == 0);
  /* from disk */
  REQUIRE(gy_trainer_flush(t, err, sizeof(err)) == 0);
  gy_trainer_ckpt_path(t, 5, path, sizeof(path));
  CHECK(gy_trainer_restore_file(t, path, err, sizeof(err)) == 0);
  steps(t, 3, c);
  CHECK(memcmp(a, c, sizeof(a)) == 0);

  /* refusals leave the trainer untouched */
  gy_gpt_t *m = gy_trainer_model(t);
  size_t np = gy_gpt_num_params(m);
  float *before = malloc(np * sizeof(float));
  memcpy(before, gy_gpt_params(m), np * sizeof(float));
  int64_t step_before = gy_trainer_step_count(t);

  snprintf(copy, sizeof(copy), "%s/flipped.gyck", dir);
  char cmd[8300];
  snprintf(cmd, sizeof(cmd), "cp '%s' '%s'", path, copy);
  REQUIRE(system(cmd) == 0);
  flip_byte(copy, 4096 + 100); /* inside the first tensor blob */
  int rc = gy_trainer_restore_file(t, copy, err, sizeof(err));
  CHECK_EQ_INT(rc, GY_ECORRUPT);
  CHECK_MSG(strstr(err, copy) && strstr(err, "blob '"), "message: %s", err);
  printf("bit flip refused: %s\n", err);

  REQUIRE(truncate(copy, 5000) == 0);
  rc = gy_trainer_restore_file(t, copy, err, sizeof(err));
  CHECK_EQ_INT(rc, GY_ECORRUPT);
  CHECK_MSG(strstr(err, "truncated") != NULL, "message: %s", err);
  printf("truncation refused: %s\n", err);

  gy_trainer_t *other = make(12); /* another seed: another configuration */
  rc = gy_trainer_restore_file(other, path, err, sizeof(err));
  CHECK_EQ_INT(rc, GY_EMISMATCH);
  CHECK_MSG(strstr(err, "different configuration") != NULL, "message: %s", err);
  printf("foreign checkpoint refused: %s\n", err);
  gy_trainer_destroy(other);

  CHECK_EQ_INT(gy_trainer_restore(t, 77, err, sizeof(err)), GY_ENOENT);
  CHECK(memcmp(before, gy_gpt_params(m), np * sizeof(float)) == 0);
  CHECK_EQ_INT(gy_trainer_step_count(t), step_before);
  free(before);

  /* knobs */
  gy_knobs_t k, k2;
  gy_trainer_knobs(t, &k);
  k2 = k;
  k2.eps = 0;
  CHECK_EQ_INT(gy_trainer_set_knobs(t, &k2, err, sizeof(err)), GY_ERANGE);
  k2 = k;
  k2.shallow_layers = 3;
  CHECK_EQ_INT(gy_trainer_set_knobs(t, &k2, err, sizeof(err)), GY_ERANGE);
  gy_trainer_knobs(t, &k2);
  CHECK(memcmp(&k, &k2, sizeof(k)) == 0);
  gy_step_report_t r1, r2;
  k2.lr_scale = 0.5f;
  k2.eps = 1e-6f;
  k2.z_loss = 1e-4f;
  CHECK(gy_trainer_set_knobs(t, &k2, err, sizeof(err)) == 0);
  int64_t s = gy_trainer_step_count(t);
  REQUIRE(gy_trainer_step(t, &r1) == 0);
  CHECK_NEAR(r1.opt.lr, 0.5 * gy_sched_lr(&k.sched, s), 1e-9);
  /* the knobs travel with checkpoints */
  REQUIRE(gy_trainer_checkpoint(t, err, sizeof(err)) == 0);
  CHECK(gy_trainer_set_knobs(t, &k, err, sizeof(err)) == 0);
  CHECK(gy_trainer_restore(t, s + 1, err, sizeof(err)) == 0);
  gy_trainer_knobs(t, &k2);
  CHECK(k2.lr_scale == 0.5f && k2.eps == 1e-6f && k2.z_loss == 1e-4f);

  /* skips: the next step's ids are [4n, 4n+4) with no skips; skip them and they vanish */
  uint64_t first = (uint64_t)gy_trainer_step_count(t) * 4;
  CHECK(gy_trainer_skip(t, first, first + 4) == 0);
  CHECK_EQ_INT(gy_trainer_skip(t, 9, 9), GY_EINVAL);
  REQUIRE(gy_trainer_step(t, &r2) == 0);
  for (int i = 0; i < r2.ntop; i++)
    CHECK(r2.top[i].id >= first + 4 && r2.top[i].id < first + 8);

  /* evaluation */
  gy_eval_report_t ev;
  REQUIRE(gy_trainer_eval(t, &ev) == 0);
  CHECK_EQ_INT(ev.nchannels, 3);
  for (int ch = 0; ch < 3; ch++)
    CHECK(isfinite(ev.val_loss[ch]) && ev.ppl[ch] > 1);

  gy_trainer_destroy(t);
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
  CHECK(system(cmd) == 0);
  GY_TEST_END();
}
