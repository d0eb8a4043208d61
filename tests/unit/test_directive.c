/* test_directive: the directive semantics of supervised mode (worker/directive.h) against a
 * scripted agent that records every acknowledgement and every evaluation, on a real small
 * trainer (two channels of real text: system headers as byte tokens):
 *  - gy_directive_merge_hparams: only the present fields change; wsd_decay_now turns the
 *    schedule into WSD decaying from the learning rate at `from` to the same floor over the
 *    steps left (none when from >= steps);
 *  - PAUSE and RESUME: acknowledged ok at the steps done, nothing changes;
 *  - CHECKPOINT: the file is on disk when acked, the ack carries its size; with evaluation on
 *    it is evaluated unless a periodic checkpoint of that step was; STOP: the same, then 1;
 *  - SET_HPARAMS: merged from the steps done; a refused one (out of range, too many shallow
 *    layers) is acked with why and leaves the knobs as they were, and the worker goes on;
 *  - ROLLBACK: refused with a clear why and nothing changed for to_step past the steps done, an
 *    empty skip range, bad hyper-parameters, a step with no checkpoint and a corrupt checkpoint
 *    file; applied: acked at to_step, the trainer at to_step, later checkpoint files gone, the
 *    skips in force kept and the new ones added, the hyper-parameters merged from to_step;
 *  - a checkpoint that cannot be written is acked with why and stops the worker;
 *  - QUARANTINE and SET_GUARD (test_quarantine_directives). */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/err.h"
#include "kernels/optim.h"
#include "tests/test.h"
#include "tests/unit/data_fixture.h"
#include "worker/directive.h"

#define STEPS 40
#define MAX_ACKS 64

/* ---------------------------------- the scripted agent ---------------------------------- */

typedef struct {
  uint64_t seq;
  int64_t step;
  int ok;
  char error[1024];
  uint64_t bytes;
} ack_t;

typedef struct {
  ack_t acks[MAX_ACKS];
  int nacks;
  int64_t eval_steps[MAX_ACKS];
  int nevals;
} script_t;

static int script_ack(void *ctx, uint64_t seq, int64_t step, int ok, const char *error,
                      uint64_t bytes) {
  script_t *s = ctx;
  REQUIRE(s->nacks < MAX_ACKS);
  ack_t *a = &s->acks[s->nacks++];
  a->seq = seq;
  a->step = step;
  a->ok = ok;
  snprintf(a->error, sizeof(a->error), "%s", error ? error : "");
  a->bytes = bytes;
  return 0;
}

static void script_eval(void *ctx, int64_t step, const gy_eval_report_t *ev) {
  script_t *s = ctx;
  REQUIRE(s->nevals < MAX_ACKS);
  CHECK_EQ_INT(ev->nchannels, 2);
  s->eval_steps[s->nevals++] = step;
}

/* The last ack; REQUIREs that there is one more than `before`. */
static const ack_t *last_ack(const script_t *s, int before) {
  REQUIRE(s->nacks == before + 1);
  return &s->acks[s->nacks - 1];
}

/* ---------------------------------------- set-up ---------------------------------------- */

static char *dir;

static const char *const texts[2][2] = {{"/usr/include/stdio.h", "/usr/include/stdlib.h"},
                                        {"/usr/include/string.h", "/usr/include/unistd.h"}};

/* A small trainer (2 layers, cosine schedule) whose checkpoints go to ckpt_dir; one snapshot
 * in memory, so an older checkpoint is restored from its file. */
static gy_trainer_t *make(gy_run_config_t *cfg, const char *ckpt_dir) {
  char yaml[2048], err[1024] = "";
  snprintf(yaml, sizeof(yaml),
           "run: {name: directive, seed: 5, steps: %d, threads: 1}\n"
           "model: {layers: 2, channels: 32, heads: 2, context: 16, vocab: 256}\n"
           "train: {batch: 2, top_k: 2}\n"
           "optimizer: {lr: 1.0e-3}\n"
           "schedule: {kind: cosine, warmup: 2, min_lr_frac: 0.1, total_steps: %d}\n"
           "data:\n  channels:\n"
           "    - {name: a, train: ['%s/c0_train.bin'], val: '%s/c0_val.bin'}\n"
           "    - {name: b, train: ['%s/c1_train.bin'], val: '%s/c1_val.bin'}\n"
           "eval: {every: 0, sequences: 2}\n"
           "checkpoint: {dir: '%s', every: 0, keep_in_memory: 1, keep: 10}\n",
           STEPS, STEPS, dir, dir, dir, dir, ckpt_dir);
  int rc = gy_run_config_parse(cfg, "test", yaml, strlen(yaml), dir, err, sizeof(err));
  CHECK_MSG(rc == 0, "%s", err);
  REQUIRE(rc == 0);
  gy_trainer_t *t = NULL;
  rc = gy_trainer_create(&t, cfg, err, sizeof(err));
  CHECK_MSG(rc == 0, "%s", err);
  REQUIRE(rc == 0);
  return t;
}

static void train(gy_trainer_t *t, int n) {
  for (int i = 0; i < n; i++) {
    gy_step_report_t r;
    REQUIRE(gy_trainer_step(t, &r) == 0);
  }
}

static gy_agent_directive_t directive(uint64_t seq, gy_directive_kind_t kind, int64_t at) {
  return (gy_agent_directive_t){.seq = seq, .kind = kind, .at_step = at, .reason = ""};
}

static int file_exists(const gy_trainer_t *t, int64_t step, uint64_t *size) {
  char path[4096];
  struct stat st;
  gy_trainer_ckpt_path(t, step, path, sizeof(path));
  if (stat(path, &st)) return 0;
  if (size) *size = (uint64_t)st.st_size;
  return 1;
}

static void flip_byte(const char *path, long off) {
  FILE *f = fopen(path, "r+b");
  REQUIRE(f != NULL);
  REQUIRE(fseek(f, off, SEEK_SET) == 0);
  int c = fgetc(f);
  REQUIRE(fseek(f, off, SEEK_SET) == 0);
  fputc(c ^ 0x10, f);
  fclose(f);
}

/* ---------------------------------------- tests ----------------------------------------- */

static void test_merge_hparams(void) {
  gy_knobs_t base;
  gy_knobs_default(&base);
  base.sched.kind = GY_SCHED_COSINE;
  base.sched.lr = 1e-3f;
  base.sched.warmup = 10;
  base.sched.total_steps = 1000;
  base.sched.min_lr_frac = 0.1f;

  /* nothing present: nothing changes */
  gy_knobs_t k = base;
  gy_agent_hparams_t h = {.lr_scale = 9, .grad_clip = 9, .wsd_decay_now = 1};
  gy_directive_merge_hparams(&k, &h, 100, 1000);
  CHECK(memcmp(&k, &base, sizeof(k)) == 0);

  /* every field present */
  h = (gy_agent_hparams_t){.present = GY_HP_LR_SCALE | GY_HP_GRAD_CLIP | GY_HP_EPS |
                                      GY_HP_WEIGHT_DECAY | GY_HP_SHALLOW_SCALE |
                                      GY_HP_SHALLOW_LAYERS | GY_HP_Z_LOSS | GY_HP_BETA1 |
                                      GY_HP_BETA2,
                           .lr_scale = 0.5f,
                           .grad_clip = 0.25f,
                           .eps = 1e-6f,
                           .weight_decay = 0.01f,
                           .shallow_scale = 0.3f,
                           .shallow_layers = 1,
                           .z_loss = 1e-4f,
                           .beta1 = 0.8f,
                           .beta2 = 0.9f};
  gy_directive_merge_hparams(&k, &h, 100, 1000);
  CHECK(k.lr_scale == 0.5f && k.grad_clip == 0.25f && k.eps == 1e-6f);
  CHECK(k.weight_decay == 0.01f && k.shallow_scale == 0.3f && k.shallow_layers == 1);
  CHECK(k.z_loss == 1e-4f && k.beta1 == 0.8f && k.beta2 == 0.9f);
  CHECK(memcmp(&k.sched, &base.sched, sizeof(k.sched)) == 0); /* no schedule change asked */

  /* one field: the others stay */
  k = base;
  h = (gy_agent_hparams_t){.present = GY_HP_GRAD_CLIP, .grad_clip = 2.0f, .lr_scale = 7};
  gy_directive_merge_hparams(&k, &h, 0, 1000);
  CHECK(k.grad_clip == 2.0f);
  CHECK(k.lr_scale == base.lr_scale);

  /* wsd_decay_now present but false: no schedule change */
  k = base;
  h = (gy_agent_hparams_t){.present = GY_HP_WSD_DECAY_NOW, .wsd_decay_now = 0};
  gy_directive_merge_hparams(&k, &h, 100, 1000);
  CHECK(memcmp(&k, &base, sizeof(k)) == 0);

  /* wsd_decay_now from step 400 of 1000: decays from the cosine's lr at 400 to the same floor
   * over the 600 steps left, starting at once (no warm-up) */
  k = base;
  h = (gy_agent_hparams_t){.present = GY_HP_WSD_DECAY_NOW, .wsd_decay_now = 1};
  double at400 = gy_sched_lr(&base.sched, 400), floor_lr = 1e-3 * 0.1;
  gy_directive_merge_hparams(&k, &h, 400, 1000);
  CHECK_EQ_INT(k.sched.kind, GY_SCHED_WSD);
  CHECK_EQ_INT(k.sched.warmup, 0);
  CHECK_EQ_INT(k.sched.decay_start, 400);
  CHECK_EQ_INT(k.sched.decay_steps, 600);
  CHECK_NEAR(k.sched.lr, at400, 1e-9);
  CHECK_NEAR(gy_sched_lr(&k.sched, 400), at400, 1e-9);            /* no jump */
  CHECK_NEAR(gy_sched_lr(&k.sched, 1000), floor_lr, 1e-8);        /* the same floor */
  CHECK(gy_sched_lr(&k.sched, 700) < gy_sched_lr(&k.sched, 500)); /* decaying */
  CHECK(k.lr_scale == base.lr_scale);

  /* from at or past the run's end: no steps left to decay over */
  k = base;
  gy_directive_merge_hparams(&k, &h, 1000, 1000);
  CHECK_EQ_INT(k.sched.decay_start, 1000);
  CHECK_EQ_INT(k.sched.decay_steps, 0);
  k = base;
  gy_directive_merge_hparams(&k, &h, 1200, 1000);
  CHECK_EQ_INT(k.sched.decay_steps, 0);

  /* already below the floor at `from` (past the cosine's end, at its floor): floor kept */
  k = base;
  k.sched.total_steps = 50;
  gy_directive_merge_hparams(&k, &h, 100, 1000);
  CHECK_NEAR(k.sched.min_lr_frac, 1.0, 1e-6);
  CHECK_NEAR(k.sched.lr, floor_lr, 1e-9);
}

static void test_trainer_directives(void) {
  script_t s = {0};
  gy_directive_agent_t ag = {.ctx = &s, .ack = script_ack, .eval = script_eval};
  char *ckpt = fx_path(dir, "ckpt");
  gy_run_config_t cfg;
  gy_trainer_t *t = make(&cfg, ckpt);
  gy_knobs_t k0, k;
  uint64_t seq = 1, size = 0;
  int n;

  /* PAUSE, RESUME at step 0: acked ok, nothing changes */
  gy_trainer_knobs(t, &k0);
  for (int kind = GY_DIRECTIVE_PAUSE; kind <= GY_DIRECTIVE_RESUME; kind++) {
    n = s.nacks;
    gy_agent_directive_t d = directive(seq++, (gy_directive_kind_t)kind, 0);
    CHECK_EQ_INT(gy_directive_apply(&ag, t, &d, STEPS, &cfg), 0);
    const ack_t *a = last_ack(&s, n);
    CHECK_EQ_INT(a->seq, d.seq);
    CHECK(a->ok && a->step == 0 && a->bytes == 0 && !a->error[0]);
  }
  gy_trainer_knobs(t, &k);
  CHECK(memcmp(&k, &k0, sizeof(k)) == 0);
  CHECK_EQ_INT(gy_trainer_step_count(t), 0);

  /* CHECKPOINT at 2: on disk when acked, with its size; evaluation off: no evaluation */
  train(t, 2);
  n = s.nacks;
  gy_agent_directive_t d = directive(seq++, GY_DIRECTIVE_CHECKPOINT, 2);
  CHECK_EQ_INT(gy_directive_apply(&ag, t, &d, STEPS, &cfg), 0);
  const ack_t *a = last_ack(&s, n);
  CHECK(a->ok && a->step == 2 && !a->error[0]);
  CHECK(file_exists(t, 2, &size));
  CHECK(size > 0 && a->bytes == size);
  CHECK_EQ_INT(s.nevals, 0);

  /* with evaluation on, a directive's checkpoint is evaluated too... */
  train(t, 2);
  cfg.eval_every = 100;
  d = directive(seq++, GY_DIRECTIVE_CHECKPOINT, 4);
  CHECK_EQ_INT(gy_directive_apply(&ag, t, &d, STEPS, &cfg), 0);
  CHECK(s.acks[s.nacks - 1].ok && s.acks[s.nacks - 1].step == 4);
  CHECK_EQ_INT(s.nevals, 1);
  CHECK_EQ_INT(s.eval_steps[0], 4);
  CHECK(gy_trainer_in_memory(t, 4) && !gy_trainer_in_memory(t, 2)); /* one in memory */
  /* ...unless a periodic checkpoint of that step was (and evaluated with it) */
  cfg.ckpt_every = 2;
  d = directive(seq++, GY_DIRECTIVE_CHECKPOINT, 4);
  CHECK_EQ_INT(gy_directive_apply(&ag, t, &d, STEPS, &cfg), 0);
  CHECK(s.acks[s.nacks - 1].ok);
  CHECK_EQ_INT(s.nevals, 1);
  cfg.ckpt_every = 0;
  cfg.eval_every = 0;

  /* SET_HPARAMS at 4: merged from the steps done */
  gy_knobs_t k4;
  gy_trainer_knobs(t, &k4);
  k0 = k4;
  n = s.nacks;
  d = directive(seq++, GY_DIRECTIVE_SET_HPARAMS, 4);
  d.hparams = (gy_agent_hparams_t){
      .present = GY_HP_LR_SCALE | GY_HP_WSD_DECAY_NOW, .lr_scale = 0.5f, .wsd_decay_now = 1};
  CHECK_EQ_INT(gy_directive_apply(&ag, t, &d, STEPS, &cfg), 0);
  a = last_ack(&s, n);
  CHECK(a->ok && a->step == 4);
  gy_trainer_knobs(t, &k);
  CHECK(k.lr_scale == 0.5f && k.grad_clip == k0.grad_clip);
  CHECK(k.sched.kind == GY_SCHED_WSD && k.sched.decay_start == 4 && k.sched.decay_steps == 36);

  /* refused ones: acked with why, knobs unchanged, the worker goes on */
  gy_trainer_knobs(t, &k0);
  n = s.nacks;
  d = directive(seq++, GY_DIRECTIVE_SET_HPARAMS, 4);
  d.hparams = (gy_agent_hparams_t){
      .present = GY_HP_LR_SCALE | GY_HP_GRAD_CLIP, .lr_scale = -1, .grad_clip = 3};
  CHECK_EQ_INT(gy_directive_apply(&ag, t, &d, STEPS, &cfg), 0);
  a = last_ack(&s, n);
  CHECK(!a->ok && a->step == 4 && a->bytes == 0);
  CHECK_MSG(strstr(a->error, "lr_scale") != NULL, "%s", a->error);
  d = directive(seq++, GY_DIRECTIVE_SET_HPARAMS, 4);
  d.hparams = (gy_agent_hparams_t){.present = GY_HP_SHALLOW_LAYERS, .shallow_layers = 3};
  CHECK_EQ_INT(gy_directive_apply(&ag, t, &d, STEPS, &cfg), 0);
  a = last_ack(&s, n + 1);
  CHECK(!a->ok);
  CHECK_MSG(strstr(a->error, "shallow_layers 3 exceeds the model's 2 layers") != NULL, "%s",
            a->error);
  gy_trainer_knobs(t, &k);
  CHECK(memcmp(&k, &k0, sizeof(k)) == 0);

  /* on to 6, a skip added now (after checkpoint 4), a checkpoint at 6 */
  train(t, 2);
  REQUIRE(gy_trainer_skip(t, 1000, 1010) == 0);
  d = directive(seq++, GY_DIRECTIVE_CHECKPOINT, 6);
  CHECK_EQ_INT(gy_directive_apply(&ag, t, &d, STEPS, &cfg), 0);
  CHECK(s.acks[s.nacks - 1].ok && file_exists(t, 6, NULL));
  gy_trainer_knobs(t, &k0);

  /* ROLLBACK refused: nothing changes, acked at the steps done with why, the worker goes on */
  struct {
    int64_t to;
    gy_agent_skip_t skip;
    gy_agent_hparams_t hp;
    const char *why;
  } refused[] = {
      {7, {0, 0}, {0}, "rollback to step 7: must be within 0..6 (the steps done)"},
      {-1, {0, 0}, {0}, "rollback to step -1: must be within 0..6"},
      {4, {50, 50}, {0}, "rollback: skip range #0 [50, 50) is empty"},
      {4, {0, 0}, {.present = GY_HP_EPS, .eps = 0}, "knobs: eps must be in (0, 1]"},
      {4, {0, 0}, {.present = GY_HP_SHALLOW_LAYERS, .shallow_layers = 5}, "shallow_layers 5"},
      {5, {0, 0}, {0}, "cannot restore step 5: "}, /* no checkpoint of step 5 */
  };
  for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
    n = s.nacks;
    d = directive(seq++, GY_DIRECTIVE_ROLLBACK, 6);
    d.to_step = refused[i].to;
    d.skip = &refused[i].skip;
    d.nskip = refused[i].skip.last ? 1 : 0;
    d.hparams = refused[i].hp;
    d.reason = "test";
    CHECK_EQ_INT(gy_directive_apply(&ag, t, &d, STEPS, &cfg), 0);
    a = last_ack(&s, n);
    CHECK_MSG(!a->ok && a->step == 6, "case %zu", i);
    CHECK_MSG(strstr(a->error, refused[i].why) != NULL, "case %zu: '%s'", i, a->error);
    CHECK_EQ_INT(gy_trainer_step_count(t), 6);
    gy_trainer_knobs(t, &k);
    CHECK(memcmp(&k, &k0, sizeof(k)) == 0);
    CHECK(file_exists(t, 6, NULL));
  }
  /* the missing checkpoint's file is named */
  char path[4096];
  gy_trainer_ckpt_path(t, 5, path, sizeof(path));
  CHECK_MSG(strstr(s.acks[s.nacks - 1].error, path) != NULL, "%s", s.acks[s.nacks - 1].error);

  /* a corrupt file (step 2 is no longer in memory): refused, its file named, nothing changed */
  gy_trainer_ckpt_path(t, 2, path, sizeof(path));
  flip_byte(path, 600);
  n = s.nacks;
  d = directive(seq++, GY_DIRECTIVE_ROLLBACK, 6);
  d.to_step = 2;
  CHECK_EQ_INT(gy_directive_apply(&ag, t, &d, STEPS, &cfg), 0);
  a = last_ack(&s, n);
  CHECK(!a->ok && a->step == 6);
  CHECK_MSG(strstr(a->error, "cannot restore step 2: ") && strstr(a->error, path), "%s", a->error);
  CHECK_EQ_INT(gy_trainer_step_count(t), 6);
  gy_trainer_knobs(t, &k);
  CHECK(memcmp(&k, &k0, sizeof(k)) == 0);

  /* ROLLBACK to 4: acked at 4, the trainer at 4, checkpoint 6 gone, the skip added after 4
   * kept and the new one added, the hyper-parameters merged from 4 over the restored knobs */
  gy_agent_skip_t skip = {200, 220};
  n = s.nacks;
  d = directive(seq++, GY_DIRECTIVE_ROLLBACK, 6);
  d.to_step = 4;
  d.skip = &skip;
  d.nskip = 1;
  d.reason = "spike";
  d.hparams = (gy_agent_hparams_t){
      .present = GY_HP_GRAD_CLIP | GY_HP_WSD_DECAY_NOW, .grad_clip = 0.5f, .wsd_decay_now = 1};
  CHECK_EQ_INT(gy_directive_apply(&ag, t, &d, STEPS, &cfg), 0);
  a = last_ack(&s, n);
  CHECK_MSG(a->ok && a->step == 4 && a->bytes == 0, "%s", a->error);
  CHECK_EQ_INT(gy_trainer_step_count(t), 4);
  CHECK(!file_exists(t, 6, NULL));
  CHECK(file_exists(t, 4, NULL));
  const gy_skiplist_t *sl = gy_trainer_skiplist(t);
  CHECK(gy_skiplist_contains(sl, 1005) && gy_skiplist_contains(sl, 210));
  CHECK(!gy_skiplist_contains(sl, 220) && !gy_skiplist_contains(sl, 199));
  gy_trainer_knobs(t, &k);
  CHECK(k.grad_clip == 0.5f);
  CHECK(k.lr_scale == k4.lr_scale); /* the checkpoint of 4 predates the lr_scale change */
  CHECK(k.sched.decay_start == 4 && k.sched.decay_steps == 36);
  train(t, 1); /* and training goes on from 4 */
  CHECK_EQ_INT(gy_trainer_step_count(t), 5);

  /* STOP: checkpoint, acked with its size, then 1 */
  n = s.nacks;
  d = directive(seq++, GY_DIRECTIVE_STOP, 5);
  CHECK_EQ_INT(gy_directive_apply(&ag, t, &d, STEPS, &cfg), 1);
  a = last_ack(&s, n);
  CHECK(a->ok && a->step == 5);
  CHECK(file_exists(t, 5, &size) && a->bytes == size);

  /* every directive was acked once, in order */
  for (int i = 0; i < s.nacks; i++)
    CHECK_EQ_INT(s.acks[i].seq, (uint64_t)i + 1);
  CHECK_EQ_INT(s.nacks, (int)seq - 1);

  gy_trainer_destroy(t);
  gy_run_config_free(&cfg);
  free(ckpt);
}

/* 1 when channel ch's stream range [first, last) is quarantined as a whole. */
static int quarantined(const gy_trainer_t *t, int ch, uint64_t first, uint64_t last) {
  const gy_quarantine_t *q = gy_trainer_quarantined(t);
  for (size_t i = 0; i < q->n; i++)
    if (q->r[i].channel == ch && q->r[i].first <= first && last <= q->r[i].last) return 1;
  return 0;
}

/* QUARANTINE: each entry's shard found by its path, its tail or its base name, the range added
 * in the channel's stream (clipped to the shard), an entry naming what this worker does not
 * have skipped (logged), a released one removed; a restore does not bring back what was
 * released since its checkpoint. SET_GUARD: the settings applied, a bad one refused (acked with
 * why, the guard unchanged) and the worker goes on. */
static void test_quarantine_directives(void) {
  script_t s = {0};
  gy_directive_agent_t ag = {.ctx = &s, .ack = script_ack, .eval = script_eval};
  char *ckpt = fx_path(dir, "ckpt-q");
  gy_run_config_t cfg;
  gy_trainer_t *t = make(&cfg, ckpt);
  gy_data_t *d = gy_trainer_data(t);
  char full1[1024];
  snprintf(full1, sizeof(full1), "%s/c1_train.bin", dir);
  uint64_t ntok0 = gy_data_file_tokens(d, 0, 0);
  REQUIRE(ntok0 > 400);
  gy_agent_quar_t q[5] = {{"a", "c0_train.bin", 100, 50, 0},    /* the base name */
                          {"b", full1, 0, 10, 0},               /* the path */
                          {"nope", "c0_train.bin", 0, 10, 0},   /* no such channel */
                          {"a", "x/c9_train.bin", 0, 10, 0},    /* no such shard */
                          {"a", "c0_train.bin", ntok0, 10, 0}}; /* past the end */
  uint64_t seq = 1;
  train(t, 2);
  gy_agent_directive_t dv = directive(seq++, GY_DIRECTIVE_QUARANTINE, 2);
  dv.quar = q;
  dv.nquar = 5;
  int n = s.nacks;
  CHECK_EQ_INT(gy_directive_apply(&ag, t, &dv, STEPS, &cfg), 0);
  const ack_t *a = last_ack(&s, n);
  CHECK(a->ok && a->step == 2);
  CHECK_EQ_INT(gy_trainer_quarantined(t)->n, 2);
  CHECK(quarantined(t, 0, 100, 150) && quarantined(t, 1, 0, 10));
  /* a range past the shard's end is clipped to it */
  gy_agent_quar_t tail = {"a", "c0_train.bin", ntok0 - 5, 100, 0};
  CHECK_EQ_INT(gy_directive_quarantine(t, &tail, 1, "test"), 1);
  CHECK(quarantined(t, 0, ntok0 - 5, ntok0) && !quarantined(t, 0, ntok0 - 5, ntok0 + 1));
  /* a checkpoint holds them; a release after it is not undone by restoring it */
  dv = directive(seq++, GY_DIRECTIVE_CHECKPOINT, 2);
  CHECK_EQ_INT(gy_directive_apply(&ag, t, &dv, STEPS, &cfg), 0);
  train(t, 1);
  gy_agent_quar_t rel = {"a", "c0_train.bin", 100, 50, 1};
  dv = directive(seq++, GY_DIRECTIVE_QUARANTINE, 3);
  dv.quar = &rel;
  dv.nquar = 1;
  CHECK_EQ_INT(gy_directive_apply(&ag, t, &dv, STEPS, &cfg), 0);
  CHECK(!quarantined(t, 0, 100, 101) && quarantined(t, 1, 0, 10));
  dv = directive(seq++, GY_DIRECTIVE_ROLLBACK, 3);
  dv.to_step = 2;
  CHECK_EQ_INT(gy_directive_apply(&ag, t, &dv, STEPS, &cfg), 0);
  CHECK(s.acks[s.nacks - 1].ok && gy_trainer_step_count(t) == 2);
  CHECK(!quarantined(t, 0, 100, 101) && quarantined(t, 1, 0, 10)); /* the release holds */
  /* quarantined again: a later restore keeps it */
  rel.released = 0;
  CHECK_EQ_INT(gy_directive_quarantine(t, &rel, 1, "test"), 1);
  CHECK(quarantined(t, 0, 100, 150));
  dv = directive(seq++, GY_DIRECTIVE_ROLLBACK, 2);
  dv.to_step = 2;
  CHECK_EQ_INT(gy_directive_apply(&ag, t, &dv, STEPS, &cfg), 0);
  CHECK(quarantined(t, 0, 100, 150));
  /* SET_GUARD */
  gy_guard_opts_t g;
  gy_guard_default(&g);
  g.window = 100;
  g.warmup = 10;
  dv = directive(seq++, GY_DIRECTIVE_SET_GUARD, 2);
  dv.guard = g;
  n = s.nacks;
  CHECK_EQ_INT(gy_directive_apply(&ag, t, &dv, STEPS, &cfg), 0);
  CHECK(last_ack(&s, n)->ok && gy_trainer_guard(t)->window == 100);
  dv.seq = seq++;
  dv.guard.window = 2; /* out of range: refused, the worker goes on */
  n = s.nacks;
  CHECK_EQ_INT(gy_directive_apply(&ag, t, &dv, STEPS, &cfg), 0);
  a = last_ack(&s, n);
  CHECK_MSG(!a->ok && strstr(a->error, "guard.window"), "%s", a->error);
  CHECK_EQ_INT(gy_trainer_guard(t)->window, 100);
  train(t, 2);
  gy_trainer_destroy(t);
  gy_run_config_free(&cfg);
  free(ckpt);
}

/* A checkpoint folder that cannot be made (under a regular file): CHECKPOINT is acked with why
 * and stops the worker with the error. */
static void test_checkpoint_failure(void) {
  script_t s = {0};
  gy_directive_agent_t ag = {.ctx = &s, .ack = script_ack, .eval = script_eval};
  char *file = fx_path(dir, "not-a-folder");
  fx_write(file, "x", 1);
  char *ckpt = fx_path(file, "ckpt");
  gy_run_config_t cfg;
  gy_trainer_t *t = make(&cfg, ckpt);
  train(t, 1);
  gy_agent_directive_t d = directive(7, GY_DIRECTIVE_CHECKPOINT, 1);
  int rc = gy_directive_apply(&ag, t, &d, STEPS, &cfg);
  CHECK(rc < 0);
  const ack_t *a = last_ack(&s, 0);
  CHECK(!a->ok && a->seq == 7 && a->step == 1 && a->bytes == 0);
  CHECK_MSG(strstr(a->error, "cannot create checkpoint folder") != NULL, "%s", a->error);
  gy_trainer_destroy(t);
  gy_run_config_free(&cfg);
  free(ckpt);
  free(file);
}

int main(void) {
  dir = fx_tmpdir();
  fx_write_text_shards(dir, texts, 2);
  RUN(test_merge_hparams);
  RUN(test_trainer_directives);
  RUN(test_checkpoint_failure);
  RUN(test_quarantine_directives);
  fx_rmtree(dir);
  free(dir);
  GY_TEST_END();
}
