/*
 * alloc: the allocator hook (alloc.h). The hooks are one process-wide table of four function
 * pointers, the C library's by default; gy_malloc and friends are inline calls through it.
 *
 * API, in order: gy_alloc_set_hooks, gy_strdup.
 *
 * Invariants:
 * - Every member of gy__alloc is non-NULL.
 * - gy_strdup allocates through the hooks, so a test that fails the k-th allocation sees it.
 */
#include "common/alloc.h"

#include <stdlib.h>
#include <string.h>

gy_alloc_hooks_t gy__alloc = {malloc, calloc, realloc, free};

void gy_alloc_set_hooks(const gy_alloc_hooks_t *hooks) {
  static const gy_alloc_hooks_t libc = {malloc, calloc, realloc, free};
  gy__alloc =
      hooks && hooks->malloc && hooks->calloc && hooks->realloc && hooks->free ? *hooks : libc;
}

char *gy_strdup(const char *s) {
  if (!s) return NULL;
  size_t n = strlen(s) + 1;
  char *d = gy_malloc(n);
  if (d) memcpy(d, s, n);
  return d;
}
