/* test_provenance: where samples come from and which samples read a region, on real shards
 * written into a temporary folder from real text (glibc headers): the sampler's permutation
 * inverted for many sizes, the document index format (round trip, every validation, staleness),
 * gy_data_provenance() against the tokens gy_data_sample() returns and against the document
 * index, the stream/file offset conversions, and gy_data_region_ids() against a brute-force scan
 * of every id, over several channels, weights, regions, shuffles and id ranges of 3+ epochs. */
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "common/err.h"
#include "tests/test.h"
#include "tests/unit/data_fixture.h"
#include "worker/data.h"
#include "worker/data_internal.h"
#include "worker/docindex.h"
#include "worker/shard.h"

#define T 64
#define V 256

static char *dir;
static char err[1024];

/* Three channels: en = stdio.h as two shards with an empty shard between them, code = stdlib.h,
 * zh = string.h. */
static uint16_t *stream[3];
static size_t stream_n[3];
static size_t en_split;
static char *files_en[3], *files_code[1], *files_zh[1];
static gy_channel_opts_t chans[3];

/* The en stream's documents: 0 and every position just after a "\n\n" (the joiner belongs to the
 * document before it, as gyro-prep writes them). */
static uint64_t *en_starts;
static size_t en_nstarts;

static char *write_shard(const char *name, const uint16_t *t, size_t n) {
  char *p = fx_path(dir, name);
  char e[512];
  if (gy_shard_write(p, t, n, e, sizeof(e)) != GY_OK) {
    fprintf(stderr, "setup: %s\n", e);
    exit(1);
  }
  return p;
}

/* Writes the document index of the shard at path, which holds stream tokens [off, off + n) of
 * the en stream. */
static void write_en_index(const char *path, uint64_t off, uint64_t n) {
  gy_docindex_t ix;
  REQUIRE(gy_docindex_build(&ix, en_starts, en_nstarts, off, n) == GY_OK);
  ix.crc = gy_docindex_crc(stream[0] + off, (size_t)n);
  char *ip = gy_docindex_path(path);
  REQUIRE(ip && gy_docindex_write(ip, &ix, err, sizeof(err)) == GY_OK);
  free(ip);
  gy_docindex_free(&ix);
}

static void write_en_indexes(void) {
  write_en_index(files_en[0], 0, en_split);
  write_en_index(files_en[1], en_split, 0);
  write_en_index(files_en[2], en_split, stream_n[0] - en_split);
}

static void setup(void) {
  dir = fx_tmpdir();
  stream[0] = fx_text_tokens("/usr/include/stdio.h", &stream_n[0]);
  stream[1] = fx_text_tokens("/usr/include/stdlib.h", &stream_n[1]);
  stream[2] = fx_text_tokens("/usr/include/string.h", &stream_n[2]);
  en_split = stream_n[0] / 2 + 13;
  files_en[0] = write_shard("en_000.bin", stream[0], en_split);
  files_en[1] = write_shard("en_empty.bin", stream[0], 0);
  files_en[2] = write_shard("en_001.bin", stream[0] + en_split, stream_n[0] - en_split);
  files_code[0] = write_shard("code_000.bin", stream[1], stream_n[1]);
  files_zh[0] = write_shard("zh_000.bin", stream[2], stream_n[2]);
  const char *names[3] = {"en", "code", "zh"};
  char **files[3] = {files_en, files_code, files_zh};
  int nfiles[3] = {3, 1, 1};
  for (int c = 0; c < 3; c++) {
    memset(&chans[c], 0, sizeof(chans[c]));
    snprintf(chans[c].name, sizeof(chans[c].name), "%s", names[c]);
    chans[c].weight = 1.0;
    chans[c].nfiles = nfiles[c];
    chans[c].files = files[c];
    chans[c].shuffle = 1;
  }
  en_starts = malloc((stream_n[0] + 1) * sizeof(uint64_t));
  en_starts[en_nstarts++] = 0;
  for (size_t i = 0; i + 2 < stream_n[0]; i++)
    if (stream[0][i] == '\n' && stream[0][i + 1] == '\n' && i + 2 > en_starts[en_nstarts - 1])
      en_starts[en_nstarts++] = i + 2;
}

static gy_data_opts_t base_opts(gy_channel_opts_t *ch, int n) {
  gy_data_opts_t o;
  memset(&o, 0, sizeof(o));
  o.nchannels = n;
  o.channels = ch;
  o.seq_len = T;
  o.seed = 1337;
  o.vocab_size = V;
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

/* ---- the permutation's inverse ---- */

static void test_unpermute(void) {
  static const uint64_t sizes[] = {1,   2,   3,    4,    5,    7,    8,    15,    16,   17,
                                   31,  33,  63,   64,   65,   100,  255,  256,   257,  491,
                                   492, 999, 1023, 1024, 1025, 4095, 4097, 65535, 65537};
  uint8_t *seen = malloc(65537);
  for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
    uint64_t n = sizes[s];
    for (int trial = 0; trial < 3; trial++) {
      uint64_t seed = 1337 + (uint64_t)trial * 7919, epoch = (uint64_t)trial * 3;
      int c = trial;
      memset(seen, 0, n);
      int bad = 0, dup = 0;
      for (uint64_t i = 0; i < n; i++) {
        uint64_t k = gy__data_permute(seed, c, epoch, i, n);
        if (k >= n) {
          bad++;
          continue;
        }
        dup += seen[k]++ != 0;
        bad += gy__data_unpermute(seed, c, epoch, k, n) != i;
      }
      CHECK_MSG(bad == 0 && dup == 0, "n %llu trial %d: %d wrong inverses, %d repeats",
                (unsigned long long)n, trial, bad, dup);
    }
  }
  free(seen);
  /* Large domains: sampled, both directions. */
  static const uint64_t big[] = {(1ULL << 40) + 7, 1000000000039ULL, (1ULL << 33) - 1,
                                 (1ULL << 62) + 12345};
  for (size_t s = 0; s < sizeof(big) / sizeof(big[0]); s++) {
    uint64_t n = big[s], x = 0x9e3779b97f4a7c15ULL;
    int bad = 0;
    for (int t = 0; t < 2000; t++) {
      x = x * 6364136223846793005ULL + 1442695040888963407ULL;
      uint64_t i = x % n;
      uint64_t k = gy__data_permute(42, 1, 5, i, n);
      bad += k >= n || gy__data_unpermute(42, 1, 5, k, n) != i;
      bad += gy__data_permute(42, 1, 5, gy__data_unpermute(42, 1, 5, i, n), n) != i;
    }
    CHECK_MSG(bad == 0, "n %llu: %d wrong", (unsigned long long)n, bad);
  }
  /* The permutation the data set uses is this one: a shuffled channel's draws in epoch 0. */
  gy_data_opts_t o = base_opts(chans, 1);
  gy_data_t *d = make(&o);
  uint64_t n = gy_data_channel_samples(d, 0);
  for (uint64_t id = 0; id < n; id++) {
    uint64_t e, k;
    gy_data_sample_locate(d, id, NULL, &e, &k);
    CHECK(e == 0 && k == gy__data_permute(o.seed, 0, 0, id, n));
  }
  gy_data_destroy(d);
}

/* ---- the document index format ---- */

static void test_docindex_format(void) {
  char *p = gy_docindex_path("/x/train_007.bin");
  CHECK(p && strcmp(p, "/x/train_007.docs") == 0);
  free(p);
  p = gy_docindex_path("/x/shard");
  CHECK(p && strcmp(p, "/x/shard.docs") == 0);
  free(p);

  /* Cutting documents 0@0, 1@10, 2@25, 3@40 into shards of 20 tokens. */
  const uint64_t starts[] = {0, 10, 25, 40};
  gy_docindex_t ix;
  REQUIRE(gy_docindex_build(&ix, starts, 4, 0, 20) == GY_OK);
  CHECK(ix.first_doc == 0 && ix.count == 2 && ix.offsets[0] == 0 && ix.offsets[1] == 10);
  gy_docindex_free(&ix);
  REQUIRE(gy_docindex_build(&ix, starts, 4, 20, 20) == GY_OK); /* document 1 continues */
  CHECK(ix.first_doc == 1 && ix.count == 2 && ix.offsets[0] == 0 && ix.offsets[1] == 5);
  gy_docindex_free(&ix);
  REQUIRE(gy_docindex_build(&ix, starts, 4, 40, 7) == GY_OK); /* document 3 starts the shard */
  CHECK(ix.first_doc == 3 && ix.count == 1 && ix.offsets[0] == 0);
  gy_docindex_free(&ix);
  CHECK(gy_docindex_build(&ix, starts, 0, 0, 5) == GY_EINVAL);

  /* Round trip, and the file's bytes as docindex.h lays them out. */
  uint16_t tok[20];
  for (int i = 0; i < 20; i++)
    tok[i] = (uint16_t)('a' + i);
  REQUIRE(gy_docindex_build(&ix, starts, 4, 20, 20) == GY_OK);
  ix.crc = gy_docindex_crc(tok, 20);
  char *path = fx_path(dir, "fmt.docs");
  REQUIRE(gy_docindex_write(path, &ix, err, sizeof(err)) == GY_OK);
  gy_docindex_free(&ix);
  size_t n;
  unsigned char *b = fx_read(path, &n);
  REQUIRE(b && n == 40 + 2 * 8);
  CHECK(memcmp(b, "GYDOCS1\0", 8) == 0);
  CHECK(b[8] == 20 && b[16] == (gy_docindex_crc(tok, 20) & 0xff) && b[20] == 0 && b[24] == 1 &&
        b[32] == 2 && b[40] == 0 && b[48] == 5);
  gy_docindex_t r;
  REQUIRE(gy_docindex_read(&r, path, err, sizeof(err)) == GY_OK);
  CHECK(r.ntokens == 20 && r.first_doc == 1 && r.count == 2 && r.offsets[1] == 5);
  CHECK(gy_docindex_check(&r, tok, 20, err, sizeof(err)) == GY_OK);
  tok[7] ^= 1;
  CHECK(gy_docindex_check(&r, tok, 20, err, sizeof(err)) == GY_EMISMATCH);
  CHECK(strstr(err, "stale") && strstr(err, "CRC"));
  CHECK(gy_docindex_check(&r, tok, 19, err, sizeof(err)) == GY_EMISMATCH);
  CHECK(strstr(err, "20 tokens"));
  gy_docindex_free(&r);

  /* Every malformation is refused with the file named. */
  struct {
    size_t at;
    unsigned char val;
    size_t len; /* 0: keep */
    const char *why;
  } bad[] = {
      {0, 'X', 0, "magic"},           {20, 1, 0, "reserved"}, {32, 3, 0, "entries"},
      {40, 1, 0, "entry 0"},          {48, 0, 0, "entry 1"},  {48, 20, 0, "entry 1"},
      {0, 0, 30, "truncated header"}, {0, 0, 50, "entries"},
  };
  for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
    unsigned char c[56];
    memcpy(c, b, sizeof(c));
    if (!bad[k].len) c[bad[k].at] = bad[k].val;
    fx_write(path, c, bad[k].len ? bad[k].len : sizeof(c));
    int rc = gy_docindex_read(&r, path, err, sizeof(err));
    CHECK_MSG(rc == GY_ECORRUPT && strstr(err, path) && strstr(err, bad[k].why), "case %zu: %s: %s",
              k, gy_err_name(rc), err);
    CHECK(r.offsets == NULL);
  }
  free(b);
  unlink(path);
  CHECK(gy_docindex_read(&r, path, err, sizeof(err)) == GY_ENOENT);
  CHECK(strstr(err, path) && strstr(err, "absent"));
  free(path);
}

/* ---- provenance ---- */

/* The T+1 tokens the files say sample p holds: from p->path at p->offset, on into the next
 * files of the channel's list when the sample crosses a boundary. */
static int read_via_files(const gy_provenance_t *p, char **files, int nfiles, uint16_t *out) {
  size_t need = p->length, got = 0;
  uint64_t off = p->offset;
  CHECK(strcmp(p->path, files[p->file]) == 0);
  for (int f = p->file; f < nfiles && got < need; f++, off = 0) {
    gy_shard_t s;
    char e[512];
    if (gy_shard_open(&s, files[f], e, sizeof(e)) != GY_OK) return 0;
    size_t k = s.ntokens - off < need - got ? s.ntokens - off : need - got;
    memcpy(out + got, s.tokens + off, k * sizeof(uint16_t));
    got += k;
    gy_shard_close(&s);
  }
  return got == need;
}

/* The document of the en stream holding position x: the last start <= x. */
static size_t en_doc_of(uint64_t x) {
  size_t lo = 0, hi = en_nstarts;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (en_starts[mid] <= x)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo - 1;
}

static void check_provenance(const gy_data_t *d, int with_docs) {
  char **files[3] = {files_en, files_code, files_zh};
  int nfiles[3] = {3, 1, 1};
  uint16_t a[T + 1], b[T + 1];
  int crossing = 0, bad = 0;
  for (uint64_t id = 0; id < 6000; id++) {
    gy_provenance_t p;
    int c;
    uint64_t e, k;
    gy_data_provenance(d, id, &p);
    gy_data_sample_locate(d, id, &c, &e, &k);
    gy_data_sample(d, id, a, NULL);
    bad += p.channel != c || p.stream != k * T || p.length != T + 1;
    bad += !read_via_files(&p, files[c], nfiles[c], b) || memcmp(a, b, sizeof(a)) != 0;
    /* The sample starts inside its file, never in an empty one. */
    bad += (c == 0 && p.file == 1) ||
           p.offset >= (c == 0 ? (p.file == 0 ? en_split : stream_n[0] - en_split) : stream_n[c]);
    uint64_t s;
    int f;
    uint64_t off;
    bad += gy_data_stream_offset(d, c, p.file, p.offset, &s) != GY_OK || s != p.stream;
    bad += gy_data_file_offset(d, c, p.stream, &f, &off) != GY_OK || f != p.file || off != p.offset;
    if (c == 0 && p.file == 0 && p.offset + T + 1 > en_split) crossing++;
    if (c == 0 && with_docs) {
      size_t x = en_doc_of(p.stream);
      uint64_t end = x + 1 < en_nstarts ? en_starts[x + 1] : stream_n[0];
      bad += p.document != (int64_t)x || p.doc_stream != en_starts[x] ||
             p.doc_length != end - en_starts[x];
    } else {
      bad += p.document != -1 || p.doc_stream != p.stream || p.doc_length != p.length;
    }
  }
  CHECK_MSG(bad == 0, "%d mismatches", bad);
  CHECK(crossing > 0); /* samples crossing the en shard boundary were seen */
}

static void test_provenance(void) {
  gy_data_opts_t o = base_opts(chans, 3);
  gy_data_t *d = make(&o);
  CHECK(gy_data_channel_documents(d, 0) == 0);
  check_provenance(d, 0);

  /* The offset conversions at the edges: the empty file holds no token, the end of a file is a
   * valid stream offset, everything else out of range is refused. */
  uint64_t s, off;
  int f;
  CHECK(gy_data_stream_offset(d, 0, 1, 0, &s) == GY_OK && s == en_split);
  CHECK(gy_data_stream_offset(d, 0, 0, en_split, &s) == GY_OK && s == en_split);
  CHECK(gy_data_stream_offset(d, 0, 0, en_split + 1, &s) == GY_ERANGE);
  CHECK(gy_data_stream_offset(d, 0, 1, 1, &s) == GY_ERANGE);
  CHECK(gy_data_stream_offset(d, 0, 3, 0, &s) == GY_ERANGE);
  CHECK(gy_data_stream_offset(d, 3, 0, 0, &s) == GY_ERANGE);
  CHECK(gy_data_file_offset(d, 0, en_split, &f, &off) == GY_OK && f == 2 && off == 0);
  CHECK(gy_data_file_offset(d, 0, en_split - 1, &f, &off) == GY_OK && f == 0 &&
        off == en_split - 1);
  CHECK(gy_data_file_offset(d, 0, stream_n[0], &f, &off) == GY_ERANGE && f == -1);
  CHECK(gy_data_file_offset(d, -1, 0, &f, &off) == GY_ERANGE && f == -1);
  gy_data_destroy(d);
}

static void test_provenance_documents(void) {
  write_en_indexes();
  gy_data_opts_t o = base_opts(chans, 3);
  gy_data_t *d = make(&o);
  /* A document crosses the en shard split, so it is one entry, not two. */
  CHECK(en_starts[en_doc_of(en_split)] < en_split);
  CHECK_EQ_INT(gy_data_channel_documents(d, 0), en_nstarts);
  CHECK(gy_data_channel_documents(d, 1) == 0 && gy_data_channel_documents(d, 2) == 0);
  check_provenance(d, 1);
  gy_data_destroy(d);
}

/* Checks that en's indexes are ignored (one of them absent, malformed or stale): the data set
 * still loads, and en's samples have no document ids. */
static void check_index_ignored(const char *what) {
  gy_data_opts_t o = base_opts(chans, 3);
  gy_data_t *d = make(&o);
  CHECK_MSG(gy_data_channel_documents(d, 0) == 0, "%s: the index was used", what);
  gy_provenance_t p;
  for (uint64_t id = 0; id < 300; id++) {
    gy_data_provenance(d, id, &p);
    if (p.channel == 0) CHECK(p.document == -1 && p.doc_length == T + 1);
  }
  gy_data_destroy(d);
}

static void test_stale_index(void) {
  size_t n2 = stream_n[0] - en_split;
  uint16_t *t = malloc((n2 + 100) * sizeof(uint16_t));
  char e[512];
  char *ip = gy_docindex_path(files_en[2]);

  /* A token changed in place: same size, other CRC. */
  write_en_indexes();
  memcpy(t, stream[0] + en_split, n2 * sizeof(uint16_t));
  t[n2 / 2] = (uint16_t)(t[n2 / 2] == 'x' ? 'y' : 'x');
  REQUIRE(gy_shard_write(files_en[2], t, n2, e, sizeof(e)) == GY_OK);
  check_index_ignored("changed token");

  /* Junk spliced in: more tokens than the index describes. */
  memmove(t + 600, t + 500, (n2 - 500) * sizeof(uint16_t));
  for (int i = 0; i < 100; i++)
    t[500 + i] = 0;
  REQUIRE(gy_shard_write(files_en[2], t, n2 + 100, e, sizeof(e)) == GY_OK);
  check_index_ignored("spliced junk");

  /* The shard restored: the index is good again. */
  REQUIRE(gy_shard_write(files_en[2], stream[0] + en_split, n2, e, sizeof(e)) == GY_OK);
  gy_data_opts_t o = base_opts(chans, 3);
  gy_data_t *d = make(&o);
  CHECK_EQ_INT(gy_data_channel_documents(d, 0), en_nstarts);
  gy_data_destroy(d);

  /* An index absent, or malformed. */
  unlink(ip);
  check_index_ignored("absent index");
  fx_write(ip, "GYDOCS1", 8);
  check_index_ignored("truncated index");
  write_en_indexes();
  free(ip);
  free(t);
}

/* ---- region ids against brute force ---- */

typedef struct {
  uint64_t *v;
  size_t n, cap;
  size_t stop_after; /* 0: never stop */
} idlist_t;

static int collect(void *ctx, uint64_t id) {
  idlist_t *l = ctx;
  if (l->n == l->cap) {
    l->cap = l->cap ? l->cap * 2 : 256;
    l->v = realloc(l->v, l->cap * sizeof(uint64_t));
  }
  l->v[l->n++] = id;
  return l->stop_after && l->n == l->stop_after ? 7 : 0;
}

/* Compares gy_data_region_ids() with a scan of every id in [from, to). */
static void check_region(const gy_data_t *d, int ch, uint64_t first, uint64_t last, uint64_t from,
                         uint64_t to, const char *what) {
  idlist_t want = {0}, got = {0};
  for (uint64_t id = from; id < to; id++) {
    int c;
    uint64_t k;
    gy_data_sample_locate(d, id, &c, NULL, &k);
    if (c == ch && k * T < last && k * T + T + 1 > first) collect(&want, id);
  }
  int rc = gy_data_region_ids(d, ch, first, last, from, to, collect, &got);
  CHECK_MSG(rc == 0 && got.n == want.n &&
                (want.n == 0 || memcmp(got.v, want.v, want.n * sizeof(uint64_t)) == 0),
            "%s: channel %d region [%llu, %llu) ids [%llu, %llu): rc %d, %zu ids, want %zu", what,
            ch, (unsigned long long)first, (unsigned long long)last, (unsigned long long)from,
            (unsigned long long)to, rc, got.n, want.n);
  free(want.v);
  free(got.v);
}

/* The epoch of channel c's first draw at or after id. */
static uint64_t epoch_at(const gy_data_t *d, int c, uint64_t id) {
  uint64_t e;
  while (gy_data_sample_channel(d, id) != c)
    id++;
  gy_data_sample_locate(d, id, NULL, &e, NULL);
  return e;
}

static void test_region_ids(void) {
  static const double weights[][3] = {{1, 1, 1}, {0.5, 0.3, 0.2}, {0.05, 0.9, 0.05}, {3, 1, 2}};
  static const int shuffles[][3] = {{1, 1, 1}, {0, 0, 0}, {1, 0, 1}};
  gy_channel_opts_t ch[3];
  memcpy(ch, chans, sizeof(ch));
  int multi_epoch = 0; /* channels checked over 3+ epochs */
  for (size_t w = 0; w < sizeof(weights) / sizeof(weights[0]); w++)
    for (size_t s = 0; s < sizeof(shuffles) / sizeof(shuffles[0]); s++) {
      for (int c = 0; c < 3; c++) {
        ch[c].weight = weights[w][c];
        ch[c].shuffle = shuffles[s][c];
      }
      gy_data_opts_t o = base_opts(ch, 3);
      o.seed = 1000 + w * 10 + s;
      gy_data_t *d = make(&o);
      char what[64];
      snprintf(what, sizeof(what), "weights %zu shuffle %zu", w, s);
      for (int c = 0; c < 3; c++) {
        uint64_t n = gy_data_channel_tokens(d, c), N = gy_data_channel_samples(d, c);
        /* An id range of 3+ epochs of this channel, starting and ending mid-epoch. */
        uint64_t from = 313, to = from;
        uint64_t e_from = epoch_at(d, c, from);
        while (epoch_at(d, c, to) < e_from + 3)
          to += 997;
        multi_epoch++;
        const uint64_t regions[][2] = {
            {0, 1},                         /* the first token */
            {0, n},                         /* everything */
            {T, T + 1},                     /* one token in two samples */
            {T * 10 + 3, T * 10 + 4},       /* one token in one sample */
            {1000, 1777},                   /* a document-sized region */
            {n - 1, n},                     /* the last token */
            {n - 300, n},                   /* the tail, past the last sample */
            {(N - 1) * T + 1, n},           /* the last sample's own tokens */
            {en_split - 40, en_split + 40}, /* across en's shard boundary */
        };
        for (size_t r = 0; r < sizeof(regions) / sizeof(regions[0]); r++) {
          uint64_t a = regions[r][0], b = regions[r][1] < n ? regions[r][1] : n;
          if (a >= b) continue;
          check_region(d, c, a, b, from, to, what);
          check_region(d, c, a, b, 0, 50, what);
          check_region(d, c, a, b, to - 5, to, what);
        }
      }
      gy_data_destroy(d);
    }
  CHECK_EQ_INT(multi_epoch, 4 * 3 * 3);
}

static void test_region_ids_edges(void) {
  gy_data_opts_t o = base_opts(chans, 3);
  gy_data_t *d = make(&o);
  idlist_t got = {0};
  CHECK(gy_data_region_ids(d, 3, 0, 10, 0, 100, collect, &got) == GY_EINVAL);
  CHECK(gy_data_region_ids(d, -1, 0, 10, 0, 100, collect, &got) == GY_EINVAL);
  CHECK(gy_data_region_ids(d, 0, 0, 10, 0, 100, NULL, NULL) == GY_EINVAL);
  CHECK(got.n == 0);
  /* Empty ranges call nothing. */
  CHECK(gy_data_region_ids(d, 0, 10, 10, 0, 100, collect, &got) == 0 && got.n == 0);
  CHECK(gy_data_region_ids(d, 0, 0, 10, 100, 100, collect, &got) == 0 && got.n == 0);
  /* A region past the channel's last sample holds nothing. */
  uint64_t n = gy_data_channel_tokens(d, 0);
  CHECK(gy_data_region_ids(d, 0, n + 5, n + 100, 0, 100000, collect, &got) == 0 && got.n == 0);
  /* fn's nonzero return stops the walk and is returned. */
  got.stop_after = 3;
  CHECK(gy_data_region_ids(d, 0, 0, n, 0, 100000, collect, &got) == 7 && got.n == 3);
  free(got.v);
  /* A far id range costs epochs, not ids: ids around 10^15 are found and are right. */
  idlist_t far = {0};
  uint64_t base = 1000000000000000ULL;
  CHECK(gy_data_region_ids(d, 0, 5000, 5100, base, base + 200000, collect, &far) == 0);
  CHECK(far.n > 0);
  for (size_t i = 0; i < far.n; i++) {
    int c;
    uint64_t k;
    gy_data_sample_locate(d, far.v[i], &c, NULL, &k);
    CHECK(c == 0 && k * T < 5100 && k * T + T + 1 > 5000 && far.v[i] >= base &&
          (i == 0 || far.v[i] > far.v[i - 1]));
  }
  free(far.v);
  /* Every id of a document's region reads it: provenance and region_ids agree. */
  write_en_indexes();
  gy_data_destroy(d);
  d = make(&o);
  for (uint64_t id = 0; id < 200; id++) {
    gy_provenance_t p;
    gy_data_provenance(d, id, &p);
    idlist_t l = {0};
    CHECK(gy_data_region_ids(d, p.channel, p.doc_stream, p.doc_stream + p.doc_length, 0, 200,
                             collect, &l) == 0);
    int found = 0;
    for (size_t i = 0; i < l.n; i++)
      found |= l.v[i] == id;
    CHECK_MSG(found, "id %llu not among its document's ids", (unsigned long long)id);
    free(l.v);
  }
  gy_data_destroy(d);
}

int main(void) {
  setup();
  RUN(test_unpermute);
  RUN(test_docindex_format);
  RUN(test_provenance);
  RUN(test_provenance_documents);
  RUN(test_stale_index);
  RUN(test_region_ids);
  RUN(test_region_ids_edges);
  fx_rmtree(dir);
  free(dir);
  for (int c = 0; c < 3; c++)
    free(stream[c]);
  for (int f = 0; f < 3; f++)
    free(files_en[f]);
  free(files_code[0]);
  free(files_zh[0]);
  free(en_starts);
  GY_TEST_END();
}
