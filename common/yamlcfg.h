/* yamlcfg: a YAML document (libyaml) with typed, line-aware look-ups. Errors read
 * "FILE:LINE: key 'a.b.c': problem". */
#ifndef GY_YAMLCFG_H
#define GY_YAMLCFG_H

#include <stddef.h>
#include <stdint.h>

typedef struct gy_yaml gy_yaml_t;
/* A node handle: index into the document, 0 = absent. */
typedef int gy_ynode_t;

/* Loads and parses path; a syntax error gets GY_ECONFIG with file, line and column. */
int gy_yaml_load(gy_yaml_t **out, const char *path, char *errmsg, size_t errlen);
/* Parses len bytes of text (need not be NUL-terminated) as one document; messages and
 * gy_yaml_path name it `name`, as if it were a file of that name. The callee copies what it
 * keeps. Errors as gy_yaml_load's. */
int gy_yaml_parse(gy_yaml_t **out, const char *name, const char *text, size_t len, char *errmsg,
                  size_t errlen);
void gy_yaml_destroy(gy_yaml_t *y);
const char *gy_yaml_path(const gy_yaml_t *y);
gy_ynode_t gy_yaml_root(const gy_yaml_t *y);
int gy_yaml_line(const gy_yaml_t *y, gy_ynode_t n); /* 1-based */
int gy_yaml_is_map(const gy_yaml_t *y, gy_ynode_t n);
int gy_yaml_is_seq(const gy_yaml_t *y, gy_ynode_t n);
int gy_yaml_is_scalar(const gy_yaml_t *y, gy_ynode_t n);
/* Child of a mapping by key (0 if absent or n is not a mapping). */
gy_ynode_t gy_yaml_get(const gy_yaml_t *y, gy_ynode_t map, const char *key);
/* Mapping iteration: number of pairs, i-th key (string) and value. */
int gy_yaml_map_len(const gy_yaml_t *y, gy_ynode_t map);
const char *gy_yaml_map_key(const gy_yaml_t *y, gy_ynode_t map, int i);
gy_ynode_t gy_yaml_map_value(const gy_yaml_t *y, gy_ynode_t map, int i);
int gy_yaml_map_key_line(const gy_yaml_t *y, gy_ynode_t map, int i);
/* The i-th key's node (for its line in messages; 0 if out of range). */
gy_ynode_t gy_yaml_map_key_node(const gy_yaml_t *y, gy_ynode_t map, int i);
/* Sequence length and i-th item. */
int gy_yaml_seq_len(const gy_yaml_t *y, gy_ynode_t seq);
gy_ynode_t gy_yaml_seq_item(const gy_yaml_t *y, gy_ynode_t seq, int i);
/* Scalar text (NULL if not a scalar). */
const char *gy_yaml_scalar(const gy_yaml_t *y, gy_ynode_t n);

/* Typed scalar conversions; `key` is the dotted key used in the error message. Each returns 0
 * or GY_ECONFIG with "FILE:LINE: key 'KEY': expected ..., got '...'" in errmsg. */
int gy_yaml_to_int(const gy_yaml_t *y, gy_ynode_t n, const char *key, int64_t min, int64_t max,
                   int64_t *out, char *errmsg, size_t errlen);
int gy_yaml_to_double(const gy_yaml_t *y, gy_ynode_t n, const char *key, double min, double max,
                      double *out, char *errmsg, size_t errlen);
/* Like gy_yaml_to_double, with either bound optionally open: (min, max], [min, max), ... */
int gy_yaml_to_double_in(const gy_yaml_t *y, gy_ynode_t n, const char *key, double min,
                         int min_open, double max, int max_open, double *out, char *errmsg,
                         size_t errlen);
int gy_yaml_to_bool(const gy_yaml_t *y, gy_ynode_t n, const char *key, int *out, char *errmsg,
                    size_t errlen);
int gy_yaml_to_string(const gy_yaml_t *y, gy_ynode_t n, const char *key, const char **out,
                      char *errmsg, size_t errlen);
/* Copies a printable excerpt of s (at most outlen-1 bytes) into out: control bytes become '?'
 * and the cut never splits a UTF-8 character, so messages built from it stay valid UTF-8.
 * Returns 1 when s was cut. */
int gy_excerpt(char *out, size_t outlen, const char *s);
/* Writes what node n is, for "got ..." in messages: a short printable excerpt of a scalar in
 * quotes, "a mapping", "a sequence", "an empty value" or "nothing". */
void gy_yaml_describe(const gy_yaml_t *y, gy_ynode_t n, char *buf, size_t len);
/* Formats "FILE:LINE: key 'KEY': MSG" into errmsg and returns GY_ECONFIG. */
int gy_yaml_error(const gy_yaml_t *y, gy_ynode_t n, const char *key, char *errmsg, size_t errlen,
                  const char *fmt, ...) __attribute__((format(printf, 6, 7)));

/* ---- schema look-ups: what a config parser reads with ----
 * A reader is a document and where its errors go. Each look-up takes the dotted key's prefix
 * ("" or NULL at the top level) and name, so messages read "FILE:LINE: key 'PREFIX.NAME': ...";
 * an absent optional key leaves *out as it was (its default) and returns 0. Errors are
 * GY_ECONFIG. */
typedef struct {
  gy_yaml_t *y;
  char *errmsg;
  size_t errlen;
} gy_yread_t;

/* Joins prefix and name into "prefix.name" (just "name" when prefix is NULL or ""). */
void gy_yaml_join_key(char *buf, size_t len, const char *prefix, const char *name);
/* The document's top-level mapping into *root; anything else is refused with "the top level of
 * a WHAT must be a mapping (KEYS), got ..." (what: "run config"; keys: "run:, model:, ..."). */
int gy_yread_root(const gy_yread_t *r, const char *what, const char *keys, gy_ynode_t *root);
/* Refuses n unless it is a mapping ("expected a mapping, got ..."). */
int gy_yread_map(const gy_yread_t *r, gy_ynode_t n, const char *key);
/* Refuses any key of map not in known (NULL-terminated); the message lists the allowed keys. */
int gy_yread_keys(const gy_yread_t *r, gy_ynode_t map, const char *prefix,
                  const char *const *known);
/* A nested mapping by name: *out = 0 when absent, an error when not a mapping. */
int gy_yread_section(const gy_yread_t *r, gy_ynode_t parent, const char *prefix, const char *name,
                     gy_ynode_t *out);
/* The key node of map.name (for the line of a section's name), or 0. */
gy_ynode_t gy_yread_key_node(const gy_yread_t *r, gy_ynode_t map, const char *name);
/* Reports prefix.name as a missing required key at node `at` (0: the top of the document), with
 * an optional hint; always returns GY_ECONFIG. */
int gy_yread_missing(const gy_yread_t *r, gy_ynode_t at, const char *prefix, const char *name,
                     const char *hint);
/* Integers in [min, max]; *where (may be NULL) gets the value's node (0 when absent). */
int gy_yread_int(const gy_yread_t *r, gy_ynode_t map, const char *prefix, const char *name,
                 int64_t min, int64_t max, int64_t *out, gy_ynode_t *where);
int gy_yread_i32(const gy_yread_t *r, gy_ynode_t map, const char *prefix, const char *name,
                 int64_t min, int64_t max, int *out, gy_ynode_t *where);
/* Numbers in the interval (either bound optionally open). */
int gy_yread_double(const gy_yread_t *r, gy_ynode_t map, const char *prefix, const char *name,
                    double min, int min_open, double max, int max_open, double *out);
/* The same into a float; a non-zero value that rounds to 0 in single precision is refused. */
int gy_yread_float(const gy_yread_t *r, gy_ynode_t map, const char *prefix, const char *name,
                   double min, int min_open, double max, int max_open, float *out);
int gy_yread_bool(const gy_yread_t *r, gy_ynode_t map, const char *prefix, const char *name,
                  int *out);
/* A string; *out borrows the document's text (valid while the document lives). */
int gy_yread_str(const gy_yread_t *r, gy_ynode_t map, const char *prefix, const char *name,
                 const char **out, gy_ynode_t *where);
/* One of names (NULL-terminated): *out = its index ("expected a, b or c, got ..."). */
int gy_yread_enum(const gy_yread_t *r, gy_ynode_t map, const char *prefix, const char *name,
                  const char *const *names, int *out);

#endif
