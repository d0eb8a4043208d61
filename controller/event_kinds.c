/*
 * event_kinds: the names and attributes of the audit event kinds (event_kinds.h).
 *
 * API, in order: gy_event_kind_name, gy_event_kind_info, gy_event_kind_from_name,
 * gy_event_marker_name.
 *
 * Invariants:
 * - infos[k] describes kind k; every name is unique, non-empty and [a-z_]+ (tests/unit/
 *   test_event_kinds.c checks it).
 * - The lookup by name is a linear scan: it serves the journal's recovered events and the tests,
 *   never the emitting path (emitters pass the enum).
 */
#include "controller/event_kinds.h"

#include <string.h>

#include "common/err.h"

static const gy_event_kind_info_t infos[] = {
#define GY_EVENT_KIND_INFO(name, str, level, marker, notable, tally)                               \
  {str, GY_EVENT_LEVEL_##level, GY_EVENT_MARKER_##marker, notable, GY_EVENT_TALLY_##tally},
    GY_EVENT_KIND_MAP(GY_EVENT_KIND_INFO)
#undef GY_EVENT_KIND_INFO
};

static const gy_event_kind_info_t unknown = {"unknown", GY_EVENT_LEVEL_INFO, GY_EVENT_MARKER_NONE,
                                             0, GY_EVENT_TALLY_NONE};

const gy_event_kind_info_t *gy_event_kind_info(gy_event_kind_t k) {
  return (k >= 0 && k < GY_EVENT_NKINDS) ? &infos[k] : &unknown;
}

const char *gy_event_kind_name(gy_event_kind_t k) {
  return gy_event_kind_info(k)->name;
}

int gy_event_kind_from_name(const char *name, gy_event_kind_t *out) {
  if (!name) return GY_ENOENT;
  for (int k = 0; k < GY_EVENT_NKINDS; k++)
    if (!strcmp(infos[k].name, name)) {
      *out = (gy_event_kind_t)k;
      return 0;
    }
  return GY_ENOENT;
}

const char *gy_event_marker_name(gy_event_marker_t m) {
  static const char *const names[] = {
#define GY_EVENT_MARKER_STR(name, str) str,
      GY_EVENT_MARKER_MAP(GY_EVENT_MARKER_STR)
#undef GY_EVENT_MARKER_STR
  };
  return (m >= 0 && m < GY_EVENT_NMARKERS) ? names[m] : "";
}
