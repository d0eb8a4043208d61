/*
 * data: training channels, the deterministic sample order, skip lists, corruption injection
 * and held-out sets.
 *
 * API, in order: the skip list (gy_skiplist_*), corruption kind names, gy_data_create() /
 * gy_data_destroy(), channel accessors, the sampler (gy_data_sample_channel, _locate, _sample,
 * _batch_ids), provenance and the sampler's inverse (gy_data_provenance, _stream_offset,
 * _file_offset, _region_ids), held-out sequences and the unigram entropy.
 *
 * The sample order. Every training sample has a global id 0, 1, 2, ... The channel of id p is
 * pattern[p % P], where the pattern is built once from the mixing weights turned into small
 * integers w_c (P = sum w_c) by smooth weighted round-robin (nginx's), which spreads each
 * channel evenly over the pattern. The number of earlier ids of the same channel is
 * j = (p / P) * w_c + rank[p % P], where rank is the position's count within the pattern, so
 * locating an id is O(1) and needs no state. A channel's training shards are concatenated into
 * one token stream holding N_c = (ntokens - 1) / T samples per epoch; sample k is the tokens
 * [k*T, k*T + T + 1), which may cross a shard boundary. The j-th sample drawn from a channel is
 * in epoch e = j / N_c at position i = j % N_c, and its sample index is perm(seed, c, e, i): a
 * keyed 4-round Feistel network over the smallest even-bit power of two >= N_c, walked until it
 * lands inside [0, N_c) (cycle walking keeps it a bijection of [0, N_c)), or i itself when the
 * channel does not shuffle. So the tokens of an id are a pure function of (seed, weights,
 * shards, id): any rank can compute what any step consumes on any rank, after any restart.
 *
 * The inverse. Every step above is a bijection, so the ids that read a region of a channel's
 * stream are found without scanning ids: for each sample index k overlapping the region and
 * each epoch e the id range reaches, the Feistel rounds run backwards (cycle walking backwards:
 * apply the inverse until the value lands in [0, N_c)) give i, then j = e*N_c + i, and the id is
 * (j / w_c) * P + occ_c[j % w_c], where occ_c lists the pattern positions of channel c in order.
 * Sorting each epoch's i gives the ids in increasing order, since the id grows with j.
 *
 * Documents. gyro-prep writes X.docs beside each training shard X.bin (worker/docindex.h). A
 * channel's indexes are loaded when every shard has one that is well formed and matches the
 * shard (token count and CRC-32C) and are merged into one sorted table of (stream offset,
 * ordinal) document starts; an entry at offset 0 whose ordinal is the previous shard's last
 * ordinal is that document continuing and is not a new start. Indexes are all or nothing per
 * channel, because a document's extent needs its neighbours: one absent, malformed or stale
 * index (a shard changed after gyro-prep) leaves the channel without document ids, and one
 * warning names the file and why. A channel assembled from several gyro-prep runs has ordinals
 * that restart (and a run's first document is taken for a continuation when its ordinal happens
 * to equal the last one before it); the stream offsets still tell its documents apart.
 *
 * Skip lists hold sorted, merged (never overlapping nor adjacent) half-open ranges; the n-th
 * unskipped id is found by walking the ranges in order. A step consumes the unskipped ids
 * (step*world + rank)*B ... + B - 1, so a skipped id is replaced by the next one and batch
 * shapes never change.
 *
 * Invariants after gy_data_create(): every shard is mapped and validated, every token is
 * < vocab_size, every channel has at least T + 1 tokens, the options are a deep copy owned by
 * the gy_data_t, a channel's document table is empty or covers its whole stream (doc_start[0]
 * == 0, strictly increasing), and nothing below allocates or fails except
 * gy_data_region_ids() (its sort buffer): the sampler functions are pure reads and safe to call
 * from several threads at once.
 */
#include "worker/data.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/log.h"
#include "worker/data_internal.h"
#include "worker/docindex.h"
#include "worker/shard.h"

#define DEFAULT_VAL_SEQUENCES 200
#define WEIGHT_SCALE 1000
#define MAX_VOCAB 65536

/* ---------------------------------------------------------------------------------------- */
/* skip list                                                                                 */
/* ---------------------------------------------------------------------------------------- */

void gy_skiplist_init(gy_skiplist_t *s) {
  s->r = NULL;
  s->n = 0;
  s->cap = 0;
}

/* Releases the ranges; s is empty (and reusable) afterwards. */
void gy_skiplist_free(gy_skiplist_t *s) {
  if (!s) return;
  free(s->r);
  gy_skiplist_init(s);
}

/* First index i with r[i].last >= x (ranges that end before x cannot touch [x, ...)). */
static size_t lower_by_last(const gy_skiplist_t *s, uint64_t x) {
  size_t lo = 0, hi = s->n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (s->r[mid].last < x)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

int gy_skiplist_add(gy_skiplist_t *s, uint64_t first, uint64_t last) {
  if (first >= last) return GY_EINVAL;
  /* Ranges i .. j-1 overlap or touch [first, last) and merge with it. */
  size_t i = lower_by_last(s, first), j = i;
  while (j < s->n && s->r[j].first <= last)
    j++;
  if (i < j) {
    if (s->r[i].first < first) first = s->r[i].first;
    if (s->r[j - 1].last > last) last = s->r[j - 1].last;
    s->r[i].first = first;
    s->r[i].last = last;
    memmove(&s->r[i + 1], &s->r[j], (s->n - j) * sizeof(gy_range_t));
    s->n -= j - i - 1;
    return GY_OK;
  }
  if (s->n == s->cap) {
    size_t cap = s->cap ? s->cap * 2 : 8;
    gy_range_t *r = realloc(s->r, cap * sizeof(gy_range_t));
    if (!r) return GY_ENOMEM;
    s->r = r;
    s->cap = cap;
  }
  memmove(&s->r[i + 1], &s->r[i], (s->n - i) * sizeof(gy_range_t));
  s->r[i].first = first;
  s->r[i].last = last;
  s->n++;
  return GY_OK;
}

int gy_skiplist_contains(const gy_skiplist_t *s, uint64_t id) {
  if (!s || id == UINT64_MAX) return 0; /* ranges are half-open: none holds the last id */
  /* The first range ending after id is the only one that can hold it. */
  size_t i = lower_by_last(s, id + 1);
  return i < s->n && s->r[i].first <= id && id < s->r[i].last;
}

uint64_t gy_skiplist_map(const gy_skiplist_t *s, uint64_t n) {
  uint64_t p = n;
  if (!s) return p;
  /* Walking in order, p is the answer if no range starts at or before it; a range that does
   * pushes it past the range's ids. Ranges are disjoint and sorted, so each is seen once. */
  for (size_t i = 0; i < s->n; i++) {
    if (s->r[i].first > p) break;
    p += s->r[i].last - s->r[i].first;
  }
  return p;
}

uint64_t gy_skiplist_count(const gy_skiplist_t *s) {
  uint64_t c = 0;
  if (!s) return 0;
  for (size_t i = 0; i < s->n; i++)
    c += s->r[i].last - s->r[i].first;
  return c;
}

/* ---------------------------------------------------------------------------------------- */
/* corruption kinds                                                                          */
/* ---------------------------------------------------------------------------------------- */

static const char *const corrupt_names[] = {"random_bytes", "binary_noise", "repeat",
                                            "empty_lines"};
#define NCORRUPT_KINDS ((int)(sizeof(corrupt_names) / sizeof(corrupt_names[0])))

const char *gy_corrupt_kind_name(gy_corrupt_kind_t k) {
  if ((int)k < 0 || (int)k >= NCORRUPT_KINDS) return "unknown";
  return corrupt_names[k];
}

int gy_corrupt_kind_parse(const char *s) {
  if (!s) return -1;
  for (int k = 0; k < NCORRUPT_KINDS; k++)
    if (strcmp(s, corrupt_names[k]) == 0) return k;
  return -1;
}

/* ---------------------------------------------------------------------------------------- */
/* hashing                                                                                   */
/* ---------------------------------------------------------------------------------------- */

/* splitmix64's finaliser: a cheap, well-mixed bijection of 64-bit words. */
static uint64_t mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

static uint64_t hash3(uint64_t a, uint64_t b, uint64_t c) {
  return mix64(mix64(mix64(a) ^ b) ^ c);
}

/* ---------------------------------------------------------------------------------------- */
/* the data set                                                                              */
/* ---------------------------------------------------------------------------------------- */

typedef struct {
  int nshards;
  gy_shard_t *shards;
  uint64_t *starts; /* nshards + 1 stream offsets: shard s holds [starts[s], starts[s+1]) */
  uint64_t ntokens;
  uint64_t nsamples;   /* N_c per epoch */
  int half_bits;       /* Feistel half width: the domain is 2^(2*half_bits) >= nsamples */
  uint64_t w;          /* integer mixing weight */
  double unigram;      /* nats/token */
  uint64_t ndocs;      /* document starts in the stream; 0: no document index */
  uint64_t *doc_start; /* ndocs stream offsets, strictly increasing, doc_start[0] == 0 */
  uint64_t *doc_ord;   /* their ordinals */
  int has_val;
  gy_shard_t val;
  int val_count;
} channel_t;

struct gy_data {
  gy_data_opts_t opts; /* deep copy; channels and corrupt below are owned */
  channel_t ch[GY_MAX_CHANNELS];
  uint32_t P;       /* pattern length = sum of integer weights */
  uint8_t *pattern; /* P channel indices */
  uint32_t *rank;   /* rank[k]: positions before k in the pattern with the same channel */
  uint32_t *occ;    /* occ[occ_start[c] + r]: position of channel c's r-th slot in the pattern */
  uint32_t occ_start[GY_MAX_CHANNELS + 1];
};

static void free_opts(gy_data_opts_t *o) {
  if (o->channels) {
    for (int c = 0; c < o->nchannels; c++) {
      gy_channel_opts_t *ch = &o->channels[c];
      if (ch->files)
        for (int f = 0; f < ch->nfiles; f++)
          free(ch->files[f]);
      free(ch->files);
      free(ch->val_file);
    }
  }
  free(o->channels);
  free(o->corrupt);
  memset(o, 0, sizeof(*o));
}

/* Deep-copies src into dst (strings included). On failure dst holds nothing to free. */
static int copy_opts(gy_data_opts_t *dst, const gy_data_opts_t *src) {
  *dst = *src;
  dst->channels = NULL;
  dst->corrupt = NULL;
  dst->channels = calloc((size_t)src->nchannels, sizeof(gy_channel_opts_t));
  if (!dst->channels) goto err;
  for (int c = 0; c < src->nchannels; c++) {
    const gy_channel_opts_t *s = &src->channels[c];
    gy_channel_opts_t *d = &dst->channels[c];
    *d = *s;
    d->files = NULL;
    d->val_file = NULL;
    if (s->nfiles > 0) {
      d->files = calloc((size_t)s->nfiles, sizeof(char *));
      if (!d->files) {
        d->nfiles = 0;
        goto err;
      }
      for (int f = 0; f < s->nfiles; f++)
        if (s->files[f] && !(d->files[f] = strdup(s->files[f]))) goto err;
    }
    if (s->val_file && !(d->val_file = strdup(s->val_file))) goto err;
  }
  if (src->ncorrupt > 0) {
    dst->corrupt = malloc((size_t)src->ncorrupt * sizeof(gy_corrupt_t));
    if (!dst->corrupt) goto err;
    memcpy(dst->corrupt, src->corrupt, (size_t)src->ncorrupt * sizeof(gy_corrupt_t));
  }
  return GY_OK;

err:
  free_opts(dst);
  return GY_ENOMEM;
}

/* Checks every token of s against the vocabulary and adds them to hist (may be NULL). */
static int scan_tokens(const gy_shard_t *s, int vocab, uint64_t *hist, const char *chname,
                       const char *path, char *errmsg, size_t errlen) {
  const uint16_t *t = s->tokens;
  for (size_t k = 0; k < s->ntokens; k++) {
    if (t[k] >= vocab) {
      gy_errmsg(errmsg, errlen,
                "channel '%s': shard %s: token %u at position %zu is outside the vocabulary "
                "(vocab_size %d)",
                chname, path, (unsigned)t[k], k, vocab);
      return GY_ECORRUPT;
    }
    if (hist) hist[t[k]]++;
  }
  return GY_OK;
}

static double entropy_nats(const uint64_t *hist, int vocab, uint64_t total) {
  double h = 0.0;
  if (!total) return 0.0;
  for (int v = 0; v < vocab; v++) {
    if (!hist[v]) continue;
    double p = (double)hist[v] / (double)total;
    h -= p * log(p);
  }
  return h;
}

static uint64_t gcd64(uint64_t a, uint64_t b) {
  while (b) {
    uint64_t t = a % b;
    a = b;
    b = t;
  }
  return a;
}

/* Half the bit width of the Feistel domain for n samples: the smallest even number of bits
 * whose power of two is >= n, halved (at least 1). */
static int half_bits_for(uint64_t n) {
  int bits = 2;
  while (bits < 64 && (1ULL << bits) < n)
    bits += 2;
  return bits / 2;
}

/* Loads the document indexes of channel c's training shards into one table of document starts
 * (see the design block). An absent, malformed or stale index is not an error: the channel then
 * has no document ids, and one warning names the file and why. Only running out of memory
 * fails. */
static int load_docs(gy_data_t *d, int c) {
  const gy_channel_opts_t *co = &d->opts.channels[c];
  channel_t *ch = &d->ch[c];
  gy_docindex_t *ix = calloc((size_t)ch->nshards, sizeof(gy_docindex_t));
  char *path = NULL;
  char why[1024], sub[256];
  uint64_t total = 0;
  int rc = GY_OK;

  if (!ix) return GY_ENOMEM;
  for (int f = 0; f < ch->nshards; f++) {
    path = gy_docindex_path(co->files[f]);
    if (!path) {
      rc = GY_ENOMEM;
      goto out;
    }
    int r = gy_docindex_read(&ix[f], path, why, sizeof(why));
    if (r == GY_ENOMEM) {
      rc = r;
      goto out;
    }
    if (r == GY_OK) {
      r = gy_docindex_check(&ix[f], ch->shards[f].tokens, ch->shards[f].ntokens, sub, sizeof(sub));
      if (r) gy_errmsg(why, sizeof(why), "document index %s: %s", path, sub);
    }
    if (r) {
      gy_log(GY_LOG_WARN, "data", "channel '%s': %s; its samples have no document ids", co->name,
             why);
      goto out;
    }
    free(path);
    path = NULL;
    total += ix[f].count;
  }
  ch->doc_start = malloc((size_t)(total ? total : 1) * sizeof(uint64_t));
  ch->doc_ord = malloc((size_t)(total ? total : 1) * sizeof(uint64_t));
  if (!ch->doc_start || !ch->doc_ord) {
    rc = GY_ENOMEM;
    goto out;
  }
  uint64_t n = 0;
  for (int f = 0; f < ch->nshards; f++)
    for (uint64_t i = 0; i < ix[f].count; i++) {
      uint64_t ord = ix[f].first_doc + i;
      /* Entry 0 carrying the previous shard's last ordinal is that document continuing. */
      if (i == 0 && n > 0 && ord == ch->doc_ord[n - 1]) continue;
      ch->doc_start[n] = ch->starts[f] + ix[f].offsets[i];
      ch->doc_ord[n] = ord;
      n++;
    }
  ch->ndocs = n;

out:
  if (!ch->ndocs) {
    free(ch->doc_start);
    free(ch->doc_ord);
    ch->doc_start = ch->doc_ord = NULL;
  }
  free(path);
  for (int f = 0; f < ch->nshards; f++)
    gy_docindex_free(&ix[f]);
  free(ix);
  return rc;
}

/* Opens the shards of channel c, checks them and fills its stream table and statistics. */
static int open_channel(gy_data_t *d, int c, char *errmsg, size_t errlen) {
  const gy_data_opts_t *o = &d->opts;
  const gy_channel_opts_t *co = &o->channels[c];
  channel_t *ch = &d->ch[c];
  uint64_t *hist = NULL;
  char sub[512];
  int rc;

  ch->shards = calloc((size_t)co->nfiles, sizeof(gy_shard_t));
  ch->starts = calloc((size_t)co->nfiles + 1, sizeof(uint64_t));
  hist = calloc((size_t)o->vocab_size, sizeof(uint64_t));
  if (!ch->shards || !ch->starts || !hist) {
    gy_errmsg(errmsg, errlen, "channel '%s': out of memory", co->name);
    rc = GY_ENOMEM;
    goto err;
  }
  for (int f = 0; f < co->nfiles; f++) {
    if (!co->files[f]) {
      gy_errmsg(errmsg, errlen, "channel '%s': file %d has no path", co->name, f);
      rc = GY_ECONFIG;
      goto err;
    }
    if ((rc = gy_shard_open(&ch->shards[f], co->files[f], sub, sizeof(sub)))) {
      gy_errmsg(errmsg, errlen, "channel '%s': %s", co->name, sub);
      goto err;
    }
    ch->nshards = f + 1;
    if ((rc = scan_tokens(&ch->shards[f], o->vocab_size, hist, co->name, co->files[f], errmsg,
                          errlen)))
      goto err;
    ch->starts[f + 1] = ch->starts[f] + ch->shards[f].ntokens;
  }
  ch->ntokens = ch->starts[co->nfiles];
  if (ch->ntokens < (uint64_t)o->seq_len + 1) {
    gy_errmsg(errmsg, errlen,
              "channel '%s': %llu training tokens in %d file(s) (first %s), fewer than one sample "
              "of seq_len + 1 = %d tokens",
              co->name, (unsigned long long)ch->ntokens, co->nfiles, co->files[0], o->seq_len + 1);
    rc = GY_ECONFIG;
    goto err;
  }
  ch->nsamples = (ch->ntokens - 1) / (uint64_t)o->seq_len;
  ch->half_bits = half_bits_for(ch->nsamples);
  ch->unigram = entropy_nats(hist, o->vocab_size, ch->ntokens);
  free(hist);
  hist = NULL;
  if ((rc = load_docs(d, c))) {
    gy_errmsg(errmsg, errlen, "channel '%s': out of memory loading document indexes", co->name);
    goto err;
  }

  if (co->val_file) {
    if ((rc = gy_shard_open(&ch->val, co->val_file, sub, sizeof(sub)))) {
      gy_errmsg(errmsg, errlen, "channel '%s': held-out %s", co->name, sub);
      goto err;
    }
    ch->has_val = 1;
    if ((rc = scan_tokens(&ch->val, o->vocab_size, NULL, co->name, co->val_file, errmsg, errlen)))
      goto err;
    uint64_t avail = ch->val.ntokens ? (ch->val.ntokens - 1) / (uint64_t)o->seq_len : 0;
    uint64_t want = (uint64_t)o->val_sequences;
    ch->val_count = (int)(avail < want ? avail : want);
  }
  return GY_OK;

err:
  free(hist);
  return rc; /* the caller's destroy releases what the channel holds */
}

/* Turns the weights into small integers and builds the smooth round-robin pattern. */
static int build_pattern(gy_data_t *d, char *errmsg, size_t errlen) {
  const gy_data_opts_t *o = &d->opts;
  double sum = 0.0;
  for (int c = 0; c < o->nchannels; c++)
    sum += o->channels[c].weight;
  uint64_t g = 0, P = 0;
  for (int c = 0; c < o->nchannels; c++) {
    double x = o->channels[c].weight / sum * WEIGHT_SCALE;
    uint64_t w = (uint64_t)llround(x);
    d->ch[c].w = w ? w : 1; /* a channel with a tiny weight still appears */
    g = gcd64(g, d->ch[c].w);
  }
  for (int c = 0; c < o->nchannels; c++) {
    d->ch[c].w /= g;
    P += d->ch[c].w;
  }
  d->P = (uint32_t)P;
  d->pattern = malloc(P);
  d->rank = malloc(P * sizeof(uint32_t));
  d->occ = malloc(P * sizeof(uint32_t));
  if (!d->pattern || !d->rank || !d->occ) {
    gy_errmsg(errmsg, errlen, "data: out of memory");
    return GY_ENOMEM;
  }
  int64_t cur[GY_MAX_CHANNELS] = {0};
  uint32_t seen[GY_MAX_CHANNELS] = {0};
  for (uint64_t k = 0; k < P; k++) {
    int best = 0;
    for (int c = 0; c < o->nchannels; c++) {
      cur[c] += (int64_t)d->ch[c].w;
      if (cur[c] > cur[best]) best = c;
    }
    cur[best] -= (int64_t)P;
    d->pattern[k] = (uint8_t)best;
    d->rank[k] = seen[best]++;
  }
  /* The inverse of (position -> channel, rank): channel c's slots, in pattern order. */
  d->occ_start[0] = 0;
  for (int c = 0; c < o->nchannels; c++)
    d->occ_start[c + 1] = d->occ_start[c] + (uint32_t)d->ch[c].w;
  for (uint32_t k = 0; k < P; k++)
    d->occ[d->occ_start[d->pattern[k]] + d->rank[k]] = k;
  return GY_OK;
}

static int check_opts(const gy_data_opts_t *o, char *errmsg, size_t errlen) {
  if (o->nchannels < 1 || o->nchannels > GY_MAX_CHANNELS || !o->channels) {
    gy_errmsg(errmsg, errlen, "data: %d channels (need 1 to %d)", o->nchannels, GY_MAX_CHANNELS);
    return GY_ECONFIG;
  }
  if (o->seq_len < 1) {
    gy_errmsg(errmsg, errlen, "data: seq_len %d must be >= 1", o->seq_len);
    return GY_ECONFIG;
  }
  if (o->vocab_size < 1 || o->vocab_size > MAX_VOCAB) {
    gy_errmsg(errmsg, errlen, "data: vocab_size %d must be in 1..%d (uint16 tokens)", o->vocab_size,
              MAX_VOCAB);
    return GY_ECONFIG;
  }
  if (o->ncorrupt < 0 || (o->ncorrupt > 0 && !o->corrupt)) {
    gy_errmsg(errmsg, errlen, "data: bad corruption list (%d entries)", o->ncorrupt);
    return GY_ECONFIG;
  }
  for (int c = 0; c < o->nchannels; c++) {
    const gy_channel_opts_t *co = &o->channels[c];
    if (!memchr(co->name, '\0', sizeof(co->name)) || !co->name[0]) {
      gy_errmsg(errmsg, errlen, "data: channel %d has an empty or unterminated name", c);
      return GY_ECONFIG;
    }
    for (int k = 0; k < c; k++)
      if (strcmp(o->channels[k].name, co->name) == 0) {
        gy_errmsg(errmsg, errlen, "data: channel '%s' appears twice", co->name);
        return GY_ECONFIG;
      }
    if (!(co->weight > 0.0) || !isfinite(co->weight)) {
      gy_errmsg(errmsg, errlen, "channel '%s': weight %g must be a finite number > 0", co->name,
                co->weight);
      return GY_ECONFIG;
    }
    if (co->nfiles < 1 || !co->files) {
      gy_errmsg(errmsg, errlen, "channel '%s': no training files", co->name);
      return GY_ECONFIG;
    }
  }
  for (int k = 0; k < o->ncorrupt; k++) {
    const gy_corrupt_t *e = &o->corrupt[k];
    if (e->channel < -1 || e->channel >= o->nchannels) {
      gy_errmsg(errmsg, errlen, "data: corruption %d: channel %d out of range (-1 or 0..%d)", k,
                e->channel, o->nchannels - 1);
      return GY_ECONFIG;
    }
    if (e->first >= e->last) {
      gy_errmsg(errmsg, errlen, "data: corruption %d: empty id range [%llu, %llu)", k,
                (unsigned long long)e->first, (unsigned long long)e->last);
      return GY_ECONFIG;
    }
    if ((int)e->kind < 0 || (int)e->kind >= NCORRUPT_KINDS) {
      gy_errmsg(errmsg, errlen, "data: corruption %d: unknown kind %d", k, (int)e->kind);
      return GY_ECONFIG;
    }
    if (e->kind == GY_CORRUPT_REPEAT && e->token >= o->vocab_size) {
      gy_errmsg(errmsg, errlen, "data: corruption %d: repeat token %d outside the vocabulary (%d)",
                k, e->token, o->vocab_size);
      return GY_ECONFIG;
    }
  }
  return GY_OK;
}

/* Builds the data set. The callee copies opts (strings included); the caller keeps its own.
 * On error *out is NULL, errmsg names the channel and file, and nothing leaks. */
int gy_data_create(gy_data_t **out, const gy_data_opts_t *opts, char *errmsg, size_t errlen) {
  gy_data_t *d = NULL;
  int rc;

  *out = NULL;
  if ((rc = check_opts(opts, errmsg, errlen))) return rc;
  d = calloc(1, sizeof(*d));
  if (!d) {
    gy_errmsg(errmsg, errlen, "data: out of memory");
    return GY_ENOMEM;
  }
  if ((rc = copy_opts(&d->opts, opts))) {
    gy_errmsg(errmsg, errlen, "data: out of memory");
    free(d);
    return rc;
  }
  if (d->opts.val_sequences <= 0) d->opts.val_sequences = DEFAULT_VAL_SEQUENCES;
  for (int c = 0; c < d->opts.nchannels; c++)
    if ((rc = open_channel(d, c, errmsg, errlen))) goto err;
  if ((rc = build_pattern(d, errmsg, errlen))) goto err;
  *out = d;
  return GY_OK;

err:
  gy_data_destroy(d);
  return rc;
}

/* Unmaps every shard and frees d; NULL is a no-op. */
void gy_data_destroy(gy_data_t *d) {
  if (!d) return;
  for (int c = 0; c < d->opts.nchannels && c < GY_MAX_CHANNELS; c++) {
    channel_t *ch = &d->ch[c];
    for (int f = 0; f < ch->nshards; f++)
      gy_shard_close(&ch->shards[f]);
    free(ch->shards);
    free(ch->starts);
    free(ch->doc_start);
    free(ch->doc_ord);
    if (ch->has_val) gy_shard_close(&ch->val);
  }
  free(d->pattern);
  free(d->rank);
  free(d->occ);
  free_opts(&d->opts);
  free(d);
}

int gy_data_nchannels(const gy_data_t *d) {
  return d->opts.nchannels;
}

const char *gy_data_channel_name(const gy_data_t *d, int ch) {
  if (ch < 0 || ch >= d->opts.nchannels) return NULL;
  return d->opts.channels[ch].name;
}

int gy_data_channel_index(const gy_data_t *d, const char *name) {
  if (!name) return -1;
  for (int c = 0; c < d->opts.nchannels; c++)
    if (strcmp(d->opts.channels[c].name, name) == 0) return c;
  return -1;
}

uint64_t gy_data_channel_samples(const gy_data_t *d, int ch) {
  if (ch < 0 || ch >= d->opts.nchannels) return 0;
  return d->ch[ch].nsamples;
}

uint64_t gy_data_channel_tokens(const gy_data_t *d, int ch) {
  if (ch < 0 || ch >= d->opts.nchannels) return 0;
  return d->ch[ch].ntokens;
}

int gy_data_sample_channel(const gy_data_t *d, uint64_t id) {
  return d->pattern[id % d->P];
}

/* The round function of the Feistel network: round r's keyed hash of one half. */
static uint64_t feistel_f(uint64_t key, uint64_t half_value, uint64_t round, uint64_t mask) {
  return mix64(key ^ mix64(half_value ^ (round << 56))) & mask;
}

/* A balanced Feistel network on 2*half bits: a bijection of [0, 2^(2*half)) for any key. */
static uint64_t feistel(uint64_t x, uint64_t key, int half) {
  uint64_t mask = (1ULL << half) - 1;
  uint64_t l = x >> half, r = x & mask;
  for (uint64_t round = 0; round < 4; round++) {
    uint64_t f = feistel_f(key, r, round, mask);
    uint64_t nl = r;
    r = l ^ f;
    l = nl;
  }
  return (l << half) | r;
}

/* The inverse of feistel(): a round maps (l, r) to (r, l ^ F(r)), so from (l', r') the earlier
 * halves are (r' ^ F(l'), l'), undone from the last round to the first. */
static uint64_t feistel_inv(uint64_t x, uint64_t key, int half) {
  uint64_t mask = (1ULL << half) - 1;
  uint64_t l = x >> half, r = x & mask;
  for (uint64_t round = 4; round-- > 0;) {
    uint64_t pl = r ^ feistel_f(key, l, round, mask);
    r = l;
    l = pl;
  }
  return (l << half) | r;
}

static uint64_t perm_key(uint64_t seed, int c, uint64_t epoch) {
  return hash3(seed, 0x6779726f00000000ULL | (uint64_t)c, epoch);
}

/* perm(seed, channel, epoch, i): a bijection of [0, n). The domain is at most 4n, so cycle
 * walking takes fewer than 4 rounds on average; it ends because i's cycle returns to i < n. */
static uint64_t permute(uint64_t seed, int c, uint64_t epoch, uint64_t i, uint64_t n, int half) {
  if (n <= 1) return 0;
  uint64_t key = perm_key(seed, c, epoch);
  uint64_t x = i;
  do
    x = feistel(x, key, half);
  while (x >= n);
  return x;
}

/* The inverse of permute() for the same key: walking forwards from i passes only values >= n
 * before it lands on k, so walking backwards from k passes the same values and the first one
 * below n is i. */
static uint64_t unpermute_key(uint64_t key, uint64_t k, uint64_t n, int half) {
  if (n <= 1) return 0;
  uint64_t x = k;
  do
    x = feistel_inv(x, key, half);
  while (x >= n);
  return x;
}

uint64_t gy__data_permute(uint64_t seed, int channel, uint64_t epoch, uint64_t i, uint64_t n) {
  return permute(seed, channel, epoch, i, n, half_bits_for(n));
}

uint64_t gy__data_unpermute(uint64_t seed, int channel, uint64_t epoch, uint64_t k, uint64_t n) {
  return unpermute_key(perm_key(seed, channel, epoch), k, n, half_bits_for(n));
}

void gy_data_sample_locate(const gy_data_t *d, uint64_t id, int *channel, uint64_t *epoch,
                           uint64_t *index) {
  uint32_t pos = (uint32_t)(id % d->P);
  int c = d->pattern[pos];
  const channel_t *ch = &d->ch[c];
  uint64_t j = (id / d->P) * ch->w + d->rank[pos];
  uint64_t e = j / ch->nsamples, i = j % ch->nsamples;
  if (d->opts.channels[c].shuffle) i = permute(d->opts.seed, c, e, i, ch->nsamples, ch->half_bits);
  if (channel) *channel = c;
  if (epoch) *epoch = e;
  if (index) *index = i;
}

/* The shard holding stream position pos < ntokens: the last s with starts[s] <= pos (never an
 * empty shard, since an empty shard's start equals the next one's). */
static int shard_of(const channel_t *ch, uint64_t pos) {
  int lo = 0, hi = ch->nshards; /* find the first s in [0, nshards] with starts[s] > pos */
  while (lo < hi) {
    int mid = lo + (hi - lo) / 2;
    if (ch->starts[mid] <= pos)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo - 1;
}

/* Copies n tokens of channel ch's stream starting at pos (pos + n <= ntokens). */
static void read_stream(const channel_t *ch, uint64_t pos, size_t n, uint16_t *out) {
  int s = shard_of(ch, pos);
  while (n > 0 && s < ch->nshards) {
    uint64_t off = pos - ch->starts[s];
    uint64_t avail = ch->shards[s].ntokens - off;
    size_t k = avail < n ? (size_t)avail : n;
    memcpy(out, ch->shards[s].tokens + off, k * sizeof(uint16_t));
    out += k;
    n -= k;
    pos += k;
    s++;
  }
}

typedef struct {
  uint64_t s;
} rng_t;

static uint64_t rng_next(rng_t *r) {
  r->s += 0x9e3779b97f4a7c15ULL;
  return mix64(r->s);
}

/* Replaces the n tokens of a sample by the corruption e (deterministic in seed and id). */
static void corrupt_tokens(const gy_corrupt_t *e, uint64_t seed, uint64_t id, int vocab,
                           uint16_t *t, size_t n) {
  rng_t r = {hash3(seed ^ 0x636f7272757074ULL, id, (uint64_t)e->kind)};
  uint32_t top = vocab < 256 ? (uint32_t)vocab : 256; /* bytes kept below vocab_size */
  uint16_t maxb = (uint16_t)(top - 1);
  switch (e->kind) {
  case GY_CORRUPT_RANDOM_BYTES:
    for (size_t k = 0; k < n; k++)
      t[k] = (uint16_t)(rng_next(&r) % top);
    break;
  case GY_CORRUPT_BINARY_NOISE:
    /* Looks like a binary file: ~60% zero bytes, runs of 0xFF (padding, erased flash), and
     * random bytes in between. */
    for (size_t k = 0; k < n;) {
      uint64_t x = rng_next(&r);
      uint32_t u = (uint32_t)(x % 1000);
      if (u < 15) {
        size_t run = 4 + (size_t)((x >> 20) % 29);
        for (size_t m = 0; m < run && k < n; m++)
          t[k++] = maxb;
      } else if (u < 615) {
        t[k++] = 0;
      } else {
        t[k++] = (uint16_t)((x >> 24) % top);
      }
    }
    break;
  case GY_CORRUPT_REPEAT: {
    int tok = e->token < 0 ? ' ' : e->token;
    if (tok >= vocab) tok = vocab - 1;
    for (size_t k = 0; k < n; k++)
      t[k] = (uint16_t)tok;
    break;
  }
  case GY_CORRUPT_EMPTY_LINES: {
    uint16_t nl = (uint16_t)('\n' < vocab ? '\n' : vocab - 1);
    for (size_t k = 0; k < n; k++)
      t[k] = nl;
    break;
  }
  }
}

void gy_data_sample(const gy_data_t *d, uint64_t id, uint16_t *tokens, int *channel) {
  gy_data_sample_q(d, NULL, id, tokens, channel, NULL);
}

/* ---- quarantine ---- */

void gy_quarantine_init(gy_quarantine_t *q) {
  memset(q, 0, sizeof(*q));
}

void gy_quarantine_free(gy_quarantine_t *q) {
  if (!q) return;
  free(q->r);
  gy_quarantine_init(q);
}

static int qless(int c1, uint64_t f1, int c2, uint64_t f2) {
  return c1 != c2 ? c1 < c2 : f1 < f2;
}

int gy_quarantine_add(gy_quarantine_t *q, int channel, uint64_t first, uint64_t last) {
  if (first >= last || channel < 0) return GY_EINVAL;
  /* the ranges of the channel that overlap or touch [first, last) merge with it */
  size_t i = 0;
  while (i < q->n && qless(q->r[i].channel, q->r[i].last, channel, first))
    i++;
  size_t j = i;
  while (j < q->n && q->r[j].channel == channel && q->r[j].first <= last) {
    if (q->r[j].first < first) first = q->r[j].first;
    if (q->r[j].last > last) last = q->r[j].last;
    j++;
  }
  if (j - i == 1 && q->r[i].first == first && q->r[i].last == last) return 0; /* already held */
  if (i == j) {
    if (q->n == q->cap) {
      size_t cap = q->cap ? 2 * q->cap : 16;
      gy_qregion_t *r = realloc(q->r, cap * sizeof(*r));
      if (!r) return GY_ENOMEM;
      q->r = r;
      q->cap = cap;
    }
    memmove(q->r + i + 1, q->r + i, (q->n - i) * sizeof(*q->r));
    q->n++;
  } else if (j - i > 1) {
    memmove(q->r + i + 1, q->r + j, (q->n - j) * sizeof(*q->r));
    q->n -= j - i - 1;
  }
  q->r[i] = (gy_qregion_t){channel, first, last};
  return 1;
}

int gy_quarantine_remove(gy_quarantine_t *q, int channel, uint64_t first, uint64_t last) {
  int changed = 0;
  for (size_t i = 0; i < q->n; i++) {
    gy_qregion_t *r = &q->r[i];
    if (r->channel != channel || r->last <= first || r->first >= last) continue;
    changed = 1;
    if (r->first < first && r->last > last) { /* a hole in the middle: split */
      gy_qregion_t tail = {channel, last, r->last};
      r->last = first;
      if (q->n == q->cap) {
        size_t cap = q->cap ? 2 * q->cap : 16;
        gy_qregion_t *nr = realloc(q->r, cap * sizeof(*nr));
        if (!nr) return GY_ENOMEM;
        q->r = nr;
        q->cap = cap;
        r = &q->r[i];
      }
      memmove(q->r + i + 2, q->r + i + 1, (q->n - i - 1) * sizeof(*q->r));
      q->r[i + 1] = tail;
      q->n++;
      i++;
    } else if (r->first < first) {
      r->last = first;
    } else if (r->last > last) {
      r->first = last;
    } else {
      memmove(q->r + i, q->r + i + 1, (q->n - i - 1) * sizeof(*q->r));
      q->n--;
      i--;
    }
  }
  return changed;
}

int gy_quarantine_overlaps(const gy_quarantine_t *q, int channel, uint64_t first, uint64_t last) {
  if (!q || !q->n) return 0;
  /* the first range not entirely before (channel, first) */
  size_t lo = 0, hi = q->n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (qless(q->r[mid].channel, q->r[mid].last, channel, first + 1))
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo < q->n && q->r[lo].channel == channel && q->r[lo].first < last;
}

void gy_data_sample_q(const gy_data_t *d, const gy_quarantine_t *q, uint64_t id, uint16_t *tokens,
                      int *channel, uint64_t *used) {
  size_t n = (size_t)d->opts.seq_len + 1;
  uint64_t T = (uint64_t)d->opts.seq_len;
  uint32_t ppos = (uint32_t)(id % d->P);
  int c = d->pattern[ppos];
  const channel_t *ch = &d->ch[c];
  uint64_t j = (id / d->P) * ch->w + d->rank[ppos];
  uint64_t ep = j / ch->nsamples, i = j % ch->nsamples;
  int shuffle = d->opts.channels[c].shuffle;
  uint64_t idx0 = shuffle ? permute(d->opts.seed, c, ep, i, ch->nsamples, ch->half_bits) : i;
  uint64_t idx = idx0;
  /* a quarantined sample is replaced by the next one of its channel's epoch order that is not
   * (wrapping; when the whole channel is quarantined the sample stays as it is) */
  uint64_t tries = 1;
  for (; tries < ch->nsamples && gy_quarantine_overlaps(q, c, idx * T, idx * T + n); tries++) {
    uint64_t ii = (i + tries) % ch->nsamples;
    idx = shuffle ? permute(d->opts.seed, c, ep, ii, ch->nsamples, ch->half_bits) : ii;
  }
  if (tries == ch->nsamples && ch->nsamples > 1) idx = idx0;
  read_stream(ch, idx * T, n, tokens);
  /* Entries apply in order, so when ranges overlap the last matching entry wins. */
  for (int k = 0; k < d->opts.ncorrupt; k++) {
    const gy_corrupt_t *e = &d->opts.corrupt[k];
    if (id >= e->first && id < e->last && (e->channel == -1 || e->channel == c))
      corrupt_tokens(e, d->opts.seed, id, d->opts.vocab_size, tokens, n);
  }
  if (channel) *channel = c;
  if (used) *used = idx;
}

void gy_data_batch_ids(const gy_data_t *d, const gy_skiplist_t *skip, uint64_t step, int rank,
                       int world, int B, uint64_t *ids) {
  (void)d;
  uint64_t base = (step * (uint64_t)world + (uint64_t)rank) * (uint64_t)B;
  for (int b = 0; b < B; b++)
    ids[b] = gy_skiplist_map(skip, base + (uint64_t)b);
}

/* ---------------------------------------------------------------------------------------- */
/* provenance and the inverse of the sampler                                                 */
/* ---------------------------------------------------------------------------------------- */

void gy_data_provenance(const gy_data_t *d, uint64_t id, gy_provenance_t *p) {
  int c;
  uint64_t k;
  gy_data_sample_locate(d, id, &c, NULL, &k);
  const channel_t *ch = &d->ch[c];
  uint64_t stream = k * (uint64_t)d->opts.seq_len;
  int f = shard_of(ch, stream);
  p->channel = c;
  p->file = f;
  p->path = d->opts.channels[c].files[f];
  p->offset = stream - ch->starts[f];
  p->stream = stream;
  p->length = (uint32_t)d->opts.seq_len + 1;
  if (!ch->ndocs) {
    p->document = -1;
    p->doc_stream = stream;
    p->doc_length = p->length;
    return;
  }
  /* The document holding the first token: the last start at or before it (doc_start[0] == 0). */
  uint64_t lo = 0, hi = ch->ndocs;
  while (lo < hi) {
    uint64_t mid = lo + (hi - lo) / 2;
    if (ch->doc_start[mid] <= stream)
      lo = mid + 1;
    else
      hi = mid;
  }
  uint64_t x = lo - 1;
  uint64_t end = x + 1 < ch->ndocs ? ch->doc_start[x + 1] : ch->ntokens;
  p->document = (int64_t)ch->doc_ord[x];
  p->doc_stream = ch->doc_start[x];
  p->doc_length = end - ch->doc_start[x];
}

int gy_data_stream_offset(const gy_data_t *d, int ch, int file, uint64_t offset, uint64_t *stream) {
  if (ch < 0 || ch >= d->opts.nchannels) return GY_ERANGE;
  const channel_t *c = &d->ch[ch];
  if (file < 0 || file >= c->nshards || offset > c->shards[file].ntokens) return GY_ERANGE;
  *stream = c->starts[file] + offset;
  return GY_OK;
}

int gy_data_file_offset(const gy_data_t *d, int ch, uint64_t stream, int *file, uint64_t *offset) {
  *file = -1;
  if (ch < 0 || ch >= d->opts.nchannels || stream >= d->ch[ch].ntokens) return GY_ERANGE;
  const channel_t *c = &d->ch[ch];
  int f = shard_of(c, stream);
  *file = f;
  *offset = stream - c->starts[f];
  return GY_OK;
}

uint64_t gy_data_channel_documents(const gy_data_t *d, int ch) {
  if (ch < 0 || ch >= d->opts.nchannels) return 0;
  return d->ch[ch].ndocs;
}

/* Number of ids below p drawn from channel c: whole patterns, then c's slots before p % P. */
static uint64_t channel_count_below(const gy_data_t *d, int c, uint64_t p) {
  const uint32_t *occ = d->occ + d->occ_start[c];
  uint32_t pos = (uint32_t)(p % d->P), lo = 0, hi = (uint32_t)d->ch[c].w;
  while (lo < hi) {
    uint32_t mid = lo + (hi - lo) / 2;
    if (occ[mid] < pos)
      lo = mid + 1;
    else
      hi = mid;
  }
  return (p / d->P) * d->ch[c].w + lo;
}

/* The id of the j-th sample drawn from channel c: the inverse of the pattern. */
static uint64_t channel_id(const gy_data_t *d, int c, uint64_t j) {
  uint64_t w = d->ch[c].w;
  return (j / w) * d->P + d->occ[d->occ_start[c] + j % w];
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

int gy_data_region_ids(const gy_data_t *d, int c, uint64_t first, uint64_t last, uint64_t id_from,
                       uint64_t id_to, int (*fn)(void *ctx, uint64_t id), void *ctx) {
  if (c < 0 || c >= d->opts.nchannels || !fn) return GY_EINVAL;
  const channel_t *ch = &d->ch[c];
  uint64_t T = (uint64_t)d->opts.seq_len, N = ch->nsamples;
  if (first >= last || id_from >= id_to) return GY_OK;
  /* Sample k is [k*T, k*T + T + 1): it overlaps [first, last) when k*T < last and
   * k*T + T + 1 > first, that is k*T >= first - T, so k >= ceil(first / T) - 1. */
  uint64_t kmin = first > 0 ? (first - 1) / T : 0;
  uint64_t kmax = (last - 1) / T;
  if (kmax > N - 1) kmax = N - 1;
  if (kmin > kmax) return GY_OK;
  /* The channel's draws j in [jlo, jhi) are the ids in [id_from, id_to); they span the epochs
   * jlo / N .. (jhi - 1) / N. */
  uint64_t jlo = channel_count_below(d, c, id_from), jhi = channel_count_below(d, c, id_to);
  if (jlo >= jhi) return GY_OK;
  uint64_t elo = jlo / N, ehi = (jhi - 1) / N, K = kmax - kmin + 1;
  int shuffle = d->opts.channels[c].shuffle && N > 1;
  uint64_t *pos = NULL;
  if (shuffle) {
    if (K > SIZE_MAX / sizeof(uint64_t) || !(pos = malloc((size_t)K * sizeof(uint64_t))))
      return GY_ENOMEM;
  }
  int rc = GY_OK;
  for (uint64_t e = elo; e <= ehi && rc == GY_OK; e++) {
    /* Epoch e's positions i that draw the indices kmin..kmax, increasing: the identity without
     * shuffling, else the inverse permutation of each, sorted. */
    if (shuffle) {
      uint64_t key = perm_key(d->opts.seed, c, e);
      for (uint64_t k = kmin; k <= kmax; k++)
        pos[k - kmin] = unpermute_key(key, k, N, ch->half_bits);
      qsort(pos, (size_t)K, sizeof(uint64_t), cmp_u64);
    }
    for (uint64_t m = 0; m < K; m++) {
      uint64_t i = shuffle ? pos[m] : kmin + m;
      uint64_t j = e * N + i;
      if (j < jlo) continue;
      if (j >= jhi) break;
      if ((rc = fn(ctx, channel_id(d, c, j))) != 0) break;
    }
  }
  free(pos);
  return rc;
}

int gy_data_val_count(const gy_data_t *d, int ch) {
  if (ch < 0 || ch >= d->opts.nchannels) return 0;
  return d->ch[ch].val_count;
}

void gy_data_val_sample(const gy_data_t *d, int ch, int i, uint16_t *tokens) {
  size_t n = (size_t)d->opts.seq_len + 1;
  if (ch < 0 || ch >= d->opts.nchannels || i < 0 || i >= d->ch[ch].val_count) {
    memset(tokens, 0, n * sizeof(uint16_t)); /* out of range: defined, never a crash */
    return;
  }
  memcpy(tokens, d->ch[ch].val.tokens + (size_t)i * (size_t)d->opts.seq_len, n * sizeof(uint16_t));
}

double gy_data_unigram_nats(const gy_data_t *d, int ch) {
  if (ch < 0 || ch >= d->opts.nchannels) return 0.0;
  return d->ch[ch].unigram;
}

int gy_data_document(const gy_data_t *d, int ch, uint64_t stream, int64_t *doc, uint64_t *first,
                     uint64_t *last) {
  if (ch < 0 || ch >= d->opts.nchannels) return GY_ERANGE;
  const channel_t *c = &d->ch[ch];
  if (!c->ndocs) return GY_ENOENT;
  if (stream >= c->ntokens) return GY_ERANGE;
  /* the last document start at or before stream (doc_start[0] == 0) */
  uint64_t lo = 0, hi = c->ndocs;
  while (lo < hi) {
    uint64_t mid = lo + (hi - lo) / 2;
    if (c->doc_start[mid] <= stream)
      lo = mid + 1;
    else
      hi = mid;
  }
  uint64_t x = lo - 1;
  *doc = (int64_t)c->doc_ord[x];
  *first = c->doc_start[x];
  *last = x + 1 < c->ndocs ? c->doc_start[x + 1] : c->ntokens;
  return 0;
}

void gy_data_read(const gy_data_t *d, int ch, uint64_t pos, size_t n, uint16_t *out) {
  memset(out, 0, n * sizeof(uint16_t));
  if (ch < 0 || ch >= d->opts.nchannels || pos >= d->ch[ch].ntokens) return;
  uint64_t avail = d->ch[ch].ntokens - pos;
  read_stream(&d->ch[ch], pos, avail < n ? (size_t)avail : n, out);
}

const char *gy_data_file_path(const gy_data_t *d, int ch, int file) {
  if (ch < 0 || ch >= d->opts.nchannels || file < 0 || file >= d->ch[ch].nshards) return NULL;
  return d->opts.channels[ch].files[file];
}

uint64_t gy_data_file_tokens(const gy_data_t *d, int ch, int file) {
  if (ch < 0 || ch >= d->opts.nchannels || file < 0 || file >= d->ch[ch].nshards) return 0;
  return d->ch[ch].shards[file].ntokens;
}
