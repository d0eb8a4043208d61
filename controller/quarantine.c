/*
 * quarantine: the controller's quarantine list (see quarantine.h).
 *
 * API, in order: create, destroy, str_ok, intern, add, release, restore, count, max, active, at,
 * get, by_rev, to_json, from_json.
 *
 * Layout: the entries in one array sorted by id (ids only grow, so an add appends; a restore
 * may insert); the file names in an open-addressing table (FILES_SLOTS, twice the most files),
 * each with the ids of its entries, so that finding the entry a region belongs to looks only at
 * the entries of its file.
 *
 * Invariants:
 * - e[0..n) is sorted by id, ids distinct; next_id > every id; rev_ctr >= every rev.
 * - Every entry's file is an interned name, and its id is in that name's list exactly once.
 * - A failed call changes nothing (validation and allocation come first).
 */
#include "controller/quarantine.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/err.h"
#include "common/utf8.h"

#define FILES_SLOTS (2 * GY_QUAR_FILES_MAX)

typedef struct {
  char *name;    /* NULL: free slot */
  uint64_t *ids; /* the entries of this file */
  size_t n, cap;
} file_t;

struct gy_quar {
  size_t max;
  gy_quar_entry_t *e;
  size_t n, cap;
  size_t active;
  uint64_t next_id, rev_ctr;
  file_t *files; /* FILES_SLOTS */
  size_t nfiles;
};

int gy_quar_create(gy_quar_t **out, size_t max) {
  *out = NULL;
  gy_quar_t *q = gy_calloc(1, sizeof(*q));
  if (!q || !(q->files = gy_calloc(FILES_SLOTS, sizeof(*q->files)))) {
    gy_free(q);
    return GY_ENOMEM;
  }
  q->max = max ? max : GY_QUAR_MAX_DEFAULT;
  q->next_id = 1;
  *out = q;
  return 0;
}

void gy_quar_destroy(gy_quar_t *q) {
  if (!q) return;
  for (size_t i = 0; i < FILES_SLOTS; i++) {
    gy_free(q->files[i].name);
    gy_free(q->files[i].ids);
  }
  gy_free(q->files);
  gy_free(q->e);
  gy_free(q);
}

int gy_quar_str_ok(const char *s, size_t max) {
  if (!s) return 0;
  size_t n = strnlen(s, max);
  return n >= 1 && n < max && gy_utf8_clean(s, n);
}

static uint64_t hash(const char *s) {
  uint64_t h = 1469598103934665603ull; /* FNV-1a */
  for (; *s; s++)
    h = (h ^ (unsigned char)*s) * 1099511628211ull;
  return h;
}

/* The slot of name: its own, or the free slot where it would go. */
static file_t *slot_of(const gy_quar_t *q, const char *name) {
  size_t i = (size_t)(hash(name) & (FILES_SLOTS - 1));
  while (q->files[i].name && strcmp(q->files[i].name, name))
    i = (i + 1) & (FILES_SLOTS - 1);
  return &q->files[i];
}

const char *gy_quar_intern(gy_quar_t *q, const char *file) {
  if (!gy_quar_str_ok(file, GY_QUAR_FILE_MAX)) return NULL;
  file_t *f = slot_of(q, file);
  if (f->name) return f->name;
  if (q->nfiles >= GY_QUAR_FILES_MAX || !(f->name = gy_strdup(file))) return NULL;
  q->nfiles++;
  return f->name;
}

/* The index of entry id in e, or -1. */
static ptrdiff_t find(const gy_quar_t *q, uint64_t id) {
  size_t lo = 0, hi = q->n;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (q->e[mid].id < id)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo < q->n && q->e[lo].id == id ? (ptrdiff_t)lo : -1;
}

/* Room for one more entry and one more id in f's list (nothing changes on failure). */
static int reserve(gy_quar_t *q, file_t *f) {
  if (q->n == q->cap) {
    size_t cap = q->cap ? 2 * q->cap : 64;
    gy_quar_entry_t *e = gy_realloc(q->e, cap * sizeof(*e));
    if (!e) return GY_ENOMEM;
    q->e = e;
    q->cap = cap;
  }
  if (f->n == f->cap) {
    size_t cap = f->cap ? 2 * f->cap : 8;
    uint64_t *ids = gy_realloc(f->ids, cap * sizeof(*ids));
    if (!ids) return GY_ENOMEM;
    f->ids = ids;
    f->cap = cap;
  }
  return 0;
}

static void set_name(char *dst, const char *src, const char *dflt) {
  snprintf(dst, GY_QUAR_NAME, "%s", src && gy_quar_str_ok(src, GY_QUAR_NAME) ? src : dflt);
}

int gy_quar_add(gy_quar_t *q, const gy_quar_add_t *a, uint64_t *id, char *errmsg, size_t errlen) {
  if (!gy_quar_str_ok(a->channel, GY_QUAR_NAME)) {
    snprintf(errmsg, errlen, "quarantine: the channel must be 1..%d bytes of UTF-8 text",
             GY_QUAR_NAME - 1);
    return GY_EINVAL;
  }
  if (!gy_quar_str_ok(a->file, GY_QUAR_FILE_MAX)) {
    snprintf(errmsg, errlen, "quarantine: the file must be 1..%d bytes of UTF-8 text",
             GY_QUAR_FILE_MAX - 1);
    return GY_EINVAL;
  }
  if (a->length < 1 || a->length > GY_QUAR_TOKENS_MAX || a->offset > GY_QUAR_TOKENS_MAX * 1024) {
    snprintf(errmsg, errlen,
             "quarantine: %s offset %llu length %llu: the length must be 1..2^40 tokens", a->file,
             (unsigned long long)a->offset, (unsigned long long)a->length);
    return GY_EINVAL;
  }
  file_t *f = slot_of(q, a->file);
  if (!f->name && q->nfiles >= GY_QUAR_FILES_MAX) {
    snprintf(errmsg, errlen, "quarantine: %d files named already", GY_QUAR_FILES_MAX);
    return GY_ENOSPC;
  }
  uint64_t first = a->offset, last = a->offset + a->length;
  gy_quar_entry_t *hit = NULL;
  for (size_t k = 0; f->name && k < f->n && !hit; k++) {
    ptrdiff_t i = find(q, f->ids[k]);
    if (i < 0) continue; /* not reached: the lists hold live ids */
    gy_quar_entry_t *x = &q->e[i];
    if (!strcmp(x->channel, a->channel) && first <= x->offset + x->length && x->offset <= last)
      hit = x;
  }
  if (hit) {
    uint64_t lo = first < hit->offset ? first : hit->offset;
    uint64_t hi = last > hit->offset + hit->length ? last : hit->offset + hit->length;
    if (!a->operator_ && hit->hits < UINT32_MAX) hit->hits++;
    if (id) *id = hit->id;
    if (!hit->released && lo == hit->offset && hi == hit->offset + hit->length) return GY_QUAR_HELD;
    if (hit->released) q->active++;
    hit->released = 0;
    hit->offset = lo;
    hit->length = hi - lo;
    hit->changed_step = a->step;
    hit->rev = ++q->rev_ctr;
    return GY_QUAR_GREW;
  }
  if (q->n >= q->max) {
    snprintf(errmsg, errlen, "quarantine: the list is full (%zu entries)", q->max);
    return GY_ENOSPC;
  }
  int fresh = !f->name;
  if (fresh) {
    if (!(f->name = gy_strdup(a->file))) return GY_ENOMEM;
    q->nfiles++;
  }
  if (reserve(q, f)) {
    if (fresh) { /* nothing refers to it yet */
      gy_free(f->name);
      f->name = NULL;
      q->nfiles--;
    }
    return GY_ENOMEM;
  }
  gy_quar_entry_t *x = &q->e[q->n++];
  memset(x, 0, sizeof(*x));
  x->id = q->next_id++;
  set_name(x->channel, a->channel, "?");
  x->file = f->name;
  x->offset = first;
  x->length = a->length;
  x->document = a->document < 0 ? -1 : a->document;
  set_name(x->reason, a->reason, "?");
  x->first_step = a->operator_ ? -1 : a->step;
  x->sample = a->sample;
  x->loss = isfinite(a->loss) ? a->loss : 0;
  x->median = isfinite(a->median) ? a->median : 0;
  x->threshold = isfinite(a->threshold) ? a->threshold : 0;
  x->hits = a->operator_ ? 0 : 1;
  x->changed_step = a->step;
  x->rev = ++q->rev_ctr;
  f->ids[f->n++] = x->id;
  q->active++;
  if (id) *id = x->id;
  return GY_QUAR_NEW;
}

int gy_quar_release(gy_quar_t *q, uint64_t id, int64_t step) {
  ptrdiff_t i = find(q, id);
  if (i < 0) return GY_ENOENT;
  gy_quar_entry_t *x = &q->e[i];
  if (x->released) return 0;
  x->released = 1;
  x->changed_step = step;
  x->rev = ++q->rev_ctr;
  q->active--;
  return 1;
}

/* Removes id from f's list. */
static void unlist(file_t *f, uint64_t id) {
  for (size_t k = 0; k < f->n; k++)
    if (f->ids[k] == id) {
      f->ids[k] = f->ids[--f->n];
      return;
    }
}

int gy_quar_restore(gy_quar_t *q, const gy_quar_entry_t *e) {
  if (!e->id || e->id == UINT64_MAX || !gy_quar_str_ok(e->channel, GY_QUAR_NAME) ||
      !gy_quar_str_ok(e->file, GY_QUAR_FILE_MAX) || e->length < 1 ||
      e->length > GY_QUAR_TOKENS_MAX || e->offset > GY_QUAR_TOKENS_MAX * 1024)
    return GY_EINVAL;
  ptrdiff_t at = find(q, e->id);
  if (at < 0 && q->n >= q->max) return GY_ENOSPC;
  const char *name = gy_quar_intern(q, e->file);
  if (!name) return q->nfiles >= GY_QUAR_FILES_MAX ? GY_ENOSPC : GY_ENOMEM;
  file_t *f = slot_of(q, name);
  if (reserve(q, f)) return GY_ENOMEM;
  gy_quar_entry_t x = *e;
  x.file = name;
  x.document = e->document < 0 ? -1 : e->document;
  x.channel[GY_QUAR_NAME - 1] = 0;
  set_name(x.reason, e->reason, "?");
  if (at >= 0) { /* the same entry again: the newer record wins */
    gy_quar_entry_t *old = &q->e[at];
    q->active -= !old->released;
    unlist(slot_of(q, old->file), old->id);
    *old = x;
  } else {
    size_t i = q->n;
    while (i > 0 && q->e[i - 1].id > x.id)
      i--;
    memmove(&q->e[i + 1], &q->e[i], (q->n - i) * sizeof(*q->e));
    q->e[i] = x;
    q->n++;
  }
  f->ids[f->n++] = x.id;
  q->active += !x.released;
  if (x.id >= q->next_id) q->next_id = x.id + 1;
  if (x.rev > q->rev_ctr) q->rev_ctr = x.rev;
  return 0;
}

size_t gy_quar_count(const gy_quar_t *q) {
  return q->n;
}

size_t gy_quar_max(const gy_quar_t *q) {
  return q->max;
}

size_t gy_quar_active(const gy_quar_t *q) {
  return q->active;
}

const gy_quar_entry_t *gy_quar_at(const gy_quar_t *q, size_t i) {
  return i < q->n ? &q->e[i] : NULL;
}

const gy_quar_entry_t *gy_quar_get(const gy_quar_t *q, uint64_t id) {
  ptrdiff_t i = find(q, id);
  return i < 0 ? NULL : &q->e[i];
}

static int by_rev(const void *a, const void *b) {
  const gy_quar_entry_t *x = *(const gy_quar_entry_t *const *)a;
  const gy_quar_entry_t *y = *(const gy_quar_entry_t *const *)b;
  return x->rev < y->rev ? -1 : x->rev > y->rev;
}

void gy_quar_by_rev(const gy_quar_t *q, const gy_quar_entry_t **out) {
  for (size_t i = 0; i < q->n; i++)
    out[i] = &q->e[i];
  if (q->n > 1) qsort(out, q->n, sizeof(*out), by_rev);
}

char *gy_quar_to_json(const gy_quar_entry_t *e) {
  json_t *o = json_pack(
      "{s:I, s:s, s:s, s:I, s:I, s:I, s:s, s:I, s:I, s:f, s:f, s:f, s:I, s:b, s:I, s:I}", "id",
      (json_int_t)e->id, "channel", e->channel, "file", e->file, "offset", (json_int_t)e->offset,
      "length", (json_int_t)e->length, "document", (json_int_t)e->document, "reason", e->reason,
      "first_step", (json_int_t)e->first_step, "sample", (json_int_t)e->sample, "loss",
      (double)e->loss, "median", (double)e->median, "threshold", (double)e->threshold, "hits",
      (json_int_t)e->hits, "released", e->released, "changed_step", (json_int_t)e->changed_step,
      "rev", (json_int_t)e->rev);
  char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
  json_decref(o);
  return s;
}

int gy_quar_from_json(gy_quar_t *q, const char *text, gy_quar_entry_t *out) {
  json_t *o = text ? json_loads(text, 0, NULL) : NULL;
  json_int_t id, off, len, doc, first, sample, hits, changed, rev;
  const char *ch, *file, *reason;
  double loss, median, thr;
  int released;
  int rc = GY_EINVAL;
  if (o &&
      !json_unpack(o,
                   "{s:I, s:s, s:s, s:I, s:I, s:I, s:s, s:I, s:I, s:F, s:F, s:F, s:I, s:b, "
                   "s:I, s:I}",
                   "id", &id, "channel", &ch, "file", &file, "offset", &off, "length", &len,
                   "document", &doc, "reason", &reason, "first_step", &first, "sample", &sample,
                   "loss", &loss, "median", &median, "threshold", &thr, "hits", &hits, "released",
                   &released, "changed_step", &changed, "rev", &rev) &&
      id > 0 && off >= 0 && len > 0 && hits >= 0 && rev >= 0 && gy_quar_str_ok(ch, GY_QUAR_NAME) &&
      gy_quar_str_ok(reason, GY_QUAR_NAME)) {
    const char *name = gy_quar_intern(q, file);
    if (name) {
      memset(out, 0, sizeof(*out));
      out->id = (uint64_t)id;
      snprintf(out->channel, sizeof(out->channel), "%s", ch);
      out->file = name;
      out->offset = (uint64_t)off;
      out->length = (uint64_t)len;
      out->document = doc;
      snprintf(out->reason, sizeof(out->reason), "%s", reason);
      out->first_step = first;
      out->sample = (uint64_t)sample;
      out->loss = (float)loss;
      out->median = (float)median;
      out->threshold = (float)thr;
      out->hits = hits > UINT32_MAX ? UINT32_MAX : (uint32_t)hits;
      out->released = released;
      out->changed_step = changed;
      out->rev = (uint64_t)rev;
      rc = 0;
    }
  }
  json_decref(o);
  return rc;
}
