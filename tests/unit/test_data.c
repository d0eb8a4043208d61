/* test_data: the data set on real shards written into a temporary folder from real text
 * (glibc headers): pure-function sample order, skip lists, mixing proportions, the within-epoch
 * permutation, corruption injection, samples crossing shard boundaries, vocabulary checks,
 * unigram entropy, held-out sequences, and errors that name the channel and the file. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "common/err.h"
#include "tests/test.h"
#include "tests/unit/data_fixture.h"
#include "worker/data.h"
#include "worker/shard.h"

#define T 64
#define V 256
#define MAXT (T + 1)

static char *dir;
static char err[1024];

/* Three channels of real text: en = stdio.h split over two shards at an odd offset,
 * code = stdlib.h, zh = string.h; held-out text from unistd.h. */
static uint16_t *stream[3];
static size_t stream_n[3];
static uint16_t *val_tok;
static size_t val_n;
static char *files_en[2], *files_code[1], *files_zh[1], *val_path;
static gy_channel_opts_t chans[3];

static char *write_shard(const char *name, const uint16_t *t, size_t n) {
  char *p = fx_path(dir, name);
  char e[512];
  if (gy_shard_write(p, t, n, e, sizeof(e)) != GY_OK) {
    fprintf(stderr, "setup: %s\n", e);
    exit(1);
  }
  return p;
}

static void setup(void) {
  dir = fx_tmpdir();
  stream[0] = fx_text_tokens("/usr/include/stdio.h", &stream_n[0]);
  stream[1] = fx_text_tokens("/usr/include/stdlib.h", &stream_n[1]);
  stream[2] = fx_text_tokens("/usr/include/string.h", &stream_n[2]);
  val_tok = fx_text_tokens("/usr/include/unistd.h", &val_n);
  size_t split = stream_n[0] / 2 + 13;
  files_en[0] = write_shard("en_000.bin", stream[0], split);
  files_en[1] = write_shard("en_001.bin", stream[0] + split, stream_n[0] - split);
  files_code[0] = write_shard("code_000.bin", stream[1], stream_n[1]);
  files_zh[0] = write_shard("zh_000.bin", stream[2], stream_n[2]);
  val_path = write_shard("val.bin", val_tok, val_n);
  const char *names[3] = {"en", "code", "zh"};
  char **files[3] = {files_en, files_code, files_zh};
  int nfiles[3] = {2, 1, 1};
  double w[3] = {0.5, 0.3, 0.2};
  for (int c = 0; c < 3; c++) {
    memset(&chans[c], 0, sizeof(chans[c]));
    snprintf(chans[c].name, sizeof(chans[c].name), "%s", names[c]);
    chans[c].weight = w[c];
    chans[c].nfiles = nfiles[c];
    chans[c].files = files[c];
    chans[c].val_file = c == 0 ? val_path : NULL;
    chans[c].shuffle = 1;
  }
}

static gy_data_opts_t base_opts(gy_channel_opts_t *ch, int n) {
  gy_data_opts_t o;
  memset(&o, 0, sizeof(o));
  o.nchannels = n;
  o.channels = ch;
  o.seq_len = T;
  o.seed = 1337;
  o.vocab_size = V;
  o.val_sequences = 200;
  return o;
}

static gy_data_t *make(const gy_data_opts_t *o) {
  gy_data_t *d = NULL;
  int rc = gy_data_create(&d, o, err, sizeof(err));
  if (rc != GY_OK) {
    fprintf(stderr, "gy_data_create: %s: %s\n", gy_err_name(rc), err);
    exit(1);
  }
  return d;
}

/* The tokens sample id must hold, from the raw streams and locate(). */
static int matches_stream(const gy_data_t *d, uint64_t id, const uint16_t *tok) {
  int c;
  uint64_t e, idx;
  gy_data_sample_locate(d, id, &c, &e, &idx);
  if (idx >= gy_data_channel_samples(d, c)) return 0;
  return memcmp(tok, stream[c] + idx * T, MAXT * sizeof(uint16_t)) == 0;
}

static void test_accessors(void) {
  gy_data_opts_t o = base_opts(chans, 3);
  gy_data_t *d = make(&o);
  CHECK_EQ_INT(gy_data_nchannels(d), 3);
  CHECK(strcmp(gy_data_channel_name(d, 1), "code") == 0);
  CHECK(gy_data_channel_name(d, 3) == NULL);
  CHECK_EQ_INT(gy_data_channel_index(d, "zh"), 2);
  CHECK_EQ_INT(gy_data_channel_index(d, "fr"), -1);
  for (int c = 0; c < 3; c++) {
    CHECK_EQ_INT(gy_data_channel_tokens(d, c), stream_n[c]);
    CHECK_EQ_INT(gy_data_channel_samples(d, c), (stream_n[c] - 1) / T);
  }
  gy_data_destroy(d);
  gy_data_destroy(NULL);
}

/* Two separate instances agree on every batch id and every token: a pure function. */
static void test_pure_function(void) {
  gy_data_opts_t o = base_opts(chans, 3);
  gy_data_t *a = make(&o), *b = make(&o);
  uint64_t ia[8], ib[8];
  uint16_t ta[MAXT], tb[MAXT];
  int bad_ids = 0, bad_tok = 0, bad_stream = 0, bad_order = 0;
  for (uint64_t step = 0; step < 60; step++)
    for (int rank = 0; rank < 2; rank++) {
      gy_data_batch_ids(a, NULL, step, rank, 2, 8, ia);
      gy_data_batch_ids(b, NULL, step, rank, 2, 8, ib);
      for (int k = 0; k < 8; k++) {
        if (ia[k] != ib[k]) bad_ids++;
        if (ia[k] != (step * 2 + (uint64_t)rank) * 8 + (uint64_t)k) bad_order++;
        int ca, cb;
        gy_data_sample(a, ia[k], ta, &ca);
        gy_data_sample(b, ib[k], tb, &cb);
        if (ca != cb || memcmp(ta, tb, sizeof(ta)) != 0) bad_tok++;
        if (ca != gy_data_sample_channel(a, ia[k]) || !matches_stream(a, ia[k], ta)) bad_stream++;
      }
    }
  CHECK_EQ_INT(bad_ids, 0);
  CHECK_EQ_INT(bad_order, 0);
  CHECK_EQ_INT(bad_tok, 0);
  CHECK_EQ_INT(bad_stream, 0);
  /* A different seed gives a different order. */
  gy_data_opts_t o2 = o;
  o2.seed = 7;
  gy_data_t *c = make(&o2);
  int differ = 0;
  for (uint64_t id = 0; id < 200; id++) {
    uint64_t x, y;
    gy_data_sample_locate(a, id, NULL, NULL, &x);
    gy_data_sample_locate(c, id, NULL, NULL, &y);
    differ += x != y;
  }
  CHECK_MSG(differ > 150, "only %d of 200 samples moved with another seed", differ);
  gy_data_destroy(a);
  gy_data_destroy(b);
  gy_data_destroy(c);
}

/* With a skip list the run never sees the skipped ids, takes the next ones instead, keeps its
 * batch shape, and two instances with the same skip list consume the same samples. */
static void test_skip(void) {
  gy_data_opts_t o = base_opts(chans, 3);
  gy_data_t *a = make(&o), *b = make(&o);
  gy_skiplist_t s;
  gy_skiplist_init(&s);
  REQUIRE(gy_skiplist_add(&s, 1, 3) == GY_OK);
  REQUIRE(gy_skiplist_add(&s, 40, 100) == GY_OK);
  REQUIRE(gy_skiplist_add(&s, 101, 102) == GY_OK);
  REQUIRE(gy_skiplist_add(&s, 200, 264) == GY_OK);
  const int B = 4, W = 3, STEPS = 40;
  uint64_t ids[4], ids2[4];
  gy_data_batch_ids(a, &s, 0, 0, W, B, ids);
  CHECK(ids[0] == 0 && ids[1] == 3 && ids[2] == 4 && ids[3] == 5);
  uint64_t expect = 0; /* the next unskipped id in order */
  int seen_skipped = 0, out_of_order = 0, bad_same = 0;
  uint16_t ta[MAXT], tb[MAXT];
  for (uint64_t step = 0; step < (uint64_t)STEPS; step++)
    for (int rank = 0; rank < W; rank++) {
      gy_data_batch_ids(a, &s, step, rank, W, B, ids);
      gy_data_batch_ids(b, &s, step, rank, W, B, ids2);
      for (int k = 0; k < B; k++) {
        while (gy_skiplist_contains(&s, expect))
          expect++;
        if (ids[k] != expect) out_of_order++;
        expect++;
        if (gy_skiplist_contains(&s, ids[k])) seen_skipped++;
        int ca, cb;
        gy_data_sample(a, ids[k], ta, &ca);
        gy_data_sample(b, ids2[k], tb, &cb);
        if (ids[k] != ids2[k] || ca != cb || memcmp(ta, tb, sizeof(ta)) != 0) bad_same++;
      }
    }
  CHECK_EQ_INT(seen_skipped, 0);
  CHECK_EQ_INT(out_of_order, 0);
  CHECK_EQ_INT(bad_same, 0);
  CHECK_EQ_INT(expect, (uint64_t)(STEPS * W * B) + gy_skiplist_count(&s));
  /* An empty skip list changes nothing. */
  gy_skiplist_t empty;
  gy_skiplist_init(&empty);
  gy_data_batch_ids(a, &empty, 5, 1, W, B, ids);
  CHECK(ids[0] == (5 * 3 + 1) * 4 && ids[3] == ids[0] + 3);
  gy_skiplist_free(&s);
  gy_data_destroy(a);
  gy_data_destroy(b);
}

static void check_mix(const double *w, int n, const char *what) {
  gy_channel_opts_t ch[3];
  memcpy(ch, chans, sizeof(ch));
  double sum = 0;
  for (int c = 0; c < n; c++) {
    ch[c].weight = w[c];
    sum += w[c];
  }
  gy_data_opts_t o = base_opts(ch, n);
  gy_data_t *d = make(&o);
  long count[3] = {0}, win[3] = {0};
  int rough = 0;
  for (uint64_t id = 0; id < 10000; id++) {
    int c = gy_data_sample_channel(d, id);
    count[c]++;
    win[c]++;
    if (id % 100 == 99) { /* smooth round-robin: every window of 100 is close to the weights */
      for (int k = 0; k < n; k++) {
        if (fabs((double)win[k] - 100.0 * w[k] / sum) > 3.0) rough++;
        win[k] = 0;
      }
    }
  }
  for (int c = 0; c < n; c++)
    CHECK_MSG(fabs((double)count[c] / 10000.0 - w[c] / sum) <= 0.01,
              "%s: channel %d got %.4f of the ids, weight %.4f", what, c, count[c] / 10000.0,
              w[c] / sum);
  CHECK_MSG(rough == 0, "%s: %d windows of 100 ids off by more than 3", what, rough);
  gy_data_destroy(d);
}

static void test_mixing(void) {
  check_mix((double[]){0.5, 0.3, 0.2}, 3, "0.5/0.3/0.2");
  check_mix((double[]){1, 1, 1}, 3, "equal");
  check_mix((double[]){7, 2, 1}, 3, "7/2/1");
  check_mix((double[]){0.333, 0.333, 0.334}, 3, "thirds");
  check_mix((double[]){0.9, 0.0999, 0.0001}, 3, "tiny weight");
  check_mix((double[]){2.5}, 1, "one channel");
}

/* Follows channel c's draws in id order and checks each epoch is a permutation. */
static void check_epochs(const gy_data_t *d, int c, int shuffle) {
  uint64_t N = gy_data_channel_samples(d, c);
  unsigned char *seen = calloc(N, 1);
  uint64_t *order0 = malloc(N * sizeof(uint64_t));
  uint64_t j = 0;
  int bad_epoch = 0, dup = 0, bad_seq = 0, same_as_e0 = 0, fixed = 0;
  for (uint64_t id = 0; j < 2 * N; id++) {
    int ch;
    uint64_t e, idx;
    gy_data_sample_locate(d, id, &ch, &e, &idx);
    if (ch != c) continue;
    if (e != j / N) bad_epoch++;
    if (j == N) memset(seen, 0, N);
    if (idx >= N || seen[idx]) {
      dup++;
    } else {
      seen[idx] = 1;
    }
    if (j < N) {
      order0[j] = idx;
      fixed += idx == j;
    } else {
      same_as_e0 += order0[j - N] == idx;
    }
    if (!shuffle && idx != j % N) bad_seq++;
    j++;
  }
  CHECK_MSG(bad_epoch == 0 && dup == 0, "channel %d: %d epoch errors, %d repeats", c, bad_epoch,
            dup);
  if (shuffle && N >= 20) { /* a real shuffle moves almost everything, differently per epoch */
    CHECK_MSG(fixed < (int)N / 10, "channel %d: %d of %llu samples in place", c, fixed,
              (unsigned long long)N);
    CHECK_MSG(same_as_e0 < (int)N / 10, "channel %d: epochs 0 and 1 share %d positions", c,
              same_as_e0);
  } else if (!shuffle) {
    CHECK_EQ_INT(bad_seq, 0);
  }
  free(seen);
  free(order0);
}

static void test_permutation(void) {
  gy_data_opts_t o = base_opts(chans, 3);
  gy_data_t *d = make(&o);
  for (int c = 0; c < 3; c++)
    check_epochs(d, c, 1);
  gy_data_destroy(d);
  gy_channel_opts_t ch[3];
  memcpy(ch, chans, sizeof(ch));
  ch[1].shuffle = 0;
  o = base_opts(ch, 3);
  d = make(&o);
  check_epochs(d, 0, 1);
  check_epochs(d, 1, 0);
  gy_data_destroy(d);
  /* Tiny channels (1, 2, 3 samples) still permute correctly. */
  for (size_t n = T + 1; n <= 3 * T + 1; n += T) {
    char *p = write_shard("tiny.bin", stream[2], n);
    char *files[1] = {p};
    gy_channel_opts_t one = chans[2];
    one.files = files;
    one.nfiles = 1;
    one.val_file = NULL;
    o = base_opts(&one, 1);
    d = make(&o);
    CHECK_EQ_INT(gy_data_channel_samples(d, 0), (n - 1) / T);
    check_epochs(d, 0, 1);
    gy_data_destroy(d);
    free(p);
  }
}

static int all_equal(const uint16_t *t, uint16_t v) {
  for (int k = 0; k < MAXT; k++)
    if (t[k] != v) return 0;
  return 1;
}

/* Each kind changes exactly the targeted ids of the targeted channel, deterministically. */
static void test_corruption(void) {
  gy_data_opts_t o = base_opts(chans, 3);
  gy_data_t *clean = make(&o);
  gy_corrupt_t cor[5] = {
      {.channel = 1, .first = 100, .last = 200, .kind = GY_CORRUPT_RANDOM_BYTES, .token = -1},
      {.channel = -1, .first = 300, .last = 350, .kind = GY_CORRUPT_REPEAT, .token = 'x'},
      {.channel = 0, .first = 400, .last = 450, .kind = GY_CORRUPT_EMPTY_LINES, .token = -1},
      {.channel = 2, .first = 500, .last = 700, .kind = GY_CORRUPT_BINARY_NOISE, .token = -1},
      {.channel = 0, .first = 800, .last = 820, .kind = GY_CORRUPT_REPEAT, .token = -1},
  };
  o.ncorrupt = 5;
  o.corrupt = cor;
  gy_data_t *d = make(&o), *d2 = make(&o);
  uint16_t tc[MAXT], td[MAXT], td2[MAXT];
  int wrong = 0, nondet = 0, bad_kind = 0, hit[5] = {0};
  long zeros = 0, noise = 0, ff = 0, random_bytes = 0;
  for (uint64_t id = 0; id < 1000; id++) {
    int cc, cd;
    gy_data_sample(clean, id, tc, &cc);
    gy_data_sample(d, id, td, &cd);
    gy_data_sample(d2, id, td2, NULL);
    if (memcmp(td, td2, sizeof(td)) != 0) nondet++;
    int target = -1;
    for (int k = 0; k < 5; k++)
      if (id >= cor[k].first && id < cor[k].last && (cor[k].channel == -1 || cor[k].channel == cc))
        target = k;
    int changed = memcmp(tc, td, sizeof(tc)) != 0;
    if (cc != cd || changed != (target >= 0)) wrong++;
    if (target < 0) continue;
    hit[target]++;
    switch (cor[target].kind) {
    case GY_CORRUPT_RANDOM_BYTES:
      random_bytes++;
      for (int k = 0; k < MAXT; k++)
        bad_kind += td[k] >= V;
      break;
    case GY_CORRUPT_REPEAT:
      bad_kind += !all_equal(td, cor[target].token < 0 ? ' ' : (uint16_t)cor[target].token);
      break;
    case GY_CORRUPT_EMPTY_LINES:
      bad_kind += !all_equal(td, '\n');
      break;
    case GY_CORRUPT_BINARY_NOISE:
      for (int k = 0; k < MAXT; k++) {
        noise++;
        zeros += td[k] == 0;
        ff += td[k] == 0xFF;
        bad_kind += td[k] >= V;
      }
      break;
    }
  }
  CHECK_EQ_INT(wrong, 0);
  CHECK_EQ_INT(nondet, 0);
  CHECK_EQ_INT(bad_kind, 0);
  for (int k = 0; k < 5; k++)
    CHECK_MSG(hit[k] > 0, "corruption %d never applied", k);
  CHECK(hit[1] == 50); /* channel -1: every id of the range */
  CHECK(random_bytes > 0);
  double zf = (double)zeros / (double)noise;
  CHECK_MSG(zf > 0.45 && zf < 0.75, "binary noise: %.3f zeros", zf);
  CHECK_MSG(ff > 0, "binary noise: no 0xFF bytes");
  /* The clean instance is untouched by another instance's corruption list. */
  gy_data_sample(clean, 310, tc, NULL);
  CHECK(matches_stream(clean, 310, tc));
  gy_data_destroy(d);
  gy_data_destroy(d2);

  /* A small vocabulary keeps corrupted tokens inside it. */
  gy_channel_opts_t ch[1] = {chans[2]};
  ch[0].val_file = NULL;
  uint16_t small[4 * T];
  for (int k = 0; k < 4 * T; k++)
    small[k] = (uint16_t)(stream[2][k] % 20);
  char *p = write_shard("small.bin", small, 4 * T);
  char *files[1] = {p};
  ch[0].files = files;
  ch[0].nfiles = 1;
  gy_corrupt_t c2[2] = {{-1, 0, 2, GY_CORRUPT_RANDOM_BYTES, -1},
                        {-1, 2, 3, GY_CORRUPT_BINARY_NOISE, -1}};
  o = base_opts(ch, 1);
  o.vocab_size = 20;
  o.ncorrupt = 2;
  o.corrupt = c2;
  d = make(&o);
  int outside = 0;
  for (uint64_t id = 0; id < 3; id++) {
    gy_data_sample(d, id, td, NULL);
    for (int k = 0; k < MAXT; k++)
      outside += td[k] >= 20;
  }
  CHECK_EQ_INT(outside, 0);
  gy_data_destroy(d);
  /* A repeat token outside the vocabulary is refused. */
  c2[0].kind = GY_CORRUPT_REPEAT;
  c2[0].token = 300;
  o.vocab_size = 256;
  CHECK_EQ_INT(gy_data_create(&d, &o, err, sizeof(err)), GY_ECONFIG);
  free(p);
  gy_data_destroy(clean);

  CHECK(strcmp(gy_corrupt_kind_name(GY_CORRUPT_BINARY_NOISE), "binary_noise") == 0);
  CHECK_EQ_INT(gy_corrupt_kind_parse("empty_lines"), GY_CORRUPT_EMPTY_LINES);
  CHECK_EQ_INT(gy_corrupt_kind_parse("repeat"), GY_CORRUPT_REPEAT);
  CHECK_EQ_INT(gy_corrupt_kind_parse("random_bytes"), GY_CORRUPT_RANDOM_BYTES);
  CHECK_EQ_INT(gy_corrupt_kind_parse("zeros"), -1);
  CHECK_EQ_INT(gy_corrupt_kind_parse(NULL), -1);
}

/* Samples that cross shard boundaries (and span a tiny and an empty shard) are the right
 * tokens of the concatenated stream. */
static void test_boundaries(void) {
  size_t n = stream_n[0], s1 = 1000 + 7;
  char *a = write_shard("b_a.bin", stream[0], s1);
  char *b = write_shard("b_b.bin", stream[0] + s1, 10); /* shorter than one sample */
  char *c = write_shard("b_c.bin", stream[0] + s1 + 10, 0);
  char *e = write_shard("b_d.bin", stream[0] + s1 + 10, n - s1 - 10);
  char *files[4] = {a, b, c, e};
  gy_channel_opts_t ch = chans[0];
  ch.files = files;
  ch.nfiles = 4;
  ch.shuffle = 0;
  gy_data_opts_t o = base_opts(&ch, 1);
  gy_data_t *d = make(&o);
  uint64_t N = gy_data_channel_samples(d, 0);
  CHECK_EQ_INT(N, (n - 1) / T);
  uint16_t t[MAXT];
  int bad = 0, crossing = 0, spanning3 = 0;
  for (uint64_t k = 0; k < N; k++) {
    gy_data_sample(d, k, t, NULL); /* one channel, no shuffle: id k is sample k */
    if (memcmp(t, stream[0] + k * T, sizeof(t)) != 0) bad++;
    uint64_t lo = k * T, hi = k * T + T + 1;
    if (lo < s1 && hi > s1) crossing++;
    if (lo < s1 && hi > s1 + 10) spanning3++;
  }
  CHECK_EQ_INT(bad, 0);
  CHECK(crossing > 0);
  CHECK(spanning3 > 0);
  gy_data_destroy(d);
  free(a);
  free(b);
  free(c);
  free(e);
}

static int has(const char *hay, const char *needle) {
  return strstr(hay, needle) != NULL;
}

static void test_errors(void) {
  static int sentinel;
  gy_data_t *d = (gy_data_t *)&sentinel; /* create must set it to NULL on failure */
  /* Tokens outside the vocabulary: 'z' (122) >= 100. */
  gy_data_opts_t o = base_opts(chans, 3);
  o.vocab_size = 100;
  CHECK_EQ_INT(gy_data_create(&d, &o, err, sizeof(err)), GY_ECORRUPT);
  CHECK(d == NULL);
  CHECK_MSG(has(err, "'en'") && has(err, files_en[0]) && has(err, "vocab"), "%s", err);
  /* A token of 300 in a byte-vocabulary run; fine with a GPT-2 sized vocabulary. */
  uint16_t big[2 * T];
  memcpy(big, stream[1], sizeof(big));
  big[T + 5] = 300;
  char *p = write_shard("big.bin", big, 2 * T);
  char *files[1] = {p};
  gy_channel_opts_t one = chans[1];
  one.files = files;
  one.nfiles = 1;
  o = base_opts(&one, 1);
  CHECK_EQ_INT(gy_data_create(&d, &o, err, sizeof(err)), GY_ECORRUPT);
  CHECK_MSG(has(err, "'code'") && has(err, p) && has(err, "300"), "%s", err);
  o.vocab_size = 50257;
  CHECK_EQ_INT(gy_data_create(&d, &o, err, sizeof(err)), GY_OK);
  gy_data_destroy(d);
  /* The same check on the held-out file. */
  one.val_file = p;
  one.files = files_code;
  o = base_opts(&one, 1);
  CHECK_EQ_INT(gy_data_create(&d, &o, err, sizeof(err)), GY_ECORRUPT);
  CHECK_MSG(has(err, "'code'") && has(err, p), "%s", err);
  one.val_file = NULL;
  /* Too short for one sample: T tokens. */
  char *ps = write_shard("short.bin", stream[1], T);
  files[0] = ps;
  one.files = files;
  o = base_opts(&one, 1);
  CHECK_EQ_INT(gy_data_create(&d, &o, err, sizeof(err)), GY_ECONFIG);
  CHECK_MSG(has(err, "'code'") && has(err, ps), "%s", err);
  /* Missing and corrupt files. */
  char *pm = fx_path(dir, "missing.bin");
  files[0] = pm;
  CHECK_EQ_INT(gy_data_create(&d, &o, err, sizeof(err)), GY_ENOENT);
  CHECK_MSG(has(err, "'code'") && has(err, pm), "%s", err);
  char *pc = fx_path(dir, "corrupt.bin");
  fx_write(pc, stream[1], 4000); /* text, not a shard */
  files[0] = pc;
  CHECK_EQ_INT(gy_data_create(&d, &o, err, sizeof(err)), GY_ECORRUPT);
  CHECK_MSG(has(err, "'code'") && has(err, pc), "%s", err);
  one.files = files_code;
  one.val_file = pm;
  o = base_opts(&one, 1);
  CHECK_EQ_INT(gy_data_create(&d, &o, err, sizeof(err)), GY_ENOENT);
  CHECK_MSG(has(err, "'code'") && has(err, pm), "%s", err);
  one.val_file = NULL;
  /* Bad options. */
  gy_channel_opts_t ch[3];
  memcpy(ch, chans, sizeof(ch));
  ch[2].weight = 0;
  o = base_opts(ch, 3);
  CHECK_EQ_INT(gy_data_create(&d, &o, err, sizeof(err)), GY_ECONFIG);
  CHECK_MSG(has(err, "'zh'") && has(err, "weight"), "%s", err);
  ch[2].weight = NAN;
  CHECK_EQ_INT(gy_data_create(&d, &o, err, sizeof(err)), GY_ECONFIG);
  memcpy(ch, chans, sizeof(ch));
  snprintf(ch[2].name, sizeof(ch[2].name), "en");
  CHECK_EQ_INT(gy_data_create(&d, &o, err, sizeof(err)), GY_ECONFIG);
  CHECK_MSG(has(err, "'en'"), "%s", err);
  memcpy(ch, chans, sizeof(ch));
  ch[1].nfiles = 0;
  CHECK_EQ_INT(gy_data_create(&d, &o, err, sizeof(err)), GY_ECONFIG);
  CHECK_MSG(has(err, "'code'"), "%s", err);
  memcpy(ch, chans, sizeof(ch));
  gy_corrupt_t bad = {.channel = 3, .first = 0, .last = 10, .kind = GY_CORRUPT_REPEAT};
  o.ncorrupt = 1;
  o.corrupt = &bad;
  CHECK_EQ_INT(gy_data_create(&d, &o, err, sizeof(err)), GY_ECONFIG);
  bad.channel = 0;
  bad.first = 10;
  CHECK_EQ_INT(gy_data_create(&d, &o, err, sizeof(err)), GY_ECONFIG);
  o = base_opts(ch, 0);
  CHECK_EQ_INT(gy_data_create(&d, &o, err, sizeof(err)), GY_ECONFIG);
  o = base_opts(ch, 3);
  o.seq_len = 0;
  CHECK_EQ_INT(gy_data_create(&d, &o, err, sizeof(err)), GY_ECONFIG);
  o = base_opts(ch, 3);
  o.vocab_size = 70000;
  CHECK_EQ_INT(gy_data_create(&d, &o, err, sizeof(err)), GY_ECONFIG);
  CHECK(d == NULL);
  free(p);
  free(ps);
  free(pm);
  free(pc);
}

static void test_unigram(void) {
  /* p = 1/2, 1/4, 1/4: H = 1.5 ln 2. */
  uint16_t t[8] = {0, 0, 1, 0, 2, 1, 0, 2};
  char *p = write_shard("uni.bin", t, 8);
  char *files[1] = {p};
  gy_channel_opts_t one = chans[0];
  one.files = files;
  one.nfiles = 1;
  one.val_file = NULL;
  gy_data_opts_t o = base_opts(&one, 1);
  o.seq_len = 4;
  gy_data_t *d = make(&o);
  CHECK_NEAR(gy_data_unigram_nats(d, 0), 1.5 * log(2.0), 1e-12);
  gy_data_destroy(d);
  /* Uniform over 256 byte values: ln 256. */
  uint16_t u[512];
  for (int k = 0; k < 512; k++)
    u[k] = (uint16_t)(k % 256);
  char *pu = write_shard("uniform.bin", u, 512);
  files[0] = pu;
  d = make(&o);
  CHECK_NEAR(gy_data_unigram_nats(d, 0), log(256.0), 1e-12);
  gy_data_destroy(d);
  /* Real text over two shards equals the histogram of the whole file. */
  o = base_opts(chans, 3);
  d = make(&o);
  double hist[V] = {0}, h = 0;
  for (size_t k = 0; k < stream_n[0]; k++)
    hist[stream[0][k]] += 1;
  for (int v = 0; v < V; v++)
    if (hist[v] > 0) h -= hist[v] / (double)stream_n[0] * log(hist[v] / (double)stream_n[0]);
  CHECK_NEAR(gy_data_unigram_nats(d, 0), h, 1e-9);
  CHECK(h > 2.5 && h < 5.0); /* English C text: a few nats, far below ln 256 */
  gy_data_destroy(d);
  free(p);
  free(pu);
}

static void test_val(void) {
  gy_data_opts_t o = base_opts(chans, 3);
  o.val_sequences = 5;
  gy_data_t *d = make(&o);
  CHECK_EQ_INT(gy_data_val_count(d, 0), 5);
  CHECK_EQ_INT(gy_data_val_count(d, 1), 0); /* no held-out file */
  uint16_t t[MAXT];
  int bad = 0;
  for (int i = 0; i < 5; i++) {
    gy_data_val_sample(d, 0, i, t);
    bad += memcmp(t, val_tok + (size_t)i * T, sizeof(t)) != 0;
  }
  CHECK_EQ_INT(bad, 0);
  gy_data_val_sample(d, 0, 5, t); /* out of range: zeros, no crash */
  CHECK(all_equal(t, 0));
  gy_data_val_sample(d, 1, 0, t);
  CHECK(all_equal(t, 0));
  gy_data_destroy(d);
  o.val_sequences = 0; /* default 200 */
  d = make(&o);
  CHECK_EQ_INT(gy_data_val_count(d, 0), 200 < (val_n - 1) / T ? 200 : (int)((val_n - 1) / T));
  gy_data_destroy(d);
  o.val_sequences = 1000000; /* more than the file holds */
  d = make(&o);
  CHECK_EQ_INT(gy_data_val_count(d, 0), (int)((val_n - 1) / T));
  int last = gy_data_val_count(d, 0) - 1;
  gy_data_val_sample(d, 0, last, t);
  CHECK(memcmp(t, val_tok + (size_t)last * T, sizeof(t)) == 0);
  gy_data_destroy(d);
  /* Exactly 3*T tokens hold 2 sequences of T+1 (the third lacks its last target); an empty
   * held-out file holds none. */
  char *p3 = write_shard("val3.bin", val_tok, 3 * T);
  char *p0 = write_shard("val0.bin", NULL, 0);
  gy_channel_opts_t one = chans[0];
  one.val_file = p3;
  o = base_opts(&one, 1);
  o.val_sequences = 100;
  d = make(&o);
  CHECK_EQ_INT(gy_data_val_count(d, 0), 2);
  gy_data_destroy(d);
  one.val_file = p0;
  d = make(&o);
  CHECK_EQ_INT(gy_data_val_count(d, 0), 0);
  gy_data_destroy(d);
  /* The same rule for training: 3*T tokens are 2 samples per epoch. */
  char *files[1] = {p3};
  one.files = files;
  one.nfiles = 1;
  one.val_file = NULL;
  d = make(&o);
  CHECK_EQ_INT(gy_data_channel_samples(d, 0), 2);
  gy_data_destroy(d);
  free(p3);
  free(p0);
}

/* create copies opts: the caller may free and reuse everything it passed. */
static void test_copies_opts(void) {
  gy_channel_opts_t *ch = calloc(2, sizeof(*ch));
  for (int c = 0; c < 2; c++) {
    ch[c] = chans[c];
    ch[c].files = calloc((size_t)chans[c].nfiles, sizeof(char *));
    for (int f = 0; f < chans[c].nfiles; f++)
      ch[c].files[f] = strdup(chans[c].files[f]);
    ch[c].val_file = chans[c].val_file ? strdup(chans[c].val_file) : NULL;
  }
  gy_corrupt_t *cor = calloc(1, sizeof(*cor));
  *cor = (gy_corrupt_t){-1, 3, 4, GY_CORRUPT_EMPTY_LINES, -1};
  gy_data_opts_t o = base_opts(ch, 2);
  o.ncorrupt = 1;
  o.corrupt = cor;
  gy_data_t *d = make(&o);
  for (int c = 0; c < 2; c++) {
    for (int f = 0; f < ch[c].nfiles; f++) {
      memset(ch[c].files[f], 'x', strlen(ch[c].files[f]));
      free(ch[c].files[f]);
    }
    free(ch[c].files);
    free(ch[c].val_file);
  }
  memset(ch, 0, 2 * sizeof(*ch));
  free(ch);
  cor->kind = GY_CORRUPT_REPEAT;
  free(cor);
  CHECK(strcmp(gy_data_channel_name(d, 1), "code") == 0);
  uint16_t t[MAXT];
  gy_data_sample(d, 3, t, NULL);
  CHECK(all_equal(t, '\n'));
  gy_data_sample(d, 4, t, NULL);
  CHECK(matches_stream(d, 4, t));
  CHECK_EQ_INT(gy_data_val_count(d, 0), 200);
  gy_data_destroy(d);
}

int main(void) {
  setup();
  RUN(test_accessors);
  RUN(test_pure_function);
  RUN(test_skip);
  RUN(test_mixing);
  RUN(test_permutation);
  RUN(test_corruption);
  RUN(test_boundaries);
  RUN(test_errors);
  RUN(test_unigram);
  RUN(test_val);
  RUN(test_copies_opts);
  for (int c = 0; c < 3; c++)
    free(stream[c]);
  free(val_tok);
  free(files_en[0]);
  free(files_en[1]);
  free(files_code[0]);
  free(files_zh[0]);
  free(val_path);
  fx_rmtree(dir);
  free(dir);
  GY_TEST_END();
}
