/* test_prep_filter: gyro-prep's document filters (worker/prep_filter) on crafted documents:
 * the tokens, each rule on a document that trips it and on one that must pass, the order of
 * the rules, boilerplate lines per group, determinism, option checks and out-of-memory. */
#include <stdint.h>

#include "common/alloc.h"
#include "common/err.h"
#include "tests/test.h"
#include "worker/prep_filter.h"

/* A filter with the defaults, or with one rule left on (the others off). */
static gy_prep_filter_t *make(const gy_prep_filter_opts_t *o) {
  gy_prep_filter_t *f = NULL;
  REQUIRE(gy_prep_filter_create(&f, o) == 0);
  return f;
}

static void all_off(gy_prep_filter_opts_t *o) {
  gy_prep_filter_opts_default(o);
  o->nontext_max = 1.0;
  o->rep_max_times = 0;
  o->exact_dedup = 0;
  o->near_threshold = 0.0;
  o->boiler_min_docs = 0;
}

static gy_prep_rule_t judge(gy_prep_filter_t *f, uint64_t id, const char *s, gy_prep_verdict_t *v) {
  REQUIRE(gy_prep_filter_judge(f, id, s, strlen(s), v) == 0);
  return v->rule;
}

/* Appends s repeated times to b (size cap), returns b. */
static char *repeat(char *b, size_t cap, const char *prefix, const char *s, int times,
                    const char *suffix) {
  snprintf(b, cap, "%s", prefix);
  for (int i = 0; i < times; i++)
    strncat(b, s, cap - strlen(b) - 1);
  strncat(b, suffix, cap - strlen(b) - 1);
  return b;
}

static void test_tokens(void) {
  gy_prep_token_t *t = NULL;
  /* words, a punctuation run, CJK characters one by one, a box-drawing run one by one */
  const char *s = "int foo_bar(x); 中文字 ───  naïve\t====";
  size_t n = gy_prep_tokenize(s, strlen(s), &t);
  const char *want[] = {"int", "foo_bar", "(", "x", ");",    "中",  "文",
                        "字",  "─",       "─", "─", "naïve", "===="};
  CHECK_EQ_INT(n, sizeof(want) / sizeof(want[0]));
  for (size_t i = 0; i < n && i < sizeof(want) / sizeof(want[0]); i++)
    CHECK_MSG(t[i].len == strlen(want[i]) && memcmp(s + t[i].off, want[i], t[i].len) == 0,
              "token %zu is '%.*s', want '%s'", i, (int)t[i].len, s + t[i].off, want[i]);
  CHECK(t[1].hash != t[3].hash);
  CHECK(t[8].hash == t[9].hash);
  gy_free(t);
  /* Whitespace only: no tokens. An invalid byte is a token of its own. */
  CHECK_EQ_INT(gy_prep_tokenize(" \n\t ", 4, &t), 0);
  CHECK(t == NULL);
  n = gy_prep_tokenize("a\xff"
                       "b",
                       3, &t);
  CHECK_EQ_INT(n, 3);
  gy_free(t);
}

static void test_text_stats(void) {
  gy_prep_text_stats_t st;
  gy_prep_text_stats("plain\ttext\r\n\f中文", strlen("plain\ttext\r\n\f中文"), &st);
  CHECK(st.nul == 0 && st.invalid == 0 && st.control == 0);
  const char bad[] = "a\0b\x07\x7f\xc0\xaf\xed\xa0\x80\xe4\xb8";
  gy_prep_text_stats(bad, sizeof(bad) - 1, &st);
  CHECK_EQ_INT(st.nul, 1);
  CHECK_EQ_INT(st.control, 2);         /* BEL, DEL */
  CHECK_EQ_INT(st.invalid, 2 + 3 + 2); /* overlong, surrogate, cut short */
  CHECK(gy_prep_is_utf8("中文 ok", strlen("中文 ok")));
  CHECK(!gy_prep_is_utf8("a\0b", 3));
  CHECK(!gy_prep_is_utf8("\xf4\x90\x80\x80", 4)); /* past U+10FFFF */
  CHECK(gy_prep_is_wide(0x4E2D) && gy_prep_is_wide(0xFF0C) && !gy_prep_is_wide(0xAC00));
}

static void test_nontext_rule(void) {
  gy_prep_filter_opts_t o;
  all_off(&o);
  o.nontext_max = 0.0;
  gy_prep_filter_t *f = make(&o);
  gy_prep_verdict_t v;
  CHECK_EQ_INT(judge(f, 0, "clean text\twith tabs\n", &v), GY_PREP_KEEP);
  CHECK_EQ_INT(judge(f, 1, "a bell \x07 rings", &v), GY_PREP_NONTEXT);
  CHECK_EQ_INT(v.stats.control, 1);
  CHECK_EQ_INT(judge(f, 2, "latin-1 caf\xe9", &v), GY_PREP_NONTEXT);
  CHECK_EQ_INT(v.stats.invalid, 1);
  REQUIRE(gy_prep_filter_judge(f, 3, "nul\0inside", 10, &v) == 0);
  CHECK_EQ_INT(v.rule, GY_PREP_NONTEXT);
  gy_prep_filter_destroy(f);
  /* A share of 10%: one bad byte in 20 passes, one in 5 does not; a NUL always drops. */
  o.nontext_max = 0.1;
  f = make(&o);
  CHECK_EQ_INT(judge(f, 0, "nineteen good bytes\x07", &v), GY_PREP_KEEP);
  CHECK_EQ_INT(judge(f, 1, "four\x07", &v), GY_PREP_NONTEXT);
  const char nul[] = "a long text with one NUL\0 in it, far below ten percent";
  REQUIRE(gy_prep_filter_judge(f, 2, nul, sizeof(nul) - 1, &v) == 0);
  CHECK_EQ_INT(v.rule, GY_PREP_NONTEXT);
  gy_prep_filter_destroy(f);
}

static void test_repetition_rule(void) {
  gy_prep_filter_opts_t o;
  all_off(&o);
  o.rep_max_times = 32;
  gy_prep_filter_t *f = make(&o);
  gy_prep_verdict_t v;
  char b[4096];
  /* One token 32 times trips it; 31 times does not. */
  CHECK_EQ_INT(judge(f, 0, repeat(b, sizeof(b), "start ", "la ", 31, "end"), &v), GY_PREP_KEEP);
  CHECK_EQ_INT(v.repeat.times, 31);
  CHECK_EQ_INT(judge(f, 1, repeat(b, sizeof(b), "start ", "la ", 32, "end"), &v),
               GY_PREP_REPETITION);
  CHECK_EQ_INT(v.repeat.times, 32);
  CHECK_EQ_INT(v.repeat.period, 1);
  CHECK_EQ_INT(v.repeat_off, 6);
  CHECK_EQ_INT(v.repeat_len, 32 * 3 - 1);
  /* A span of 13 tokens 32 times trips it; of 14 tokens it is out of range. */
  const char *p13 = "a b c d e f g h i j k l m ";
  const char *p14 = "a b c d e f g h i j k l m n ";
  CHECK_EQ_INT(judge(f, 2, repeat(b, sizeof(b), "", p13, 33, ""), &v), GY_PREP_REPETITION);
  CHECK_EQ_INT(v.repeat.period, 13);
  CHECK_EQ_INT(judge(f, 3, repeat(b, sizeof(b), "", p14, 40, ""), &v), GY_PREP_KEEP);
  /* A span of 8 tokens (words and punctuation) 40 times. */
  CHECK_EQ_INT(judge(f, 4, repeat(b, sizeof(b), "", "spam and eggs, spam and ham; ", 40, ""), &v),
               GY_PREP_REPETITION);
  CHECK_EQ_INT(v.repeat.period, 8);
  /* Repeats that are not back to back do not count. */
  char mixed[4096] = "";
  for (int i = 0; i < 40; i++) {
    char w[32];
    snprintf(w, sizeof(w), "word%d same ", i);
    strcat(mixed, w);
  }
  CHECK_EQ_INT(judge(f, 5, mixed, &v), GY_PREP_KEEP);
  /* A ruler of 60 dashes is one token (BPE keeps such runs whole); 40 box-drawing characters
   * are 40 tokens, as are 40 CJK characters. */
  CHECK_EQ_INT(
      judge(f, 6, "/* ------------------------------------------------------------ */", &v),
      GY_PREP_KEEP);
  CHECK_EQ_INT(judge(f, 7, repeat(b, sizeof(b), "┌", "─", 40, "┐"), &v), GY_PREP_REPETITION);
  CHECK_EQ_INT(judge(f, 8, repeat(b, sizeof(b), "哈", "哈", 40, ""), &v), GY_PREP_REPETITION);
  gy_prep_filter_destroy(f);
  /* The bare function. */
  gy_prep_token_t *t = NULL;
  const char *s = "x y z y z y z q";
  size_t n = gy_prep_tokenize(s, strlen(s), &t);
  gy_prep_repeat_t r = gy_prep_find_repeat(t, n, 1, 13);
  CHECK_EQ_INT(r.times, 3);
  CHECK_EQ_INT(r.period, 2);
  CHECK_EQ_INT(r.token, 1);
  r = gy_prep_find_repeat(t, n, 3, 13);
  CHECK_EQ_INT(r.times, 1);
  gy_free(t);
}

static void test_exact_dup_rule(void) {
  gy_prep_filter_opts_t o;
  all_off(&o);
  o.exact_dedup = 1;
  gy_prep_filter_t *f = make(&o);
  gy_prep_verdict_t v;
  CHECK_EQ_INT(judge(f, 10, "The quick brown fox\njumps over the lazy dog.", &v), GY_PREP_KEEP);
  /* Whitespace runs and ASCII case do not matter. */
  CHECK_EQ_INT(judge(f, 11, "  the QUICK brown   fox jumps\tover the lazy dog. \n", &v),
               GY_PREP_EXACT_DUP);
  CHECK_EQ_INT(v.dup_of, 10);
  /* One changed character does. */
  CHECK_EQ_INT(judge(f, 12, "The quick brown fox jumps over the lazy cat.", &v), GY_PREP_KEEP);
  /* Dropped documents are not remembered: only the first kept one is the original. */
  CHECK_EQ_INT(judge(f, 13, "the quick brown fox jumps over the lazy cat.", &v), GY_PREP_EXACT_DUP);
  CHECK_EQ_INT(v.dup_of, 12);
  CHECK(gy_prep_normal_hash("a  b", 4) == gy_prep_normal_hash(" A b\n", 5));
  CHECK(gy_prep_normal_hash("ab", 2) != gy_prep_normal_hash("a b", 3));
  gy_prep_filter_destroy(f);
}

/* A text of n distinct words, with word k replaced by "CHANGED" when k is in [from, to). */
static void words(char *b, size_t cap, int n, int from, int to) {
  b[0] = '\0';
  for (int i = 0; i < n; i++) {
    char w[32];
    if (i >= from && i < to)
      snprintf(w, sizeof(w), "CHANGED%d ", i);
    else
      snprintf(w, sizeof(w), "w%d ", i * 7919 % 1000);
    strncat(b, w, cap - strlen(b) - 1);
  }
}

static void test_near_dup_rule(void) {
  gy_prep_filter_opts_t o;
  all_off(&o);
  o.near_threshold = 0.8;
  gy_prep_filter_t *f = make(&o);
  gy_prep_verdict_t v;
  char a[8192], b[8192], c[8192];
  words(a, sizeof(a), 400, 0, 0);
  words(b, sizeof(b), 400, 200, 202); /* two words of 400 changed: ~97% alike */
  words(c, sizeof(c), 400, 100, 300); /* half changed: ~30% alike */
  CHECK_EQ_INT(judge(f, 1, a, &v), GY_PREP_KEEP);
  CHECK_EQ_INT(judge(f, 2, b, &v), GY_PREP_NEAR_DUP);
  CHECK_EQ_INT(v.dup_of, 1);
  CHECK(v.similarity >= 0.8 && v.similarity <= 1.0);
  CHECK_EQ_INT(judge(f, 3, c, &v), GY_PREP_KEEP);
  /* Unrelated text passes. */
  CHECK_EQ_INT(judge(f, 4, "An entirely different document about tea, kettles and cups.", &v),
               GY_PREP_KEEP);
  gy_prep_filter_destroy(f);

  /* The estimate tracks the true Jaccard similarity: 5-token shingles of 400 words with 2
   * changed share 390 of 402 distinct shingles (0.970). */
  gy_prep_token_t *ta = NULL, *tb = NULL;
  size_t na = gy_prep_tokenize(a, strlen(a), &ta), nb = gy_prep_tokenize(b, strlen(b), &tb);
  uint32_t sa[256], sb[256], sa2[256];
  gy_prep_minhash(ta, na, 5, 7, sa, 256);
  gy_prep_minhash(tb, nb, 5, 7, sb, 256);
  gy_prep_minhash(ta, na, 5, 7, sa2, 256);
  CHECK_NEAR(gy_prep_minhash_similarity(sa, sb, 256), 390.0 / 402.0, 0.05);
  CHECK(memcmp(sa, sa2, sizeof(sa)) == 0); /* deterministic */
  gy_prep_minhash(ta, na, 5, 8, sa2, 256);
  CHECK(memcmp(sa, sa2, sizeof(sa)) != 0); /* the seed matters */
  gy_free(ta);
  gy_free(tb);
}

static void count_all(gy_prep_filter_t *f, uint32_t group, const char *const *docs, int n) {
  for (int i = 0; i < n; i++)
    REQUIRE(gy_prep_filter_count(f, group, docs[i], strlen(docs[i])) == 0);
}

static int removed_lines;
static void on_line(void *ud, const char *line, size_t n, uint32_t docs) {
  (void)ud;
  (void)docs;
  CHECK(n > 0 && line[0] != ' ' && line[n - 1] != ' ');
  removed_lines++;
}

static void test_boilerplate_lines(void) {
  gy_prep_filter_opts_t o;
  all_off(&o);
  o.boiler_min_docs = 3;
  o.boiler_min_share = 0.5;
  o.boiler_min_bytes = 4;
  gy_prep_filter_t *f = make(&o);
  /* Group 0: four pages with a navigation line and a footer, one page without them. */
  const char *pages[] = {
      "Home | Prev | Next\nFirst page text.\n  Copyright footer  \nok",
      "Home | Prev | Next\nSecond page text.\nCopyright footer\nok",
      "Home | Prev | Next\nThird page.\nHome | Prev | Next\nCopyright footer\nok",
      "Home | Prev | Next\nFourth page.\nCopyright footer\nok",
      "A page of its own.\nok",
  };
  count_all(f, 0, pages, 5);
  /* Group 1: the same navigation line in two documents only. */
  const char *other[] = {"Home | Prev | Next\nelsewhere", "Home | Prev | Next\nagain",
                         "something else"};
  count_all(f, 1, other, 3);
  CHECK_EQ_INT(gy_prep_filter_line_docs(f, 0, "Home | Prev | Next", 18), 4);
  CHECK_EQ_INT(gy_prep_filter_line_docs(f, 0, " Copyright footer ", 18), 4);
  CHECK_EQ_INT(gy_prep_filter_line_docs(f, 1, "Home | Prev | Next", 18), 2);
  CHECK_EQ_INT(gy_prep_filter_line_docs(f, 0, "ok", 2), 0); /* shorter than 4 bytes */

  char doc[256];
  snprintf(doc, sizeof(doc), "%s", pages[2]);
  size_t lines = 0;
  removed_lines = 0;
  size_t n = gy_prep_filter_strip(f, 0, doc, strlen(doc), &lines, on_line, NULL);
  CHECK_EQ_INT(lines, 3); /* both navigation lines and the footer */
  CHECK_EQ_INT(removed_lines, 3);
  CHECK(n == strlen("Third page.\nok") && memcmp(doc, "Third page.\nok", n) == 0);
  /* In group 1 the line is in 2 of 3 documents: below 3, kept. */
  snprintf(doc, sizeof(doc), "%s", other[0]);
  n = gy_prep_filter_strip(f, 1, doc, strlen(doc), &lines, NULL, NULL);
  CHECK_EQ_INT(lines, 0);
  CHECK_EQ_INT(n, strlen(other[0]));
  /* The share: with min_share 0.9, 4 of 5 documents is not enough. */
  gy_prep_filter_destroy(f);
  o.boiler_min_share = 0.9;
  f = make(&o);
  count_all(f, 0, pages, 5);
  snprintf(doc, sizeof(doc), "%s", pages[0]);
  n = gy_prep_filter_strip(f, 0, doc, strlen(doc), &lines, NULL, NULL);
  CHECK_EQ_INT(lines, 0);
  gy_prep_filter_destroy(f);
  /* Off: nothing counted, nothing removed. */
  o.boiler_min_docs = 0;
  f = make(&o);
  count_all(f, 0, pages, 5);
  snprintf(doc, sizeof(doc), "%s", pages[0]);
  n = gy_prep_filter_strip(f, 0, doc, strlen(doc), &lines, NULL, NULL);
  CHECK_EQ_INT(lines, 0);
  CHECK_EQ_INT(n, strlen(pages[0]));
  gy_prep_filter_destroy(f);
}

static void test_rule_order_and_empty(void) {
  gy_prep_filter_opts_t o;
  gy_prep_filter_opts_default(&o);
  gy_prep_filter_t *f = make(&o);
  gy_prep_verdict_t v;
  char b[4096];
  CHECK_EQ_INT(judge(f, 0, " \n\t\n", &v), GY_PREP_EMPTY);
  /* Non-text wins over repetition; repetition over duplicates. */
  CHECK_EQ_INT(judge(f, 1, repeat(b, sizeof(b), "\x07", "ha ", 40, ""), &v), GY_PREP_NONTEXT);
  CHECK_EQ_INT(judge(f, 2, repeat(b, sizeof(b), "", "ha ", 40, ""), &v), GY_PREP_REPETITION);
  CHECK_EQ_INT(judge(f, 3, repeat(b, sizeof(b), "", "ha ", 40, ""), &v), GY_PREP_REPETITION);
  /* An exact duplicate is reported as exact, not near. */
  CHECK_EQ_INT(judge(f, 4, "a document worth keeping, with enough words in it to shingle", &v),
               GY_PREP_KEEP);
  CHECK_EQ_INT(judge(f, 5, "a document worth keeping, with enough words in it to shingle", &v),
               GY_PREP_EXACT_DUP);
  CHECK_EQ_INT(v.dup_of, 4);
  CHECK(strcmp(gy_prep_rule_name(GY_PREP_NEAR_DUP), "near_duplicate") == 0);
  CHECK(strcmp(gy_prep_rule_name(GY_PREP_RULE_COUNT), "?") == 0);
  gy_prep_filter_destroy(f);
  gy_prep_filter_destroy(NULL);
}

static void test_deterministic(void) {
  /* Two filters fed the same documents give the same verdicts. */
  gy_prep_filter_opts_t o;
  gy_prep_filter_opts_default(&o);
  gy_prep_filter_t *f1 = make(&o), *f2 = make(&o);
  char b[8192];
  for (int i = 0; i < 60; i++) {
    words(b, sizeof(b), 80 + i % 7, i % 5 * 10, i % 5 * 10 + i % 3);
    gy_prep_verdict_t v1, v2;
    REQUIRE(gy_prep_filter_judge(f1, (uint64_t)i, b, strlen(b), &v1) == 0);
    REQUIRE(gy_prep_filter_judge(f2, (uint64_t)i, b, strlen(b), &v2) == 0);
    CHECK(v1.rule == v2.rule && v1.dup_of == v2.dup_of && v1.similarity == v2.similarity);
  }
  gy_prep_filter_destroy(f1);
  gy_prep_filter_destroy(f2);
}

static void test_opts_check(void) {
  gy_prep_filter_opts_t o;
  char err[128];
  gy_prep_filter_opts_default(&o);
  CHECK_EQ_INT(gy_prep_filter_opts_check(&o, err, sizeof(err)), 0);
  CHECK_EQ_INT(o.rep_min_period, 1);
  CHECK_EQ_INT(o.rep_max_period, 13);
  CHECK_EQ_INT(o.rep_max_times, 32);
  o.rep_min_period = 5;
  o.rep_max_period = 4;
  CHECK_EQ_INT(gy_prep_filter_opts_check(&o, err, sizeof(err)), GY_EINVAL);
  CHECK(strstr(err, "min_period") != NULL);
  gy_prep_filter_opts_default(&o);
  o.near_threshold = 1.5;
  CHECK_EQ_INT(gy_prep_filter_opts_check(&o, err, sizeof(err)), GY_EINVAL);
  gy_prep_filter_opts_default(&o);
  o.bands = 64;
  o.rows = 32;
  CHECK_EQ_INT(gy_prep_filter_opts_check(&o, NULL, 0), GY_EINVAL);
  gy_prep_filter_t *f = (gy_prep_filter_t *)&o;
  CHECK_EQ_INT(gy_prep_filter_create(&f, &o), GY_EINVAL);
  CHECK(f == NULL);
  gy_prep_filter_opts_default(&o);
  o.rep_max_times = 1;
  CHECK_EQ_INT(gy_prep_filter_opts_check(&o, NULL, 0), GY_EINVAL);
}

/* Out of memory at every allocation of a short run: an error, never a crash or a leak. */
static int budget, live;
static void *oom_malloc(size_t n) {
  if (budget-- <= 0) return NULL;
  live++;
  return malloc(n);
}
static void *oom_calloc(size_t a, size_t b) {
  if (budget-- <= 0) return NULL;
  live++;
  return calloc(a, b);
}
static void *oom_realloc(void *p, size_t n) {
  if (budget-- <= 0) return NULL;
  if (!p) live++;
  return realloc(p, n);
}
static void oom_free(void *p) {
  if (p) live--;
  free(p);
}

static int oom_run(void) {
  gy_prep_filter_opts_t o;
  gy_prep_filter_opts_default(&o);
  o.boiler_min_docs = 2;
  gy_prep_filter_t *f = NULL;
  int rc = gy_prep_filter_create(&f, &o);
  if (rc) return rc;
  char b[4096];
  for (int i = 0; i < 4 && rc == 0; i++) {
    words(b, sizeof(b), 300, i, i + 1);
    rc = gy_prep_filter_count(f, 0, b, strlen(b));
  }
  for (int i = 0; i < 4 && rc == 0; i++) {
    gy_prep_verdict_t v;
    words(b, sizeof(b), 300, i * 60, i * 60 + 60);
    rc = gy_prep_filter_judge(f, (uint64_t)i, b, strlen(b), &v);
  }
  gy_prep_filter_destroy(f);
  return rc;
}

static void test_oom(void) {
  gy_alloc_hooks_t h = {oom_malloc, oom_calloc, oom_realloc, oom_free};
  gy_alloc_set_hooks(&h);
  int ok = 0;
  for (int k = 0; k < 200 && !ok; k++) {
    budget = k;
    live = 0;
    int rc = oom_run();
    CHECK_MSG(rc == 0 || rc == GY_ENOMEM, "budget %d: rc %d", k, rc);
    CHECK_MSG(live == 0, "budget %d: %d allocations leaked", k, live);
    ok = rc == 0;
  }
  gy_alloc_set_hooks(NULL);
  CHECK(ok);
}

int main(void) {
  RUN(test_tokens);
  RUN(test_text_stats);
  RUN(test_nontext_rule);
  RUN(test_repetition_rule);
  RUN(test_exact_dup_rule);
  RUN(test_near_dup_rule);
  RUN(test_boilerplate_lines);
  RUN(test_rule_order_and_empty);
  RUN(test_deterministic);
  RUN(test_opts_check);
  RUN(test_oom);
  GY_TEST_END();
}
