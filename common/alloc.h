/* alloc: the allocator hook of the controller's pure modules and the journal
 * (CONVENTIONS.md §6), so that tests can inject out-of-memory and count live allocations.
 *
 * Usage: modules call gy_malloc, gy_calloc, gy_realloc, gy_strdup and gy_free exactly where
 * they would call the C library; memory from one of them is released with gy_free (never
 * free()), and memory from the C library or another library (jansson's json_dumps, the store's
 * values) with that library's free, never gy_free.
 *
 * By default the hooks are the C library's own functions: a call costs one indirect call.
 *
 * Thread-safety: the hooks are process-wide and read without synchronisation. A test sets them
 * once, before any other thread starts and before anything is allocated through them, and
 * restores the defaults (gy_alloc_set_hooks(NULL)) only after everything allocated through
 * its hooks was freed; production code never sets them. */
#ifndef GY_COMMON_ALLOC_H
#define GY_COMMON_ALLOC_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The four functions, with the C library's signatures and contracts (realloc(p, n) that fails
 * returns NULL and leaves p valid; free(NULL) does nothing). */
typedef struct {
  void *(*malloc)(size_t n);
  void *(*calloc)(size_t nmemb, size_t size);
  void *(*realloc)(void *p, size_t n);
  void (*free)(void *p);
} gy_alloc_hooks_t;

/* The hooks in force; modules do not read it directly (use the calls below). */
extern gy_alloc_hooks_t gy__alloc;

/* Sets the hooks (copied; every member must be set), or the C library's with NULL. See the
 * thread-safety note above: for tests, before anything runs. */
void gy_alloc_set_hooks(const gy_alloc_hooks_t *hooks);

static inline void *gy_malloc(size_t n) {
  return gy__alloc.malloc(n);
}
static inline void *gy_calloc(size_t nmemb, size_t size) {
  return gy__alloc.calloc(nmemb, size);
}
static inline void *gy_realloc(void *p, size_t n) {
  return gy__alloc.realloc(p, n);
}
static inline void gy_free(void *p) {
  gy__alloc.free(p);
}

/* A copy of s from gy_malloc (release it with gy_free); NULL when out of memory or s is
 * NULL. */
char *gy_strdup(const char *s);

#ifdef __cplusplus
}
#endif

#endif
