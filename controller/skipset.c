/* skipset: see skipset.h. */
#include "controller/skipset.h"

#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/err.h"

/* Adds [first, last), merging. */
int gy_skipset_add(gy_skipset_t *k, uint64_t first, uint64_t last) {
  if (first >= last) return 0;
  size_t i = 0;
  while (i < k->n && k->r[i].last < first) /* ranges wholly before, not even adjacent */
    i++;
  size_t j = i;
  while (j < k->n && k->r[j].first <= last) { /* overlapping or adjacent: absorbed */
    if (k->r[j].first < first) first = k->r[j].first;
    if (k->r[j].last > last) last = k->r[j].last;
    j++;
  }
  if (j == i) { /* nothing absorbed: insert at i */
    if (k->n == k->cap) {
      size_t cap = k->cap ? 2 * k->cap : 16;
      gy_fleet_skip_t *r = gy_realloc(k->r, cap * sizeof(*r));
      if (!r) return GY_ENOMEM;
      k->r = r;
      k->cap = cap;
    }
    memmove(&k->r[i + 1], &k->r[i], (k->n - i) * sizeof(*k->r));
    k->n++;
  } else if (j > i + 1) {
    memmove(&k->r[i + 1], &k->r[j], (k->n - j) * sizeof(*k->r));
    k->n -= j - i - 1;
  }
  k->r[i] = (gy_fleet_skip_t){first, last};
  return 0;
}

/* The number of ids in [first, last) that k does not hold. */
uint64_t gy_skipset_uncovered(const gy_skipset_t *k, uint64_t first, uint64_t last) {
  if (first >= last) return 0;
  uint64_t n = last - first;
  for (size_t i = 0; i < k->n && k->r[i].first < last; i++) {
    uint64_t a = k->r[i].first > first ? k->r[i].first : first;
    uint64_t b = k->r[i].last < last ? k->r[i].last : last;
    if (a < b) n -= b - a;
  }
  return n;
}

void gy_skipset_free(gy_skipset_t *k) {
  gy_free(k->r);
  memset(k, 0, sizeof(*k));
}

/* Adds to out the ids that the unskipped numbers [n0, n0 + count) of k stand for (as
 * gy_skiplist_map maps each number), range by range. */
int gy_skipset_add_mapped(gy_skipset_t *out, const gy_skipset_t *k, uint64_t n0, uint64_t count) {
  uint64_t id = n0;
  size_t i = 0;
  for (; i < k->n && k->r[i].first <= id; i++) /* gy_skiplist_map: skipped ids push it on */
    id += k->r[i].last - k->r[i].first;
  while (count) {
    uint64_t lim = i < k->n ? k->r[i].first : UINT64_MAX, run = lim - id;
    if (run > count) run = count;
    int rc = gy_skipset_add(out, id, id + run);
    if (rc) return rc;
    count -= run;
    if (count) id = k->r[i++].last; /* merged ranges are not adjacent: id is unskipped */
  }
  return 0;
}
