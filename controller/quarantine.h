/* quarantine: the controller's quarantine list (DESIGN.md §12, "Provenance and quarantine"):
 * regions of the training shards that are never trained on again, each a range of tokens of one
 * file of one channel. Entries come from the workers' per-sample guard (a masked sample's region,
 * as rank 0's StepReport says it) and from the operator (gyroctl quarantine add); the operator
 * may release one (its region is trained on again). Pure: no I/O, no clock; allocations through
 * common/alloc.h.
 *
 * Identity: a region of the same channel and file that overlaps (or touches) an entry is that
 * entry: it grows to cover both (a released one is active again); one already inside an active
 * entry only counts a hit. Ids are 1, 2, ... in order of creation and never reused; every change
 * (new, grown, released, active again) gives the entry the next revision, so applying the entries
 * in revision order (gy_quar_by_rev) rebuilds what the workers hold: released entries remove
 * their range, the others add it.
 *
 * Bounded: at most `max` entries (the oldest are kept; a new region beyond that is refused with
 * GY_ENOSPC) and at most GY_QUAR_FILES_MAX distinct files. File names are interned: an entry's
 * `file` stays valid as long as the list.
 *
 * Every string an entry holds is well-formed UTF-8 without control characters (it goes into
 * JSON, protobuf strings and events). */
#ifndef GY_CONTROLLER_QUARANTINE_H
#define GY_CONTROLLER_QUARANTINE_H

#include <stddef.h>
#include <stdint.h>

#define GY_QUAR_MAX_DEFAULT 65536       /* entries kept */
#define GY_QUAR_FILES_MAX 4096          /* distinct file names */
#define GY_QUAR_FILE_MAX 1024           /* a file name, with the NUL */
#define GY_QUAR_NAME 32                 /* a channel or reason, with the NUL */
#define GY_QUAR_TOKENS_MAX (1ull << 40) /* an entry's length, and its end, at most */

typedef struct {
  uint64_t id; /* 1, 2, ... */
  char channel[GY_QUAR_NAME];
  const char *file; /* interned (valid while the list lives) */
  uint64_t offset;  /* tokens [offset, offset + length) of file */
  uint64_t length;
  int64_t document;          /* gyro-prep's document ordinal, -1: none */
  char reason[GY_QUAR_NAME]; /* the guard's rule ("loss_high", ...), "operator", ... */
  int64_t first_step;        /* the step that first masked a sample in it (-1: the operator's) */
  uint64_t sample;           /* that sample's id */
  float loss, median, threshold; /* its figures (0: the operator's) */
  uint32_t hits;                 /* masked samples that fell in it */
  int released;                  /* released by the operator: trained on again */
  int64_t changed_step;          /* the step of its last change */
  uint64_t rev;                  /* the order of its last change (1, 2, ...) */
} gy_quar_entry_t;

/* What gy_quar_add takes (strings borrowed for the call). */
typedef struct {
  const char *channel, *file;
  uint64_t offset, length;
  int64_t document;   /* -1: none */
  const char *reason; /* NULL: "?" */
  int64_t step;       /* the step it was seen at (first_step of a new entry, changed_step) */
  int operator_;      /* 1: the operator's (first_step -1) */
  uint64_t sample;
  float loss, median, threshold;
} gy_quar_add_t;

/* gy_quar_add's outcomes (>= 0). */
enum {
  GY_QUAR_HELD = 0, /* an active entry holds the region already: a hit counted */
  GY_QUAR_NEW = 1,  /* a new entry */
  GY_QUAR_GREW = 2, /* an entry grew, or a released one is active again */
};

typedef struct gy_quar gy_quar_t;

/* An empty list of at most max entries (0: GY_QUAR_MAX_DEFAULT). GY_ENOMEM. */
int gy_quar_create(gy_quar_t **out, size_t max);
void gy_quar_destroy(gy_quar_t *q); /* NULL is a no-op */

/* 1 when s is a usable name: 1..max-1 bytes of well-formed UTF-8 without control characters. */
int gy_quar_str_ok(const char *s, size_t max);
/* The interned copy of file (NULL: not a usable file name, or the table is full, or out of
 * memory). */
const char *gy_quar_intern(gy_quar_t *q, const char *file);

/* Adds a region (see the design block); *id (may be NULL) gets the entry's id. GY_EINVAL (a bad
 * channel, file or range: errmsg says which), GY_ENOSPC (full), GY_ENOMEM; nothing changed then. */
int gy_quar_add(gy_quar_t *q, const gy_quar_add_t *a, uint64_t *id, char *errmsg, size_t errlen);
/* Releases entry id at step: 1 released, 0 released already (unchanged), GY_ENOENT. */
int gy_quar_release(gy_quar_t *q, uint64_t id, int64_t step);
/* A restored entry (from the journal: gy_quar_from_json), kept as is with its id and revision
 * (replacing an entry of the same id). GY_EINVAL, GY_ENOSPC, GY_ENOMEM. */
int gy_quar_restore(gy_quar_t *q, const gy_quar_entry_t *e);

/* Entries, oldest (smallest id) first; the entry of id (NULL: none). */
size_t gy_quar_count(const gy_quar_t *q);
size_t gy_quar_max(const gy_quar_t *q);    /* the bound */
size_t gy_quar_active(const gy_quar_t *q); /* not released */
const gy_quar_entry_t *gy_quar_at(const gy_quar_t *q, size_t i);
const gy_quar_entry_t *gy_quar_get(const gy_quar_t *q, uint64_t id);
/* Every entry in revision order (the order to apply them in) into out (room for count
 * pointers, the caller's). */
void gy_quar_by_rev(const gy_quar_t *q, const gy_quar_entry_t **out);

/* An entry as a JSON text (the journal's record; malloc'd, NULL when out of memory), and back
 * (GY_EINVAL for a text that is not one: its file is interned into q). */
char *gy_quar_to_json(const gy_quar_entry_t *e);
int gy_quar_from_json(gy_quar_t *q, const char *text, gy_quar_entry_t *out);

#endif
