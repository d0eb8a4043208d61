/* config: the shipped examples load with the expected values; a full config and a minimal one
 * give the documented values and defaults (paths joined to the config's folder, ${VAR}
 * expanded); the hash covers the shape and data but not the knobs; and a table of bad configs,
 * each written to a temporary folder, fails with GY_ECONFIG and a message naming the file, the
 * line and the key. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/err.h"
#include "kernels/optim.h"
#include "tests/test.h"
#include "config/run_config.h"

static char tmpdir[64];
static char written[128][160];
static int nwritten;

static const char *write_file(const char *name, const char *text) {
  REQUIRE(nwritten < 128);
  char *p = written[nwritten++];
  snprintf(p, 160, "%s/%s", tmpdir, name);
  FILE *f = fopen(p, "wb");
  REQUIRE(f);
  REQUIRE(fputs(text, f) >= 0);
  fclose(f);
  return p;
}

static int contains(const char *hay, const char *needle) {
  return strstr(hay, needle) != NULL;
}

static int ends_with(const char *s, const char *suffix) {
  size_t n = strlen(s), m = strlen(suffix);
  return n >= m && !strcmp(s + n - m, suffix);
}

/* The source tree: GY_SOURCE_DIR from ctest, else derived from this file's path. */
static void source_dir(char *buf, size_t len) {
  const char *env = getenv("GY_SOURCE_DIR");
  if (env && *env) {
    snprintf(buf, len, "%s", env);
    return;
  }
  snprintf(buf, len, "%s", __FILE__);
  char *p = strstr(buf, "/tests/unit/test_config.c");
  if (p) *p = '\0';
}

static void test_examples(void) {
  char src[512], path[600], want[700], err[512] = "";
  source_dir(src, sizeof(src));
  const char *data = "/srv/gyro data/shards"; /* a space survives: paths are not split */
  setenv("GY_DATA_DIR", data, 1);
  gy_run_config_t a, b;

  snprintf(path, sizeof(path), "%s/examples/standalone.yaml", src);
  int rc = gy_run_config_load(&a, path, err, sizeof(err));
  CHECK_MSG(rc == 0, "%s: %s", path, err);
  if (rc == 0) {
    CHECK(!strcmp(a.name, "standalone"));
    CHECK_EQ_INT(a.steps, 800);
    CHECK_EQ_INT(a.model.num_layers, 4);
    CHECK_EQ_INT(a.model.channels, 128);
    CHECK_EQ_INT(a.model.num_heads, 4);
    CHECK_EQ_INT(a.model.max_seq_len, 128);
    CHECK_EQ_INT(a.model.vocab_size, 256);
    CHECK_EQ_INT(a.model.padded_vocab_size, 256);
    CHECK_EQ_INT(a.batch, 8);
    CHECK_EQ_INT(a.seq_len, 128);
    CHECK_NEAR(a.knobs.sched.lr, 1e-3, 1e-9);
    CHECK_EQ_INT(a.knobs.sched.kind, GY_SCHED_COSINE);
    CHECK_EQ_INT(a.knobs.sched.warmup, 50);
    CHECK_EQ_INT(a.knobs.sched.total_steps, 800);
    CHECK_EQ_INT(a.eval_every, 100);
    CHECK_EQ_INT(a.ckpt_every, 200);
    CHECK_EQ_INT(a.data.nchannels, 3);
    const char *names[] = {"zh", "en", "code"};
    for (int c = 0; c < 3 && c < a.data.nchannels; c++) {
      const gy_channel_opts_t *ch = &a.data.channels[c];
      CHECK(!strcmp(ch->name, names[c]));
      CHECK_EQ_INT(ch->nfiles, 1);
      snprintf(want, sizeof(want), "%s/%s/train_000.bin", data, names[c]);
      CHECK_MSG(ch->nfiles == 1 && !strcmp(ch->files[0], want), "%s", ch->files[0]);
      snprintf(want, sizeof(want), "%s/%s/val.bin", data, names[c]);
      CHECK_MSG(ch->val_file && !strcmp(ch->val_file, want), "%s", ch->val_file);
      CHECK_EQ_INT(ch->shuffle, 1);
    }
    CHECK(a.ckpt_dir && ends_with(a.ckpt_dir, "/examples/../build/checkpoints/standalone"));
    CHECK_EQ_INT(a.data.seq_len, 128);
    CHECK_EQ_INT(a.data.vocab_size, 256);
    CHECK_EQ_INT(a.data.val_sequences, 200);
    gy_knobs_t k = a.knobs;
    char why[200];
    CHECK_EQ_INT(gy_knobs_check(&k, why, sizeof(why)), 0);
  }

  snprintf(path, sizeof(path), "%s/examples/tiny.yaml", src);
  rc = gy_run_config_load(&b, path, err, sizeof(err));
  CHECK_MSG(rc == 0, "%s: %s", path, err);
  if (rc == 0) {
    CHECK_EQ_INT(b.model.num_layers, 2);
    CHECK_EQ_INT(b.model.channels, 64);
    CHECK_EQ_INT(b.model.max_seq_len, 64);
    CHECK_EQ_INT(b.seq_len, 64);
    CHECK_EQ_INT(b.steps, 100);
    CHECK_EQ_INT(b.data.nchannels, 3);
  }
  if (a.data.nchannels && b.data.nchannels) CHECK(gy_run_config_hash(&a) != gy_run_config_hash(&b));
  gy_run_config_free(&a);
  gy_run_config_free(&b);
  gy_run_config_free(&b); /* freeing twice is harmless: free zeroes the config */
}

static const char *full_cfg =
    "run: {name: full, seed: 7, steps: 1000, threads: 2}\n"
    "model:\n"
    "  layers: 3\n"
    "  channels: 96\n"
    "  heads: 6\n"
    "  context: 32\n"
    "  vocab: 300\n"
    "  qk_norm: on\n"
    "  init_from: ${GY_TEST_MODEL}/m.bin\n" /* block style: ${...} needs no quotes */
    "train: {batch: 2, seq_len: 16, top_k: 0}\n"
    "optimizer: {lr: 0.5, beta1: 0, beta2: 0.99, eps: 1.0e-6, weight_decay: 0, grad_clip: 0,\n"
    "            shallow_scale: 0.5, shallow_layers: 3, z_loss: 1.0e-4, lr_scale: 2}\n"
    "schedule: {kind: wsd, warmup: 0, min_lr_frac: 0, decay_start: 900,\n"
    "           boost: {from: 10, to: 20, factor: 30}}\n"
    "data:\n"
    "  channels:\n"
    "    - name: web-1_x\n"
    "      weight: 3\n"
    "      train: shards/a.bin\n"
    "      shuffle: no\n"
    "    - name: B\n"
    "      train: [/abs/b0.bin, 'b1 $HOME.bin']\n"
    "      val: v/../b.val\n"
    "  corrupt:\n"
    "    - {from: 10, to: 20, kind: random_bytes}\n"
    "    - {channel: B, from: 0, to: 1, kind: repeat, token: 299}\n"
    "    - {channel: web-1_x, from: 5, to: 6, kind: empty_lines}\n"
    "  skip: [{from: 1, to: 3}, {from: 100, to: 101}]\n"
    "eval: {every: 0, sequences: 100000}\n"
    "checkpoint: {dir: '${GY_TEST_MODEL}', every: 10, keep_in_memory: 0, keep: 1}\n";

static void test_full_and_defaults(void) {
  char err[512] = "", want[300];
  gy_run_config_t c;
  setenv("GY_TEST_MODEL", "/models/x", 1);
  const char *path = write_file("full.yaml", full_cfg);
  int rc = gy_run_config_load(&c, path, err, sizeof(err));
  CHECK_MSG(rc == 0, "%s", err);
  if (rc == 0) {
    CHECK(!strcmp(c.name, "full"));
    CHECK_EQ_INT(c.seed, 7);
    CHECK_EQ_INT(c.threads, 2);
    CHECK_EQ_INT(c.model.num_heads, 6);
    CHECK_EQ_INT(c.model.vocab_size, 300);
    CHECK_EQ_INT(c.model.padded_vocab_size, 384);
    CHECK_EQ_INT(c.model.qk_norm, 1);
    CHECK(!strcmp(c.init_from, "/models/x/m.bin"));
    CHECK_EQ_INT(c.batch, 2);
    CHECK_EQ_INT(c.seq_len, 16);
    CHECK_EQ_INT(c.top_k, 0);
    CHECK_NEAR(c.knobs.sched.lr, 0.5, 0);
    CHECK_NEAR(c.knobs.beta1, 0, 0);
    CHECK_NEAR(c.knobs.beta2, 0.99, 1e-7);
    CHECK_NEAR(c.knobs.eps, 1e-6, 1e-12);
    CHECK_NEAR(c.knobs.grad_clip, 0, 0);
    CHECK_NEAR(c.knobs.shallow_scale, 0.5, 0);
    CHECK_EQ_INT(c.knobs.shallow_layers, 3);
    CHECK_NEAR(c.knobs.z_loss, 1e-4, 1e-10);
    CHECK_NEAR(c.knobs.lr_scale, 2, 0);
    CHECK_EQ_INT(c.knobs.sched.kind, GY_SCHED_WSD);
    CHECK_EQ_INT(c.knobs.sched.warmup, 0);
    CHECK_EQ_INT(c.knobs.sched.total_steps, 1000);
    CHECK_EQ_INT(c.knobs.sched.decay_start, 900);
    CHECK(c.lr_boost_from == 10 && c.lr_boost_to == 20 && c.lr_boost_factor == 30.0f);
    CHECK_EQ_INT(c.knobs.sched.decay_steps, 100);
    CHECK_EQ_INT(c.data.nchannels, 2);
    if (c.data.nchannels == 2) {
      gy_channel_opts_t *a = &c.data.channels[0], *b = &c.data.channels[1];
      CHECK(!strcmp(a->name, "web-1_x"));
      CHECK_NEAR(a->weight, 3, 0);
      CHECK_EQ_INT(a->shuffle, 0);
      CHECK_EQ_INT(a->nfiles, 1);
      snprintf(want, sizeof(want), "%s/shards/a.bin", tmpdir);
      CHECK_MSG(!strcmp(a->files[0], want), "%s", a->files[0]);
      CHECK(a->val_file == NULL);
      CHECK_NEAR(b->weight, 1, 0);
      CHECK_EQ_INT(b->shuffle, 1);
      CHECK_EQ_INT(b->nfiles, 2);
      CHECK(!strcmp(b->files[0], "/abs/b0.bin"));
      snprintf(want, sizeof(want), "%s/b1 $HOME.bin", tmpdir); /* only ${...} expands */
      CHECK_MSG(!strcmp(b->files[1], want), "%s", b->files[1]);
      snprintf(want, sizeof(want), "%s/v/../b.val", tmpdir);
      CHECK_MSG(!strcmp(b->val_file, want), "%s", b->val_file);
    }
    CHECK_EQ_INT(c.data.ncorrupt, 3);
    if (c.data.ncorrupt == 3) {
      CHECK_EQ_INT(c.data.corrupt[0].channel, -1);
      CHECK_EQ_INT(c.data.corrupt[0].first, 10);
      CHECK_EQ_INT(c.data.corrupt[0].last, 20);
      CHECK_EQ_INT(c.data.corrupt[0].kind, GY_CORRUPT_RANDOM_BYTES);
      CHECK_EQ_INT(c.data.corrupt[1].channel, 1);
      CHECK_EQ_INT(c.data.corrupt[1].kind, GY_CORRUPT_REPEAT);
      CHECK_EQ_INT(c.data.corrupt[1].token, 299);
      CHECK_EQ_INT(c.data.corrupt[2].channel, 0);
      CHECK_EQ_INT(c.data.corrupt[2].kind, GY_CORRUPT_EMPTY_LINES);
    }
    CHECK_EQ_INT(c.nskip, 2);
    if (c.nskip == 2) {
      CHECK_EQ_INT(c.skip[1].first, 100);
      CHECK_EQ_INT(c.skip[1].last, 101);
    }
    CHECK_EQ_INT(c.eval_every, 0);
    CHECK_EQ_INT(c.data.val_sequences, 100000);
    CHECK(!strcmp(c.ckpt_dir, "/models/x"));
    CHECK_EQ_INT(c.ckpt_every, 10);
    CHECK_EQ_INT(c.ckpt_keep_in_memory, 0);
    CHECK_EQ_INT(c.ckpt_keep, 1);
  }
  gy_run_config_free(&c);

  /* Minimal: everything else takes its default. */
  path = write_file("minimal.yaml", "model: {vocab: 256}\n"
                                    "data: {channels: [{name: a, train: a.bin}]}\n");
  rc = gy_run_config_load(&c, path, err, sizeof(err));
  CHECK_MSG(rc == 0, "%s", err);
  if (rc == 0) {
    gy_knobs_t k;
    gy_knobs_default(&k);
    CHECK(!strcmp(c.name, "gyro"));
    CHECK_EQ_INT(c.seed, 1337);
    CHECK_EQ_INT(c.steps, 1000);
    CHECK_EQ_INT(c.threads, 0);
    CHECK_EQ_INT(c.device, GY_DEVICE_CPU);
    CHECK_EQ_INT(c.dtype, GY_DTYPE_FP32);
    CHECK_EQ_INT(c.model.padded_vocab_size, 256);
    CHECK_EQ_INT(c.model.qk_norm, 0);
    CHECK(c.init_from == NULL);
    CHECK_EQ_INT(c.batch, 8);
    CHECK_EQ_INT(c.seq_len, c.model.max_seq_len);
    CHECK_EQ_INT(c.top_k, 4);
    CHECK_NEAR(c.knobs.sched.lr, k.sched.lr, 0);
    CHECK_NEAR(c.knobs.eps, k.eps, 0);
    CHECK_NEAR(c.knobs.grad_clip, k.grad_clip, 0);
    CHECK_EQ_INT(c.knobs.sched.kind, k.sched.kind);
    CHECK_EQ_INT(c.knobs.sched.warmup, k.sched.warmup);
    CHECK_EQ_INT(c.knobs.sched.total_steps, 1000);
    CHECK_EQ_INT(c.knobs.sched.decay_start, 800);
    CHECK_EQ_INT(c.knobs.sched.decay_steps, 200);
    CHECK_EQ_INT(c.data.channels[0].nfiles, 1);
    CHECK_EQ_INT(c.data.ncorrupt, 0);
    CHECK_EQ_INT(c.nskip, 0);
    CHECK_EQ_INT(c.eval_every, 100);
    CHECK_EQ_INT(c.data.val_sequences, 200);
    snprintf(want, sizeof(want), "%s/checkpoints", tmpdir);
    CHECK_MSG(!strcmp(c.ckpt_dir, want), "%s", c.ckpt_dir);
    CHECK_EQ_INT(c.ckpt_every, 0);
    CHECK_EQ_INT(c.ckpt_keep_in_memory, 2);
    CHECK_EQ_INT(c.ckpt_keep, 5);
  }
  gy_run_config_free(&c);
}

/* The hash follows the shape, data and seed, not the knobs nor the data folder. */
static void test_hash(void) {
  static const char *tmpl = "run: {seed: %d}\n"
                            "model: {vocab: 256, layers: %d}\n"
                            "optimizer: {lr: %s}\n"
                            "data: {channels: [{name: a, train: %s/x/a.bin, weight: %s}]}\n";
  struct {
    int seed, layers;
    const char *lr, *dir, *weight;
  } v[] = {{1, 2, "0.1", "d1", "1"},  /* 0: reference */
           {1, 2, "0.2", "d2", "1"},  /* 1: other lr and folder: same hash */
           {2, 2, "0.1", "d1", "1"},  /* 2: other seed */
           {1, 3, "0.1", "d1", "1"},  /* 3: other shape */
           {1, 2, "0.1", "d1", "2"}}; /* 4: other weight */
  uint64_t h[5];
  for (int i = 0; i < 5; i++) {
    char text[512], name[32], err[512];
    snprintf(text, sizeof(text), tmpl, v[i].seed, v[i].layers, v[i].lr, v[i].dir, v[i].weight);
    snprintf(name, sizeof(name), "hash%d.yaml", i);
    gy_run_config_t c;
    int rc = gy_run_config_load(&c, write_file(name, text), err, sizeof(err));
    CHECK_MSG(rc == 0, "%s", err);
    h[i] = rc == 0 ? gy_run_config_hash(&c) : (uint64_t)i;
    if (rc == 0) CHECK(gy_run_config_hash(&c) == h[i]);
    gy_run_config_free(&c);
  }
  CHECK(h[0] == h[1]);
  CHECK(h[0] != h[2]);
  CHECK(h[0] != h[3]);
  CHECK(h[0] != h[4]);
}

/* ---- the bad configs ---- */

typedef struct {
  const char *text;
  int line;         /* expected line in "FILE:LINE:" */
  const char *key;  /* expected "key '...'" (NULL: document-level error) */
  const char *what; /* expected substring of the problem */
} bad_t;

#define OK_DATA "data:\n  channels:\n    - {name: a, train: a.bin}\n"
#define OK_MODEL "model:\n  vocab: 256\n"

static const bad_t bad[] = {
    /* unknown keys, at every level */
    {"modle:\n  vocab: 256\n" OK_DATA, 1, "modle", "unknown key (expected one of: run, model"},
    {OK_MODEL "  layer: 4\n" OK_DATA, 3, "model.layer", "unknown key (expected one of: layers,"},
    {OK_MODEL "data:\n  channels:\n    - name: a\n      train: a.bin\n      wieght: 2\n", 7,
     "data.channels[0].wieght", "unknown key"},
    {OK_MODEL OK_DATA "  corrupt:\n    - {from: 1, to: 2, kind: repeat, tokn: 3}\n", 7,
     "data.corrupt[0].tokn", "unknown key"},
    {OK_MODEL OK_DATA "eval: {every: 1, sequence: 5}\n", 6, "eval.sequence", "unknown key"},
    /* wrong types */
    {OK_MODEL "  layers: four\n" OK_DATA, 3, "model.layers",
     "expected an integer in [1, 256], got 'four'"},
    {"run:\n  steps: \"100\"\n" OK_MODEL OK_DATA, 2, "run.steps", "a quoted value is a string"},
    {OK_MODEL "  qk_norm: maybe\n" OK_DATA, 3, "model.qk_norm", "expected a boolean"},
    {"run: [1, 2]\n" OK_MODEL OK_DATA, 1, "run", "expected a mapping, got a sequence"},
    {OK_MODEL "data:\n  channels: {name: a, train: a.bin}\n", 4, "data.channels",
     "expected a sequence of channels, got a mapping"},
    {OK_MODEL "data:\n  channels:\n    - a.bin\n", 5, "data.channels[0]",
     "expected a mapping, got 'a.bin'"},
    {OK_MODEL "data:\n  channels:\n    - {name: a, train: {x: 1}}\n", 5, "data.channels[0].train",
     "expected a string, got a mapping"},
    {"- model\n- data\n", 1, NULL, "top level of a run config must be a mapping"},
    /* out of range */
    {OK_MODEL "  layers: 0\n" OK_DATA, 3, "model.layers",
     "expected an integer in [1, 256], got '0'"},
    {"run: {threads: 2000}\n" OK_MODEL OK_DATA, 1, "run.threads", "in [0, 1024], got '2000'"},
    {"run: {device: gpu}\n" OK_MODEL OK_DATA, 1, "run.device", "expected cpu or cuda, got 'gpu'"},
    {"run: {device: cuda, dtype: fp16}\n" OK_MODEL OK_DATA, 1, "run.dtype",
     "expected fp32 or bf16, got 'fp16'"},
    {"run:\n  dtype: bf16\n" OK_MODEL OK_DATA, 2, "run.dtype", "bf16 needs run.device cuda"},
    {"run: {seed: -1}\n" OK_MODEL OK_DATA, 1, "run.seed", "expected an integer >= 0, got '-1'"},
    {"optimizer:\n  lr: 0\n" OK_MODEL OK_DATA, 2, "optimizer.lr",
     "expected a number in (0, 10], got '0'"},
    {"optimizer:\n  beta1: 1\n" OK_MODEL OK_DATA, 2, "optimizer.beta1",
     "expected a number in [0, 1), got '1'"},
    {"optimizer:\n  eps: 1e-50\n" OK_MODEL OK_DATA, 2, "optimizer.eps", "rounds to 0"},
    {OK_MODEL "  layers: 2\noptimizer: {shallow_layers: 3}\n" OK_DATA, 4,
     "optimizer.shallow_layers", "expected an integer in [0, 2], got '3'"},
    {OK_MODEL "  context: 64\ntrain:\n  seq_len: 65\n" OK_DATA, 5, "train.seq_len",
     "expected an integer in [2, 64], got '65'"},
    {"model:\n  vocab: 65536\n" OK_DATA, 2, "model.vocab", "in [2, 65535]"},
    {OK_MODEL "  padded_vocab: 255\n" OK_DATA, 3, "model.padded_vocab",
     "expected an integer in [256, 1048576], got '255'"},
    {OK_MODEL OK_DATA "eval: {sequences: 0}\n", 6, "eval.sequences", "in [1, 100000], got '0'"},
    {OK_MODEL OK_DATA "checkpoint:\n  keep: 0\n", 7, "checkpoint.keep", "in [1, 100000]"},
    {OK_MODEL "data:\n  channels:\n    - {name: a, train: a.bin, weight: 0}\n", 5,
     "data.channels[0].weight", "expected a number in (0, 1e+06], got '0'"},
    {OK_MODEL "schedule:\n  kind: linear\n" OK_DATA, 4, "schedule.kind",
     "expected constant, cosine or wsd, got 'linear'"},
    {OK_MODEL "schedule:\n  boost: {from: 5, to: 5, factor: 2}\n" OK_DATA, 4, "schedule.boost.to",
     "must be greater than from (5)"},
    {OK_MODEL "schedule:\n  boost: {from: 5, to: 9}\n" OK_DATA, 4, "schedule.boost",
     "needs from, to and factor"},
    {OK_MODEL "schedule:\n  boost: {from: 5, to: 9, factor: 0}\n" OK_DATA, 4,
     "schedule.boost.factor", "expected a number in (0, 10000], got '0'"},
    {OK_MODEL "schedule:\n  boost: {from: 5, to: 9, factor: 2, at: 3}\n" OK_DATA, 4,
     "schedule.boost.at", "unknown key"},
    /* cross-key rules */
    {"model:\n  vocab: 256\n  channels: 128\n  heads: 5\n" OK_DATA, 4, "model.heads",
     "5 does not divide model.channels 128"},
    {"model:\n  vocab: 256\n  channels: 102\n" OK_DATA, 3, "model.channels",
     "102 is not a multiple of model.heads 4 (its default)"},
    {"model:\n  layers: 2\n" OK_DATA, 1, "model.vocab", "required key is missing"},
    /* data */
    {OK_MODEL "data:\n  channels:\n    - {name: zh, train: a.bin}\n    - {name: en, train: b.bin}\n"
              "    - {name: zh, train: c.bin}\n",
     7, "data.channels[2].name", "duplicate channel name 'zh' (first declared at line 5)"},
    {OK_MODEL OK_DATA "  corrupt:\n    - {channel: fr, from: 1, to: 2, kind: repeat}\n", 7,
     "data.corrupt[0].channel", "'fr' is not a declared channel (declared: a)"},
    {OK_MODEL OK_DATA "  corrupt:\n    - channel: a\n      kind: repeat\n      from: 10\n"
                      "      to: 10\n",
     10, "data.corrupt[0].to", "10 must be greater than from (10)"},
    {OK_MODEL OK_DATA "  corrupt:\n    - {from: 1, to: 2}\n", 7, "data.corrupt[0].kind",
     "required key is missing"},
    {OK_MODEL OK_DATA "  corrupt:\n    - {from: 1, to: 2, kind: empty_lines, token: 5}\n", 7,
     "data.corrupt[0].token", "applies only to kind repeat"},
    {OK_MODEL OK_DATA "  corrupt:\n    - {from: 1, to: 2, kind: repeat, token: 256}\n", 7,
     "data.corrupt[0].token", "in [0, 255], got '256'"},
    {OK_MODEL OK_DATA "  corrupt:\n    - {from: 1, to: 2, kind: garbage}\n", 7,
     "data.corrupt[0].kind", "expected random_bytes, binary_noise, repeat or empty_lines"},
    {OK_MODEL OK_DATA "  skip:\n    - {from: 5, to: 4}\n", 7, "data.skip[0].to",
     "4 must be greater than from (5)"},
    {OK_MODEL "data:\n  corrupt: []\n", 3, "data.channels", "required key is missing"},
    {OK_MODEL "run: {steps: 5}\n", 1, "data.channels", "required key is missing"},
    {OK_MODEL "data:\n  channels: []\n", 4, "data.channels", "expected 1 to 16 channels, got 0"},
    {OK_MODEL "data:\n  channels:\n    - name: a\n      train: []\n", 6, "data.channels[0].train",
     "the list of training shards is empty"},
    {OK_MODEL "data:\n  channels:\n    - name: a\n", 5, "data.channels[0].train",
     "required key is missing"},
    {OK_MODEL "data:\n  channels:\n    - train: a.bin\n", 5, "data.channels[0].name",
     "required key is missing"},
    {OK_MODEL "data:\n  channels:\n    - {name: 'a b', train: a.bin}\n", 5, "data.channels[0].name",
     "characters from [A-Za-z0-9_-]"},
    {OK_MODEL "data:\n  channels:\n    - {name: abcdefghijabcdefghijabcdefghij012, train: a}\n", 5,
     "data.channels[0].name", "1 to 31 characters"},
    {OK_MODEL "data:\n  channels: [{name: a, train: a}, {name: b, train: a}, {name: c, train: a},"
              " {name: d, train: a}, {name: e, train: a}, {name: f, train: a}, {name: g, train: a},"
              " {name: h, train: a}, {name: i, train: a}, {name: j, train: a}, {name: k, train: a},"
              " {name: l, train: a}, {name: m, train: a}, {name: n, train: a}, {name: o, train: a},"
              " {name: p, train: a}, {name: q, train: a}]\n",
     4, "data.channels", "expected 1 to 16 channels, got 17"},
    /* paths and variables */
    {OK_MODEL "data:\n  channels:\n    - name: a\n      train:\n        - ok.bin\n"
              "        - ${GY_TEST_SURELY_UNSET_VAR}/a.bin\n",
     8, "data.channels[0].train[1]", "environment variable GY_TEST_SURELY_UNSET_VAR is not set"},
    {OK_MODEL OK_DATA "checkpoint: {dir: \"${GY_TEST_EMPTY_VAR}\"}\n", 6, "checkpoint.dir",
     "environment variable GY_TEST_EMPTY_VAR is not set (it is empty)"},
    {OK_MODEL "  init_from: ${GY_DATA_DIR/m.bin\n" OK_DATA, 3, "model.init_from",
     "malformed variable reference"},
    {OK_MODEL "  init_from: \"\"\n" OK_DATA, 3, "model.init_from", "the path is empty"},
    /* document-level errors */
    {OK_MODEL OK_DATA "---\n" OK_MODEL, 6, NULL, "a second YAML document starts here"},
    {OK_MODEL "\tlayers: 2\n" OK_DATA, 3, NULL, "YAML syntax error: "},
    {"model:\n  vocab: 256\n  layers: [2\n" OK_DATA, 4, NULL, "YAML syntax error: "},
    {"", 1, NULL, "the YAML document is empty"},
    {"run:\n  steps: 1\n  steps: 2\n" OK_MODEL OK_DATA, 3, NULL,
     "key 'steps' appears twice in one mapping (first at line 2)"},
};

/* run.device cuda defaults to bf16; fp32 may be asked for. */
static void test_device(void) {
  char err[512] = "";
  gy_run_config_t c;
  const char *path = write_file("cuda.yaml", "run: {device: cuda}\n" OK_MODEL OK_DATA);
  int rc = gy_run_config_load(&c, path, err, sizeof(err));
  CHECK_MSG(rc == 0, "%s", err);
  if (rc == 0) {
    CHECK_EQ_INT(c.device, GY_DEVICE_CUDA);
    CHECK_EQ_INT(c.dtype, GY_DTYPE_BF16);
    gy_run_config_free(&c);
  }
  path = write_file("cuda32.yaml", "run: {device: cuda, dtype: fp32}\n" OK_MODEL OK_DATA);
  rc = gy_run_config_load(&c, path, err, sizeof(err));
  CHECK_MSG(rc == 0, "%s", err);
  if (rc == 0) {
    CHECK_EQ_INT(c.device, GY_DEVICE_CUDA);
    CHECK_EQ_INT(c.dtype, GY_DTYPE_FP32);
    gy_run_config_free(&c);
  }
}

static void test_bad_configs(void) {
  setenv("GY_TEST_EMPTY_VAR", "", 1);
  unsetenv("GY_TEST_SURELY_UNSET_VAR");
  int n = (int)(sizeof(bad) / sizeof(bad[0]));
  for (int i = 0; i < n; i++) {
    char name[32], err[1024] = "", prefix[256], keytxt[128];
    snprintf(name, sizeof(name), "bad_%02d.yaml", i);
    const char *path = write_file(name, bad[i].text);
    gy_run_config_t c;
    memset(&c, 0xab, sizeof(c));
    int rc = gy_run_config_load(&c, path, err, sizeof(err));
    CHECK_MSG(rc == GY_ECONFIG, "%s: rc %d (%s)", name, rc, err);
    snprintf(prefix, sizeof(prefix), "%s:%d:", path, bad[i].line);
    CHECK_MSG(!strncmp(err, prefix, strlen(prefix)), "%s: '%s' does not start with '%s'", name, err,
              prefix);
    if (bad[i].key) {
      snprintf(keytxt, sizeof(keytxt), "key '%s': ", bad[i].key);
      CHECK_MSG(contains(err, keytxt), "%s: '%s' lacks \"%s\"", name, err, keytxt);
    }
    CHECK_MSG(contains(err, bad[i].what), "%s: '%s' lacks \"%s\"", name, err, bad[i].what);
    /* On error the config holds nothing to free. */
    CHECK(c.name == NULL && c.data.channels == NULL && c.ckpt_dir == NULL && c.skip == NULL);
    gy_run_config_free(&c);
    if (getenv("GY_TEST_VERBOSE")) printf("%s\n", err);
  }
  printf("%d bad configs refused\n", n);

  /* A missing file is not a config error but names the file. */
  char err[512], path[128];
  gy_run_config_t c;
  snprintf(path, sizeof(path), "%s/none.yaml", tmpdir);
  CHECK_EQ_INT(gy_run_config_load(&c, path, err, sizeof(err)), GY_ENOENT);
  CHECK(contains(err, path));
}

/* A config sent as text (what a worker receives): the same config as from its file, relative
 * paths from the folder given, messages under the name given. */
static void test_parse_memory(void) {
  char err[512] = "", dir[200];
  gy_run_config_t a, b;
  const char *path = write_file("mem.yaml", full_cfg);
  setenv("GY_TEST_MODEL", "/models/x", 1);
  REQUIRE(gy_run_config_load(&a, path, err, sizeof(err)) == 0);
  snprintf(dir, sizeof(dir), "%s", path);
  *strrchr(dir, '/') = '\0';
  int rc = gy_run_config_parse(&b, "run config", full_cfg, strlen(full_cfg), dir, err, sizeof(err));
  CHECK_MSG(rc == 0, "%s", err);
  if (rc == 0) {
    CHECK(gy_run_config_hash(&a) == gy_run_config_hash(&b));
    CHECK(!strcmp(a.ckpt_dir, b.ckpt_dir));
    CHECK(!strcmp(a.data.channels[0].files[0], b.data.channels[0].files[0]));
    CHECK_EQ_INT(a.steps, b.steps);
    gy_run_config_free(&b);
  }
  gy_run_config_free(&a);
  const char *wrong = "model:\n  vocab: 256\nrun:\n  steps: -3\n";
  rc = gy_run_config_parse(&b, "sent", wrong, strlen(wrong), dir, err, sizeof(err));
  CHECK_EQ_INT(rc, GY_ECONFIG);
  CHECK_MSG(!strncmp(err, "sent:4: key 'run.steps'", 23), "%s", err);
  CHECK_EQ_INT(gy_run_config_parse(&b, "sent", NULL, 0, dir, err, sizeof(err)), GY_EINVAL);
}

int main(void) {
  snprintf(tmpdir, sizeof(tmpdir), "/tmp/gy_config_XXXXXX");
  REQUIRE(mkdtemp(tmpdir));
  RUN(test_examples);
  RUN(test_full_and_defaults);
  RUN(test_parse_memory);
  RUN(test_hash);
  RUN(test_device);
  RUN(test_bad_configs);
  for (int k = 0; k < nwritten; k++)
    unlink(written[k]);
  rmdir(tmpdir);
  GY_TEST_END();
}
