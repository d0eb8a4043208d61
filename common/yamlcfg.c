/*
 * yamlcfg: one YAML document loaded with libyaml's document API, with typed, line-aware
 * look-ups for configuration files.
 *
 * API, in order: gy_yaml_load (a file) and gy_yaml_parse (text in memory) / gy_yaml_destroy;
 * gy_yaml_path, gy_yaml_root, gy_yaml_line and the node kind tests; mapping and sequence access
 * (gy_yaml_get, gy_yaml_map_* including gy_yaml_map_key_node, gy_yaml_seq_*, gy_yaml_scalar);
 * gy_yaml_describe; typed conversions (gy_yaml_to_int, gy_yaml_to_double and gy_yaml_to_double_in
 * for open bounds, gy_yaml_to_bool, gy_yaml_to_string); gy_yaml_error.
 *
 * Node handles are libyaml's own 1-based node indices, so 0 means "absent" and every accessor
 * accepts 0 (and any out-of-range handle) and answers "absent" or "not that kind".
 *
 * Invariants:
 * - A loaded gy_yaml_t holds exactly one non-empty document. Empty input, a second document,
 *   and duplicate keys in one mapping are refused at load with FILE:LINE in the message;
 *   syntax errors read "FILE:LINE:COL: YAML syntax error: PROBLEM". libyaml resolves aliases
 *   into shared nodes, which the accessors simply follow (the node graph is never walked
 *   recursively here, so alias cycles and "billion laughs" shapes cost nothing).
 * - Typed conversions are strict: the whole scalar must parse (no trailing garbage), integers
 *   must fit in [min, max] without overflow, doubles must be finite and in [min, max], quoted
 *   scalars are strings and never numbers or booleans, and mappings or sequences are refused.
 * - Error messages quote at most a short, printable excerpt of the offending value, so a hostile
 *   file cannot flood or garble the message.
 * - Errors return GY_ECONFIG (bad content), GY_ENOENT/GY_EIO (file) or GY_ENOMEM; errmsg may be
 *   NULL.
 */
#include "yamlcfg.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <yaml.h>

#include "err.h"

/* Configuration files are small; anything bigger is a mistake, not a config. */
#define MAX_FILE_BYTES (64u << 20)
/* Longest excerpt of a value quoted in an error message. */
#define EXCERPT_MAX 48

struct gy_yaml {
  char *path; /* owned copy of the path, as given */
  yaml_document_t doc;
};

/* ---- helpers ---- */

static int errf(char *errmsg, size_t errlen, int rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int errf(char *errmsg, size_t errlen, int rc, const char *fmt, ...) {
  if (errmsg && errlen) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errmsg, errlen, fmt, ap);
    va_end(ap);
  }
  return rc;
}

static yaml_node_t *node_at(const gy_yaml_t *y, gy_ynode_t n) {
  if (!y || n <= 0) return NULL;
  /* yaml_document_get_node takes a non-const document but only reads it. */
  return yaml_document_get_node((yaml_document_t *)&y->doc, n);
}

/* Reads path into a NUL-terminated buffer (owned by the caller). */
static int read_file(const char *path, unsigned char **out, size_t *outlen, char *errmsg,
                     size_t errlen) {
  FILE *f = fopen(path, "rb");
  if (!f)
    return errf(errmsg, errlen, errno == ENOENT ? GY_ENOENT : GY_EIO, "%s: cannot open: %s", path,
                strerror(errno));
  unsigned char *buf = NULL;
  size_t len = 0, cap = 0;
  int rc = 0;
  for (;;) {
    if (len == cap) {
      size_t ncap = cap ? cap * 2 : 4096;
      if (ncap > (size_t)MAX_FILE_BYTES + 1) ncap = (size_t)MAX_FILE_BYTES + 1;
      if (ncap == cap) {
        rc = errf(errmsg, errlen, GY_ECONFIG, "%s: file is larger than %u bytes", path,
                  MAX_FILE_BYTES);
        goto err;
      }
      unsigned char *nb = realloc(buf, ncap + 1);
      if (!nb) {
        rc = errf(errmsg, errlen, GY_ENOMEM, "%s: out of memory reading the file", path);
        goto err;
      }
      buf = nb;
      cap = ncap;
    }
    size_t got = fread(buf + len, 1, cap - len, f);
    len += got;
    if (got == 0) break;
  }
  if (ferror(f)) {
    rc = errf(errmsg, errlen, GY_EIO, "%s: cannot read: %s", path, strerror(errno));
    goto err;
  }
  fclose(f);
  buf[len] = '\0';
  *out = buf;
  *outlen = len;
  return 0;
err:
  free(buf);
  fclose(f);
  return rc;
}

/* 1-based line and column of byte offset off in buf. */
static void offset_to_linecol(const unsigned char *buf, size_t len, size_t off, int *line,
                              int *col) {
  int l = 1, c = 1;
  for (size_t i = 0; i < off && i < len; i++) {
    if (buf[i] == '\n') {
      l++;
      c = 1;
    } else {
      c++;
    }
  }
  *line = l;
  *col = c;
}

/* 1 if 1-based line of buf contains "${". */
static int line_has_var(const unsigned char *buf, size_t len, int line) {
  size_t i = 0;
  for (int l = 1; l < line && i < len; i++)
    if (buf[i] == '\n') l++;
  for (; i + 1 < len && buf[i] != '\n'; i++)
    if (buf[i] == '$' && buf[i + 1] == '{') return 1;
  return 0;
}

static int syntax_error(const yaml_parser_t *p, const char *path, const unsigned char *buf,
                        size_t len, char *errmsg, size_t errlen) {
  if (p->error == YAML_MEMORY_ERROR)
    return errf(errmsg, errlen, GY_ENOMEM, "%s: out of memory parsing YAML", path);
  int line, col;
  if (p->error == YAML_READER_ERROR) {
    offset_to_linecol(buf, len, p->problem_offset, &line, &col);
  } else {
    line = (int)p->problem_mark.line + 1;
    col = (int)p->problem_mark.column + 1;
  }
  const char *problem = p->problem ? p->problem : "unknown error";
  /* "${NAME}" in a flow collection is a classic: '{' and '}' are flow indicators there. */
  int cline = (int)p->context_mark.line + 1;
  int in_flow = p->error != YAML_READER_ERROR && p->context && strstr(p->context, "flow");
  const char *hint = in_flow && (line_has_var(buf, len, line) || line_has_var(buf, len, cline))
                         ? "; hint: inside [...] or {...}, quote a value that uses ${NAME}"
                         : "";
  if (p->context)
    return errf(errmsg, errlen, GY_ECONFIG, "%s:%d:%d: YAML syntax error: %s (%s, line %d)%s", path,
                line, col, problem, p->context, cline, hint);
  return errf(errmsg, errlen, GY_ECONFIG, "%s:%d:%d: YAML syntax error: %s%s", path, line, col,
              problem, hint);
}

static int is_null_text(const char *s) {
  return !*s || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") || !strcmp(s, "NULL");
}

/* A plain (unquoted) scalar that YAML reads as null: the empty value, ~ or null. */
static int is_plain_null(const yaml_node_t *nd) {
  return nd->type == YAML_SCALAR_NODE && nd->data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
         is_null_text((const char *)nd->data.scalar.value);
}

typedef struct {
  const char *key;
  int line;
} keyref_t;

static int keyref_cmp(const void *a, const void *b) {
  const keyref_t *x = a, *y = b;
  int c = strcmp(x->key, y->key);
  if (c) return c;
  return (x->line > y->line) - (x->line < y->line);
}

/* Refuses a mapping that holds the same scalar key twice (libyaml does not). Sorting keeps the
 * check O(n log n), so a hostile file with many keys stays cheap. */
static int check_duplicate_keys(gy_yaml_t *y, char *errmsg, size_t errlen) {
  yaml_document_t *d = &y->doc;
  for (yaml_node_t *nd = d->nodes.start; nd < d->nodes.top; nd++) {
    if (nd->type != YAML_MAPPING_NODE) continue;
    size_t n = (size_t)(nd->data.mapping.pairs.top - nd->data.mapping.pairs.start);
    if (n < 2) continue;
    keyref_t *refs = malloc(n * sizeof(*refs));
    if (!refs) return errf(errmsg, errlen, GY_ENOMEM, "%s: out of memory", y->path);
    size_t m = 0;
    for (yaml_node_pair_t *p = nd->data.mapping.pairs.start; p < nd->data.mapping.pairs.top; p++) {
      yaml_node_t *k = yaml_document_get_node(d, p->key);
      if (!k || k->type != YAML_SCALAR_NODE) continue;
      refs[m].key = (const char *)k->data.scalar.value;
      refs[m].line = (int)k->start_mark.line + 1;
      m++;
    }
    qsort(refs, m, sizeof(*refs), keyref_cmp);
    for (size_t i = 1; i < m; i++) {
      if (!strcmp(refs[i].key, refs[i - 1].key)) {
        char ex[EXCERPT_MAX + 8];
        gy_excerpt(ex, sizeof(ex), refs[i].key);
        int rc = errf(errmsg, errlen, GY_ECONFIG,
                      "%s:%d: key '%s' appears twice in one mapping "
                      "(first at line %d)",
                      y->path, refs[i].line, ex, refs[i - 1].line);
        free(refs);
        return rc;
      }
    }
    free(refs);
  }
  return 0;
}

/* ---- load / destroy ---- */

int gy_yaml_load(gy_yaml_t **out, const char *path, char *errmsg, size_t errlen) {
  if (!out || !path) return errf(errmsg, errlen, GY_EINVAL, "gy_yaml_load: no path");
  *out = NULL;
  unsigned char *buf = NULL;
  size_t len = 0;
  int rc = read_file(path, &buf, &len, errmsg, errlen);
  if (rc) return rc;
  rc = gy_yaml_parse(out, path, (const char *)buf, len, errmsg, errlen);
  free(buf);
  return rc;
}

int gy_yaml_parse(gy_yaml_t **out, const char *name, const char *text, size_t len, char *errmsg,
                  size_t errlen) {
  if (!out || !name || (!text && len))
    return errf(errmsg, errlen, GY_EINVAL, "gy_yaml_parse: no name or text");
  *out = NULL;
  if (len > MAX_FILE_BYTES)
    return errf(errmsg, errlen, GY_ECONFIG, "%s: %zu bytes is too big for a config (at most %u)",
                name, len, MAX_FILE_BYTES);
  const char *path = name; /* messages name the document as a file */
  const unsigned char *buf = (const unsigned char *)(text ? text : "");
  int rc, have_doc = 0, have_parser = 0;
  yaml_parser_t parser;
  yaml_document_t extra;
  gy_yaml_t *y = calloc(1, sizeof(*y));
  if (!y) return errf(errmsg, errlen, GY_ENOMEM, "%s: out of memory", path);
  if (!(y->path = strdup(path))) {
    rc = errf(errmsg, errlen, GY_ENOMEM, "%s: out of memory", path);
    goto err;
  }

  if (!yaml_parser_initialize(&parser)) {
    rc = errf(errmsg, errlen, GY_ENOMEM, "%s: out of memory", path);
    goto err;
  }
  have_parser = 1;
  yaml_parser_set_input_string(&parser, buf, len);
  if (!yaml_parser_load(&parser, &y->doc)) {
    /* libyaml has already released the partial document. */
    rc = syntax_error(&parser, path, buf, len, errmsg, errlen);
    goto err;
  }
  have_doc = 1;
  yaml_node_t *root = yaml_document_get_root_node(&y->doc);
  if (!root || is_plain_null(root)) {
    rc = errf(errmsg, errlen, GY_ECONFIG, "%s:%d: the YAML document is empty", path,
              root ? (int)root->start_mark.line + 1 : 1);
    goto err;
  }
  /* Exactly one document: the next load must find the end of the stream. */
  if (!yaml_parser_load(&parser, &extra)) {
    rc = syntax_error(&parser, path, buf, len, errmsg, errlen);
    goto err;
  }
  int more = yaml_document_get_root_node(&extra) != NULL;
  int more_line = (int)extra.start_mark.line + 1;
  yaml_document_delete(&extra);
  if (more) {
    rc = errf(errmsg, errlen, GY_ECONFIG,
              "%s:%d: a second YAML document starts here; a config file holds exactly one", path,
              more_line);
    goto err;
  }
  yaml_parser_delete(&parser);
  have_parser = 0;
  if ((rc = check_duplicate_keys(y, errmsg, errlen))) goto err;
  *out = y;
  return 0;

err:
  if (have_parser) yaml_parser_delete(&parser);
  if (have_doc) yaml_document_delete(&y->doc);
  free(y->path);
  free(y);
  return rc;
}

void gy_yaml_destroy(gy_yaml_t *y) {
  if (!y) return;
  yaml_document_delete(&y->doc);
  free(y->path);
  free(y);
}

/* ---- structure ---- */

const char *gy_yaml_path(const gy_yaml_t *y) {
  return y ? y->path : NULL;
}

gy_ynode_t gy_yaml_root(const gy_yaml_t *y) {
  /* libyaml's root is the first node. */
  return node_at(y, 1) ? 1 : 0;
}

int gy_yaml_line(const gy_yaml_t *y, gy_ynode_t n) {
  yaml_node_t *nd = node_at(y, n);
  return nd ? (int)nd->start_mark.line + 1 : 0;
}

int gy_yaml_is_map(const gy_yaml_t *y, gy_ynode_t n) {
  yaml_node_t *nd = node_at(y, n);
  return nd && nd->type == YAML_MAPPING_NODE;
}

int gy_yaml_is_seq(const gy_yaml_t *y, gy_ynode_t n) {
  yaml_node_t *nd = node_at(y, n);
  return nd && nd->type == YAML_SEQUENCE_NODE;
}

int gy_yaml_is_scalar(const gy_yaml_t *y, gy_ynode_t n) {
  yaml_node_t *nd = node_at(y, n);
  return nd && nd->type == YAML_SCALAR_NODE;
}

static yaml_node_pair_t *pair_at(const gy_yaml_t *y, gy_ynode_t map, int i) {
  yaml_node_t *nd = node_at(y, map);
  if (!nd || nd->type != YAML_MAPPING_NODE || i < 0) return NULL;
  if (i >= nd->data.mapping.pairs.top - nd->data.mapping.pairs.start) return NULL;
  return nd->data.mapping.pairs.start + i;
}

gy_ynode_t gy_yaml_get(const gy_yaml_t *y, gy_ynode_t map, const char *key) {
  yaml_node_t *nd = node_at(y, map);
  if (!nd || nd->type != YAML_MAPPING_NODE || !key) return 0;
  for (yaml_node_pair_t *p = nd->data.mapping.pairs.start; p < nd->data.mapping.pairs.top; p++) {
    yaml_node_t *k = node_at(y, p->key);
    if (k && k->type == YAML_SCALAR_NODE && !strcmp((const char *)k->data.scalar.value, key))
      return p->value;
  }
  return 0;
}

int gy_yaml_map_len(const gy_yaml_t *y, gy_ynode_t map) {
  yaml_node_t *nd = node_at(y, map);
  if (!nd || nd->type != YAML_MAPPING_NODE) return 0;
  return (int)(nd->data.mapping.pairs.top - nd->data.mapping.pairs.start);
}

const char *gy_yaml_map_key(const gy_yaml_t *y, gy_ynode_t map, int i) {
  yaml_node_pair_t *p = pair_at(y, map, i);
  return p ? gy_yaml_scalar(y, p->key) : NULL;
}

gy_ynode_t gy_yaml_map_value(const gy_yaml_t *y, gy_ynode_t map, int i) {
  yaml_node_pair_t *p = pair_at(y, map, i);
  return p ? p->value : 0;
}

int gy_yaml_map_key_line(const gy_yaml_t *y, gy_ynode_t map, int i) {
  yaml_node_pair_t *p = pair_at(y, map, i);
  return p ? gy_yaml_line(y, p->key) : 0;
}

gy_ynode_t gy_yaml_map_key_node(const gy_yaml_t *y, gy_ynode_t map, int i) {
  yaml_node_pair_t *p = pair_at(y, map, i);
  return p ? p->key : 0;
}

int gy_yaml_seq_len(const gy_yaml_t *y, gy_ynode_t seq) {
  yaml_node_t *nd = node_at(y, seq);
  if (!nd || nd->type != YAML_SEQUENCE_NODE) return 0;
  return (int)(nd->data.sequence.items.top - nd->data.sequence.items.start);
}

gy_ynode_t gy_yaml_seq_item(const gy_yaml_t *y, gy_ynode_t seq, int i) {
  if (i < 0 || i >= gy_yaml_seq_len(y, seq)) return 0;
  return node_at(y, seq)->data.sequence.items.start[i];
}

const char *gy_yaml_scalar(const gy_yaml_t *y, gy_ynode_t n) {
  yaml_node_t *nd = node_at(y, n);
  if (!nd || nd->type != YAML_SCALAR_NODE) return NULL;
  return (const char *)nd->data.scalar.value;
}

/* ---- errors and typed conversions ---- */

/* The length of s[0..n) without an incomplete UTF-8 sequence at its end (s is UTF-8 cut
 * anywhere). */
static size_t utf8_cut(const char *s, size_t n) {
  size_t j = n;
  while (j > 0 && ((unsigned char)s[j - 1] & 0xc0) == 0x80) /* continuation bytes */
    j--;
  if (j == 0) return 0;
  unsigned char lead = (unsigned char)s[j - 1];
  size_t need = lead < 0x80 ? 1 : (lead & 0xe0) == 0xc0 ? 2 : (lead & 0xf0) == 0xe0 ? 3 : 4;
  return n - (j - 1) >= need ? n : j - 1;
}

int gy_excerpt(char *out, size_t outlen, const char *s) {
  if (!out || !outlen) return 0;
  size_t o = 0;
  for (; s && s[o] && o + 1 < outlen; o++)
    out[o] = ((unsigned char)s[o] < 0x20 || s[o] == 0x7f) ? '?' : s[o];
  int cut = s && s[o] != '\0';
  out[utf8_cut(out, o)] = '\0'; /* never half a character */
  return cut;
}

void gy_yaml_describe(const gy_yaml_t *y, gy_ynode_t n, char *buf, size_t len) {
  yaml_node_t *nd = node_at(y, n);
  if (!nd) {
    snprintf(buf, len, "nothing");
  } else if (nd->type == YAML_MAPPING_NODE) {
    snprintf(buf, len, "a mapping");
  } else if (nd->type == YAML_SEQUENCE_NODE) {
    snprintf(buf, len, "a sequence");
  } else if (is_plain_null(nd)) {
    snprintf(buf, len, "an empty value");
  } else {
    const unsigned char *s = nd->data.scalar.value;
    size_t slen = nd->data.scalar.length, o = 0;
    char ex[EXCERPT_MAX + 4];
    for (size_t i = 0; i < slen && o < EXCERPT_MAX; i++)
      ex[o++] = (s[i] < 0x20 || s[i] == 0x7f) ? '?' : (char)s[i];
    o = utf8_cut(ex, o); /* never half a character: messages stay UTF-8 */
    ex[o] = '\0';
    int w = snprintf(buf, len, "'%s%s'", ex, slen > EXCERPT_MAX ? "..." : "");
    if (len && w >= 0 && (size_t)w >= len) buf[utf8_cut(buf, len - 1)] = '\0';
  }
}

int gy_yaml_error(const gy_yaml_t *y, gy_ynode_t n, const char *key, char *errmsg, size_t errlen,
                  const char *fmt, ...) {
  if (!errmsg || !errlen) return GY_ECONFIG;
  const char *path = y && y->path ? y->path : "(config)";
  int line = gy_yaml_line(y, n);
  size_t o;
  if (line > 0)
    o = (size_t)snprintf(errmsg, errlen, "%s:%d: ", path, line);
  else
    o = (size_t)snprintf(errmsg, errlen, "%s: ", path);
  if (o < errlen && key && *key) o += (size_t)snprintf(errmsg + o, errlen - o, "key '%s': ", key);
  if (o >= errlen) errmsg[utf8_cut(errmsg, errlen - 1)] = '\0';
  if (o < errlen) {
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(errmsg + o, errlen - o, fmt, ap);
    va_end(ap);
    if (m >= 0 && (size_t)m >= errlen - o) errmsg[utf8_cut(errmsg, errlen - 1)] = '\0';
  }
  return GY_ECONFIG;
}

/* The node as a plain scalar for numbers and booleans; NULL (and *why set) otherwise. */
static const char *plain_text(const gy_yaml_t *y, gy_ynode_t n, const char **why) {
  yaml_node_t *nd = node_at(y, n);
  *why = NULL;
  if (!nd || nd->type != YAML_SCALAR_NODE || is_plain_null(nd)) return NULL;
  if (nd->data.scalar.style != YAML_PLAIN_SCALAR_STYLE) {
    *why = " (a quoted value is a string: remove the quotes)";
    return NULL;
  }
  if (strlen((const char *)nd->data.scalar.value) != nd->data.scalar.length) return NULL;
  return (const char *)nd->data.scalar.value;
}

static void int_range_text(int64_t min, int64_t max, char *buf, size_t len) {
  if (min == INT64_MIN && max == INT64_MAX)
    snprintf(buf, len, "an integer");
  else if (max == INT64_MAX)
    snprintf(buf, len, "an integer >= %lld", (long long)min);
  else if (min == INT64_MIN)
    snprintf(buf, len, "an integer <= %lld", (long long)max);
  else
    snprintf(buf, len, "an integer in [%lld, %lld]", (long long)min, (long long)max);
}

int gy_yaml_to_int(const gy_yaml_t *y, gy_ynode_t n, const char *key, int64_t min, int64_t max,
                   int64_t *out, char *errmsg, size_t errlen) {
  char want[96], got[EXCERPT_MAX + 16];
  const char *why;
  int_range_text(min, max, want, sizeof(want));
  const char *s = plain_text(y, n, &why);
  if (s) {
    /* Decimal only, optional sign, digits to the end: strtoll alone would accept leading
     * blanks and stop silently at trailing garbage. */
    const char *p = s + (*s == '+' || *s == '-');
    int ok = *p != '\0';
    for (const char *c = p; *c; c++)
      if (*c < '0' || *c > '9') ok = 0;
    if (ok) {
      errno = 0;
      char *end;
      long long v = strtoll(s, &end, 10);
      if (errno == 0 && *end == '\0' && v >= min && v <= max) {
        if (out) *out = v;
        return 0;
      }
    }
  }
  gy_yaml_describe(y, n, got, sizeof(got));
  return gy_yaml_error(y, n, key, errmsg, errlen, "expected %s, got %s%s", want, got,
                       why ? why : "");
}

int gy_yaml_to_double_in(const gy_yaml_t *y, gy_ynode_t n, const char *key, double min,
                         int min_open, double max, int max_open, double *out, char *errmsg,
                         size_t errlen) {
  char got[EXCERPT_MAX + 16];
  const char *why;
  const char *s = plain_text(y, n, &why);
  if (s) {
    /* Decimal notation only: strtod would also take "inf", "nan" and hex floats. */
    int ok = *s != '\0', digits = 0;
    for (const char *c = s; *c; c++) {
      if (*c >= '0' && *c <= '9')
        digits = 1;
      else if (!strchr("+-.eE", *c))
        ok = 0;
    }
    if (ok && digits) {
      errno = 0;
      char *end;
      double v = strtod(s, &end);
      /* ERANGE also flags underflow to a denormal; only a zero or infinite result is lost. */
      int lost = errno == ERANGE && (v == 0 || isinf(v));
      if (!lost && *end == '\0' && isfinite(v) && (min_open ? v > min : v >= min) &&
          (max_open ? v < max : v <= max)) {
        if (out) *out = v;
        return 0;
      }
    }
  }
  gy_yaml_describe(y, n, got, sizeof(got));
  return gy_yaml_error(y, n, key, errmsg, errlen, "expected a number in %c%g, %g%c, got %s%s",
                       min_open ? '(' : '[', min, max, max_open ? ')' : ']', got, why ? why : "");
}

int gy_yaml_to_double(const gy_yaml_t *y, gy_ynode_t n, const char *key, double min, double max,
                      double *out, char *errmsg, size_t errlen) {
  return gy_yaml_to_double_in(y, n, key, min, 0, max, 0, out, errmsg, errlen);
}

int gy_yaml_to_bool(const gy_yaml_t *y, gy_ynode_t n, const char *key, int *out, char *errmsg,
                    size_t errlen) {
  static const char *const yes[] = {"true", "yes", "on"}, *const no[] = {"false", "no", "off"};
  char got[EXCERPT_MAX + 16];
  const char *why;
  const char *s = plain_text(y, n, &why);
  if (s) {
    for (int i = 0; i < 3; i++) {
      if (!strcasecmp(s, yes[i])) {
        if (out) *out = 1;
        return 0;
      }
      if (!strcasecmp(s, no[i])) {
        if (out) *out = 0;
        return 0;
      }
    }
  }
  gy_yaml_describe(y, n, got, sizeof(got));
  return gy_yaml_error(y, n, key, errmsg, errlen,
                       "expected a boolean (true/false/yes/no/on/off), got %s%s", got,
                       why ? why : "");
}

int gy_yaml_to_string(const gy_yaml_t *y, gy_ynode_t n, const char *key, const char **out,
                      char *errmsg, size_t errlen) {
  char got[EXCERPT_MAX + 16];
  yaml_node_t *nd = node_at(y, n);
  if (nd && nd->type == YAML_SCALAR_NODE && !is_plain_null(nd)) {
    if (strlen((const char *)nd->data.scalar.value) != nd->data.scalar.length)
      return gy_yaml_error(y, n, key, errmsg, errlen, "the string contains a NUL character");
    if (out) *out = (const char *)nd->data.scalar.value;
    return 0;
  }
  gy_yaml_describe(y, n, got, sizeof(got));
  return gy_yaml_error(y, n, key, errmsg, errlen, "expected a string, got %s", got);
}

/* ---- schema look-ups (gy_yread_t) ---- */

int gy_yread_root(const gy_yread_t *c, const char *what, const char *keys, gy_ynode_t *root) {
  *root = gy_yaml_root(c->y);
  if (gy_yaml_is_map(c->y, *root)) return 0;
  char got[80];
  gy_yaml_describe(c->y, *root, got, sizeof(got));
  return gy_yaml_error(c->y, *root, NULL, c->errmsg, c->errlen,
                       "the top level of a %s must be a mapping (%s), got %s", what, keys, got);
}

/* Joins prefix and name into "prefix.name" (or just "name" at the top level). */
void gy_yaml_join_key(char *buf, size_t len, const char *prefix, const char *name) {
  if (prefix && *prefix)
    snprintf(buf, len, "%s.%s", prefix, name);
  else
    snprintf(buf, len, "%s", name);
}

int gy_yread_map(const gy_yread_t *c, gy_ynode_t n, const char *key) {
  if (gy_yaml_is_map(c->y, n)) return 0;
  char got[80];
  gy_yaml_describe(c->y, n, got, sizeof(got));
  return gy_yaml_error(c->y, n, key, c->errmsg, c->errlen, "expected a mapping, got %s", got);
}

/* Refuses any key of map that is not in known (NULL-terminated). The message lists the keys
 * that are allowed there, which is usually enough to spot a typo. */
int gy_yread_keys(const gy_yread_t *c, gy_ynode_t map, const char *prefix,
                  const char *const *known) {
  int n = gy_yaml_map_len(c->y, map);
  for (int i = 0; i < n; i++) {
    const char *k = gy_yaml_map_key(c->y, map, i);
    gy_ynode_t kn = gy_yaml_map_key_node(c->y, map, i);
    if (!k)
      return gy_yaml_error(c->y, kn, prefix, c->errmsg, c->errlen,
                           "a key must be a plain string, not a mapping or sequence");
    int ok = 0;
    for (const char *const *p = known; *p; p++)
      if (!strcmp(*p, k)) ok = 1;
    if (ok) continue;
    char list[256] = "", full[160], shown[64];
    size_t o = 0;
    for (const char *const *p = known; *p && o < sizeof(list); p++)
      o += (size_t)snprintf(list + o, sizeof(list) - o, "%s%s", p == known ? "" : ", ", *p);
    /* Quote at most a printable excerpt of the key. */
    gy_excerpt(shown, sizeof(shown), k);
    gy_yaml_join_key(full, sizeof(full), prefix, shown);
    return gy_yaml_error(c->y, kn, full, c->errmsg, c->errlen, "unknown key (expected one of: %s)",
                         list);
  }
  return 0;
}

/* A section (or nested mapping) by name: 0 in *out when absent, an error when not a mapping. */
int gy_yread_section(const gy_yread_t *c, gy_ynode_t parent, const char *prefix, const char *name,
                     gy_ynode_t *out) {
  char full[160];
  gy_yaml_join_key(full, sizeof(full), prefix, name);
  *out = gy_yaml_get(c->y, parent, name);
  if (!*out) return 0;
  return gy_yread_map(c, *out, full);
}

/* The key node of map.name (for the line of a section's name), or 0. */
gy_ynode_t gy_yread_key_node(const gy_yread_t *c, gy_ynode_t map, const char *name) {
  int n = gy_yaml_map_len(c->y, map);
  for (int i = 0; i < n; i++) {
    const char *k = gy_yaml_map_key(c->y, map, i);
    if (k && !strcmp(k, name)) return gy_yaml_map_key_node(c->y, map, i);
  }
  return 0;
}

/* Reports prefix.name as missing at node `at` (the line of the mapping's own key, or of the
 * list item, where the key belongs); at == 0 reports at the top of the document. */
int gy_yread_missing(const gy_yread_t *c, gy_ynode_t at, const char *prefix, const char *name,
                     const char *hint) {
  char full[160];
  gy_yaml_join_key(full, sizeof(full), prefix, name);
  if (!at) at = gy_yaml_root(c->y);
  return gy_yaml_error(c->y, at, full, c->errmsg, c->errlen, "required key is missing%s%s",
                       hint ? ": " : "", hint ? hint : "");
}

/* Optional integer map.name in [min, max]; *out keeps its default when absent. */
int gy_yread_int(const gy_yread_t *c, gy_ynode_t map, const char *prefix, const char *name,
                 int64_t min, int64_t max, int64_t *out, gy_ynode_t *where) {
  char full[160];
  gy_yaml_join_key(full, sizeof(full), prefix, name);
  gy_ynode_t n = gy_yaml_get(c->y, map, name);
  if (where) *where = n;
  if (!n) return 0;
  return gy_yaml_to_int(c->y, n, full, min, max, out, c->errmsg, c->errlen);
}

/* get_int into an int (the bounds keep it in range). */
int gy_yread_i32(const gy_yread_t *c, gy_ynode_t map, const char *prefix, const char *name,
                 int64_t min, int64_t max, int *out, gy_ynode_t *where) {
  int64_t v = *out;
  int rc = gy_yread_int(c, map, prefix, name, min, max, &v, where);
  if (!rc) *out = (int)v;
  return rc;
}

/* Optional number map.name in the interval; *out keeps its default when absent. */
int gy_yread_double(const gy_yread_t *c, gy_ynode_t map, const char *prefix, const char *name,
                    double min, int min_open, double max, int max_open, double *out) {
  char full[160];
  gy_yaml_join_key(full, sizeof(full), prefix, name);
  gy_ynode_t n = gy_yaml_get(c->y, map, name);
  if (!n) return 0;
  return gy_yaml_to_double_in(c->y, n, full, min, min_open, max, max_open, out, c->errmsg,
                              c->errlen);
}

/* get_double into a float knob; a non-zero value that rounds to 0 as a float is refused. */
int gy_yread_float(const gy_yread_t *c, gy_ynode_t map, const char *prefix, const char *name,
                   double min, int min_open, double max, int max_open, float *out) {
  double v = *out;
  int rc = gy_yread_double(c, map, prefix, name, min, min_open, max, max_open, &v);
  if (rc) return rc;
  if (v != 0 && (float)v == 0) {
    char full[160];
    gy_yaml_join_key(full, sizeof(full), prefix, name);
    return gy_yaml_error(c->y, gy_yaml_get(c->y, map, name), full, c->errmsg, c->errlen,
                         "%g is too small: it rounds to 0 in single precision", v);
  }
  *out = (float)v;
  return 0;
}

int gy_yread_bool(const gy_yread_t *c, gy_ynode_t map, const char *prefix, const char *name,
                  int *out) {
  char full[160];
  gy_yaml_join_key(full, sizeof(full), prefix, name);
  gy_ynode_t n = gy_yaml_get(c->y, map, name);
  if (!n) return 0;
  return gy_yaml_to_bool(c->y, n, full, out, c->errmsg, c->errlen);
}

/* Optional string; *out borrows the document's text (valid while c->y lives). */
int gy_yread_str(const gy_yread_t *c, gy_ynode_t map, const char *prefix, const char *name,
                 const char **out, gy_ynode_t *where) {
  char full[160];
  gy_yaml_join_key(full, sizeof(full), prefix, name);
  gy_ynode_t n = gy_yaml_get(c->y, map, name);
  if (where) *where = n;
  if (!n) return 0;
  return gy_yaml_to_string(c->y, n, full, out, c->errmsg, c->errlen);
}

/* Optional enumerated string: *out = its index into names (NULL-terminated). */
int gy_yread_enum(const gy_yread_t *c, gy_ynode_t map, const char *prefix, const char *name,
                  const char *const *names, int *out) {
  char full[160];
  gy_yaml_join_key(full, sizeof(full), prefix, name);
  gy_ynode_t n = gy_yaml_get(c->y, map, name);
  if (!n) return 0;
  const char *s;
  int rc = gy_yaml_to_string(c->y, n, full, &s, c->errmsg, c->errlen);
  if (rc) return rc;
  for (int i = 0; names[i]; i++)
    if (!strcmp(names[i], s)) {
      *out = i;
      return 0;
    }
  char list[256] = "", got[80];
  size_t o = 0;
  for (int i = 0; names[i] && o < sizeof(list); i++)
    o += (size_t)snprintf(list + o, sizeof(list) - o, "%s%s",
                          !i             ? ""
                          : names[i + 1] ? ", "
                                         : " or ",
                          names[i]);
  gy_yaml_describe(c->y, n, got, sizeof(got));
  return gy_yaml_error(c->y, n, full, c->errmsg, c->errlen, "expected %s, got %s", list, got);
}
