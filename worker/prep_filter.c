/*
 * prep_filter: gyro-prep's document filters (see prep_filter.h for the rules and the tokens).
 *
 * API in order: options (gy_prep_filter_opts_default, _check), the pure building blocks
 * (gy_prep_text_stats, gy_prep_is_utf8, gy_prep_tokenize, gy_prep_find_repeat,
 * gy_prep_normal_hash, gy_prep_minhash, gy_prep_minhash_similarity), then the filter object
 * (create, count, line_docs, strip, judge, destroy).
 *
 * Invariants: no I/O and no clock; every hash is a fixed function of the bytes (FNV-1a, then a
 * 64-bit finaliser), so the same documents in the same order give the same verdicts on any
 * machine. Memory comes from the allocator hook (common/alloc.h), so tests can fail it.
 *
 * The tables are one open-addressing map from 64-bit keys to 64-bit values (key 0 is the empty
 * slot, so a key that hashes to 0 is stored as 1): line counts per group (value: documents <<
 * 32 | the last document counted, so a line repeated inside one document counts once), the
 * normalised hashes of kept documents (value: the document's id), and one LSH bucket per
 * (band, band values) (value: 1 + the newest kept document in it; older ones are chained
 * through next[]).
 */
#include "worker/prep_filter.h"

#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/err.h"
#include "common/utf8.h"

static const char *const rule_names[] = {
#define GY_PREP_RULE_NAME(name, str) str,
    GY_PREP_RULE_MAP(GY_PREP_RULE_NAME)
#undef GY_PREP_RULE_NAME
};

const char *gy_prep_rule_name(gy_prep_rule_t r) {
  return (unsigned)r < GY_PREP_RULE_COUNT ? rule_names[r] : "?";
}

void gy_prep_filter_opts_default(gy_prep_filter_opts_t *o) {
  memset(o, 0, sizeof(*o));
  o->nontext_max = 0.0;
  o->rep_min_period = 1;
  o->rep_max_period = 13;
  o->rep_max_times = 32;
  o->exact_dedup = 1;
  o->near_threshold = 0.8;
  o->shingle = 5;
  o->bands = 16;
  o->rows = 8;
  o->boiler_min_docs = 10;
  o->boiler_min_share = 0.5;
  o->boiler_min_bytes = 4;
  o->seed = 0;
}

int gy_prep_filter_opts_check(const gy_prep_filter_opts_t *o, char *err, size_t errlen) {
  const char *bad = NULL;
  if (!(o->nontext_max >= 0.0 && o->nontext_max <= 1.0))
    bad = "nontext_max must be within [0, 1]";
  else if (o->rep_max_times && (o->rep_min_period < 1 || o->rep_max_period < o->rep_min_period ||
                                o->rep_max_period > 1024))
    bad = "the repeated span must be 1 <= min_period <= max_period <= 1024 tokens";
  else if (o->rep_max_times == 1)
    bad = "rep_max_times must be 0 (off) or at least 2";
  else if (!(o->near_threshold >= 0.0 && o->near_threshold <= 1.0))
    bad = "near_threshold must be within [0, 1]";
  else if (o->near_threshold > 0.0 && (o->shingle < 1 || o->shingle > 64))
    bad = "shingle must be 1 to 64 tokens";
  else if (o->near_threshold > 0.0 &&
           (o->bands < 1 || o->rows < 1 || (uint64_t)o->bands * o->rows > GY_PREP_MINHASH_MAX))
    bad = "bands x rows must be 1 to 1024";
  else if (!(o->boiler_min_share >= 0.0 && o->boiler_min_share <= 1.0))
    bad = "boiler_min_share must be within [0, 1]";
  if (!bad) return 0;
  if (err && errlen) snprintf(err, errlen, "%s", bad);
  return GY_EINVAL;
}

/* ---- hashing ---- */

static uint64_t fnv1a(uint64_t h, const void *p, size_t n) {
  const unsigned char *s = p;
  for (size_t i = 0; i < n; i++) {
    h ^= s[i];
    h *= 0x100000001b3ULL;
  }
  return h;
}

#define FNV_BASIS 0xcbf29ce484222325ULL

/* splitmix64's finaliser: spreads every input bit over the output. */
static uint64_t mix64(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

/* ---- UTF-8 ---- */

void gy_prep_text_stats(const char *s, size_t n, gy_prep_text_stats_t *st) {
  const unsigned char *u = (const unsigned char *)s;
  memset(st, 0, sizeof(*st));
  st->bytes = n;
  size_t i = 0;
  while (i < n) {
    unsigned c = u[i];
    if (c < 0x80) {
      if (c == 0)
        st->nul++;
      else if ((c < 0x20 && c != '\t' && c != '\n' && c != '\r' && c != '\f') || c == 0x7F)
        st->control++;
      i++;
      continue;
    }
    uint32_t cp;
    size_t len = gy_utf8_seq(u + i, n - i, &cp);
    if (len == 0) {
      st->invalid++;
      i++;
    } else {
      i += len;
    }
  }
}

int gy_prep_is_utf8(const char *s, size_t n) {
  const unsigned char *u = (const unsigned char *)s;
  size_t i = 0;
  while (i < n) {
    if (u[i] == 0) return 0;
    if (u[i] < 0x80) {
      i++;
      continue;
    }
    uint32_t cp;
    size_t len = gy_utf8_seq(u + i, n - i, &cp);
    if (len == 0) return 0;
    i += len;
  }
  return 1;
}

/* ---- tokens ---- */

int gy_prep_is_wide(uint32_t c) {
  return (c >= 0x2E80 && c <= 0x303E) || (c >= 0x3041 && c <= 0x33FF) ||
         (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x4E00 && c <= 0x9FFF) ||
         (c >= 0xA000 && c <= 0xA4CF) || (c >= 0xF900 && c <= 0xFAFF) ||
         (c >= 0xFE30 && c <= 0xFE4F) || (c >= 0xFF00 && c <= 0xFF60) ||
         (c >= 0xFFE0 && c <= 0xFFE6) || (c >= 0x20000 && c <= 0x3FFFD);
}

enum { C_SPACE, C_WORD, C_PUNCT, C_SINGLE };

static int char_class(uint32_t c) {
  if (c < 0x80) {
    if (c == ' ' || (c >= '\t' && c <= '\r')) return C_SPACE;
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_')
      return C_WORD;
    return C_PUNCT;
  }
  if (c == 0xA0) return C_SPACE;
  if (c < 0xC0 || (c >= 0x2000 && c <= 0x2BFF) || (c >= 0x1F000 && c <= 0x1FAFF) ||
      gy_prep_is_wide(c))
    return C_SINGLE;
  return C_WORD;
}

size_t gy_prep_tokenize(const char *s, size_t n, gy_prep_token_t **out) {
  const unsigned char *u = (const unsigned char *)s;
  *out = NULL;
  if (n >= UINT32_MAX) return (size_t)-1;
  size_t cap = 0, k = 0;
  gy_prep_token_t *t = NULL;
  size_t i = 0;
  while (i < n) {
    uint32_t cp;
    size_t len = gy_utf8_seq(u + i, n - i, &cp);
    int cls = len ? char_class(cp) : C_SINGLE;
    if (len == 0) len = 1;
    if (cls == C_SPACE) {
      i += len;
      continue;
    }
    size_t start = i;
    i += len;
    if (cls != C_SINGLE) {
      while (i < n) {
        size_t l2 = gy_utf8_seq(u + i, n - i, &cp);
        if (l2 == 0 || char_class(cp) != cls) break;
        i += l2;
      }
    }
    if (k == cap) {
      size_t nc = cap ? cap * 2 : 256;
      gy_prep_token_t *nt = gy_realloc(t, nc * sizeof(*t));
      if (!nt) {
        gy_free(t);
        return (size_t)-1;
      }
      t = nt;
      cap = nc;
    }
    t[k].off = (uint32_t)start;
    t[k].len = (uint32_t)(i - start);
    t[k].hash = mix64(fnv1a(FNV_BASIS, s + start, i - start));
    k++;
  }
  *out = t;
  return k;
}

gy_prep_repeat_t gy_prep_find_repeat(const gy_prep_token_t *t, size_t n, uint32_t min_period,
                                     uint32_t max_period) {
  gy_prep_repeat_t best = {1, 0, 0};
  if (min_period < 1) min_period = 1;
  for (uint32_t p = min_period; p <= max_period && p < n; p++) {
    /* run = how many tokens in a row equal the token p places later: a span of run + p tokens
     * with period p, that is (run + p) / p whole repeats of its first p tokens. */
    size_t run = 0;
    for (size_t i = 0; i + p < n; i++) {
      if (t[i].hash == t[i + p].hash) {
        run++;
        uint64_t times = (run + p) / p;
        if (times > best.times) {
          best.times = times > UINT32_MAX ? UINT32_MAX : (uint32_t)times;
          best.period = p;
          best.token = i + 1 - run;
        }
      } else {
        run = 0;
      }
    }
  }
  return best;
}

uint64_t gy_prep_normal_hash(const char *s, size_t n) {
  uint64_t h = FNV_BASIS;
  int space = 0, any = 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == ' ' || (c >= '\t' && c <= '\r')) {
      space = any;
      continue;
    }
    if (space) {
      h ^= ' ';
      h *= 0x100000001b3ULL;
      space = 0;
    }
    if (c >= 'A' && c <= 'Z') c = (unsigned char)(c - 'A' + 'a');
    h ^= c;
    h *= 0x100000001b3ULL;
    any = 1;
  }
  return mix64(h);
}

/* The k hash functions: multiply-shift hashing (odd multiplier, offset) of the shingle's
 * 64-bit hash, the high 32 bits kept: a standard stand-in for random permutations. */
static void minhash_coeffs(uint64_t seed, uint64_t *a, uint64_t *b, uint32_t k) {
  uint64_t x = seed;
  for (uint32_t i = 0; i < k; i++) {
    x += 0x9e3779b97f4a7c15ULL;
    a[i] = mix64(x) | 1;
    x += 0x9e3779b97f4a7c15ULL;
    b[i] = mix64(x);
  }
}

static void minhash_with(const gy_prep_token_t *t, size_t n, uint32_t shingle, const uint64_t *a,
                         const uint64_t *b, uint32_t *sig, uint32_t k) {
  for (uint32_t i = 0; i < k; i++)
    sig[i] = UINT32_MAX;
  if (n == 0) return;
  size_t m = n >= shingle ? n - shingle + 1 : 1;
  size_t w = n >= shingle ? shingle : n;
  for (size_t s = 0; s < m; s++) {
    uint64_t h = 0x51ed270b27a9a4c5ULL;
    for (size_t j = 0; j < w; j++)
      h = mix64(h ^ t[s + j].hash);
    for (uint32_t i = 0; i < k; i++) {
      uint32_t v = (uint32_t)((a[i] * h + b[i]) >> 32);
      if (v < sig[i]) sig[i] = v;
    }
  }
}

void gy_prep_minhash(const gy_prep_token_t *t, size_t n, uint32_t shingle, uint64_t seed,
                     uint32_t *sig, uint32_t k) {
  uint64_t a[GY_PREP_MINHASH_MAX], b[GY_PREP_MINHASH_MAX];
  if (k > GY_PREP_MINHASH_MAX) k = GY_PREP_MINHASH_MAX;
  if (shingle < 1) shingle = 1;
  minhash_coeffs(seed, a, b, k);
  minhash_with(t, n, shingle, a, b, sig, k);
}

double gy_prep_minhash_similarity(const uint32_t *a, const uint32_t *b, uint32_t k) {
  if (k == 0) return 0.0;
  uint32_t eq = 0;
  for (uint32_t i = 0; i < k; i++)
    eq += a[i] == b[i];
  return (double)eq / (double)k;
}

/* ---- the map ---- */

typedef struct {
  uint64_t *keys, *vals;
  size_t cap, n; /* cap: 0 or a power of two */
} map_t;

static uint64_t key_of(uint64_t h) {
  return h ? h : 1;
}

static uint64_t *map_find(const map_t *m, uint64_t key) {
  if (!m->cap) return NULL;
  size_t mask = m->cap - 1;
  for (size_t i = (size_t)key & mask;; i = (i + 1) & mask) {
    if (m->keys[i] == key) return &m->vals[i];
    if (m->keys[i] == 0) return NULL;
  }
}

static int map_grow(map_t *m) {
  size_t cap = m->cap ? m->cap * 2 : 1024;
  uint64_t *keys = gy_calloc(cap, sizeof(uint64_t)), *vals = gy_calloc(cap, sizeof(uint64_t));
  if (!keys || !vals) {
    gy_free(keys);
    gy_free(vals);
    return GY_ENOMEM;
  }
  for (size_t i = 0; i < m->cap; i++) {
    if (!m->keys[i]) continue;
    size_t j = (size_t)m->keys[i] & (cap - 1);
    while (keys[j])
      j = (j + 1) & (cap - 1);
    keys[j] = m->keys[i];
    vals[j] = m->vals[i];
  }
  gy_free(m->keys);
  gy_free(m->vals);
  m->keys = keys;
  m->vals = vals;
  m->cap = cap;
  return 0;
}

/* The value slot of key, inserted as 0 (*fresh = 1) when absent; NULL when out of memory. */
static uint64_t *map_put(map_t *m, uint64_t key, int *fresh) {
  *fresh = 0;
  uint64_t *v = map_find(m, key);
  if (v) return v;
  if ((m->n + 1) * 4 > m->cap * 3 && map_grow(m) != 0) return NULL;
  size_t mask = m->cap - 1, i = (size_t)key & mask;
  while (m->keys[i])
    i = (i + 1) & mask;
  m->keys[i] = key;
  m->vals[i] = 0;
  m->n++;
  *fresh = 1;
  return &m->vals[i];
}

static void map_free(map_t *m) {
  gy_free(m->keys);
  gy_free(m->vals);
  memset(m, 0, sizeof(*m));
}

/* ---- the filter ---- */

struct gy_prep_filter {
  gy_prep_filter_opts_t o;
  uint32_t k; /* MinHash values per document: bands x rows */
  uint64_t a[GY_PREP_MINHASH_MAX], b[GY_PREP_MINHASH_MAX];
  map_t lines;          /* hash(group, line) -> docs << 32 | last doc counted */
  uint32_t *group_docs; /* documents counted per group */
  uint32_t ngroups;     /* length of group_docs */
  uint32_t counted;     /* documents counted so far (round one) */
  map_t exact;          /* normalised hash -> id */
  map_t buckets;        /* hash(band, values) -> 1 + newest kept index */
  uint32_t *sigs;       /* k values per kept document */
  uint32_t *next;       /* bands per kept document: 1 + the older one in the same bucket */
  uint64_t *ids;        /* per kept document */
  uint32_t *stamp;      /* per kept document: the last query that compared it */
  size_t nkept, capkept;
  uint32_t query;
  uint32_t *sig; /* scratch: the signature being judged */
};

int gy_prep_filter_create(gy_prep_filter_t **out, const gy_prep_filter_opts_t *opts) {
  *out = NULL;
  if (gy_prep_filter_opts_check(opts, NULL, 0) != 0) return GY_EINVAL;
  gy_prep_filter_t *f = gy_calloc(1, sizeof(*f));
  if (!f) return GY_ENOMEM;
  f->o = *opts;
  f->k = opts->near_threshold > 0.0 ? opts->bands * opts->rows : 0;
  if (f->k) {
    minhash_coeffs(opts->seed, f->a, f->b, f->k);
    f->sig = gy_malloc(f->k * sizeof(uint32_t));
    if (!f->sig) {
      gy_free(f);
      return GY_ENOMEM;
    }
  }
  *out = f;
  return 0;
}

void gy_prep_filter_destroy(gy_prep_filter_t *f) {
  if (!f) return;
  map_free(&f->lines);
  map_free(&f->exact);
  map_free(&f->buckets);
  gy_free(f->group_docs);
  gy_free(f->sigs);
  gy_free(f->next);
  gy_free(f->ids);
  gy_free(f->stamp);
  gy_free(f->sig);
  gy_free(f);
}

static int is_blank(char c) {
  return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

static void trim(const char **s, size_t *n) {
  while (*n > 0 && is_blank(**s)) {
    (*s)++;
    (*n)--;
  }
  while (*n > 0 && is_blank((*s)[*n - 1]))
    (*n)--;
}

static uint64_t line_key(uint32_t group, const char *line, size_t n) {
  uint64_t h = fnv1a(FNV_BASIS, &group, sizeof(group));
  return key_of(mix64(fnv1a(h, line, n)));
}

int gy_prep_filter_count(gy_prep_filter_t *f, uint32_t group, const char *text, size_t n) {
  if (!f->o.boiler_min_docs) return 0;
  if (group >= f->ngroups) {
    uint32_t ng = group + 1;
    uint32_t *g = gy_realloc(f->group_docs, ng * sizeof(uint32_t));
    if (!g) return GY_ENOMEM;
    memset(g + f->ngroups, 0, (ng - f->ngroups) * sizeof(uint32_t));
    f->group_docs = g;
    f->ngroups = ng;
  }
  f->group_docs[group]++;
  uint32_t doc = ++f->counted;
  size_t i = 0;
  while (i < n) {
    const char *nl = memchr(text + i, '\n', n - i);
    size_t end = nl ? (size_t)(nl - text) : n;
    const char *line = text + i;
    size_t len = end - i;
    trim(&line, &len);
    i = end + 1;
    if (len < f->o.boiler_min_bytes || len == 0) continue;
    int fresh;
    uint64_t *v = map_put(&f->lines, line_key(group, line, len), &fresh);
    if (!v) return GY_ENOMEM;
    if ((uint32_t)*v == doc) continue; /* counted for this document already */
    *v = (((*v >> 32) + 1) << 32) | doc;
  }
  return 0;
}

uint32_t gy_prep_filter_line_docs(const gy_prep_filter_t *f, uint32_t group, const char *line,
                                  size_t n) {
  trim(&line, &n);
  const uint64_t *v = map_find(&f->lines, line_key(group, line, n));
  return v ? (uint32_t)(*v >> 32) : 0;
}

size_t gy_prep_filter_strip(const gy_prep_filter_t *f, uint32_t group, char *text, size_t n,
                            size_t *lines, gy_prep_line_cb cb, void *ud) {
  size_t removed = 0;
  if (!f->o.boiler_min_docs || group >= f->ngroups) {
    if (lines) *lines = 0;
    return n;
  }
  double need = f->o.boiler_min_share * (double)f->group_docs[group];
  size_t o = 0, i = 0;
  while (i < n) {
    const char *nl = memchr(text + i, '\n', n - i);
    size_t end = nl ? (size_t)(nl - text) + 1 : n; /* the line with its line feed */
    const char *line = text + i;
    size_t len = (nl ? end - 1 : end) - i;
    trim(&line, &len);
    int drop = 0;
    if (len >= f->o.boiler_min_bytes && len > 0) {
      uint32_t docs = gy_prep_filter_line_docs(f, group, line, len);
      if (docs >= f->o.boiler_min_docs && (double)docs >= need) {
        drop = 1;
        removed++;
        if (cb) cb(ud, line, len, docs);
      }
    }
    if (!drop) {
      memmove(text + o, text + i, end - i);
      o += end - i;
    }
    i = end;
  }
  if (lines) *lines = removed;
  return o;
}

static int remember(gy_prep_filter_t *f, uint64_t id, uint64_t norm) {
  if (f->o.exact_dedup) {
    int fresh;
    uint64_t *v = map_put(&f->exact, key_of(norm), &fresh);
    if (!v) return GY_ENOMEM;
    if (fresh) *v = id;
  }
  if (!f->k) return 0;
  if (f->nkept == f->capkept) {
    size_t cap = f->capkept ? f->capkept * 2 : 256;
    if (cap > UINT32_MAX - 1) return GY_ENOMEM;
    uint32_t *sigs = gy_realloc(f->sigs, cap * f->k * sizeof(uint32_t));
    if (sigs) f->sigs = sigs;
    uint32_t *next = gy_realloc(f->next, cap * f->o.bands * sizeof(uint32_t));
    if (next) f->next = next;
    uint64_t *ids = gy_realloc(f->ids, cap * sizeof(uint64_t));
    if (ids) f->ids = ids;
    uint32_t *stamp = gy_realloc(f->stamp, cap * sizeof(uint32_t));
    if (stamp) f->stamp = stamp;
    if (!sigs || !next || !ids || !stamp) return GY_ENOMEM;
    f->capkept = cap;
  }
  size_t d = f->nkept;
  memcpy(f->sigs + d * f->k, f->sig, f->k * sizeof(uint32_t));
  f->ids[d] = id;
  f->stamp[d] = 0;
  for (uint32_t band = 0; band < f->o.bands; band++) {
    uint64_t h = fnv1a(fnv1a(FNV_BASIS, &band, sizeof(band)), f->sig + band * f->o.rows,
                       f->o.rows * sizeof(uint32_t));
    int fresh;
    uint64_t *v = map_put(&f->buckets, key_of(mix64(h)), &fresh);
    if (!v) return GY_ENOMEM;
    f->next[d * f->o.bands + band] = (uint32_t)*v;
    *v = d + 1;
  }
  f->nkept++;
  return 0;
}

/* The first kept document (bands in order, newest first in each bucket) whose signature is
 * near_threshold or more alike; -1 if none. */
static long near_match(gy_prep_filter_t *f, double *sim) {
  if (++f->query == 0) { /* the stamps wrapped: forget them */
    memset(f->stamp, 0, f->nkept * sizeof(uint32_t));
    f->query = 1;
  }
  for (uint32_t band = 0; band < f->o.bands; band++) {
    uint64_t h = fnv1a(fnv1a(FNV_BASIS, &band, sizeof(band)), f->sig + band * f->o.rows,
                       f->o.rows * sizeof(uint32_t));
    const uint64_t *v = map_find(&f->buckets, key_of(mix64(h)));
    for (uint32_t d1 = v ? (uint32_t)*v : 0; d1;
         d1 = f->next[(size_t)(d1 - 1) * f->o.bands + band]) {
      size_t d = d1 - 1;
      if (f->stamp[d] == f->query) continue;
      f->stamp[d] = f->query;
      double s = gy_prep_minhash_similarity(f->sig, f->sigs + d * f->k, f->k);
      if (s >= f->o.near_threshold) {
        *sim = s;
        return (long)d;
      }
    }
  }
  return -1;
}

int gy_prep_filter_judge(gy_prep_filter_t *f, uint64_t id, const char *text, size_t n,
                         gy_prep_verdict_t *v) {
  memset(v, 0, sizeof(*v));
  v->repeat.times = 1;
  const char *t0 = text;
  size_t n0 = n;
  trim(&t0, &n0);
  while (n0 > 0 && (*t0 == '\n' || is_blank(*t0))) {
    t0++;
    n0--;
  }
  if (n0 == 0) {
    v->rule = GY_PREP_EMPTY;
    return 0;
  }
  gy_prep_text_stats(text, n, &v->stats);
  size_t bad = v->stats.invalid + v->stats.control;
  if (v->stats.nul > 0 || (double)bad > f->o.nontext_max * (double)n) {
    v->rule = GY_PREP_NONTEXT;
    return 0;
  }
  gy_prep_token_t *tok = NULL;
  size_t ntok = 0;
  if (f->o.rep_max_times || f->k) {
    ntok = gy_prep_tokenize(text, n, &tok);
    if (ntok == (size_t)-1) return GY_ENOMEM;
  }
  if (f->o.rep_max_times) {
    v->repeat = gy_prep_find_repeat(tok, ntok, f->o.rep_min_period, f->o.rep_max_period);
    if (v->repeat.times >= f->o.rep_max_times) {
      const gy_prep_token_t *a = &tok[v->repeat.token];
      const gy_prep_token_t *z =
          &tok[v->repeat.token + (size_t)v->repeat.times * v->repeat.period - 1];
      v->repeat_off = a->off;
      v->repeat_len = (size_t)z->off + z->len - a->off;
      v->rule = GY_PREP_REPETITION;
      gy_free(tok);
      return 0;
    }
  }
  uint64_t norm = gy_prep_normal_hash(text, n);
  if (f->o.exact_dedup) {
    const uint64_t *dup = map_find(&f->exact, key_of(norm));
    if (dup) {
      v->rule = GY_PREP_EXACT_DUP;
      v->dup_of = *dup;
      gy_free(tok);
      return 0;
    }
  }
  if (f->k) {
    minhash_with(tok, ntok, f->o.shingle, f->a, f->b, f->sig, f->k);
    double sim = 0.0;
    long d = near_match(f, &sim);
    if (d >= 0) {
      v->rule = GY_PREP_NEAR_DUP;
      v->dup_of = f->ids[d];
      v->similarity = sim;
      gy_free(tok);
      return 0;
    }
  }
  gy_free(tok);
  v->rule = GY_PREP_KEEP;
  return remember(f, id, norm);
}
