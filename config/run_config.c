/*
 * run_config: the run configuration (YAML) of a run, checked against a fixed schema. Read by
 * the workers, the controller and gyroctl launch; it links no training library.
 *
 * API: gy_run_config_load() (a file; _load_dir with another base folder), gy_run_config_parse()
 * (text in memory), gy_run_config_free(), gy_run_config_hash().
 *
 * The schema (every key optional unless marked required; defaults in brackets):
 *   run:        name ["gyro"], seed [1337], steps [1000], threads 0..1024 [0 = all cores],
 *               device cpu|cuda [cpu], dtype fp32|bf16 [fp32 on cpu, bf16 on cuda; bf16 needs
 *               cuda]
 *   model:      layers 1..256 [4], channels 8..65536 [128], heads 1..1024 dividing channels [4],
 *               context 2..65536 [128], vocab 2..65535 (required), padded_vocab >= vocab
 *               [vocab rounded up to 128], qk_norm [false], init_from (path)
 *   train:      batch 1..65536 [8], seq_len 2..context [context], top_k 0..64 [4],
 *               log_samples bool [false]
 *   optimizer:  lr, beta1, beta2, eps, weight_decay, grad_clip, shallow_scale, shallow_layers
 *               (0..layers), z_loss, lr_scale [gy_knobs_default()]
 *   schedule:   kind constant|cosine|wsd, warmup, min_lr_frac [gy_knobs_default()],
 *               total_steps [run.steps], decay_start [80% of run.steps],
 *               decay_steps [run.steps - decay_start],
 *               boost: {from, to > from (required), factor (0, 1e4] (required)} [none]
 *   data:       channels (required, 1..GY_MAX_CHANNELS): name (required, unique, [A-Za-z0-9_-],
 *               < GY_CHANNEL_NAME_MAX chars), weight (0, 1e6] [1], train (required: a path or a
 *               non-empty list), val (path), shuffle [true];
 *               corrupt: [{channel (a declared name; absent = any), from, to > from (required),
 *               kind (required), token 0..vocab-1 (repeat only) [' ']}];
 *               skip: [{from, to > from}]
 *   eval:       every [100], sequences 1..100000 [200]
 *   checkpoint: dir ["checkpoints"], every [0 = never], keep_in_memory 0..64 [2], keep [5]
 *   controller: listen, world, tp, window, heartbeat_ms, lost_after_ms, hang_floor_ms,
 *     hang_factor, reform_alert_ms, join_token |
 *               join_token_file, operator_token | operator_token_file, policy,
 *               tls: {cert, key (both required), ca, client_auth [true when ca is given]}
 *
 * Invariants:
 * - Nothing is silently ignored: an unknown key anywhere, a wrong type or an out-of-range value
 *   is GY_ECONFIG with "FILE:LINE: key 'section.key': problem" in errmsg (the line of the
 *   offending key or value; for a missing required key, the line of its parent mapping).
 * - Paths (model.init_from, data train/val shards, checkpoint.dir) may use ${NAME} environment
 *   variables (an unset or empty one is an error naming it); relative paths are then joined to
 *   the config file's folder, so a config works from any working directory.
 * - On success the config owns every string and array it points to (gy_run_config_free
 *   releases them); on error it holds nothing to free (it is zeroed).
 * - Numbers are range-checked here with the same bounds gy_knobs_check and
 *   gy_gpt_config_check use, and those checks run last as a safety net.
 */
#include "config/run_config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/yamlcfg.h"

#define MAX_STEPS 2147483647LL /* schedule fields are ints */
#define U63_MAX 9223372036854775807LL

/* Parsing context: the document, where errors go, and the folder relative paths start from. */
typedef struct {
  gy_yaml_t *y;
  char *errmsg;
  size_t errlen;
  char *dir; /* config file's folder; NULL when the config path has no folder part */
} ctx_t;

/* ---- small helpers ---- */

/* c's document and error buffer as the shared schema reader of common/yamlcfg.h. */
#define RD(c) (&(gy_yread_t){.y = (c)->y, .errmsg = (c)->errmsg, .errlen = (c)->errlen})

static int oom(ctx_t *c) {
  if (c->errmsg && c->errlen)
    snprintf(c->errmsg, c->errlen, "%s: out of memory", gy_yaml_path(c->y));
  return GY_ENOMEM;
}

/* A growable string. */
typedef struct {
  char *s;
  size_t n, cap;
} sbuf_t;

static int sb_add(sbuf_t *b, const char *p, size_t n) {
  if (b->n + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->n + n + 1)
      cap *= 2;
    char *s = realloc(b->s, cap);
    if (!s) return GY_ENOMEM;
    b->s = s;
    b->cap = cap;
  }
  memcpy(b->s + b->n, p, n);
  b->n += n;
  b->s[b->n] = '\0';
  return 0;
}

/* Expands ${NAME} in the path text of node n and joins a relative result to the config's
 * folder. *out is a new string the caller owns. */
static int make_path(ctx_t *c, gy_ynode_t n, const char *key, const char *text, char **out) {
  sbuf_t b = {0};
  int rc = 0;
  *out = NULL;
  for (const char *p = text; *p;) {
    if (p[0] != '$' || p[1] != '{') {
      const char *q = p + 1;
      while (*q && !(q[0] == '$' && q[1] == '{'))
        q++;
      if ((rc = sb_add(&b, p, (size_t)(q - p)))) goto err;
      p = q;
      continue;
    }
    const char *name = p + 2, *end = strchr(name, '}');
    size_t len = end ? (size_t)(end - name) : 0;
    int valid = end && len > 0 && len < 128 && !(name[0] >= '0' && name[0] <= '9');
    for (size_t i = 0; valid && i < len; i++) {
      char ch = name[i];
      valid = (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
              ch == '_';
    }
    if (!valid) {
      rc = gy_yaml_error(c->y, n, key, c->errmsg, c->errlen,
                         "malformed variable reference: use ${NAME} with NAME made of letters, "
                         "digits and '_'");
      goto err;
    }
    char var[128];
    memcpy(var, name, len);
    var[len] = '\0';
    const char *val = getenv(var);
    if (!val || !*val) {
      rc = gy_yaml_error(c->y, n, key, c->errmsg, c->errlen, "environment variable %s is not set%s",
                         var, val ? " (it is empty)" : "");
      goto err;
    }
    if ((rc = sb_add(&b, val, strlen(val)))) goto err;
    p = end + 1;
  }
  if (!b.n) {
    rc = gy_yaml_error(c->y, n, key, c->errmsg, c->errlen, "the path is empty");
    goto err;
  }
  if (b.s[0] != '/' && c->dir) {
    sbuf_t j = {0};
    if ((rc = sb_add(&j, c->dir, strlen(c->dir))) || (rc = sb_add(&j, "/", 1)) ||
        (rc = sb_add(&j, b.s, b.n))) {
      free(j.s);
      goto err;
    }
    free(b.s);
    b = j;
  }
  *out = b.s;
  return 0;
err:
  free(b.s);
  if (rc == GY_ENOMEM) return oom(c);
  return rc;
}

/* Optional path map.name into *out (owned; replaces and frees a previous value). */
static int get_path(ctx_t *c, gy_ynode_t map, const char *prefix, const char *name, char **out) {
  char full[160];
  gy_yaml_join_key(full, sizeof(full), prefix, name);
  const char *s;
  gy_ynode_t n;
  int rc = gy_yread_str(RD(c), map, prefix, name, &s, &n);
  if (rc || !n) return rc;
  char *p;
  if ((rc = make_path(c, n, full, s, &p))) return rc;
  free(*out);
  *out = p;
  return 0;
}

/* ---- sections ---- */

static const char *const top_keys[] = {"run",  "model", "train",      "optimizer",  "schedule",
                                       "data", "eval",  "checkpoint", "controller", NULL};

static int parse_run(ctx_t *c, gy_ynode_t root, gy_run_config_t *cfg) {
  static const char *const keys[] = {"name", "seed", "steps", "threads", "device", "dtype", NULL};
  gy_ynode_t m, n;
  int rc;
  if ((rc = gy_yread_section(RD(c), root, "", "run", &m)) || !m) return rc;
  if ((rc = gy_yread_keys(RD(c), m, "run", keys))) return rc;
  const char *name = NULL;
  if ((rc = gy_yread_str(RD(c), m, "run", "name", &name, &n))) return rc;
  if (name) {
    if (!*name) return gy_yaml_error(c->y, n, "run.name", c->errmsg, c->errlen, "is empty");
    char *dup = strdup(name);
    if (!dup) return oom(c);
    free(cfg->name);
    cfg->name = dup;
  }
  int64_t seed = (int64_t)cfg->seed;
  if ((rc = gy_yread_int(RD(c), m, "run", "seed", 0, U63_MAX, &seed, NULL))) return rc;
  cfg->seed = (uint64_t)seed;
  if ((rc = gy_yread_int(RD(c), m, "run", "steps", 0, MAX_STEPS, &cfg->steps, NULL))) return rc;
  if ((rc = gy_yread_i32(RD(c), m, "run", "threads", 0, 1024, &cfg->threads, NULL))) return rc;
  const char *dev = NULL, *dt = NULL;
  gy_ynode_t dt_n;
  if ((rc = gy_yread_str(RD(c), m, "run", "device", &dev, &n))) return rc;
  if (dev) {
    if (!strcmp(dev, "cpu"))
      cfg->device = GY_DEVICE_CPU;
    else if (!strcmp(dev, "cuda"))
      cfg->device = GY_DEVICE_CUDA;
    else {
      char got[80];
      gy_yaml_describe(c->y, n, got, sizeof(got));
      return gy_yaml_error(c->y, n, "run.device", c->errmsg, c->errlen,
                           "expected cpu or cuda, got %s", got);
    }
  }
  cfg->dtype = cfg->device == GY_DEVICE_CUDA ? GY_DTYPE_BF16 : GY_DTYPE_FP32;
  if ((rc = gy_yread_str(RD(c), m, "run", "dtype", &dt, &dt_n))) return rc;
  if (dt) {
    if (!strcmp(dt, "fp32"))
      cfg->dtype = GY_DTYPE_FP32;
    else if (!strcmp(dt, "bf16"))
      cfg->dtype = GY_DTYPE_BF16;
    else {
      char got[80];
      gy_yaml_describe(c->y, dt_n, got, sizeof(got));
      return gy_yaml_error(c->y, dt_n, "run.dtype", c->errmsg, c->errlen,
                           "expected fp32 or bf16, got %s", got);
    }
    if (cfg->dtype == GY_DTYPE_BF16 && cfg->device != GY_DEVICE_CUDA)
      return gy_yaml_error(c->y, dt_n, "run.dtype", c->errmsg, c->errlen,
                           "bf16 needs run.device cuda (the CPU model computes in fp32)");
  }
  return 0;
}

static int parse_model(ctx_t *c, gy_ynode_t root, gy_run_config_t *cfg) {
  static const char *const keys[] = {"layers",       "channels", "heads",     "context", "vocab",
                                     "padded_vocab", "qk_norm",  "init_from", NULL};
  gy_gpt_config_t *g = &cfg->model;
  gy_ynode_t m, heads_n, chan_n, vocab_n, pv_n;
  int rc;
  if ((rc = gy_yread_section(RD(c), root, "", "model", &m))) return rc;
  if (m && (rc = gy_yread_keys(RD(c), m, "model", keys))) return rc;
  if ((rc = gy_yread_i32(RD(c), m, "model", "layers", 1, 256, &g->num_layers, NULL)) ||
      (rc = gy_yread_i32(RD(c), m, "model", "channels", 8, 65536, &g->channels, &chan_n)) ||
      (rc = gy_yread_i32(RD(c), m, "model", "heads", 1, 1024, &g->num_heads, &heads_n)) ||
      (rc = gy_yread_i32(RD(c), m, "model", "context", 2, 65536, &g->max_seq_len, NULL)) ||
      (rc = gy_yread_i32(RD(c), m, "model", "vocab", 2, 65535, &g->vocab_size, &vocab_n)))
    return rc;
  if (!vocab_n)
    return gy_yread_missing(RD(c), gy_yread_key_node(RD(c), gy_yaml_root(c->y), "model"), "model",
                            "vocab",
                            "the tokenizer's vocabulary size (256 for the byte-level tokenizer)");
  if (g->channels % g->num_heads) {
    if (heads_n)
      return gy_yaml_error(c->y, heads_n, "model.heads", c->errmsg, c->errlen,
                           "%d does not divide model.channels %d", g->num_heads, g->channels);
    return gy_yaml_error(c->y, chan_n, "model.channels", c->errmsg, c->errlen,
                         "%d is not a multiple of model.heads %d (its default)", g->channels,
                         g->num_heads);
  }
  g->padded_vocab_size = (g->vocab_size + 127) / 128 * 128;
  if ((rc = gy_yread_i32(RD(c), m, "model", "padded_vocab", g->vocab_size, 1 << 20,
                         &g->padded_vocab_size, &pv_n)))
    return rc;
  if ((rc = gy_yread_bool(RD(c), m, "model", "qk_norm", &g->qk_norm))) return rc;
  return get_path(c, m, "model", "init_from", &cfg->init_from);
}

static int parse_train(ctx_t *c, gy_ynode_t root, gy_run_config_t *cfg) {
  static const char *const keys[] = {"batch", "seq_len", "top_k", "log_samples", NULL};
  gy_ynode_t m;
  int rc;
  cfg->seq_len = cfg->model.max_seq_len;
  if ((rc = gy_yread_section(RD(c), root, "", "train", &m)) || !m) return rc;
  if ((rc = gy_yread_keys(RD(c), m, "train", keys))) return rc;
  if ((rc = gy_yread_i32(RD(c), m, "train", "batch", 1, 65536, &cfg->batch, NULL))) return rc;
  /* The upper bound names model.context in the message ("expected an integer in [2, 128]"). */
  if ((rc = gy_yread_i32(RD(c), m, "train", "seq_len", 2, cfg->model.max_seq_len, &cfg->seq_len,
                         NULL)))
    return rc;
  if ((rc = gy_yread_i32(RD(c), m, "train", "top_k", 0, 64, &cfg->top_k, NULL))) return rc;
  return gy_yread_bool(RD(c), m, "train", "log_samples", &cfg->log_samples);
}

static int parse_optimizer(ctx_t *c, gy_ynode_t root, gy_run_config_t *cfg) {
  static const char *const keys[] = {
      "lr",        "beta1",         "beta2",          "eps",    "weight_decay",
      "grad_clip", "shallow_scale", "shallow_layers", "z_loss", "lr_scale",
      NULL};
  gy_knobs_t *k = &cfg->knobs;
  gy_ynode_t m;
  int rc;
  if (k->shallow_layers > cfg->model.num_layers) k->shallow_layers = cfg->model.num_layers;
  if ((rc = gy_yread_section(RD(c), root, "", "optimizer", &m)) || !m) return rc;
  if ((rc = gy_yread_keys(RD(c), m, "optimizer", keys))) return rc;
  const char *o = "optimizer";
  if ((rc = gy_yread_float(RD(c), m, o, "lr", 0, 1, 10, 0, &k->sched.lr)) ||
      (rc = gy_yread_float(RD(c), m, o, "beta1", 0, 0, 1, 1, &k->beta1)) ||
      (rc = gy_yread_float(RD(c), m, o, "beta2", 0, 0, 1, 1, &k->beta2)) ||
      (rc = gy_yread_float(RD(c), m, o, "eps", 0, 1, 1, 0, &k->eps)) ||
      (rc = gy_yread_float(RD(c), m, o, "weight_decay", 0, 0, 10, 0, &k->weight_decay)) ||
      (rc = gy_yread_float(RD(c), m, o, "grad_clip", 0, 0, 1e6, 0, &k->grad_clip)) ||
      (rc = gy_yread_float(RD(c), m, o, "shallow_scale", 0, 0, 1e3, 0, &k->shallow_scale)) ||
      (rc = gy_yread_i32(RD(c), m, o, "shallow_layers", 0, cfg->model.num_layers,
                         &k->shallow_layers, NULL)) ||
      (rc = gy_yread_float(RD(c), m, o, "z_loss", 0, 0, 1, 0, &k->z_loss)) ||
      (rc = gy_yread_float(RD(c), m, o, "lr_scale", 0, 1, 1e3, 0, &k->lr_scale)))
    return rc;
  /* beta < 1 in double may round up to 1.0f; keep the float strictly below 1. */
  if (k->beta1 >= 1.0f || k->beta2 >= 1.0f)
    return gy_yaml_error(c->y, gy_yaml_get(c->y, m, k->beta1 >= 1.0f ? "beta1" : "beta2"),
                         k->beta1 >= 1.0f ? "optimizer.beta1" : "optimizer.beta2", c->errmsg,
                         c->errlen, "rounds to 1 in single precision: use a smaller value");
  return 0;
}

/* schedule.boost: {from, to, factor}, every key required. */
static int parse_boost(ctx_t *c, gy_ynode_t sched, gy_run_config_t *cfg) {
  static const char *const keys[] = {"from", "to", "factor", NULL};
  gy_ynode_t m, from_n, to_n;
  int from = -1, to = -1, rc;
  float factor = 0;
  if ((rc = gy_yread_section(RD(c), sched, "schedule", "boost", &m)) || !m) return rc;
  if ((rc = gy_yread_keys(RD(c), m, "schedule.boost", keys)) ||
      (rc = gy_yread_i32(RD(c), m, "schedule.boost", "from", 0, MAX_STEPS, &from, &from_n)) ||
      (rc = gy_yread_i32(RD(c), m, "schedule.boost", "to", 1, MAX_STEPS, &to, &to_n)) ||
      (rc = gy_yread_float(RD(c), m, "schedule.boost", "factor", 0, 1, 1e4, 0, &factor)))
    return rc;
  if (!from_n || !to_n || factor == 0)
    return gy_yaml_error(c->y, m, "schedule.boost", c->errmsg, c->errlen,
                         "needs from, to and factor");
  if (to <= from)
    return gy_yaml_error(c->y, to_n, "schedule.boost.to", c->errmsg, c->errlen,
                         "must be greater than from (%d)", from);
  cfg->lr_boost_from = from;
  cfg->lr_boost_to = to;
  cfg->lr_boost_factor = factor;
  return 0;
}

static int parse_schedule(ctx_t *c, gy_ynode_t root, gy_run_config_t *cfg) {
  static const char *const keys[] = {"kind",        "warmup",      "min_lr_frac", "total_steps",
                                     "decay_start", "decay_steps", "boost",       NULL};
  gy_sched_t *s = &cfg->knobs.sched;
  gy_ynode_t m, n, ds_n;
  int rc;
  s->total_steps = (int)cfg->steps;
  s->decay_start = (int)(cfg->steps * 4 / 5);
  s->decay_steps = (int)(cfg->steps - s->decay_start);
  if ((rc = gy_yread_section(RD(c), root, "", "schedule", &m)) || !m) return rc;
  if ((rc = gy_yread_keys(RD(c), m, "schedule", keys))) return rc;
  const char *kind = NULL;
  if ((rc = gy_yread_str(RD(c), m, "schedule", "kind", &kind, &n))) return rc;
  if (kind) {
    if (!strcmp(kind, "constant"))
      s->kind = GY_SCHED_CONSTANT;
    else if (!strcmp(kind, "cosine"))
      s->kind = GY_SCHED_COSINE;
    else if (!strcmp(kind, "wsd"))
      s->kind = GY_SCHED_WSD;
    else {
      char got[80];
      gy_yaml_describe(c->y, n, got, sizeof(got));
      return gy_yaml_error(c->y, n, "schedule.kind", c->errmsg, c->errlen,
                           "expected constant, cosine or wsd, got %s", got);
    }
  }
  if ((rc = gy_yread_i32(RD(c), m, "schedule", "warmup", 0, MAX_STEPS, &s->warmup, NULL)) ||
      (rc = gy_yread_float(RD(c), m, "schedule", "min_lr_frac", 0, 0, 1, 0, &s->min_lr_frac)) ||
      (rc = gy_yread_i32(RD(c), m, "schedule", "total_steps", 0, MAX_STEPS, &s->total_steps,
                         NULL)) ||
      (rc =
           gy_yread_i32(RD(c), m, "schedule", "decay_start", 0, MAX_STEPS, &s->decay_start, &ds_n)))
    return rc;
  if (ds_n) s->decay_steps = cfg->steps > s->decay_start ? (int)(cfg->steps - s->decay_start) : 0;
  if ((rc = gy_yread_i32(RD(c), m, "schedule", "decay_steps", 0, MAX_STEPS, &s->decay_steps, NULL)))
    return rc;
  return parse_boost(c, m, cfg);
}

static int valid_channel_name(const char *s) {
  size_t n = strlen(s);
  if (n == 0 || n >= GY_CHANNEL_NAME_MAX) return 0;
  for (size_t i = 0; i < n; i++) {
    char ch = s[i];
    if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
          ch == '_' || ch == '-'))
      return 0;
  }
  return 1;
}

/* Parses channel idx of the sequence chs (earlier entries are already parsed). */
static int parse_channel(ctx_t *c, gy_ynode_t chs, int idx, gy_run_config_t *cfg) {
  static const char *const keys[] = {"name", "train", "val", "weight", "shuffle", NULL};
  gy_channel_opts_t *ch = &cfg->data.channels[idx];
  char pre[64], full[96];
  gy_ynode_t n, item = gy_yaml_seq_item(c->y, chs, idx);
  int rc;
  snprintf(pre, sizeof(pre), "data.channels[%d]", idx);
  ch->weight = 1.0;
  ch->shuffle = 1;
  if ((rc = gy_yread_map(RD(c), item, pre)) || (rc = gy_yread_keys(RD(c), item, pre, keys)))
    return rc;

  const char *name = NULL;
  if ((rc = gy_yread_str(RD(c), item, pre, "name", &name, &n))) return rc;
  snprintf(full, sizeof(full), "%s.name", pre);
  if (!name) return gy_yread_missing(RD(c), item, pre, "name", NULL);
  if (!valid_channel_name(name))
    return gy_yaml_error(c->y, n, full, c->errmsg, c->errlen,
                         "a channel name has 1 to %d characters from [A-Za-z0-9_-]",
                         GY_CHANNEL_NAME_MAX - 1);
  for (int i = 0; i < idx; i++) {
    if (!strcmp(cfg->data.channels[i].name, name)) {
      gy_ynode_t other = gy_yaml_get(c->y, gy_yaml_seq_item(c->y, chs, i), "name");
      return gy_yaml_error(c->y, n, full, c->errmsg, c->errlen,
                           "duplicate channel name '%s' (first declared at line %d)", name,
                           gy_yaml_line(c->y, other));
    }
  }
  snprintf(ch->name, sizeof(ch->name), "%s", name);

  if ((rc = gy_yread_double(RD(c), item, pre, "weight", 0, 1, 1e6, 0, &ch->weight)) ||
      (rc = gy_yread_bool(RD(c), item, pre, "shuffle", &ch->shuffle)) ||
      (rc = get_path(c, item, pre, "val", &ch->val_file)))
    return rc;

  snprintf(full, sizeof(full), "%s.train", pre);
  gy_ynode_t tr = gy_yaml_get(c->y, item, "train");
  if (!tr) return gy_yread_missing(RD(c), item, pre, "train", "a shard path or a list of them");
  if (gy_yaml_is_seq(c->y, tr)) {
    int nf = gy_yaml_seq_len(c->y, tr);
    if (nf == 0)
      return gy_yaml_error(c->y, tr, full, c->errmsg, c->errlen,
                           "the list of training shards is empty");
    if (!(ch->files = calloc((size_t)nf, sizeof(char *)))) return oom(c);
    ch->nfiles = nf;
    for (int i = 0; i < nf; i++) {
      char fk[112];
      const char *s;
      gy_ynode_t it = gy_yaml_seq_item(c->y, tr, i);
      snprintf(fk, sizeof(fk), "%s[%d]", full, i);
      if ((rc = gy_yaml_to_string(c->y, it, fk, &s, c->errmsg, c->errlen)) ||
          (rc = make_path(c, it, fk, s, &ch->files[i])))
        return rc;
    }
  } else {
    const char *s;
    if (!(ch->files = calloc(1, sizeof(char *)))) return oom(c);
    ch->nfiles = 1;
    if ((rc = gy_yaml_to_string(c->y, tr, full, &s, c->errmsg, c->errlen)) ||
        (rc = make_path(c, tr, full, s, &ch->files[0])))
      return rc;
  }
  return 0;
}

/* Parses "from" and "to" (both required, to > from) of a range mapping. */
static int parse_range(ctx_t *c, gy_ynode_t item, const char *pre, uint64_t *first,
                       uint64_t *last) {
  int64_t from = 0, to = 0;
  gy_ynode_t fn, tn;
  int rc;
  if ((rc = gy_yread_int(RD(c), item, pre, "from", 0, U63_MAX, &from, &fn)) ||
      (rc = gy_yread_int(RD(c), item, pre, "to", 0, U63_MAX, &to, &tn)))
    return rc;
  if (!fn) return gy_yread_missing(RD(c), item, pre, "from", "the first sample id of the range");
  if (!tn) return gy_yread_missing(RD(c), item, pre, "to", "the end (exclusive) of the range");
  if (to <= from) {
    char full[112];
    snprintf(full, sizeof(full), "%s.to", pre);
    return gy_yaml_error(c->y, tn, full, c->errmsg, c->errlen,
                         "%lld must be greater than from (%lld): ranges are [from, to)",
                         (long long)to, (long long)from);
  }
  *first = (uint64_t)from;
  *last = (uint64_t)to;
  return 0;
}

static int parse_corrupt(ctx_t *c, gy_ynode_t item, int idx, gy_run_config_t *cfg) {
  static const char *const keys[] = {"channel", "from", "to", "kind", "token", NULL};
  static const char *const kinds[] = {"random_bytes", "binary_noise", "repeat", "empty_lines"};
  static const gy_corrupt_kind_t kind_ids[] = {GY_CORRUPT_RANDOM_BYTES, GY_CORRUPT_BINARY_NOISE,
                                               GY_CORRUPT_REPEAT, GY_CORRUPT_EMPTY_LINES};
  gy_corrupt_t *k = &cfg->data.corrupt[idx];
  char pre[64], full[96];
  gy_ynode_t n;
  int rc;
  snprintf(pre, sizeof(pre), "data.corrupt[%d]", idx);
  if ((rc = gy_yread_map(RD(c), item, pre)) || (rc = gy_yread_keys(RD(c), item, pre, keys)))
    return rc;

  k->channel = -1;
  const char *chname = NULL;
  if ((rc = gy_yread_str(RD(c), item, pre, "channel", &chname, &n))) return rc;
  if (chname) {
    for (int i = 0; i < cfg->data.nchannels; i++)
      if (!strcmp(cfg->data.channels[i].name, chname)) k->channel = i;
    if (k->channel < 0) {
      char list[GY_MAX_CHANNELS * (GY_CHANNEL_NAME_MAX + 2)] = "";
      size_t o = 0;
      for (int i = 0; i < cfg->data.nchannels; i++)
        o += (size_t)snprintf(list + o, sizeof(list) - o, "%s%s", i ? ", " : "",
                              cfg->data.channels[i].name);
      char got[80];
      gy_yaml_describe(c->y, n, got, sizeof(got));
      snprintf(full, sizeof(full), "%s.channel", pre);
      return gy_yaml_error(c->y, n, full, c->errmsg, c->errlen,
                           "%s is not a declared channel (declared: %s)", got, list);
    }
  }
  if ((rc = parse_range(c, item, pre, &k->first, &k->last))) return rc;

  const char *kind = NULL;
  if ((rc = gy_yread_str(RD(c), item, pre, "kind", &kind, &n))) return rc;
  if (!kind)
    return gy_yread_missing(RD(c), item, pre, "kind",
                            "random_bytes, binary_noise, repeat or empty_lines");
  int found = -1;
  for (int i = 0; i < 4; i++)
    if (!strcmp(kind, kinds[i])) found = i;
  snprintf(full, sizeof(full), "%s.kind", pre);
  if (found < 0) {
    char got[80];
    gy_yaml_describe(c->y, n, got, sizeof(got));
    return gy_yaml_error(c->y, n, full, c->errmsg, c->errlen,
                         "expected random_bytes, binary_noise, repeat or empty_lines, got %s", got);
  }
  k->kind = kind_ids[found];

  k->token = cfg->model.vocab_size > ' ' ? ' ' : 0;
  gy_ynode_t tn;
  if ((rc = gy_yread_i32(RD(c), item, pre, "token", 0, cfg->model.vocab_size - 1, &k->token, &tn)))
    return rc;
  if (tn && k->kind != GY_CORRUPT_REPEAT) {
    snprintf(full, sizeof(full), "%s.token", pre);
    return gy_yaml_error(c->y, tn, full, c->errmsg, c->errlen,
                         "applies only to kind repeat (this entry is %s)", kind);
  }
  return 0;
}

static int parse_data(ctx_t *c, gy_ynode_t root, gy_run_config_t *cfg) {
  static const char *const keys[] = {"channels", "corrupt", "skip", NULL};
  gy_data_opts_t *d = &cfg->data;
  gy_ynode_t m, chs, cor, skip;
  int rc;
  if ((rc = gy_yread_section(RD(c), root, "", "data", &m))) return rc;
  if (m && (rc = gy_yread_keys(RD(c), m, "data", keys))) return rc;

  chs = gy_yaml_get(c->y, m, "channels");
  if (!chs)
    return gy_yread_missing(RD(c), gy_yread_key_node(RD(c), root, "data"), "data", "channels",
                            "a list of {name, train, ...}");
  if (!gy_yaml_is_seq(c->y, chs)) {
    char got[80];
    gy_yaml_describe(c->y, chs, got, sizeof(got));
    return gy_yaml_error(c->y, chs, "data.channels", c->errmsg, c->errlen,
                         "expected a sequence of channels, got %s", got);
  }
  int nch = gy_yaml_seq_len(c->y, chs);
  if (nch < 1 || nch > GY_MAX_CHANNELS)
    return gy_yaml_error(c->y, chs, "data.channels", c->errmsg, c->errlen,
                         "expected 1 to %d channels, got %d", GY_MAX_CHANNELS, nch);
  if (!(d->channels = calloc((size_t)nch, sizeof(*d->channels)))) return oom(c);
  for (int i = 0; i < nch; i++) {
    d->nchannels = i + 1; /* so that free() sees what this entry allocated, even on error */
    if ((rc = parse_channel(c, chs, i, cfg))) return rc;
  }

  cor = gy_yaml_get(c->y, m, "corrupt");
  if (cor) {
    if (!gy_yaml_is_seq(c->y, cor)) {
      char got[80];
      gy_yaml_describe(c->y, cor, got, sizeof(got));
      return gy_yaml_error(c->y, cor, "data.corrupt", c->errmsg, c->errlen,
                           "expected a sequence of {channel, from, to, kind}, got %s", got);
    }
    int nc = gy_yaml_seq_len(c->y, cor);
    if (nc > 0 && !(d->corrupt = calloc((size_t)nc, sizeof(*d->corrupt)))) return oom(c);
    d->ncorrupt = nc;
    for (int i = 0; i < nc; i++)
      if ((rc = parse_corrupt(c, gy_yaml_seq_item(c->y, cor, i), i, cfg))) return rc;
  }

  skip = gy_yaml_get(c->y, m, "skip");
  if (skip) {
    if (!gy_yaml_is_seq(c->y, skip)) {
      char got[80];
      gy_yaml_describe(c->y, skip, got, sizeof(got));
      return gy_yaml_error(c->y, skip, "data.skip", c->errmsg, c->errlen,
                           "expected a sequence of {from, to}, got %s", got);
    }
    static const char *const skeys[] = {"from", "to", NULL};
    int ns = gy_yaml_seq_len(c->y, skip);
    if (ns > 0 && !(cfg->skip = calloc((size_t)ns, sizeof(*cfg->skip)))) return oom(c);
    cfg->nskip = ns;
    for (int i = 0; i < ns; i++) {
      char pre[48];
      gy_ynode_t it = gy_yaml_seq_item(c->y, skip, i);
      snprintf(pre, sizeof(pre), "data.skip[%d]", i);
      if ((rc = gy_yread_map(RD(c), it, pre)) || (rc = gy_yread_keys(RD(c), it, pre, skeys)) ||
          (rc = parse_range(c, it, pre, &cfg->skip[i].first, &cfg->skip[i].last)))
        return rc;
    }
  }
  return 0;
}

static int parse_eval(ctx_t *c, gy_ynode_t root, gy_run_config_t *cfg) {
  static const char *const keys[] = {"every", "sequences", NULL};
  gy_ynode_t m;
  int rc;
  if ((rc = gy_yread_section(RD(c), root, "", "eval", &m)) || !m) return rc;
  if ((rc = gy_yread_keys(RD(c), m, "eval", keys))) return rc;
  if ((rc = gy_yread_i32(RD(c), m, "eval", "every", 0, MAX_STEPS, &cfg->eval_every, NULL)))
    return rc;
  return gy_yread_i32(RD(c), m, "eval", "sequences", 1, 100000, &cfg->data.val_sequences, NULL);
}

static int dup_opt(ctx_t *c, const char *s, char **out) {
  if (!s) return 0;
  if (!(*out = strdup(s))) return oom(c);
  return 0;
}

/* controller.tls: {cert, key, ca, client_auth}. The files are paths here; gyro-controller reads
 * and checks them when it starts (workers receive this config too and never open them). */
static int parse_controller_tls(ctx_t *c, gy_ynode_t m, gy_run_config_t *cfg) {
  static const char *const keys[] = {"cert", "key", "ca", "client_auth", NULL};
  gy_ynode_t t;
  int rc;
  if ((rc = gy_yread_section(RD(c), m, "controller", "tls", &t)) || !t) return rc;
  if ((rc = gy_yread_keys(RD(c), t, "controller.tls", keys)) ||
      (rc = get_path(c, t, "controller.tls", "cert", &cfg->ctl_tls_cert)) ||
      (rc = get_path(c, t, "controller.tls", "key", &cfg->ctl_tls_key)) ||
      (rc = get_path(c, t, "controller.tls", "ca", &cfg->ctl_tls_ca)))
    return rc;
  cfg->ctl_tls_client_auth = cfg->ctl_tls_ca != NULL;
  if ((rc = gy_yread_bool(RD(c), t, "controller.tls", "client_auth", &cfg->ctl_tls_client_auth)))
    return rc;
  if (!cfg->ctl_tls_cert || !cfg->ctl_tls_key)
    return gy_yaml_error(c->y, t, "controller.tls", c->errmsg, c->errlen,
                         "needs both cert and key (PEM files)");
  if (cfg->ctl_tls_client_auth && !cfg->ctl_tls_ca)
    return gy_yaml_error(c->y, gy_yaml_get(c->y, t, "client_auth"), "controller.tls.client_auth",
                         c->errmsg, c->errlen,
                         "true needs controller.tls.ca (the CA of the client certificates)");
  return 0;
}

/* controller.http: "HOST:PORT" or "PORT" (loopback) for the metrics and dashboard server (the
 * host is checked when gyro-controller binds); controller.webhook_url: http(s):// URL of the
 * alert webhook. */
static int parse_controller_http(ctx_t *c, gy_ynode_t m, gy_run_config_t *cfg) {
  const char *http = NULL, *hook = NULL;
  gy_ynode_t hn, wn;
  int rc;
  if ((rc = gy_yread_str(RD(c), m, "controller", "http", &http, &hn)) ||
      (rc = gy_yread_str(RD(c), m, "controller", "webhook_url", &hook, &wn)))
    return rc;
  if (http) {
    const char *colon = strrchr(http, ':'), *port = colon ? colon + 1 : http;
    char *end = (char *)port;
    long p = *port >= '0' && *port <= '9' ? strtol(port, &end, 10) : -1;
    if (p < 0 || *end || p > 65535 || (colon && colon == http))
      return gy_yaml_error(c->y, hn, "controller.http", c->errmsg, c->errlen,
                           "'%s' is not HOST:PORT or PORT (port in [0, 65535])", http);
  }
  if (hook && (strncmp(hook, "http://", 7) && strncmp(hook, "https://", 8)))
    return gy_yaml_error(c->y, wn, "controller.webhook_url", c->errmsg, c->errlen,
                         "'%s' is not an http:// or https:// URL", hook);
  if ((rc = dup_opt(c, http, &cfg->ctl_http)) || (rc = dup_opt(c, hook, &cfg->ctl_webhook_url)))
    return rc;
  return 0;
}

static int parse_controller(ctx_t *c, gy_ynode_t root, gy_run_config_t *cfg) {
  static const char *const keys[] = {"listen",
                                     "world",
                                     "tp",
                                     "window",
                                     "heartbeat_ms",
                                     "lost_after_ms",
                                     "hang_floor_ms",
                                     "hang_factor",
                                     "reform_alert_ms",
                                     "join_token",
                                     "operator_token",
                                     "join_token_file",
                                     "operator_token_file",
                                     "policy",
                                     "tls",
                                     "http",
                                     "webhook_url",
                                     NULL};
  gy_ynode_t m, wn;
  int rc;
  if ((rc = gy_yread_section(RD(c), root, "", "controller", &m))) return rc;
  const char *listen = "127.0.0.1:7070", *jt = NULL, *ot = NULL;
  if (m) {
    if ((rc = gy_yread_keys(RD(c), m, "controller", keys))) return rc;
    if ((rc = gy_yread_str(RD(c), m, "controller", "listen", &listen, NULL)) ||
        (rc = gy_yread_i32(RD(c), m, "controller", "world", 1, 65536, &cfg->ctl_world, &wn)) ||
        (rc = gy_yread_i32(RD(c), m, "controller", "tp", 1, 1024, &cfg->ctl_tp, NULL)) ||
        (rc = gy_yread_i32(RD(c), m, "controller", "window", 1, 1000000, &cfg->ctl_window, NULL)) ||
        (rc = gy_yread_i32(RD(c), m, "controller", "heartbeat_ms", 10, 600000,
                           &cfg->ctl_heartbeat_ms, NULL)) ||
        (rc = gy_yread_i32(RD(c), m, "controller", "lost_after_ms", 100, 3600000,
                           &cfg->ctl_lost_after_ms, NULL)) ||
        (rc = gy_yread_i32(RD(c), m, "controller", "hang_floor_ms", 0, 86400000,
                           &cfg->ctl_hang_floor_ms, NULL)) ||
        (rc = gy_yread_i32(RD(c), m, "controller", "hang_factor", 1, 100000, &cfg->ctl_hang_factor,
                           NULL)) ||
        (rc = gy_yread_i32(RD(c), m, "controller", "reform_alert_ms", 0, 86400000,
                           &cfg->ctl_reform_alert_ms, NULL)) ||
        (rc = gy_yread_str(RD(c), m, "controller", "join_token", &jt, NULL)) ||
        (rc = gy_yread_str(RD(c), m, "controller", "operator_token", &ot, NULL)) ||
        (rc = get_path(c, m, "controller", "policy", &cfg->ctl_policy)) ||
        (rc = get_path(c, m, "controller", "join_token_file", &cfg->ctl_join_token_file)) ||
        (rc = get_path(c, m, "controller", "operator_token_file", &cfg->ctl_operator_token_file)) ||
        (rc = parse_controller_tls(c, m, cfg)) || (rc = parse_controller_http(c, m, cfg)))
      return rc;
    if (jt && *jt && cfg->ctl_join_token_file)
      return gy_yaml_error(c->y, gy_yaml_get(c->y, m, "join_token_file"),
                           "controller.join_token_file", c->errmsg, c->errlen,
                           "give either join_token or join_token_file, not both");
    if (ot && *ot && cfg->ctl_operator_token_file)
      return gy_yaml_error(c->y, gy_yaml_get(c->y, m, "operator_token_file"),
                           "controller.operator_token_file", c->errmsg, c->errlen,
                           "give either operator_token or operator_token_file, not both");
    if (cfg->ctl_world % cfg->ctl_tp)
      return gy_yaml_error(c->y, wn ? wn : m, "controller.world", c->errmsg, c->errlen,
                           "%d is not a multiple of controller.tp %d", cfg->ctl_world, cfg->ctl_tp);
    if (cfg->ctl_tp > 1 && cfg->model.num_heads % cfg->ctl_tp)
      return gy_yaml_error(c->y, m, "controller.tp", c->errmsg, c->errlen,
                           "%d does not divide model.heads %d", cfg->ctl_tp, cfg->model.num_heads);
  }
  if ((rc = dup_opt(c, listen, &cfg->ctl_listen)) ||
      (rc = dup_opt(c, jt && *jt ? jt : NULL, &cfg->ctl_join_token)) ||
      (rc = dup_opt(c, ot && *ot ? ot : NULL, &cfg->ctl_operator_token)))
    return rc;
  return 0;
}

static int parse_checkpoint(ctx_t *c, gy_ynode_t root, gy_run_config_t *cfg) {
  static const char *const keys[] = {"dir", "every", "keep_in_memory", "keep", NULL};
  gy_ynode_t m;
  int rc;
  if ((rc = gy_yread_section(RD(c), root, "", "checkpoint", &m))) return rc;
  if (m && (rc = gy_yread_keys(RD(c), m, "checkpoint", keys))) return rc;
  if ((rc = get_path(c, m, "checkpoint", "dir", &cfg->ckpt_dir))) return rc;
  if (!cfg->ckpt_dir) {
    /* Default: "checkpoints" beside the config file. */
    if (c->dir) {
      size_t n = strlen(c->dir) + sizeof("/checkpoints");
      if (!(cfg->ckpt_dir = malloc(n))) return oom(c);
      snprintf(cfg->ckpt_dir, n, "%s/checkpoints", c->dir);
    } else if (!(cfg->ckpt_dir = strdup("checkpoints"))) {
      return oom(c);
    }
  }
  if (!m) return 0;
  if ((rc = gy_yread_i32(RD(c), m, "checkpoint", "every", 0, MAX_STEPS, &cfg->ckpt_every, NULL)) ||
      (rc = gy_yread_i32(RD(c), m, "checkpoint", "keep_in_memory", 0, 64, &cfg->ckpt_keep_in_memory,
                         NULL)))
    return rc;
  return gy_yread_i32(RD(c), m, "checkpoint", "keep", 1, 100000, &cfg->ckpt_keep, NULL);
}

/* ---- public ---- */

static void set_defaults(gy_run_config_t *cfg) {
  memset(cfg, 0, sizeof(*cfg));
  cfg->seed = 1337;
  cfg->steps = 1000;
  cfg->threads = 0;
  cfg->model.num_layers = 4;
  cfg->model.channels = 128;
  cfg->model.num_heads = 4;
  cfg->model.max_seq_len = 128;
  cfg->batch = 8;
  cfg->top_k = 4;
  gy_knobs_default(&cfg->knobs);
  cfg->data.val_sequences = 200;
  cfg->eval_every = 100;
  cfg->ckpt_every = 0;
  cfg->ckpt_keep_in_memory = 2;
  cfg->ckpt_keep = 5;
  cfg->ctl_world = 1;
  cfg->ctl_tp = 1;
  cfg->ctl_window = 4;
  cfg->ctl_heartbeat_ms = 1000;
  cfg->ctl_lost_after_ms = 10000;
  cfg->ctl_hang_floor_ms = 60000;
  cfg->ctl_hang_factor = 20;
  cfg->ctl_reform_alert_ms = 300000;
}

int gy_run_config_load(gy_run_config_t *cfg, const char *path, char *errmsg, size_t errlen) {
  return gy_run_config_load_dir(cfg, path, NULL, errmsg, errlen);
}

static int config_from_doc(ctx_t *c, gy_run_config_t *cfg, const char *path, const char *base_dir);

int gy_run_config_load_dir(gy_run_config_t *cfg, const char *path, const char *base_dir,
                           char *errmsg, size_t errlen) {
  ctx_t c = {.errmsg = errmsg, .errlen = errlen};
  int rc;
  if (!cfg || !path) {
    if (errmsg && errlen) snprintf(errmsg, errlen, "gy_run_config_load: no config or path");
    return GY_EINVAL;
  }
  set_defaults(cfg);
  if ((rc = gy_yaml_load(&c.y, path, errmsg, errlen))) {
    gy_run_config_free(cfg);
    return rc;
  }
  rc = config_from_doc(&c, cfg, path, base_dir);
  gy_yaml_destroy(c.y);
  return rc;
}

int gy_run_config_parse(gy_run_config_t *cfg, const char *name, const char *text, size_t len,
                        const char *base_dir, char *errmsg, size_t errlen) {
  ctx_t c = {.errmsg = errmsg, .errlen = errlen};
  int rc;
  if (!cfg || !name || !text) {
    if (errmsg && errlen) snprintf(errmsg, errlen, "gy_run_config_parse: no config, name or text");
    return GY_EINVAL;
  }
  set_defaults(cfg);
  if ((rc = gy_yaml_parse(&c.y, name, text, len, errmsg, errlen))) {
    gy_run_config_free(cfg);
    return rc;
  }
  rc = config_from_doc(&c, cfg, name, base_dir);
  gy_yaml_destroy(c.y);
  return rc;
}

/* The run config in c's document into *cfg (set to its defaults); path names the document in
 * messages and, without base_dir, its folder is where relative paths start. On error *cfg is
 * freed. c->dir is the callee's. */
static int config_from_doc(ctx_t *c0, gy_run_config_t *cfg, const char *path,
                           const char *base_dir) {
  ctx_t c = *c0;
  char *errmsg = c.errmsg;
  size_t errlen = c.errlen;
  int rc;

  const char *slash = strrchr(path, '/');
  if (base_dir && *base_dir) {
    if (!(c.dir = strdup(base_dir))) {
      rc = oom(&c);
      goto err;
    }
  } else if (slash) {
    size_t n = slash == path ? 1 : (size_t)(slash - path);
    if (!(c.dir = strndup(path, n))) {
      rc = oom(&c);
      goto err;
    }
  }
  if (!(cfg->name = strdup("gyro"))) {
    rc = oom(&c);
    goto err;
  }

  gy_ynode_t root;
  if ((rc = gy_yread_root(RD(&c), "run config", "run:, model:, data:, ...", &root))) goto err;
  /* Model and run come first: later sections' ranges and defaults depend on them. */
  if ((rc = gy_yread_keys(RD(&c), root, "", top_keys)) || (rc = parse_model(&c, root, cfg)) ||
      (rc = parse_run(&c, root, cfg)) || (rc = parse_train(&c, root, cfg)) ||
      (rc = parse_optimizer(&c, root, cfg)) || (rc = parse_schedule(&c, root, cfg)) ||
      (rc = parse_data(&c, root, cfg)) || (rc = parse_eval(&c, root, cfg)) ||
      (rc = parse_checkpoint(&c, root, cfg)) || (rc = parse_controller(&c, root, cfg)))
    goto err;

  cfg->data.seq_len = cfg->seq_len;
  cfg->data.seed = cfg->seed;
  cfg->data.vocab_size = cfg->model.vocab_size;

  /* Safety net: the kernels' own checks must agree with what was accepted above. */
  char why[200];
  if (gy_gpt_config_check(&cfg->model, why, sizeof(why)) ||
      gy_knobs_check(&cfg->knobs, why, sizeof(why))) {
    if (errmsg && errlen) snprintf(errmsg, errlen, "%s: %s", path, why);
    rc = GY_ECONFIG;
    goto err;
  }
  free(c.dir);
  return 0;

err:
  gy_run_config_free(cfg);
  free(c.dir);
  return rc;
}

void gy_run_config_free(gy_run_config_t *cfg) {
  if (!cfg) return;
  free(cfg->name);
  free(cfg->init_from);
  free(cfg->ckpt_dir);
  for (int i = 0; cfg->data.channels && i < cfg->data.nchannels; i++) {
    gy_channel_opts_t *ch = &cfg->data.channels[i];
    for (int j = 0; ch->files && j < ch->nfiles; j++)
      free(ch->files[j]);
    free(ch->files);
    free(ch->val_file);
  }
  free(cfg->data.channels);
  free(cfg->data.corrupt);
  free(cfg->skip);
  free(cfg->ctl_listen);
  free(cfg->ctl_join_token);
  free(cfg->ctl_operator_token);
  free(cfg->ctl_policy);
  free(cfg->ctl_join_token_file);
  free(cfg->ctl_operator_token_file);
  free(cfg->ctl_tls_cert);
  free(cfg->ctl_http);
  free(cfg->ctl_webhook_url);
  free(cfg->ctl_tls_key);
  free(cfg->ctl_tls_ca);
  memset(cfg, 0, sizeof(*cfg));
}

/* ---- hash ---- */

#define FNV_OFFSET 0xcbf29ce484222325ull
#define FNV_PRIME 0x100000001b3ull

static uint64_t fnv_bytes(uint64_t h, const void *p, size_t n) {
  const unsigned char *b = p;
  for (size_t i = 0; i < n; i++) {
    h ^= b[i];
    h *= FNV_PRIME;
  }
  return h;
}

/* Integers are hashed as 8 little-endian bytes, so the hash is the same on every machine. */
static uint64_t fnv_u64(uint64_t h, uint64_t v) {
  unsigned char b[8];
  for (int i = 0; i < 8; i++)
    b[i] = (unsigned char)(v >> (8 * i));
  return fnv_bytes(h, b, 8);
}

/* Strings are hashed with their terminating NUL, so ("ab", "c") and ("a", "bc") differ. */
static uint64_t fnv_str(uint64_t h, const char *s) {
  return fnv_bytes(h, s ? s : "", s ? strlen(s) + 1 : 1);
}

/* FNV-1a 64 over what a checkpoint must agree with: the model shape, seq_len, batch, each
 * channel's name, weight (its IEEE-754 bits) and training files (basenames only, so moving the
 * data folder keeps the hash), and the seed. The knobs (optimizer and schedule) are NOT hashed:
 * the controller changes them at run time, and a checkpoint stays valid across such changes. */
uint64_t gy_run_config_hash(const gy_run_config_t *cfg) {
  uint64_t h = FNV_OFFSET;
  const gy_gpt_config_t *g = &cfg->model;
  h = fnv_u64(h, (uint64_t)g->num_layers);
  h = fnv_u64(h, (uint64_t)g->channels);
  h = fnv_u64(h, (uint64_t)g->num_heads);
  h = fnv_u64(h, (uint64_t)g->max_seq_len);
  h = fnv_u64(h, (uint64_t)g->vocab_size);
  h = fnv_u64(h, (uint64_t)g->padded_vocab_size);
  h = fnv_u64(h, (uint64_t)g->qk_norm);
  h = fnv_u64(h, (uint64_t)cfg->seq_len);
  h = fnv_u64(h, (uint64_t)cfg->batch);
  h = fnv_u64(h, (uint64_t)cfg->data.nchannels);
  for (int i = 0; i < cfg->data.nchannels; i++) {
    const gy_channel_opts_t *ch = &cfg->data.channels[i];
    uint64_t wbits;
    memcpy(&wbits, &ch->weight, sizeof(wbits));
    h = fnv_str(h, ch->name);
    h = fnv_u64(h, wbits);
    h = fnv_u64(h, (uint64_t)ch->nfiles);
    for (int j = 0; j < ch->nfiles; j++) {
      const char *f = ch->files[j], *base = f ? strrchr(f, '/') : NULL;
      h = fnv_str(h, base ? base + 1 : f);
    }
  }
  h = fnv_u64(h, cfg->seed);
  return h;
}
