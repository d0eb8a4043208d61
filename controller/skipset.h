/* skipset: the controller's set of skipped sample ids — sorted, merged (neither overlapping nor
 * adjacent), half-open ranges, with the semantics of worker/data.h's gy_skiplist_t, so that the
 * n-th unskipped id here is the one the workers use (the controller does not link the worker's
 * library). Pure logic: no I/O.
 *
 * gy_skipset_add merges a range in; gy_skipset_uncovered counts the ids of a range the set does
 * not hold yet (so a range sent again is not counted twice); gy_skipset_add_mapped adds the ids
 * that a run of unskipped numbers stands for; gy_skipset_free releases the ranges. A zeroed
 * gy_skipset_t is an empty set. */
#ifndef GY_CONTROLLER_SKIPSET_H
#define GY_CONTROLLER_SKIPSET_H

#include <stddef.h>
#include <stdint.h>

#include "controller/fleet.h"

typedef struct {
  gy_fleet_skip_t *r; /* [n] ranges, ascending */
  size_t n, cap;
} gy_skipset_t;

/* Adds [first, last) (nothing when first >= last); 0 or GY_ENOMEM. */
int gy_skipset_add(gy_skipset_t *k, uint64_t first, uint64_t last);
/* The number of ids in [first, last) that k does not hold. */
uint64_t gy_skipset_uncovered(const gy_skipset_t *k, uint64_t first, uint64_t last);
/* Adds to out the ids that the unskipped numbers [n0, n0 + count) of k stand for (as the
 * workers map them: gy_skiplist_map); 0 or GY_ENOMEM. */
int gy_skipset_add_mapped(gy_skipset_t *out, const gy_skipset_t *k, uint64_t n0, uint64_t count);
void gy_skipset_free(gy_skipset_t *k);

#endif
