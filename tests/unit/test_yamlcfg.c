/* yamlcfg: syntax errors with line and column, one-document rule, duplicate keys, nested
 * look-ups with lines, aliases, and strict typed conversions (good values, trailing garbage,
 * overflow, out of range, quoted numbers, non-scalars) with their exact messages. Every input is
 * a real file written into a temporary folder. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/err.h"
#include "common/yamlcfg.h"
#include "tests/test.h"

static char tmpdir[64];
static char written[32][128];
static int nwritten;

/* Writes text to tmpdir/name and returns the path (static storage, kept for cleanup). */
static const char *write_file(const char *name, const char *text, size_t len) {
  REQUIRE(nwritten < 32);
  char *p = written[nwritten++];
  snprintf(p, 128, "%s/%s", tmpdir, name);
  FILE *f = fopen(p, "wb");
  REQUIRE(f);
  REQUIRE(fwrite(text, 1, len, f) == len);
  fclose(f);
  return p;
}
#define WRITE(name, text) write_file(name, text, strlen(text))

static int contains(const char *hay, const char *needle) {
  return strstr(hay, needle) != NULL;
}

/* Loads text expecting a failure whose message starts with "PATH:LINE" and holds what. */
static void expect_load_error(const char *name, const char *text, size_t len, int rc_want,
                              const char *where, const char *what) {
  const char *path = write_file(name, text, len);
  char err[512] = "", prefix[256];
  gy_yaml_t *y = (gy_yaml_t *)1;
  int rc = gy_yaml_load(&y, path, err, sizeof(err));
  CHECK_MSG(rc == rc_want, "%s: rc %d (%s), want %d", name, rc, err, rc_want);
  CHECK(y == NULL);
  snprintf(prefix, sizeof(prefix), "%s:%s", path, where);
  CHECK_MSG(strncmp(err, prefix, strlen(prefix)) == 0, "%s: '%s' does not start with '%s'", name,
            err, prefix);
  CHECK_MSG(contains(err, what), "%s: '%s' lacks '%s'", name, err, what);
  /* The same text parsed from memory (not NUL-terminated: a copy with junk after len) fails
   * the same way, its message naming the document by the name it was given. */
  char *copy = malloc(len + 8), err2[512] = "", want[600];
  REQUIRE(copy);
  memcpy(copy, text, len);
  memcpy(copy + len, "\n: [{\x01\xff", 7);
  y = (gy_yaml_t *)1;
  rc = gy_yaml_parse(&y, name, copy, len, err2, sizeof(err2));
  CHECK_MSG(rc == rc_want, "%s (memory): rc %d (%s), want %d", name, rc, err2, rc_want);
  CHECK(y == NULL);
  snprintf(want, sizeof(want), "%s%s", name, err + strlen(path));
  CHECK_MSG(!strcmp(err2, want), "%s (memory): '%s' is not '%s'", name, err2, want);
  free(copy);
}

/* The shared schema look-ups (gy_yread_*) the run config and policy parsers read with. */
static void test_schema_reader(void) {
  const char *text = "top:\n  mode: fast\n  small: 1e-50\n  n: 12\n  typo: 1\n"
                     "list: [a]\n";
  char err[256] = "";
  gy_yread_t r = {.errmsg = err, .errlen = sizeof(err)};
  REQUIRE(gy_yaml_parse(&r.y, "s.yaml", text, strlen(text), err, sizeof(err)) == 0);
  gy_ynode_t root = gy_yaml_root(r.y), top = 0, none = 7;
  CHECK(gy_yread_section(&r, root, "", "top", &top) == 0 && top != 0);
  CHECK(gy_yread_section(&r, root, "", "absent", &none) == 0 && none == 0);
  CHECK_EQ_INT(gy_yread_section(&r, root, "", "list", &none), GY_ECONFIG);
  CHECK_MSG(!strcmp(err, "s.yaml:6: key 'list': expected a mapping, got a sequence"), "%s", err);
  static const char *const known[] = {"mode", "small", "n", NULL};
  CHECK_EQ_INT(gy_yread_keys(&r, top, "top", known), GY_ECONFIG);
  CHECK_MSG(
      contains(err, "s.yaml:5: key 'top.typo': unknown key (expected one of: mode, small, n)"),
      "%s", err);
  static const char *const modes[] = {"slow", "medium", "careful", NULL};
  int mode = -1;
  CHECK_EQ_INT(gy_yread_enum(&r, top, "top", "mode", modes, &mode), GY_ECONFIG);
  CHECK_MSG(contains(err, "key 'top.mode': expected slow, medium or careful, got 'fast'"), "%s",
            err);
  CHECK_EQ_INT(mode, -1);
  static const char *const two[] = {"slow", "fast", NULL};
  CHECK(gy_yread_enum(&r, top, "top", "mode", two, &mode) == 0 && mode == 1);
  float f = 2;
  CHECK_EQ_INT(gy_yread_float(&r, top, "top", "small", 0, 0, 1, 0, &f), GY_ECONFIG);
  CHECK_MSG(contains(err, "rounds to 0 in single precision"), "%s", err);
  CHECK(f == 2);
  int n = 0, absent = 5;
  gy_ynode_t where = 0;
  CHECK(gy_yread_i32(&r, top, "top", "n", 0, 100, &n, &where) == 0 && n == 12 && where);
  CHECK(gy_yread_i32(&r, top, "top", "nope", 0, 100, &absent, &where) == 0 && absent == 5);
  CHECK(where == 0);
  CHECK_EQ_INT(gy_yread_i32(&r, top, "top", "n", 0, 10, &n, NULL), GY_ECONFIG);
  CHECK_EQ_INT(gy_yread_missing(&r, top, "top", "need", "give one"), GY_ECONFIG);
  CHECK_MSG(contains(err, "key 'top.need': required key is missing: give one"), "%s", err);
  CHECK_EQ_INT(gy_yaml_line(r.y, gy_yread_key_node(&r, top, "n")), 4);
  gy_ynode_t root2 = 0;
  CHECK(gy_yread_root(&r, "thing", "top:", &root2) == 0 && root2 == root);
  gy_yaml_destroy(r.y);
  const char *list = "- a\n- b\n";
  REQUIRE(gy_yaml_parse(&r.y, "l.yaml", list, strlen(list), err, sizeof(err)) == 0);
  CHECK_EQ_INT(gy_yread_root(&r, "thing", "top:, ...", &root2), GY_ECONFIG);
  CHECK_MSG(!strcmp(err, "l.yaml:1: the top level of a thing must be a mapping (top:, ...), got a "
                         "sequence"),
            "%s", err);
  gy_yaml_destroy(r.y);
}

/* A document in memory reads as the same document from a file, named as given. */
static void test_parse_memory(void) {
  const char *text = "a:\n  b: 7\nc: [x, y]\n";
  char err[256] = "";
  gy_yaml_t *y = NULL;
  REQUIRE(gy_yaml_parse(&y, "sent policy", text, strlen(text), err, sizeof(err)) == 0);
  CHECK(!strcmp(gy_yaml_path(y), "sent policy"));
  int64_t v = 0;
  gy_ynode_t a = gy_yaml_get(y, gy_yaml_root(y), "a");
  CHECK(gy_yaml_to_int(y, gy_yaml_get(y, a, "b"), "a.b", 0, 10, &v, err, sizeof(err)) == 0);
  CHECK_EQ_INT(v, 7);
  CHECK_EQ_INT(gy_yaml_line(y, gy_yaml_get(y, a, "b")), 2);
  CHECK(gy_yaml_to_int(y, gy_yaml_get(y, a, "b"), "a.b", 0, 5, &v, err, sizeof(err)) == GY_ECONFIG);
  CHECK_MSG(!strncmp(err, "sent policy:2: key 'a.b'", 24), "%s", err);
  gy_yaml_destroy(y);
  /* Bad arguments and an oversized document are refused, nothing allocated. */
  y = (gy_yaml_t *)1;
  CHECK_EQ_INT(gy_yaml_parse(&y, NULL, text, 3, err, sizeof(err)), GY_EINVAL);
  CHECK_EQ_INT(gy_yaml_parse(&y, "x", NULL, 3, err, sizeof(err)), GY_EINVAL);
  size_t big = (64u << 20) + 1;
  CHECK_EQ_INT(gy_yaml_parse(&y, "big", text, big, err, sizeof(err)), GY_ECONFIG);
  CHECK_MSG(contains(err, "big: ") && contains(err, "too big"), "%s", err);
  CHECK(y == NULL);
}

static void test_load_errors(void) {
  /* A tab in the indentation: libyaml stops at line 2, column 1. */
  expect_load_error("tab.yaml", "a:\n\tb: 1\n", 9, GY_ECONFIG, "2:1: ", "YAML syntax error: ");
  expect_load_error("bracket.yaml", "a: [1, 2\nb: 3\n", 14, GY_ECONFIG,
                    "2:2: ", "YAML syntax error: did not find expected ',' or ']'");
  expect_load_error("indent.yaml", "a:\n  b: 1\n c: 2\n", 16, GY_ECONFIG,
                    "3:2: ", "YAML syntax error: did not find expected key");
  expect_load_error("alias.yaml", "a: 1\nb: *nowhere\n", 17, GY_ECONFIG,
                    "2:4: ", "found undefined alias");
  expect_load_error("utf8.yaml", "a: 1\nb: \xff\xfe\n", 10, GY_ECONFIG,
                    "2:4: ", "YAML syntax error: invalid leading UTF-8 octet");
  expect_load_error("two.yaml", "a: 1\n---\nb: 2\n", 14, GY_ECONFIG, "2: ", "second YAML document");
  expect_load_error("two_bad.yaml", "a: 1\n---\nb: [\n", 14, GY_ECONFIG,
                    "4:1: ", "YAML syntax error");
  expect_load_error("flowvar.yaml", "a: 1\nb: [${X}/a.bin]\n", 20, GY_ECONFIG,
                    "2:", "hint: inside [...] or {...}, quote a value that uses ${NAME}");
  expect_load_error("empty.yaml", "", 0, GY_ECONFIG, "1: ", "empty");
  expect_load_error("comments.yaml", "# nothing here\n# at all\n", 24, GY_ECONFIG, "1: ", "empty");
  expect_load_error("null.yaml", "~\n", 2, GY_ECONFIG, "1: ", "empty");
  expect_load_error("dup.yaml", "a: 1\nb:\n  x: 1\n  y: 2\n  x: 3\n", 27, GY_ECONFIG,
                    "5: ", "key 'x' appears twice in one mapping (first at line 3)");

  char err[256];
  gy_yaml_t *y = NULL;
  char missing[160];
  snprintf(missing, sizeof(missing), "%s/does-not-exist.yaml", tmpdir);
  CHECK_EQ_INT(gy_yaml_load(&y, missing, err, sizeof(err)), GY_ENOENT);
  CHECK(contains(err, missing));
  CHECK(y == NULL);
  /* errmsg may be NULL. */
  CHECK_EQ_INT(gy_yaml_load(&y, missing, NULL, 0), GY_ENOENT);
}

static const char *doc =
    "# a comment\n"                                                                         /* 1 */
    "optimizer:\n"                                                                          /* 2 */
    "  lr: fast\n"                                                                          /* 3 */
    "  good_lr: 3.0e-4\n"                                                                   /* 4 */
    "  beta: 0.95\n"                                                                        /* 5 */
    "  ten: 10\n"                                                                           /* 6 */
    "  nested:\n"                                                                           /* 7 */
    "    deeper:\n"                                                                         /* 8 */
    "      value: 42\n"                                                                     /* 9 */
    "ints:\n"                                                                               /* 10 */
    "  small: -7\n"                                                                         /* 11 */
    "  plus: +12\n"                                                                         /* 12 */
    "  trailing: 12abc\n"                                                                   /* 13 */
    "  overflow: 9223372036854775808\n"                                                     /* 14 */
    "  max: 9223372036854775807\n"                                                          /* 15 */
    "  quoted: \"12\"\n"                                                                    /* 16 */
    "  float: 1.5\n"                                                                        /* 17 */
    "  hex: 0x10\n"                                                                         /* 18 */
    "  space: 1 2\n"                                                                        /* 19 */
    "  empty:\n"                                                                            /* 20 */
    "bools: {a: true, b: no, c: On, d: OFF, e: yes, f: false, g: maybe, h: 1, i: 'true'}\n" /* 21 */
    "list:\n"                                                                               /* 22 */
    "  - one\n"                                                                             /* 23 */
    "  - {k: v}\n"                                                                          /* 24 */
    "  - [x, y]\n"                                                                          /* 25 */
    "anchor: &base {x: 5, name: based}\n"                                                   /* 26 */
    "alias: *base\n"                                                                        /* 27 */
    "nums: {inf: .inf, nan: nan, cinf: inf, hexf: 0x1p3, exp: 1e-3, neg: -2.5, dot: ., huge: "
    "1e999}\n" /* 28 */
    "str: {plain: hello world, quoted: \"a: b\", nul: \"a\\0b\", long: "
    "\"0123456789012345678901234567890123456789012345678901234567890123456789\"}\n"; /* 29 */

static void test_lookups(void) {
  const char *path = WRITE("doc.yaml", doc);
  char err[512] = "";
  gy_yaml_t *y = NULL;
  REQUIRE(gy_yaml_load(&y, path, err, sizeof(err)) == 0);
  CHECK(!strcmp(gy_yaml_path(y), path));
  gy_ynode_t root = gy_yaml_root(y);
  CHECK(root != 0);
  CHECK(gy_yaml_is_map(y, root));
  CHECK_EQ_INT(gy_yaml_map_len(y, root), 8);
  CHECK(!strcmp(gy_yaml_map_key(y, root, 0), "optimizer"));
  CHECK_EQ_INT(gy_yaml_map_key_line(y, root, 0), 2);
  CHECK(!strcmp(gy_yaml_map_key(y, root, 1), "ints"));
  CHECK_EQ_INT(gy_yaml_map_key_line(y, root, 1), 10);
  CHECK_EQ_INT(gy_yaml_line(y, gy_yaml_map_key_node(y, root, 2)), 21);

  gy_ynode_t opt = gy_yaml_get(y, root, "optimizer");
  gy_ynode_t v = gy_yaml_get(y, gy_yaml_get(y, gy_yaml_get(y, opt, "nested"), "deeper"), "value");
  CHECK(gy_yaml_is_scalar(y, v));
  CHECK_EQ_INT(gy_yaml_line(y, v), 9);
  CHECK(!strcmp(gy_yaml_scalar(y, v), "42"));
  int64_t i = 0;
  CHECK_EQ_INT(gy_yaml_to_int(y, v, "optimizer.nested.deeper.value", 0, 100, &i, err, 512), 0);
  CHECK_EQ_INT(i, 42);
  /* Absent keys and wrong kinds answer "absent", never crash. */
  CHECK_EQ_INT(gy_yaml_get(y, root, "nope"), 0);
  CHECK_EQ_INT(gy_yaml_get(y, v, "x"), 0);
  CHECK_EQ_INT(gy_yaml_get(y, 0, "x"), 0);
  CHECK_EQ_INT(gy_yaml_get(y, 99999, "x"), 0);
  CHECK_EQ_INT(gy_yaml_line(y, 0), 0);
  CHECK_EQ_INT(gy_yaml_map_len(y, v), 0);
  CHECK(gy_yaml_map_key(y, root, 100) == NULL);
  CHECK(gy_yaml_map_key(y, root, -1) == NULL);
  CHECK_EQ_INT(gy_yaml_map_value(y, root, 100), 0);
  CHECK_EQ_INT(gy_yaml_seq_len(y, root), 0);
  CHECK_EQ_INT(gy_yaml_seq_item(y, root, 0), 0);
  CHECK(gy_yaml_scalar(y, root) == NULL);
  CHECK(!gy_yaml_is_map(y, 0) && !gy_yaml_is_seq(y, 0) && !gy_yaml_is_scalar(y, 0));

  /* Sequences. */
  gy_ynode_t list = gy_yaml_get(y, root, "list");
  CHECK(gy_yaml_is_seq(y, list));
  CHECK_EQ_INT(gy_yaml_seq_len(y, list), 3);
  CHECK(!strcmp(gy_yaml_scalar(y, gy_yaml_seq_item(y, list, 0)), "one"));
  CHECK_EQ_INT(gy_yaml_line(y, gy_yaml_seq_item(y, list, 1)), 24);
  CHECK(gy_yaml_is_map(y, gy_yaml_seq_item(y, list, 1)));
  CHECK(gy_yaml_is_seq(y, gy_yaml_seq_item(y, list, 2)));
  CHECK_EQ_INT(gy_yaml_seq_item(y, list, 3), 0);
  CHECK_EQ_INT(gy_yaml_seq_item(y, list, -1), 0);

  /* Aliases resolve to the anchored node. */
  gy_ynode_t al = gy_yaml_get(y, root, "alias");
  CHECK(gy_yaml_is_map(y, al));
  CHECK(!strcmp(gy_yaml_scalar(y, gy_yaml_get(y, al, "name")), "based"));
  CHECK_EQ_INT(gy_yaml_to_int(y, gy_yaml_get(y, al, "x"), "alias.x", 0, 10, &i, err, 512), 0);
  CHECK_EQ_INT(i, 5);

  /* gy_yaml_error formats FILE:LINE: key 'K': MSG. */
  char want[512];
  CHECK_EQ_INT(gy_yaml_error(y, v, "a.b", err, sizeof(err), "bad %d", 7), GY_ECONFIG);
  snprintf(want, sizeof(want), "%s:9: key 'a.b': bad 7", path);
  CHECK_MSG(!strcmp(err, want), "'%s' vs '%s'", err, want);
  gy_yaml_error(y, 0, NULL, err, sizeof(err), "no line");
  snprintf(want, sizeof(want), "%s: no line", path);
  CHECK_MSG(!strcmp(err, want), "'%s' vs '%s'", err, want);
  /* A short buffer truncates, never overflows. */
  char tiny[8];
  gy_yaml_error(y, v, "a.b", tiny, sizeof(tiny), "bad");
  CHECK_EQ_INT(strlen(tiny), 7);
  gy_yaml_destroy(y);
}

/* Expects conversion of map.key to fail with "PATH:LINE: key 'K': WHAT". */
#define EXPECT_BAD(call, line, keyname, what)                                                      \
  do {                                                                                             \
    char w_[512];                                                                                  \
    err[0] = '\0';                                                                                 \
    CHECK_EQ_INT((call), GY_ECONFIG);                                                              \
    snprintf(w_, sizeof(w_), "%s:%d: key '%s': %s", path, line, keyname, what);                    \
    CHECK_MSG(!strcmp(err, w_), "got '%s'\n   want '%s'", err, w_);                                \
  } while (0)

static void test_conversions(void) {
  const char *path = WRITE("conv.yaml", doc);
  char err[512] = "";
  gy_yaml_t *y = NULL;
  REQUIRE(gy_yaml_load(&y, path, err, sizeof(err)) == 0);
  gy_ynode_t root = gy_yaml_root(y);
  gy_ynode_t opt = gy_yaml_get(y, root, "optimizer"), ints = gy_yaml_get(y, root, "ints");
  gy_ynode_t bools = gy_yaml_get(y, root, "bools"), nums = gy_yaml_get(y, root, "nums");
  gy_ynode_t str = gy_yaml_get(y, root, "str");
  double d = 0;
  int64_t i = 0;
  int b = -1;
  const char *s = NULL;

  /* Numbers. */
  EXPECT_BAD(gy_yaml_to_double(y, gy_yaml_get(y, opt, "lr"), "optimizer.lr", 0, 10, &d, err, 512),
             3, "optimizer.lr", "expected a number in [0, 10], got 'fast'");
  CHECK_EQ_INT(gy_yaml_to_double(y, gy_yaml_get(y, opt, "good_lr"), "k", 0, 10, &d, err, 512), 0);
  CHECK_NEAR(d, 3e-4, 1e-12);
  CHECK_EQ_INT(gy_yaml_to_double(y, gy_yaml_get(y, opt, "ten"), "k", 0, 10, &d, err, 512), 0);
  CHECK_NEAR(d, 10, 0);
  EXPECT_BAD(
      gy_yaml_to_double_in(y, gy_yaml_get(y, opt, "ten"), "o.ten", 0, 1, 10, 1, &d, err, 512), 6,
      "o.ten", "expected a number in (0, 10), got '10'");
  EXPECT_BAD(
      gy_yaml_to_double_in(y, gy_yaml_get(y, opt, "beta"), "o.beta", 0, 0, 0.5, 0, &d, err, 512), 5,
      "o.beta", "expected a number in [0, 0.5], got '0.95'");
  CHECK_EQ_INT(gy_yaml_to_double(y, gy_yaml_get(y, nums, "exp"), "k", 0, 1, &d, err, 512), 0);
  CHECK_NEAR(d, 1e-3, 1e-15);
  CHECK_EQ_INT(gy_yaml_to_double(y, gy_yaml_get(y, nums, "neg"), "k", -3, 0, &d, err, 512), 0);
  CHECK_NEAR(d, -2.5, 0);
  CHECK_EQ_INT(gy_yaml_to_double(y, gy_yaml_get(y, ints, "small"), "k", -10, 0, &d, err, 512), 0);
  CHECK_NEAR(d, -7, 0);
  const char *bad_nums[] = {"inf", "nan", "cinf", "hexf", "dot", "huge"};
  for (int k = 0; k < 6; k++)
    CHECK_MSG(gy_yaml_to_double(y, gy_yaml_get(y, nums, bad_nums[k]), "n", -1e308, 1e308, &d, err,
                                512) == GY_ECONFIG,
              "%s accepted", bad_nums[k]);
  EXPECT_BAD(
      gy_yaml_to_double(y, gy_yaml_get(y, ints, "quoted"), "ints.quoted", 0, 100, &d, err, 512), 16,
      "ints.quoted",
      "expected a number in [0, 100], got '12' (a quoted value is a string: remove the "
      "quotes)");
  EXPECT_BAD(gy_yaml_to_double(y, opt, "optimizer", 0, 1, &d, err, 512), 3, "optimizer",
             "expected a number in [0, 1], got a mapping");

  /* Integers. */
  CHECK_EQ_INT(gy_yaml_to_int(y, gy_yaml_get(y, ints, "small"), "k", -10, 10, &i, err, 512), 0);
  CHECK_EQ_INT(i, -7);
  CHECK_EQ_INT(gy_yaml_to_int(y, gy_yaml_get(y, ints, "plus"), "k", 0, 100, &i, err, 512), 0);
  CHECK_EQ_INT(i, 12);
  CHECK_EQ_INT(gy_yaml_to_int(y, gy_yaml_get(y, ints, "max"), "k", 0, INT64_MAX, &i, err, 512), 0);
  CHECK(i == INT64_MAX);
  EXPECT_BAD(gy_yaml_to_int(y, gy_yaml_get(y, ints, "small"), "ints.small", 0, 1024, &i, err, 512),
             11, "ints.small", "expected an integer in [0, 1024], got '-7'");
  EXPECT_BAD(gy_yaml_to_int(y, gy_yaml_get(y, ints, "trailing"), "ints.trailing", 0, INT64_MAX, &i,
                            err, 512),
             13, "ints.trailing", "expected an integer >= 0, got '12abc'");
  EXPECT_BAD(gy_yaml_to_int(y, gy_yaml_get(y, ints, "overflow"), "ints.overflow", INT64_MIN,
                            INT64_MAX, &i, err, 512),
             14, "ints.overflow", "expected an integer, got '9223372036854775808'");
  EXPECT_BAD(gy_yaml_to_int(y, gy_yaml_get(y, ints, "float"), "ints.float", 0, 10, &i, err, 512),
             17, "ints.float", "expected an integer in [0, 10], got '1.5'");
  EXPECT_BAD(gy_yaml_to_int(y, gy_yaml_get(y, ints, "hex"), "ints.hex", 0, 100, &i, err, 512), 18,
             "ints.hex", "expected an integer in [0, 100], got '0x10'");
  EXPECT_BAD(gy_yaml_to_int(y, gy_yaml_get(y, ints, "space"), "ints.space", 0, 100, &i, err, 512),
             19, "ints.space", "expected an integer in [0, 100], got '1 2'");
  EXPECT_BAD(gy_yaml_to_int(y, gy_yaml_get(y, ints, "empty"), "ints.empty", 0, 100, &i, err, 512),
             20, "ints.empty", "expected an integer in [0, 100], got an empty value");
  EXPECT_BAD(gy_yaml_to_int(y, gy_yaml_get(y, root, "list"), "list", 0, 100, &i, err, 512), 23,
             "list", "expected an integer in [0, 100], got a sequence");
  EXPECT_BAD(gy_yaml_to_int(y, gy_yaml_get(y, ints, "quoted"), "ints.quoted", 0, 100, &i, err, 512),
             16, "ints.quoted",
             "expected an integer in [0, 100], got '12' (a quoted value is a string: remove the "
             "quotes)");
  /* An absent node (0) reports without a line. */
  err[0] = '\0';
  CHECK_EQ_INT(gy_yaml_to_int(y, 0, "gone", 0, 1, &i, err, 512), GY_ECONFIG);
  CHECK(contains(err, "key 'gone': expected an integer in [0, 1], got nothing"));
  /* The output is untouched on error. */
  i = 99;
  gy_yaml_to_int(y, gy_yaml_get(y, ints, "trailing"), "k", 0, 100, &i, err, 512);
  CHECK_EQ_INT(i, 99);

  /* Booleans. */
  const char *yes[] = {"a", "c", "e"}, *no[] = {"b", "d", "f"};
  for (int k = 0; k < 3; k++) {
    CHECK_EQ_INT(gy_yaml_to_bool(y, gy_yaml_get(y, bools, yes[k]), "b", &b, err, 512), 0);
    CHECK_EQ_INT(b, 1);
    CHECK_EQ_INT(gy_yaml_to_bool(y, gy_yaml_get(y, bools, no[k]), "b", &b, err, 512), 0);
    CHECK_EQ_INT(b, 0);
  }
  EXPECT_BAD(gy_yaml_to_bool(y, gy_yaml_get(y, bools, "g"), "bools.g", &b, err, 512), 21, "bools.g",
             "expected a boolean (true/false/yes/no/on/off), got 'maybe'");
  EXPECT_BAD(gy_yaml_to_bool(y, gy_yaml_get(y, bools, "h"), "bools.h", &b, err, 512), 21, "bools.h",
             "expected a boolean (true/false/yes/no/on/off), got '1'");
  CHECK_EQ_INT(gy_yaml_to_bool(y, gy_yaml_get(y, bools, "i"), "bools.i", &b, err, 512), GY_ECONFIG);

  /* Strings. */
  CHECK_EQ_INT(gy_yaml_to_string(y, gy_yaml_get(y, str, "plain"), "s", &s, err, 512), 0);
  CHECK(s && !strcmp(s, "hello world"));
  CHECK_EQ_INT(gy_yaml_to_string(y, gy_yaml_get(y, str, "quoted"), "s", &s, err, 512), 0);
  CHECK(s && !strcmp(s, "a: b"));
  CHECK_EQ_INT(gy_yaml_to_string(y, gy_yaml_get(y, ints, "quoted"), "s", &s, err, 512), 0);
  CHECK(s && !strcmp(s, "12"));
  EXPECT_BAD(gy_yaml_to_string(y, gy_yaml_get(y, str, "nul"), "str.nul", &s, err, 512), 29,
             "str.nul", "the string contains a NUL character");
  EXPECT_BAD(gy_yaml_to_string(y, gy_yaml_get(y, root, "list"), "list", &s, err, 512), 23, "list",
             "expected a string, got a sequence");
  EXPECT_BAD(gy_yaml_to_string(y, gy_yaml_get(y, ints, "empty"), "ints.empty", &s, err, 512), 20,
             "ints.empty", "expected a string, got an empty value");
  /* Long values are quoted as a bounded excerpt. */
  err[0] = '\0';
  gy_yaml_to_int(y, gy_yaml_get(y, str, "long"), "str.long", 0, 1, &i, err, 512);
  CHECK_MSG(contains(err, "got '012345678901234567890123456789012345678901234567...'"), "%s", err);
  gy_yaml_destroy(y);
  gy_yaml_destroy(NULL);
}

static void test_deep_and_wide(void) {
  /* Many keys in one mapping (the duplicate check must stay cheap) and deep nesting. */
  size_t cap = 1 << 20, o = 0;
  char *big = malloc(cap);
  REQUIRE(big);
  for (int k = 0; k < 20000; k++)
    o += (size_t)snprintf(big + o, cap - o, "k%d: %d\n", k, k);
  const char *path = write_file("wide.yaml", big, o);
  char err[512];
  gy_yaml_t *y = NULL;
  CHECK_EQ_INT(gy_yaml_load(&y, path, err, sizeof(err)), 0);
  CHECK_EQ_INT(gy_yaml_map_len(y, gy_yaml_root(y)), 20000);
  gy_yaml_destroy(y);
  o += (size_t)snprintf(big + o, cap - o, "k17: again\n");
  path = write_file("wide_dup.yaml", big, o);
  CHECK_EQ_INT(gy_yaml_load(&y, path, err, sizeof(err)), GY_ECONFIG);
  CHECK_MSG(contains(err, ":20001: key 'k17' appears twice in one mapping (first at line 18)"),
            "%s", err);
  /* Deep flow nesting: libyaml's loader is not recursive, and nothing here walks the tree. */
  o = (size_t)snprintf(big, cap, "deep: ");
  for (int k = 0; k < 5000; k++)
    big[o++] = '[';
  for (int k = 0; k < 5000; k++)
    big[o++] = ']';
  big[o++] = '\n';
  path = write_file("deep.yaml", big, o);
  CHECK_EQ_INT(gy_yaml_load(&y, path, err, sizeof(err)), 0);
  CHECK(gy_yaml_is_seq(y, gy_yaml_get(y, gy_yaml_root(y), "deep")));
  gy_yaml_destroy(y);
  free(big);
}

/* gy_excerpt: control bytes become '?', and a cut never splits a UTF-8 character. */
static void test_excerpt(void) {
  char out[8];
  CHECK_EQ_INT(gy_excerpt(out, sizeof(out), "ab\tc"), 0);
  CHECK(!strcmp(out, "ab?c"));
  /* "a" + three 2-byte characters = 7 bytes: fits exactly in 8 */
  CHECK_EQ_INT(gy_excerpt(out, sizeof(out), "a\xda\x9d\xda\x9d\xda\x9d"), 0);
  CHECK_EQ_INT((int)strlen(out), 7);
  /* "ab" + three 2-byte characters: the 7-byte window ends inside the third one */
  CHECK_EQ_INT(gy_excerpt(out, sizeof(out), "ab\xda\x9d\xda\x9d\xda\x9d"), 1);
  CHECK(!strcmp(out, "ab\xda\x9d\xda\x9d"));
  /* a 4-byte character cut after 1, 2 or 3 bytes goes entirely */
  for (size_t len = 1; len <= 3; len++) {
    char small[8];
    CHECK_EQ_INT(gy_excerpt(small, len + 1, "\xf0\x9f\x98\x80x"), 1);
    CHECK_MSG(small[0] == '\0', "a cut 4-byte character left %zu bytes", strlen(small));
  }
  CHECK_EQ_INT(gy_excerpt(out, 5, "\xf0\x9f\x98\x80x"), 1);
  CHECK_EQ_INT((int)strlen(out), 4);
  CHECK_EQ_INT(gy_excerpt(out, 1, "abc"), 1);
  CHECK(out[0] == '\0');
}

int main(void) {
  snprintf(tmpdir, sizeof(tmpdir), "/tmp/gy_yamlcfg_XXXXXX");
  REQUIRE(mkdtemp(tmpdir));
  RUN(test_load_errors);
  RUN(test_parse_memory);
  RUN(test_schema_reader);
  RUN(test_lookups);
  RUN(test_conversions);
  RUN(test_deep_and_wide);
  RUN(test_excerpt);
  for (int k = 0; k < nwritten; k++)
    unlink(written[k]);
  rmdir(tmpdir);
  GY_TEST_END();
}
