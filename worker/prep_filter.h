/* prep_filter: the document filters of gyro-prep, as a pure module (no I/O, no clock).
 *
 * A channel's documents pass through two rounds. First every document is counted
 * (gy_prep_filter_count): the filter learns in how many documents of each source group every
 * line occurs. Then, in the channel's order, each document has its boilerplate lines removed
 * (gy_prep_filter_strip) and is judged (gy_prep_filter_judge) by these rules, in this order:
 *
 *   nontext     it holds a NUL byte, or more than nontext_max of its bytes are invalid UTF-8
 *               or control characters other than tab, line feed, carriage return, form feed;
 *   repetition  a span of rep_min_period..rep_max_period tokens repeats rep_max_times times or
 *               more back to back (OLMo 2's rule: 1..13 tokens, 32 times);
 *   exact_dup   its normalised text (whitespace runs as one space, ASCII lower case) equals
 *               that of a document kept earlier;
 *   near_dup    the Jaccard similarity of its token shingles with those of a document kept
 *               earlier is near_threshold or more (estimated by MinHash, candidates by LSH).
 *
 * A document that passes is kept: later documents are compared with it. Everything is
 * deterministic: the hashes are fixed functions of the bytes and of opts.seed.
 *
 * Tokens (for repetition and shingles) approximate what a BPE tokenizer sees, because the
 * channels' own tokens are bytes and 32 equal bytes (a ruler of dashes, an indentation) are
 * common and harmless: a run of letters and digits (ASCII or not) is one token; a run of ASCII
 * punctuation is one token; each East Asian wide character (CJK, kana, fullwidth forms), each
 * symbol (U+0080..U+00BF except U+00A0, U+2000..U+2BFF: punctuation, arrows, box drawing,
 * shapes; U+1F000..U+1FAFF) and each invalid byte is one token; ASCII whitespace and U+00A0
 * only separate tokens.
 *
 * Boilerplate lines: a line (trimmed; lines of fewer than boiler_min_bytes bytes are never
 * boilerplate) that occurs in at least boiler_min_docs documents of its group and in at least
 * boiler_min_share of them is removed from every document of the group; the document stays.
 * A group is whatever the caller says: gyro-prep uses one per command-line input, so the pages
 * of one HTML folder form a group and files named one by one (the code channel) never do.
 */
#ifndef GY_PREP_FILTER_H
#define GY_PREP_FILTER_H

#include <stddef.h>
#include <stdint.h>

#define GY_PREP_MINHASH_MAX 1024 /* bands x rows at most */

/* The rules, with the names the report uses. */
#define GY_PREP_RULE_MAP(XX)                                                                       \
  XX(KEEP, "kept")                                                                                 \
  XX(NONTEXT, "nontext")                                                                           \
  XX(REPETITION, "repetition")                                                                     \
  XX(EXACT_DUP, "exact_duplicate")                                                                 \
  XX(NEAR_DUP, "near_duplicate")                                                                   \
  XX(EMPTY, "empty")

typedef enum {
#define GY_PREP_RULE_ENUM(name, str) GY_PREP_##name,
  GY_PREP_RULE_MAP(GY_PREP_RULE_ENUM)
#undef GY_PREP_RULE_ENUM
      GY_PREP_RULE_COUNT
} gy_prep_rule_t;

/* The report's name of a rule ("kept", "nontext", ...); "?" for a value out of range. */
const char *gy_prep_rule_name(gy_prep_rule_t r);

typedef struct {
  double nontext_max;        /* share of bad bytes above which a document is dropped */
  uint32_t rep_min_period;   /* shortest repeated span, in tokens (>= 1) */
  uint32_t rep_max_period;   /* longest repeated span, in tokens */
  uint32_t rep_max_times;    /* this many back-to-back repeats drop a document; 0: rule off */
  int exact_dedup;           /* 0: rule off */
  double near_threshold;     /* estimated Jaccard similarity that drops; 0: rule off */
  uint32_t shingle;          /* tokens per shingle */
  uint32_t bands, rows;      /* LSH: bands x rows MinHash values */
  uint32_t boiler_min_docs;  /* 0: boilerplate removal off */
  double boiler_min_share;   /* of the group's documents */
  uint32_t boiler_min_bytes; /* shorter lines are never boilerplate */
  uint64_t seed;             /* of the MinHash functions */
} gy_prep_filter_opts_t;

/* The defaults: nontext_max 0 (any invalid or control byte drops), repetition 1..13 tokens 32
 * times, exact dedup on, near_threshold 0.8 over 5-token shingles with 16 bands x 8 rows,
 * boilerplate at 10 documents and half the group, lines of 4 bytes or more, seed 0. */
void gy_prep_filter_opts_default(gy_prep_filter_opts_t *o);

/* 0, or GY_EINVAL with the offending option named in err (err may be NULL). */
int gy_prep_filter_opts_check(const gy_prep_filter_opts_t *o, char *err, size_t errlen);

/* ---- the building blocks (pure functions; the filter below uses them) ---- */

typedef struct {
  size_t bytes, nul, invalid, control;
} gy_prep_text_stats_t;

/* Counts the NUL bytes, the bytes of invalid UTF-8 sequences (overlong forms, surrogates, code
 * points past U+10FFFF, stray continuation bytes, sequences cut short) and the control
 * characters other than \t \n \r \f (C0, DEL). */
void gy_prep_text_stats(const char *s, size_t n, gy_prep_text_stats_t *st);

/* 1 if s is valid UTF-8 without NUL bytes. */
int gy_prep_is_utf8(const char *s, size_t n);

/* 1 for an East Asian wide character (CJK ideographs, kana, fullwidth forms and punctuation;
 * Hangul is left out, as CSS does, because Korean separates words with spaces). */
int gy_prep_is_wide(uint32_t c);

typedef struct {
  uint32_t off, len; /* bytes of the text */
  uint64_t hash;     /* of the token's bytes */
} gy_prep_token_t;

/* Splits s into tokens (see above) into *out (from gy_malloc; the caller gy_frees it; NULL
 * when there are none). Returns the count, or (size_t)-1 when out of memory or n >= 4 GiB. */
size_t gy_prep_tokenize(const char *s, size_t n, gy_prep_token_t **out);

typedef struct {
  uint32_t times;  /* back-to-back repeats of the span (1: nothing repeats) */
  uint32_t period; /* its length in tokens */
  size_t token;    /* index of its first token */
} gy_prep_repeat_t;

/* The span of min_period..max_period tokens repeated back to back the most times (ties: the
 * shorter period, then the earlier span). */
gy_prep_repeat_t gy_prep_find_repeat(const gy_prep_token_t *t, size_t n, uint32_t min_period,
                                     uint32_t max_period);

/* The 64-bit hash of s with whitespace runs as one space, ends trimmed, ASCII in lower case. */
uint64_t gy_prep_normal_hash(const char *s, size_t n);

/* Fills sig[0..k) with the MinHash signature of the token shingles (k hash functions from
 * seed; a document of fewer tokens than shingle is one shingle; no tokens: all UINT32_MAX). */
void gy_prep_minhash(const gy_prep_token_t *t, size_t n, uint32_t shingle, uint64_t seed,
                     uint32_t *sig, uint32_t k);

/* The share of equal positions of two signatures: the estimated Jaccard similarity. */
double gy_prep_minhash_similarity(const uint32_t *a, const uint32_t *b, uint32_t k);

/* ---- the filter ---- */

typedef struct gy_prep_filter gy_prep_filter_t;

typedef struct {
  gy_prep_rule_t rule;
  gy_prep_text_stats_t stats;    /* nontext */
  gy_prep_repeat_t repeat;       /* repetition */
  size_t repeat_off, repeat_len; /* repetition: the repeated run, bytes of the text */
  uint64_t dup_of;               /* exact_dup, near_dup: the earlier document's id */
  double similarity;             /* near_dup: estimated Jaccard similarity */
} gy_prep_verdict_t;

/* Creates a filter (opts are copied and must pass gy_prep_filter_opts_check). Returns 0,
 * GY_EINVAL or GY_ENOMEM. */
int gy_prep_filter_create(gy_prep_filter_t **out, const gy_prep_filter_opts_t *opts);
/* Frees everything; NULL is a no-op. */
void gy_prep_filter_destroy(gy_prep_filter_t *f);

/* Round one: counts text's distinct lines as one more document of group. Returns 0 or
 * GY_ENOMEM. */
int gy_prep_filter_count(gy_prep_filter_t *f, uint32_t group, const char *text, size_t n);

/* The number of counted documents of group in which line occurs (trimmed before look-up). */
uint32_t gy_prep_filter_line_docs(const gy_prep_filter_t *f, uint32_t group, const char *line,
                                  size_t n);

/* Called for each boilerplate line removed (trimmed; valid during the call only). */
typedef void (*gy_prep_line_cb)(void *ud, const char *line, size_t n, uint32_t docs);

/* Round two: removes text's boilerplate lines (with their line feeds) in place and returns the
 * new length; *lines gets the number removed. cb may be NULL. */
size_t gy_prep_filter_strip(const gy_prep_filter_t *f, uint32_t group, char *text, size_t n,
                            size_t *lines, gy_prep_line_cb cb, void *ud);

/* Judges a document (after gy_prep_filter_strip) by the rules above; a kept document is
 * remembered under id for the duplicate rules. Returns 0 with *v filled, or GY_ENOMEM. */
int gy_prep_filter_judge(gy_prep_filter_t *f, uint64_t id, const char *text, size_t n,
                         gy_prep_verdict_t *v);

#endif
