/*
 * prep_report: gyro-prep's report of what the filters dropped (see prep_report.h).
 *
 * API in order: create, doc (every judged document), file (a file skipped whole), line and
 * line_doc (boilerplate), dropped, summary, json, destroy.
 *
 * Invariants: examples are the first ones in the channel's order, so the report is as
 * deterministic as the shards; every string put into JSON is valid UTF-8 (jansson refuses
 * others): previews that are not become hex, and a path that is not has its bad bytes as '?'.
 */
#include "worker/prep_report.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "common/alloc.h"
#include "common/err.h"

#define PREVIEW_BYTES 160
#define MAX_LINE_EXAMPLES 64

typedef struct {
  uint64_t docs, bytes;
  json_t *examples; /* array */
} rule_t;

struct gy_prep_report {
  char *channel;
  size_t max_examples;
  gy_prep_filter_opts_t opts;
  uint64_t docs_seen, bytes_seen, docs_kept, bytes_kept;
  rule_t rules[GY_PREP_RULE_COUNT];
  uint64_t bp_lines, bp_bytes, bp_docs;
  json_t *bp_examples; /* array of distinct lines */
};

gy_prep_report_t *gy_prep_report_create(const char *channel, size_t max_examples,
                                        const gy_prep_filter_opts_t *opts) {
  gy_prep_report_t *r = gy_calloc(1, sizeof(*r));
  if (!r) return NULL;
  r->channel = gy_strdup(channel);
  r->max_examples = max_examples;
  r->opts = *opts;
  r->bp_examples = json_array();
  int ok = r->channel && r->bp_examples;
  for (int i = 0; i < GY_PREP_RULE_COUNT; i++) {
    r->rules[i].examples = json_array();
    ok = ok && r->rules[i].examples;
  }
  if (!ok) {
    gy_prep_report_destroy(r);
    return NULL;
  }
  return r;
}

void gy_prep_report_destroy(gy_prep_report_t *r) {
  if (!r) return;
  for (int i = 0; i < GY_PREP_RULE_COUNT; i++)
    json_decref(r->rules[i].examples);
  json_decref(r->bp_examples);
  gy_free(r->channel);
  gy_free(r);
}

/* A JSON string of s with every byte that is not part of valid UTF-8 (or is NUL) as '?'. */
static json_t *safe_string(const char *s, size_t n) {
  if (gy_prep_is_utf8(s, n)) return json_stringn(s, n);
  char *c = gy_malloc(n ? n : 1);
  if (!c) return NULL;
  size_t o = 0;
  for (size_t i = 0; i < n;) {
    size_t k = 1;
    while (k <= 4 && i + k <= n && !gy_prep_is_utf8(s + i, k))
      k++;
    if (k <= 4 && i + k <= n) {
      memcpy(c + o, s + i, k);
      o += k;
      i += k;
    } else {
      c[o++] = '?';
      i++;
    }
  }
  json_t *j = json_stringn(c, o);
  gy_free(c);
  return j;
}

/* Sets "preview" (text) or "preview_hex" on obj from the first bytes of s. */
static int set_preview(json_t *obj, const char *s, size_t n) {
  size_t m = n < PREVIEW_BYTES ? n : PREVIEW_BYTES;
  /* A cut inside the last character would show as invalid: cut at a character boundary. */
  while (m < n && m > 0 && ((unsigned char)s[m] & 0xC0) == 0x80)
    m--;
  gy_prep_text_stats_t st;
  gy_prep_text_stats(s, m, &st);
  json_t *v;
  const char *key;
  if (st.nul == 0 && st.invalid == 0 && st.control == 0) {
    v = json_stringn(s, m);
    key = "preview";
  } else {
    size_t h = m < PREVIEW_BYTES / 2 ? m : PREVIEW_BYTES / 2;
    char hex[PREVIEW_BYTES + 1];
    for (size_t i = 0; i < h; i++)
      snprintf(hex + 2 * i, 3, "%02x", (unsigned char)s[i]);
    v = json_stringn(hex, 2 * h);
    key = "preview_hex";
  }
  if (!v || json_object_set_new(obj, key, v) != 0) return GY_ENOMEM;
  if (m < n && json_object_set_new(obj, "preview_cut", json_true()) != 0) return GY_ENOMEM;
  return 0;
}

static json_t *example(const char *file, int64_t doc, size_t bytes, const char *why) {
  json_t *e = json_object();
  json_t *f = safe_string(file, strlen(file));
  if (!e || !f || json_object_set_new(e, "file", f) != 0 ||
      json_object_set_new(e, "document", json_integer(doc)) != 0 ||
      json_object_set_new(e, "bytes", json_integer((json_int_t)bytes)) != 0 ||
      json_object_set_new(e, "why", json_string(why)) != 0) {
    json_decref(e);
    return NULL;
  }
  return e;
}

int gy_prep_report_doc(gy_prep_report_t *r, const char *file, int64_t doc, const char *text,
                       size_t n, const gy_prep_verdict_t *v, const char *dup_file,
                       int64_t dup_doc) {
  r->docs_seen++;
  r->bytes_seen += n;
  if (v->rule == GY_PREP_KEEP) {
    r->docs_kept++;
    r->bytes_kept += n;
    return 0;
  }
  if ((unsigned)v->rule >= GY_PREP_RULE_COUNT) return GY_EINVAL;
  rule_t *ru = &r->rules[v->rule];
  ru->docs++;
  ru->bytes += n;
  if (json_array_size(ru->examples) >= r->max_examples) return 0;
  char why[256];
  const char *span = text;
  size_t span_n = n;
  switch (v->rule) {
  case GY_PREP_NONTEXT:
    snprintf(why, sizeof(why),
             "%zu NUL, %zu invalid UTF-8 and %zu control bytes in %zu (share allowed %g)",
             v->stats.nul, v->stats.invalid, v->stats.control, v->stats.bytes, r->opts.nontext_max);
    break;
  case GY_PREP_REPETITION:
    snprintf(why, sizeof(why),
             "a span of %" PRIu32 " token(s) repeated %" PRIu32 " times in a row (limit %" PRIu32
             ")",
             v->repeat.period, v->repeat.times, r->opts.rep_max_times);
    span = text + v->repeat_off;
    span_n = v->repeat_len;
    break;
  case GY_PREP_EXACT_DUP:
    snprintf(why, sizeof(why), "same normalised text as an earlier document");
    break;
  case GY_PREP_NEAR_DUP:
    snprintf(why, sizeof(why),
             "estimated Jaccard similarity %.3f with an earlier document (limit %g)", v->similarity,
             r->opts.near_threshold);
    break;
  default:
    snprintf(why, sizeof(why), "nothing left once its boilerplate lines went");
    break;
  }
  json_t *e = example(file, doc, n, why);
  if (!e) return GY_ENOMEM;
  int bad = set_preview(e, span, span_n) != 0;
  if (v->rule == GY_PREP_REPETITION)
    bad = bad || json_object_set_new(e, "offset", json_integer((json_int_t)v->repeat_off)) != 0;
  if (v->rule == GY_PREP_NEAR_DUP)
    bad = bad || json_object_set_new(e, "similarity", json_real(v->similarity)) != 0;
  if (dup_file) {
    json_t *d = json_object();
    json_t *f = safe_string(dup_file, strlen(dup_file));
    bad = bad || !d || !f || json_object_set_new(d, "file", f) != 0 ||
          json_object_set_new(d, "document", json_integer(dup_doc)) != 0 ||
          json_object_set_new(e, "duplicate_of", d) != 0;
    if (!d || !f) {
      json_decref(d);
      json_decref(f);
    }
  }
  if (bad || json_array_append_new(ru->examples, e) != 0) {
    if (bad) json_decref(e);
    return GY_ENOMEM;
  }
  return 0;
}

int gy_prep_report_file(gy_prep_report_t *r, const char *file, const char *why, const char *raw,
                        size_t n) {
  rule_t *ru = &r->rules[GY_PREP_NONTEXT];
  ru->docs++;
  ru->bytes += n;
  r->docs_seen++;
  r->bytes_seen += n;
  if (json_array_size(ru->examples) >= r->max_examples) return 0;
  json_t *e = example(file, -1, n, why);
  if (!e) return GY_ENOMEM;
  if (set_preview(e, raw, n) != 0 || json_array_append_new(ru->examples, e) != 0) {
    json_decref(e);
    return GY_ENOMEM;
  }
  return 0;
}

int gy_prep_report_line(gy_prep_report_t *r, const char *file, int64_t doc, const char *line,
                        size_t n, uint32_t docs) {
  r->bp_lines++;
  r->bp_bytes += n + 1; /* with its line feed */
  size_t have = json_array_size(r->bp_examples);
  if (have >= r->max_examples) return 0;
  for (size_t i = 0; i < have; i++) {
    json_t *t = json_object_get(json_array_get(r->bp_examples, i), "line");
    if (t && json_string_length(t) == n && memcmp(json_string_value(t), line, n) == 0) return 0;
  }
  json_t *e = json_object();
  json_t *f = safe_string(file, strlen(file));
  json_t *l = safe_string(line, n);
  if (!e || !f || !l || json_object_set_new(e, "line", l) != 0 ||
      json_object_set_new(e, "documents", json_integer(docs)) != 0 ||
      json_object_set_new(e, "first_file", f) != 0 ||
      json_object_set_new(e, "first_document", json_integer(doc)) != 0 ||
      json_array_append_new(r->bp_examples, e) != 0) {
    json_decref(e);
    return GY_ENOMEM;
  }
  return 0;
}

void gy_prep_report_line_doc(gy_prep_report_t *r, int touched) {
  if (touched) r->bp_docs++;
}

uint64_t gy_prep_report_dropped(const gy_prep_report_t *r) {
  uint64_t n = 0;
  for (int i = 0; i < GY_PREP_RULE_COUNT; i++)
    if (i != GY_PREP_KEEP) n += r->rules[i].docs;
  return n;
}

json_t *gy_prep_report_summary(const gy_prep_report_t *r) {
  json_t *s = json_object();
  if (!s) return NULL;
  int bad = json_object_set_new(s, "documents_dropped",
                                json_integer((json_int_t)gy_prep_report_dropped(r))) != 0;
  for (int i = 0; i < GY_PREP_RULE_COUNT; i++)
    if (i != GY_PREP_KEEP)
      bad = bad || json_object_set_new(s, gy_prep_rule_name((gy_prep_rule_t)i),
                                       json_integer((json_int_t)r->rules[i].docs)) != 0;
  bad = bad ||
        json_object_set_new(s, "boilerplate_lines", json_integer((json_int_t)r->bp_lines)) != 0;
  if (bad) {
    json_decref(s);
    return NULL;
  }
  return s;
}

json_t *gy_prep_report_json(const gy_prep_report_t *r) {
  const gy_prep_filter_opts_t *o = &r->opts;
  json_t *opts =
      json_pack("{s:f, s:{s:i, s:i, s:i}, s:b, s:{s:f, s:i, s:i, s:i, s:I}, s:{s:i, s:f, s:i}}",
                "nontext_max", o->nontext_max, "repetition", "min_period", (int)o->rep_min_period,
                "max_period", (int)o->rep_max_period, "max_times", (int)o->rep_max_times,
                "exact_dedup", o->exact_dedup, "near_dedup", "threshold", o->near_threshold,
                "shingle", (int)o->shingle, "bands", (int)o->bands, "rows", (int)o->rows, "seed",
                (json_int_t)o->seed, "boilerplate", "min_docs", (int)o->boiler_min_docs,
                "min_share", o->boiler_min_share, "min_bytes", (int)o->boiler_min_bytes);
  json_t *rules = json_object();
  json_t *j = json_object();
  int bad = !opts || !rules || !j;
  for (int i = 0; i < GY_PREP_RULE_COUNT && !bad; i++) {
    if (i == GY_PREP_KEEP) continue;
    const rule_t *ru = &r->rules[i];
    json_t *o1 = json_pack("{s:I, s:I, s:O}", "documents", (json_int_t)ru->docs, "bytes",
                           (json_int_t)ru->bytes, "examples", ru->examples);
    bad = !o1 || json_object_set_new(rules, gy_prep_rule_name((gy_prep_rule_t)i), o1) != 0;
  }
  json_t *bp = bad ? NULL
                   : json_pack("{s:I, s:I, s:I, s:O}", "lines", (json_int_t)r->bp_lines, "bytes",
                               (json_int_t)r->bp_bytes, "documents", (json_int_t)r->bp_docs,
                               "examples", r->bp_examples);
  json_t *ch = bad ? NULL : json_string(r->channel);
  bad = bad || !bp || !ch || json_object_set_new(j, "channel", ch) != 0 ||
        json_object_set_new(j, "documents_judged", json_integer((json_int_t)r->docs_seen)) != 0 ||
        json_object_set_new(j, "bytes_judged", json_integer((json_int_t)r->bytes_seen)) != 0 ||
        json_object_set_new(j, "documents_kept", json_integer((json_int_t)r->docs_kept)) != 0 ||
        json_object_set_new(j, "bytes_kept", json_integer((json_int_t)r->bytes_kept)) != 0 ||
        json_object_set_new(j, "options", opts) != 0 ||
        json_object_set_new(j, "dropped", rules) != 0 ||
        json_object_set_new(j, "boilerplate_lines", bp) != 0;
  if (bad) {
    json_decref(j);
    return NULL;
  }
  return j;
}
